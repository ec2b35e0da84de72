"""The web pages (under /ui/), their event stream, badges and metrics; `add_routes` is their routing table.

Why a prefix rather than content negotiation at every path: every existing path keeps answering exactly what
it answers today, to every client (a browser too: a raw log or the OpenAPI spec opens as what it is), and a
page needs other data than the JSON of the same path (a job page: the log's length, artifacts, an ETA).
Only `GET /` looks at `Accept`: a browser, which asks for text/html, is sent to /ui/ (api/service.py).
"""

from sanic import DefaultSanic

from pieter.web import badges, events, metrics, pages, sessions, static

PUBLIC = ("/ui/static/", "/ui/signin")  # what a person who has not signed in may load


def add_routes(app: DefaultSanic) -> None:
    app.add_route(pages.overview, "/ui/", methods=["GET"])
    app.add_route(pages.repos, "/ui/repos", methods=["GET"])
    app.add_route(pages.repo, "/ui/repos/<repo>", methods=["GET"])
    app.add_route(pages.scenario, "/ui/repos/<repo>/<scenario>", methods=["GET"])
    app.add_route(pages.job, "/ui/jobs/<job_id>", methods=["GET"])
    app.add_route(events.events, "/ui/events", methods=["GET"])
    app.add_route(sessions.signin_form, "/ui/signin", methods=["GET"])
    app.add_route(sessions.signin, "/ui/signin", methods=["POST"], name="signin_post")
    app.add_route(sessions.signout, "/ui/signout", methods=["POST"])
    app.add_route(static.static, "/ui/static/<name>", methods=["GET"])
    app.add_route(badges.badge, "/badge/<repo>/<name>", methods=["GET"])
    app.add_route(metrics.metrics, "/metrics", methods=["GET"])
