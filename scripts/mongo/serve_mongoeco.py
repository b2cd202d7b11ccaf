"""Serve mongoeco's MongoDB wire protocol on 127.0.0.1 for tests (mongoeco has no CLI).

usage: python serve_mongoeco.py PORT [memory|sqlite:PATH]

PORT 0 picks a free port. Prints one line ``mongoeco ready at mongodb://…`` once it
accepts connections, then serves until SIGTERM/SIGINT. Runs in its own virtualenv on
Python >= 3.13 (mongoeco needs it); see scripts/bootstrap.sh and docs/scale-out.md.
"""

import asyncio
import signal
import sys

from mongoeco.engines import MemoryEngine, SQLiteEngine
from mongoeco.wire import AsyncMongoEcoProxyServer


async def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    spec = sys.argv[2] if len(sys.argv) > 2 else "memory"
    engine = MemoryEngine() if spec == "memory" else SQLiteEngine(spec.split(":", 1)[1])
    server = AsyncMongoEcoProxyServer(engine=engine, host="127.0.0.1", port=port)
    addr = await server.start()
    print(f"mongoeco ready at {addr.uri} engine={spec}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.close()


if __name__ == "__main__":
    asyncio.run(main())
