"""The client's view of the gobi server: REST calls over httpx, typed results, typed errors.

This layer knows HTTP and the wire models of ``gobi.protocol`` and nothing about FUSE,
the mirror or the journal. Every method either returns a parsed result or raises one of:

- ``Offline``: the server could not be reached or answered "try again later" (connection
  refused/reset, timeouts, 5xx, ``unavailable``). Callers retry with backoff and treat the
  mount as offline meanwhile.
- ``Busy`` (an ``Offline``): a 503 with ``Retry-After`` — e.g. a chunk the garbage
  collector is deleting right now. Not an outage: retry that request after the delay.
- ``ApiError``: the server understood and refused (4xx); ``code`` is the stable
  ``ErrorCode`` and ``details`` carries what is needed to catch up (``head``, ``missing``).

**Several servers.** A mount may be given several instances of one deployment (same
MongoDB, Redis and storage) or one URL behind a load balancer. ``Servers`` holds the list
and which one is in use; a request that cannot reach the current one (connection refused,
reset, 502/503/504) moves the pool to the next URL, so the retry — by the caller, or at
once here when the request cannot have reached a server — goes elsewhere. The WebSocket
(``gobi.fs.events``) shares the same pool, so REST and the live stream fail over together.

No method takes a timeout: callers bound waits with ``trio.move_on_after``. The httpx
client has transport-level timeouts only so that a dead peer is noticed at all.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import trio

from gobi.protocol import (
    API_PREFIX,
    DEVICE_HEADER,
    ChunkRef,
    ErrorCode,
    EventPage,
    HoldInfo,
    Node,
    StorageSpace,
    TreePage,
    Vault,
    VaultSettings,
    VersionInfo,
    WriteOutcome,
)

#: Largest body of one ``POST /chunks`` (the server takes 8 MiB of frames) and frames in it.
CHUNK_BATCH_BYTES = 8 * 1024 * 1024 - 64 * 1024
CHUNK_BATCH_FRAMES = 4096

#: HTTP status of each error code, for errors that arrive over the WebSocket (nack).
_STATUS = {"bad_request": 400, "invalid_name": 400, "missing_chunks": 400, "hash_mismatch": 400,
           "invalid_move": 400, "unauthenticated": 401, "forbidden": 403, "not_found": 404,
           "cursor_expired": 410, "payload_too_large": 413}


class RemoteError(Exception):
    """Base of everything this layer raises."""


class Offline(RemoteError):
    """The server is unreachable or temporarily unable to answer: retry later."""


class Busy(Offline):
    """503 with Retry-After: this request may succeed after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after


class ApiError(RemoteError):
    """The server refused the request (4xx) with a typed error."""

    def __init__(self, status: int, code: str, message: str, details: dict | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}

    @property
    def head(self) -> Node | None:
        raw = self.details.get("head")
        return Node.model_validate(raw) if raw else None


def error_from_body(status: int, body: Any, retry_after: float | None = None) -> RemoteError:
    """The exception for an error body ``{"error": {...}}`` (REST answer or WebSocket nack)."""
    try:
        err = body["error"]
        code, message, details = err.get("code", "?"), err.get("message", ""), err.get("details") or {}
    except (KeyError, TypeError, AttributeError):
        return ApiError(status, ErrorCode.BAD_REQUEST.value, f"unexpected answer: {str(body)[:200]}")
    if code in (ErrorCode.UNAVAILABLE.value, ErrorCode.INTERNAL.value, ErrorCode.RATE_LIMITED.value):
        if retry_after is not None:
            return Busy(f"server answered {status} {code}: {message}", retry_after)
        return Offline(f"server answered {status} {code}: {message}")
    return ApiError(status or _STATUS.get(code, 409), code, message, details)


def _error_from(response: httpx.Response) -> RemoteError:
    retry_after = None
    if response.status_code in (429, 503) and "retry-after" in response.headers:
        try:
            retry_after = min(60.0, max(0.0, float(response.headers["retry-after"])))
        except ValueError:
            retry_after = 1.0
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code >= 500 or response.status_code == 429:
        if retry_after is not None:
            return Busy(f"server answered {response.status_code}", retry_after)
        return Offline(f"server answered {response.status_code}")
    if body is None:
        return ApiError(response.status_code, ErrorCode.BAD_REQUEST.value,
                        f"unexpected answer: {response.text[:200]}")
    return error_from_body(response.status_code, body, retry_after)


class Servers:
    """The URLs of one deployment and the one in use. ``failed(url)`` moves on to the next
    (only if ``url`` is still the current one: several tasks noticing the same outage move
    the pool once)."""

    def __init__(self, urls: str | Sequence[str]):
        if isinstance(urls, str):
            urls = [u for u in urls.split(",")]
        self.urls = [u.strip().rstrip("/") for u in urls if u.strip()]
        if not self.urls:
            raise ValueError("no server URL")
        self.index = 0
        self.switches = 0

    @property
    def current(self) -> str:
        return self.urls[self.index]

    def failed(self, url: str) -> None:
        if len(self.urls) > 1 and url == self.current:
            self.index = (self.index + 1) % len(self.urls)
            self.switches += 1

    def __str__(self) -> str:
        return ",".join(self.urls)


class Remote:
    """One deployment (one or several server URLs), one user token, optionally one vault."""

    def __init__(self, server: str | Servers, token: str | None = None, vault: str | None = None,
                 device: str | None = None, transport: httpx.AsyncBaseTransport | None = None):
        headers = {"User-Agent": "gobi-fs"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if device:
            headers[DEVICE_HEADER] = device
        self.servers = server if isinstance(server, Servers) else Servers(server)
        self.token = token
        self.device = device
        self.vault = vault
        self.http = httpx.AsyncClient(
            headers=headers,
            # Transport-level guards only (a silent peer must not hang a task forever);
            # callers bound their own waits.
            timeout=httpx.Timeout(connect=5.0, read=120.0, write=120.0, pool=120.0),
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=8),
            transport=transport,
        )

    @property
    def server(self) -> str:
        """The server URL in use now."""
        return self.servers.current

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _request(self, method: str, url: str, *, expect: Sequence[int] = (200, 201),
                       **kwargs: Any) -> httpx.Response:
        # Several URLs: a request that surely did not reach a server (connection refused)
        # is tried on each once before giving up; anything else is the caller's to retry.
        for attempt in range(len(self.servers.urls)):
            base = self.servers.current
            try:
                response = await self._send(method, base + API_PREFIX + url, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                self.servers.failed(base)
                if attempt + 1 < len(self.servers.urls):
                    continue
                raise Offline(f"{type(exc).__name__}: {exc}") from exc
            except httpx.TransportError as exc:
                self.servers.failed(base)
                raise Offline(f"{type(exc).__name__}: {exc}") from exc
            if response.status_code not in expect:
                if response.status_code in (502, 503, 504) and "retry-after" not in response.headers:
                    self.servers.failed(base)       # draining or behind a dead upstream
                raise _error_from(response)
            return response
        raise Offline("no server answered")

    async def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self.http.request(method, url, **kwargs)
        except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError):
            if method != "GET":
                raise
            # A kept-alive connection the network reset under the request (a proxy, a NAT,
            # a restarted balancer): httpx has dropped it, and a GET may be sent again, once,
            # on a fresh connection. A dead link fails that connect at once; a frozen one
            # (timeouts) is not retried. Without it a read failed with ENETUNREACH, and the
            # live stream's probe took the mount offline, while the server answered.
            return await self.http.request(method, url, **kwargs)

    def _v(self, path: str) -> str:
        assert self.vault, "no vault selected"
        return f"/vaults/{self.vault}{path}"

    # -- accounts and vaults ------------------------------------------------------------------

    async def register(self, username: str, password: str) -> None:
        await self._request("POST", "/users/", json={"username": username, "password": password})

    async def login(self, username: str, password: str) -> str:
        r = await self._request("POST", "/sessions", json={"username": username, "password": password})
        return r.json()["token"]

    async def vaults(self) -> list[Vault]:
        r = await self._request("GET", "/vaults")
        return [Vault.model_validate(v) for v in r.json()["vaults"]]

    async def create_vault(self, name: str) -> Vault:
        r = await self._request("POST", "/vaults", json={"name": name})
        return Vault.model_validate(r.json())

    async def vault_info(self) -> Vault:
        r = await self._request("GET", self._v(""))
        return Vault.model_validate(r.json())

    async def space(self) -> StorageSpace:
        r = await self._request("GET", self._v("/space"))
        return StorageSpace.model_validate(r.json())

    async def settings(self) -> VaultSettings:
        r = await self._request("GET", self._v("/settings"))
        return VaultSettings.model_validate(r.json())

    # -- metadata ----------------------------------------------------------------------------

    async def tree(self, at: int | None = None) -> tuple[int, list[Node]]:
        """The whole vault at one consistent seq (all pages): the head's, or ``at``'s
        (``bad_request`` when ahead of the head, ``cursor_expired`` when older than the
        kept history)."""
        nodes: list[Node] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 5000}
            if at is not None:
                params["at"] = at
            if cursor:
                params["cursor"] = cursor
            r = await self._request("GET", self._v("/tree"), params=params)
            page = TreePage.model_validate(r.json())
            at = page.at
            nodes.extend(page.nodes)
            cursor = page.next_cursor
            if not cursor:
                return at, nodes

    async def seq_at(self, when: float) -> tuple[int, float]:
        """(seq, commit time) of the tree as it was at ``when`` (Unix seconds): the last
        seq committed at or before it. ``not_found`` before the vault existed,
        ``cursor_expired`` when older than the kept history."""
        r = await self._request("GET", self._v("/seq"), params={"at": repr(float(when))})
        body = r.json()
        return body["seq"], body["ts"]

    async def events(self, after: int) -> AsyncIterator[EventPage]:
        """Pages of events after ``after`` until the head (``cursor_expired`` raises)."""
        while True:
            r = await self._request("GET", self._v("/events"), params={"after": after, "limit": 1000})
            page = EventPage.model_validate(r.json())
            yield page
            if not page.has_more or not page.events:
                return
            after = page.events[-1].seq

    async def hold(self, hold_id: str) -> HoldInfo:
        """A mass-delete hold's current state (``not_found`` once the server forgot it)."""
        r = await self._request("GET", self._v(f"/holds/{hold_id}"), params={"limit": 1})
        return HoldInfo.model_validate(r.json()["hold"])

    async def node(self, node_id: str) -> Node:
        r = await self._request("GET", self._v(f"/nodes/{node_id}"))
        return Node.model_validate(r.json())

    async def children(self, node_id: str) -> list[Node]:
        """Every live child of a directory (all pages)."""
        out: list[Node] = []
        after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 5000}
            if after is not None:
                params["after"] = after
            r = await self._request("GET", self._v(f"/nodes/{node_id}/children"), params=params)
            body = r.json()
            out.extend(Node.model_validate(n) for n in body["nodes"])
            after = body.get("next_cursor")
            if not after:
                return out

    async def manifest(self, node_id: str, rev: int | None = None) -> tuple[int, list[ChunkRef]]:
        """(content rev, chunks) of a file's head version (or of ``rev``)."""
        params = {"rev": rev} if rev is not None else None
        r = await self._request("GET", self._v(f"/nodes/{node_id}/content"), params=params)
        body = r.json()
        return body["rev"], [ChunkRef.model_validate(c) for c in body["chunks"]]

    async def head_version(self, node_id: str) -> VersionInfo:
        """A file's head version with its chunks and who made it (``device``)."""
        r = await self._request("GET", self._v(f"/nodes/{node_id}/content"))
        return VersionInfo.model_validate(r.json())

    async def create(self, body: dict) -> Node:
        r = await self._request("POST", self._v("/nodes"), json=body)
        return Node.model_validate(r.json())

    async def update(self, node_id: str, body: dict) -> Node:
        r = await self._request("PATCH", self._v(f"/nodes/{node_id}"), json=body)
        return Node.model_validate(r.json())

    async def delete(self, node_id: str, base_rev: int, recursive: bool = False) -> Node:
        params = {"base_rev": base_rev, "recursive": "true" if recursive else "false"}
        r = await self._request("DELETE", self._v(f"/nodes/{node_id}"), params=params)
        return Node.model_validate(r.json())

    async def commit(self, node_id: str, body: dict) -> Node:
        r = await self._request("PUT", self._v(f"/nodes/{node_id}/content"), json=body)
        return Node.model_validate(r.json())

    async def op(self, op: str, node: str | None, args: dict) -> WriteOutcome:
        """One write, as the WebSocket ``op`` frame would carry it, over REST.

        ``args`` is the request model's JSON; with ``on_conflict="strategy"`` the answer
        is a ``WriteOutcome``, otherwise a plain node (wrapped here without a conflict)."""
        if op == "create":
            r = await self._request("POST", self._v("/nodes"), json=args)
        elif op == "update":
            r = await self._request("PATCH", self._v(f"/nodes/{node}"), json=args)
        elif op == "commit":
            r = await self._request("PUT", self._v(f"/nodes/{node}/content"), json=args)
        elif op == "link":
            r = await self._request("POST", self._v(f"/nodes/{node}/links"), json=args)
        elif op == "delete":
            params = {k: (("true" if v else "false") if isinstance(v, bool) else v)
                      for k, v in args.items() if v is not None}
            r = await self._request("DELETE", self._v(f"/nodes/{node}"), params=params)
        else:
            raise ValueError(f"unknown op {op!r}")
        body = r.json()
        if args.get("on_conflict") == "strategy":
            return WriteOutcome.model_validate(body)
        return WriteOutcome(node=Node.model_validate(body))

    async def ops(self, frames: list[dict]) -> list[dict]:
        """``POST /ops``: many op frames, run in order; one ``ack``/``nack`` dict each."""
        r = await self._request("POST", self._v("/ops"), json={"ops": frames})
        return r.json()["results"]

    # -- chunks ------------------------------------------------------------------------------

    async def missing(self, hashes: Sequence[str]) -> set[str]:
        out: set[str] = set()
        for i in range(0, len(hashes), 10_000):
            r = await self._request("POST", self._v("/chunks/missing"),
                                    json={"hashes": list(hashes[i:i + 10_000])})
            out.update(r.json()["missing"])
        return out

    async def put_chunk(self, chunk_hash: str, data: bytes) -> None:
        await self._request("PUT", self._v(f"/chunks/{chunk_hash}"), content=data,
                            headers={"Content-Type": "application/octet-stream"})

    async def put_chunks(self, chunks: Sequence[tuple[str, bytes]]) -> None:
        """Upload many (small) chunks with ``POST /chunks``, as few requests as fit."""
        body: list[bytes] = []
        size = frames = 0
        for h, data in chunks:
            if body and (size + 36 + len(data) > CHUNK_BATCH_BYTES or frames >= CHUNK_BATCH_FRAMES):
                await self._put_chunk_batch(body)
                body, size, frames = [], 0, 0
            body.append(bytes.fromhex(h) + struct.pack(">I", len(data)) + data)
            size += 36 + len(data)
            frames += 1
        if body:
            await self._put_chunk_batch(body)

    async def _put_chunk_batch(self, frames: list[bytes]) -> None:
        for _ in range(5):
            try:
                await self._request("POST", self._v("/chunks"), content=b"".join(frames),
                                    headers={"Content-Type": "application/octet-stream"})
                return
            except Busy as exc:
                # A chunk the garbage collector is deleting right now: it is done soon.
                await trio.sleep(exc.retry_after)
        raise Offline("chunk upload kept answering 503")

    async def get_chunk(self, chunk_hash: str) -> bytes:
        r = await self._request("GET", self._v(f"/chunks/{chunk_hash}"))
        return r.content
