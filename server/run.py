"""Running the server process: bind, announce, serve until SIGTERM, exit 0.

The listening socket is bound here rather than by Sanic so that ``--port 0`` works and the
real address can be announced on stdout (``gobi server listening on http://…``), which
scripts and tests wait for.
"""

from __future__ import annotations

import logging
import socket
import sys
from typing import Any

from sanic import Sanic

from .app import create_app
from .config import ServerConfig
from .connections import GuardedProtocol


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def run_server(config: ServerConfig) -> int:
    # Sanic configures its own loggers; ours follow the same format on stderr.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("gobi").addHandler(handler)
    logging.getLogger("gobi").setLevel(logging.INFO)
    try:
        sock = _bind(config.host, config.port)
    except OSError as exc:
        print(f"gobi: cannot listen on {config.host}:{config.port}: {exc.strerror}", file=sys.stderr)
        return 1
    port = sock.getsockname()[1]
    host = f"[{config.host}]" if ":" in config.host else config.host
    app = create_app(config)

    @app.after_server_start
    async def _announce(app: Sanic) -> None:
        print(f"gobi server listening on http://{host}:{port}", flush=True)

    # Sanic's own access log stays off: request_log writes one line per request instead.
    app.run(sock=sock, single_process=True, access_log=False, motd=False, protocol=GuardedProtocol)
    return 0
