"""What a stranger's connection may cost: bodies are not read before authentication,
bodies and headers have deadlines, unauthenticated connections are bounded.

Raw sockets against a real server, so the test sees exactly when the server answers
(before the body was sent) and when it closes. Socket timeouts only keep a broken server
from hanging the test; nothing is asserted about how long anything took.
"""

from __future__ import annotations

import hashlib
import socket
import time

import httpx
import pytest

from tests.servers import Api, ServerProcess, register

CHUNK = 8 * 1024 * 1024


@pytest.fixture(scope="module")
def strict(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("strict"), env={
        "GOBI_BODY_TIMEOUT": "1s", "GOBI_BODY_MIN_RATE": "100000",
        "GOBI_HEADER_TIMEOUT": "2s", "GOBI_MAX_UNAUTHENTICATED_CONNECTIONS": "4",
    }).start()
    yield srv
    srv.stop()


def connect(srv: ServerProcess) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=60)
    return s


def head(method: str, path: str, length: int, *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {length}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_until_closed(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts)."""
    out = b""
    try:
        while data := s.recv(65536):
            out += data
    except ConnectionResetError:
        pass
    return out


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def owner_and_vault(srv: ServerProcess) -> tuple[Api, str]:
    name, token = register(srv)
    api = Api(srv.api, token)
    return api, api.post("/vaults", json={"name": "v"}).json()["id"]


@pytest.mark.parametrize("who", ["no token", "bad token", "non-member", "reader"])
def test_a_chunk_upload_is_refused_on_its_headers(strict, who):
    """The answer comes before a byte of the 8 MiB body is sent, and the connection is
    then closed instead of being drained at the client's pace."""
    owner, vault = owner_and_vault(strict)
    headers = []
    if who == "bad token":
        headers = ["Authorization: Bearer gobi_" + "x" * 43]
    elif who in ("non-member", "reader"):
        name, token = register(strict)
        headers = [f"Authorization: Bearer {token}"]
        if who == "reader":
            assert owner.put(f"/vaults/{vault}/members/{name}", json={"role": "read"}).status_code == 200
    digest = hashlib.sha256(b"x").hexdigest()
    with connect(strict) as s:
        s.sendall(head("PUT", f"/api/v1/vaults/{vault}/chunks/{digest}", CHUNK, *headers))
        answer = read_until_closed(s)           # no body sent at all
    expected = {"no token": 401, "bad token": 401, "non-member": 404, "reader": 403}[who]
    assert status_of(answer) == expected
    assert b'"error"' in answer
    owner.close()


def test_an_oversized_body_is_refused_before_it_is_read(strict):
    with connect(strict) as s:
        s.sendall(head("POST", "/api/v1/sessions", 10 * 1024 * 1024, "Content-Type: application/json"))
        answer = read_until_closed(s)
    assert status_of(answer) == 413 and b"payload_too_large" in answer


def test_a_trickled_body_is_cut_off(strict):
    body = b'{"username": "trickle", "password": "long enough pw"}'
    with connect(strict) as s:
        s.sendall(head("POST", "/api/v1/users/", len(body), "Content-Type: application/json"))
        s.settimeout(0.5)
        answer = b""
        sent = 0
        deadline = time.monotonic() + 60      # only so a broken server cannot hang the test
        while time.monotonic() < deadline and sent < len(body) - 1:
            try:
                s.sendall(body[sent:sent + 1])
                sent += 1
                answer += s.recv(65536)
                if answer:
                    break
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        s.settimeout(60)
        answer += read_until_closed(s)
    assert sent < len(body) - 1, "the server waited for the whole trickled body"
    assert status_of(answer) == 408
    r = httpx.post(strict.api + "/sessions", json={"username": "trickle", "password": "long enough pw"})
    assert r.status_code == 401                  # nothing was registered


def test_headers_sent_a_byte_at_a_time_are_cut_off(strict):
    request = head("GET", "/api/v1/users/me" + "?x=" + "a" * 4000, 0)
    with connect(strict) as s:
        s.settimeout(0.3)
        closed = False
        for i in range(len(request) - 1):      # never the end of the headers
            try:
                s.sendall(request[i:i + 1])
                if s.recv(65536) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            except OSError:
                closed = True
                break
        assert closed, "the server kept a connection whose headers never ended"


def test_unauthenticated_connections_are_bounded_without_locking_out_newcomers(strict):
    owner, vault = owner_and_vault(strict)
    # An authenticated keep-alive connection does not count.
    assert owner.get(f"/vaults/{vault}").status_code == 200
    idle = [connect(strict) for _ in range(4)]     # a stranger holds every slot
    try:
        time.sleep(0.2)
        # A newcomer still gets in: the oldest idle stranger is closed to make room.
        with httpx.Client(base_url=strict.api, headers={"Authorization": owner.headers["Authorization"]}) as c:
            assert c.get(f"/vaults/{vault}").status_code == 200
        idle[0].settimeout(60)
        assert read_until_closed(idle[0]) == b""
        assert owner.get(f"/vaults/{vault}").status_code == 200
    finally:
        for s in idle:
            s.close()
        owner.close()


def test_a_stranger_idle_past_the_header_timeout_is_closed(strict):
    with connect(strict) as s:
        assert read_until_closed(s) == b""       # closed by the server, nothing sent
