"""The throttles and the password-hashing pool on their own: backoff arithmetic, address
keys, and the bounded queue (a full queue answers 503 instead of starting a thread)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from gobi.server.auth import PasswordHashing
from gobi.server.errors import ServiceError
from gobi.server.throttle import BASE_DELAY, Backoff, LoginThrottle, address_key


def test_backoff_doubles_after_the_free_allowance_and_forgets_after_the_window():
    b = Backoff(free=2, window=3600)
    for _ in range(2):
        assert b.wait("k", 100.0) == 0
        b.fail("k", 100.0)
    assert b.wait("k", 100.0) == BASE_DELAY
    b.fail("k", 100.0)
    assert b.wait("k", 100.0) == 2 * BASE_DELAY
    assert b.wait("k", 100.0 + 2 * BASE_DELAY) == 0
    b.fail("k", 200.0)
    assert b.wait("k", 200.0) == 4 * BASE_DELAY
    assert Backoff(free=1, window=100).wait("other", 0.0) == 0
    big = Backoff(free=1, window=100)
    for _ in range(40):
        big.fail("k", 0.0)
    assert big.wait("k", 0.0) == 100           # capped at the window
    assert big.wait("k", 101.0) == 0           # and forgotten after a quiet window


def test_address_keys():
    assert address_key("203.0.113.5") == "203.0.113.5"
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert address_key("::ffff:203.0.113.5") == "203.0.113.5"
    assert address_key("[2001:db8::1]") == "2001:db8::/64"
    assert address_key("not an address") == "not an address"


def test_a_success_clears_only_its_own_pair():
    t = LoginThrottle(max_per_user_address=1, max_per_address=2, window=900)
    t.failed("ann", "203.0.113.1")
    with pytest.raises(ServiceError):
        t.check("ann", "203.0.113.1")
    t.check("ann", "198.51.100.1")              # the owner elsewhere
    t.succeeded("ann", "203.0.113.1")
    t.check("ann", "203.0.113.1")
    t.failed("bob", "203.0.113.1")              # the address's second failure
    with pytest.raises(ServiceError) as exc:
        t.check("cid", "203.0.113.1")
    assert exc.value.status == 429 and int(exc.value.headers["Retry-After"]) > 0


@pytest.mark.asyncio
async def test_password_hashing_queue_is_bounded():
    pool = PasswordHashing(workers=1, queue=1)
    gate = threading.Event()
    try:
        running = asyncio.ensure_future(pool._run(gate.wait))
        waiting = asyncio.ensure_future(pool._run(gate.wait))
        await asyncio.sleep(0)
        with pytest.raises(ServiceError) as exc:
            await pool._run(gate.wait)
        assert exc.value.status == 503 and exc.value.headers["Retry-After"]
        gate.set()
        await asyncio.gather(running, waiting)
        assert await pool.verify(await pool.hash("long enough pw"), "long enough pw")
        assert not await pool.verify(None, "long enough pw")
    finally:
        gate.set()
        pool.close()
