"""The live event stream: the vault's WebSocket, kept open, resumed by seq.

``Live`` owns one WebSocket (trio-websocket) to the vault's ``/ws`` endpoint at a time:

- it connects with ``?after=<seq>`` (the last event it handed on), gets the missed events
  replayed, a ``caught_up`` marker, then the live stream; every event goes into the
  *catch-up queue* (a trio memory channel) that the applier (``gobi.fs.applier``) drains in
  order, so replayed and live events are applied strictly in seq order and live events that
  arrive during a long replay simply queue behind it;
- after any failure (refused, reset, silent peer, close 1001 "going away") it reconnects
  with exponential backoff and jitter (at once, to the next server URL, after a 1001),
  resuming from the last seq it queued, so nothing is lost and nothing is queued twice;
- if the server says the cursor expired (HTTP 410 at the handshake, or close 4410), it
  queues a ``Relist`` marker: the applier re-lists the tree at one consistent seq and
  reconciles (keeping local unsynced changes); the stream resumes from that seq;
- a periodic cheap reconciliation compares the vault's head seq (``GET /vaults/{id}``)
  with what was queued; if the stream has fallen behind (a lost doorbell, a stuck
  socket) or cannot connect at all (a proxy without WebSockets), the missing events are
  fetched over REST into the same queue;
- metadata operations travel over the same socket (``op``/``ack``/``nack`` with a request
  id); ``op()`` raises ``NotConnected`` when there is no socket, and the caller uses REST.

Errors are the ``gobi.fs.remote`` tree: ``Offline`` (the socket went away while an op was
in flight: it may or may not have been applied), ``ApiError`` (the op was refused).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import random
import time
from dataclasses import dataclass, field

import trio
import trio_websocket
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from gobi.protocol import (
    API_PREFIX,
    DEVICE_HEADER,
    WS_CLOSE_CURSOR_EXPIRED,
    WS_CLOSE_GOING_AWAY,
    ErrorCode,
    Event,
    WriteOutcome,
)

from .remote import ApiError, Offline, Remote, RemoteError, error_from_body
from .vfs import Link

log = logging.getLogger(__name__)

BACKOFF_MIN, BACKOFF_MAX = 0.25, 30.0
# Liveness: a ping every PING_INTERVAL; a link that gives no pong and no frame for
# PONG_TIMEOUT is dead or frozen, so `gobi status` says so within about six seconds. A busy
# server still answers pings from its event loop within milliseconds, so this does not
# flap; a frame received meanwhile counts as a sign of life too.
PING_INTERVAL = 2.0
PONG_TIMEOUT = 4.0
CONNECT_TIMEOUT = 10.0      # from the TCP connect to the server's hello
PROBE_TIMEOUT = 2.0         # a request made when the stream fails: is the server there?
RECONCILE_INTERVAL = 30.0   # cheap head-seq check
RECONCILE_GRACE = 2.0       # events may be in flight: re-check before fetching over REST


class NotConnected(Exception):
    """No live socket right now: send the operation over REST."""


class StreamStopped(Exception):
    """The server ended the stream for good (vault deleted, access revoked)."""


@dataclass
class CaughtUp:
    """Queued after the replay of a connection: everything up to ``seq`` is queued."""

    seq: int


@dataclass
class Relist:
    """Queued when the cursor expired: re-list the tree, then set ``done``."""

    done: trio.Event = field(default_factory=trio.Event)
    at: int = 0


class _Pending:
    __slots__ = ("done", "reply")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.reply: dict | BaseException | None = None


class Live:
    def __init__(self, remote: Remote, send: trio.MemorySendChannel, start_seq: int,
                 reconcile_interval: float = RECONCILE_INTERVAL, link: Link | None = None):
        self.remote = remote
        # The mount's idea of whether the server is reachable: up when a socket opens,
        # down when the socket dies of a network failure (not when the server refuses).
        self.link = link
        self.send = send
        self.received = start_seq            # highest seq queued so far
        self.reconcile_interval = reconcile_interval
        self.ws: trio_websocket.WebSocketConnection | None = None
        self.state = "connecting"
        self.url: str | None = None           # server of the current / last socket
        self.since = time.time()
        self.last_error = ""
        self.connects = 0
        self.going_away = 0                   # 1001 closes seen (server drains)
        self.rest_fills = 0                   # events that came by REST instead of the socket
        self.head_seq = start_seq
        self.last_event_at = 0.0
        self.last_frame_at = 0.0              # monotonic time of the last frame received
        self.stopped: str | None = None
        self.wake = trio.Event()              # poke(): reconnect now
        self._ids = itertools.count(1)
        self._pending: dict[str, _Pending] = {}
        self._unresponsive: _Unresponsive | None = None
        self._scope = trio.CancelScope()          # the current session's (see _session)

    # -- status ---------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.ws is not None and not self.ws.closed

    def status(self) -> dict:
        return {
            "live": self.state,
            "live_url": self.url,
            "live_since": self.since,
            "live_error": self.last_error,
            "live_connects": self.connects,
            "live_going_away": self.going_away,
            "live_rest_fills": self.rest_fills,
            "head_seq": self.head_seq,
            "received_seq": self.received,
        }

    def _set_state(self, state: str, error: str = "") -> None:
        if state != self.state:
            self.state, self.since = state, time.time()
        if error:
            self.last_error = error

    def poke(self) -> None:
        self.wake.set()
        self.wake = trio.Event()

    # -- queueing -------------------------------------------------------------------------

    async def _queue(self, item: object) -> None:
        await self.send.send(item)

    async def _queue_event(self, ev: Event) -> None:
        if ev.seq <= self.received:
            return          # already queued (a REST fill overlapped the socket)
        self.received = ev.seq
        self.head_seq = max(self.head_seq, ev.seq)
        self.last_event_at = time.monotonic()
        await self._queue(ev)

    async def _relist(self) -> None:
        marker = Relist()
        await self._queue(marker)
        await marker.done.wait()
        self.received = max(marker.at, 0)
        self.head_seq = max(self.head_seq, marker.at)

    async def fill_from_rest(self) -> int:
        """Queue the events after ``received`` fetched over REST; returns how many."""
        n = 0
        try:
            async for page in self.remote.events(self.received):
                self.head_seq = max(self.head_seq, page.head_seq)
                for ev in page.events:
                    if ev.seq > self.received:
                        await self._queue_event(ev)
                        n += 1
        except ApiError as exc:
            if exc.code == ErrorCode.CURSOR_EXPIRED:
                await self._relist()
                return n
            raise
        self.rest_fills += n
        return n

    # -- the connection loop ----------------------------------------------------------------

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        backoff = BACKOFF_MIN
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._reconcile_loop)
            while self.stopped is None:
                url = self.remote.servers.current
                self.url = url
                connects = self.connects
                delay = None
                try:
                    await self._session(url)
                except _GoingAway:
                    self.going_away += 1
                    self.remote.servers.failed(url)     # that instance drains: use another
                    self._set_state("reconnecting", f"{url} is going away")
                    delay = random.uniform(0, 0.2)
                except _Expired:
                    self._set_state("relisting", "cursor expired")
                    try:
                        await self._relist()
                        delay = 0
                    except RemoteError as exc:
                        self._set_state("disconnected", f"relist failed: {exc}")
                except StreamStopped as exc:
                    self.stopped = str(exc)
                    self._set_state("stopped", str(exc))
                    log.error("live stream stopped: %s", exc)
                    break
                except _Rejected as exc:
                    self._set_state("disconnected", str(exc))
                    log.warning("live stream refused by %s: %s", url, exc)
                    backoff = max(backoff, 10.0)
                except (OSError, HandshakeError, ConnectionClosed, trio.TooSlowError, _Closed,
                        _Unresponsive, ValueError) as exc:
                    self.remote.servers.failed(url)
                    why = f"{type(exc).__name__}: {exc}"
                    self._set_state("disconnected", why)
                    self._fail_pending(Offline("the live connection closed"))  # not after the probe
                    # A socket can fail while the server answers requests (a handshake
                    # stuck behind a partition that has healed, a proxy without
                    # WebSockets): then reads must not fail fast with ENETUNREACH (seen
                    # in the long partition run: a mount's reads failed for 2 s while its
                    # fetches were answered). One request tells, at once for a dead link.
                    if self.link is not None and _network_failure(exc) and \
                            not await self._server_answers():
                        self.link.down(f"live stream: {why}")
                finally:
                    self._fail_pending(Offline("the live connection closed"))
                    self.ws = None
                if self.connects > connects:
                    backoff = BACKOFF_MIN           # it was up: start the backoff again
                if delay is None:
                    delay = backoff * random.uniform(0.5, 1.5)
                    backoff = min(backoff * 2, BACKOFF_MAX)
                    log.info("live stream down (%s); reconnecting in %.1fs", self.last_error, delay)
                with trio.move_on_after(delay):
                    await self.wake.wait()
            nursery.cancel_scope.cancel()

    async def _server_answers(self) -> bool:
        """Does the server answer a request now (bounded by ``PROBE_TIMEOUT``)? An error
        answer is an answer: the server is there."""
        with trio.move_on_after(PROBE_TIMEOUT):
            try:
                await self.remote.vault_info()
            except ApiError:
                return True
            except RemoteError:
                return False
            return True
        return False

    async def _session(self, url: str) -> None:
        ws_url = ("ws" + url[4:] if url.startswith("http") else url) + API_PREFIX + \
            f"/vaults/{self.remote.vault}/ws?after={self.received}"
        headers = [(b"Authorization", f"Bearer {self.remote.token}".encode()),
                   (b"User-Agent", b"gobi-fs")]
        if self.remote.device:
            headers.append((DEVICE_HEADER.encode(), self.remote.device.encode()))
        self._set_state("connecting")
        self._unresponsive = None
        # trio-websocket's connect_timeout does not bound a handshake the peer never
        # answers (a frozen link: its reader task outlives the timeout and the library's
        # nursery waits for it for ever), so this scope bounds everything up to the hello
        # (``_serve`` lifts the deadline then) and is what the heartbeat cancels when a
        # live link goes silent: no close handshake is waited for on a dead link.
        with trio.CancelScope(deadline=trio.current_time() + CONNECT_TIMEOUT) as scope:
            self._scope = scope
            try:
                async with open_websocket_url(ws_url, extra_headers=headers, message_queue_size=1024,
                                              max_message_size=64 * 1024 * 1024,
                                              connect_timeout=CONNECT_TIMEOUT,
                                              disconnect_timeout=2) as ws:
                    await self._serve(ws)
            except trio_websocket.ConnectionRejected as exc:
                if exc.status_code == 410:
                    raise _Expired() from None
                if exc.status_code in (401, 403, 404):
                    body = (exc.body or b"")[:200].decode(errors="replace")
                    raise _Rejected(f"HTTP {exc.status_code} {body}") from None
                raise
        if scope.cancelled_caught:
            raise self._unresponsive or trio_websocket.ConnectionTimeout()

    async def _serve(self, ws: trio_websocket.WebSocketConnection) -> None:
        """Read frames until the socket closes; always ends with an exception that says
        how (``_GoingAway``, ``_Expired``, ``StreamStopped``, ``ConnectionClosed``…)."""
        hello = json.loads(await ws.get_message())
        if hello.get("type") != "hello":
            raise ValueError(f"expected hello, got {str(hello)[:100]}")
        self._scope.deadline = math.inf          # connected: the heartbeat watches from now on
        self.head_seq = max(self.head_seq, int(hello.get("head_seq", 0)))
        self.ws = ws
        self.connects += 1
        self.last_frame_at = time.monotonic()
        if self.link is not None:
            self.link.up()
        self._set_state("catching up" if self.head_seq > self.received else "live")
        self.last_error = ""
        log.info("live stream connected to %s after seq %s (head %s)", self.url, self.received, self.head_seq)
        failure: BaseException | None = None
        try:
            # The receive loop runs in the nursery's body and hands its exception out
            # after the nursery closed, so it is never wrapped in an exception group. The
            # heartbeat ends it by cancelling the nursery (a frozen link never closes).
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._heartbeat, ws)
                try:
                    while True:
                        try:
                            msg = await ws.get_message()
                        except ConnectionClosed as exc:
                            self._closed(exc)
                        self.last_frame_at = time.monotonic()
                        await self._frame(json.loads(msg))
                except Exception as exc:
                    failure = exc
                nursery.cancel_scope.cancel()
        finally:
            self.ws = None
        raise failure or self._unresponsive or _Closed("the stream ended")

    def _closed(self, exc: ConnectionClosed) -> None:
        code = exc.reason.code if exc.reason else None
        reason = exc.reason.reason if exc.reason else ""
        if code == WS_CLOSE_GOING_AWAY:
            raise _GoingAway()
        if code == WS_CLOSE_CURSOR_EXPIRED:
            raise _Expired()
        if code == 1000:
            raise StreamStopped(f"the server closed the stream: {reason or 'vault deleted'}")
        if code in (4401, 4403, 4404):
            raise _Rejected(f"closed {code} {reason}")
        raise _Closed(f"closed {code} {reason}".strip())

    async def _frame(self, frame: dict) -> None:
        kind = frame.get("type")
        if kind == "event":
            await self._queue_event(Event.model_validate(frame["event"]))
        elif kind == "caught_up":
            seq = int(frame.get("seq", 0))
            self.head_seq = max(self.head_seq, seq)
            self._set_state("live")
            await self._queue(CaughtUp(seq))
        elif kind in ("ack", "nack"):
            pending = self._pending.pop(str(frame.get("id")), None)
            if pending is not None:
                pending.reply = frame
                pending.done.set()
        elif kind == "error":
            err = frame.get("error") or {}
            self.last_error = f"{err.get('code')}: {err.get('message')}"
            if err.get("code") == ErrorCode.CURSOR_EXPIRED.value:
                raise _Expired()
        # pong and unknown frames: nothing to do

    async def _heartbeat(self, ws: trio_websocket.WebSocketConnection) -> None:
        """A peer that stops answering (a killed host, a cut cable, a frozen link) is
        noticed within PING_INTERVAL + PONG_TIMEOUT: the session is cancelled and ends
        with ``_Unresponsive`` (leaving it closes the socket, bounded)."""
        while True:
            await trio.sleep(PING_INTERVAL)
            with trio.move_on_after(PONG_TIMEOUT) as scope:
                try:
                    await ws.ping()
                except ConnectionClosed:
                    return
            if scope.cancelled_caught and time.monotonic() - self.last_frame_at > PONG_TIMEOUT:
                self._unresponsive = _Unresponsive(f"no answer from the server for {PONG_TIMEOUT:.0f}s")
                # Said at once: closing the socket may take its own timeout on a frozen link.
                self._set_state("disconnected", str(self._unresponsive))
                if self.link is not None:
                    self.link.down(f"live stream: {self._unresponsive}")
                self._scope.cancel()
                return

    async def _reconcile_loop(self) -> None:
        """Belt and braces: the head seq says whether anything is missing."""
        while True:
            await trio.sleep(self.reconcile_interval * random.uniform(0.8, 1.2))
            try:
                await self.reconcile()
            except Offline:
                pass
            except RemoteError as exc:
                log.warning("reconciliation failed: %s", exc)

    async def reconcile(self) -> int:
        """Compare the vault's head seq with what was queued; fetch what is missing over
        REST (when the socket is down, or when it has not delivered within a grace)."""
        vault = await self.remote.vault_info()
        self.head_seq = max(self.head_seq, vault.head_seq)
        if vault.head_seq <= self.received:
            return 0
        if self.connected:
            seen = self.received
            await trio.sleep(RECONCILE_GRACE)
            if self.received >= vault.head_seq or (self.received > seen and self.connected):
                return 0        # the socket is delivering
            log.warning("live stream is behind the head (%s < %s): fetching over REST",
                        self.received, vault.head_seq)
        n = await self.fill_from_rest()
        if n:
            log.info("fetched %d event(s) over REST", n)
        return n

    # -- operations over the socket ---------------------------------------------------------

    async def op(self, op: str, node: str | None, args: dict) -> WriteOutcome:
        ws = self.ws
        if ws is None or ws.closed:
            raise NotConnected()
        req_id = f"o{next(self._ids)}"
        frame: dict = {"type": "op", "id": req_id, "op": op, "args": args}
        if node is not None:
            frame["node"] = node
        pending = self._pending[req_id] = _Pending()
        try:
            await ws.send_message(json.dumps(frame, separators=(",", ":")))
        except ConnectionClosed:
            self._pending.pop(req_id, None)
            raise NotConnected() from None
        await pending.done.wait()
        reply = pending.reply
        if isinstance(reply, BaseException):
            raise reply
        assert isinstance(reply, dict)
        if reply["type"] == "nack":
            raise error_from_body(0, {"error": reply.get("error")})
        return WriteOutcome.model_validate({"node": reply["node"], "conflict": reply.get("conflict")})

    def _fail_pending(self, exc: BaseException) -> None:
        pending, self._pending = self._pending, {}
        for p in pending.values():
            p.reply = exc
            p.done.set()


def _network_failure(exc: BaseException) -> bool:
    """Did the socket fail because the server cannot be reached (not because it refused)?"""
    if isinstance(exc, trio_websocket.ConnectionRejected):
        return exc.status_code >= 500
    if isinstance(exc, (trio_websocket.ConnectionTimeout, HandshakeError)):
        # (Any other handshake error: the connection closed or was reset before the
        # server answered the upgrade, as behind a cut link.)
        return True
    return not isinstance(exc, ValueError)


class _GoingAway(Exception):
    pass


class _Expired(Exception):
    pass


class _Rejected(Exception):
    pass


class _Closed(Exception):
    pass


class _Unresponsive(Exception):
    """No pong and no frame within the timeout: the link is dead or frozen."""
