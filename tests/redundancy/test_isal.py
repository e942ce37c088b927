"""Parity built unit by unit (redundancy/isal.py) is byte for byte the row coder's."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from parbackup.redundancy.codec import MAX_DATA, MAX_PARITY, RowCodec, fragment_headers
from parbackup.redundancy.isal import Decoder, Updater, address

UNIT = 256


@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(1, MAX_DATA),
    m=st.integers(1, MAX_PARITY),
    seed=st.integers(0, 2**32),
    zeros=st.sets(st.integers(0, MAX_DATA - 1)),
)
def test_units_added_in_any_order_give_the_row_coders_parity(k, m, seed, zeros) -> None:
    rnd = random.Random(seed)
    data = [bytes(UNIT) if j in zeros else rnd.randbytes(UNIT) for j in range(k)]
    want, headers = RowCodec(k, m, UNIT).encode(data)
    updater = Updater.load(k, m, UNIT)
    assert updater is not None, "pyeclib's wheel ships ISA-L"
    parity = [bytearray(UNIT) for _ in range(m)]
    order = list(range(k))
    rnd.shuffle(order)
    for j in order:
        if j in zeros:
            continue  # a column past its end adds nothing
        unit = bytearray(data[j])
        updater.add(j, address(unit), [address(p) for p in parity])
    assert [bytes(p) for p in parity] == want
    # the codec's fragment headers do not depend on the data: a streamed row keeps
    # the ones of a row of zeros (engine/paritystream.py)
    assert fragment_headers(k, m, UNIT) == headers


@settings(max_examples=60, deadline=None)
@given(k=st.integers(1, MAX_DATA), m=st.integers(1, MAX_PARITY), seed=st.integers(0, 2**32))
def test_the_first_unit_put_over_garbage_then_the_others_added_give_the_parity(k, m, seed):
    """Updater.put writes a unit's share whatever the parity buffers held (a row's
    buffer is reused unzeroed, redundancy/accumulate.py); the others are added."""
    rnd = random.Random(seed)
    data = [rnd.randbytes(UNIT) for _ in range(k)]
    want, _headers = RowCodec(k, m, UNIT).encode(data)
    updater = Updater.load(k, m, UNIT)
    assert updater is not None
    parity = [bytearray(rnd.randbytes(UNIT)) for _ in range(m)]  # a buffer used before
    order = list(range(k))
    rnd.shuffle(order)
    units = [bytearray(u) for u in data]
    updater.put(order[0], address(units[order[0]]), [address(p) for p in parity])
    for j in order[1:]:
        updater.add(j, address(units[j]), [address(p) for p in parity])
    assert [bytes(p) for p in parity] == want


@settings(max_examples=60, deadline=None)
@given(k=st.integers(1, MAX_DATA), m=st.integers(1, MAX_PARITY), seed=st.integers(0, 2**32))
def test_a_whole_row_encoded_in_one_call_is_the_codecs_parity(k, m, seed):
    """Updater.encode (all k data units at once, the parity buffers written whatever
    they held) gives the parity RowCodec and put/add give."""
    rnd = random.Random(seed)
    data = [rnd.randbytes(UNIT) for _ in range(k)]
    want, _headers = RowCodec(k, m, UNIT).encode(data)
    updater = Updater.load(k, m, UNIT)
    assert updater is not None
    parity = [bytearray(rnd.randbytes(UNIT)) for _ in range(m)]
    units = [bytearray(u) for u in data]
    updater.encode([address(u) for u in units], [address(p) for p in parity])
    assert [bytes(p) for p in parity] == want


@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(1, MAX_DATA),
    m=st.integers(1, MAX_PARITY),
    seed=st.integers(0, 2**32),
    data=st.data(),
)
def test_the_decoder_gives_back_any_lost_data_units_from_any_k_others(k, m, seed, data) -> None:
    """Decoder.recover: up to m units of a row lost (data or parity, at least one data
    unit among them): the lost data units come back, written into the caller's buffers."""
    rnd = random.Random(seed)
    units = [rnd.randbytes(UNIT) for _ in range(k)]
    parity, _headers = RowCodec(k, m, UNIT).encode(units)
    whole = [bytearray(u) for u in units + parity]
    lost_data = data.draw(st.sets(st.integers(0, k - 1), min_size=1, max_size=min(k, m)))
    lost_parity = data.draw(st.sets(st.integers(k, k + m - 1), max_size=m - len(lost_data)))
    decoder = Decoder.load(k, m, UNIT)
    assert decoder is not None
    present = {i: address(u) for i, u in enumerate(whole) if i not in lost_data | lost_parity}
    out = {j: bytearray(UNIT) for j in lost_data}
    decoder.recover(present, {j: address(b) for j, b in out.items()})
    assert {j: bytes(b) for j, b in out.items()} == {j: units[j] for j in lost_data}
