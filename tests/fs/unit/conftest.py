"""Fixtures of the unit tier: a real server on 127.0.0.1 (``tests/fs/conftest.py``'s
``server``), a user with a token and a vault of their own per test, made over REST."""

from __future__ import annotations

import itertools

import pytest

from tests.servers import Api, register

_counter = itertools.count()


class Account:
    def __init__(self, server):
        self.server = server
        self.name, self.token = register(server)
        self.api = Api(server.api, self.token)
        r = self.api.post("/vaults", json={"name": f"unit{next(_counter)}"})
        r.raise_for_status()
        self.vault = r.json()["id"]

    def head(self) -> int:
        r = self.api.get(f"/vaults/{self.vault}/events", params={"after": 0, "limit": 1})
        r.raise_for_status()
        return r.json()["head_seq"]

    def lookup(self, path: str) -> dict | None:
        r = self.api.get(f"/vaults/{self.vault}/lookup", params={"path": path})
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return r.json()

    def data(self, path: str) -> bytes | None:
        node = self.lookup(path)
        if node is None:
            return None
        r = self.api.get(f"/vaults/{self.vault}/nodes/{node['id']}/data")
        r.raise_for_status()
        return r.content


@pytest.fixture
def account(server):
    a = Account(server)
    yield a
    a.api.close()
