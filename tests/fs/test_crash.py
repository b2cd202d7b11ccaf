"""kill -9 of the mount in the middle of a copy loses nothing that was closed or fsynced:
after a re-mount every such file is intact locally and, once synced, on the server."""

from __future__ import annotations

import os

from .mounts import server_file, server_tree


def test_kill9_mid_copy(mounts, user, vault):
    m = mounts()
    closed: dict[str, bytes] = {}
    synced_at: dict[str, bytes] = {}
    (m.path / "copy").mkdir()
    for i in range(60):
        data = os.urandom((i % 7) * 50_000 + 1)
        name = f"copy/f{i:03}"
        (m.path / name).write_bytes(data)      # write + close
        closed[name] = data
        if i == 30:
            m.sync()                            # "reported synced" from here on
            synced_at = dict(closed)
    # A file half-written when the process dies (its fate is not promised).
    f = open(m.path / "copy" / "partial", "wb")
    f.write(os.urandom(100_000))
    m.kill9()
    try:
        f.close()
    except OSError:
        pass
    for name, data in synced_at.items():         # on the server already
        assert server_file(user, vault, name) == data
    m.start()                                    # the journal replays what was pending
    for name, data in closed.items():
        assert (m.path / name).read_bytes() == data, name
    m.sync()
    tree = server_tree(user, vault)
    for name, data in closed.items():
        assert tree[name]["size"] == len(data)
        assert server_file(user, vault, name) == data
