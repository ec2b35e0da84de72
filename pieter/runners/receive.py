"""job.sh's clone step: receive the source URL and deploy key from the job's handoff socket (pieter/handoff.py),
load the key into the ssh-agent job.sh started for the clone, and print, for job.sh to `eval`, shell-quoted:

    source=URL                     with an http(s) URL's user and password taken out: command lines are public
    PIETER_CLONE_USERNAME=USER     what job.sh's credential helper hands git instead,
    PIETER_CLONE_PASSWORD=PASSWORD
    PIETER_CLONE_SCOPE=SCHEME://HOST[:PORT]   for that server only (not for one a redirect names)

It runs inside the job (any python3 on the job's PATH), so it uses the standard library only.
Usage: python3 receive.py SOCKET
"""

import json
import re
import shlex
import socket
import subprocess
import sys
from urllib.parse import unquote


def receive(path: str) -> dict[str, str]:
    with socket.socket(socket.AF_UNIX) as connection:
        connection.connect(path)
        data = b"".join(iter(lambda: connection.recv(65536), b""))
    if not data:
        raise OSError("the server refused this process")
    secrets: dict[str, str] = json.loads(data)
    return secrets


def without_credentials(source: str) -> tuple[str, str, str, str]:
    """An http(s) URL without its `user:password@`, the (percent-decoded) user and password it had, and the
    scheme and host they are for."""
    found = re.fullmatch(r"(https?://)([^/?#]*)@([^/?#]*)(.*)", source, flags=re.IGNORECASE | re.DOTALL)
    if not found:
        return source, "", "", ""
    user, _, password = found[2].partition(":")
    return found[1] + found[3] + found[4], unquote(user), unquote(password), found[1] + found[3]


def main() -> int:
    try:
        secrets = receive(sys.argv[1])
    except (OSError, ValueError) as e:
        print(f"pieter: could not receive the source from the server ({e}): was it restarted?", file=sys.stderr)
        return 1
    if secrets.get("deploy_key"):
        added = subprocess.run(["ssh-add", "-q", "-"], input=secrets["deploy_key"].encode(), check=False)
        if added.returncode != 0:
            print("pieter: the deploy key could not be loaded", file=sys.stderr)
            return 1
    source, user, password, scope = without_credentials(secrets["source"])
    for name, value in (("source", source), ("PIETER_CLONE_USERNAME", user), ("PIETER_CLONE_PASSWORD", password),
                        ("PIETER_CLONE_SCOPE", scope)):  # fmt: skip
        print(f"{name}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
