"""The baseline server: one bare Sanic handler doing one Redis GET, run as Pieter runs its app (one process, no
access log, the same Redis client settings), on BENCH_PORT or on the socket systemd passes (socket activation).

    BENCH_PORT=8001 BENCH_REDIS_URL=unix:///path/redis.sock .venv/bin/python bench/bare.py
"""

import os
import socket

import redis.asyncio as aioredis
from sanic import DefaultSanic, Request, Sanic
from sanic.response import HTTPResponse, json

app = Sanic("bare", configure_logging=False)
app.config.update({"ACCESS_LOG": False, "MOTD": False, "KEEP_ALIVE_TIMEOUT": 75})


@app.before_server_start
async def connect(app: DefaultSanic) -> None:
    app.ctx.redis = aioredis.Redis.from_url(
        os.environ["BENCH_REDIS_URL"], socket_connect_timeout=2, socket_timeout=10, health_check_interval=10
    )


@app.get("/repos/<repo>")
async def get_repo(request: Request, repo: str) -> HTTPResponse:
    value = await request.app.ctx.redis.get("bench:" + repo)
    return json({"name": repo, "value": value.decode() if value is not None else None})


if __name__ == "__main__":
    from systemd import daemon

    fds = daemon.listen_fds()
    if fds:
        app.run(sock=socket.socket(fileno=fds[0]), single_process=True, access_log=False)
    else:
        app.run(host="127.0.0.1", port=int(os.environ["BENCH_PORT"]), single_process=True, access_log=False)
