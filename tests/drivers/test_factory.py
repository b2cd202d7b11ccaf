"""Storage settings: the nested syntax, default encryption, and clear errors."""

from __future__ import annotations

import pytest

from gobi.drivers import SpecError, effective_spec, open_driver, parse_spec, walk
from gobi.drivers.encrypted import EncryptedDriver
from gobi.drivers.local import LocalDriver
from gobi.drivers.nfs import NfsDriver
from gobi.drivers.replicated import ReplicatedDriver
from gobi.drivers.s3 import S3Driver

pytestmark = pytest.mark.anyio


def test_parse_nested_settings():
    spec = parse_spec(" replicated( local:///a , encrypted(s3://b/p?endpoint=http://127.0.0.1:9000&region=eu),"
                      " quorum = 1, grace=500ms ) ")
    assert spec.name == "replicated" and spec.options == {"quorum": "1", "grace": "500ms"}
    assert [c.name for c in spec.children] == ["local", "encrypted"]
    assert spec.children[1].children[0].url == "s3://b/p?endpoint=http://127.0.0.1:9000&region=eu"
    assert parse_spec("/srv/blobs").url == "local:///srv/blobs"


@pytest.mark.parametrize("setting,expected", [
    ("local:///x", "encrypted(local:///x)"),
    ("replicated(local:///a, nfs:///b, quorum=1)",
     "replicated(encrypted(local:///a), encrypted(nfs:///b), quorum=1)"),
    ("encrypted(replicated(local:///a, local:///b))", "encrypted(replicated(local:///a, local:///b))"),
    ("replicated(encrypted(local:///a), encrypted(local:///b))",
     "replicated(encrypted(local:///a), encrypted(local:///b))"),
])
def test_encryption_is_on_by_default(setting, expected):
    assert str(effective_spec(setting, encrypt=True)) == expected
    assert str(effective_spec(setting, encrypt=False)) == str(parse_spec(setting))


def test_partly_encrypted_settings_are_refused():
    with pytest.raises(SpecError, match="not local:///b"):
        effective_spec("replicated(encrypted(local:///a), local:///b)", encrypt=True)
    effective_spec("replicated(encrypted(local:///a), local:///b)", encrypt=False)  # explicit


@pytest.mark.parametrize("setting,message", [
    ("ftp://x/y", "unknown storage driver 'ftp'"),
    ("zipped(local:///a)", "unknown storage wrapper 'zipped'"),
    ("replicated(local:///a, local:///b", r"expected ',' or '\)'"),
    ("replicated(local:///a) trailing", "unexpected"),
    ("local://host/a", "must not name a host"),
    ("local://relative", "must not name a host"),
    ("s3://b/p?bogus=1", "unknown s3 option 'bogus'"),
    ("s3://b/p?part_size=lots", "not a size"),
    ("replicated(local:///a, quorum=3)", "quorum must be between 1 and 1"),
    ("replicated(local:///a, speed=3)", "unknown replicated option 'speed'"),
    ("encrypted(local:///a, local:///b)", "exactly one"),
    ("nothing", "no scheme"),
])
def test_bad_settings_say_what_is_wrong(tmp_path, setting, message):
    with pytest.raises(ValueError, match=message):
        open_driver(setting, keys=None)


def test_encrypted_needs_the_key_file(tmp_path):
    with pytest.raises(SpecError, match="key file"):
        open_driver(f"local://{tmp_path}", encrypt=True)


def test_secrets_are_redacted(keyfile):
    setting = "s3://b/p?endpoint=http://127.0.0.1:1&access_key=AK&secret_key=SUPERSECRET"
    assert "SUPERSECRET" not in str(effective_spec(setting, encrypt=True))
    driver = open_driver(setting, keys=keyfile, encrypt=True)
    assert "SUPERSECRET" not in repr(driver) and "SUPERSECRET" not in driver.describe()


async def test_builds_the_whole_tree(tmp_path, keyfile):
    (tmp_path / "share").mkdir()
    setting = (f"replicated(local://{tmp_path}/a, nfs://{tmp_path}/share, "
               "s3://bkt/pre?endpoint=http://127.0.0.1:1&part_size=5MiB&multipart_threshold=10MiB, quorum=2, hedge=2s)")
    driver = open_driver(setting, keys=keyfile, encrypt=True)
    kinds = [type(d) for d in walk(driver)]
    assert kinds == [ReplicatedDriver, EncryptedDriver, LocalDriver, EncryptedDriver, NfsDriver,
                     EncryptedDriver, S3Driver]
    assert driver.quorum == 2 and driver.hedge == 2.0
    s3 = next(d for d in walk(driver) if isinstance(d, S3Driver))
    assert (s3.bucket, s3.prefix, s3.part_size, s3.multipart_threshold) == ("bkt", "pre/", 5 << 20, 10 << 20)
    await driver.close()
