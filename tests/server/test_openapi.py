"""The API description: a valid OpenAPI 3.1 document that lists every route, query
parameter, body and error, and that a live server keeps to under property-based testing.

- openapi-spec-validator checks the document the server serves at /docs/openapi.json;
- every API route of the app is in it (the WebSocket is described in docs/api.md);
- schemathesis generates requests from it against a real server (a bounded number of
  examples per operation, every check: no 5xx, answers match their schemas and
  documented statuses, invalid input refused, valid input accepted, auth enforced, 405
  with Allow for undeclared methods). It runs in CI like every other test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.needs import missing
from tests.servers import ServerProcess, register

#: Examples per operation and phase: enough to find what the checks look for, bounded so
#: the run takes about a minute here.
MAX_EXAMPLES = 25

# Valid input (by the schema) that the server still refuses with good reason: rules
# across fields or state that a JSON Schema cannot state. positive_data_acceptance
# accepts these statuses for these operations only.
STATEFUL_REFUSALS = {
    # the body must hash to the URL's SHA-256; frames must parse and hash
    "put_content_put": [400],
    "post_content_put_batch": [400],
    # kinds and fields go together (symlinks need a target, only files have content);
    # chunks must exist and add up to the size; the root cannot be moved or deleted
    "post_nodes_create": [400],
    "put_nodes_commit": [400],
    "patch_nodes_update": [400],
    "delete_nodes_delete": [400],
    "post_history_restore_version": [400],
    "post_history_restore_trash": [400],
    # a seq after the head, or history past retention
    "get_events_page": [400, 410],
    "get_nodes_tree": [400, 410],
    "get_events_seq_at": [400, 410],
}


def schemathesis_config(vault: str) -> str:
    lines = [
        "[parameters]",
        f'"path.vault_id" = "{vault}"',
        "",
        "[checks.positive_data_acceptance]",
        'expected-statuses = ["2xx", "3xx", 401, 403, 404, 409, 429]',
    ]
    for op, statuses in STATEFUL_REFUSALS.items():
        lines += ["", "[[operations]]", f'include-operation-id = "{op}"',
                  "checks.positive_data_acceptance.expected-statuses = "
                  + json.dumps(["2xx", "3xx", 401, 403, 404, 409, 429, *statuses])]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def api_server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("openapi")).start()
    yield srv
    srv.stop()


def test_the_document_is_valid_openapi_3_1(api_server):
    from openapi_spec_validator import validate

    doc = httpx.get(api_server.url + "/docs/openapi.json").json()
    assert doc["openapi"] == "3.1.0"
    validate(doc)
    schemas = doc["components"]["schemas"]
    text = json.dumps(doc)
    assert "#/$defs/" not in text and "model_config" not in text and "int32" not in text
    assert "base_rev" in schemas["CommitContentRequest"]["required"]
    assert set(schemas["ErrorBody"]["required"]) == {"error"}
    ops = [op for item in doc["paths"].values() for op in item.values()]
    error_body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            errors = [s for s in op["responses"] if s.startswith(("4", "5"))]
            assert errors, op["operationId"]
            for status in errors:
                if method == "head" or path == "/health":
                    continue          # no body / /health's own shape
                assert op["responses"][status]["content"] == error_body, (op["operationId"], status)
    children = doc["paths"]["/api/v1/vaults/{vault_id}/nodes/{node_id}/children"]["get"]
    assert {p["name"] for p in children["parameters"]} == {"vault_id", "node_id", "after", "limit"}
    upload = doc["paths"]["/api/v1/vaults/{vault_id}/chunks/{chunk_hash}"]["put"]
    assert "application/octet-stream" in upload["requestBody"]["content"]


def test_every_api_route_is_described():
    from gobi.server.app import create_app
    from gobi.server.config import ServerConfig
    from gobi.server.openapi import build

    app = create_app(ServerConfig(data_dir=Path("/nonexistent")), name="gobi_openapi_test")
    app.ctx.version = "test"
    app.router.finalize()
    doc = build(app)
    described = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    for route in app.router.routes:
        path = "/" + route.path
        if not path.startswith("/api/") or path.endswith("/ws"):
            continue
        for method in route.methods:
            if method == "OPTIONS":
                continue
            rendered = "/" + "/".join("{" + part.split(":")[0][1:] + "}" if part.startswith("<") else part
                                      for part in route.path.split("/"))
            assert (method, rendered.rstrip("/")) in described or (method, rendered) in described, (method, path)


def test_schemathesis_finds_no_server_errors_or_schema_violations(api_server, tmp_path):
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    if st is None:
        missing("schemathesis is not installed (pip install -e '.[test]')")
    name, token = register(api_server)
    headers = {"Authorization": f"Bearer {token}"}
    vault = httpx.post(api_server.api + "/vaults", json={"name": "fuzzed"}, headers=headers).json()["id"]
    (tmp_path / "schemathesis.toml").write_text(schemathesis_config(vault))
    url = api_server.url + "/docs/openapi.json"
    common = ["run", url, "--checks", "all", "--max-examples", str(MAX_EXAMPLES),
              "--phases", "examples,coverage,fuzzing", "--seed", "1", "--no-color",
              "--request-timeout", "30"]

    def run(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([st, *common, *extra], cwd=tmp_path, capture_output=True, text=True,
                              timeout=900)

    # Everything but logging out and deleting the vault (they would end the run's session
    # and vault), with the fuzzed vault's id in every vault path.
    out = run("-H", f"Authorization: Bearer {token}",
              "--exclude-operation-id", "delete_accounts_logout",
              "--exclude-operation-id", "delete_vaults_delete")
    assert out.returncode == 0, out.stdout[-12000:] + out.stderr[-3000:]
    # Those two with a session and a vault of their own.
    _, other = register(api_server)
    (tmp_path / "schemathesis.toml").write_text(schemathesis_config(
        httpx.post(api_server.api + "/vaults", json={"name": "doomed"},
                   headers={"Authorization": f"Bearer {other}"}).json()["id"]))
    out = run("-H", f"Authorization: Bearer {other}",
              "--include-operation-id", "delete_accounts_logout",
              "--include-operation-id", "delete_vaults_delete")
    assert out.returncode == 0, out.stdout[-12000:] + out.stderr[-3000:]
    assert "Traceback" not in api_server.logs()
