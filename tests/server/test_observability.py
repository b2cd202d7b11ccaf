"""Metrics at /metrics and one log line per request, without secrets."""

from __future__ import annotations

import json
import re

import httpx

from tests.servers import Api, ServerProcess, register

from .util import create_file, ws_connect, ws_frames


def _value(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        m = re.match(r"^(\w+)(\{.*\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return 0.0


def scrape(server) -> str:
    """/metrics with the token the server made in its data directory on first start."""
    token = (server.data_dir / "metrics.token").read_text().strip()
    r = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    return r.text


def test_metrics_need_the_token_by_default(server):
    path = server.data_dir / "metrics.token"
    assert path.stat().st_mode & 0o777 == 0o600
    r = httpx.get(server.url + "/metrics")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
    assert httpx.get(server.url + "/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_public_metrics_when_configured(tmp_path):
    srv = ServerProcess(tmp_path / "s", env={"GOBI_METRICS_PUBLIC": "true"}).start()
    try:
        assert httpx.get(srv.url + "/metrics").status_code == 200
        assert not (srv.data_dir / "metrics.token").exists()
    finally:
        srv.stop()


def test_metrics_count_requests_commits_storage_and_sockets(server, alice, vault):
    before = scrape(server)
    create_file(alice, vault, "m.txt", b"metered bytes")
    with ws_connect(server, vault, alice.token) as ws:
        ws_frames(ws, 2)
        during = scrape(server)
        assert _value(during, "gobi_websocket_clients") >= 1
    after = scrape(server)
    route = "/api/v1/vaults/<vault_id:[A-Za-z0-9_-]{1,64}>/nodes"
    assert (_value(after, "gobi_http_requests_total", method="POST", route=route, status="201")
            > _value(before, "gobi_http_requests_total", method="POST", route=route, status="201"))
    assert _value(after, "gobi_commits_total") > _value(before, "gobi_commits_total")
    assert _value(after, "gobi_events_total", type="create") > _value(before, "gobi_events_total", type="create")
    assert _value(after, "gobi_storage_operations_total", op="put", result="ok") >= 1
    assert _value(after, "gobi_chunk_bytes_total", direction="in") >= len(b"metered bytes")
    assert "gobi_http_request_duration_seconds_bucket" in after
    # no raw paths or ids as labels
    assert vault not in after


def test_access_log_has_one_line_per_request_and_no_secrets(tmp_path):
    srv = ServerProcess(tmp_path / "s", env={"GOBI_LOG_FORMAT": "json", "GOBI_METRICS_TOKEN": "scrape-me"}).start()
    try:
        _, token = register(srv)
        api = Api(srv.api, token)
        vault = api.post("/vaults", json={"name": "logged"}).json()["id"]
        api.get(f"/vaults/{vault}/lookup", params={"path": "private name.txt"})
        assert httpx.get(srv.url + "/metrics").status_code == 401
        assert httpx.get(srv.url + "/metrics", headers={"Authorization": "Bearer scrape-me"}).status_code == 200
        api.close()
    finally:
        srv.stop()
    lines = [json.loads(line.split("gobi.access: ", 1)[1]) for line in srv.output if "gobi.access: " in line]
    assert any(e["route"].endswith("/lookup") and e["status"] == 404 for e in lines)
    assert any(e["method"] == "POST" and e["status"] == 201 and e["user"] for e in lines)
    logs = srv.logs()
    assert token not in logs and "correct horse" not in logs and "scrape-me" not in logs
    assert "private name" not in logs  # query strings are not logged
