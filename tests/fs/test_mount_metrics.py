"""The mount's observability (issue 8, item 2): Prometheus metrics on a local address or in
a textfile for node_exporter, and one structured log line per operation that never
carries a token. Scrapes are parsed with prometheus_client's own parser."""

from __future__ import annotations

import json
import os
import socket

import httpx
from prometheus_client.parser import text_string_to_metric_families

from .mounts import eventually, gobi, is_mounted

MiB = 1024 * 1024

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[str, dict[tuple, float]]:
    """family name → {(sorted labels without 'mount'): value} (samples of all kinds)."""
    r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return parse(r.text)


def parse(text: str) -> dict[str, dict[tuple, float]]:
    out: dict[str, dict[tuple, float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            assert "mount" in s.labels, s              # every series names its mount
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "mount"))
            out.setdefault(s.name, {})[labels] = s.value
    return out


def one(m: dict, name: str, **labels) -> float:
    return m[name][tuple(sorted(labels.items()))]


def test_metrics_endpoint_reports_queue_cache_fetches_and_lag(mounts, user, vault):
    port = free_port()
    m = mounts(extra=("--settle", "600", "--metrics", f"127.0.0.1:{port}"))
    (m.path / "a.bin").write_bytes(os.urandom(3 * MiB))
    (m.path / "b.txt").write_text("b")
    mt = scrape(port)
    assert one(mt, "gobi_mount_online") == 1
    assert one(mt, "gobi_mount_info", vault=vault, server=user.server.url,
               device=m.status()["device"]) == 1
    assert one(mt, "gobi_mount_upload_queue_entries", op="create") == 2
    assert one(mt, "gobi_mount_upload_queue_bytes") == 3 * MiB + 1
    assert one(mt, "gobi_mount_upload_queue_oldest_age_seconds") >= 0
    # The cap counts the blocks the staging copies hold (b.txt's one byte takes a block).
    held = 0
    for p in (m.cache_dir / "staging").iterdir():
        try:
            held += p.stat().st_blocks * 512
        except FileNotFoundError:
            # An empty spare (staging/s<ino>, made ahead for a next create) dropped while
            # we listed: it held no block (seen once on a loaded machine).
            pass
    assert one(mt, "gobi_mount_cache_bytes", kind="staged") == held >= 3 * MiB + 1
    assert one(mt, "gobi_mount_cache_capacity_bytes") == 1024 * MiB
    assert one(mt, "gobi_mount_fuse_requests_total", op="create") >= 2

    m.sync()
    mt = scrape(port)
    assert sum(mt["gobi_mount_upload_queue_entries"].values()) == 0
    assert one(mt, "gobi_mount_upload_queue_bytes") == 0
    assert one(mt, "gobi_mount_uploaded_bytes_total") >= 3 * MiB
    assert one(mt, "gobi_mount_upload_results_total", op="create", result="ok") == 2
    assert one(mt, "gobi_mount_upload_duration_seconds_count", op="create") == 2

    # A second mount fetches: misses, then hits; the fetch latency is recorded.
    port2 = free_port()
    m2 = mounts("reader", extra=("--metrics", f"127.0.0.1:{port2}"))
    data = (m2.path / "a.bin").read_bytes()
    assert len(data) == 3 * MiB
    mt = scrape(port2)
    misses = one(mt, "gobi_mount_chunk_reads_total", result="miss")
    assert misses >= 1 and one(mt, "gobi_mount_fetched_chunks_total") >= 1
    assert one(mt, "gobi_mount_fetch_duration_seconds_count") == one(mt, "gobi_mount_fetched_chunks_total")
    assert one(mt, "gobi_mount_fetched_bytes_total") == 3 * MiB
    assert one(mt, "gobi_mount_cache_bytes", kind="chunks") == 3 * MiB
    os.system("sync; echo 3 > /proc/sys/vm/drop_caches")       # make the kernel ask again
    assert (m2.path / "a.bin").read_bytes() == data
    mt = scrape(port2)
    assert one(mt, "gobi_mount_chunk_reads_total", result="hit") >= 1
    assert one(mt, "gobi_mount_chunk_reads_total", result="miss") == misses

    # Event lag: the reader applies the writer's change and catches up to the head.
    (m.path / "c.txt").write_text("c")
    m.sync()
    head = user.api.get(f"/vaults/{vault}").json()["head_seq"]

    def caught_up():
        mt = scrape(port2)
        return mt if one(mt, "gobi_mount_last_applied_seq") >= head else None
    mt = eventually(caught_up, "the reader to apply the new change")
    assert one(mt, "gobi_mount_server_head_seq") >= head
    assert one(mt, "gobi_mount_event_lag") == (one(mt, "gobi_mount_server_head_seq")
                                               - one(mt, "gobi_mount_last_applied_seq"))

    assert httpx.get(f"http://127.0.0.1:{port}/nope", timeout=10).status_code == 404
    assert httpx.post(f"http://127.0.0.1:{port}/metrics", timeout=10).status_code == 405


def test_textfile_for_node_exporter(mounts, tmp_path):
    prom = tmp_path / "textfile" / "gobi.prom"
    prom.parent.mkdir()
    m = mounts(extra=("--metrics-textfile", str(prom)))
    mt = parse(prom.read_text())                     # written before the mount is announced
    assert one(mt, "gobi_mount_online") == 1
    assert [p for p in prom.parent.iterdir()] == [prom]   # no temp files left next to it
    m.umount()
    assert not prom.exists()                          # a stopped mount has no metrics


def test_metrics_port_taken_fails_the_mount_clearly(mounts, user, vault, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        mp = tmp_path / "mp"
        mp.mkdir()
        r = gobi("mount", vault, str(mp), "--cache-dir", str(tmp_path / "c"),
                 "--metrics", f"127.0.0.1:{port}", env=user.env, check=False)
    assert r.returncode == 1 and f"--metrics 127.0.0.1:{port}" in r.stderr, r.stderr
    assert "in use" in r.stderr and "Traceback" not in r.stderr
    assert not is_mounted(mp)
    r = gobi("mount", vault, str(mp), "--metrics", "localhost:http", env=user.env, check=False)
    assert r.returncode == 2 and "not an address" in r.stderr


def test_one_json_line_per_operation_and_no_token(mounts, user):
    m = mounts(extra=("--log-format", "json", "--verbose"))
    (m.path / "d").mkdir()
    (m.path / "d" / "f.bin").write_bytes(os.urandom(2 * MiB))
    m.sync()
    r2 = mounts("reader", extra=("--log-format", "json"))
    assert len((r2.path / "d" / "f.bin").read_bytes()) == 2 * MiB
    r2.umount()
    m.umount()
    for mount in (m, r2):
        text = mount.log()
        assert user.token not in text
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        assert lines and all({"ts", "level", "logger"} <= set(x) for x in lines)
    ups = [x for x in (json.loads(line) for line in m.log().splitlines() if line.startswith("{"))
           if x.get("event") == "upload"]
    assert any(u["path"] == "/d/f.bin" and u["op"] == "create" and u["result"] == "ok"
               and u["size"] == 2 * MiB and u["ms"] >= 0 for u in ups), ups
    assert any(u["path"] == "/d" and u["op"] == "create" and u["result"] == "ok" for u in ups), ups
    fetches = [x for x in (json.loads(line) for line in r2.log().splitlines() if line.startswith("{"))
               if x.get("event") == "fetch"]
    assert fetches and fetches[0]["path"] == "/d/f.bin" and fetches[0]["bytes"] == 2 * MiB
