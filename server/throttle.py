"""Throttles for the routes strangers reach: failed logins and sign-ups.

Login throttling follows OWASP's Authentication Cheat Sheet ("Protect against automated
attacks", "Account lockout"): counting failures per *username* alone lets anyone who
knows a username lock its owner out, so failures are counted per (username, client
address) and per client address, never per username alone. Past a free allowance each
further failure doubles the wait before the next attempt from that key (30 s, 1 min,
2 min, … up to the window), and a key is forgotten after a window without failures. A stranger's
failures therefore only slow down the stranger's address; the owner's correct password
from any other address is always checked. docs/security.md says why and what is left.

IPv6 clients are keyed by their /64 (one subscriber usually holds a whole /64, so a
per-/128 budget would be a budget per random address).

Everything is in memory and per instance: several instances multiply the budgets by
their number, which still bounds guessing to a few attempts per minute per address.
"""

from __future__ import annotations

import ipaddress
import time
from collections import deque
from dataclasses import dataclass

from gobi.protocol import ErrorCode

from .errors import ServiceError

MAX_KEYS = 100_000     # bound memory under a spray of usernames or addresses
BASE_DELAY = 30.0      # the first wait past the free allowance; it doubles with each failure


def address_key(address: str) -> str:
    """The throttling key of a client address: IPv4 as is, IPv6 by its /64."""
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def rate_limited(message: str, retry: float) -> ServiceError:
    seconds = max(1, int(retry + 0.999))
    err = ServiceError(ErrorCode.RATE_LIMITED, message, retry_after=seconds)
    err.headers["Retry-After"] = str(seconds)
    return err


@dataclass
class _Failures:
    count: int
    last: float


class Backoff:
    """Failures per key; after ``free`` of them the next attempt waits
    ``BASE_DELAY * 2^(n-free)`` seconds, at most ``max_delay``. A key idle for ``window``
    starts again from zero."""

    def __init__(self, free: int, window: float, max_delay: float | None = None):
        self.free = free
        self.window = window
        self.max_delay = max_delay if max_delay is not None else window
        self._keys: dict[str, _Failures] = {}

    def _get(self, key: str, now: float) -> _Failures | None:
        f = self._keys.get(key)
        if f is not None and now - f.last > self.window:
            del self._keys[key]
            return None
        return f

    def wait(self, key: str, now: float) -> float:
        """Seconds before ``key`` may try again (0: now)."""
        f = self._get(key, now)
        if f is None or f.count < self.free:
            return 0.0
        delay = min(self.max_delay, BASE_DELAY * 2.0 ** min(f.count - self.free, 32))
        return max(0.0, f.last + delay - now)

    def fail(self, key: str, now: float) -> None:
        f = self._get(key, now)
        if f is None:
            self._keys[key] = _Failures(1, now)
        else:
            f.count += 1
            f.last = now
        if len(self._keys) > MAX_KEYS:
            for k in list(self._keys)[: MAX_KEYS // 2]:
                self._get(k, now)

    def clear(self, key: str) -> None:
        self._keys.pop(key, None)


class LoginThrottle:
    """Failed logins per (username, address) and per address, with backoff."""

    def __init__(self, max_per_user_address: int, max_per_address: int, window: float):
        self.pair = Backoff(max_per_user_address, window)
        self.address = Backoff(max_per_address, window)

    def check(self, username: str, address: str) -> None:
        """429 with ``Retry-After`` while either key is waiting; the password is not checked."""
        now = time.monotonic()
        addr = address_key(address)
        wait = max(self.pair.wait(f"{username}\0{addr}", now), self.address.wait(addr, now))
        if wait > 0:
            raise rate_limited("too many failed logins from this address; try again later", wait)

    def failed(self, username: str, address: str) -> None:
        now = time.monotonic()
        addr = address_key(address)
        self.pair.fail(f"{username}\0{addr}", now)
        self.address.fail(addr, now)

    def succeeded(self, username: str, address: str) -> None:
        # Only this user's failures from this address: the address's own count stays, so
        # an attacker cannot reset it by logging into an account of their own.
        self.pair.clear(f"{username}\0{address_key(address)}")


class SignupLimiter:
    """Sign-ups per address in a sliding window (each costs an Argon2 hash and a row)."""

    def __init__(self, max_per_address: int, window: float):
        self.max = max_per_address
        self.window = window
        self._seen: dict[str, deque[float]] = {}

    def take(self, address: str) -> None:
        """Count one sign-up attempt, or raise 429 when the address has used its budget."""
        now = time.monotonic()
        key = address_key(address)
        q = self._seen.setdefault(key, deque())
        while q and q[0] <= now - self.window:
            q.popleft()
        if len(q) >= self.max:
            raise rate_limited("too many sign-ups from this address; try again later",
                               q[0] + self.window - now)
        q.append(now)
        if len(self._seen) > MAX_KEYS:
            for k in list(self._seen)[: MAX_KEYS // 2]:
                if not self._seen[k] or self._seen[k][-1] <= now - self.window:
                    del self._seen[k]
