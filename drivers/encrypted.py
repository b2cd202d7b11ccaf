"""The ``encrypted`` wrapper: AES-256-GCM at rest over any driver.

Object format, version 1 (all integers big-endian)::

    header   magic "GBEn" (4) | format version (1) | data key id (u32) | salt (32)
    body     segment 0 | segment 1 | … ; each segment = AES-GCM(64 KiB of plaintext) + 16-byte tag

- Every object gets a fresh random 32-byte salt; its AES-256 key is
  HMAC-SHA256(data key, "gobi-object-key-v1" | salt). Keys are never reused across
  objects, so the per-segment nonce can be the segment index (11 bytes) plus a "final
  segment" flag (1 byte), the STREAM construction: reordering, dropping or truncating
  segments fails authentication, and so does cutting the object at a segment boundary.
- Associated data of every segment: the header (so the format version and key id are
  authenticated) and the object key (so an object copied or moved to another key, or into
  another vault, fails to decrypt).
- Segments make ranged reads cheap: ``get(key, offset, length)`` fetches the header and
  only the segments that cover the range (concurrently), and verifies exactly those.

Keys: each *scope* (the first component of an object key: the vault id) has its own
random 256-bit data keys, stored through the inner driver under ``_keys/<scope>`` wrapped
(AES-256-GCM) by a master key from the key file; the wrapping binds scope, data key id
and master key id. Rotating the master key (``gobi keys rotate``) re-wraps these small
documents and never rewrites data; a new data key per scope (``--new-data-keys``) applies to
new writes while old objects keep naming theirs in their header. A scope's keyring is
created with the inner driver's atomic ``create``, so two servers starting the same vault
at once agree on one data key.

Failures: any authentication failure, short or malformed object is ``ObjectCorrupted``;
a missing master or data key is ``KeyUnavailable``. Messages name keys by id only; key
bytes never reach a log line, an exception or a ``repr``.

AES-GCM comes from ``cryptography`` (OpenSSL), not pycryptodome: measured here on 64 KiB
segments, 6.6–7.7 GB/s against 0.5–0.8 GB/s, the difference between encryption being
noise next to an fsync and dominating a read (see docs/storage.md).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
import anyio.to_thread
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .base import (
    KeyUnavailable,
    ObjectCorrupted,
    ObjectInfo,
    ObjectNotFound,
    StorageDriver,
    check_key,
    check_range,
)
from .keys import KeyFile, KeyFileError

log = logging.getLogger("gobi.drivers.encrypted")

FORMAT_VERSION = 1
MAGIC = b"GBEn"
_HEADER = struct.Struct(">4sBI32s")
HEADER_SIZE = _HEADER.size          # 41
SEGMENT = 64 * 1024                 # plaintext bytes per segment
TAG = 16
SEALED_SEGMENT = SEGMENT + TAG
KEYS_PREFIX = "_keys/"
KEYRING_FORMAT = 1
_DEFAULT_SCOPE = "_global"
_OBJECT_KEY_LABEL = b"gobi-object-key-v1\x00"
_WRAP_LABEL = b"gobi-data-key-v1\x00"
# Crypto on bigger buffers runs in a worker thread so the event loop stays responsive.
_THREAD_THRESHOLD = 256 * 1024


def scope_of(key: str) -> str:
    """The key's scope: its first path component (the vault id), or a shared default."""
    head, sep, _ = key.partition("/")
    return head if sep else _DEFAULT_SCOPE


def sealed_size(plain_size: int) -> int:
    segments = max(1, -(-plain_size // SEGMENT))
    return HEADER_SIZE + plain_size + TAG * segments


def plain_size(stored_size: int) -> int | None:
    """Plaintext size of a well-formed object of ``stored_size`` bytes, else None."""
    body = stored_size - HEADER_SIZE
    if body < TAG:
        return None
    segments = -(-body // SEALED_SEGMENT)
    size = body - TAG * segments
    if segments > 1 and size - (segments - 1) * SEGMENT < 1:
        return None  # we never write an empty segment after a full one
    return size


def _nonce(index: int, final: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if final else b"\x00")


def _object_key(data_key: bytes, salt: bytes) -> bytes:
    return hmac.new(data_key, _OBJECT_KEY_LABEL + salt, hashlib.sha256).digest()


def _aad(header: bytes, key: str) -> bytes:
    raw = key.encode()
    return header + len(raw).to_bytes(2, "big") + raw


def _seal(object_key: bytes, header: bytes, aad: bytes, data: bytes) -> bytearray:
    # One preallocated buffer filled with encrypt_into: per-segment bytes objects and a
    # join cost more than the cipher itself (fresh 4 MiB allocations fault page by page).
    aead = AESGCM(object_key)
    view = memoryview(data)
    segments = max(1, -(-len(data) // SEGMENT))
    out = bytearray(len(header) + len(data) + TAG * segments)
    out[: len(header)] = header
    target = memoryview(out)
    pos = len(header)
    for i in range(segments):
        piece = view[i * SEGMENT:(i + 1) * SEGMENT]
        aead.encrypt_into(_nonce(i, i == segments - 1), piece, aad, target[pos:pos + len(piece) + TAG])
        pos += len(piece) + TAG
    return out


def _open(object_key: bytes, aad: bytes, body: memoryview, first: int, ends_final: bool, key: str) -> bytearray:
    """Decrypt consecutive segments starting at index ``first``; ``ends_final`` says the
    last one in ``body`` must be the object's final segment. Decrypts into one buffer
    (see ``_seal``); a bytearray is returned as the bytes-like result."""
    aead = AESGCM(object_key)
    segments = -(-len(body) // SEALED_SEGMENT)
    out = bytearray(max(0, len(body) - TAG * segments))
    target = memoryview(out)
    pos, written, index = 0, 0, first
    while pos < len(body):
        sealed = body[pos:pos + SEALED_SEGMENT]
        pos += len(sealed)
        final = ends_final and pos >= len(body)
        if len(sealed) < TAG or (len(sealed) < SEALED_SEGMENT and not final):
            raise ObjectCorrupted(f"{key}: truncated segment {index}")
        size = len(sealed) - TAG
        try:
            aead.decrypt_into(_nonce(index, final), sealed, aad, target[written:written + size])
        except InvalidTag:
            raise ObjectCorrupted(f"{key}: segment {index} failed authentication") from None
        written += size
        index += 1
    return out


class _Keyring:
    """The unwrapped data keys of one scope. Its repr shows ids only."""

    __slots__ = ("scope", "current", "_keys", "masters")

    def __init__(self, scope: str, current: int, keys: dict[int, bytes], masters: dict[int, str]):
        self.scope = scope
        self.current = current
        self._keys = keys
        self.masters = masters

    def key(self, key_id: int) -> bytes | None:
        return self._keys.get(key_id)

    @property
    def ids(self) -> list[int]:
        return sorted(self._keys)

    def __repr__(self) -> str:
        return f"<Keyring scope={self.scope!r} ids={self.ids} current={self.current}>"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _wrap_aad(scope: str, key_id: int, master_id: str) -> bytes:
    return _WRAP_LABEL + f"{scope}\x00{key_id}\x00{master_id}".encode()


@dataclass
class RewrapReport:
    scopes: int = 0
    data_keys: int = 0
    new_data_keys: int = 0
    masters_in_use: set[str] = field(default_factory=set)


class EncryptedDriver(StorageDriver):
    kind = "encrypted"

    def __init__(self, inner: StorageDriver, keys: KeyFile):
        self.inner = inner
        self._keyfile = keys
        self._rings: dict[str, _Keyring] = {}
        self._locks: dict[str, anyio.Lock] = {}

    def children(self) -> tuple[StorageDriver, ...]:
        return (self.inner,)

    def describe(self) -> str:
        return f"encrypted({self.inner.describe()})"

    # -- keys ------------------------------------------------------------------------

    def _master(self, master_id: str) -> bytes:
        key = self._keyfile.master_keys.get(master_id)
        if key is None:
            # Another process may have rotated: read the file again before giving up.
            try:
                self._keyfile.reload()
            except (OSError, KeyFileError) as exc:
                log.warning("could not re-read the key file: %s", exc)
            key = self._keyfile.master_keys.get(master_id)
        if key is None:
            raise KeyUnavailable(f"master key {master_id!r} is not in the key file {self._keyfile.path}")
        return key

    def _parse_ring(self, scope: str, raw: bytes) -> _Keyring:
        where = f"{KEYS_PREFIX}{scope}"
        try:
            doc = json.loads(raw)
            if doc.get("format") != KEYRING_FORMAT or doc.get("scope") != scope:
                raise ObjectCorrupted(f"{where}: not a keyring of this scope")
            keys: dict[int, bytes] = {}
            masters: dict[int, str] = {}
            for entry in doc["keys"]:
                key_id, master_id = int(entry["id"]), str(entry["master"])
                nonce = base64.b64decode(entry["nonce"], validate=True)
                wrapped = base64.b64decode(entry["wrapped"], validate=True)
                try:
                    keys[key_id] = AESGCM(self._master(master_id)).decrypt(
                        nonce, wrapped, _wrap_aad(scope, key_id, master_id))
                except InvalidTag:
                    raise ObjectCorrupted(
                        f"{where}: data key {key_id} does not unwrap with master key {master_id!r} "
                        "(the keyring was altered, or this is not the key file that wrapped it)") from None
                masters[key_id] = master_id
            current = int(doc["current"])
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ObjectCorrupted(f"{where}: malformed keyring") from None
        if current not in keys:
            raise ObjectCorrupted(f"{where}: current data key {current} is missing")
        return _Keyring(scope, current, keys, masters)

    def _render_ring(self, ring: _Keyring, master_id: str) -> bytes:
        master = self._master(master_id)
        entries = []
        for key_id in ring.ids:
            nonce = secrets.token_bytes(12)
            wrapped = AESGCM(master).encrypt(nonce, ring.key(key_id), _wrap_aad(ring.scope, key_id, master_id))
            entries.append({"id": key_id, "master": master_id, "nonce": _b64(nonce), "wrapped": _b64(wrapped)})
        doc = {"format": KEYRING_FORMAT, "scope": ring.scope, "current": ring.current,
               "keys": entries, "updated": int(time.time())}
        return json.dumps(doc, indent=1).encode()

    async def _load_ring(self, scope: str) -> _Keyring | None:
        try:
            raw = await self.inner.get(KEYS_PREFIX + scope)
        except ObjectNotFound:
            return None
        ring = self._parse_ring(scope, raw)
        self._rings[scope] = ring
        return ring

    async def _ring(self, scope: str, *, create: bool, need: int | None = None) -> _Keyring:
        """The scope's keyring; loads it, or creates it for a first write. ``need`` is a
        data key id the caller must find (a newer keyring may have been written since)."""
        ring = self._rings.get(scope)
        if ring is not None and (need is None or ring.key(need) is not None):
            return ring
        lock = self._locks.setdefault(scope, anyio.Lock())
        async with lock:
            ring = self._rings.get(scope)
            if ring is None or (need is not None and ring.key(need) is None):
                ring = await self._load_ring(scope)
            if ring is None and create:
                self._keyfile.refresh()  # wrap with the newest master key
                fresh = _Keyring(scope, 1, {1: secrets.token_bytes(32)}, {1: self._keyfile.current})
                if await self.inner.create(KEYS_PREFIX + scope, self._render_ring(fresh, self._keyfile.current)):
                    log.info("created the data key of scope %s", scope)
                    self._rings[scope] = ring = fresh
                else:  # another writer won the race: use theirs
                    ring = await self._load_ring(scope)
            if ring is None:
                raise KeyUnavailable(f"no data key for scope {scope!r} ({KEYS_PREFIX}{scope} is missing)")
            return ring

    # -- objects ---------------------------------------------------------------------

    @staticmethod
    def _check_user_key(key: str) -> str:
        check_key(key)
        if key.startswith(KEYS_PREFIX) or key == KEYS_PREFIX.rstrip("/"):
            raise ValueError(f"storage key {key!r} is reserved for data keys")
        return key

    async def _seal_for(self, key: str, data: bytes) -> bytes:
        ring = await self._ring(scope_of(key), create=True)
        header = _HEADER.pack(MAGIC, FORMAT_VERSION, ring.current, secrets.token_bytes(32))
        object_key = _object_key(ring.key(ring.current), header[-32:])
        aad = _aad(header, key)
        if len(data) > _THREAD_THRESHOLD:
            return await anyio.to_thread.run_sync(_seal, object_key, header, aad, data)
        return _seal(object_key, header, aad, data)

    async def put(self, key: str, data: bytes) -> None:
        self._check_user_key(key)
        await self.inner.put(key, await self._seal_for(key, data))

    async def create(self, key: str, data: bytes) -> bool:
        self._check_user_key(key)
        return await self.inner.create(key, await self._seal_for(key, data))

    def _parse_header(self, key: str, header: bytes) -> tuple[int, bytes]:
        if len(header) < HEADER_SIZE:
            raise ObjectCorrupted(f"{key}: shorter than an encrypted header")
        magic, version, key_id, salt = _HEADER.unpack(header[:HEADER_SIZE])
        if magic != MAGIC:
            raise ObjectCorrupted(f"{key}: not an encrypted object")
        if version != FORMAT_VERSION:
            raise ObjectCorrupted(f"{key}: unknown encryption format version {version}")
        return key_id, salt

    async def _object_key_for(self, key: str, key_id: int, salt: bytes) -> bytes:
        ring = await self._ring(scope_of(key), create=False, need=key_id)
        data_key = ring.key(key_id)
        if data_key is None:
            raise KeyUnavailable(f"{key}: data key {key_id} of scope {ring.scope!r} is unknown")
        return _object_key(data_key, salt)

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        self._check_user_key(key)
        check_range(offset, length)
        if length == 0:
            await self.head(key)
            return b""
        first = offset // SEGMENT
        start = HEADER_SIZE + first * SEALED_SEGMENT
        if length is None:
            fetch = None
        else:
            last = (offset + length - 1) // SEGMENT
            # one byte past the last wanted segment tells whether that segment is final
            fetch = (last - first + 1) * SEALED_SEGMENT + 1
        if first == 0:
            blob = await self.inner.get(key, 0, None if fetch is None else HEADER_SIZE + fetch)
            header, body = blob[:HEADER_SIZE], memoryview(blob)[HEADER_SIZE:]
        else:
            parts: dict[str, bytes] = {}

            async def fetch_into(name: str, off: int, n: int | None) -> None:
                parts[name] = await self.inner.get(key, off, n)

            async with anyio.create_task_group() as tg:
                tg.start_soon(fetch_into, "header", 0, HEADER_SIZE)
                tg.start_soon(fetch_into, "body", start, fetch)
            header, body = parts["header"], memoryview(parts["body"])
        key_id, salt = self._parse_header(key, header)
        ends_final = True
        if fetch is not None and len(body) == fetch:
            body, ends_final = body[:-1], False
        object_key = await self._object_key_for(key, key_id, salt)
        aad = _aad(header[:HEADER_SIZE], key)
        if not body:
            if first == 0:
                raise ObjectCorrupted(f"{key}: no segments")
            # The range starts past the end: prove the object really ends before it
            # (a truncated object must not pass for a short one).
            await self._verify_final_segment(key, object_key, aad)
            return b""
        if len(body) > _THREAD_THRESHOLD:
            plain = await anyio.to_thread.run_sync(_open, object_key, aad, body, first, ends_final, key)
        else:
            plain = _open(object_key, aad, body, first, ends_final, key)
        skip = offset - first * SEGMENT
        if skip == 0 and (length is None or length >= len(plain)):
            return plain
        return plain[skip:] if length is None else plain[skip:skip + length]

    async def _verify_final_segment(self, key: str, object_key: bytes, aad: bytes) -> None:
        stored = (await self.inner.head(key)).size
        size = plain_size(stored)
        if size is None:
            raise ObjectCorrupted(f"{key}: stored size {stored} is not a valid encrypted size")
        final = max(1, -(-size // SEGMENT)) - 1
        start = HEADER_SIZE + final * SEALED_SEGMENT
        tail = await self.inner.get(key, start, None)
        _open(object_key, aad, memoryview(tail), final, True, key)

    async def head(self, key: str) -> ObjectInfo:
        self._check_user_key(key)
        info = await self.inner.head(key)
        size = plain_size(info.size)
        if size is None:
            raise ObjectCorrupted(f"{key}: stored size {info.size} is not a valid encrypted size")
        return ObjectInfo(key, size, info.mtime)

    async def delete(self, key: str) -> None:
        self._check_user_key(key)
        await self.inner.delete(key)

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        async for info in self.inner.list(prefix):
            if info.key.startswith(KEYS_PREFIX):
                continue
            size = plain_size(info.size)
            if size is None:
                log.warning("%s: stored size %d is not a valid encrypted size", info.key, info.size)
                size = 0
            yield ObjectInfo(info.key, size, info.mtime)

    # -- key management --------------------------------------------------------------

    async def scopes(self) -> list[str]:
        return [info.key[len(KEYS_PREFIX):] async for info in self.inner.list(KEYS_PREFIX)]

    async def rewrap(self, *, new_data_keys: bool = False) -> RewrapReport:
        """Re-wrap every scope's data keys with the current master key; with
        ``new_data_keys`` also add a fresh data key per scope for future writes.
        Objects are not touched: their headers name data key ids, which stay valid."""
        self._keyfile.refresh()
        master_id = self._keyfile.current
        report = RewrapReport()
        for scope in await self.scopes():
            lock = self._locks.setdefault(scope, anyio.Lock())
            async with lock:
                ring = await self._load_ring(scope)
                if ring is None:
                    continue
                if new_data_keys:
                    new_id = max(ring.ids) + 1
                    keys = {i: ring.key(i) for i in ring.ids}
                    keys[new_id] = secrets.token_bytes(32)
                    ring = _Keyring(scope, new_id, keys, dict(ring.masters))
                    report.new_data_keys += 1
                await self.inner.put(KEYS_PREFIX + scope, self._render_ring(ring, master_id))
                ring.masters = {i: master_id for i in ring.ids}
                self._rings[scope] = ring
            report.scopes += 1
            report.data_keys += len(ring.ids)
        report.masters_in_use = await self.masters_in_use()
        return report

    async def masters_in_use(self) -> set[str]:
        """Master key ids that wrap some scope's data keys, read from storage."""
        used: set[str] = set()
        for scope in await self.scopes():
            raw = await self.inner.get(KEYS_PREFIX + scope)
            try:
                used.update(str(entry["master"]) for entry in json.loads(raw)["keys"])
            except (ValueError, KeyError, TypeError):
                raise ObjectCorrupted(f"{KEYS_PREFIX}{scope}: malformed keyring") from None
        return used
