"""CPU of the catalog-row identity check restore and verify make (docs/GUARANTEES.md
"A catalog damaged on its disk"): the controller's ``identities`` per file, a reader's
``identity`` of a record header. Run: .venv/bin/python bench/identity_cost.py
"""

import time

from parbackup.model import FileEntry, Kind
from parbackup.readback.messages import identity
from parbackup.readback.select import identities

n = 200_000
files = [
    (
        i,
        FileEntry(
            f"/srv/data/dir{i % 1000}/file{i}.bin",
            Kind.FILE,
            1000 + i,
            0o100644,
            1_700_000_000_000_000_000 + i,
            1000,
            1000,
        ),
    )
    for i in range(n)
]
best = min(
    (lambda t: (identities(files), time.process_time() - t)[1])(time.process_time())
    for _ in range(5)
)
print(f"identities: {best / n * 1e6:.2f} us per file ({n} files, best of 5)")
hdr = (b"/srv/data/dir1/file1.bin", 0o100644, 1000, 1000, 1_700_000_000_000_000_000)
t = time.process_time()
for _ in range(n):
    identity(*hdr)
print(f"identity of a header: {(time.process_time() - t) / n * 1e6:.2f} us per record")
