"""The Sanic application: one factory, the routing table in one place, errors rendered by one handler."""

import logging

import redis.exceptions
from sanic import Request, Sanic
from sanic.exceptions import SanicException
from sanic.response import HTTPResponse, json

from pieter import api
from pieter.config import Config
from pieter.dispatcher import REDIS_DOWN, Dispatcher
from pieter.errors import PieterError
from pieter.runners import pick
from pieter.store import Store, connect

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


def create_app(config: Config) -> Sanic:
    app = Sanic("pieter", configure_logging=False)
    app.config.update(
        {
            "REQUEST_MAX_SIZE": config.max_script_bytes + 64 * 1024,  # larger: our 413 names the limit
            "FALLBACK_ERROR_FORMAT": "json",
            "ACCESS_LOG": False,
            "MOTD": False,
            "KEEP_ALIVE_TIMEOUT": 75,
        }
    )
    app.ctx.config = config
    app.error_handler.add(Exception, render_error)
    api.add_routes(app)

    @app.before_server_start
    async def open_store(app: Sanic) -> None:
        app.ctx.store = Store(connect(config.redis), config.log_max_bytes)
        app.ctx.runner = pick(config, app.ctx.store)
        app.ctx.dispatcher = Dispatcher(app.ctx.store, app.ctx.runner, config)
        app.ctx.dispatcher.start()

    @app.after_server_stop
    async def close_store(app: Sanic) -> None:
        await app.ctx.dispatcher.stop()
        await app.ctx.store.redis.close()

    return app
