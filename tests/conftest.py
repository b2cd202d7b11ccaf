"""Session-wide backing services shared by every test package (see ``tests/backing.py``)."""

from __future__ import annotations

import uuid

import pytest

from tests.backing import MongoServer, RedisServer

_mongo: MongoServer | None = None


@pytest.fixture(scope="session")
def mongo_server():
    """One MongoDB-wire server for the session; tests use a fresh database each."""
    global _mongo
    srv = MongoServer().start()
    _mongo = srv
    yield srv
    srv.stop()


@pytest.fixture
def mongo_url(mongo_server):
    """A fresh, empty database on the session's MongoDB server, dropped afterwards.

    A fresh database per test also keeps mongoeco fast (its inserts slow down as a
    collection grows)."""
    from pymongo import MongoClient

    db = f"gobi_t{uuid.uuid4().hex[:12]}"
    yield mongo_server.url(db)
    with MongoClient(mongo_server.url(db), serverSelectionTimeoutMS=5000) as client:
        client.drop_database(db)


@pytest.fixture(scope="session")
def redis_server():
    srv = RedisServer().start()
    yield srv
    srv.stop()


def pytest_terminal_summary(terminalreporter):
    if _mongo is not None:
        terminalreporter.write_line(f"MongoDB-wire server used by the tests: {_mongo.kind}")
