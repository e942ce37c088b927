"""S3 against moto's server: multipart uploads, aborts, endpoints, lost servers, secrets."""

from __future__ import annotations

import random
import sys

import pytest

from conftest import make_tree, restored_root, run_cli, snapshot
from parbackup.devices.registry import device_class, open_device
from parbackup.errors import DeviceError, DeviceMissingError, UsageError
from servers import S3Server

DATA = random.Random(11).randbytes(12 * 1024 * 1024 + 777)


def opened(url: str):
    dev = open_device(url)
    dev.open()
    return dev


def test_large_object_goes_up_in_parts(s3_server):
    bucket = s3_server.bucket("multi")
    dev = opened(s3_server.url(bucket, "p", "part=5MiB"))
    writer = dev.create("vol")
    for at in range(0, len(DATA), 1_000_000):
        writer.write(DATA[at : at + 1_000_000])
    writer.commit()
    head = s3_server.client().head_object(Bucket=bucket, Key="p/vol")
    assert head["ETag"].strip('"').endswith("-3")  # three parts: 5 + 5 + 2 MiB
    assert dev.read("vol", 6_000_000, 100_000) == DATA[6_000_000:6_100_000]
    with dev.open_read("vol") as stream:
        assert stream.read() == DATA
    dev.close()


def test_abort_leaves_no_upload_behind(s3_server):
    bucket = s3_server.bucket("aborts")
    dev = opened(s3_server.url(bucket, "", "part=5MiB"))
    writer = dev.create("gone")
    writer.write(DATA[: 6 * 1024 * 1024])
    writer.abort()
    client = s3_server.client()
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert dev.list("") == []
    dev.close()


def test_endpoint_from_environment(s3_server, monkeypatch):
    bucket = s3_server.bucket("envpoint")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    dev = opened(f"s3://{bucket}/x")
    dev.put("hello", b"world")
    assert dev.get("hello") == b"world"
    dev.close()


def test_missing_bucket(s3_server):
    dev = open_device(s3_server.url("no-such-bucket-here"))
    with pytest.raises(DeviceMissingError, match="no such bucket"):
        dev.open()


@pytest.mark.slow
def test_stopped_server_mid_upload_is_a_device_error(s3_server):
    own = S3Server().start()
    try:
        own.bucket("stopping")
        dev = opened(own.url("stopping", "", "part=5MiB&retries=1&timeout=5"))
        writer = dev.create("vol")
        writer.write(DATA[: 5 * 1024 * 1024])  # one part is up
        own.stop()
        with pytest.raises(DeviceError):
            writer.write(DATA[: 6 * 1024 * 1024])
            writer.commit()
        writer.abort()
        dev.close()
    finally:
        own.stop()


def test_missing_boto3_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "boto3", None)
    monkeypatch.delitem(sys.modules, "parbackup.devices.s3", raising=False)
    with pytest.raises(UsageError, match=r"pip install 'parbackup\[s3\]'"):
        device_class("s3")


@pytest.mark.slow
def test_cli_round_trip_keeps_secrets_out(s3_server, tmp_path):
    secret = f"very-secret-{random.getrandbits(32):08x}"
    env = {"AWS_SECRET_ACCESS_KEY": secret}
    tree = make_tree(tmp_path / "src", seed=8, files=15, big=(1_500_000,))
    bucket = s3_server.bucket("cli")
    urls = [s3_server.url(bucket, "one"), s3_server.url(bucket, "two")]
    cat = tmp_path / "cat.sqlite"
    r = run_cli("backup", str(tree), "-d", urls[0], "-d", urls[1], "--catalog", str(cat), env=env)
    assert r.code == 0, r.out + r.err
    out = tmp_path / "out"
    r2 = run_cli("restore", "--target", str(out), "--catalog", str(cat), env=env)
    assert r2.code == 0, r2.out + r2.err
    assert snapshot(restored_root(out, tree)) == snapshot(tree)
    assert secret not in r.out + r.err + r2.out + r2.err
    assert secret.encode() not in cat.read_bytes()
