"""Container health check: exit 0 when this instance's /health answers 200.

A draining instance answers 503, so orchestrators stop routing to it at once.
"""

import os
import sys
import urllib.request

port = os.environ.get("GOBI_PORT", "8080")
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=3) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy"
    print(f"unhealthy: {exc}", file=sys.stderr)
    sys.exit(1)
