"""Session-wide backing services shared by every test package (see ``tests/backing.py``),
and the rule that CI runs every test (``tests/needs.py``)."""

from __future__ import annotations

import uuid

import pytest

from tests.backing import MongoServer, RedisServer
from tests.needs import in_ci

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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI no test skips: a skip there means the CI machine lacks something the
    tests need (tests/needs.py says what), and a quiet skip would prove nothing."""
    outcome = yield
    report = outcome.get_result()
    if in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI, which must run every test: {reason}"
