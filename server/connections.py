"""Connection-level limits: what a connection may cost before it has authenticated.

``GuardedProtocol`` is Sanic's HTTP/WebSocket protocol with three additions:

- **Unauthenticated connections are bounded.** A connection counts as unauthenticated
  until one of its requests authenticates (bearer token, web session, or the WebSocket
  handshake). When a new connection would pass ``max_unauthenticated_connections``, the
  oldest unauthenticated connection that is not in the middle of a request (idle, or
  still sending headers) is closed to make room; only when every one of them is busy is
  the newcomer answered 503 with ``Retry-After`` and closed. Holding slots therefore does
  not lock newcomers out: a legitimate client authenticates with its first request.
- **Headers have a deadline.** Sanic's request timeout is an idle timeout (every byte
  resets it), so a client sending a header byte a second would hold a connection for
  hours; here the request line and headers must arrive within ``header_timeout``, and an
  unauthenticated connection may sit idle no longer than that either.
- **Bodies have a deadline and a minimum rate.** ``gate.py`` sets, once the request is
  authenticated, ``body_timeout + size / body_min_rate`` for the body; a refused request
  whose body is still coming gets a short linger (the client can read the answer) and is
  then closed rather than drained at the client's pace.

Timeouts are checked once a second. The protocol is chosen in ``run.py``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sanic.exceptions import RequestTimeout
from sanic.http import Stage
from sanic.server.protocols.websocket_protocol import WebSocketProtocol

#: How long a refused request's remaining body is read (and dropped) before the close.
LINGER = 2.0

_FULL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
         b"Retry-After: 5\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s")
_FULL_BODY = (b'{"error":{"code":"unavailable","message":"too many connections that have not '
              b'authenticated; retry shortly","details":{}}}')


@dataclass
class ConnectionGuard:
    """Shared by every connection of one server (``app.ctx.guard``)."""

    max_unauthenticated: int = 256
    header_timeout: float = 10.0
    body_timeout: float = 10.0
    body_min_rate: float = 16 * 1024
    refused: int = 0
    evicted: int = 0

    def __post_init__(self) -> None:
        # Unauthenticated connections, oldest first (dicts keep insertion order).
        self.pending: dict[GuardedProtocol, None] = {}

    @property
    def unauthenticated(self) -> int:
        return len(self.pending)

    def admit(self, proto: "GuardedProtocol") -> bool:
        """Count a new connection; make room or refuse it when the bound is reached."""
        if len(self.pending) >= self.max_unauthenticated:
            victim = next((p for p in self.pending if p.evictable()), None)
            if victim is None:
                self.refused += 1
                return False
            self.evicted += 1
            self.pending.pop(victim, None)
            victim.close()
        self.pending[proto] = None
        return True

    def forget(self, proto: "GuardedProtocol") -> None:
        self.pending.pop(proto, None)

    def body_deadline(self, size: int) -> float:
        return self.body_timeout + size / self.body_min_rate


class GuardedProtocol(WebSocketProtocol):
    # Sanic's protocols use __slots__; ours add theirs.
    __slots__ = ("_gobi_counted", "_gobi_authenticated", "_gobi_deadline", "_gobi_fired", "_gobi_stage",
                 "_gobi_since")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._gobi_counted = False
        self._gobi_authenticated = False
        self._gobi_deadline: float | None = None
        self._gobi_fired = False
        self._gobi_stage: object = None
        self._gobi_since = 0.0

    @property
    def guard(self) -> ConnectionGuard:
        return self.app.ctx.guard

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if not self.guard.admit(self):
            transport.write(_FULL % (len(_FULL_BODY), _FULL_BODY))
            transport.close()
            return
        self._gobi_counted = True

    def connection_lost(self, exc) -> None:
        self.guard.forget(self)
        super().connection_lost(exc)

    def evictable(self) -> bool:
        http = self._http
        return http is None or http.stage in (Stage.IDLE, Stage.REQUEST)

    # -- called by gate.py ------------------------------------------------------------------

    def authenticated(self) -> None:
        if not self._gobi_authenticated:
            self._gobi_authenticated = True
            self.guard.forget(self)

    def expect_body(self, size: int) -> None:
        self._gobi_deadline = time.monotonic() + self.guard.body_deadline(size)

    def refuse_body(self) -> None:
        """The request was refused before its body: read what comes for ``LINGER`` more
        seconds (so the client sees the answer, not a reset), then close."""
        if self._http is not None:
            self._http.keep_alive = False
        self._gobi_deadline = time.monotonic() + LINGER
        self._gobi_fired = True

    # -- timeouts -------------------------------------------------------------------------------

    def check_timeouts(self) -> None:
        if self._task and self._http is not None and not self._gobi_expired():
            # Sanic's own checks (keep-alive, idle request, response) reschedule themselves.
            super().check_timeouts()
        if self._callback_check_timeouts is not None:
            self._callback_check_timeouts.cancel()
        if self._task:
            # Once a second rather than Sanic's half the shortest timeout (30 s by default).
            self._callback_check_timeouts = self.loop.call_later(1.0, self.check_timeouts)

    def _gobi_expired(self) -> bool:
        """Enforce our deadlines; True when this check ended or is ending the connection."""
        http = self._http
        now = time.monotonic()
        stage = http.stage
        if stage is not self._gobi_stage:
            self._gobi_stage, self._gobi_since = stage, now
        slow = now - self._gobi_since > self.guard.header_timeout
        if slow and stage is Stage.IDLE and not self._gobi_authenticated:
            self.close()
            return True
        if slow and stage is Stage.REQUEST:
            http.exception = RequestTimeout("request headers too slow")
            self._task.cancel()
            return True
        if self._gobi_deadline is None:
            return False
        if not http.request_body:
            self._gobi_deadline = None
            self._gobi_fired = False
            return False
        if now <= self._gobi_deadline:
            return False
        if self._gobi_fired:
            self.close()                # it lingered after the answer too: done
            return True
        # Answer 408 (a refused request has its answer already); Sanic then drains what is
        # left of the body, for LINGER at most.
        self._gobi_fired = True
        self._gobi_deadline = now + LINGER
        http.keep_alive = False
        if not http.response:
            http.exception = RequestTimeout("request body too slow")
        self._task.cancel()
        return True
