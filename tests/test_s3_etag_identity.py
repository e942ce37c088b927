"""An S3 object rewritten within the second it was seen, at the same size, is a change.

S3 tells whole-second LastModified only, so size and mtime cannot tell such a rewrite
from the object the scan saw; its ETag can (sources/s3.py ``etag_number``). Real moto
server; the "same second" is made exact by giving the second scan's mtime the first's,
since the server cannot be asked for a LastModified.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from parbackup.entries import Entries
from parbackup.plan.reuse import same_metadata
from parbackup.sources.base import SourceChanged, identity_of
from parbackup.sources.registry import open_source, spec_for


def _scan(url: str) -> Entries:
    out = Entries()
    source = open_source(spec_for(url))
    try:
        source.scan(out, 0, lambda path, why: pytest.fail(f"{path}: {why}"))
    finally:
        source.close()
    return out


def _row(entries: Entries, name: str) -> int:
    return next(i for i in range(len(entries)) if entries.path(i).endswith(name))


def test_a_same_size_rewrite_changes_the_objects_identity(s3_server):
    bucket = s3_server.bucket("etags")
    s3 = s3_server.client()
    s3.put_object(Bucket=bucket, Key="d/a.txt", Body=b"hello")
    s3.put_object(Bucket=bucket, Key="d/b.txt", Body=b"steady")
    url = s3_server.url(bucket, "d")
    first = _scan(url)
    s3.put_object(Bucket=bucket, Key="d/a.txt", Body=b"HELLO")  # same size
    s3.put_object(Bucket=bucket, Key="d/b.txt", Body=b"steady")  # same bytes again
    second = _scan(url)

    a1, a2 = _row(first, "/a.txt"), _row(second, "/a.txt")
    old = identity_of(first, a1)
    new = identity_of(second, a2)._replace(mtime_ns=old.mtime_ns, ctime_ns=old.ctime_ns)
    assert (old.size, new.size) == (5, 5)
    source = open_source(spec_for(url))
    try:
        assert source.changes(old, new) == ["inode"]
        # the incremental's test of "unchanged" (plan/reuse.py) sees it too
        entry = replace(second.entry(a2), mtime_ns=old.mtime_ns, ctime_ns=old.ctime_ns)
        assert not same_metadata(entry, first.entry(a1))
        # an object put again with the same bytes keeps its ETag: still reused
        b1, b2 = _row(first, "/b.txt"), _row(second, "/b.txt")
        then = first.mtime_ns[b1]
        steady = replace(second.entry(b2), mtime_ns=then, ctime_ns=then)
        assert same_metadata(steady, first.entry(b1))

        # a read of the object as the first scan saw it, same second and size: refused
        with pytest.raises(SourceChanged), source.open(first.path(a1), old) as reader:
            reader.readinto(0, memoryview(bytearray(5)))
        with source.open(second.path(a2), identity_of(second, a2)) as reader:
            buf = bytearray(5)
            assert reader.readinto(0, memoryview(buf)) == 5 and bytes(buf) == b"HELLO"
    finally:
        source.close()


def test_an_etag_is_one_version_however_it_is_quoted_or_left_out(s3_server):
    """S3-compatible servers differ in how they tell an ETag: quoted or not, a weak
    ``W/`` mark, none at all in a listing. A listing and a GET of one version must give
    one identity, or every read after the scan would be refused as a change."""
    from parbackup.sources.base import Identity
    from parbackup.sources.s3 import etag_number

    tag = "9b2cf535f27731c974343645a3985328-3"  # a multipart ETag, as a listing tells it
    assert etag_number(f'"{tag}"') == etag_number(tag) == etag_number(f'W/"{tag}"') != 0
    assert etag_number("") == 0 == etag_number('""'), "no ETag: no number, as a local file"
    bucket = s3_server.bucket("etag-forms")
    source = open_source(spec_for(s3_server.url(bucket, "")))
    try:
        seen = Identity(5, 10**9, 10**9, etag_number(tag))
        assert source.changes(Identity(5, 10**9, 10**9, 0), seen) == [], "listing had none"
        assert source.changes(seen, seen._replace(ino=0)) == [], "the GET told none"
        assert source.changes(seen, seen._replace(ino=etag_number("other"))) == ["inode"]
    finally:
        source.close()
