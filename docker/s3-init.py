"""One-shot job of docker-compose.yml (service ``s3-init``): create the S3 bucket(s) that
gobi's storage setting names, then exit 0.

It reads ``GOBI_STORAGE`` and the AWS keys exactly as the instances do (the image's
entrypoint turns ``*_FILE`` secrets into variables) and creates each bucket through gobi's
own S3 driver, so bucket, endpoint, region, addressing and keys cannot drift from what the
instances use. Idempotent: a bucket that already exists is fine. The S3 server may answer
its health check before it accepts writes, so transient errors are retried for a while.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from gobi.drivers.base import StorageError, TransientStorageError
from gobi.drivers.factory import Spec, build, parse_spec

#: how long a starting S3 server may keep failing before the job gives up
PATIENCE_S = float(os.environ.get("GOBI_S3_INIT_PATIENCE", "120"))


def s3_backends(spec: Spec) -> list[Spec]:
    if spec.is_backend:
        return [spec] if spec.name == "s3" else []
    return [b for child in spec.children for b in s3_backends(child)]


async def create(spec: Spec) -> None:
    driver = build(spec)
    try:
        deadline = time.monotonic() + PATIENCE_S
        while True:
            try:
                await driver.create_bucket()  # type: ignore[attr-defined]
                print(f"s3-init: bucket ready: {driver.describe()}")
                return
            except TransientStorageError as exc:
                if time.monotonic() > deadline:
                    raise
                print(f"s3-init: {driver.describe()} not ready yet ({exc}); retrying",
                      file=sys.stderr)
                await asyncio.sleep(2)
    finally:
        await driver.close()


def main() -> int:
    setting = os.environ.get("GOBI_STORAGE", "")
    backends = s3_backends(parse_spec(setting)) if setting else []
    if not backends:
        print("s3-init: GOBI_STORAGE names no s3:// storage; nothing to create", file=sys.stderr)
        return 2
    try:
        for spec in backends:
            asyncio.run(create(spec))
    except StorageError as exc:
        print(f"s3-init: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
