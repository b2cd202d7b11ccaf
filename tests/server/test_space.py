"""``GET /vaults/{id}/space``: the storage's size and free bytes, what ``df`` on a mount shows."""

from __future__ import annotations

import shutil


def test_space_is_what_the_storage_disk_has(server, alice, bob):
    vault = alice.post("/vaults", json={"name": "v"}).json()["id"]
    r = alice.get(f"/vaults/{vault}/space")
    assert r.status_code == 200, r.text
    body = r.json()
    usage = shutil.disk_usage(server.data_dir)
    assert body["total_bytes"] == usage.total
    # Other writers share the disk: free space moves a little between the two readings.
    assert abs(body["free_bytes"] - usage.free) < max(usage.total // 100, 256 << 20)
    assert 0 <= body["free_bytes"] <= body["total_bytes"]
    # Members only, like every vault route; bad ids are a JSON 4xx.
    assert bob.get(f"/vaults/{vault}/space").status_code == 404
    r = alice.get("/vaults/nope!/space")
    assert r.status_code == 404 and "error" in r.json()
