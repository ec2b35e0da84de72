"""API tokens and who must show one.

A token is `pieter_` + 32 random bytes (URL-safe base64), shown once when made; Redis keeps only its SHA-256
(`pieter:tokens`, name → hex digest), so a copy of the database gives no access. A presented token is
compared with every stored digest in constant time.

The policy: while the API listens only on loopback or a unix socket, tokens are optional (the original's
httpie walkthrough works as written) unless PIETER_REQUIRE_TOKEN=1; on any other address they are required.
Even on loopback, a request from a job's processes needs one (peers.py tells who sent it): jobs run other
people's code, and on a cgroup-v1 host nothing stops them from connecting to 127.0.0.1. A job never gets a
token. A token that is presented is always checked, so a wrong one never passes.
"""

import hashlib
import hmac
import ipaddress
import os
import pwd
import secrets
import socket

from pieter.errors import PieterError

PREFIX = "pieter_"
DYNAMIC_UIDS = range(61184, 65520)  # systemd's DynamicUser= uids (DYNAMIC_UID_MIN to MAX): the systemd runner's jobs
REQUIRED = "this API requires a token"


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


def job_user_uid(job_user: str) -> int | None:
    """The uid a root server's local jobs run as (PIETER_JOB_USER); None for a server that is not root, whose
    jobs run as its own user."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(job_user).pw_uid
    except KeyError:
        return None  # the systemd runner has no use for it; the local one refuses to start without it


def reason_on_loopback(peer_uid: int | None, job_uid: int | None) -> str | None:
    """Why a request to a loopback or unix-socket listener must show a token, or None where it may go without."""
    if peer_uid is None:
        return "a request whose sender the server cannot tell (its client is gone, say) needs a token"
    if peer_uid in DYNAMIC_UIDS or peer_uid == job_uid:
        return "requests from a job's processes need a token"
    return None


def check(authorization: str | None, digests: list[str], reason: str | None) -> None:
    """Raise Unauthorized unless the request may go on; `reason`: why it must show a token, None if it need not."""
    if authorization is None:
        if reason is None:
            return
        if not digests:
            raise Unauthorized(
                f"{reason}, and none is defined yet: on the server, run "
                "`pieter token add NAME`, then send it as `Authorization: Bearer <token>`"
            )
        raise Unauthorized(f"{reason}: send `Authorization: Bearer <token>` (httpie: -A bearer -a TOKEN)")
    scheme, _, secret = authorization.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized("the Authorization header must be `Bearer <token>`")
    if not matches(secret.strip(), digests):
        raise Unauthorized("the token is not valid (revoked, or never made here)")
