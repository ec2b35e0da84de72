"""The Sanic application: one factory, the routing table in one place, errors rendered by one handler."""

import asyncio
import logging
import time

import redis.exceptions
from sanic import DefaultSanic, Request, Sanic
from sanic.exceptions import SanicException
from sanic.response import HTTPResponse, json

from pieter import api, peers, tokens, web
from pieter.config import Config
from pieter.dispatcher import Dispatcher
from pieter.errors import PieterError
from pieter.runners import pick
from pieter.store import REDIS_DOWN, Store, connect
from pieter.web import sessions

log = logging.getLogger(__name__)


def render_error(request: Request, exception: Exception) -> HTTPResponse:
    """Every error is `{"error": "..."}` with a 4xx status where the request was at fault."""
    if isinstance(exception, PieterError):
        return json({"error": exception.message}, status=exception.status)
    if isinstance(exception, SanicException):
        return json({"error": str(exception) or "bad request"}, status=exception.status_code)
    if isinstance(exception, REDIS_DOWN) or isinstance(exception, redis.exceptions.ReadOnlyError):
        return json({"error": f"the database (Redis) is unavailable: {exception}"}, status=503)
    log.exception("internal error on %s %s", request.method, request.path, exc_info=exception)
    return json({"error": "internal error; the server log has the details"}, status=500)


def create_app(config: Config, idle_exit: bool = False, local_only: bool = True) -> DefaultSanic:
    """The API with its dispatcher. `idle_exit`: stop after `config.idle_exit` idle seconds (under socket
    activation systemd starts the server again on the next connection). `local_only`: it listens only on
    loopback or a unix socket, where tokens are optional except for jobs (see tokens.py)."""
    app = Sanic("pieter", configure_logging=False)
    app.config.update(
        {
            # Bodies past this get Sanic's 413; scripts have their own, named limit. A forge's push payload
            # may be up to 25 MB (GitHub).
            "REQUEST_MAX_SIZE": max(config.max_script_bytes + 64 * 1024, 32 * 1024 * 1024),
            "FALLBACK_ERROR_FORMAT": "json",
            "ACCESS_LOG": False,
            "MOTD": False,
            "KEEP_ALIVE_TIMEOUT": 75,
        }
    )
    app.ctx.config = config
    app.ctx.store = Store(connect(config.redis), config.log_max_bytes)
    app.ctx.runner = pick(config, app.ctx.store)  # a runner that cannot work here fails now, before serving
    app.ctx.last_active = time.monotonic()
    app.error_handler.add(Exception, render_error)
    api.add_routes(app)
    web.add_routes(app)

    token_required = bool(config.require_token) or not local_only
    job_uid = tokens.job_user_uid(config.job_user)

    @app.on_request
    async def authenticate(request: Request) -> HTTPResponse | None:
        app.ctx.last_active = time.monotonic()
        if request.path.startswith(("/hooks/", "/webhooks/")):
            return None  # a forge's webhook is authenticated by its signature, against the repo's secret (api/hooks.py)
        if request.conn_info is None:
            return None  # the error answer to a request Sanic could not read (no connection info): no handler runs
        sessions.check_origin(request)
        if request.path.startswith(web.PUBLIC):
            return None
        authorization = request.headers.get("authorization")
        reason = tokens.REQUIRED if token_required else tokens.reason_on_loopback(peer_uid(request), job_uid)
        if authorization is None and reason and await sessions.signed_in(request, app.ctx.store):
            return None  # a browser's session counts as the token it was opened with
        if authorization is not None or reason:
            try:
                tokens.check(authorization, await app.ctx.store.token_digests(), reason)
            except tokens.Unauthorized as problem:
                return sessions.refused(request, problem)
        return None

    @app.before_server_start
    async def start_dispatcher(app: DefaultSanic) -> None:
        app.ctx.dispatcher = Dispatcher(app.ctx.store, app.ctx.runner, config)
        app.ctx.dispatcher.start()
        if idle_exit and config.idle_exit:
            app.add_task(exit_when_idle(app, config.idle_exit), name="idle-exit")

    @app.after_server_stop
    async def close_store(app: DefaultSanic) -> None:
        await app.ctx.dispatcher.stop()
        await app.ctx.store.redis.close()

    return app


def peer_uid(request: Request) -> int | None:
    """The uid of the process that sent the request (peers.py), looked up once per connection."""
    assert request.conn_info is not None  # authenticate() passes only requests read from a connection
    connection = request.conn_info.ctx
    if not hasattr(connection, "peer_uid"):
        try:
            connection.peer_uid = peers.peer_uid(request.transport.get_extra_info("socket"))
        except OSError as e:  # the unit forbids netlink sockets, say: no request goes without a token
            log.warning("cannot tell who sent a request, so it needs a token: %s", e)
            connection.peer_uid = None
    uid: int | None = connection.peer_uid
    return uid


async def exit_when_idle(app: DefaultSanic, idle_seconds: int) -> None:
    """Stop once no request came for `idle_seconds`, nothing is queued and no job depends on this process
    (a local job is a child of the server; a systemd job is not, its unit records its own end)."""
    while True:
        await asyncio.sleep(min(1.0, idle_seconds / 2))
        if time.monotonic() - app.ctx.last_active < idle_seconds:
            continue
        if app.ctx.runner.name == "local" and not app.ctx.dispatcher.idle:
            continue
        try:
            if (await app.ctx.store.counts())["queued"]:
                continue
        except REDIS_DOWN:
            continue
        log.info("idle for %s s with nothing queued: exiting until the next connection", idle_seconds)
        app.stop()
        return


def create_error_app(message: str) -> DefaultSanic:
    """What a socket-activated server serves when it cannot serve the API (a bad configuration): a clear
    503 to every request, rather than exiting and making systemd give up on the socket."""
    app = Sanic("pieter-config-error", configure_logging=False)
    app.config.update({"MOTD": False, "ACCESS_LOG": False, "FALLBACK_ERROR_FORMAT": "json"})

    async def explain(request: Request, path: str = "") -> HTTPResponse:
        return json({"error": message}, status=503)

    methods = ["GET", "PUT", "POST", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    app.add_route(explain, "/", methods=methods, name="root")
    app.add_route(explain, "/<path:path>", methods=methods, name="any")
    return app
