"""`GET /ui/static/{name}`: the pages' CSS and JavaScript, shipped in the package (setup.cfg's package_data).

A fixed list of files read once, rather than a directory served by name: nothing else of the package's files
can be reached, whatever the path holds. Pages link them with `?v=<version>`, so a browser may keep them a day.
"""

from functools import cache
from pathlib import Path

from sanic import Request
from sanic.response import HTTPResponse, raw

from pieter.errors import NotFound

FILES = {"app.css": "text/css", "app.js": "text/javascript", "log.js": "text/javascript"}
DIRECTORY = Path(__file__).parent / "files"


@cache
def content(name: str) -> bytes:
    return (DIRECTORY / name).read_bytes()


async def static(request: Request, name: str) -> HTTPResponse:
    if name not in FILES:
        raise NotFound(f"no file {name[:80]!r} here: the pages use {', '.join(FILES)}")
    headers = {"cache-control": "public, max-age=86400"}
    return raw(content(name), content_type=f"{FILES[name]}; charset=utf-8", headers=headers)
