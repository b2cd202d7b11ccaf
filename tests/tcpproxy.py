"""A TCP proxy on 127.0.0.1 whose link can be frozen, cut and restored: network partitions
for tests, between one client and one server, for every protocol (HTTP and WebSocket alike).

- ``freeze()``: stop forwarding in both directions. Connections stay open and new ones are
  accepted, but no byte passes (what is already read is held): the client sees a silent
  peer, as behind a dead router. ``restore()`` delivers what was held.
- ``cut()``: reset every connection (RST) and reset new ones at once, as when a host
  reboots or a firewall rejects. ``restore()`` lets new connections through again.
- ``reset()``: a moment's cut: the connections open now are reset, new ones pass (a
  load balancer restart, a flaky NAT).
- ``refuse_websockets = True``: a new connection whose first bytes are a WebSocket
  upgrade is answered ``503`` and closed, while plain HTTP passes (a proxy without
  WebSockets; or a mount made to replay its journal over REST before its live stream is
  back). An answer, not a bare close: a handshake whose connection just closes waits for
  the client's connect timeout.

One thread runs a ``selectors`` loop over every socket, so freezing and cutting take
effect between two reads, and ``close()`` stops it all.
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading

OPEN, FROZEN, CUT = "open", "frozen", "cut"
BUFFER = 1 << 20         # bytes held per direction before reading stops (back-pressure)


def _reset(sock: socket.socket) -> None:
    """Close with RST instead of FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class _Pipe:
    """One proxied connection: the client's socket and the upstream socket."""

    def __init__(self, client: socket.socket, upstream: socket.socket):
        self.ends = (client, upstream)
        self.held = {client: bytearray(), upstream: bytearray()}    # bytes waiting to go TO that socket
        self.eof = {client: False, upstream: False}                 # that socket sent EOF
        self.first = True                                           # nothing read from the client yet

    def peer(self, sock: socket.socket) -> socket.socket:
        return self.ends[1] if sock is self.ends[0] else self.ends[0]


class TcpProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.state = OPEN
        self.refuse_websockets = False
        self.connections = 0          # accepted in all
        self.resets = 0               # connections reset by cut() or reset()
        self.cuts = 0                 # reset() calls
        self._reset_asked = 0
        self._reset_served = 0
        self._reset_done = threading.Condition()
        self._pipes: dict[socket.socket, _Pipe] = {}
        self._lock = threading.Lock()
        self._stop = False
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._thread = threading.Thread(target=self._loop, name=f"tcpproxy:{self.port}", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- control (any thread) ------------------------------------------------------------

    def freeze(self) -> None:
        self._set(FROZEN)

    def cut(self) -> None:
        self._set(CUT)

    def restore(self) -> None:
        self._set(OPEN)

    def reset(self) -> None:
        """Reset the connections open now; returns once they are."""
        with self._reset_done:
            self._reset_asked += 1
            self.cuts += 1
            asked = self._reset_asked
            self._poke()
            self._reset_done.wait_for(lambda: self._reset_served >= asked or self._stop, timeout=10)

    def close(self) -> None:
        self._stop = True
        self._poke()
        self._thread.join(10)

    def _set(self, state: str) -> None:
        with self._lock:
            self.state = state
        self._poke()

    def _poke(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def __enter__(self) -> "TcpProxy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the loop (its own thread) ---------------------------------------------------------

    def _loop(self) -> None:
        try:
            while not self._stop:
                with self._lock:
                    state = self.state
                with self._reset_done:
                    asked = self._reset_asked
                if (state == CUT or asked > self._reset_served) and self._pipes:
                    for sock in list(self._pipes):
                        if sock in self._pipes:
                            self.resets += 1
                        self._drop(sock, reset=True)
                if asked > self._reset_served:
                    with self._reset_done:
                        self._reset_served = asked
                        self._reset_done.notify_all()
                self._register(state)
                for key, events in self._selector.select(timeout=0.5):
                    sock = key.fileobj
                    if sock is self._wake_r:
                        try:
                            while self._wake_r.recv(4096):
                                pass
                        except BlockingIOError:
                            pass
                    elif sock is self.listener:
                        self._accept(self.state)        # now, not when select() began
                    elif sock in self._pipes:
                        self._service(sock, events, self.state)
        finally:
            for sock in list(self._pipes):
                self._drop(sock, reset=True)
            self._selector.close()
            self.listener.close()
            self._wake_r.close()
            self._wake_w.close()

    def _register(self, state: str) -> None:
        """What each socket waits for: nothing while frozen (except accepting)."""
        wanted: dict[object, int] = {self._wake_r: selectors.EVENT_READ,
                                     self.listener: selectors.EVENT_READ}
        if state == OPEN:
            for sock, pipe in self._pipes.items():
                mask = 0
                peer = pipe.peer(sock)
                if not pipe.eof[sock] and len(pipe.held[peer]) < BUFFER:
                    mask |= selectors.EVENT_READ
                if pipe.held[sock]:
                    mask |= selectors.EVENT_WRITE
                if mask:
                    wanted[sock] = mask
        registered = self._selector.get_map()
        for sock in list(registered):
            if sock not in wanted:
                self._selector.unregister(sock)
        for sock, mask in wanted.items():
            if sock in registered:
                if registered[sock].events != mask:
                    self._selector.modify(sock, mask)
            else:
                self._selector.register(sock, mask)

    def _accept(self, state: str) -> None:
        try:
            client, _ = self.listener.accept()
        except BlockingIOError:
            return
        self.connections += 1
        if state == CUT:
            _reset(client)
            self.resets += 1
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            _reset(client)
            return
        for s in (client, upstream):
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pipe = _Pipe(client, upstream)
        self._pipes[client] = self._pipes[upstream] = pipe

    def _service(self, sock: socket.socket, events: int, state: str) -> None:
        pipe = self._pipes[sock]
        peer = pipe.peer(sock)
        if state != OPEN:
            return
        if events & selectors.EVENT_READ:
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                data = None
            except OSError:
                self._drop(sock, reset=True)
                return
            if data == b"":
                pipe.eof[sock] = True
                if not pipe.held[peer]:
                    self._half_close(peer)
            elif data:
                if pipe.first and sock is pipe.ends[0]:
                    pipe.first = False
                    if self.refuse_websockets and b"upgrade: websocket" in data.lower():
                        try:
                            sock.send(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                                      b"Connection: close\r\n\r\n")
                        except OSError:
                            pass
                        self._drop(sock, reset=False)
                        return
                pipe.held[peer] += data
        if events & selectors.EVENT_WRITE and pipe.held[sock]:
            try:
                n = sock.send(pipe.held[sock])
            except BlockingIOError:
                n = 0
            except OSError:
                self._drop(sock, reset=True)
                return
            del pipe.held[sock][:n]
            if not pipe.held[sock] and pipe.eof[peer]:
                self._half_close(sock)
        if pipe.eof[sock] and pipe.eof[peer] and not pipe.held[sock] and not pipe.held[peer]:
            self._drop(sock, reset=False)

    @staticmethod
    def _half_close(sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _drop(self, sock: socket.socket, reset: bool) -> None:
        pipe = self._pipes.get(sock)
        if pipe is None:
            return
        for s in pipe.ends:
            self._pipes.pop(s, None)
            try:
                self._selector.unregister(s)
            except (KeyError, ValueError):
                pass
            if reset:
                _reset(s)
            else:
                s.close()
