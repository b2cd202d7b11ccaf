"""Accounts: password hashing, bearer tokens and sign-up invites.

- Passwords are hashed with Argon2id (argon2-cffi's defaults follow RFC 9106's second
  recommendation: 64 MiB and a few CPU-milliseconds per hash). That cost is the point,
  and also what a crowd of sign-ups or logins would multiply: hashing runs on a
  ``PasswordHashing`` pool with a fixed number of worker threads and a bounded queue, so
  the server's memory for it is bounded (workers x 64 MiB) and a request that finds the
  queue full gets 503 with ``Retry-After`` instead of a thread. A login for an unknown
  user still pays for one verification so response times do not reveal which usernames
  exist.
- Tokens are 32 random bytes; the store keeps only their SHA-256, so a leaked database
  does not hand out sessions.
- Invites (``require_invite``): ``gobi user invite NAME`` prints a code that lets exactly
  that username sign up until it expires. It is an HMAC under a key derived from the key
  file's naming secret, so no table is needed, and it is single-use by construction (a
  username can be taken once).
- Throttling of failed logins and sign-ups is ``throttle.py``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from gobi.protocol import ErrorCode

from .errors import ServiceError

TOKEN_PREFIX = "gobi_"
INVITE_PREFIX = "gobi-invite-"

_hasher = PasswordHasher()
# Verified against when the username does not exist, to keep timing uniform.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


def _verify(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


class PasswordHashing:
    """Argon2 on ``workers`` threads with at most ``queue`` requests waiting for one."""

    def __init__(self, workers: int, queue: int):
        self.workers = workers
        self.limit = workers + queue
        self._pending = 0
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gobi-argon2")

    async def _run(self, fn, *args):
        if self._pending >= self.limit:
            err = ServiceError(ErrorCode.UNAVAILABLE, "the server is busy checking passwords; retry shortly")
            err.headers["Retry-After"] = "2"
            raise err
        self._pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        finally:
            self._pending -= 1

    async def hash(self, password: str) -> str:
        return await self._run(_hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        return await self._run(_verify, password_hash, password)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _invite_key(naming_secret: bytes) -> bytes:
    return hmac.new(naming_secret, b"gobi-invite-v1", hashlib.sha256).digest()


def make_invite(naming_secret: bytes, username: str, valid_for: float, now: float | None = None) -> str:
    """A code that lets ``username`` sign up until ``now + valid_for``."""
    expires = int((now if now is not None else time.time()) + valid_for)
    stamp = expires.to_bytes(8, "big")
    mac = hmac.new(_invite_key(naming_secret), b"%s\0%s" % (username.encode(), stamp), hashlib.sha256)
    return INVITE_PREFIX + base64.urlsafe_b64encode(stamp + mac.digest()[:18]).decode().rstrip("=")


def check_invite(naming_secret: bytes, username: str, code: str | None, now: float | None = None) -> None:
    """Raise 403 ``registration_closed`` unless ``code`` is a valid invite for ``username``."""
    refused = ServiceError(ErrorCode.REGISTRATION_CLOSED,
                           "sign-up needs an invite for this username (an administrator runs "
                           "'gobi user invite NAME')")
    if not code or not code.startswith(INVITE_PREFIX):
        raise refused
    raw = code[len(INVITE_PREFIX):]
    try:
        blob = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    except ValueError:
        raise refused from None
    if len(blob) != 26:
        raise refused
    stamp, mac = blob[:8], blob[8:]
    expected = hmac.new(_invite_key(naming_secret), b"%s\0%s" % (username.encode(), stamp),
                        hashlib.sha256).digest()[:18]
    if not hmac.compare_digest(mac, expected):
        raise refused
    if int.from_bytes(stamp, "big") < (now if now is not None else time.time()):
        raise ServiceError(ErrorCode.REGISTRATION_CLOSED, "this invite has expired; ask for a new one")


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer …`` header, or a 401."""
    if not authorization:
        raise ServiceError(ErrorCode.UNAUTHENTICATED, "missing Authorization: Bearer token")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token.startswith(TOKEN_PREFIX) or len(token) > 128:
        raise ServiceError(ErrorCode.UNAUTHENTICATED, "malformed bearer token")
    return token
