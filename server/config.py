"""Server configuration: one model fed by CLI flags, ``GOBI_*`` environment variables and
an optional TOML file, in that order of precedence.

Everything has an embedded default: with no configuration at all, ``gobi server`` keeps
SQLite metadata, encrypted local blob storage and its master key under ``data_dir`` and
needs no other service.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string such as ``"365d"``, ``"15m"``, ``"500ms"``."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '30s', '365d'")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("a duration must not be negative")
        return float(value)
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2) or "s"]
    raise ValueError(f"not a duration: {value!r} (use e.g. '30s', '15m', '12h', '365d')")


Duration = Annotated[float, BeforeValidator(parse_duration)]


def default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "gobi" / "server"


class ServerConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GOBI_", extra="forbid")

    data_dir: Path = Field(default_factory=default_data_dir)
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    #: Metadata store URL. Empty: SQLite at ``data_dir/metadata.db``.
    metadata: str = ""
    #: Storage setting: a URL (``local:///…``, ``nfs:///…``, ``s3://bucket/prefix?…``) or
    #: wrappers around URLs (``encrypted(…)``, ``replicated(…, quorum=N)``); see
    #: docs/storage.md. Empty: ``local://`` under ``data_dir/blobs``.
    storage: str = ""
    #: Encryption at rest (AES-256-GCM, keys in ``key_file``). On by default: every backend
    #: without an ``encrypted(…)`` layer gets one. ``false`` takes ``storage`` as written.
    storage_encryption: bool = True
    #: How often storage housekeeping runs (replica repair, leftovers of crashed writes);
    #: 0 turns it off.
    storage_maintenance_interval: Duration = parse_duration("10m")
    #: Event fan-out between instances: ``memory`` (one process) or a ``redis://`` URL.
    fanout: str = "memory"
    #: Master key file (created with mode 0600 on first start). Empty: ``data_dir/master.key``.
    key_file: Path | None = None
    #: ``POST /users/``: open to anyone (``true``) or closed (``false``: admins add users
    #: with ``gobi user add``). With ``require_invite``, open only to holders of an invite
    #: (``gobi user invite NAME``) for the username they sign up with.
    open_registration: bool = True
    require_invite: bool = False
    #: Sign-ups per client address (IPv6: per /64) within ``register_window``.
    register_max_per_address: int = Field(default=5, ge=1)
    register_window: Duration = parse_duration("1h")
    #: Argon2 runs on this many threads (64 MiB each while hashing); at most
    #: ``password_hash_queue`` logins/sign-ups wait for one, more get 503 + Retry-After.
    password_hash_workers: int = Field(default=2, ge=1, le=64)
    password_hash_queue: int = Field(default=32, ge=0, le=10_000)
    event_retention: Duration = parse_duration("365d")
    #: How long superseded node rows are kept, i.e. how long a paged tree listing may take.
    listing_window: Duration = parse_duration("1d")
    prune_interval: Duration = parse_duration("1h")
    #: Versions (docs/conflicts.md): every version is kept this long, then thinned to one per
    #: day until ``version_keep_daily``, then dropped; the current one is always kept.
    version_keep_all: Duration = parse_duration("30d")
    version_keep_daily: Duration = parse_duration("365d")
    #: How long deleted files and directories stay restorable.
    trash_retention: Duration = parse_duration("30d")
    #: Mass-delete guard (docs/conflicts.md, "Held mass deletes"): one device deleting,
    #: within ``mass_delete_window``, more files than the smaller of ``mass_delete_files``
    #: and ``mass_delete_fraction`` of the vault's files (but at least
    #: ``mass_delete_min_files``) is held for the owner. Files that device itself wrote
    #: less than ``mass_delete_fresh`` ago do not count (a device undoing its own recent
    #: work: builds, installs, checkouts, unpacked archives). Held deletes expire after
    #: ``mass_delete_expiry``. ``mass_delete_files = 0`` turns the guard off.
    mass_delete_files: int = Field(default=1000, ge=0)
    mass_delete_fraction: float = Field(default=0.25, ge=0, le=1)
    mass_delete_min_files: int = Field(default=50, ge=1)
    mass_delete_window: Duration = parse_duration("1h")
    mass_delete_fresh: Duration = parse_duration("1d")
    mass_delete_expiry: Duration = parse_duration("3d")
    #: Garbage collection: unreferenced chunks younger than ``gc_grace`` are kept (their
    #: upload's commit may still come); ``gc_interval``: how often it runs by itself (0: only
    #: on request).
    gc_grace: Duration = parse_duration("1h")
    gc_interval: Duration = parse_duration("1d")
    #: How often version retention, trash purging and hold expiry run (0: never).
    history_interval: Duration = parse_duration("1h")
    session_ttl: Duration = parse_duration("90d")
    #: Failed logins (docs/security.md): after ``login_max_failures`` for one username from
    #: one address, or ``login_max_failures_per_address`` from one address (IPv6: /64), each
    #: further failure doubles the wait (1 s, 2 s, …, at most ``login_window``); a key is
    #: forgotten after ``login_window`` without failures. Never per username alone.
    login_max_failures: int = Field(default=10, ge=1)
    login_max_failures_per_address: int = Field(default=50, ge=1)
    login_window: Duration = parse_duration("15m")
    #: How long SIGTERM waits for in-flight requests before closing them.
    graceful_shutdown_timeout: Duration = parse_duration("30s")
    #: How often a WebSocket re-reads the store even without a doorbell (lost messages).
    poll_interval: Duration = parse_duration("5s")
    #: Connections that have not authenticated yet (no request with a valid token or
    #: session): past this many, new ones get 503 and are closed (docs/security.md).
    max_unauthenticated_connections: int = Field(default=256, ge=1)
    #: The request line and headers must arrive within this.
    header_timeout: Duration = parse_duration("10s")
    #: A body must arrive within ``body_timeout + size / body_min_rate`` (bytes/s).
    body_timeout: Duration = parse_duration("10s")
    body_min_rate: int = Field(default=16 * 1024, ge=1)
    #: Reverse proxies in front of this server whose X-Forwarded-For is trusted for the
    #: client's address (login rate limits, logs). 0: use the TCP peer address.
    proxies_count: int = Field(default=0, ge=0, le=10)
    #: One log line per request (route, status, duration, user; never tokens).
    access_log: bool = True
    log_format: Literal["text", "json"] = "text"
    #: Serve Prometheus metrics at /metrics, behind a bearer token: ``metrics_token``, or
    #: else the one in ``data_dir/metrics.token`` (made on first start, mode 0600; point
    #: Prometheus' ``credentials_file`` at it). ``metrics_public = true`` serves them to
    #: anyone (only behind a proxy that keeps /metrics off the internet).
    metrics: bool = True
    metrics_token: str | None = Field(default=None, repr=False)
    metrics_public: bool = False

    @classmethod
    def load(cls, config_file: str | Path | None = None, **overrides: Any) -> "ServerConfig":
        """Build the configuration; ``overrides`` (CLI flags) win, ``None`` means unset."""
        toml_path = Path(config_file) if config_file else None
        if toml_path is not None and not toml_path.is_file():
            raise FileNotFoundError(f"config file not found: {toml_path}")

        class _WithToml(cls):  # type: ignore[valid-type, misc]
            @classmethod
            def settings_customise_sources(
                cls,
                settings_cls: type[BaseSettings],
                init_settings: PydanticBaseSettingsSource,
                env_settings: PydanticBaseSettingsSource,
                dotenv_settings: PydanticBaseSettingsSource,
                file_secret_settings: PydanticBaseSettingsSource,
            ) -> tuple[PydanticBaseSettingsSource, ...]:
                sources = [init_settings, env_settings]
                if toml_path is not None:
                    sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
                return tuple(sources)

        return _WithToml(**{k: v for k, v in overrides.items() if v is not None})

    # -- derived settings ------------------------------------------------------------------

    @property
    def metadata_url(self) -> str:
        return self.metadata or f"sqlite://{(self.data_dir / 'metadata.db').resolve()}"

    @property
    def storage_url(self) -> str:
        return self.storage or f"local://{(self.data_dir / 'blobs').resolve()}"

    @property
    def metrics_token_path(self) -> Path:
        return self.data_dir / "metrics.token"

    @property
    def key_path(self) -> Path:
        return self.key_file or self.data_dir / "master.key"
