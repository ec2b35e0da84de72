"""Inline SVG: a scenario's history chart and the shields-style badge. No chart library: a bar per job."""

from typing import Any

from pieter.web.html import COLOURS, esc

BADGE_COLOURS = {"success": "#4c1", "failing": "#e05d44", "running": "#007ec6", "unknown": "#9f9f9f"}


def history_chart(jobs: list[dict[str, Any]], width: int = 600, height: int = 120) -> str:
    """Ended jobs oldest first as bars: height the duration, colour the state; each bar links to its job."""
    ended = [j for j in jobs if j["duration"] is not None]
    if not ended:
        return '<p class="empty">No finished job yet.</p>'
    longest = max(j["duration"] for j in ended) or 1.0
    step = width / max(len(ended), 20)
    bars = []
    for i, job in enumerate(ended):
        h = max(2.0, job["duration"] / longest * (height - 4))
        label = f"#{job['id']} {job['state']} in {job['duration']:.1f} s"
        bars.append(f'<a href="/ui/jobs/{job["id"]}"><rect x="{i * step:.1f}" y="{height - h:.1f}" '
                    f'width="{max(step - 2, 1):.1f}" height="{h:.1f}" fill="{COLOURS.get(job["state"], "#999")}">'
                    f"<title>{esc(label)}</title></rect></a>")  # fmt: skip
    return (f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" preserveAspectRatio="none" '
            f'aria-label="durations of the last {len(ended)} jobs, longest {longest:.1f} s">{"".join(bars)}</svg>')  # fmt: skip


def badge(label: str, message: str) -> str:
    """A flat badge as shields.io draws it; text widths estimated from Verdana 11 px's average advance."""
    colour = BADGE_COLOURS[message]
    lw, mw = _text_width(label) + 10, _text_width(message) + 10
    total = lw + mw
    return f"""<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="20" role="img" \
aria-label="{esc(label)}: {message}"><title>{esc(label)}: {message}</title>\
<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/>\
<stop offset="1" stop-opacity=".1"/></linearGradient><clipPath id="r"><rect width="{total}" height="20" rx="3" \
fill="#fff"/></clipPath><g clip-path="url(#r)"><rect width="{lw}" height="20" fill="#555"/><rect x="{lw}" \
width="{mw}" height="20" fill="{colour}"/><rect width="{total}" height="20" fill="url(#s)"/></g><g fill="#fff" \
text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="11">\
<text x="{lw / 2}" y="15" fill="#010101" fill-opacity=".3">{esc(label)}</text><text x="{lw / 2}" y="14">\
{esc(label)}</text><text x="{lw + mw / 2}" y="15" fill="#010101" fill-opacity=".3">{message}</text>\
<text x="{lw + mw / 2}" y="14">{message}</text></g></svg>"""


def _text_width(text: str) -> int:
    return round(sum(4.0 if c in "ijlt.,:;|!'" else 8.5 if c in "mwMW" else 7.0 for c in text))
