"""GBT segmentation and reassembly (protocols.gbcs.gbt): round trips on random messages and block sizes, shuffled
and duplicated blocks, timeouts, bounded memory, typed errors; RTDS CHF commands survive a round trip."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from protocols.errors import EncodeError
from protocols.gbcs.gbt import GbtError, Reassembler, is_gbt_block, segment
from protocols.gbcs.message import decode, encode, encode_grouping_header, wrap_mac_header

ORIG, RECIP = "90B3D51F30000002", "00DB1234567890A2"


def message(content: bytes, counter: int = 1000, code: int = 0x0001, mac: bool = True, cra: str = "command") -> bytes:
    gh = {"cra_flag": cra, "originator_counter": counter, "originator": ORIG, "recipient": RECIP,
          "date_time": None, "other_information": {"message_code": f"0x{code:04X}"}}
    signing = encode_grouping_header(gh, content, "")
    return wrap_mac_header(signing, "00" * 12) if mac else signing


messages = st.builds(message, st.binary(min_size=0, max_size=600), st.integers(0, 2**64 - 1),
                     st.integers(0, 0xFFFF), st.booleans(), st.sampled_from(["command", "response", "alert"]))


@settings(max_examples=60, deadline=None)
@given(m=messages, size=st.integers(8, 200), data=st.data())
def test_reassemble_of_segment_is_identity_in_any_order_with_duplicates(m, size, data):
    blocks = segment(m, max_block=size)
    assert len(blocks) == -(-len(m) // size)
    assert all(is_gbt_block(b) for b in blocks)
    order = data.draw(st.permutations(blocks))
    dups = data.draw(st.lists(st.sampled_from(blocks), max_size=4))
    r = Reassembler()
    got = []
    for b in list(order[:-1]) + dups + [order[-1]]:
        out = r.feed(b, 0.0)
        if out is not None:
            got.append(out)
    assert got == [m]
    assert r.pending == 0
    for b in blocks:                                # late duplicates of a delivered message are ignored
        assert r.feed(b, 1.0) is None


def test_block_layout_follows_the_brief():
    m = message(bytes(range(100)), counter=0x516, code=0x0001)
    blocks = segment(m, max_block=30)
    first = blocks[0]
    # DD | 09 CRA counter | 08 orig | 08 recip | 00 | 02 code | 00 | len | security header | E0 ...
    assert first[:2] == b"\xDD\x09" and first[2] == 1 and first[3:11] == (0x516).to_bytes(8, "big")
    assert first[11:20] == b"\x08" + bytes.fromhex(ORIG) and first[20:29] == b"\x08" + bytes.fromhex(RECIP)
    assert first[29:33] == b"\x00\x02\x00\x01" and first[33] == 0
    blk = decode(first)["gbt_block"]
    assert blk["block_number"] == 1 and blk["block_control"]["last_block"] is False
    last = decode(blocks[-1])["gbt_block"]
    assert last["block_number"] == len(blocks) and last["block_control"]["last_block"] is True
    assert b"".join(bytes.fromhex(decode(b)["gbt_block"]["block_data"]) for b in blocks) == m


def test_single_byte_blocks():
    m = message(b"\x01\x02\x03")
    blocks = segment(m, max_block=1)
    assert len(blocks) == len(m)
    r = Reassembler()
    assert [r.feed(b, 0) for b in blocks][-1] == m


def test_missing_block_times_out_and_memory_is_freed():
    m = message(bytes(300))
    blocks = segment(m, max_block=50)
    r = Reassembler(timeout=30.0)
    for b in blocks[:2] + blocks[3:]:
        assert r.feed(b, 10.0) is None
    assert r.pending == 1 and r.buffered_bytes() > 0
    assert r.expire(39.0) == []
    gone = r.expire(41.0)
    assert len(gone) == 1 and r.pending == 0 and r.buffered_bytes() == 0 and r.dropped[-1][1] == "timeout"
    assert r.feed(blocks[2], 42.0) is None          # a late block starts over, it completes nothing
    assert r.pending == 1


def test_bounded_number_of_partial_messages():
    r = Reassembler(max_messages=3)
    for counter in range(10):
        r.feed(segment(message(bytes(100), counter=counter), max_block=40)[0], float(counter))
    assert r.pending == 3
    assert len([d for d in r.dropped if d[1] == "evicted"]) == 7


def test_message_too_large_is_refused():
    r = Reassembler(max_bytes=100)
    blocks = segment(message(bytes(400)), max_block=60)
    with pytest.raises(GbtError) as e:
        for b in blocks:
            r.feed(b, 0)
    assert e.value.field == "gbt_block.block_data" and r.pending == 0


def _block(**change) -> bytes:
    blk = decode(segment(message(bytes(80)), max_block=40)[0])["gbt_block"]
    blk.update(change)
    return encode({"gbt_block": blk})


def test_bad_blocks_raise_typed_errors_with_field_and_offset():
    r = Reassembler()
    with pytest.raises(GbtError) as e:
        r.feed(_block(block_number=0), 0)
    assert e.value.field == "gbt_block.block_number" and e.value.offset is not None
    assert _block(block_number=0)[e.value.offset - 2] == 0xE0
    with pytest.raises(GbtError) as e:
        r.feed(message(b"\x00"), 0)                 # a whole message is not a block
    assert e.value.field == "gbt_block"
    with pytest.raises(GbtError) as e:
        r.feed(b"\xDD\x01", 0)
    assert e.value.offset is not None
    r.feed(_block(), 0)
    with pytest.raises(GbtError) as e:
        r.feed(_block(block_data="FF" * 40), 0)     # same number, other data
    assert e.value.field == "gbt_block.block_data"
    with pytest.raises(GbtError) as e:
        r.feed(_block(other_information="0002"), 0)  # same transaction, other message code
    assert e.value.field == "gbt_block.other_information"


def test_reassembled_garbage_is_refused():
    blocks = segment(message(bytes(10)), max_block=8)
    blk = decode(blocks[0])["gbt_block"]
    blk["block_data"] = "00" * 8                    # block 1 no longer starts a message
    r = Reassembler()
    r.feed(encode({"gbt_block": blk}), 0)
    with pytest.raises(GbtError) as e:
        for b in blocks[1:]:
            r.feed(b, 0)
    assert e.value.field.startswith("gbt_message")


def test_segment_refuses_what_it_cannot_carry():
    with pytest.raises(EncodeError):
        segment(message(b"\x00"), max_block=0)
    with pytest.raises(EncodeError):
        segment(segment(message(bytes(20)), max_block=10)[0], max_block=10)
    with pytest.raises(EncodeError):
        segment(b"\x00\x01", max_block=10)


def test_rtds_chf_commands_round_trip(rtds):
    from hil.conformance.codec import read_message_file
    files = sorted(rtds.glob("8.*_CCS0*/*_COMMAND_GBCS.HEX"))
    assert files
    for f in files:                                 # RTDS reuses counters across cases: one hub per case
        r = Reassembler()
        m = read_message_file(f)
        blocks = segment(m, max_block=64)
        outs = [r.feed(b, 0) for b in reversed(blocks)]
        assert outs[-1] == m and all(o is None for o in outs[:-1])
        assert decode(blocks[0])["gbt_block"]["recipient_system_title"] == decode(m)["grouping_header"]["recipient"]
