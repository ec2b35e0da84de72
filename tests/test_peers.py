"""peers.peer_uid against real sockets: the test listens, a child process running as another user connects,
and the lookup names that user; a peer that is gone names nobody."""

import os
import socket
from collections.abc import Callable
from functools import partial

import pytest

from pieter import peers

NOBODY, DYNAMIC = 65534, 61300  # the local runner's default job user; a uid in systemd's DynamicUser= range


def as_user(uid: int) -> int:
    """The uid a child can take: `uid` as root, else only our own."""
    return uid if os.geteuid() == 0 else os.getuid()


def accept_from(uid: int, listener: socket.socket, connect: Callable[[], socket.socket], stay: bool = True):
    """The accepted end of a connection that a forked child running as `uid` makes with `connect()`; the child
    holds its end open until the accepted one closes, or (`stay=False`) exits at once after one byte."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            client = connect()
            client.sendall(b"x")
            if stay:
                client.recv(1)
        finally:
            os._exit(0)
    conn, _ = listener.accept()
    conn.recv(1)
    if not stay:
        os.waitpid(pid, 0)
    return conn, pid


def assert_peer(uid: int, listener: socket.socket, connect: Callable[[], socket.socket]) -> None:
    conn, pid = accept_from(uid, listener, connect)
    try:
        assert peers.peer_uid(conn) == uid
    finally:
        conn.close()
        os.waitpid(pid, 0)


@pytest.mark.parametrize("uid", [NOBODY, DYNAMIC])
@pytest.mark.parametrize(("family", "listen_on", "connect_to"), [
    (socket.AF_INET, "127.0.0.1", "127.0.0.1"), (socket.AF_INET6, "::1", "::1"),
    (socket.AF_INET6, "::", "127.0.0.1"),  # an IPv4 client of a dual-stack listener (::ffff:127.0.0.1)
])  # fmt: skip
def test_tcp_loopback_peer(uid, family, listen_on, connect_to):
    uid = as_user(uid)
    with socket.socket(family) as listener:
        listener.bind((listen_on, 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert_peer(uid, listener, lambda: socket.create_connection((connect_to, port)))


def test_tcp_peer_of_root():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        assert_peer(as_user(0), listener, lambda: socket.create_connection(("127.0.0.1", port)))


@pytest.mark.parametrize("uid", [NOBODY, DYNAMIC])
def test_unix_peer(uid):
    uid = as_user(uid)
    address = f"\0pieter-test-peers-{os.getpid()}"  # abstract: no file, any user may connect

    def connect() -> socket.socket:
        client = socket.socket(socket.AF_UNIX)
        client.connect(address)
        return client

    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(address)
        listener.listen()
        assert_peer(uid, listener, connect)


def test_a_peer_that_is_gone_names_nobody():
    """Its orphaned socket would read as uid 0, root: it must read as unknown."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        connect = partial(socket.create_connection, ("127.0.0.1", port))
        conn, _ = accept_from(as_user(NOBODY), listener, connect, stay=False)
        with conn:
            assert peers.peer_uid(conn) is None
