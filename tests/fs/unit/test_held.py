"""Unit tests of the mount's bookkeeping around deletes (no mount needed): held deletes
(``gobi.fs.held``) and the applier's rule that an older server state never brings back a
node this mount deleted (``ServerStates.gone``)."""

from __future__ import annotations

from gobi.fs.held import HeldDeletes
from gobi.fs.states import ServerStates
from gobi.fs.tree import Tree

from gobi.protocol import HoldInfo, Node, NodeKind

HOLD = HoldInfo(id="h1", state="pending", device="me", created=0, expires=9, files=3, items=3)


def node(id: str, parent: str, name: str, rev: int, kind: str = "file", deleted: bool = False) -> Node:
    return Node(id=id, parent=parent, name=name, kind=NodeKind(kind), rev=rev,
                content_rev=rev if kind == "file" else None, deleted=deleted)


class _Vfs:
    writers: set = set()
    handles: dict = {}

    def staged(self, ino):
        return False

    def maybe_purge(self, ino):
        pass


class _Kernel:
    def __getattr__(self, name):
        return lambda *a, **k: None


def applier(tmp_path) -> ServerStates:
    return ServerStates(Tree(tmp_path / "mirror.db"), _Vfs(), None, "me", _Kernel())


def test_an_older_state_never_brings_back_what_this_mount_deleted(tmp_path):
    ap = applier(tmp_path)
    assert ap.apply_node(node("d", "root", "d", 3, "dir")) == "applied"
    assert ap.apply_node(node("f", "d", "f", 4)) == "applied"
    row = ap.tree.by_id("f")
    ap.tree.remove(row.parent, b"f", want_dir=False)          # rm d/f …
    ap.tree.journal.done(ap.tree.journal.entries()[0].seq)     # … acknowledged at rev 9
    ap.tree.remove_row(row.ino)                                # and the row purged
    ap.deleted_here("f", 9)
    # the stream is still catching up: our own create (rev 4) arrives now
    assert ap.apply_node(node("f", "d", "f", 4)) == "stale"
    assert ap.tree.child(ap.tree.by_id("d").ino, "f") is None
    # a later state (another device restored it) is applied, and forgets the rule
    assert ap.apply_node(node("f", "d", "f", 12)) == "applied"
    assert "f" not in ap.gone


def test_held_rows_follow_the_server_but_stay_hidden(tmp_path):
    tree = Tree(tmp_path / "mirror.db")
    held = HeldDeletes(tree, "me", lambda node_id: "" if node_id == "root" else None)
    held.hide(node("big", "root", "big", 5, "dir"), "h1", "deleted", "big")
    held.hide(node("a", "big", "a", 6), "h1", "pulled", "big/a")
    assert held.count() == 2 and held.note_hold(HOLD) is False
    # a rename on the server: recorded, still hidden
    assert held.absorb(node("a", "big", "a2", 7)) is True
    assert held.get("a").name == "a2" and held.path_of("a") == "big/a2"
    # an older state (the late echo of our own delete) changes nothing
    assert held.absorb(node("a", "big", "a", 6, deleted=True)) is True and held.has("a")
    # another device creates a file inside the hidden folder: hidden too, not counted ours
    assert held.absorb(node("n", "big", "new", 8)) is True
    assert held.get("n").origin == "inside" and held.count() == 2
    # … and moves it out: shown again
    assert held.absorb(node("n", "root", "new", 9)) is False and not held.has("n")
    # a delete forgets
    assert held.absorb(node("a", "big", "a2", 10, deleted=True)) is False and not held.has("a")
    st = held.status()
    assert st["held_deletes"] == 1 and [(h["id"], h["paths"]) for h in st["holds"]] == [("h1", ["big"])]
    # the hold is settled: its rows are handed out parents first
    assert held.note_hold(HOLD.model_copy(update={"state": "rejected"})) is True
    rows = held.take("h1")
    assert [r.node for r in rows] == ["big"] and held.count() == 0


def test_rows_survive_a_restart(tmp_path):
    tree = Tree(tmp_path / "mirror.db")
    held = HeldDeletes(tree, "me")
    with tree.tx():
        held.hide(node("f", "root", "f", 5), "h1", "deleted", "f")
        held.note_hold(HOLD)
    tree.close()
    tree = Tree(tmp_path / "mirror.db")
    held = HeldDeletes(tree, "me")
    assert held.count() == 1 and held.hold("h1").files == 3 and held.hold_ids() == ["h1"]
