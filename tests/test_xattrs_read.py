"""Reading extended attributes (parbackup/xattrs.py ``read``): by name inside an open
directory (``listxattrat``/``getxattrat``, or ``/proc/self/fd`` on older kernels) it
finds the same as by path, never follows a symlink, and reports no attributes on a
file system that has none."""

from __future__ import annotations

import os

from parbackup import xattrs


def test_read_in_a_directory_equals_read_by_path_and_never_follows_links(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"x")
    os.setxattr(f, "user.b", b"2")
    os.setxattr(f, "user.a", b"")
    os.setxattr(f, "trusted.t", bytes(range(256)))
    os.symlink("f", tmp_path / "link")
    os.setxattr(tmp_path / "link", "trusted.own", b"L", follow_symlinks=False)
    (tmp_path / "plain").write_bytes(b"")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in (b"f", b"link", b"plain"):
            by_fd = xattrs.read(name, fd)
            assert by_fd == xattrs.read(os.fsencode(tmp_path) + b"/" + name), name
        payload, warning = xattrs.read(b"f", fd)
        assert warning == ""
        assert xattrs.decode(payload) == {
            b"trusted.t": bytes(range(256)),
            b"user.a": b"",
            b"user.b": b"2",
        }
        assert xattrs.decode(xattrs.read(b"link", fd)[0]) == {b"trusted.own": b"L"}
        assert xattrs.read(b"plain", fd) == (b"", "")
        assert xattrs.read(b"missing", fd) == (b"", "")  # its data read reports it
    finally:
        os.close(fd)
