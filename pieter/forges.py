"""Forge webhooks, as pure functions of a request's headers and body: which forge sent it, whether it carries
the repo's secret, what kind of event it is, and what a push says (api/hooks.py does the I/O).

How each forge proves it knows the secret (every comparison is in constant time):
    GitHub           X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>
    Gitea            X-Gitea-Signature: <hex HMAC-SHA256>          (also sends the Gogs and GitHub headers)
    Forgejo          X-Forgejo-Signature: <hex HMAC-SHA256>        (also sends the Gitea, Gogs and GitHub ones)
    Gogs             X-Gogs-Signature: <hex HMAC-SHA256>
    GitLab           X-Gitlab-Token: <the secret itself>
A form-encoded delivery (`payload=<json>`) is read too: GitHub signs the raw body, Gitea, Forgejo and Gogs the
JSON in `payload`.

What each forge sends to test a hook: GitHub a `ping` event; Gitea, Forgejo and Gogs a push whose `before` and
`after` are the same commit (the head of the default branch, or zeros); GitLab a push of the default branch's
latest commits that no header tells from a real one (gitlab-org/gitlab#20531), or, for an empty project, a sample
push with the push option `ci.skip`.
"""

import dataclasses
import fnmatch
import hashlib
import hmac
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

from pieter.errors import BadRequest
from pieter.models import MAX_ENV_VALUE, json_object

# Recognised in this order: Forgejo also sends Gitea's, Gogs' and GitHub's headers, Gitea Gogs' and GitHub's.
EVENT_HEADERS = {
    "forgejo": "x-forgejo-event",
    "gitea": "x-gitea-event",
    "gogs": "x-gogs-event",
    "gitlab": "x-gitlab-event",
    "github": "x-github-event",
}
SIGNATURE_HEADERS = {
    "forgejo": "x-forgejo-signature",
    "gitea": "x-gitea-signature",
    "gogs": "x-gogs-signature",
    "gitlab": "x-gitlab-token",
    "github": "x-hub-signature-256",
}
SIGNS_THE_JSON = {"forgejo", "gitea", "gogs"}  # in a form-encoded delivery: the `payload` field, not the body
GITLAB_PUSH_EVENTS = {"Push Hook", "Tag Push Hook", "Push Event", "Tag Push Event"}  # "… Event": GitLab < 10.0 tests
COMMIT_RE = re.compile(r"[0-9a-f]{7,64}")
ZERO_RE = re.compile(r"0+")


@dataclasses.dataclass(frozen=True)
class Push:
    """What a push event says, in the forge-independent form a job receives."""

    forge: str
    ref: str  # refs/heads/main, refs/tags/v1.0
    branch: str  # main ('' for a tag)
    commit: str  # the pushed head: the commit the job checks out ('' when the ref was deleted)
    author: str  # `Name <email>` of the head commit's author (of the pusher when the payload lacks it)
    message: str  # the head commit's message (GitLab's tag push without commits: the tag's)
    deleted: bool  # the push deleted the ref
    skip_ci: bool  # the pusher asked for no CI run (GitLab's push option ci.skip)

    def env(self) -> dict[str, str]:
        """The job's environment variables (server-set, so PIETER_* names)."""
        values = {
            "PIETER_FORGE": self.forge,
            "PIETER_REF": self.ref,
            "PIETER_BRANCH": self.branch,
            "PIETER_COMMIT": self.commit,
            "PIETER_AUTHOR": self.author,
            "PIETER_MESSAGE": self.message,
        }
        # as UTF-8 text can carry them: a lone surrogate (JSON allows "\udc80") becomes "?", NUL goes
        return {name: _utf8(value).replace("\x00", "")[:MAX_ENV_VALUE] for name, value in values.items()}


def _utf8(text: str) -> str:
    return text.encode("utf-8", "replace").decode()


def _raw(text: str) -> bytes:
    """A header's bytes again (Sanic decodes them with surrogateescape): never an error, whatever was sent."""
    return text.encode("utf-8", "surrogatepass")


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def recognise(headers: Mapping[str, str]) -> str | None:
    """The forge that sent the request, by its event header; None when no forge's header is there."""
    found = _lower(headers)
    for forge, header in EVENT_HEADERS.items():
        if found.get(header, "").strip():
            return forge
    return None


def _form_payload(headers: dict[str, str], body: bytes) -> bytes | None:
    """The `payload` field of a form-encoded delivery (None when the body is not one)."""
    if not headers.get("content-type", "").lower().startswith("application/x-www-form-urlencoded"):
        return None
    # latin-1 maps bytes to characters one to one: the field's bytes come back exactly, whatever they are
    values = urllib.parse.parse_qs(body.decode("latin-1"), keep_blank_values=True, encoding="latin-1").get("payload")
    return values[0].encode("latin-1") if values else None


def verify(forge: str, headers: Mapping[str, str], body: bytes, secret: str) -> bool:
    """Whether the request carries proof of the secret in the way `forge` gives it."""
    found = _lower(headers)
    given = found.get(SIGNATURE_HEADERS[forge], "").strip()
    if not given or not secret:
        return False
    key = secret.encode()
    if forge == "gitlab":  # the token is the secret: compare digests, so not even its length shows in the timing
        return hmac.compare_digest(hashlib.sha256(_raw(given)).digest(), hashlib.sha256(key).digest())
    if forge == "github":
        scheme, _, given = given.partition("=")
        if scheme.lower() != "sha256":
            return False
    presented = _raw(given.lower())
    signed = [body]
    payload = _form_payload(found, body) if forge in SIGNS_THE_JSON else None
    if payload is not None:
        signed.append(payload)
    matched = False
    for data in signed:  # every candidate is compared: no early exit
        expected = hmac.new(key, data, hashlib.sha256).hexdigest().encode()
        matched |= hmac.compare_digest(expected, presented)
    return matched


def load(headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """The event's JSON object, from a JSON body or the `payload` field of a form-encoded one."""
    payload = _form_payload(_lower(headers), body)
    return json_object(payload if payload is not None else body, "the webhook's body")


def classify(forge: str, headers: Mapping[str, str], payload: dict[str, Any]) -> str:
    """`push`, `ping` (a forge's test delivery, answered without running anything), or the forge's own name
    of an event Pieter does not act on."""
    event = _lower(headers).get(EVENT_HEADERS[forge], "").strip()
    if forge == "github":
        return event
    if forge == "gitlab":
        return "push" if event in GITLAB_PUSH_EVENTS else event
    if event == "push":  # Gitea, Forgejo, Gogs: their "Test delivery" is a push from a commit to itself
        before, after = payload.get("before"), payload.get("after")
        return "ping" if isinstance(after, str) and after and before == after else "push"
    return event


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _person(name: str, email: str) -> str:
    return f"{name} <{email}>" if name and email else name or email


def _head_commit(payload: dict[str, Any], commit: str) -> dict[str, Any]:
    """The pushed head's entry: `head_commit` (GitHub, Gitea, Forgejo) or the entry of `commits` with its id."""
    head = _dict(payload.get("head_commit"))
    if head:
        return head
    commits = payload.get("commits")
    for entry in reversed(commits if isinstance(commits, list) else []):
        if isinstance(entry, dict) and entry.get("id") == commit:
            return entry
    return {}


def _pusher(forge: str, payload: dict[str, Any]) -> str:
    if forge == "gitlab":
        return _person(_text(payload.get("user_name")) or _text(payload.get("user_username")),
                       _text(payload.get("user_email")))  # fmt: skip
    pusher = _dict(payload.get("pusher"))
    name = _text(pusher.get("full_name")) or _text(pusher.get("name")) or _text(pusher.get("login"))
    return _person(name or _text(pusher.get("username")), _text(pusher.get("email")))


def parse_push(forge: str, payload: dict[str, Any]) -> Push:
    """A push event's ref, branch, pushed commit, author and message."""
    ref = payload.get("ref")
    if not isinstance(ref, str) or not ref.strip() or len(ref) > 1024:
        raise BadRequest("the push event has no ref")
    if re.search(r"[\x00-\x20\x7f~^:?*\[\\]", ref):  # what `git check-ref-format` refuses in any ref
        raise BadRequest(f"the push event's ref {ref[:80]!r} is not a valid git ref")
    after = payload.get("after")
    if not isinstance(after, str):
        raise BadRequest("the push event has no `after` commit")
    commit = after
    if forge == "gitlab":  # checkout_sha: the commit a tag points to (after is the tag object); null on deletion
        commit = _text(payload.get("checkout_sha")) or after
    deleted = bool(ZERO_RE.fullmatch(after)) or payload.get("deleted") is True
    if deleted:
        commit = ""
    elif not COMMIT_RE.fullmatch(commit):
        raise BadRequest(f"the push event's commit {commit[:80]!r} is not a commit id (7 to 64 hex digits)")
    branch = ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else ""
    head = _head_commit(payload, commit) if commit else {}
    author = _dict(head.get("author"))
    message = _text(head.get("message"))
    if not message and forge == "gitlab":  # a tag push lists no commits; its `message` is the tag's
        message = _text(payload.get("message"))
    push_options = _dict(payload.get("push_options"))
    return Push(
        forge=forge,
        ref=ref,
        branch=branch,
        commit=commit,
        author=_person(_text(author.get("name")), _text(author.get("email"))) or _pusher(forge, payload),
        message=message.rstrip("\n"),
        deleted=deleted,
        skip_ci=_dict(push_options.get("ci")).get("skip") is True,
    )


def branch_matches(branches: str, branch: str) -> bool:
    """Whether a push to `branch` passes a scenario's `branches` setting (comma-separated globs, `*` matching
    any characters, `/` included; no setting: every push). A tag is no branch: it passes no filter."""
    if not branches:
        return True
    return bool(branch) and any(fnmatch.fnmatchcase(branch, glob.strip()) for glob in branches.split(","))
