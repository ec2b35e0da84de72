"""Reading request bodies: JSON objects only, and an empty body (what a body-less httpie call sends
with `Content-Type: application/json`) means no body."""

import json
from typing import Any

from sanic import Request

from pieter.errors import BadRequest


def json_object(request: Request, allowed: set[str]) -> dict[str, Any]:
    raw = request.body
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise BadRequest(f"malformed JSON body: {str(e)[:200]}") from None
    if not isinstance(value, dict):
        raise BadRequest("the body must be a JSON object")
    try:  # JSON's \ud800 escapes decode to lone surrogates, which no file, environment or Redis reply takes
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise BadRequest("the body holds a lone UTF-16 surrogate (\\ud800-\\udfff): not text") from None
    unknown = set(value) - allowed
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(sorted(map(str, unknown)))[:200]}; known: {', '.join(sorted(allowed))}")
    return value
