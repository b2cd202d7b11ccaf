"""Accounts: password hashing, bearer tokens and the failed-login limiter.

- Passwords are hashed with Argon2id (argon2-cffi's defaults follow RFC 9106's second
  recommendation). Hashing is deliberately slow, so it runs in a worker thread and never
  blocks the event loop; a login for an unknown user still pays for one verification so
  response times do not reveal which usernames exist.
- Tokens are 32 random bytes; the store keeps only their SHA-256, so a leaked database
  does not hand out sessions.
- Failed logins are limited per username and per client address within a sliding
  window; past the limit a login is refused with 429 and ``Retry-After`` before the
  password is even checked.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections import deque

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from gobi.protocol import ErrorCode

from .errors import ServiceError

TOKEN_PREFIX = "gobi_"

_hasher = PasswordHasher()
# Verified against when the username does not exist, to keep timing uniform.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(password_hash: str | None, password: str) -> bool:
    def check() -> bool:
        try:
            return _hasher.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(check)


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


class LoginLimiter:
    """Counts failed logins per key (username, address) in a sliding window.

    In-memory and per instance: a scale-out deployment multiplies the per-address budget by
    the number of instances, which still bounds guessing to a handful per minute.
    """

    def __init__(self, max_per_user: int, max_per_address: int, window: float):
        self.max_per_user = max_per_user
        self.max_per_address = max_per_address
        self.window = window
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._failures.get(key)
        if q is None:
            return deque()
        while q and q[0] <= now - self.window:
            q.popleft()
        if not q:
            del self._failures[key]
        return q

    def check(self, username: str, address: str) -> None:
        """Raise 429 when either key has used up its failures."""
        now = time.monotonic()
        for key, limit in ((f"u:{username}", self.max_per_user), (f"a:{address}", self.max_per_address)):
            q = self._recent(key, now)
            if len(q) >= limit:
                retry = max(1, int(q[0] + self.window - now) + 1)
                err = ServiceError(
                    ErrorCode.RATE_LIMITED,
                    "too many failed logins; try again later",
                    retry_after=retry,
                )
                err.headers["Retry-After"] = str(retry)
                raise err

    def failed(self, username: str, address: str) -> None:
        now = time.monotonic()
        for key in (f"u:{username}", f"a:{address}"):
            self._failures.setdefault(key, deque()).append(now)
        if len(self._failures) > 100_000:  # bound memory under a spray of usernames
            for key in list(self._failures)[:50_000]:
                self._recent(key, now)

    def succeeded(self, username: str) -> None:
        self._failures.pop(f"u:{username}", None)
