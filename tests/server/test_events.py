"""The event log: pages, consistent tree listings, retention (410), the WebSocket."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from tests.servers import Api, ServerProcess, register

from .util import commit, create_file, mkdir, ws_connect, ws_frames


def test_pages_are_contiguous(alice, vault):
    for i in range(25):
        mkdir(alice, vault, f"d{i:02}")
    seen, after = [], 0
    while True:
        page = alice.get(f"/vaults/{vault}/events", params={"after": after, "limit": 7}).json()
        seen += [e["seq"] for e in page["events"]]
        if not page["has_more"]:
            break
        after = page["events"][-1]["seq"]
    assert seen == list(range(1, 26))
    assert page["head_seq"] == 25
    r = alice.get(f"/vaults/{vault}/events", params={"after": 25})
    assert r.status_code == 200 and r.json()["events"] == []
    for bad in ("-1", "x", "99999999999999999999"):
        assert alice.get(f"/vaults/{vault}/events", params={"after": bad}).status_code == 400
    assert alice.get(f"/vaults/{vault}/events", params={"limit": 0}).status_code == 400
    # a cursor from the future (server restored from a backup?) must re-list
    assert alice.get(f"/vaults/{vault}/events", params={"after": 26}).status_code == 410


def _snapshot(api, vault, at):
    nodes, cursor = {}, None
    while True:
        params = {"at": at, "limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = api.get(f"/vaults/{vault}/tree", params=params).json()
        assert page["at"] == at
        nodes.update({n["id"]: (n["parent"], n["name"], n["rev"]) for n in page["nodes"]})
        cursor = page["next_cursor"]
        if cursor is None:
            return nodes


def test_tree_listing_is_consistent_at_its_seq_while_writes_continue(alice, vault):
    d = mkdir(alice, vault, "d")
    files = [create_file(alice, vault, f"f{i}", b"x", parent=d["id"]) for i in range(8)]
    at = alice.get(f"/vaults/{vault}").json()["head_seq"]
    before = _snapshot(alice, vault, at)
    assert len(before) == 10  # root, d, 8 files
    # change a lot after `at`
    for f in files[:4]:
        alice.delete(f"/vaults/{vault}/nodes/{f['id']}", params={"base_rev": f["rev"]})
    for f in files[4:]:
        alice.patch(f"/vaults/{vault}/nodes/{f['id']}", json={"base_rev": f["rev"], "parent": "root"})
    mkdir(alice, vault, "new")
    assert _snapshot(alice, vault, at) == before
    # replaying the events after `at` onto the snapshot gives the head's listing
    state = dict(before)
    for e in alice.get(f"/vaults/{vault}/events", params={"after": at}).json()["events"]:
        n = e["node"]
        if n["deleted"]:
            state.pop(n["id"], None)
        else:
            state[n["id"]] = (n["parent"], n["name"], n["rev"])
    head = alice.get(f"/vaults/{vault}").json()["head_seq"]
    assert _snapshot(alice, vault, head) == state
    assert alice.get(f"/vaults/{vault}/tree", params={"at": head + 1}).status_code == 400
    assert alice.get(f"/vaults/{vault}/tree", params={"cursor": "../x"}).status_code == 400


def test_seq_at_a_time_is_the_tree_as_it_was_then(alice, bob, vault):
    mkdir(alice, vault, "a")
    time.sleep(0.05)
    t1 = time.time()
    time.sleep(0.05)
    mkdir(alice, vault, "b")
    seq_b = alice.get(f"/vaults/{vault}").json()["head_seq"]
    time.sleep(0.05)
    t2 = time.time()
    r = alice.get(f"/vaults/{vault}/seq", params={"at": str(t1)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["seq"] == seq_b - 1 and body["ts"] <= t1 and body["head_seq"] == seq_b
    assert {n[1] for n in _snapshot(alice, vault, body["seq"]).values()} == {"", "a"}
    # ISO-8601 with an offset, with Z, and without (UTC): the same instant, the same seq.
    from datetime import datetime, timezone, timedelta
    utc = datetime.fromtimestamp(t2, timezone.utc)
    for text in (utc.isoformat(), utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                 utc.replace(tzinfo=None).isoformat(),
                 utc.astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat()):
        assert alice.get(f"/vaults/{vault}/seq", params={"at": text}).json()["seq"] == seq_b, text
    # Before the vault existed: 404; malformed or missing times: 400 with a JSON error.
    r = alice.get(f"/vaults/{vault}/seq", params={"at": "2001-01-01T00:00"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert r.json()["error"]["details"]["created_at"] <= t1
    for bad in ("", "yesterday", "2026-13-01T00:00", "nan", "-5", "1" * 80):
        r = alice.get(f"/vaults/{vault}/seq", params={"at": bad} if bad else None)
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request", bad
    # Members only.
    assert bob.get(f"/vaults/{vault}/seq", params={"at": str(t2)}).status_code == 404


def test_websocket_replays_then_streams_live(server, alice, vault):
    f = create_file(alice, vault, "a", b"1")
    mkdir(alice, vault, "b")
    with ws_connect(server, vault, alice.token, after=0) as ws:
        hello, e1, e2, caught = ws_frames(ws, 4)
        assert hello == {"type": "hello", "vault": vault, "head_seq": 2, "after": 0}
        assert [e1["event"]["seq"], e2["event"]["seq"]] == [1, 2]
        assert caught == {"type": "caught_up", "seq": 2}
        # The module's server polls the store only hourly: this event can only arrive
        # because the commit rang the fan-out doorbell.
        commit(alice, vault, f, b"22")
        (live,) = ws_frames(ws, 1, timeout=60)
        assert live["event"]["type"] == "content" and live["event"]["seq"] == 3
        assert live["event"]["device"] == "alice-laptop"
        ws.send(json.dumps({"type": "ping", "id": 7}))
        assert ws_frames(ws, 1) == [{"type": "pong", "id": 7}]
        ws.send("nonsense")
        assert ws_frames(ws, 1)[0]["type"] == "error"


def test_websocket_defaults_to_head_and_resumes(server, alice, vault):
    mkdir(alice, vault, "x")
    with ws_connect(server, vault, alice.token) as ws:
        hello, caught = ws_frames(ws, 2)
        assert hello["after"] == 1 and caught == {"type": "caught_up", "seq": 1}
        mkdir(alice, vault, "y")
        assert ws_frames(ws, 1)[0]["event"]["seq"] == 2
    mkdir(alice, vault, "z")
    with ws_connect(server, vault, alice.token, after=2) as ws:
        hello, ev, caught = ws_frames(ws, 3)
        assert ev["event"]["node"]["name"] == "z" and caught["seq"] == 3


@pytest.fixture(scope="module")
def short_retention(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("retention"), env={
        "GOBI_EVENT_RETENTION": "1s", "GOBI_PRUNE_INTERVAL": "200ms", "GOBI_LISTING_WINDOW": "1s",
    }).start()
    yield srv
    srv.stop()


def test_cursor_past_retention_gets_410(short_retention):
    srv = short_retention
    _, token = register(srv)
    api = Api(srv.api, token)
    vault = api.post("/vaults", json={"name": "r"}).json()["id"]
    for i in range(3):
        mkdir(api, vault, f"d{i}")
    at = 3
    # wait (bounded) for the pruning job to drop the events
    # Wait (bounded) until the pruning job has dropped all three events: the job deletes
    # by age, so they may go in more than one round; after=2 expires only with the last.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if api.get(f"/vaults/{vault}/events", params={"after": 2}).status_code == 410:
            break
        time.sleep(0.2)
    r = api.get(f"/vaults/{vault}/events", params={"after": 0})
    assert r.status_code == 410
    body = r.json()["error"]
    assert body["code"] == "cursor_expired" and body["details"]["head_seq"] == 3
    # a cursor at the head is still fine: nothing was missed
    assert api.get(f"/vaults/{vault}/events", params={"after": 3}).status_code == 200
    with pytest.raises(InvalidStatus) as exc:
        ws_connect(srv, vault, token, after=1)
    assert exc.value.response.status_code == 410
    # the listing is how a client recovers
    page = api.get(f"/vaults/{vault}/tree").json()
    assert page["at"] == 3 and len(page["nodes"]) == 4
    # a rename superseded long enough ago makes old listings impossible, not wrong
    d = api.get(f"/vaults/{vault}/lookup", params={"path": "d0"}).json()
    api.patch(f"/vaults/{vault}/nodes/{d['id']}", json={"base_rev": d["rev"], "name": "renamed"})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = api.get(f"/vaults/{vault}/tree", params={"at": at})
        if r.status_code == 410:
            break
        time.sleep(0.2)
    assert r.status_code == 410
    api.close()


def test_health(server):
    r = httpx.get(server.url + "/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"
