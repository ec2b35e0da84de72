"""API tokens and who must show one.

A token is `pieter_` + 32 random bytes (URL-safe base64), shown once when made; Redis keeps only its SHA-256
(`pieter:tokens`, name → hex digest), so a copy of the database gives no access. A presented token is
compared with every stored digest in constant time.

The policy: while the API listens only on loopback or a unix socket, tokens are optional (the original's
httpie walkthrough works as written) unless PIETER_REQUIRE_TOKEN=1; on any other address they are required.
A token that is presented is always checked, so a wrong one never passes.
"""

import hashlib
import hmac
import ipaddress
import secrets
import socket

from pieter.errors import PieterError

PREFIX = "pieter_"


class Unauthorized(PieterError):
    status = 401


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    # surrogateescape: a header's undecodable bytes come as surrogates; they hash (and fail to match), not crash
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def matches(secret: str, digests: list[str]) -> bool:
    """Whether the secret is one of the tokens, looking at every digest (no early exit on a match)."""
    presented = digest(secret).encode()
    found = False
    for stored in digests:
        found |= hmac.compare_digest(presented, stored.encode())
    return found


def is_local(sock: socket.socket | None, host: str) -> bool:
    """Whether the API is reachable only from this host: a unix socket, or a loopback address."""
    if sock is not None:
        if sock.family == socket.AF_UNIX:
            return True
        host = sock.getsockname()[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check(authorization: str | None, digests: list[str], required: bool) -> None:
    """Raise Unauthorized unless the request may go on."""
    if authorization is None:
        if not required:
            return
        if not digests:
            raise Unauthorized(
                "this API requires a token and none is defined yet: on the server, run "
                "`pieter token add NAME`, then send it as `Authorization: Bearer <token>`"
            )
        raise Unauthorized("a token is required: send `Authorization: Bearer <token>` (httpie: -A bearer -a TOKEN)")
    scheme, _, secret = authorization.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized("the Authorization header must be `Bearer <token>`")
    if not matches(secret.strip(), digests):
        raise Unauthorized("the token is not valid (revoked, or never made here)")
