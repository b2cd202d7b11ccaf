"""Starting real gobi servers for tests: a subprocess on 127.0.0.1 with its own data dir.

Used by the server tests and by the client tests (which mount against a real server).
Every server started here is stopped by its fixture, even when the test fails.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

_LISTEN_RE = re.compile(r"gobi server listening on (http://\S+)")


class ServerProcess:
    """A ``gobi server`` subprocess. ``start()`` blocks until it announces its address."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None, port: int = 0,
                 guard: bool = False):
        self.data_dir = Path(data_dir)
        # The mass-delete guard holds bulk deletes for the vault owner; tests that delete a
        # lot through a mount or a benchmark would be held. Tests of the guard set it, or
        # (``guard=True``) run the server's default configuration untouched.
        # Sign-ups are limited per address (5 an hour by default); every test user comes
        # from 127.0.0.1, so the limit is lifted here and tests of it set it.
        base = {k: v for k, v in os.environ.items() if not k.startswith("GOBI_MASS_DELETE_")}
        self.env = {**base, **({} if guard else {"GOBI_MASS_DELETE_FILES": "0"}),
                    "GOBI_REGISTER_MAX_PER_ADDRESS": "1000000", **(env or {})}
        self.port = port
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.output: list[str] = []

    def start(self, timeout: float = 30) -> "ServerProcess":
        cmd = [sys.executable, "-m", "gobi", "server", "--data-dir", str(self.data_dir),
               "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = subprocess.Popen(
            cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        found = threading.Event()

        def pump() -> None:
            assert self.proc and self.proc.stdout
            for line in self.proc.stdout:
                self.output.append(line)
                m = _LISTEN_RE.search(line)
                if m and not found.is_set():
                    self.url = m.group(1)
                    found.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not found.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("gobi server did not start:\n" + "".join(self.output))
        # Reuse the same port on restart, so clients can reconnect to the same URL.
        self.port = int(self.url.rsplit(":", 1)[1])
        return self

    @property
    def api(self) -> str:
        return self.url + "/api/v1"

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def logs(self) -> str:
        return "".join(self.output)


class Api:
    """A small synchronous client for tests: httpx with the token and base URL set."""

    def __init__(self, base: str, token: str | None = None, device: str | None = None):
        headers = {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if device:
            headers["X-Gobi-Device"] = device
        self.http = httpx.Client(base_url=base, headers=headers, timeout=30)
        self.token = token

    def __getattr__(self, name: str):
        return getattr(self.http, name)

    def close(self) -> None:
        self.http.close()


_counter = 0


def register(server: ServerProcess, password: str = "correct horse battery") -> tuple[str, str]:
    """A fresh user on ``server``; returns (username, token)."""
    global _counter
    _counter += 1
    username = f"u{os.getpid()}x{_counter}x{int(time.time() * 1000) % 100000}"
    with httpx.Client(base_url=server.api, timeout=30) as c:
        r = c.post("/users/", json={"username": username, "password": password})
        r.raise_for_status()
        r = c.post("/sessions", json={"username": username, "password": password})
        r.raise_for_status()
        return username, r.json()["token"]
