"""S3Prefix (sources/s3.py) driven directly against moto's S3 server: a prefix scanned into
an Entries table as a tree, byte ranges read, and objects replaced before or while read."""

from __future__ import annotations

import os

import pytest
from scanning import rows, scanned

from parbackup.entries import DIR, FILE
from parbackup.errors import SourceError, UsageError
from parbackup.sources.base import SourceChanged, identity_of
from parbackup.sources.registry import open_source, spec_for
from parbackup.sources.s3 import S3Prefix

OBJECTS = {
    "data/a.txt": b"hello",
    "data/sub/deep/b.bin": os.urandom(3 << 20),
    "data/sub/c.bin": os.urandom(100_000),
    "data/empty": b"",
    "data/marked/": b"",  # a "directory marker" object
    "data/a.txt/below-a-file": b"cannot be restored under a file",
    "data/twice//slash": b"an empty name part",
    "other/not-in-the-tree": b"x",
}


@pytest.fixture
def prefix(s3_server, request):
    """A bucket holding OBJECTS, and the source of its ``data`` prefix."""
    bucket = s3_server.bucket(request.node.name.replace("_", "-")[:50].lower().strip("-"))
    s3 = s3_server.client()
    for key, body in OBJECTS.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    source = open_source(spec_for(s3_server.url(bucket, "data")))
    assert isinstance(source, S3Prefix)
    with source:
        yield s3, bucket, source


def test_scan_synthesises_directories_from_keys(prefix):
    s3, bucket, source = prefix
    out, errors = scanned(source, index=2)
    top = f"/{bucket}/data"
    assert sorted(errors) == [
        (f"{top}/a.txt/below-a-file", "object key lies below another object's name"),
        (f"{top}/twice//slash", "object key cannot be a file path"),
    ]
    assert out.path(0) == top  # the root first
    got = rows(out)
    assert len(got) == len(out)
    dirs = {top, f"{top}/marked", f"{top}/sub", f"{top}/sub/deep"}
    files = {f"/{bucket}/{k}" for k in ("data/a.txt", "data/sub/deep/b.bin", "data/sub/c.bin")}
    files.add(f"{top}/empty")
    assert set(got) == dirs | files
    newest = 0  # of every object under the prefix: markers and refused keys count too
    for key in OBJECTS:
        path = f"/{bucket}/{key}"
        if not key.startswith("data/"):
            continue
        head = s3.head_object(Bucket=bucket, Key=key)
        mtime = int(head["LastModified"].timestamp()) * 10**9
        newest = max(newest, mtime)
        if path in files:
            i = got[path]
            assert (out.kind[i], out.size[i], out.mode[i]) == (FILE, len(OBJECTS[key]), 0o100644)
            assert out.mtime_ns[i] == out.ctime_ns[i] == mtime
    for path in dirs:
        i = got[path]
        assert (out.kind[i], out.mode[i], out.mtime_ns[i]) == (DIR, 0o040755, newest)
    for path, i in got.items():
        assert out.source[i] == 2
        if path != top:
            assert got[os.path.dirname(path)] < i  # a directory before what it holds


def test_read_ranges_of_an_object(prefix):
    _, bucket, source = prefix
    out, _ = scanned(source)
    path = f"/{bucket}/data/sub/deep/b.bin"
    i = rows(out)[path]
    data = OBJECTS["data/sub/deep/b.bin"]
    buf = bytearray(1 << 20)
    with source.open(out.path_bytes(i), identity_of(out, i)) as reader:  # as the mover does
        got, at = bytearray(), 0
        while n := reader.readinto(at, memoryview(buf)):
            got += buf[:n]
            at += n
        assert bytes(got) == data
        assert reader.readinto(777, memoryview(buf)[:50]) == 50
        assert buf[:50] == data[777:827]
        assert reader.readinto(len(data) - 3, memoryview(buf)) == 3
        assert reader.readinto(len(data), memoryview(buf)) == 0
        assert source.changes(identity_of(out, i), reader.identity()) == []
    with source.open(f"/{bucket}/data/empty") as reader:
        assert reader.readinto(0, memoryview(buf)) == 0
    assert source.fields == ("size", "mtime", "inode")  # inode: the ETag's digest


def test_object_changed_between_scan_and_read(prefix):
    s3, bucket, source = prefix
    out, _ = scanned(source)
    path = f"/{bucket}/data/sub/c.bin"
    i = rows(out)[path]
    s3.put_object(Bucket=bucket, Key="data/sub/c.bin", Body=b"changed")
    with (
        source.open(path, identity_of(out, i)) as reader,
        pytest.raises(SourceChanged, match=r"changed since the scan \(size"),
    ):
        reader.readinto(0, memoryview(bytearray(100)))  # not a byte handed out
    now = source.identity(path)
    assert now is not None and now.size == len(b"changed")


def test_object_replaced_while_read_raises_changed(prefix):
    s3, bucket, source = prefix
    out, _ = scanned(source)
    path = f"/{bucket}/data/sub/deep/b.bin"
    i = rows(out)[path]
    buf = bytearray(1 << 20)
    with source.open(path, identity_of(out, i)) as reader:
        assert reader.readinto(0, memoryview(buf)) == len(buf)
        # same size, possibly the same second: only the version tells them apart
        s3.put_object(Bucket=bucket, Key="data/sub/deep/b.bin", Body=os.urandom(3 << 20))
        with pytest.raises(SourceChanged, match="changed while being read"):
            reader.readinto(len(buf), memoryview(buf))


def test_object_that_shrinks_or_grows_while_read(prefix):
    s3, bucket, source = prefix
    out, _ = scanned(source)
    path = f"/{bucket}/data/sub/c.bin"
    i = rows(out)[path]
    expect = identity_of(out, i)
    buf = bytearray(1000)
    with source.open(path, expect) as reader:
        assert reader.readinto(0, memoryview(buf)) == 1000
        s3.put_object(Bucket=bucket, Key="data/sub/c.bin", Body=OBJECTS["data/sub/c.bin"][:5000])
        with pytest.raises(SourceChanged):
            reader.readinto(10_000, memoryview(buf))
        assert reader.identity() == expect  # the version read, all of it from one version
    now = source.identity(path)
    assert now is not None and now.size == 5000
    s3.put_object(Bucket=bucket, Key="data/a.txt", Body=b"hello, longer")
    with source.open(f"/{bucket}/data/a.txt") as reader:
        assert reader.identity().size == len(b"hello, longer")


def test_missing_object_bucket_and_paths_outside(prefix, s3_server):
    s3, bucket, source = prefix
    s3.delete_object(Bucket=bucket, Key="data/a.txt")
    reader = source.open(f"/{bucket}/data/a.txt")
    with pytest.raises(SourceError, match=r"^read: not found \(NoSuchKey\)$") as info:
        reader.readinto(0, memoryview(bytearray(10)))
    assert not isinstance(info.value, SourceChanged)
    assert source.identity(f"/{bucket}/data/a.txt") is None
    for outside in (f"/{bucket}/other/not-in-the-tree", f"/{bucket}/data", "/elsewhere/data/x"):
        with pytest.raises(SourceError, match="not in the source"):
            source.open(outside)
    nobucket = open_source(spec_for(s3_server.url("no-such-bucket", "data")))
    with nobucket, pytest.raises(SourceError, match=r"not found \(NoSuchBucket\)"):
        scanned(nobucket)


def test_client_is_lazy_closed_and_made_again(prefix):
    _, bucket, source = prefix
    assert source.s3 is None
    assert source.identity(f"/{bucket}/data/a.txt") is not None
    source.close()
    assert source.s3 is None
    with source.open(f"/{bucket}/data/a.txt") as reader:
        buf = bytearray(5)
        assert reader.readinto(0, memoryview(buf)) == 5 and buf == b"hello"


def test_a_whole_bucket_is_a_tree(s3_server):
    bucket = s3_server.bucket("whole-bucket")
    s3 = s3_server.client()
    for key in ("top.txt", "d/inner.txt"):
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    with open_source(spec_for(f"s3://{bucket}?endpoint={s3_server.endpoint}")) as source:
        out, errors = scanned(source)
        assert errors == [] and out.path(0) == f"/{bucket}"
        assert set(rows(out)) == {
            f"/{bucket}",
            f"/{bucket}/d",
            f"/{bucket}/d/inner.txt",
            f"/{bucket}/top.txt",
        }
        buf = bytearray(20)
        with source.open(f"/{bucket}/d/inner.txt") as reader:
            assert reader.readinto(0, memoryview(buf)) == len(b"d/inner.txt")
        assert bytes(buf[:11]) == b"d/inner.txt"


def test_options_the_source_does_not_use_are_usage_errors():
    with pytest.raises(UsageError, match=r"unknown options capacity, part for a s3 source"):
        open_source(spec_for("s3://bucket/p?part=5M&capacity=1G"))
    source = open_source(spec_for("s3://bucket/p?retries=many"))
    with source, pytest.raises(UsageError, match=r"^s3://bucket/p\?retries=many: bad option value"):
        scanned(source)  # the option is read when the client is made, before any request
