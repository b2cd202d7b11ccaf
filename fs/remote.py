"""The client's view of the gobi server: REST calls over httpx, typed results, typed errors.

This layer knows HTTP and the wire models of ``gobi.protocol`` and nothing about FUSE,
the mirror or the journal. Every method either returns a parsed result or raises one of:

- ``Offline``: the server could not be reached or answered "try again later" (connection
  refused/reset, timeouts, 5xx, ``unavailable``). Callers retry with backoff and treat the
  mount as offline meanwhile.
- ``ApiError``: the server understood and refused (4xx); ``code`` is the stable
  ``ErrorCode`` and ``details`` carries what is needed to catch up (``head``, ``missing``).

No method takes a timeout: callers bound waits with ``trio.move_on_after``. The httpx
client has transport-level timeouts only so that a dead peer is noticed at all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx

from gobi.protocol import (
    API_PREFIX,
    DEVICE_HEADER,
    ChunkRef,
    ErrorCode,
    EventPage,
    Node,
    TreePage,
    Vault,
)


class RemoteError(Exception):
    """Base of everything this layer raises."""


class Offline(RemoteError):
    """The server is unreachable or temporarily unable to answer: retry later."""


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


def _error_from(response: httpx.Response) -> RemoteError:
    if response.status_code >= 500 or response.status_code == 429:
        return Offline(f"server answered {response.status_code}")
    try:
        body = response.json()["error"]
        return ApiError(response.status_code, body.get("code", "?"), body.get("message", ""),
                        body.get("details") or {})
    except (ValueError, KeyError, TypeError):
        return ApiError(response.status_code, ErrorCode.BAD_REQUEST.value,
                        f"unexpected answer: {response.text[:200]}")


class Remote:
    """One server, one user token, optionally one vault."""

    def __init__(self, server: str, token: str | None = None, vault: str | None = None,
                 device: str | None = None, transport: httpx.AsyncBaseTransport | None = None):
        headers = {"User-Agent": "gobi-fs"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if device:
            headers[DEVICE_HEADER] = device
        self.server = server.rstrip("/")
        self.vault = vault
        self.http = httpx.AsyncClient(
            base_url=self.server + API_PREFIX,
            headers=headers,
            # Transport-level guards only (a silent peer must not hang a task forever);
            # callers bound their own waits.
            timeout=httpx.Timeout(connect=5.0, read=120.0, write=120.0, pool=120.0),
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=8),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _request(self, method: str, url: str, *, expect: Sequence[int] = (200, 201),
                       **kwargs: Any) -> httpx.Response:
        try:
            response = await self.http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise Offline(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code not in expect:
            raise _error_from(response)
        return response

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

    # -- metadata ----------------------------------------------------------------------------

    async def tree(self) -> tuple[int, list[Node]]:
        """The whole vault at one consistent seq (all pages)."""
        nodes: list[Node] = []
        at: int | None = None
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

    async def events(self, after: int) -> AsyncIterator[EventPage]:
        """Pages of events after ``after`` until the head (``cursor_expired`` raises)."""
        while True:
            r = await self._request("GET", self._v("/events"), params={"after": after, "limit": 1000})
            page = EventPage.model_validate(r.json())
            yield page
            if not page.has_more or not page.events:
                return
            after = page.events[-1].seq

    async def node(self, node_id: str) -> Node:
        r = await self._request("GET", self._v(f"/nodes/{node_id}"))
        return Node.model_validate(r.json())

    async def manifest(self, node_id: str, rev: int | None = None) -> tuple[int, list[ChunkRef]]:
        """(content rev, chunks) of a file's head version (or of ``rev``)."""
        params = {"rev": rev} if rev is not None else None
        r = await self._request("GET", self._v(f"/nodes/{node_id}/content"), params=params)
        body = r.json()
        return body["rev"], [ChunkRef.model_validate(c) for c in body["chunks"]]

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

    async def get_chunk(self, chunk_hash: str) -> bytes:
        r = await self._request("GET", self._v(f"/chunks/{chunk_hash}"))
        return r.content

