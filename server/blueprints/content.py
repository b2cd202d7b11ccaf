"""Chunks: which are missing, upload one, download one (with ``Range``).

Chunks are immutable and named by their SHA-256, so downloads carry the hash as a strong
``ETag`` and may be cached for a year (``private``: they are behind authentication).
"""

from __future__ import annotations

import re

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, empty, raw

from gobi.protocol import (
    API_PREFIX,
    MAX_CHUNK_SIZE,
    ChunkBatchResult,
    ChunkStored,
    ErrorCode,
    MissingChunksRequest,
    MissingChunksResponse,
    validate_sha256,
)

from ..errors import ServiceError
from ..http import authed, model_response, parse_body, services
from ..openapi import BINARY, doc
from .vaults import VID

bp = Blueprint("content", url_prefix=API_PREFIX)
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
SHA256_PATTERN = "[0-9a-f]{64}"
#: Positions past any chunk (it is at most MAX_CHUNK_SIZE) need not be parsed: Python
#: refuses int() of more than 4300 digits, and a range that long means "past the end".
_MAX_DIGITS = 18
CACHE_CONTROL = "private, max-age=31536000, immutable"
MAX_BATCH_CHUNKS = 4096
#: A batch holds at most MAX_CHUNK_SIZE bytes of chunks plus 36 bytes of framing each.
MAX_BATCH_BODY = MAX_CHUNK_SIZE + 36 * MAX_BATCH_CHUNKS


def _hash(raw_hash: str) -> str:
    try:
        return validate_sha256(raw_hash)
    except ValueError as exc:
        raise ServiceError(ErrorCode.BAD_REQUEST, f"chunk hash: {exc}") from None


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(offset, length) of a single ``bytes=`` range, None for the whole object.

    Raises 416 for a range that cannot be satisfied and 400 for one that is malformed;
    multiple ranges are not supported (clients ask for one range at a time).
    """
    if not header:
        return None
    m = _RANGE_RE.match(header.strip()) if len(header) < 256 else None
    if not m or (not m.group(1) and not m.group(2)):
        raise ServiceError(ErrorCode.BAD_REQUEST, "unsupported Range (use one 'bytes=a-b' range)")

    def number(digits: str) -> int:
        digits = digits.lstrip("0") or "0"
        return int(digits) if len(digits) <= _MAX_DIGITS else 10 ** _MAX_DIGITS

    first, last = m.group(1), m.group(2)
    if first:
        start = number(first)
        end = min(number(last), size - 1) if last else size - 1
        if last and number(last) < start:
            raise ServiceError(ErrorCode.BAD_REQUEST, "Range end is before its start")
    else:
        suffix = number(last)
        if suffix == 0:
            raise ServiceError(ErrorCode.RANGE_NOT_SATISFIABLE, "empty suffix range", size=size)
        start, end = max(0, size - suffix), size - 1
    if start >= size:
        err = ServiceError(ErrorCode.RANGE_NOT_SATISFIABLE, "range starts past the end", size=size)
        err.headers["Content-Range"] = f"bytes */{size}"
        raise err
    return start, end - start + 1


@bp.post(f"/vaults/{VID}/chunks/missing")
@doc("Which of these chunks does the server lack?", body=MissingChunksRequest,
     ok={200: MissingChunksResponse})
@authed(role="write")
async def missing(request: Request, vault_id: str) -> HTTPResponse:
    req = parse_body(request, MissingChunksRequest)
    hashes = await services(request).chunks.missing(request.ctx.actor, vault_id, req.hashes)
    return model_response(MissingChunksResponse(missing=hashes))


def parse_chunk_batch(body: bytes) -> list[tuple[str, bytes]]:
    """Frames of ``32-byte SHA-256 | 4-byte big-endian size | bytes``, back to back."""
    items, pos = [], 0
    while pos < len(body):
        if len(body) - pos < 36:
            raise ServiceError(ErrorCode.BAD_REQUEST, f"truncated chunk frame header at byte {pos}")
        digest, size = body[pos:pos + 32], int.from_bytes(body[pos + 32:pos + 36], "big")
        pos += 36
        if size == 0 or size > len(body) - pos:
            raise ServiceError(ErrorCode.BAD_REQUEST, f"chunk frame size {size} does not fit the body")
        items.append((digest.hex(), body[pos:pos + size]))
        pos += size
        if len(items) > MAX_BATCH_CHUNKS:
            raise ServiceError(ErrorCode.BAD_REQUEST, f"at most {MAX_BATCH_CHUNKS} chunks per batch")
    if not items:
        raise ServiceError(ErrorCode.BAD_REQUEST, "empty chunk batch")
    return items


@bp.post(f"/vaults/{VID}/chunks")
@doc("Upload several chunks at once: frames of sha256(32 bytes) | size (u32 BE) | bytes", body=BINARY,
     ok={200: ChunkBatchResult}, errors=(503,))
@authed(role="write", max_body=MAX_BATCH_BODY)
async def put_batch(request: Request, vault_id: str) -> HTTPResponse:
    items = parse_chunk_batch(request.body or b"")
    created = await services(request).chunks.put_many(request.ctx.actor, vault_id, items)
    new_bytes = sum(len(d) for (_, d), c in zip(items, created) if c)
    request.app.ctx.metrics.chunk_bytes.labels("in").inc(new_bytes)
    return model_response(ChunkBatchResult(chunks=[ChunkStored(hash=h, size=len(d), created=c)
                                                    for (h, d), c in zip(items, created)]))


@bp.put(f"/vaults/{VID}/chunks/<chunk_hash:str>")
@doc("Upload a chunk; the body must hash to the SHA-256 in the URL", body=BINARY,
     ok={201: ChunkStored, 200: ChunkStored}, path={"chunk_hash": SHA256_PATTERN})
@authed(role="write", max_body=MAX_CHUNK_SIZE)
async def put(request: Request, vault_id: str, chunk_hash: str) -> HTTPResponse:
    chunk_hash = _hash(chunk_hash)
    data = request.body or b""
    if len(data) > MAX_CHUNK_SIZE:
        raise ServiceError(ErrorCode.PAYLOAD_TOO_LARGE, f"chunks are limited to {MAX_CHUNK_SIZE} bytes")
    created = await services(request).chunks.put(request.ctx.actor, vault_id, chunk_hash, data)
    if created:
        request.app.ctx.metrics.chunk_bytes.labels("in").inc(len(data))
    return model_response(ChunkStored(hash=chunk_hash, size=len(data), created=created),
                          status=201 if created else 200)


@bp.route(f"/vaults/{VID}/chunks/<chunk_hash:str>", methods=["GET", "HEAD"])
@doc("Download a chunk (supports Range and If-None-Match)", ok={200: BINARY, 206: BINARY, 304: None},
     errors=(416,), path={"chunk_hash": SHA256_PATTERN},
     headers={"Range": "one range: bytes=FIRST-[LAST] or bytes=-SUFFIX",
              "If-None-Match": "the chunk's ETag: 304 when it matches"})
@authed
async def get(request: Request, vault_id: str, chunk_hash: str) -> HTTPResponse:
    chunk_hash = _hash(chunk_hash)
    chunks = services(request).chunks
    size = await chunks.size(request.ctx.actor, vault_id, chunk_hash)
    etag = f'"{chunk_hash}"'
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL, "Accept-Ranges": "bytes"}
    if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        return empty(status=304, headers=headers)
    rng = parse_range(request.headers.get("range"), size)
    if request.method == "HEAD":
        return empty(status=200, headers={**headers, "Content-Length": str(size)})
    if rng is None:
        data = await chunks.read(vault_id, chunk_hash, 0, None, size)
        request.app.ctx.metrics.chunk_bytes.labels("out").inc(len(data))
        return raw(data, headers=headers, content_type="application/octet-stream")
    offset, length = rng
    data = await chunks.read(vault_id, chunk_hash, offset, length, size)
    request.app.ctx.metrics.chunk_bytes.labels("out").inc(len(data))
    headers["Content-Range"] = f"bytes {offset}-{offset + len(data) - 1}/{size}"
    return raw(data, status=206, headers=headers, content_type="application/octet-stream")
