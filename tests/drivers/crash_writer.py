"""Subprocess for test_crash: puts deterministic objects through a driver built from a
storage setting and says "acked N" after each put returns, until it is killed."""

import sys
from pathlib import Path

import anyio

from gobi.drivers import open_driver
from gobi.drivers.keys import KeyFile


def payload(i: int, size: int) -> bytes:
    seed = (i + 1).to_bytes(4, "big") * 1024
    return (seed * (size // len(seed) + 1))[:size]


async def main(setting: str, key_path: str, count: int, size: int) -> None:
    driver = open_driver(setting, keys=KeyFile.load_or_create(Path(key_path)))
    for i in range(count):
        await driver.put(f"v1/obj{i:03d}", payload(i, size))
        print(f"acked {i}", flush=True)
    await driver.close()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
