"""What a mover tells ``auto`` about its device (crypto/compress.py picks the level from
it): at a checkpoint, the device's part only, never the wait for the dispatcher to take
the batch of durable records (a busy dispatcher is neither the device nor zstd)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from parbackup.crypto.codec import CodecSpec
from parbackup.crypto.compress import AUTO
from parbackup.devices.registry import open_device
from parbackup.engine.messages import Begin, Durable, Label, MoverSpec
from parbackup.engine.mover import _Mover
from parbackup.entries import FILE
from parbackup.sources.base import SourceSpec


class SlowDispatcher:
    """The mover's end of a channel whose other end takes a while to take each batch of
    durable records; it notes what the mover had told ``auto`` of its device by then."""

    def __init__(self) -> None:
        self.mover: _Mover | None = None
        self.writing_at_durable: list[float] = []

    def send(self, msg: object) -> None:
        if isinstance(msg, Durable):
            assert self.mover is not None and self.mover.codec is not None
            self.writing_at_durable.append(self.mover.codec.compressor._writing)
            end = time.perf_counter() + 0.001  # the dispatcher is busy for a moment
            while time.perf_counter() < end:
                pass


def test_a_checkpoint_counts_the_device_not_the_dispatcher(tmp_path: Path) -> None:
    root, device = tmp_path / "src", tmp_path / "dev"
    root.mkdir()
    device.mkdir()
    data = b"a line of text to compress, again and again\n" * 20_000
    path = root / "file.txt"
    path.write_bytes(data)
    st = os.stat(path)
    channel = SlowDispatcher()
    spec = MoverSpec(
        0, str(device), (SourceSpec("tree", str(root), str(root)),), checkpoint_bytes=1
    )
    mover = _Mover(spec, channel)  # type: ignore[arg-type]
    channel.mover = mover
    mover.device = open_device(str(device))
    mover.device.open()
    mover.handle(Label())
    mover.handle(Begin(os.urandom(16), {}, CodecSpec(AUTO)))
    item = (
        1, 0, 0, len(data), FILE, len(data), st.st_mode, st.st_uid, st.st_gid,
        st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev, 0, os.fsencode(path), b"",
        None, b"",
    )  # fmt: skip
    mover.write_item(item)  # one record, then a checkpoint (checkpoint_bytes=1)
    assert mover.codec is not None
    compressor = mover.codec.compressor
    assert channel.writing_at_durable, "the checkpoint sent no Durable batch"
    # the device's seconds were told before the batch went to the dispatcher, and the
    # dispatcher's moment was not added after it
    assert channel.writing_at_durable[-1] > 0.0
    assert compressor._writing == channel.writing_at_durable[-1]
    mover.device.close()
