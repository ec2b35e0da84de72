"""HTML for the pages: the layout, and the small pieces every page shows (a job's state, a time, a job table).

Plain functions that return strings; every value from the database goes through `esc`, which is the whole
defence against markup in a repo name or a log line reaching the page as markup.
"""

import html
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from pieter import __version__

# A state's colour in the favicon (the CSS has the same ones, light and dark, in app.css).
COLOURS = {"success": "#2e7d32", "fail": "#c62828", "running": "#1565c0", "queued": "#757575",
           "waiting": "#ef6c00", "cancelled": "#616161"}  # fmt: skip
SYMBOLS = {"success": "✔", "fail": "✘", "running": "▶", "queued": "…", "waiting": "⏸", "cancelled": "⊘"}


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def url(*parts: str) -> str:
    """A path of percent-encoded segments (names may hold '.', never '/')."""
    return "/" + "/".join(quote(part, safe="") for part in parts)


def favicon(state: str | None) -> str:
    """A coloured dot as a data: URL, so the tab shows the state without another request."""
    colour = COLOURS.get(state or "", "#9e9e9e")
    svg = f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'><circle cx='8' cy='8' r='7' fill='{colour}'/></svg>"
    return "data:image/svg+xml," + quote(svg)


def page(title: str, body: str, state: str | None = None, signed_in: bool = False, since: str = "") -> str:
    """The whole document: the header, `body` in <main>, the two scripts; `state` colours the tab. `since`: the
    last job change the page shows (events.py), so that its event stream starts right after it."""
    symbol = SYMBOLS.get(state or "", "")
    signout = ('<form method="post" action="/ui/signout" class="signout"><button type="submit">Sign out</button>'
               "</form>") if signed_in else ""  # fmt: skip
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>{esc(f"{symbol} {title}".strip())} · Pieter CI</title>
<link rel="icon" href="{favicon(state)}">
<link rel="stylesheet" href="/ui/static/app.css?v={__version__}">
<script src="/ui/static/app.js?v={__version__}" defer></script>
</head><body data-since="{esc(since)}">
<a class="skip" href="#main">Skip to content</a>
<header><a class="brand" href="/ui/">Pieter CI</a><nav><a href="/ui/">Overview</a><a href="/ui/repos">Repos</a>
<a href="/openapi.json">API</a></nav><span id="connection" role="status" aria-live="polite"></span>{signout}</header>
<main id="main" tabindex="-1">{body}</main>
</body></html>"""


def state_pill(state: str | None, result: str | None = None) -> str:
    text = state or "never run"
    if result and result not in (state, "exit-code"):
        text = f"{text} ({result})"
    return f'<span class="pill {esc(state or "none")}">{esc(SYMBOLS.get(state or "", ""))} {esc(text)}</span>'


def when(stamp: float | None) -> str:
    """A time as people read it ("3 min ago"), the exact UTC time on hover; JS keeps it current."""
    if not stamp:
        return "–"
    exact = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(stamp))
    return f'<time datetime="{exact}" data-ago="{stamp:.0f}" title="{exact}">{ago(time.time() - stamp)}</time>'


def ago(seconds: float) -> str:
    return f"{span(seconds)} ago" if seconds >= 1 else "just now"


def span(seconds: float | None) -> str:
    """A duration in its largest units: 45 s, 3 min 20 s, 2 h 5 min."""
    if seconds is None:
        return "–"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def job_link(job: dict[str, Any]) -> str:
    return f'<a href="/ui/jobs/{job["id"]}">#{job["id"]}</a>'


def scenario_link(repo: str, scenario: str) -> str:
    return (f'<a href="{url("ui", "repos", repo)}">{esc(repo)}</a> / '
            f'<a href="{url("ui", "repos", repo, scenario)}">{esc(scenario)}</a>')  # fmt: skip


def job_table(jobs: Iterable[dict[str, Any]], empty: str, scenario_column: bool = True) -> str:
    """Jobs, one row each: number, scenario, state, when queued, how long it ran."""
    rows = [
        f"<tr><td>{job_link(j)}</td>"
        + (f"<td>{scenario_link(j['repo'], j['scenario'])}</td>" if scenario_column else "")
        + f"<td>{state_pill(j['state'], j['result'])}</td><td>{when(j['timestamp'])}</td>"
        f"<td>{esc(span(j['duration']) if j['duration'] is not None else '')}</td></tr>"
        for j in jobs
    ]
    if not rows:
        return f'<p class="empty">{esc(empty)}</p>'
    head = (
        "<th>job</th>" + ("<th>scenario</th>" if scenario_column else "") + "<th>state</th><th>queued</th><th>took</th>"
    )
    return f'<table class="jobs"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
