from __future__ import annotations

import itertools

import pytest

from tests.needs import require_fuse
from tests.servers import ServerProcess
from tests.tcpproxy import TcpProxy

from .mounts import Mount, User

_counter = itertools.count()


@pytest.fixture(autouse=True)
def _fuse_available(request):
    """Every test here mounts (but the unit tier, tests/fs/unit): without FUSE it skips
    saying why (fails under CI)."""
    if "unit" not in request.node.path.parts:
        require_fuse()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("server")).start()
    yield srv
    srv.stop()


@pytest.fixture
def user(server, tmp_path):
    u = User(server, tmp_path / "home")
    yield u
    u.close()


@pytest.fixture
def vault(user):
    return user.create_vault(f"vault{next(_counter)}")


@pytest.fixture
def mounts(user, vault, tmp_path):
    """Factory: ``mounts()`` → a started mount of the test's vault (own cache dir each)."""
    started: list[Mount] = []

    def make(name: str | None = None, **kw) -> Mount:
        name = name or f"m{len(started)}"
        m = Mount(user, vault, tmp_path / name, tmp_path / f"{name}-cache", **kw)
        started.append(m)
        return m.start()

    yield make
    for m in started:
        m.stop()


@pytest.fixture
def proxied(mounts, server, user, tmp_path):
    """Factory: ``proxied(name)`` → (a started mount, the partition proxy between it and the
    server: ``tests/tcpproxy.py``). The mount reaches the server only through the proxy
    (``--server`` its URL, the user's token in a ``--credentials`` file)."""
    token_file = tmp_path / "token"
    token_file.write_text(user.token)
    token_file.chmod(0o600)
    proxies: list[TcpProxy] = []

    def make(name: str, extra: tuple[str, ...] = (), **kw) -> tuple[Mount, TcpProxy]:
        proxies.append(TcpProxy(server.port))
        m = mounts(name, extra=("--server", proxies[-1].url, "--credentials", str(token_file), *extra), **kw)
        return m, proxies[-1]

    yield make
    for p in proxies:
        p.close()


@pytest.fixture
def mnt(mounts):
    return mounts()
