"""Build a storage driver from its setting: a URL, or wrappers composed around URLs.

    local:///var/lib/gobi/blobs                 files under a directory
    nfs:///mnt/share/gobi                       the same, made safe on an NFS mount
    s3://bucket/prefix?endpoint=URL&region=R    an S3 bucket (options below)
    encrypted(SPEC)                             AES-256-GCM at rest over SPEC
    replicated(SPEC, SPEC, …, quorum=N, grace=2s, hedge=1s)
                                                every write to all targets, reads from the
                                                first healthy one

Wrappers nest: ``replicated(encrypted(local:///srv/a), encrypted(s3://b/gobi?endpoint=…))``.
A URL inside a wrapper ends at the next top-level ``,`` or ``)``: percent-encode those
characters if a path really contains them.

s3 options (query parameters): ``endpoint``, ``region``, ``access_key``, ``secret_key``
(or the usual AWS environment variables / ``profile``), ``addressing`` (auto | path |
virtual), ``part_size`` and ``multipart_threshold`` (e.g. ``8MiB``), ``concurrency`` (parts
in flight), ``max_attempts`` (retries on throttling/5xx), ``max_connections``.

Encryption is on by default (``encrypt=True``): a setting with no ``encrypted`` layer gets
one around each backend (``local:///x`` → ``encrypted(local:///x)``;
``replicated(a, b)`` → ``replicated(encrypted(a), encrypted(b))``, so each replica is
verified on its own and a corrupted copy is read from the other). A setting that encrypts
some backends but not others is refused. ``encrypt=False`` (``storage_encryption = false``)
takes the setting as written.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from .base import StorageDriver
from .keys import KeyFile

_NAME_RE = re.compile(r"[a-z][a-z0-9_]*")
_OPTION_RE = re.compile(r"([a-z_]+)\s*=")
_SECRET_OPTIONS = {"secret_key"}


@dataclass
class Spec:
    """One node of a parsed storage setting: a backend URL or a wrapper."""

    name: str                                   # wrapper name, or the URL's scheme
    url: str | None = None                      # backends only
    children: list["Spec"] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)

    @property
    def is_backend(self) -> bool:
        return self.url is not None

    def __str__(self) -> str:
        if self.url is not None:
            return _redact(self.url)
        parts = [str(c) for c in self.children] + [f"{k}={v}" for k, v in self.options.items()]
        return f"{self.name}({', '.join(parts)})"

    def backends(self) -> list["Spec"]:
        if self.is_backend:
            return [self]
        return [b for c in self.children for b in c.backends()]


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if not parts.query:
        return url
    query = "&".join(
        f"{k}=***" if k in _SECRET_OPTIONS else f"{k}={v}"
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    )
    return parts._replace(query=query).geturl()


class SpecError(ValueError):
    pass


def parse_spec(text: str) -> Spec:
    """Parse a storage setting into a tree of ``Spec`` nodes."""
    parser = _Parser(text)
    spec = parser.spec()
    parser.skip_space()
    if parser.pos != len(text):
        raise SpecError(f"unexpected {text[parser.pos:]!r} at position {parser.pos} of storage setting {text!r}")
    return spec


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.pos = 0

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def spec(self) -> Spec:
        self.skip_space()
        m = _NAME_RE.match(self.text, self.pos)
        if m and self.text[m.end():m.end() + 1] == "(":
            name = m.group(0)
            self.pos = m.end() + 1
            node = Spec(name)
            while True:
                self.skip_space()
                opt = _OPTION_RE.match(self.text, self.pos)
                if opt:
                    self.pos = opt.end()
                    node.options[opt.group(1)] = self.atom()
                else:
                    node.children.append(self.spec())
                self.skip_space()
                ch = self.peek()
                self.pos += 1
                if ch == ")":
                    return node
                if ch != ",":
                    raise SpecError(f"expected ',' or ')' at position {self.pos - 1} of {self.text!r}")
        url = self.atom()
        if not url:
            raise SpecError(f"expected a storage URL at position {self.pos} of {self.text!r}")
        if url.startswith("/"):
            url = "local://" + url
        scheme = urlsplit(url).scheme
        if not scheme:
            raise SpecError(f"storage URL {url!r} has no scheme (local://, nfs://, s3://)")
        return Spec(scheme, url=url)

    def atom(self) -> str:
        self.skip_space()
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in ",)":
            if self.text[self.pos] == "(":
                raise SpecError(f"unexpected '(' at position {self.pos} of {self.text!r}")
            self.pos += 1
        return self.text[start:self.pos].strip()


# -- default encryption ---------------------------------------------------------------


def with_default_encryption(spec: Spec) -> Spec:
    """Encrypt every backend that no ``encrypted`` layer covers yet (see module docs)."""
    covered, bare = _coverage(spec, False)
    if not covered:
        return _encrypt_backends(spec)
    if bare:
        names = ", ".join(str(b) for b in bare)
        raise SpecError(
            f"storage setting encrypts some targets but not {names}; wrap them in encrypted(…) "
            "or set storage_encryption = false")
    return spec


def _coverage(spec: Spec, inside: bool) -> tuple[bool, list[Spec]]:
    if spec.is_backend:
        return inside, [] if inside else [spec]
    inside_here = inside or spec.name == "encrypted"
    any_covered, bare = spec.name == "encrypted", []
    for child in spec.children:
        c, b = _coverage(child, inside_here)
        any_covered = any_covered or c
        bare += b
    return any_covered, bare


def _encrypt_backends(spec: Spec) -> Spec:
    if spec.is_backend:
        return Spec("encrypted", children=[spec])
    return Spec(spec.name, children=[_encrypt_backends(c) for c in spec.children], options=dict(spec.options))


# -- building drivers -------------------------------------------------------------------

_UNITS = {"": 1, "b": 1, "k": 1024, "kib": 1024, "kb": 1000, "m": 1024**2, "mib": 1024**2, "mb": 1000**2,
          "g": 1024**3, "gib": 1024**3, "gb": 1000**3}


def parse_size(value: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", value)
    if not m or m.group(2).lower() not in _UNITS:
        raise SpecError(f"not a size: {value!r} (use e.g. 8MiB)")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def parse_seconds(value: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*", value)
    if not m:
        raise SpecError(f"not a duration: {value!r} (use e.g. 500ms, 2s)")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, None: 1}[m.group(2)]


def _path_of(url: str) -> str:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise SpecError(f"{parts.scheme} storage URL must not name a host: {url!r}")
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise SpecError(f"{parts.scheme} storage URL needs an absolute path: {url!r}")
    if parts.query:
        raise SpecError(f"{parts.scheme} storage URL takes no options: {_redact(url)!r}")
    return path


def _build_s3(url: str) -> StorageDriver:
    from .s3 import S3Driver

    parts = urlsplit(url)
    opts = dict(parse_qsl(parts.query, keep_blank_values=True))
    kwargs: dict[str, object] = {}
    for key, value in opts.items():
        if key in ("endpoint", "region", "access_key", "secret_key", "profile", "addressing"):
            kwargs[key] = value
        elif key in ("part_size", "multipart_threshold"):
            kwargs[key] = parse_size(value)
        elif key in ("concurrency", "max_attempts", "max_connections"):
            kwargs[key] = int(value)
        else:
            raise SpecError(f"unknown s3 option {key!r} in {_redact(url)!r}")
    return S3Driver(parts.netloc, unquote(parts.path), **kwargs)  # type: ignore[arg-type]


def _build_backend(spec: Spec) -> StorageDriver:
    assert spec.url is not None
    if spec.name == "local":
        from .local import LocalDriver

        return LocalDriver(_path_of(spec.url))
    if spec.name == "nfs":
        from .nfs import NfsDriver

        return NfsDriver(_path_of(spec.url))
    if spec.name == "s3":
        return _build_s3(spec.url)
    raise SpecError(f"unknown storage driver {spec.name!r} in {str(spec)!r}")


WrapperBuilder = Callable[[list[StorageDriver], dict[str, str], "KeyFile | None"], StorageDriver]


def _build_encrypted(children: list[StorageDriver], options: dict[str, str], keys: KeyFile | None) -> StorageDriver:
    from .encrypted import EncryptedDriver

    if len(children) != 1 or options:
        raise SpecError("encrypted(…) wraps exactly one storage setting and takes no options")
    if keys is None:
        raise SpecError("encrypted storage needs the server's key file")
    return EncryptedDriver(children[0], keys)


def _build_replicated(children: list[StorageDriver], options: dict[str, str], keys: KeyFile | None) -> StorageDriver:
    from .replicated import ReplicatedDriver

    kwargs: dict[str, object] = {}
    for key, value in options.items():
        if key == "quorum":
            kwargs["quorum"] = int(value)
        elif key in ("grace", "hedge", "scan_interval"):
            kwargs[key] = parse_seconds(value)
        else:
            raise SpecError(f"unknown replicated option {key!r}")
    return ReplicatedDriver(children, **kwargs)  # type: ignore[arg-type]


WRAPPERS: dict[str, WrapperBuilder] = {"encrypted": _build_encrypted, "replicated": _build_replicated}


def build(spec: Spec, keys: KeyFile | None = None) -> StorageDriver:
    if spec.is_backend:
        return _build_backend(spec)
    builder = WRAPPERS.get(spec.name)
    if builder is None:
        raise SpecError(f"unknown storage wrapper {spec.name!r} (known: {', '.join(sorted(WRAPPERS))})")
    return builder([build(c, keys) for c in spec.children], spec.options, keys)


def effective_spec(setting: str, *, encrypt: bool) -> Spec:
    spec = parse_spec(setting)
    return with_default_encryption(spec) if encrypt else spec


def open_driver(setting: str, *, keys: KeyFile | None = None, encrypt: bool = False) -> StorageDriver:
    """Build the driver a storage setting describes (see the module docstring)."""
    return build(effective_spec(setting, encrypt=encrypt), keys)
