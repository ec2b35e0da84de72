"""Who may see the pages: the API's token policy, with a sign-in for browsers.

A person signs in once with an API token; the server answers with a random session id in an HttpOnly,
SameSite=Strict cookie (so EventSource and downloads carry it, and no script can read it). Redis keeps only
the id's SHA-256 with the digest of the token it was made with, expiring after SESSION_SECONDS; a session ends
when it is signed out or its token is revoked. The raw token is never stored, in the browser or in Redis.

Cross-site requests: a browser sends `Origin` with every POST, PUT, PATCH and DELETE; one that names another
site is refused before any handler runs (`check_origin`), whatever the request carries. httpie, curl and forges
send no Origin and are not affected. No page changes anything on GET.
"""

import secrets
from urllib.parse import quote, urlsplit

from sanic import Request
from sanic.response import HTTPResponse, html, redirect

from pieter import tokens
from pieter.errors import PieterError
from pieter.store import SESSION_SECONDS, Store
from pieter.web.html import esc, page

COOKIE = "pieter_session"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class Forbidden(PieterError):
    status = 403


def check_origin(request: Request) -> None:
    """Refuse a state-changing request that a page of another site made (CSRF)."""
    origin = request.headers.get("origin")
    if request.method in SAFE_METHODS or origin is None:
        return
    if urlsplit(origin).netloc.lower() != (request.headers.get("host") or "").lower():
        raise Forbidden(f"a cross-site request (Origin {origin[:100]!r}) may not change anything here")


async def signed_in(request: Request, store: Store) -> bool:
    """Whether the request carries the cookie of a live session whose token still exists."""
    cookie = request.cookies.get(COOKIE)
    if not cookie:
        return False
    made_with = await store.session_token(tokens.digest(cookie))
    return bool(made_with) and made_with in await store.token_digests()


def refused(request: Request, problem: tokens.Unauthorized) -> HTTPResponse | None:
    """What a request without access gets: a page's GET the sign-in form, a badge goes on to its handler (which
    serves only opted-in badges), anything else the 401."""
    if request.path.startswith("/badge/"):
        request.ctx.anonymous = True
        return None
    if request.method == "GET" and request.path.startswith("/ui/") and request.path != "/ui/events":
        return redirect("/ui/signin?next=" + quote(request.path), status=303)
    raise problem


def _next(request: Request) -> str:
    """Where to go after signing in: a page of this server only (no open redirect)."""
    target = request.args.get("next") or _field(request, "next") or "/ui/"
    return target if target.startswith("/ui/") and not target.startswith("//") else "/ui/"


def _field(request: Request, name: str) -> str:
    form = request.form
    return (form.get(name) if form is not None else None) or ""


def _form(request: Request) -> str:
    problem = "That token is not valid (revoked, or never made here)." if request.args.get("failed") else ""
    said = f'<p class="error" role="alert">{esc(problem)}</p>' if problem else ""
    return page(
        "Sign in",
        f"""<h1>Sign in</h1>{said}
<form method="post" action="/ui/signin" class="signin">
<label for="token">API token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<input type="hidden" name="next" value="{esc(_next(request))}">
<button type="submit">Sign in</button></form>
<p class="hint">A token comes from <code>pieter token add NAME</code> on the server. It is checked once; the
browser keeps only a session cookie, for {SESSION_SECONDS // 3600} hours or until you sign out.</p>""",
    )


async def signin_form(request: Request) -> HTTPResponse:
    return html(_form(request))


async def signin(request: Request) -> HTTPResponse:
    """Check the token of the form; a good one opens a session and goes on to the page asked for."""
    store = request.app.ctx.store
    token = _field(request, "token").strip()
    digests = await store.token_digests()
    if not token or not tokens.matches(token, digests):  # the form again, saying so (errors of pages stay JSON)
        return redirect("/ui/signin?failed=1&next=" + quote(_next(request)), status=303)
    session = secrets.token_urlsafe(32)
    await store.add_session(tokens.digest(session), tokens.digest(token))
    response = redirect(_next(request), status=303)
    response.add_cookie(COOKIE, session, httponly=True, samesite="Strict", max_age=SESSION_SECONDS, path="/",
                        secure=request.scheme == "https")  # fmt: skip
    return response


async def signout(request: Request) -> HTTPResponse:
    cookie = request.cookies.get(COOKIE)
    if cookie:
        await request.app.ctx.store.delete_session(tokens.digest(cookie))
    response = redirect("/ui/signin", status=303)
    response.delete_cookie(COOKIE, path="/")
    return response
