"""A writer killed with SIGKILL in the middle of puts loses no acknowledged object and
leaves no partial one: every key is absent or complete, and leftovers (temp files,
multipart uploads) are invisible and swept by maintenance."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gobi.drivers import ObjectNotFound, open_driver
from gobi.drivers.keys import KeyFile

from .conftest import BUCKET
from .crash_writer import payload

pytestmark = pytest.mark.anyio

SIZE = 12 * 1024 * 1024 + 77   # multipart on s3 (5 MiB parts), many segments encrypted
COUNT = 40


def settings(tmp_path: Path, request) -> dict[str, str]:
    return {
        "local": f"local://{tmp_path}/blobs",
        "nfs": f"nfs://{tmp_path}",
        "encrypted(local)": f"encrypted(local://{tmp_path}/blobs)",
        "encrypted(s3-moto)": "encrypted(s3://{b}/crash?endpoint={url}&access_key=test&secret_key=testtest"
                              "&part_size=5MiB&multipart_threshold=6MiB)",
    }


@pytest.mark.parametrize("case", ["local", "nfs", "encrypted(local)", "encrypted(s3-moto)"])
async def test_sigkill_mid_write(tmp_path, request, case):
    setting = settings(tmp_path, request)[case]
    if "s3" in case:
        setting = setting.format(b=BUCKET, url=request.getfixturevalue("moto_endpoint").url)
    key_path = tmp_path / "master.key"
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("crash_writer.py")), setting,
                             str(key_path), str(COUNT), str(SIZE)], stdout=subprocess.PIPE, text=True)
    acked = []
    try:
        for line in proc.stdout:
            acked.append(int(line.split()[1]))
            if len(acked) == 2:
                break
        time.sleep(random.uniform(0.0, 0.3))  # somewhere inside the next put
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert len(acked) == 2, "the writer did not get going"
    driver = open_driver(setting, keys=KeyFile.load(key_path))
    try:
        complete = []
        for i in range(COUNT):
            try:
                data = await driver.get(f"v1/obj{i:03d}")
            except ObjectNotFound:
                continue
            assert data == payload(i, SIZE), f"object {i} is partial or wrong"
            complete.append(i)
        assert set(acked) <= set(complete)
        assert complete == list(range(len(complete)))  # a prefix: nothing after the kill
        listed = [info.key async for info in driver.list("v1/")]
        assert listed == [f"v1/obj{i:03d}" for i in complete]
        # leftovers of the killed put are swept by maintenance
        inner = driver.inner if hasattr(driver, "inner") else driver
        if hasattr(inner, "sweep_temp_files"):
            await inner.sweep_temp_files(max_age=0)
            assert not [p for p in tmp_path.rglob("*") if "#" in p.name]
        if hasattr(inner, "abort_stale_uploads"):
            await inner.abort_stale_uploads(max_age=0)
            client = request.getfixturevalue("moto_endpoint").client()
            uploads = client.list_multipart_uploads(Bucket=BUCKET, Prefix="crash/").get("Uploads", [])
            assert uploads == []
    finally:
        await driver.close()
