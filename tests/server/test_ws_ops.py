"""Metadata operations over the WebSocket: ack with the new state, nack with a typed error
and the state to catch up to; their events arrive on the same socket."""

from __future__ import annotations

import json

from .util import create_file, upload, ws_connect, ws_frames


def op(ws, **frame) -> None:
    ws.send(json.dumps({"type": "op", **frame}))


def next_reply(ws, req_id: str, seen_events: list) -> dict:
    """The ack/nack for ``req_id``; events seen meanwhile are collected."""
    while True:
        frame = json.loads(ws.recv(timeout=30))
        if frame["type"] == "event":
            seen_events.append(frame["event"])
        elif frame.get("id") == req_id:
            return frame


def test_ops_ack_nack_and_echo(server, alice, vault):
    events: list = []
    with ws_connect(server, vault, alice.token, device="alice-laptop") as ws:
        ws_frames(ws, 2)  # hello, caught_up
        op(ws, id="r1", op="create", args={"parent": "root", "name": "dir", "kind": "dir"})
        ack = next_reply(ws, "r1", events)
        assert ack["type"] == "ack" and ack["node"]["name"] == "dir"
        d = ack["node"]
        op(ws, id="r2", op="update", node=d["id"], args={"base_rev": d["rev"], "name": "renamed", "mode": 0o700})
        ack = next_reply(ws, "r2", events)
        assert ack["type"] == "ack" and (ack["node"]["name"], ack["node"]["mode"]) == ("renamed", 0o700)
        # a stale base: nack with the head to catch up to
        op(ws, id="r3", op="update", node=d["id"], args={"base_rev": d["rev"], "name": "again"})
        nack = next_reply(ws, "r3", events)
        assert nack["type"] == "nack" and nack["error"]["code"] == "conflict"
        assert nack["error"]["details"]["head"]["name"] == "renamed"
        # commit through the socket (chunks went up over REST)
        f = create_file(alice, vault, "f.txt", b"v1")
        refs = upload(alice, vault, b"version two")
        op(ws, id="r4", op="commit", node=f["id"], args={"base_rev": f["rev"], "chunks": refs, "size": 11})
        ack = next_reply(ws, "r4", events)
        assert ack["type"] == "ack" and ack["node"]["size"] == 11
        op(ws, id="r5", op="delete", node=f["id"], args={"base_rev": ack["node"]["rev"]})
        assert next_reply(ws, "r5", events)["node"]["deleted"] is True
        # invalid input is a typed nack, and the socket stays usable
        op(ws, id="r6", op="create", args={"parent": "root", "name": "a/b", "kind": "dir"})
        assert next_reply(ws, "r6", events)["error"]["code"] == "invalid_name"
        op(ws, id="r7", op="explode", args={})
        assert next_reply(ws, "r7", events)["error"]["code"] == "bad_request"
        op(ws, id="r8", op="delete", node="root", args={"base_rev": 0})
        assert next_reply(ws, "r8", events)["type"] == "nack"
        # every accepted change produced one event on this socket, tagged with our device
        while len(events) < 5:
            events.append(ws_frames(ws, 1)[0]["event"])
        assert [e["type"] for e in events] == ["create", "move", "create", "content", "delete"]
        assert {e["device"] for e in events} == {"alice-laptop"}
        assert [e["seq"] for e in events] == list(range(1, 6))


def test_ops_need_write_role_checked_per_op(server, alice, bob):
    vault = alice.post("/vaults", json={"name": "shared"}).json()["id"]
    alice.put(f"/vaults/{vault}/members/{bob.username}", json={"role": "write"})
    with ws_connect(server, vault, bob.token) as ws:
        ws_frames(ws, 2)
        op(ws, id="a", op="create", args={"parent": "root", "name": "ok", "kind": "dir"})
        assert next_reply(ws, "a", [])["type"] == "ack"
        alice.put(f"/vaults/{vault}/members/{bob.username}", json={"role": "read"})
        op(ws, id="b", op="create", args={"parent": "root", "name": "no", "kind": "dir"})
        nack = next_reply(ws, "b", [])
        assert nack["type"] == "nack" and nack["error"]["code"] == "forbidden"
