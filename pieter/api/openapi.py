"""`GET /openapi.json`: the API described for tools (clients, fuzzers); tests keep it in step with the routes."""

import functools
from pathlib import Path

from sanic import Request
from sanic.response import HTTPResponse, raw

SPEC = Path(__file__).with_name("openapi.json")


@functools.cache
def spec() -> bytes:
    """The spec file as served, read once."""
    return SPEC.read_bytes()


async def openapi(request: Request) -> HTTPResponse:
    return raw(spec(), content_type="application/json")
