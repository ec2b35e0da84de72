"""The pages: overview, repos, a repo, a scenario, a job. Each reads the store and renders HTML (html.py);
actions go to the JSON API from app.js, so the pages change nothing themselves.

Regions marked `data-live` are re-read by app.js when a job changes (events.py); the log is not one of them:
log.js follows it through `GET /jobs/{id}/log?follow=1`.
"""

import asyncio
import functools
import json
import statistics
import time
from collections.abc import Callable, Coroutine
from typing import Any

from sanic import Request
from sanic.response import HTTPResponse, html

from pieter import __version__, artifacts, schedules, workspaces
from pieter.api.jobs import job_id_of
from pieter.errors import NotFound
from pieter.models import State, check_name
from pieter.web.html import esc, job_link, job_table, page, scenario_link, span, state_pill, url, when
from pieter.web.svg import history_chart

LATEST = 20
HISTORY = 50
TAIL_LINES = 5000  # what the job page loads first of a long log (log.js asks for the same)


def live(handler: Callable[..., Coroutine[Any, Any, HTTPResponse]]) -> Callable[..., Coroutine[Any, Any, HTTPResponse]]:
    """A page whose event stream must start where its data does: the latest event is read before the data, so a
    change made while the page is rendered or loading reaches it (its stream starts after `since`)."""

    @functools.wraps(handler)
    async def read_since_first(request: Request, **parts: str) -> HTTPResponse:
        request.ctx.since = await request.app.ctx.store.latest_event()
        return await handler(request, **parts)

    return read_since_first


def render(request: Request, title: str, body: str, state: str | None = None) -> HTTPResponse:
    signed_in = bool(request.cookies.get("pieter_session"))
    shown = page(title, body, state, signed_in, request.ctx.since)
    return html(shown, headers={"cache-control": "no-store"})


async def eta(store: Any, job: dict[str, Any]) -> dict[str, Any]:
    """How far a running job is, from its scenario's recent run times (the median): None where unknown."""
    durations = await store.recent_durations(job["repo"], job["scenario"])
    expected = statistics.median(durations) if durations else None
    return {**job, "expected": expected}


def running_row(job: dict[str, Any]) -> str:
    started = job["started"] or time.time()
    expected = job["expected"]
    if expected:
        done = min(1.0, (time.time() - started) / expected if expected else 0)
        bar = (f'<progress max="1" value="{done:.3f}" data-started="{started:.0f}" data-expected="{expected:.1f}">'
               f"{done:.0%}</progress> <span class=\"eta\">ETA {esc(span(started + expected - time.time()))}</span>")  # fmt: skip
    else:
        bar = f'<progress data-started="{started:.0f}"></progress> <span class="eta">no earlier run to go by</span>'
    return (f"<tr><td>{job_link(job)}</td><td>{scenario_link(job['repo'], job['scenario'])}</td>"
            f"<td>{esc(job['host'])}</td><td>{when(job['started'])}</td><td>{bar}</td></tr>")  # fmt: skip


@live
async def overview(request: Request) -> HTTPResponse:
    store = request.app.ctx.store
    _, running = await store.list_jobs(None, None, State.RUNNING.value, 0, 200)
    queued_total, queued = await store.list_jobs(None, None, State.QUEUED.value, 0, LATEST)
    _, latest = await store.list_jobs(None, None, None, 0, LATEST)
    scenarios = await store.scenarios_latest()
    hosts = await store.hosts()
    running = [await eta(store, job) for job in running]
    failing = [s for s in scenarios if s["state"] == State.FAIL.value]
    rows = "".join(running_row(job) for job in running)
    running_html = (f'<table class="jobs"><thead><tr><th>job</th><th>scenario</th><th>host</th><th>started</th>'
                    f"<th>progress</th></tr></thead><tbody>{rows}</tbody></table>") if running else \
        '<p class="empty">Nothing is running.</p>'  # fmt: skip
    failing_html = "".join(f"<li>{scenario_link(s['repo'], s['scenario'])} — "
                           f'<a href="/ui/jobs/{s["job"]}">#{s["job"]}</a> {when(s["finished"])}</li>'
                           for s in failing)  # fmt: skip
    failing_html = (
        f'<ul class="failing">{failing_html}</ul>' if failing else '<p class="empty">No scenario is failing.</p>'
    )
    hosts_html = "".join(f'<li>{esc(h["host"])}: {h["running"]} of {h["slots"]} slots in use '
                         f'<meter min="0" max="{h["slots"]}" value="{h["running"]}"></meter></li>' for h in hosts)  # fmt: skip
    hosts_html = f"<ul>{hosts_html}</ul>" if hosts else '<p class="empty">No host has reported yet.</p>'
    worst = (
        State.FAIL.value if failing else State.RUNNING.value if running else State.SUCCESS.value if scenarios else None
    )
    body = f"""<h1>Overview</h1>
<div data-live id="overview">
<section><h2>Running ({len(running)})</h2>{running_html}</section>
<section><h2>Failing now ({len(failing)})</h2>{failing_html}</section>
<section><h2>Queue ({queued_total})</h2>{job_table(queued, "The queue is empty.")}</section>
<section><h2>Latest jobs</h2>{job_table(latest, "No job yet: queue one from a scenario's page.")}</section>
<section><h2>Hosts</h2>{hosts_html}</section></div>"""
    return render(request, "Overview", body, worst)


@live
async def repos(request: Request) -> HTTPResponse:
    scenarios = await request.app.ctx.store.scenarios_latest()
    names = await request.app.ctx.store.repo_names()
    items = "".join(f'<li><a href="{url("ui", "repos", n)}">{esc(n)}</a> '
                    + " ".join(state_pill(s["state"]) for s in scenarios if s["repo"] == n) + "</li>" for n in names)  # fmt: skip
    empty = '<p class="empty">No repo yet: <code>http PUT :8000/repos/NAME source=…</code></p>'
    listing = f'<ul class="repos">{items}</ul>' if items else empty
    return render(request, "Repos", f'<h1>Repos</h1><div data-live id="repos">{listing}</div>')


@live
async def repo(request: Request, repo: str) -> HTTPResponse:
    store = request.app.ctx.store
    shown = await store.repo(check_name("repo", repo))
    latest = {s["scenario"]: s for s in await store.scenarios_latest() if s["repo"] == repo}
    rows = "".join(scenario_row(repo, name, latest[name]) for name in shown["scenarios"] if name in latest)
    table = (f'<table class="jobs"><thead><tr><th>scenario</th><th>last result</th><th>job</th><th>ended</th></tr>'
             f"</thead><tbody>{rows}</tbody></table>") if rows else '<p class="empty">No scenario yet.</p>'  # fmt: skip
    body = f"""<h1>{esc(repo)}</h1><p class="meta">source <code>{esc(shown["source"] or "(none: empty workspace)")}</code></p>
<div data-live id="scenarios">{table}</div>"""
    return render(request, repo, body)


def scenario_row(repo: str, name: str, latest: dict[str, Any]) -> str:
    job = f'<a href="/ui/jobs/{latest["job"]}">#{latest["job"]}</a>' if latest["job"] else "–"
    return (f'<tr><td><a href="{url("ui", "repos", repo, name)}">{esc(name)}</a></td>'
            f"<td>{state_pill(latest['state'], latest['result'])}</td><td>{job}</td><td>{when(latest['finished'])}</td></tr>")  # fmt: skip


async def schedule_text(repo: str, scenario: str) -> str:
    reason = schedules.unavailable_reason()
    if reason:
        return f"Schedules are not available on this host: {esc(reason)}"
    try:
        found = await schedules.status(repo, scenario)
    except NotFound:
        return 'No schedule (<code>PUT …/schedule {"on_calendar": "daily"}</code> makes one).'
    return f"<code>{esc(found['on_calendar'])}</code>, next run {when(found['next_elapse'])}"


@live
async def scenario(request: Request, repo: str, scenario: str) -> HTTPResponse:
    store = request.app.ctx.store
    check_name("repo", repo)
    check_name("scenario", scenario)
    shown = await store.scenario(repo, scenario)
    _, history = await store.list_jobs(repo, scenario, None, 0, HISTORY)
    ended = [j for j in history if j["state"] in (State.SUCCESS.value, State.FAIL.value)]
    rate = f"{sum(j['state'] == State.SUCCESS.value for j in ended) / len(ended):.0%}" if ended else "–"
    base = f"{request.scheme}://{request.host}"
    badge_url = f"{base}{url('badge', repo, scenario)}.svg"
    settings = ", ".join(f"{esc(k)}={esc(v)}" for k, v in sorted(shown["settings"].items())) or "server defaults"
    body = f"""<h1>{scenario_link(repo, scenario)}</h1>
<div class="columns"><section><h2>Run</h2>
<form id="run" data-repo="{esc(repo)}" data-scenario="{esc(scenario)}">
<label for="params">Parameters, one <code>NAME=value</code> a line</label>
<textarea id="params" name="params" rows="3" placeholder="GREETING=hello"></textarea>
<label for="commit">Commit (empty: the default branch's head)</label><input id="commit" name="commit" pattern="[0-9a-f]{{7,64}}">
<button type="submit" class="primary">Run {esc(scenario)}</button><output class="error" role="alert"></output></form></section>
<section><h2>About</h2><dl>
<dt>Pass rate</dt><dd>{rate} of the last {len(ended)} finished</dd>
<dt>Settings</dt><dd>{settings}</dd>
<dt>Schedule</dt><dd>{await schedule_text(repo, scenario)}</dd>
<dt>Webhook</dt><dd><code>{esc(base)}{url("hooks", repo, scenario)}</code> (signed with the repo's secret)</dd>
<dt>Badge</dt><dd><img src="{url('badge', repo, scenario)}.svg" alt="badge"><br>
<code class="snippet">[![{esc(scenario)}]({esc(badge_url)})]({esc(base)}{url("ui", "repos", repo, scenario)})</code></dd>
<dt>Script</dt><dd><a href="{url("repos", repo, scenario, "script")}">raw</a></dd></dl></section></div>
<div data-live id="history"><h2>History</h2>{history_chart(list(reversed(history)))}
{job_table(history, "No job yet: press Run.", scenario_column=False)}</div>"""
    return render(request, f"{repo}/{scenario}", body, history[0]["state"] if history else None)


@live
async def job(request: Request, job_id: str) -> HTTPResponse:
    store = request.app.ctx.store
    number = job_id_of(job_id)
    shown = await store.job(number)
    lines = await store.log_length(number)
    files = workspaces.job_files(request.app.ctx.config.state_dir, number)
    kept = await asyncio.to_thread(artifacts.listing, files)
    state = shown["state"]
    rerun = json.dumps({"env": shown["env"], **({"commit": shown["commit"]} if shown["commit"] else {})})
    buttons = "".join([
        f'<button data-post="/jobs/{number}/cancel" class="danger">Cancel</button>'
        if state in (State.QUEUED.value, State.RUNNING.value) else "",
        f'<button data-post="/jobs/{number}/approve" class="primary">Approve</button>' if state == "waiting" else "",
        f'<button data-rerun="{esc(url("repos", shown["repo"], shown["scenario"]))}" data-body="{esc(rerun)}">Re-run</button>',
    ])  # fmt: skip
    facts = [
        ("State", state_pill(state, shown["result"])),
        ("Exit code", esc(shown["rc"]) if shown["rc"] is not None else "–"),
        ("Queued", when(shown["timestamp"])),
        ("Started", when(shown["started"])),
        ("Finished", when(shown["finished"])),
        ("Took", esc(span(shown["duration"])) if shown["duration"] is not None else "–"),
        ("Host", esc(shown["host"] or "–")),
        ("Commit", f"<code>{esc(shown['commit'])}</code>" if shown["commit"] else "default branch"),
        ("Source", f"<code>{esc(shown['source'] or '–')}</code>"),
        ("Parameters", esc(" ".join(f"{k}={v}" for k, v in shown["env"].items())) or "–"),
        ("CPU", f"{shown['cpu_seconds']:.1f} s" if shown["cpu_seconds"] is not None else "–"),
        ("Memory peak", f"{shown['memory_peak'] / 2**20:.1f} MiB" if shown["memory_peak"] else "–"),
    ]
    items = "".join(f'<li><a href="/jobs/{number}/artifacts/{url(a["path"])[1:]}" download>{esc(a["path"])}</a> '
                    f"({a['size']} bytes)</li>" for a in kept)  # fmt: skip
    body = f"""<h1>{job_link(shown)} {scenario_link(shown["repo"], shown["scenario"])}</h1>
<div data-live id="summary" data-state="{esc(state)}"><div class="actions">{buttons}<output class="error" role="alert"></output></div>
<dl class="facts">{"".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)}</dl>
{f'<h2>Artifacts</h2><ul>{items}</ul>' if items else ""}</div>
<section class="log"><div class="logbar"><h2>Log</h2>
<input type="search" id="log-search" placeholder="Search the log (Enter: next)" aria-label="search the log">
<output id="log-found"></output><a href="/jobs/{number}/log" download="job-{number}.log">Download raw</a></div>
<button id="log-earlier" hidden>Load earlier lines</button>
<div id="log" tabindex="0" role="log" aria-label="job output" data-job="{number}" data-lines="{lines}"
 data-tail="{TAIL_LINES}"></div><button id="log-follow" hidden>↓ Follow the end</button></section>
<script src="/ui/static/log.js?v={esc(__version__)}" defer></script>"""
    return render(request, f"#{number} {shown['repo']}/{shown['scenario']}", body, state)
