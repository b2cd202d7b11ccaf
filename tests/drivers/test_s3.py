"""S3-specific behaviour on moto and on real servers (Ceph RGW, SeaweedFS): multipart
uploads, retries on throttling and 5xx (injected on the wire by a proxy), credentials and
bucket errors."""

from __future__ import annotations

import os

import pytest

from gobi.drivers import StorageError, StoragePermissionError, TransientStorageError
from gobi.drivers.s3 import MiB, S3Driver

from .conftest import BUCKET
from .faultproxy import FaultProxy
from .services import ACCESS_KEY, SECRET_KEY

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["moto", "ceph", "seaweedfs"])
def endpoint(request):
    return request.getfixturevalue(f"{request.param}_endpoint")


@pytest.fixture(params=["ceph", "seaweedfs"])
def signing_endpoint(request):
    """Servers that check request signatures (moto does not)."""
    return request.getfixturevalue(f"{request.param}_endpoint")


def make(url, prefix, **kw):
    kw.setdefault("access_key", ACCESS_KEY)
    kw.setdefault("secret_key", SECRET_KEY)
    return S3Driver(BUCKET, prefix, endpoint=url, part_size=5 * MiB, multipart_threshold=6 * MiB, **kw)


async def test_large_objects_go_up_in_parts(endpoint, env):
    driver = make(endpoint.url, env.uid)
    try:
        data = os.urandom(11 * MiB)
        await driver.put("v1/big", data)
        await driver.put("v1/small", data[:MiB])
        head = endpoint.client().head_object(Bucket=BUCKET, Key=f"{env.uid}/v1/big")
        assert head["ETag"].strip('"').endswith("-3") and head["ContentLength"] == len(data)
        assert "-" not in endpoint.client().head_object(Bucket=BUCKET, Key=f"{env.uid}/v1/small")["ETag"]
        assert await driver.get("v1/big", 5 * MiB - 10, 20) == data[5 * MiB - 10:5 * MiB + 10]
        assert await driver.abort_stale_uploads(max_age=0) == 0  # nothing was left behind
    finally:
        await driver.close()


async def test_throttling_and_server_errors_are_retried(endpoint, env):
    with FaultProxy(endpoint.url) as proxy:
        driver = make(proxy.url, env.uid, max_attempts=4)
        try:
            proxy.fail_status, proxy.fail_next = 503, 2
            await driver.put("v1/k", b"survives two failures")
            assert [s for m, _, s in proxy.requests if m == "PUT"] == [503, 503, 200]
            proxy.fail_status, proxy.fail_next = 500, 3
            assert await driver.get("v1/k") == b"survives two failures"
            proxy.requests.clear()
            proxy.fail_status, proxy.fail_next = 503, 10
            with pytest.raises(TransientStorageError, match="SlowDown"):
                await driver.get("v1/k")
            assert len(proxy.requests) == 4  # max_attempts in all, then it gives up
        finally:
            await driver.close()


async def test_refusals_are_permission_errors_without_retries(endpoint, env):
    with FaultProxy(endpoint.url) as proxy:
        driver = make(proxy.url, env.uid)
        try:
            proxy.fail_status, proxy.fail_next = 403, 1
            with pytest.raises(StoragePermissionError):
                await driver.put("v1/k", b"x")
            assert len(proxy.requests) == 1
        finally:
            await driver.close()


async def test_wrong_secret_is_refused_by_a_signature_checking_server(signing_endpoint, env):
    driver = make(signing_endpoint.url, env.uid, secret_key="not-the-secret")
    try:
        with pytest.raises(StoragePermissionError):
            await driver.put("v1/k", b"x")
    finally:
        await driver.close()


async def test_a_missing_bucket_says_so(moto_endpoint):
    driver = S3Driver("no-such-bucket-here", "", endpoint=moto_endpoint.url, access_key=ACCESS_KEY,
                      secret_key=SECRET_KEY)
    try:
        with pytest.raises(StorageError, match="bucket 'no-such-bucket-here' does not exist"):
            await driver.put("v1/k", b"x")
    finally:
        await driver.close()
