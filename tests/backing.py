"""Real backing services for tests: a MongoDB-wire server and redis-server, on 127.0.0.1.

Each service runs as a child process on a free port and is stopped by its PID, never by
name. The session fixtures in ``tests/conftest.py`` start one of each; tests that need to
stop and restart a service (a Redis outage) start their own.

MongoDB: no real ``mongod`` can be installed on the CI machines (see
``docs/scale-out.md``). We run the most faithful MongoDB-wire server that does run here,
mongoeco (``mongoeco[wire]``, Python >= 3.13) from its own virtualenv ``.venv-mongo``
made by ``scripts/bootstrap.sh --test``; where Python 3.13 is missing, bootstrap installs
nx-27017 there instead. ``GOBI_TEST_MONGODB_URL`` points the tests at a real MongoDB
(replica set) instead of starting anything.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MONGO_VENV = Path(os.environ.get("GOBI_TEST_MONGO_VENV", REPO / ".venv-mongo"))
_READY_RE = re.compile(r"mongoeco ready at (mongodb://\S+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, timeout: float, what: str, log: list[str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{''.join(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout}s:\n{''.join(log)}")


def _pump(proc: subprocess.Popen, log: list[str]) -> None:
    def run() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.append(line)
            del log[:-200]

    threading.Thread(target=run, daemon=True).start()


class _Child:
    proc: subprocess.Popen | None = None

    def stop(self, timeout: float = 10) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()


class MongoServer(_Child):
    """A MongoDB-wire server. ``url(db)`` gives a URL for one database on it."""

    def __init__(self) -> None:
        self.host_url = ""       # mongodb://host:port/?options, no database
        self.kind = ""           # what answers: "mongoeco 4.11.0", "nx-27017", "external"
        self.log: list[str] = []

    def start(self) -> "MongoServer":
        external = os.environ.get("GOBI_TEST_MONGODB_URL")
        if external:
            self.host_url, self.kind = external, "external MongoDB (GOBI_TEST_MONGODB_URL)"
            return self
        py = MONGO_VENV / "bin" / "python"
        nx = MONGO_VENV / "bin" / "nx-27017"
        if py.exists() and subprocess.run(
            [str(py), "-c", "import mongoeco.wire"], capture_output=True
        ).returncode == 0:
            self._start_mongoeco(py)
        elif nx.exists():
            self._start_nx(nx)
        else:
            raise RuntimeError(
                f"no MongoDB-wire server: {MONGO_VENV} has neither mongoeco nor nx-27017; "
                "run scripts/bootstrap.sh --test (or set GOBI_TEST_MONGODB_URL)"
            )
        return self

    def _start_mongoeco(self, py: Path) -> None:
        script = REPO / "scripts" / "mongo" / "serve_mongoeco.py"
        self.proc = subprocess.Popen(
            [str(py), str(script), "0", "memory"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 60
        for line in self.proc.stdout:  # the launcher prints its URL once it listens
            self.log.append(line)
            m = _READY_RE.search(line)
            if m:
                self.host_url = m.group(1)
                break
            if time.monotonic() > deadline:
                break
        if not self.host_url:
            self.kill()
            raise RuntimeError("mongoeco did not start:\n" + "".join(self.log))
        _pump(self.proc, self.log)
        version = subprocess.run(
            [str(py), "-c", "from importlib.metadata import version; print(version('mongoeco'))"],
            capture_output=True, text=True,
        ).stdout.strip()
        self.kind = f"mongoeco {version} (wire protocol, memory engine)"

    def _start_nx(self, nx: Path) -> None:
        port = free_port()
        self.proc = subprocess.Popen(
            [str(nx), "--db", "memory", "--host", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        _pump(self.proc, self.log)
        _wait_port(port, self.proc, 30, "nx-27017", self.log)
        self.host_url = f"mongodb://127.0.0.1:{port}/?directConnection=true"
        self.kind = "nx-27017 (wire protocol, SQLite in memory)"

    def url(self, db: str) -> str:
        """The server URL with ``db`` as its default database."""
        base, _, query = self.host_url.partition("?")
        base = base.rstrip("/")
        if base.count("/") > 2:  # an external URL that names a database: replace it
            base = base.rsplit("/", 1)[0]
        return f"{base}/{db}" + (f"?{query}" if query else "")


class RedisServer(_Child):
    """``redis-server`` without persistence; ``restart()`` comes back on the same port."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.log: list[str] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed: run scripts/bootstrap.sh --test")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        _pump(self.proc, self.log)
        _wait_port(self.port, self.proc, 15, "redis-server", self.log)
        return self

    def restart(self) -> "RedisServer":
        self.stop()
        return self.start()
