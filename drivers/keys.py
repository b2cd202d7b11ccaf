"""The master key file: secrets the server generates on first start.

It holds
- ``naming_secret``: the HMAC key that turns (vault, chunk hash) into a storage key, so the
  storage provider cannot confirm that a vault holds some known content;
- ``master_keys``: AES-256 keys by id, and which one is ``current``; the encrypted driver
  wraps per-vault data keys with them, and rotation adds a new current key.

The file is JSON, created atomically with mode 0600, and refused when group or others can
read it (as ssh refuses a private key). Nothing here ever logs or prints key material.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

FORMAT_VERSION = 1


class KeyFileError(Exception):
    pass


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        raise KeyFileError(f"key file: {what} is not valid base64") from None


@dataclass
class KeyFile:
    path: Path
    naming_secret: bytes
    master_keys: dict[str, bytes] = field(repr=False)
    current: str

    def __repr__(self) -> str:  # never show key material
        return f"KeyFile(path={str(self.path)!r}, current={self.current!r}, ids={sorted(self.master_keys)})"

    @property
    def current_key(self) -> bytes:
        return self.master_keys[self.current]

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def reload(self) -> bool:
        """Re-read master keys from the file (``gobi keys rotate`` ran in another process).

        Returns True when something changed. The naming secret must not change: it names
        every stored chunk, so a file with another one is refused.
        """
        fresh = type(self).load(self.path)
        if not hmac.compare_digest(fresh.naming_secret, self.naming_secret):
            raise KeyFileError(f"key file {self.path}: the naming secret changed; refusing it")
        changed = fresh.master_keys != self.master_keys or fresh.current != self.current
        self.master_keys, self.current = fresh.master_keys, fresh.current
        self._seen = self._stamp()
        return changed

    def refresh(self) -> bool:
        """Reload when the file changed on disk since it was last read (one ``stat``)."""
        stamp = self._stamp()
        if stamp is None or stamp == getattr(self, "_seen", None):
            return False
        return self.reload()

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": FORMAT_VERSION,
                "naming_secret": _b64(self.naming_secret),
                "master_keys": {k: _b64(v) for k, v in self.master_keys.items()},
                "current": self.current,
            },
            indent=2,
        )

    def _write_temp(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(6)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, self.to_json().encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return tmp

    def _sync_dir(self) -> None:
        dfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def save(self) -> None:
        """Replace the file atomically with mode 0600 (temp file, fsync, rename, fsync dir)."""
        os.replace(self._write_temp(), self.path)
        self._sync_dir()
        self._seen = self._stamp()

    def add_master_key(self) -> str:
        """Generate a new master key, make it current and return its id (not saved)."""
        n = len(self.master_keys) + 1
        while f"k{n}" in self.master_keys:
            n += 1
        key_id = f"k{n}"
        self.master_keys[key_id] = secrets.token_bytes(32)
        self.current = key_id
        return key_id

    def remove_master_key(self, key_id: str) -> None:
        """Forget a retired master key (not saved). The current key cannot be removed."""
        if key_id == self.current:
            raise KeyFileError(f"master key {key_id!r} is the current key")
        self.master_keys.pop(key_id, None)

    @classmethod
    def generate(cls, path: Path) -> "KeyFile":
        return cls(path, secrets.token_bytes(32), {"k1": secrets.token_bytes(32)}, "k1")

    @classmethod
    def load(cls, path: Path) -> "KeyFile":
        st = path.stat()
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(
                f"key file {path} is accessible by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):o}); run: chmod 600 {path}"
            )
        try:
            doc = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError):
            raise KeyFileError(f"key file {path} is not valid JSON") from None
        if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION:
            raise KeyFileError(f"key file {path}: unknown format version")
        try:
            keys = {str(k): _unb64(v, f"master key {k}") for k, v in doc["master_keys"].items()}
            kf = cls(path, _unb64(doc["naming_secret"], "naming_secret"), keys, str(doc["current"]))
        except (KeyError, AttributeError, TypeError):
            raise KeyFileError(f"key file {path} is missing fields") from None
        if kf.current not in kf.master_keys:
            raise KeyFileError(f"key file {path}: current key {kf.current!r} is not in the file")
        if len(kf.naming_secret) < 32 or any(len(k) != 32 for k in kf.master_keys.values()):
            raise KeyFileError(f"key file {path}: keys must be 32 bytes")
        kf._seen = kf._stamp()
        return kf

    @classmethod
    def load_or_create(cls, path: Path) -> "KeyFile":
        if path.exists():
            return cls.load(path)
        kf = cls.generate(path)
        tmp = kf._write_temp()
        try:
            # link(2) fails if another process created the file first: then both use
            # theirs, never two different naming secrets over one data directory.
            os.link(tmp, path)
        except FileExistsError:
            return cls.load(path)
        finally:
            tmp.unlink()
        kf._sync_dir()
        return kf
