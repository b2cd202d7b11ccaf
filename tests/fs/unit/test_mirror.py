"""The mirror's durability and transactions, without a mount (``gobi.fs.tree`` over
``gobi.fs.mirror_store``): what a kill -9 leaves is replayed, a torn last line is ignored,
a failed transaction leaves nothing behind, group commits reach SQLite, and a mirror
written by the SQLite-only mirror of earlier versions loads."""

from __future__ import annotations

import os
import sqlite3

import pytest

from gobi.fs.tree import ROOT_INO, NameTaken, Tree
from gobi.protocol import ChunkRef


def fill(tree: Tree) -> dict:
    """A directory, a file with a manifest, an xattr, a pin, meta and journal entries."""
    d = tree.make(ROOT_INO, b"docs", "dir", 0o755, 0, 0)
    f = tree.make(d.ino, b"a.txt", "file", 0o644, 0, 0)
    with tree.tx():
        tree.set_manifest(f.ino, 7, [ChunkRef(hash="a" * 64, size=10), ChunkRef(hash="b" * 64, size=5)])
        tree.update(f.ino, content_rev=7, size=15)
        tree.set_meta("last_seq", "41")
    tree.set_xattr(f.ino, b"user.color", b"blue")
    tree.set_pin(d.ino, 123.0)
    tree.journal.add_attr(f.id, ["mode"])
    return {"d": d.ino, "f": f.ino, "f_id": f.id}


def state(tree: Tree) -> tuple:
    rows = sorted(tree._rows.values())
    journal = [(e.seq, e.op, e.node, e.ref, e.args) for e in tree.journal.entries(0, 1000)]
    return (rows, journal, {k: list(v) for k, v in tree._manifests.items() if v},
            {k: dict(v) for k, v in tree._xattrs.items() if v},
            dict(tree.pins), tree.meta("last_seq"))


def test_a_clean_close_and_reopen_keeps_everything(tmp_path):
    tree = Tree(tmp_path / "mirror.db")
    ids = fill(tree)
    before = state(tree)
    tree.close()
    assert not [p for p in os.listdir(tmp_path) if ".log." in p]      # all in SQLite
    again = Tree(tmp_path / "mirror.db")
    try:
        assert state(again) == before
        assert again.child(ids["d"], "a.txt").ino == ids["f"]
        assert again.journal.has_pending(ids["f_id"], "attr")
    finally:
        again.close()


def test_what_a_kill_left_in_the_log_is_replayed(tmp_path):
    tree = Tree(tmp_path / "mirror.db")
    fill(tree)
    before = state(tree)
    # A kill -9: no close, no flush; the log segment is all there is of these changes.
    assert [p for p in os.listdir(tmp_path) if ".log." in p]
    rows = sqlite3.connect(tmp_path / "mirror.db").execute("SELECT count(*) FROM nodes").fetchone()[0]
    assert rows == 0                                        # nothing reached SQLite yet
    again = Tree(tmp_path / "mirror.db")
    try:
        assert state(again) == before
        # Replayed into SQLite at start-up, the old segment removed.
        rows = sqlite3.connect(tmp_path / "mirror.db").execute("SELECT count(*) FROM nodes").fetchone()[0]
        assert rows == 3
        new = again.make(ROOT_INO, b"after", "file", 0o644, 0, 0)
        assert new.ino > max(e.ino for e in before[0])      # inodes are never reused
    finally:
        again.close()


def test_a_torn_last_line_is_ignored(tmp_path):
    tree = Tree(tmp_path / "mirror.db")
    fill(tree)
    before = state(tree)
    segment = next(p for p in os.listdir(tmp_path) if ".log." in p)
    with open(tmp_path / segment, "ab") as f:
        f.write(b'[["n",99,[99,"cx",1,"torn"')                # the process died mid-write
    again = Tree(tmp_path / "mirror.db")
    try:
        assert state(again) == before
        assert again.get_opt(99) is None
    finally:
        again.close()


def test_a_failed_transaction_leaves_nothing(tmp_path):
    tree = Tree(tmp_path / "mirror.db")
    try:
        ids = fill(tree)
        before = state(tree)
        logged = len(tree.store.pending)
        with pytest.raises(RuntimeError):
            with tree.tx():
                tree.make(ids["d"], b"b.txt", "file", 0o600, 0, 0)
                tree.update(ids["f"], mode=0o600)
                tree.journal.done(tree.journal.entries(0, 1)[0].seq)
                raise RuntimeError("boom")
        assert state(tree) == before
        assert tree.child(ids["d"], "b.txt") is None
        assert len(tree.store.pending) == logged            # nothing logged
        # The inode the failed create took is free again, and names stay unique.
        with pytest.raises(NameTaken):
            with tree.tx():
                tree.update(ids["f"], name="docs", parent=ROOT_INO)
        assert tree.get(ids["f"]).name == "a.txt"
    finally:
        tree.close()


def test_group_commit_reaches_sqlite_and_removes_the_log(tmp_path):
    tree = Tree(tmp_path / "mirror.db")
    try:
        fill(tree)
        segments, records = tree.store.rotate()
        assert segments and records
        tree.store.flush(segments, records)
        db = sqlite3.connect(tmp_path / "mirror.db")
        assert db.execute("SELECT count(*) FROM nodes").fetchone()[0] == 3
        assert db.execute("SELECT count(*) FROM journal").fetchone()[0] >= 1
        assert db.execute("SELECT count(*) FROM chunks").fetchone()[0] == 2
        assert db.execute("SELECT since FROM pins").fetchone()[0] == 123.0
        names = [p for p in os.listdir(tmp_path) if ".log." in p]
        assert len(names) == 1                               # only the open (empty) segment
        tree.durable()                                       # fsync of what is logged
    finally:
        tree.close()


def test_a_mirror_of_the_sqlite_era_loads(tmp_path):
    """Caches written before the in-memory mirror (SQLite with its own indexes) open as
    they are."""
    path = tmp_path / "mirror.db"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);
        CREATE TABLE nodes(ino INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
            parent INTEGER, name TEXT NOT NULL, kind TEXT NOT NULL, mode INTEGER NOT NULL,
            size INTEGER NOT NULL DEFAULT 0, mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL,
            target TEXT, uid INTEGER, gid INTEGER, rev INTEGER NOT NULL DEFAULT 0,
            content_rev INTEGER, manifest_rev INTEGER, dirty INTEGER NOT NULL DEFAULT 0);
        CREATE UNIQUE INDEX nodes_name ON nodes(parent, name) WHERE parent IS NOT NULL;
        CREATE TABLE journal(seq INTEGER PRIMARY KEY AUTOINCREMENT, op TEXT NOT NULL,
            node TEXT NOT NULL, ref TEXT, args TEXT NOT NULL DEFAULT '{}', ts REAL NOT NULL);
        CREATE INDEX journal_node ON journal(node);
        CREATE TABLE pins(ino INTEGER PRIMARY KEY, since REAL NOT NULL);
        INSERT INTO nodes VALUES (1, 'root', NULL, '', 'dir', 493, 0, 1, 1, NULL, NULL, NULL, 0, NULL, NULL, 0);
        INSERT INTO nodes VALUES (5, 'cabc', 1, 'old.txt', 'file', 420, 3, 1, 1, NULL, NULL, NULL, 9, 9, NULL, 1);
        INSERT INTO journal VALUES (12, 'content', 'cabc', NULL, '{}', 1.0);
        INSERT INTO meta VALUES ('last_seq', '9');
    """)
    db.commit()
    db.close()
    tree = Tree(path)
    try:
        e = tree.child(ROOT_INO, "old.txt")
        assert e.ino == 5 and e.dirty == 1 and tree.dirty_inodes() == [5]
        assert [x.seq for x in tree.journal.entries()] == [12]
        assert tree.meta("last_seq") == "9"
        assert tree.make(ROOT_INO, b"new", "dir", 0o755, 0, 0).ino == 6
        assert tree.journal.append("attr", "cabc") == 14      # 13: the create of "new"
    finally:
        tree.close()


def test_a_group_commit_of_many_changes_to_the_same_rows_loads_back_exactly(tmp_path):
    """Group commits write each row's last state once: what SQLite holds after a flush
    (the log removed, so nothing is replayed) is exactly the mirror in memory, through
    creates, repeated updates, manifests replaced, xattrs set and removed, journal entries
    done, pins changed and nodes removed within one commit."""
    import random

    rng = random.Random(1405)
    tree = Tree(tmp_path / "mirror.db")
    try:
        ids = fill(tree)
        files = []
        for i in range(60):
            f = tree.make(ids["d"], f"f{i}".encode(), "file", 0o644, 0, 0)
            files.append(f.ino)
        for _ in range(600):
            ino = rng.choice(files)
            what = rng.randrange(6)
            with tree.tx():
                if what == 0:
                    tree.update(ino, size=rng.randrange(1000), mode=rng.choice([0o600, 0o644]))
                elif what == 1:
                    n = rng.randrange(3)
                    tree.set_manifest(ino, rng.randrange(99),
                                      [ChunkRef(hash=f"{rng.randrange(16):x}" * 64, size=3)] * n)
                elif what == 2:
                    tree.set_xattr(ino, b"user.k", rng.choice([b"v1", b"v2", None]))
                elif what == 3:
                    for e in tree.journal.entries(0, 3):
                        tree.journal.done(e.seq)
                elif what == 4:
                    tree.set_meta("last_seq", str(rng.randrange(1000)))
                else:
                    tree.update(ino, rev=rng.randrange(50), dirty=rng.randrange(2))
        for ino in files[:10]:
            tree.remove_row(ino)
        before = state(tree)
        segments, records = tree.store.rotate()
        tree.store.flush(segments, records)
    finally:
        tree.close()
    for p in os.listdir(tmp_path):
        if ".log." in p:
            os.unlink(tmp_path / p)     # only the snapshot is read back
    again = Tree(tmp_path / "mirror.db")
    try:
        assert state(again) == before
    finally:
        again.close()


def test_data_bytes_come_from_the_chunk_list_of_the_current_content_only(tmp_path):
    """``st_blocks`` of a clean file (``du``) and pin sizes count its data chunks, holes
    left out, by the stored chunk list — only while that list is of the file's current
    content: a remote commit of the same size leaves the old list until the new one is
    fetched, and the old list's holes say nothing about the new bytes."""
    tree = Tree(tmp_path / "mirror.db")
    try:
        f = tree.make(ROOT_INO, b"disk.img", "file", 0o644, 0, 0)
        sparse = [ChunkRef(hash="a" * 64, size=4096), ChunkRef(size=1 << 20, hole=True),
                  ChunkRef(hash="b" * 64, size=10)]
        size = sum(c.size for c in sparse)
        with tree.tx():
            tree.set_manifest(f.ino, 7, sparse)
            tree.update(f.ino, content_rev=7, size=size, dirty=0)
        assert tree.data_bytes(f.ino, size) == 4106
        assert tree.data_chunks(f.ino, size) == {"a" * 64: 4096, "b" * 64: 10}
        # Another device committed new content of the same size (a dense rewrite): the
        # mirror knows its rev, not its chunk list yet.
        with tree.tx():
            tree.update(f.ino, content_rev=9)
        assert tree.data_bytes(f.ino, size) == size
        assert tree.data_chunks(f.ino, size) is None
        with tree.tx():
            tree.set_manifest(f.ino, 9, [ChunkRef(hash="c" * 64, size=size - 10), ChunkRef(hash="b" * 64, size=10)])
        assert tree.data_bytes(f.ino, size) == size
        assert tree.data_chunks(f.ino, size) == {"c" * 64: size - 10, "b" * 64: 10}
    finally:
        tree.close()
