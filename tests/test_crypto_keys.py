"""The key model, passphrase sources, the record codec and its known answers (issue 13)."""

from __future__ import annotations

import io
import json
import os
import stat
import sys
from pathlib import Path

import pytest
from blake3 import blake3

from conftest import run_cli
from parbackup.crypto import aead
from parbackup.crypto.codec import FLAG_SEALED, FLAG_ZSTD, Codec, CodecSpec, Place, RecordMeta
from parbackup.crypto.compress import (
    AUTO,
    AUTO_FAST,
    AUTO_LADDER,
    AUTO_LEVEL,
    FAST,
    LEAP,
    OFF,
    THREADED,
    WINDOW,
    Compressor,
    choose,
    cpu_times,
    decompress,
    idle_cores,
    parse_compression,
)
from parbackup.crypto.keys import KeyFile, key_path
from parbackup.crypto.passphrase import PassphraseSource
from parbackup.crypto.sealedfile import CHUNK, open_file, seal_file
from parbackup.errors import FormatError, KeyUnlockError, TamperedError, UsageError

MASTER = bytes(range(32))
SET = bytes.fromhex("00112233445566778899aabbccddeeff")
VOL = bytes.fromhex("ffeeddccbbaa99887766554433221100")
LABEL = bytes.fromhex("0123456789abcdef0123456789abcdef")
META = RecordMeta(0o100644, 1000, 1000, 1_700_000_000_000_000_000, b"dir/file.txt", b"")


def encode(codec: Codec, payload: bytes, **kw) -> tuple[int, bytes]:
    args = dict(set_id=SET, file_id=7, offset=0, file_size=len(payload), kind=1, meta=META)
    args.update(kw)
    args.setdefault("place", Place(LABEL, VOL))
    flags, stored = codec.encode(payload, **args)
    return flags, bytes(stored)


def decode(codec: Codec, stored: bytes, flags: int, size: int, **kw):
    args = dict(set_id=SET, file_id=7, offset=0, file_size=size, kind=1, what="test")
    args.update(kw)
    args.setdefault("place", Place(LABEL, VOL))
    return codec.decode(stored, flags=flags, size=size, **args)


# -- keys -----------------------------------------------------------------------------------
def test_key_file_round_trip_and_wrong_passphrase(tmp_path: Path) -> None:
    keyfile, master = KeyFile.create(b"correct horse")
    path = tmp_path / "cat.sqlite.key"
    keyfile.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_bytes()
    assert master not in text and master.hex().encode() not in text
    loaded = KeyFile.load(path)
    assert loaded is not None and loaded.key_id == keyfile.key_id
    assert loaded.unlock(b"correct horse") == (master, 1)
    with pytest.raises(KeyUnlockError, match="wrong passphrase"):
        loaded.unlock(b"battery staple")


def test_rotation_keeps_the_master_key() -> None:
    keyfile, master = KeyFile.create(b"one")
    keyfile.add(master, b"two")
    assert keyfile.unlock(b"two") == (master, 2)
    keyfile.remove(1)
    with pytest.raises(KeyUnlockError):
        keyfile.unlock(b"one")
    assert keyfile.unlock(b"two")[0] == master
    with pytest.raises(UsageError, match="last passphrase"):
        keyfile.remove(2)


def test_a_slot_moved_to_another_key_does_not_open(tmp_path: Path) -> None:
    a, _ = KeyFile.create(b"pw")
    b, _ = KeyFile.create(b"pw")
    b.slots = a.slots  # the wrapped key is bound to its key id
    with pytest.raises(KeyUnlockError):
        b.unlock(b"pw")


@pytest.mark.parametrize(
    "bad", [b"", b"{}", b"not json", b'{"format": "parbackup-key", "version": 1}']
)
def test_malformed_key_file_is_a_clear_error(bad: bytes) -> None:
    with pytest.raises(KeyUnlockError, match="key file"):
        KeyFile.from_json(bad, "key file")


# -- passphrase sources ---------------------------------------------------------------------
def test_passphrase_sources_in_order(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_bytes(b"from file\nsecond line\n")
    g = tmp_path / "pw2"
    g.write_bytes(b"from env file\n")
    env = {"PARBACKUP_PASSWORD_FILE": str(g), "PARBACKUP_PASSWORD": "from env"}
    assert PassphraseSource(file=str(f)).get(None, env) == b"from file"
    cmd = f"{sys.executable} -c \"print('from command')\""
    assert PassphraseSource(command=cmd).get(None, env) == b"from command"
    assert PassphraseSource().get(None, env) == b"from env file"
    assert PassphraseSource().get(None, {"PARBACKUP_PASSWORD": "from env"}) == b"from env"
    assert PassphraseSource().get(lambda: b"typed", {}) == b"typed"
    with pytest.raises(UsageError, match="passphrase is needed"):
        PassphraseSource().get(None, {})
    with pytest.raises(KeyUnlockError, match="exit status 3"):
        PassphraseSource(command=f"{sys.executable} -c 'exit(3)'").get(None, {})


# -- codec ----------------------------------------------------------------------------------
def test_known_answer_record_encryption() -> None:
    """Fixed master key, set, volume, place and payload give these exact bytes; any change
    to the key derivation, nonce or associated data changes them (FORMAT.md, 'Keys')."""
    codec = Codec(CodecSpec(OFF, MASTER, b"k" * 16), nonces=lambda: bytes(range(12)))
    flags, stored = encode(codec, b"hello, parbackup\n")
    assert flags == FLAG_SEALED and stored[:12] == bytes(range(12))
    assert blake3(stored).hexdigest()[:32] == KAT_RECORD
    assert codec.digest(b"hello, parbackup\n").hex()[:32] == KAT_DIGEST
    meta, data = decode(codec, stored, flags, 17)
    assert bytes(data) == b"hello, parbackup\n" and meta == META
    # the same answer computed from the primitives, independently of the codec
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key = aead.derive(MASTER, b"parbackup volume" + VOL, salt=SET)
    aad = aead.record_aad(SET, 7, 0, 17, 17, len(stored), 1, FLAG_SEALED, LABEL, VOL)
    plain = AESGCM(key).decrypt(bytes(range(12)), stored[12:], aad)
    assert plain.endswith(b"hello, parbackup\n") and b"dir/file.txt" in plain


KAT_RECORD = "2cfca6c161511eb5b9e729fd3a99ce0b"
KAT_DIGEST = "bc331ac708cd86c7cd636553dc193ad4"


@pytest.mark.parametrize(
    "change",
    [
        {"file_id": 8},
        {"offset": 4096},
        {"set_id": bytes(16)},
        {"kind": 2},
        {"place": Place(bytes(16), VOL)},
        {"place": Place(LABEL, bytes(16))},
    ],
)
def test_record_bound_to_file_set_and_place(change: dict) -> None:
    codec = Codec(CodecSpec(OFF, MASTER, b"k" * 16))
    flags, stored = encode(codec, b"x" * 1000)
    with pytest.raises(TamperedError, match="authentication failed"):
        decode(codec, stored, flags, 1000, **change)


def test_flipped_byte_and_wrong_key_fail() -> None:
    codec = Codec(CodecSpec(AUTO, MASTER, b"k" * 16))
    flags, stored = encode(codec, b"text " * 1000)
    assert flags == FLAG_SEALED | FLAG_ZSTD and len(stored) < 5000
    for at in (0, len(stored) // 2, len(stored) - 1):
        bad = bytearray(stored)
        bad[at] ^= 1
        with pytest.raises(TamperedError):
            decode(codec, bytes(bad), flags, 5000)
    other = Codec(CodecSpec(AUTO, bytes(32), b"k" * 16))
    with pytest.raises(TamperedError):
        decode(other, stored, flags, 5000)
    with pytest.raises(FormatError, match="no key"):
        decode(Codec(CodecSpec(AUTO)), stored, flags, 5000)


def test_compression_auto_on_random_and_text() -> None:
    codec = Codec(CodecSpec(AUTO))
    text = b"the quick brown fox jumps over the lazy dog\n" * 2000
    flags, stored = encode(codec, text)
    assert flags == FLAG_ZSTD and len(stored) < len(text) // 10
    assert bytes(decode(codec, stored, flags, len(text))[1]) == text
    noise = os.urandom(100_000)
    flags, stored = encode(codec, noise, file_id=9)
    assert flags == 0 and stored == noise  # stored as it is, never larger
    # auto gives up on the rest of that file; a fixed level keeps trying every record
    assert encode(codec, text, file_id=9)[0] == 0
    assert encode(Codec(CodecSpec(3)), noise, file_id=9)[0] == 0
    assert encode(Codec(CodecSpec(3)), text, file_id=9)[0] == FLAG_ZSTD
    # saving under 1/32 is not worth a decompression on every restore: auto stores it
    # as it is (and gives up on the file); a fixed level keeps any saving
    barely = os.urandom(100_000) + b"a" * 2_000
    assert encode(codec, barely, file_id=10)[0] == 0
    assert encode(codec, text, file_id=10)[0] == 0
    flags, stored = encode(Codec(CodecSpec(3)), barely, file_id=10)
    assert flags == FLAG_ZSTD and len(barely) * 31 // 32 < len(stored) < len(barely)


def test_damaged_compressed_payload_is_a_format_error() -> None:
    codec = Codec(CodecSpec(AUTO))
    text = b"abc" * 10000
    flags, stored = encode(codec, text)
    with pytest.raises(FormatError):
        decode(codec, stored[:-5] + b"xxxxx", flags, len(text))


def test_nonces_differ_between_records() -> None:
    codec = Codec(CodecSpec(OFF, MASTER, b"k" * 16))
    a = encode(codec, b"same payload")[1]
    b = encode(codec, b"same payload")[1]
    assert a[:12] != b[:12] and a[12:] != b[12:]


def test_codec_spec_repr_hides_the_key() -> None:
    spec = CodecSpec(AUTO, MASTER, b"k" * 16)
    assert MASTER.hex() not in repr(spec) and repr(MASTER) not in repr(spec)
    assert "MASTER" not in repr(Codec(spec))


def test_parse_compression() -> None:
    assert parse_compression("off") == OFF and parse_compression("auto") == AUTO
    assert parse_compression("9") == 9
    for bad in ("0", "20", "fast"):
        with pytest.raises(UsageError):
            parse_compression(bad)


# -- the key command ------------------------------------------------------------------------
@pytest.mark.slow
def test_key_command_rotates_without_showing_secrets(tmp_path: Path) -> None:
    catalog = tmp_path / "cat.sqlite"
    keyfile, master = KeyFile.create(b"first")
    keyfile.save(key_path(catalog))
    (tmp_path / "p1").write_text("first\n")
    (tmp_path / "p2").write_text("second\n")
    base = ["--catalog", str(catalog)]
    out = run_cli("key", "list", *base, "--json")
    assert out.code == 0, out.err
    assert [s["slot"] for s in json.loads(out.out)["slots"]] == [1]
    wrong = run_cli("key", "add", *base, "--password-file", str(tmp_path / "p2"),
                    "--new-password-file", str(tmp_path / "p2"))  # fmt: skip
    assert wrong.code == 1 and "wrong passphrase" in wrong.err
    added = run_cli("key", "add", *base, "--password-file", str(tmp_path / "p1"),
                    "--new-password-file", str(tmp_path / "p2"))  # fmt: skip
    assert added.code == 0, added.err
    removed = run_cli("key", "remove", "1", *base, "--json",
                      env={"PARBACKUP_PASSWORD": "second"})  # fmt: skip
    assert removed.code == 0, removed.err
    after = KeyFile.load(key_path(catalog))
    assert after is not None and after.unlock(b"second") == (master, 2)
    for text in (out.out, added.out, removed.out, added.err):
        assert master.hex() not in text and "second" not in text
    missing = run_cli("key", "list", "--catalog", str(tmp_path / "none.sqlite"))
    assert missing.code == 1 and "no key" in missing.err


# -- sealed files (catalog copies) ----------------------------------------------------------
@pytest.mark.parametrize("size", [0, 5, CHUNK, CHUNK * 2 + 7])
def test_sealed_file_round_trip(size: int) -> None:
    data = os.urandom(size)
    out = io.BytesIO()
    seal_file(io.BytesIO(data), out, MASTER, b"k" * 16)
    back = io.BytesIO()
    open_file(io.BytesIO(out.getvalue()), back, MASTER, "copy")
    assert back.getvalue() == data


def test_sealed_file_tampering() -> None:
    data = os.urandom(CHUNK * 2 + 100)
    out = io.BytesIO()
    seal_file(io.BytesIO(data), out, MASTER, b"k" * 16)
    sealed = out.getvalue()
    flipped = bytearray(sealed)
    flipped[len(sealed) // 2] ^= 1
    first_chunk_end = 38 + 4 + CHUNK + 16
    for bad in (bytes(flipped), sealed[:first_chunk_end], sealed[:-1]):
        with pytest.raises((TamperedError, FormatError)):
            open_file(io.BytesIO(bad), io.BytesIO(), MASTER, "copy")
    with pytest.raises(TamperedError):
        open_file(io.BytesIO(sealed), io.BytesIO(), bytes(32), "copy")


def test_schema_3_catalog_gains_the_stored_column(tmp_path: Path) -> None:
    """A catalog from before version-4 records (no records.stored) opens, migrates, and
    its records read back as storing their size (stored -1)."""
    import sqlite3

    from oldcatalog import sqlite_to_schema_4
    from parbackup.catalog import Catalog
    from parbackup.catalog.schema import SCHEMA_VERSION
    from parbackup.model import RecordRef

    path = tmp_path / "v3.sqlite"
    set_hex = "ab" * 16
    with Catalog(str(path)) as c:
        c.begin_set(set_hex, strategy="fill", order="asc", threshold=1, sources=["/s"])
        c.add_records(set_hex, [(0, RecordRef("l" * 32, "sets/v.pbv", 56, 140, 0, 10, b"x"))])
    sqlite_to_schema_4(str(path))
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE records DROP COLUMN stored")
    db.execute("UPDATE meta SET value='3' WHERE key='schema'")
    db.commit()
    db.close()
    with Catalog(str(path)) as c:
        assert c.meta("schema") == str(SCHEMA_VERSION) == "5"
        ((fid, ref),) = list(c.records(set_hex))
        assert (fid, ref.size, ref.stored, ref.length) == (0, 10, -1, 10)


def test_a_frame_claiming_another_size_is_refused_before_allocating() -> None:
    import zstandard

    from parbackup.crypto.compress import decompress

    frame = zstandard.ZstdCompressor(level=1).compress(b"a" * 5000)
    with pytest.raises(FormatError, match="claims 5000 bytes"):
        decompress(frame, 1000, "record")
    with pytest.raises(FormatError, match="damaged compressed payload"):
        decompress(b"not a zstd frame", 10, "record")
    assert decompress(frame, 5000, "record") == b"a" * 5000


def test_key_file_asking_for_huge_scrypt_memory_is_refused() -> None:
    keyfile, _ = KeyFile.create(b"pw")
    doc = json.loads(keyfile.to_json())
    doc["slots"][0]["n"] = 1 << 24  # 16 GiB of scrypt memory with r = 8
    with pytest.raises(KeyUnlockError, match="unsupported key derivation"):
        KeyFile.from_json(json.dumps(doc).encode(), "device key")


@pytest.mark.parametrize("size", [0, aead.SMALL - 60, aead.SMALL, aead.SMALL + 1, 1 << 20])
def test_small_and_large_records_seal_to_the_same_bytes(size: int) -> None:
    """Small records go through the cached one-call cipher, large ones through a
    streaming context (aead.SMALL): both give what AESGCM gives, open what the other
    sealed, and refuse a flipped byte."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key, nonce, aad = bytes(range(32)), bytes(range(12)), b"associated"
    parts = [b"meta" * 7, os.urandom(size)]
    want = nonce + AESGCM(key).encrypt(nonce, b"".join(parts), aad)
    small = aead.seal_small(AESGCM(key), nonce, parts, aad)
    large = aead.seal_parts(key, nonce, parts, aad)
    assert small == want and bytes(large) == want
    assert aead.open_small(AESGCM(key), large, aad, "r") == b"".join(parts)
    assert bytes(aead.open_parts(key, small, aad, "r")) == b"".join(parts)
    bad = bytearray(want)
    bad[len(bad) // 2] ^= 1
    for opener in (lambda b: aead.open_small(AESGCM(key), b, aad, "r"),
                   lambda b: aead.open_parts(key, b, aad, "r")):  # fmt: skip
        with pytest.raises(TamperedError):
            opener(bytes(bad))
    codec = Codec(CodecSpec(OFF, MASTER, b"k" * 16))
    flags, stored = encode(codec, parts[1])
    assert bytes(decode(codec, stored, flags, size)[1]) == parts[1]


def test_large_records_compressed_by_zstd_threads_decode_the_same() -> None:
    """A record of THREADED bytes or more is compressed by zstd's worker threads: one
    frame of the same format, with its size, that the one reader decodes."""
    text = b"".join(b"line %d of a compressible record\n" % i for i in range(200_000))
    for level in AUTO_LADDER:
        compressor = Compressor(AUTO)
        compressor.level, compressor.threaded, compressor.cores = level, True, 2
        for size in (THREADED - 1, THREADED, len(text)):
            packed = compressor.compress(text[:size], 1)
            assert packed is not None and len(packed) < size
            assert decompress(packed, size, "record") == text[:size]
        assert level in compressor._zc_threaded  # the large ones went to the threads


def test_auto_level_follows_what_holds_the_mover_up() -> None:
    """auto steps along AUTO_LADDER a window: towards the fast end while zstd is the
    slower part (two steps while zstd takes more than LEAP times the device's time),
    back towards level 1 one step a window while the device is; a fixed level stays;
    threads only when zstd holds the mover up and a core is idle. Every level gives
    frames the one reader decodes, each step down stores more, and the fastest level
    still shrinks what compresses."""
    assert choose(compressing=2.0, writing=1.0, idle=0.0) == (1, False)
    assert choose(compressing=2.0, writing=1.0, idle=0.9) == (1, True)
    assert choose(compressing=2.0, writing=2.0 / LEAP, idle=0.0) == (1, False)
    assert choose(compressing=2.0, writing=1.9 / LEAP, idle=0.9) == (2, True)
    assert choose(compressing=2.0, writing=0.0, idle=0.0) == (2, False)
    assert choose(compressing=1.0, writing=2.0, idle=1.9) == (-1, False)
    assert choose(compressing=1.0, writing=1.0, idle=1.9) == (-1, False)
    # zstd at FAST or more (repetitive data: every level about as fast): back towards 1
    assert choose(compressing=2.0, writing=0.0, idle=0.0, rate=FAST - 1) == (2, False)
    assert choose(compressing=2.0, writing=0.0, idle=0.9, rate=FAST) == (-1, True)
    assert choose(compressing=2.0, writing=1.0, idle=0.0, rate=5.0, fast=5.0) == (-1, False)
    assert AUTO_LADDER[0] == AUTO_LEVEL == 1 and AUTO_LADDER[-1] == AUTO_FAST < -5
    assert list(AUTO_LADDER) == sorted(AUTO_LADDER, reverse=True)
    text = b"".join(b"record line %d, to compress\n" % i for i in range(40_000))
    per_window = -(-WINDOW // 4 // len(text))  # zstd sees a quarter of each window
    # (zstd's real speed on this text is no part of the test: ``fast`` out of reach)
    auto, fixed = Compressor(AUTO, fast=float("inf")), Compressor(3, fast=float("inf"))
    assert auto.level == AUTO_LEVEL and not auto.threaded
    # a device that takes no time for three windows (two steps each, to the end), then
    # a slow one for six (one step back each, to level 1)
    device = (0.0,) * 3 + (1e6,) * 6
    rungs = [2, 4, 5, 4, 3, 2, 1, 0, 0]
    for compressor in (auto, fixed):
        for seconds, rung in zip(device, rungs, strict=True):
            for _ in range(per_window):
                packed = compressor.compress(text, 1)
                assert packed is not None and decompress(packed, len(text), "r") == text
            compressor.wrote(seconds, WINDOW)
            assert compressor.level == (AUTO_LADDER[rung] if compressor is auto else 3)
            if seconds:
                assert not compressor.threaded
    sizes = []
    for level in AUTO_LADDER:
        held = Compressor(AUTO)
        held.level = level
        sizes.append(len(held.compress(text, 1) or b""))
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    assert sizes[-1] < len(text) * 3 // 4  # the fastest level still compresses


def test_auto_keeps_the_best_ratio_where_zstd_runs_fast_at_any_level() -> None:
    """A window zstd compressed at ``fast`` bytes a second or more (data so repetitive
    that every level runs alike) is no reason to step down, however fast the device:
    auto stays at level 1, and a mover that had stepped down steps back up."""
    text = b"".join(b"record line %d, to compress\n" % i for i in range(40_000))
    per_window = -(-WINDOW // 4 // len(text))
    auto = Compressor(AUTO, fast=0.0)  # every speed counts as fast
    for _ in range(3):
        for _ in range(per_window):
            assert auto.compress(text, 1) is not None
        auto.wrote(0.0, WINDOW)
        assert auto.level == AUTO_LEVEL
    down = Compressor(AUTO, fast=float("inf"))
    for _ in range(3):
        for _ in range(per_window):
            down.compress(text, 1)
        down.wrote(0.0, WINDOW)
    assert down.level == AUTO_FAST
    down.fast = 0.0  # the data turned repetitive
    for rung in (4, 3):
        for _ in range(per_window):
            down.compress(text, 1)
        down.wrote(0.0, WINDOW)
        assert down.level == AUTO_LADDER[rung]


def test_auto_learns_nothing_from_a_window_it_did_not_compress() -> None:
    """A window of random data (tried once, then given up on) written to a slow device
    leaves auto's level where the compressible data before it put it: writing what
    was not compressed says nothing of what compressing costs."""
    text = b"".join(b"record line %d, to compress\n" % i for i in range(40_000))
    auto = Compressor(AUTO, fast=float("inf"))
    for _ in range(3):  # a fast device: down to the fast end
        for _ in range(-(-WINDOW // 4 // len(text))):
            auto.compress(text, 1)
        auto.wrote(0.0, WINDOW)
    assert auto.level == AUTO_FAST
    noise = os.urandom(4 << 20)
    for _ in range(8):  # 32 MiB of one random file: tried once, then skipped
        assert auto.compress(noise, 2) is None
    auto.wrote(1e6, WINDOW)  # the device took long to take it
    assert auto.level == AUTO_FAST
    for _ in range(-(-WINDOW // 4 // len(text))):  # compressible again, the device slow
        auto.compress(text, 3)
    auto.wrote(1e6, WINDOW)
    assert auto.level == AUTO_LADDER[-2]


def test_idle_cores_from_proc_stat() -> None:
    before = cpu_times()
    assert before is not None and 0 < before[0] < before[1]
    assert idle_cores((100, 1000), (250, 1200), cpus=2) == 1.5
    assert idle_cores((100, 1000), (100, 1000), cpus=2) == 0.0


def test_record_nonces_count_from_a_random_start_and_never_repeat() -> None:
    """A codec's record nonces count up by one from 12 random bytes (crypto/codec.py):
    none repeats within a codec, two codecs start apart, and a forked child starts again
    at random bytes rather than where its parent stands."""
    codec = Codec(CodecSpec(OFF, MASTER, b"k" * 16))
    nonces = [encode(codec, b"same payload", offset=i * 12)[1][:12] for i in range(5000)]
    assert len(set(nonces)) == len(nonces)
    counted = [int.from_bytes(n, "little") for n in nonces]
    assert counted == [(counted[0] + i) % (1 << 96) for i in range(len(counted))]
    other = Codec(CodecSpec(OFF, MASTER, b"k" * 16))
    assert encode(other, b"same payload")[1][:12] not in set(nonces)
    # the counter wraps within 96 bits instead of growing past the nonce size
    codec._nonce = (1 << 96) - 1
    assert codec._next_nonce() == b"\xff" * 12 and codec._next_nonce() == bytes(12)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child writes its next nonce and leaves at once
        os.write(write, codec._next_nonce())
        os._exit(0)
    os.close(write)
    child = os.read(read, 12)
    os.close(read)
    os.waitpid(pid, 0)
    assert codec._next_nonce() == (1).to_bytes(12, "little")  # the parent counts on
    assert len(child) == 12 and child != (1).to_bytes(12, "little")
