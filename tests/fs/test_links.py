"""Hard links made by other clients, and the mount (issue 17, item 1).

The server keeps the names of a hard-linked file equal (``tests/server/test_links.py``).
Names linked by another client (the API here) must show on every mount with the file's
bytes, a write through one name must reach the other names on the server and on the
mounts (the server applies every commit to every name), a chmod through one name is the
file's mode everywhere, removing one name keeps the others, and ``gobi verify`` finds
nothing to repair. link(2) on the mount itself, and how the names look to the kernel there
(one ``st_ino``, ``st_nlink``), are in ``tests/fs/test_hardlinks.py``.
"""

from __future__ import annotations

import os

from .mounts import caught_up, eventually, read, server_file, server_node


def link(user, vault: str, path: str, parent_path: str, name: str) -> dict:
    node = server_node(user, vault, path)
    parent = server_node(user, vault, parent_path) if parent_path else {"id": "root"}
    r = user.api.post(f"/vaults/{vault}/nodes/{node['id']}/links",
                      json={"parent": parent["id"], "name": name})
    assert r.status_code == 201, r.text
    return r.json()


def test_names_linked_elsewhere_stay_one_file_through_a_mount(mounts, user, vault):
    a, b = mounts("a"), mounts("b")
    (a.path / "docs").mkdir()
    (a.path / "log.txt").write_bytes(b"line 1\n")
    a.sync()
    caught_up(a, b)
    # Another client (the API here) gives log.txt a second name in docs/.
    link(user, vault, "log.txt", "docs", "log-link.txt")
    for m in (a, b):
        eventually(lambda m=m: read(m, "docs/log-link.txt") == b"line 1\n", f"the link on {m.path.name}")
    # An append through one name on one mount reaches the other name everywhere.
    with open(a.path / "log.txt", "ab") as f:
        f.write(b"line 2\n")
    a.sync()
    assert server_file(user, vault, "docs/log-link.txt") == b"line 1\nline 2\n"
    for m in (a, b):
        eventually(lambda m=m: read(m, "docs/log-link.txt") == b"line 1\nline 2\n",
                   f"the append through the other name on {m.path.name}")
    # And the other way, from the second mount, through the linked name.
    with open(b.path / "docs" / "log-link.txt", "ab") as f:
        f.write(b"line 3\n")
    b.sync()
    assert server_file(user, vault, "log.txt") == b"line 1\nline 2\nline 3\n"
    eventually(lambda: read(a, "log.txt") == b"line 1\nline 2\nline 3\n", "the append on a")
    # chmod through one name: the file's mode, on every name.
    os.chmod(a.path / "docs" / "log-link.txt", 0o600)
    a.sync()
    assert server_node(user, vault, "log.txt")["mode"] == 0o600
    eventually(lambda: os.stat(b.path / "log.txt").st_mode & 0o777 == 0o600, "chmod on b")
    # Removing one name keeps the other.
    os.unlink(b.path / "log.txt")
    b.sync()
    caught_up(a, b)
    assert not (a.path / "log.txt").exists()
    assert read(a, "docs/log-link.txt") == b"line 1\nline 2\nline 3\n"
    for m in (a, b):
        report = m.verify()
        assert report["difference_count"] == 0, report
