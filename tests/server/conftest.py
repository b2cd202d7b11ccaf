from __future__ import annotations

import pytest

from tests.servers import Api, ServerProcess, register


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # An hourly store poll: live WebSocket events in these tests can only come from the
    # fan-out doorbell, so a broken doorbell fails them instead of being papered over.
    srv = ServerProcess(tmp_path_factory.mktemp("server"), env={"GOBI_POLL_INTERVAL": "1h"}).start()
    yield srv
    srv.stop()


@pytest.fixture
def alice(server):
    name, token = register(server)
    api = Api(server.api, token, device="alice-laptop")
    api.username = name
    yield api
    api.close()


@pytest.fixture
def bob(server):
    name, token = register(server)
    api = Api(server.api, token, device="bob-desktop")
    api.username = name
    yield api
    api.close()


@pytest.fixture
def anon(server):
    api = Api(server.api)
    yield api
    api.close()


@pytest.fixture
def vault(alice):
    r = alice.post("/vaults", json={"name": "test vault"})
    assert r.status_code == 201, r.text
    return r.json()["id"]
