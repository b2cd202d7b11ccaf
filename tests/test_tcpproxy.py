"""The partition proxy the convergence tests put between mounts and the server
(``tests/tcpproxy.py``): it forwards, freezes (holds bytes, then delivers them) and cuts
(resets connections)."""

from __future__ import annotations

import socket
import threading

import pytest

from tests.tcpproxy import TcpProxy


@pytest.fixture
def echo():
    """An echo server on 127.0.0.1 (one thread per connection)."""
    srv = socket.create_server(("127.0.0.1", 0))
    stop = False

    def serve(conn):
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except ConnectionResetError:
                pass            # the proxy's cut()

    def accept():
        while not stop:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield srv.getsockname()[1]
    stop = True
    srv.close()


def roundtrip(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def test_forwards_freezes_and_cuts(echo):
    with TcpProxy(echo) as proxy:
        c = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        big = bytes(range(256)) * 8192            # 2 MiB: more than one buffer
        assert roundtrip(c, big) == big

        proxy.freeze()
        c.settimeout(0.5)
        c.sendall(b"held")
        with pytest.raises(socket.timeout):
            c.recv(10)                            # nothing passes while frozen
        c2 = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)   # accepted…
        c2.settimeout(0.5)
        c2.sendall(b"new")
        with pytest.raises(socket.timeout):
            c2.recv(10)                           # …but silent
        proxy.restore()
        c.settimeout(5)
        c2.settimeout(5)
        assert c.recv(10) == b"held"              # what was held is delivered
        assert c2.recv(10) == b"new"

        proxy.cut()
        with pytest.raises((ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
            c.sendall(b"x")
            if not c.recv(10):
                raise ConnectionResetError("closed")
        c3 = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        with pytest.raises((ConnectionResetError, ConnectionAbortedError)):
            c3.sendall(b"x")
            if not c3.recv(10):
                raise ConnectionResetError("closed")
        proxy.restore()
        c4 = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        assert roundtrip(c4, b"again") == b"again"
        assert proxy.resets >= 3
        for s in (c, c2, c3, c4):
            s.close()
