"""Real S3 servers for the driver tests: moto's threaded server (fast, no signature or
Content-MD5 checks) and a throwaway Ceph RADOS Gateway (the real thing; started by the
project's own scripts/ceph/start_rgw.sh, stopped by PID afterwards). Both bind 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CEPH_SCRIPTS = ROOT / "scripts" / "ceph"
ACCESS_KEY, SECRET_KEY = "test", "testtest"
CEPH_BINARIES = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "ceph", "monmaptool", "ceph-authtool")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class S3Endpoint:
    name: str
    url: str

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)

    def make_bucket(self, bucket: str) -> None:
        client = self.client()
        try:
            client.create_bucket(Bucket=bucket)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass


class Moto:
    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)

    def start(self) -> S3Endpoint:
        self.server.start()
        return S3Endpoint("moto", f"http://127.0.0.1:{self.port}")

    def stop(self) -> None:
        self.server.stop()


def ceph_missing() -> list[str]:
    return [b for b in CEPH_BINARIES if shutil.which(b) is None]


class CephRgw:
    """start_rgw.sh in a temp dir on free ports; ``stop`` kills exactly its daemons."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="gobi-ceph-"))
        self.port = free_port()
        self.mon_port = free_port()

    def start(self) -> S3Endpoint:
        env = {**os.environ, "MON_PORT": str(self.mon_port)}
        last = None
        for _attempt in range(2):  # a cold first start has been seen failing once
            proc = subprocess.run(["bash", str(CEPH_SCRIPTS / "start_rgw.sh"), str(self.dir / "c"), str(self.port)],
                                  env=env, capture_output=True, text=True, timeout=180)
            if proc.returncode == 0:
                return S3Endpoint("ceph", f"http://127.0.0.1:{self.port}")
            last = proc
            self._stop_daemons()
        raise RuntimeError(f"Ceph RGW did not start:\n{last.stdout}\n{last.stderr}")

    def _stop_daemons(self) -> None:
        subprocess.run(["bash", str(CEPH_SCRIPTS / "stop_rgw.sh"), str(self.dir / "c")], capture_output=True, timeout=60)

    def stop(self) -> None:
        self._stop_daemons()
        shutil.rmtree(self.dir, ignore_errors=True)
