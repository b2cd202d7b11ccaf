"""The ``s3`` driver: objects in an S3 bucket (AWS, Ceph RGW, SeaweedFS, …) via aiobotocore.

- Small objects are one ``PutObject``; objects from ``multipart_threshold`` up are
  uploaded as a multipart upload in ``part_size`` parts (a few in flight at once, sliced
  from the caller's buffer without copying the whole object), aborted on any failure so no
  half upload is left billing.
- ``get`` with an offset or length is a ranged GET; ``iter_get`` streams the body in
  blocks; ``create`` is a conditional PUT (``If-None-Match: *``).
- Every PUT carries ``Content-MD5``, so the server rejects bytes damaged in transit.
  botocore's newer default (CRC32 trailers in aws-chunked bodies) is switched off: not
  every S3 implementation understands it.
- Throttling, 5xx and connection errors are retried by botocore's ``standard`` retry mode
  (exponential backoff with jitter, ``max_attempts`` in all); what is still failing then
  surfaces as ``TransientStorageError``.

aiobotocore runs on asyncio. Under asyncio (the server) calls run on the caller's own
loop; under trio (the client, tools) they run on a private asyncio loop in a daemon thread
and the trio task waits for them without holding a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from .base import (
    STREAM_BLOCK,
    ObjectInfo,
    ObjectNotFound,
    StorageDriver,
    StorageError,
    StoragePermissionError,
    TransientStorageError,
    check_key,
    check_range,
)

log = logging.getLogger("gobi.drivers.s3")
T = TypeVar("T")

MiB = 1024 * 1024
_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_DENIED = {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled",
           "InvalidToken", "ExpiredToken"}
_TRANSIENT = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError",
              "ServiceUnavailable", "RequestLimitExceeded", "500", "502", "503", "504"}
_HASH_IN_THREAD = 256 * 1024


def _on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _translate(exc: BaseException, key: str, bucket: str) -> StorageError:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if code in _NOT_FOUND or (status == "404" and code != "NoSuchBucket"):
            return ObjectNotFound(key)
        if code == "NoSuchBucket":
            return StorageError(f"bucket {bucket!r} does not exist")
        if code in _DENIED or status == "403":
            return StoragePermissionError(f"{key}: S3 refused: {code}")
        if code in _TRANSIENT or status.startswith("5"):
            return TransientStorageError(f"{key}: S3 {code or status}")
        return StorageError(f"{key}: S3 {code or status}")
    if isinstance(exc, NoCredentialsError):
        return StoragePermissionError("no S3 credentials configured")
    # connection refused/reset, timeouts, aiohttp errors
    return TransientStorageError(f"{key}: {type(exc).__name__}: {exc}")


def _md5_b64(data: bytes | memoryview) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode("ascii")


class _LoopThread:
    """A private asyncio loop in a daemon thread, for callers that run on trio."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="gobi-s3-loop", daemon=True)
        self.thread.start()

    async def run(self, make: Callable[[], Awaitable[T]]) -> T:
        import trio

        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        future = asyncio.run_coroutine_threadsafe(make(), self.loop)

        def wake(_: object) -> None:
            try:
                token.run_sync_soon(done.set)
            except trio.RunFinishedError:
                pass

        future.add_done_callback(wake)
        try:
            await done.wait()
        except BaseException:
            future.cancel()
            raise
        return future.result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if not self.thread.is_alive():
            self.loop.close()


class S3Driver(StorageDriver):
    kind = "s3"
    #: multipart uploads older than this are leftovers of a crashed writer
    stale_upload_age = 24 * 3600.0
    sweep_interval = 24 * 3600.0

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        profile: str | None = None,
        addressing: str = "auto",
        part_size: int = 8 * MiB,
        multipart_threshold: int = 16 * MiB,
        concurrency: int = 4,
        max_attempts: int = 5,
        max_connections: int = 32,
    ):
        if not bucket:
            raise ValueError("an s3 storage URL needs a bucket: s3://BUCKET/prefix")
        if part_size < 5 * MiB:
            raise ValueError("S3 parts are at least 5 MiB (part_size)")
        if multipart_threshold < part_size:
            raise ValueError("multipart_threshold must be >= part_size")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint = endpoint
        self.part_size = part_size
        self.multipart_threshold = multipart_threshold
        self.concurrency = max(1, concurrency)
        self._session = get_session()
        if profile:
            self._session.set_config_variable("profile", profile)
        self._client_args: dict[str, Any] = {
            "region_name": region or "us-east-1",
            "endpoint_url": endpoint,
            "config": Config(
                retries={"mode": "standard", "total_max_attempts": max_attempts},
                s3={"addressing_style": addressing},
                max_pool_connections=max_connections,
                connect_timeout=10,
                read_timeout=60,
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        }
        if access_key or secret_key:
            self._client_args["aws_access_key_id"] = access_key
            self._client_args["aws_secret_access_key"] = secret_key
        self._clients: dict[asyncio.AbstractEventLoop, tuple[Any, Any]] = {}
        self._bridge: _LoopThread | None = None
        self._bridge_lock = threading.Lock()
        self._last_sweep = time.monotonic()

    def describe(self) -> str:
        where = f" at {self.endpoint}" if self.endpoint else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"

    # -- running aiobotocore on the right loop ----------------------------------------

    async def _client(self) -> Any:
        loop = asyncio.get_running_loop()
        entry = self._clients.get(loop)
        if entry is None:
            ctx = self._session.create_client("s3", **self._client_args)
            client = await ctx.__aenter__()
            if loop in self._clients:  # created concurrently by another task
                await ctx.__aexit__(None, None, None)
            else:
                self._clients[loop] = (ctx, client)
            entry = self._clients[loop]
        return entry[1]

    async def _in_loop(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run a coroutine on an asyncio loop: the caller's, or the private one."""
        if _on_asyncio():
            return await make()
        with self._bridge_lock:
            if self._bridge is None:
                self._bridge = _LoopThread()
            bridge = self._bridge
        return await bridge.run(make)

    async def _call(self, key: str, op: Callable[[Any], Awaitable[T]]) -> T:
        async def run() -> T:
            client = await self._client()
            try:
                return await op(client)
            except (ClientError, BotoCoreError, OSError, asyncio.TimeoutError) as exc:
                raise _translate(exc, key, self.bucket) from None
            except Exception as exc:  # aiohttp's errors, without importing aiohttp here
                if type(exc).__module__.startswith("aiohttp"):
                    raise _translate(exc, key, self.bucket) from None
                raise

        return await self._in_loop(run)

    def _name(self, key: str) -> str:
        return self.prefix + key

    @staticmethod
    async def _md5(data: bytes | memoryview) -> str:
        if len(data) > _HASH_IN_THREAD:
            return await anyio.to_thread.run_sync(_md5_b64, data)
        return _md5_b64(data)

    # -- interface -----------------------------------------------------------------

    async def put(self, key: str, data: bytes) -> None:
        check_key(key)
        if len(data) >= self.multipart_threshold:
            await self._put_multipart(key, data)
            return
        md5 = await self._md5(data)
        await self._call(key, lambda c: c.put_object(
            Bucket=self.bucket, Key=self._name(key), Body=bytes(data), ContentMD5=md5))

    async def _put_multipart(self, key: str, data: bytes) -> None:
        name = self._name(key)
        created = await self._call(key, lambda c: c.create_multipart_upload(Bucket=self.bucket, Key=name))
        upload_id = created["UploadId"]
        view = memoryview(data)
        count = -(-len(data) // self.part_size)
        etags: list[str] = [""] * count
        limiter = anyio.CapacityLimiter(self.concurrency)

        async def upload(i: int) -> None:
            async with limiter:
                part = view[i * self.part_size:(i + 1) * self.part_size]
                md5 = await self._md5(part)
                resp = await self._call(key, lambda c: c.upload_part(
                    Bucket=self.bucket, Key=name, UploadId=upload_id, PartNumber=i + 1,
                    Body=bytes(part), ContentMD5=md5))
                etags[i] = resp["ETag"]

        try:
            async with anyio.create_task_group() as tg:
                for i in range(count):
                    tg.start_soon(upload, i)
            parts = [{"ETag": etag, "PartNumber": i + 1} for i, etag in enumerate(etags)]
            await self._call(key, lambda c: c.complete_multipart_upload(
                Bucket=self.bucket, Key=name, UploadId=upload_id, MultipartUpload={"Parts": parts}))
        except BaseException:
            with anyio.CancelScope(shield=True):
                try:
                    await self._call(key, lambda c: c.abort_multipart_upload(
                        Bucket=self.bucket, Key=name, UploadId=upload_id))
                except StorageError as exc:  # maintain() sweeps it later
                    log.warning("could not abort multipart upload of %s: %s", key, exc)
            raise

    async def create(self, key: str, data: bytes) -> bool:
        check_key(key)
        md5 = await self._md5(data)

        async def op(c: Any) -> str:
            try:
                await c.put_object(Bucket=self.bucket, Key=self._name(key), Body=bytes(data),
                                   ContentMD5=md5, IfNoneMatch="*")
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if code == "PreconditionFailed" or status == 412:
                    return "exists"
                if code == "ConditionalRequestConflict" or status == 409:
                    return "conflict"
                raise
            return "created"

        for attempt in range(6):
            outcome = await self._call(key, op)
            if outcome != "conflict":
                return outcome == "created"
            # a concurrent conditional write of the same key is in flight: see how it ends
            await anyio.sleep(0.05 * 2**attempt)
        raise TransientStorageError(f"{key}: concurrent conditional writes kept conflicting")

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        check_key(key)
        check_range(offset, length)
        if length == 0:
            await self.head(key)
            return b""
        extra: dict[str, str] = {}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            extra["Range"] = f"bytes={offset}-{end}"

        async def op(c: Any) -> bytes:
            try:
                resp = await c.get_object(Bucket=self.bucket, Key=self._name(key), **extra)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                    return b""  # the object exists; the range starts past its end
                raise
            async with resp["Body"] as body:
                return await body.read()

        return await self._call(key, op)

    async def iter_get(
        self, key: str, offset: int = 0, length: int | None = None, *, block_size: int = STREAM_BLOCK
    ) -> AsyncIterator[bytes]:
        check_key(key)
        check_range(offset, length)
        if block_size <= 0:
            raise ValueError("block_size must be > 0")
        if length == 0:
            await self.head(key)
            return
        extra: dict[str, str] = {}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            extra["Range"] = f"bytes={offset}-{end}"

        async def open_body(c: Any) -> Any:
            try:
                resp = await c.get_object(Bucket=self.bucket, Key=self._name(key), **extra)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                    return None
                raise
            return resp["Body"]

        body = await self._call(key, open_body)
        if body is None:
            return
        try:
            while True:
                block = await self._call(key, lambda _c: body.read(block_size))
                if not block:
                    break
                yield block
        finally:
            with anyio.CancelScope(shield=True):
                async def release() -> None:
                    body.close()
                await self._in_loop(release)

    async def head(self, key: str) -> ObjectInfo:
        check_key(key)
        resp = await self._call(key, lambda c: c.head_object(Bucket=self.bucket, Key=self._name(key)))
        modified = resp.get("LastModified")
        return ObjectInfo(key, int(resp["ContentLength"]), modified.timestamp() if modified else None)

    async def delete(self, key: str) -> None:
        check_key(key)
        await self._call(key, lambda c: c.delete_object(Bucket=self.bucket, Key=self._name(key)))

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        token: str | None = None
        while True:
            args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._name(prefix)}
            if token:
                args["ContinuationToken"] = token
            page = await self._call(prefix or "/", lambda c, a=args: c.list_objects_v2(**a))
            for item in page.get("Contents", []):
                key = item["Key"][len(self.prefix):]
                modified = item.get("LastModified")
                yield ObjectInfo(key, int(item["Size"]), modified.timestamp() if modified else None)
            if not page.get("IsTruncated"):
                break
            token = page["NextContinuationToken"]

    # -- administration ----------------------------------------------------------------

    async def create_bucket(self) -> None:
        """Create the bucket if it does not exist (tests, first-time set-up)."""
        try:
            await self._call("/", lambda c: c.create_bucket(Bucket=self.bucket))
        except StorageError as exc:
            if "BucketAlreadyOwnedByYou" not in str(exc) and "BucketAlreadyExists" not in str(exc):
                raise

    async def abort_stale_uploads(self, max_age: float | None = None) -> int:
        """Abort multipart uploads under our prefix started more than ``max_age`` ago."""
        cutoff = time.time() - (self.stale_upload_age if max_age is None else max_age)
        page = await self._call("/", lambda c: c.list_multipart_uploads(Bucket=self.bucket, Prefix=self.prefix))
        aborted = 0
        for upload in page.get("Uploads", []):
            if upload["Initiated"].timestamp() <= cutoff:
                await self._call(upload["Key"], lambda c, u=upload: c.abort_multipart_upload(
                    Bucket=self.bucket, Key=u["Key"], UploadId=u["UploadId"]))
                aborted += 1
        return aborted

    async def maintain(self) -> None:
        if time.monotonic() - self._last_sweep >= self.sweep_interval:
            self._last_sweep = time.monotonic()
            await self.abort_stale_uploads()

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        bridge, self._bridge = self._bridge, None
        for loop, (ctx, _client) in clients.items():
            if bridge is not None and loop is bridge.loop:
                async def shut(ctx: Any = ctx) -> None:
                    await ctx.__aexit__(None, None, None)
                await bridge.run(shut)
            elif _on_asyncio() and loop is asyncio.get_running_loop():
                await ctx.__aexit__(None, None, None)
            # a client bound to a loop that has ended has nothing left to release
        if bridge is not None:
            await anyio.to_thread.run_sync(bridge.stop)
