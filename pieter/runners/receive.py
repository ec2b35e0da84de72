"""job.sh's clone step: receive the source URL and deploy key from the job's handoff socket (pieter/handoff.py),
load the key into the ssh-agent job.sh started for the clone, and print the URL for it.

It runs inside the job (any python3 on the job's PATH), so it uses the standard library only.
Usage: python3 receive.py SOCKET
"""

import json
import socket
import subprocess
import sys


def receive(path: str) -> dict[str, str]:
    with socket.socket(socket.AF_UNIX) as connection:
        connection.connect(path)
        data = b"".join(iter(lambda: connection.recv(65536), b""))
    if not data:
        raise OSError("the server refused this process")
    return json.loads(data)


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
    print(secrets["source"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
