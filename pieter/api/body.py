"""Reading request bodies: JSON objects only, and an empty body (what a body-less httpie call sends
with `Content-Type: application/json`) means no body."""

import json
from typing import Any

from sanic import Request

from pieter import models
from pieter.errors import BadRequest


def json_object(request: Request, allowed: set[str]) -> dict[str, Any]:
    if not request.body.strip():
        return {}
    value = models.json_object(request.body, "the body")
    try:  # JSON's \ud800 escapes decode to lone surrogates, which no file, environment or Redis reply takes
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise BadRequest("the body holds a lone UTF-16 surrogate (\\ud800-\\udfff): not text") from None
    unknown = set(value) - allowed
    if unknown:
        raise BadRequest(
            f"unknown field(s): {', '.join(sorted(map(str, unknown)))[:200]}; known: {', '.join(sorted(allowed))}"
        )
    return value
