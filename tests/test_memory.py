"""W3: memory stays bounded whatever the file size (a 4 GiB file under 200 MB peak RSS)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from conftest import SRC, backup_imports

GIB = 1 << 30


_MEASURE = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(f"maxrss={usage.ru_maxrss}", file=sys.stderr)
sys.exit(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.slow
def test_4_gib_file_backs_up_under_200_mb_rss():
    shm = "/dev/shm"
    if not os.path.isdir(shm) or shutil.disk_usage(shm).free < 6 * GIB:
        pytest.skip("needs a tmpfs at /dev/shm with 6 GiB free for the two devices")
    work = tempfile.mkdtemp(dir=shm, prefix="pb-mem-")
    try:
        src = os.path.join(work, "src")
        os.makedirs(src)
        with open(os.path.join(src, "huge.img"), "wb") as fh:
            fh.truncate(4 * GIB)  # sparse: reads cost no disk, bytes still flow through
            fh.seek(GIB)
            fh.write(os.urandom(1 << 20))
        devs = [os.path.join(work, f"d{i}") for i in range(2)]
        for d in devs:
            os.makedirs(d)
        cmd = [
            sys.executable,
            "-m",
            "parbackup",
            "backup",
            src,
            "-d",
            devs[0],
            "-d",
            devs[1],
            "--catalog",
            os.path.join(work, "c.sqlite"),
            "--json",
        ]
        # Launched through a small process that forks it: a child started straight from
        # pytest (vfork) inherits pytest's own peak RSS in ru_maxrss.
        proc = subprocess.run(
            [sys.executable, "-c", _MEASURE, *cmd],
            env={**os.environ, "PYTHONPATH": SRC},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        err = proc.stderr.decode()
        assert proc.returncode == 0, err
        peak_mb = int(err.rsplit("maxrss=", 1)[1]) / 1024
        assert peak_mb < 200, f"peak RSS {peak_mb:.0f} MB"
        written = sum(
            os.path.getsize(os.path.join(dp, f))
            for d in devs
            for dp, _, fs in os.walk(d)
            for f in fs
        )
        assert written > 4 * GIB, "the whole file went through"
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_a_plain_backup_never_loads_openssl(tmp_path):
    """cryptography (OpenSSL, about 8 MB in each process) is imported only by a set that
    encrypts or reads an encrypted one: neither the dispatcher nor a mover of a plain
    backup loads it, nor hmac's OpenSSL hashes (a million files' summed peak RSS, issue
    10). Every process's imports
    are listed by Python itself (PYTHONPROFILEIMPORTTIME), the movers' stderr kept."""
    imported = backup_imports(tmp_path)
    assert not [m for m in imported if m.split(".")[0] == "cryptography"]
    # nor hmac's OpenSSL hashes (3.6 MB), in the dispatcher or a mover
    assert "_hashlib" not in imported
