"""Sans-IO framers: GFI text lines, IEC 62056-46 HDLC, magic+length+CRC; the common streaming deframer API."""
from __future__ import annotations

import crcmod
import crcmod.predefined
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from protocols.errors import DecodeError, EncodeError
from protocols.framing import (Deframer, Frame, FrameError, HdlcFrame, USING_C_EXTENSION, decode_gfi, decode_hdlc,
                               decode_lencrc, encode_gfi, encode_hdlc, encode_lencrc, make_deframer, x25)
from protocols.framing.lencrc import LENCRC

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------------------------------- CRC
def test_x25_known_constant_and_extension():
    assert x25(b"123456789") == 0x906E
    # crcmod takes initCrc after xorOut: register init 0xFFFF ^ xorOut 0xFFFF = 0
    ref = crcmod.mkCrcFun(0x11021, initCrc=0x0000, rev=True, xorOut=0xFFFF)
    assert ref(b"123456789") == 0x906E
    assert crcmod.predefined.mkPredefinedCrcFun("x-25")(b"123456789") == 0x906E
    assert USING_C_EXTENSION  # design.md: never run on the pure-Python CRC silently


# ------------------------------------------------------------------------------------------ byte literals
def test_lencrc_literal():
    crc = x25(b"\x00\x09123456789")
    assert encode_lencrc(b"123456789") == b"\xA5\x00\x09123456789" + crc.to_bytes(2, "big")
    assert encode_lencrc(b"") == b"\xA5\x00\x00" + x25(b"\x00\x00").to_bytes(2, "big")
    assert decode_lencrc(encode_lencrc(b"123456789")) == b"123456789"
    parsed = LENCRC.parse(encode_lencrc(b"ab"))
    assert parsed.body.value.length == 2 and parsed.crc == x25(b"\x00\x02ab")


def test_lencrc_decode_errors():
    good = encode_lencrc(b"hello")
    with pytest.raises(DecodeError):
        decode_lencrc(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(DecodeError):
        decode_lencrc(good + b"\x00")
    with pytest.raises(DecodeError):
        decode_lencrc(b"\x5A" + good[1:])
    with pytest.raises(EncodeError):
        encode_lencrc(bytes(0x10000))


def test_hdlc_snrm_literal():
    # DLMS SNRM from the Green Book examples: client 0x10 -> server 1, no information field, so no HCS
    frame = encode_hdlc(b"", dest=1, src=0x10, control=0x93)
    assert frame == bytes.fromhex("7EA0070321930F017E")
    assert decode_hdlc(frame) == HdlcFrame(dest=1, src=0x10, control=0x93)


def test_hdlc_with_info_literal():
    info = bytes.fromhex("E6E600")
    frame = encode_hdlc(info, dest=0x21 >> 1, src=0x03 >> 1, control=0x10)
    head = bytes.fromhex("A00C") + b"\x21\x03\x10"          # length 12 = 2 + 1 + 1 + 1 + 2 + 3 + 2
    hcs = x25(head).to_bytes(2, "little")
    fcs = x25(head + hcs + info).to_bytes(2, "little")
    assert frame == b"\x7E" + head + hcs + info + fcs + b"\x7E"
    f = decode_hdlc(frame)
    assert (f.dest, f.src, f.control, f.info, f.segmented) == (0x10, 0x01, 0x10, info, False)


def test_hdlc_addresses_and_segmentation():
    # 2-byte server address: upper 0x01, lower 0x11 -> bytes 02 23; 4-byte: 7 bits per byte
    frame = encode_hdlc(b"\x01", dest=(0x01 << 7) | 0x11, src=0x10, control=0x32, segmented=True)
    assert frame[1:3] == bytes.fromhex("A8") + bytes([len(frame) - 2]) and frame[3:5] == b"\x02\x23"
    f = decode_hdlc(frame)
    assert (f.dest, f.dest_len, f.segmented) == ((1 << 7) | 0x11, 2, True)
    f4 = decode_hdlc(encode_hdlc(b"x", dest=0x10, src=0x3FFF_FFFF >> 2, control=0, dest_len=4))
    assert (f4.dest, f4.dest_len, f4.src, f4.src_len) == (0x10, 4, 0x3FFF_FFFF >> 2, 4)
    with pytest.raises(EncodeError):
        encode_hdlc(b"", dest=1 << 28, src=1, control=0)
    with pytest.raises(EncodeError):
        encode_hdlc(b"", dest=1, src=1, control=0, dest_len=3)
    with pytest.raises(EncodeError):
        encode_hdlc(bytes(2100), dest=1, src=1, control=0)


def test_hdlc_decode_rejects_three_byte_address_and_bad_hcs():
    body = bytearray(bytes.fromhex("A009") + b"\x02\x02\x03\x21\x10")   # 3-byte dest address
    body += x25(body).to_bytes(2, "little")
    with pytest.raises(DecodeError):
        decode_hdlc(b"\x7E" + body + b"\x7E")
    frame = bytearray(encode_hdlc(b"abc", dest=1, src=1, control=0))
    frame[6] ^= 0xFF                                                     # HCS
    frame[-3:-1] = x25(bytes(frame[1:-3])).to_bytes(2, "little")         # FCS made valid again
    with pytest.raises(DecodeError, match="HCS"):
        decode_hdlc(bytes(frame))
    d = make_deframer("hdlc")
    (ev,) = d.feed(bytes(frame), 0)
    assert isinstance(ev, FrameError) and ev.kind == "crc"


def test_gfi_literal():
    assert encode_gfi(b"\x01\xab\xff") == b"GBCS:DATA#0:3:01ABFF\r\n"
    assert encode_gfi(b"", channel=2) == b"GBCS:DATA#2:0:\r\n"
    assert decode_gfi(b"GBCS:DATA#0:3:01abFf\r\n") == (0, b"\x01\xab\xff")
    for bad in (b"GBCS:DATA#0:3:01AB\r\n", b"GBCS:DATA#0:2:01AB\n", b"GBCS:DATA#0:2:01AG\r\n",
                b"GBCS:DATA#x:2:01AB\r\n", b"GBCS:DATA0:2:01AB\r\n", b"GBCS:DATA#0:1:01\r\nX"):
        with pytest.raises(DecodeError):
            decode_gfi(bad)


# -------------------------------------------------------------------------------------------- round trips
@SETTINGS
@given(st.binary(max_size=300), st.integers(0, 999))
def test_gfi_roundtrip(payload, channel):
    assert decode_gfi(encode_gfi(payload, channel)) == (channel, payload)
    assert decode_gfi(encode_gfi(payload, channel).lower().replace(b"gbcs:data", b"GBCS:DATA")) == (channel, payload)


@SETTINGS
@given(st.binary(max_size=300))
def test_lencrc_roundtrip(payload):
    assert decode_lencrc(encode_lencrc(payload)) == payload


hdlc_frames = st.builds(
    lambda info, dl, dest, sl, src, control, seg: HdlcFrame(dest % (1 << 7 * dl), src % (1 << 7 * sl), control,
                                                            info, seg, dl, sl),
    st.binary(max_size=60), st.sampled_from((1, 2, 4)), st.integers(0, 1 << 28), st.sampled_from((1, 2, 4)),
    st.integers(0, 1 << 28), st.integers(0, 255), st.booleans())


def enc(f: HdlcFrame) -> bytes:
    return encode_hdlc(f.info, dest=f.dest, src=f.src, control=f.control, segmented=f.segmented,
                       dest_len=f.dest_len, src_len=f.src_len)


@SETTINGS
@given(hdlc_frames)
def test_hdlc_roundtrip(f):
    assert decode_hdlc(enc(f)) == f


# ---------------------------------------------------------------------------------------------- streaming
def feed_all(d, chunks, t0=0.0, step=0.001):
    events, now = [], t0
    for c in chunks:
        now += step
        events += d.feed(c, now)
    events += d.poll(now + 1000)          # end of stream: flush anything partial
    return events


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, prev = [], 0
    for p in points + [len(data)]:
        out.append(data[prev:p])
        prev = p
    return out


def check_counters(d, events):
    errs = [e for e in events if isinstance(e, FrameError)]
    assert d.frames == sum(isinstance(e, Frame) for e in events)
    assert d.discarded_bytes == sum(e.discarded_bytes for e in errs)
    assert d.crc_errors == sum(e.kind == "crc" for e in errs)
    assert d.resyncs == sum(e.kind == "resync" for e in errs)
    assert d.timeouts == sum(e.kind == "timeout" for e in errs)
    assert all(e.kind in ("crc", "resync", "timeout", "oversize", "syntax") for e in errs)


# garbage that cannot start a frame: GFI has no 'G', lencrc no 0xA5, HDLC no flag and (after a closing flag) no
# byte whose high nibble is the frame type 0xA
GARBAGE = {
    "gfi": st.binary(max_size=30).map(lambda b: b.replace(b"G", b"g")),
    "lencrc": st.binary(max_size=30).map(lambda b: b.replace(b"\xA5", b"\x00")),
    "hdlc": st.lists(st.integers(0, 255).filter(lambda x: x != 0x7E and x >> 4 != 0xA), max_size=30).map(bytes),
}
ENCODERS = {"gfi": lambda p: encode_gfi(p), "lencrc": encode_lencrc,
            "hdlc": lambda p: encode_hdlc(p, dest=1, src=0x10, control=0x10)}


@pytest.mark.parametrize("name", ["gfi", "lencrc", "hdlc"])
@SETTINGS
@given(data=st.data())
def test_stream_frames_garbage_and_splits(name, data):
    payloads = data.draw(st.lists(st.binary(max_size=50), max_size=8))
    garbage = [data.draw(GARBAGE[name]) for _ in range(len(payloads) + 1)]
    stream = garbage[0] + b"".join(ENCODERS[name](p) + g for p, g in zip(payloads, garbage[1:]))
    chunks = split(stream, data.draw(st.lists(st.integers(0, 10_000), max_size=20)))
    d = make_deframer(name, timeout=0.5)
    assert isinstance(d, Deframer)
    events = feed_all(d, chunks)
    assert [e.payload for e in events if isinstance(e, Frame)] == payloads
    assert d.buffered == 0
    check_counters(d, events)
    if name != "hdlc":  # every byte is in a frame or counted as discarded (HDLC frames may share flags)
        assert sum(e.wire_length for e in events if isinstance(e, Frame)) + d.discarded_bytes == len(stream)


@SETTINGS
@given(st.lists(hdlc_frames, min_size=1, max_size=5), st.lists(st.integers(0, 10_000), max_size=10),
       st.booleans())
def test_hdlc_stream_keeps_headers_and_shared_flags(frames, cuts, share):
    wires = [enc(f) for f in frames]
    stream = b"".join(w[:-1] for w in wires) + b"\x7E" if share else b"".join(wires)
    events = feed_all(make_deframer("hdlc"), split(stream, cuts))
    assert [e.hdlc for e in events if isinstance(e, Frame)] == frames
    assert not [e for e in events if isinstance(e, FrameError)]


def _near(b: int) -> set[int]:
    return {b} | {b ^ (1 << k) for k in range(8)}


@SETTINGS
@given(st.lists(st.integers(0, 255).filter(lambda x: x not in _near(0xA5)), max_size=64).map(bytes), st.data())
def test_lencrc_bitflip_gives_crc_error_not_frame(payload, data):
    # sound: no byte of the flipped frame but the magic can be 0xA5 with room for a frame behind it
    wire = bytearray(encode_lencrc(payload))
    bit = data.draw(st.integers(0, 8 * len(wire) - 1))
    wire[bit // 8] ^= 1 << (bit % 8)
    d = make_deframer("lencrc", timeout=0.5)
    events = feed_all(d, [bytes(wire)])
    assert not [e for e in events if isinstance(e, Frame)]
    if bit >= 8 * 3:                         # payload or CRC: the frame is read and rejected by its CRC
        assert d.crc_errors == 1
    check_counters(d, events)


@SETTINGS
@given(hdlc_frames, st.data())
def test_hdlc_bitflip_gives_crc_error_not_frame(frame, data):
    wire = bytearray(enc(frame))
    assume(not any(b in _near(0x7E) for b in wire[1:-1]))   # sound: no inner byte can become a flag
    bit = data.draw(st.integers(0, 8 * len(wire) - 1))
    wire[bit // 8] ^= 1 << (bit % 8)
    d = make_deframer("hdlc", timeout=0.5)
    events = feed_all(d, [bytes(wire)])
    assert not [e for e in events if isinstance(e, Frame)]
    if 8 * 3 <= bit < 8 * (len(wire) - 1):   # after the format field, before the closing flag
        assert d.crc_errors == 1
    check_counters(d, events)


@pytest.mark.parametrize("name", ["gfi", "lencrc", "hdlc"])
def test_timeout_discards_partial_frame(name):
    wire = ENCODERS[name](b"hello world")
    d = make_deframer(name, timeout=0.5)
    assert d.feed(wire[:7], 10.0) == []
    assert d.poll(10.5) == []                                   # exactly the timeout: not yet
    (ev,) = d.poll(10.51)
    assert ev == FrameError("timeout", ev.detail, 7) and d.timeouts == 1 and d.buffered == 0
    # the rest of the old frame arrives late: it is garbage now, and the next frame still comes through
    events = d.feed(wire[7:] + wire, 20.0)
    assert [e.payload for e in events if isinstance(e, Frame)] == [b"hello world"]
    # a timeout noticed by feed() itself
    events = d.feed(wire[:5], 30.0) + d.feed(wire[5:] + wire, 31.0)
    assert [e.kind for e in events if isinstance(e, FrameError)][:1] == ["timeout"]
    assert [e.payload for e in events if isinstance(e, Frame)] == [b"hello world"]


def test_timeout_rescans_behind_a_false_start():
    # an HDLC closing flag followed by noise that looks like a format field hides the next frame until timeout
    f = encode_hdlc(b"abc", dest=1, src=0x10, control=0x10)
    d = make_deframer("hdlc", timeout=0.5)
    events = d.feed(f + b"\xA5\xFF" + f, 0.0)
    assert [e.payload for e in events if isinstance(e, Frame)] == [b"abc"]
    events = d.poll(1.0)
    assert [e.payload for e in events if isinstance(e, Frame)] == [b"abc"]
    assert d.timeouts == 1 and d.buffered == 0


def test_idle_flags_are_silent():
    f = encode_hdlc(b"abc", dest=1, src=0x10, control=0x10)
    d = make_deframer("hdlc")
    events = feed_all(d, [b"\x7E" * 5, f, b"\x7E" * 3, f, b"\x7E"])
    assert events == [Frame(b"abc", len(f), hdlc=decode_hdlc(f))] * 2


@pytest.mark.parametrize("name,claim", [
    ("lencrc", b"\xA5\xFF\xFF"),
    ("hdlc", b"\x7E\xA7\xFF"),
    ("gfi", b"GBCS:DATA#0:9999999:"),
])
def test_oversize_claim_does_not_grow_memory(name, claim):
    d = make_deframer(name, max_frame=64, timeout=None)
    events = d.feed(claim, 0)
    assert [e.kind for e in events] == ["oversize"] and d.buffered < 64
    good = ENCODERS[name](b"ok")
    for i in range(200):                       # keep sending claims and filler: the buffer stays bounded
        d.feed(claim + b"\x00" * 50, i)
        assert d.buffered <= 64
    events = d.feed(good, 300)
    assert [e.payload for e in events if isinstance(e, Frame)] == [b"ok"]


@pytest.mark.parametrize("name", ["gfi", "lencrc", "hdlc"])
def test_partial_claim_within_limit_is_bounded(name):
    d = make_deframer(name, max_frame=200, timeout=None)
    wire = ENCODERS[name](bytes(80))
    for b in wire[:-1]:
        d.feed(bytes([b]), 0)
        assert d.buffered <= 200
    assert [e.payload for e in d.feed(wire[-1:], 0)] == [bytes(80)]


def test_make_deframer_names():
    assert type(make_deframer("raw")) is type(make_deframer("lencrc"))
    assert make_deframer("GFI", max_frame=100, timeout=2).max_frame == 100
    with pytest.raises(ValueError):
        make_deframer("slip")


def _noise(name):
    good = ENCODERS[name]
    pieces = st.one_of(st.binary(max_size=40), st.binary(max_size=40).map(good),
                       st.tuples(st.binary(max_size=40).map(good), st.integers(0, 100)).map(lambda t: t[0][:t[1]]),
                       st.sampled_from([b"\x7E", b"\xA5", b"GBCS:", b"GBCS:DATA#0:", b"\x7E\xA0", b"\r\n"]))
    return st.lists(st.tuples(pieces, st.floats(0, 2)), max_size=30)


@pytest.mark.parametrize("name", ["gfi", "lencrc", "hdlc"])
@SETTINGS
@given(data=st.data())
def test_random_bytes_only_give_events(name, data):
    d = make_deframer(name, max_frame=128, timeout=0.5)
    now, events, total = 0.0, [], 0
    for chunk, dt in data.draw(_noise(name)):
        now += dt
        events += d.feed(chunk, now)
        total += len(chunk)
        assert d.buffered <= 128
        if dt > 1:
            events += d.poll(now)
    events += d.poll(now + 10)
    assert all(isinstance(e, (Frame, FrameError)) for e in events)
    check_counters(d, events)
    if name != "hdlc":
        assert sum(e.wire_length for e in events if isinstance(e, Frame)) + d.discarded_bytes == total


@given(st.binary(max_size=600))
def test_lencrc_hand_encoder_is_the_declaration(payload):
    """The hot-path encoder builds exactly what the LENCRC declaration builds."""
    assert encode_lencrc(payload) == LENCRC.build({"body": {"value": {"payload": payload}}})
