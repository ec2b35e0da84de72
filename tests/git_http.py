"""A git server over smart HTTP for the tests (git's own `git http-backend`, behind Basic auth), so that clones
with a password in their URL run for real, and a server that only redirects elsewhere."""

import base64
import http.server
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class GitHandler(http.server.BaseHTTPRequestHandler):
    """Serves the repos under `server.root` to requests with `server.authorization`; notes what each sent."""

    server: "GitServer"

    def do_GET(self) -> None:  # noqa: N802 (http.server's names)
        self.serve()

    def do_POST(self) -> None:  # noqa: N802
        self.serve()

    def serve(self) -> None:
        self.server.given.append(self.headers.get("Authorization"))
        if self.server.redirect:
            self.send_response(301)
            self.send_header("Location", self.server.redirect + self.path)
            self.end_headers()
            return
        if self.headers.get("Authorization") != self.server.authorization:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.end_headers()
            return
        time.sleep(self.server.delay)
        path, _, query = self.path.partition("?")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        environ = {"GIT_PROJECT_ROOT": str(self.server.root), "GIT_HTTP_EXPORT_ALL": "1", "PATH_INFO": path,
                   "QUERY_STRING": query, "REQUEST_METHOD": self.command, "REMOTE_USER": "test",
                   "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(len(body)),
                   "GIT_PROTOCOL": self.headers.get("Git-Protocol", "")}  # fmt: skip
        out = subprocess.run(["git", "http-backend"], input=body, capture_output=True, env=environ).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status = 200
        headers = []
        for line in head.decode().splitlines():
            name, _, value = line.partition(": ")
            if name.lower() == "status":
                status = int(value.split()[0])
            else:
                headers.append((name, value))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


class GitServer(http.server.ThreadingHTTPServer):
    def __init__(self, root: Path, authorization: str = "", redirect: str = "", delay: float = 0.0):
        super().__init__(("127.0.0.1", 0), GitHandler)
        self.root, self.authorization, self.redirect, self.delay = root, authorization, redirect, delay
        self.given: list[str | None] = []  # the Authorization header of each request

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@contextmanager
def git_server(root: Path, authorization: str = "", redirect: str = "", delay: float = 0.0) -> Iterator[GitServer]:
    """A GitServer serving `root` (see its arguments) until the block ends; `delay`: seconds each answer waits."""
    server = GitServer(root, authorization, redirect, delay)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
