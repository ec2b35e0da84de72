"""`GET /openapi.json`: the API described for tools (clients, fuzzers); tests keep it in step with the routes."""

import json
from pathlib import Path

from sanic import Request
from sanic.response import HTTPResponse, raw

SPEC = Path(__file__).with_name("openapi.json")


async def openapi(request: Request) -> HTTPResponse:
    if not hasattr(request.app.ctx, "openapi"):
        request.app.ctx.openapi = json.dumps(json.loads(SPEC.read_bytes())).encode()
    return raw(request.app.ctx.openapi, content_type="application/json")
