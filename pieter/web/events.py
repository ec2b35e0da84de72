"""`GET /ui/events`: job changes as one `text/event-stream`, for every page.

Each change of a job's state is, in the same Lua call, an entry of the Redis stream `pieter:events` and a
publish of that entry's id (store.py's _NOTIFY), so a page sees the jobs of every host sharing the Redis. The
event id is the stream entry's id: a browser that reconnects sends it back as `Last-Event-ID`, and gets what
it missed from the stream (kept near EVENTS_KEPT entries) before the live ones. The publish only wakes the
stream up; what is sent is always read from the stream, in order, so nothing is sent twice or out of order.
One Redis connection per open page: a private CI has a few people watching, not thousands.

A request that does not ask for `text/event-stream` (EventSource always does) gets the events after its
Last-Event-ID (or `?after=`) and the answer ends: a look with curl, or a client that polls, does not hang.
"""

import json
import re

import redis.exceptions
from sanic import Request

from pieter.errors import BadRequest
from pieter.store import EVENTS

KEEPALIVE_SECONDS = 5.0  # below the Redis client's socket timeout, and what proxies tolerate as quiet
RETRY_MS = 2000  # how soon a browser reconnects after losing the server


async def events(request: Request) -> None:
    store = request.app.ctx.store
    last = request.headers.get("last-event-id", "")  # empty: none (as the event-stream standard has it)
    if "after" in request.args and not last:  # a page's first connection: after what it shows (pages.live)
        last = request.args.get("after", "")
        if not last:
            raise BadRequest("after must be an id this stream sent (digits-digits), as Last-Event-ID")
    if last and not re.fullmatch(r"[0-9]{1,20}-[0-9]{1,20}", last):
        raise BadRequest("Last-Event-ID must be an id this stream sent (digits-digits)")
    async with store.redis.pubsub() as pubsub:
        await pubsub.subscribe(EVENTS)  # before reading the backlog: nothing falls between the two
        last = last or await store.latest_event()
        response = await request.respond(content_type="text/event-stream",
                                         headers={"cache-control": "no-cache", "x-accel-buffering": "no"})  # fmt: skip
        await response.send(f"retry: {RETRY_MS}\n: connected\n\n")
        following = "text/event-stream" in request.headers.get("accept", "")
        while True:
            for entry, fields in await store.events_after(last):
                await response.send(f"id: {entry}\nevent: job\ndata: {json.dumps(fields)}\n\n")
                last = entry
            if not following:
                await response.eof()
                return
            try:
                woken = await pubsub.get_message(ignore_subscribe_messages=True, timeout=KEEPALIVE_SECONDS)
            except redis.exceptions.TimeoutError:
                woken = None
            if woken is None:
                await response.send(": keep-alive\n\n")
