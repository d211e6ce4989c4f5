"""Resource bounds under a flood: a flood degrades service with clear, counted errors, never with memory growth.

Each test floods one piece far past its bound and checks the bound after every step (buffers, partial messages,
logs), that what was dropped is counted, and that good input still gets through afterwards. The CHF's per-device
queues for sleepy devices are covered by tests/test_chf.py (`queue full` drops)."""
from __future__ import annotations

import asyncio
import copy
import json
import random
import sys
import tracemalloc
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocols.framing import Frame, encode_gfi, encode_hdlc, encode_lencrc, make_deframer  # noqa: E402
from protocols.gbcs.gbt import DROPPED_KEEP, GbtError, Reassembler, segment  # noqa: E402
from protocols.zigbee import han  # noqa: E402

ENCODERS = {"gfi": encode_gfi, "lencrc": encode_lencrc,
            "hdlc": lambda m: encode_hdlc(m, dest=0x10, src=0x01, control=0x10)}
MAX_FRAME = 400


def _flood(rnd: random.Random, size: int) -> bytes:
    """Garbage salted with frame starts and huge length claims (the worst case for a resynchronising framer)."""
    pieces = [b"GBCS:DATA#0:9999999:", b"GBCS:DATA#0:150:ABCD", b"\xa5\xff\xff", b"\x7e\xa7\xff", b"\x7e",
              b"\xa5\x00\x10\x00", b"GBCS:", b"\r\n"]
    out = bytearray()
    while len(out) < size:
        out += rnd.choice(pieces) if rnd.random() < 0.3 else bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 40)))
    return bytes(out[:size])


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_deframer_flood_stays_within_max_frame_and_counts_what_it_drops(name):
    rnd = random.Random(name)
    d = make_deframer(name, max_frame=MAX_FRAME, timeout=0.5)
    flood = _flood(rnd, 300_000)
    now, pos, peak = 0.0, 0, 0
    while pos < len(flood):
        n = rnd.choice((1, 5, 64, 500, 4096))
        now += 0.001
        d.feed(flood[pos:pos + n], now)
        pos += n
        peak = max(peak, d.buffered)
    assert peak <= MAX_FRAME
    good = b"\xDF" + bytes(range(100))
    # after the flood (and a pause), a good frame is still delivered
    events = d.poll(now + 1.0) + d.feed(ENCODERS[name](good), now + 1.0)
    assert [e.payload for e in events if isinstance(e, Frame)][-1:] == [good]
    c = d.counters()
    assert c["discarded_bytes"] >= len(flood) * 0.9
    assert c["resyncs"] + c["syntax_errors"] + c["crc_errors"] + c["oversize"] + c["timeouts"] > 0


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_deframer_partial_frame_times_out(name):
    d = make_deframer(name, max_frame=MAX_FRAME, timeout=0.5)
    wire = ENCODERS[name](b"\xDF" * 50)
    d.feed(wire[:-3], 0.0)
    assert d.buffered > 0
    d.poll(0.4)
    assert d.buffered > 0                       # not yet
    d.poll(0.6)
    assert d.buffered == 0 and d.timeouts == 1


def test_gbt_flood_of_partial_messages_is_bounded():
    """10,000 never-completed messages: pending, bytes and the dropped list stay bounded; all drops counted."""
    from fuzz.seeds import harness
    h = harness()
    frame = h.templates("ESME")[3].frame
    blocks = segment(frame, max_block=32)
    assert len(blocks) >= 2
    r = Reassembler(timeout=60.0, max_messages=16, max_bytes=16 * 1024)
    tracemalloc.start()
    try:
        for i in range(10_000):
            b = bytearray(blocks[0])
            # another transaction each time: rewrite the counter inside the routing transaction id
            b[3:11] = i.to_bytes(8, "big")
            try:
                r.feed(bytes(b), float(i) * 0.001)
            except GbtError:
                pass
            assert r.pending <= r.max_messages and r.buffered_bytes() <= r.max_bytes
            if i == 1000:
                base = tracemalloc.get_traced_memory()[0]
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert len(r.dropped) <= DROPPED_KEEP
    assert r.dropped_total >= 10_000 - r.max_messages - 1
    assert grown < 256 * 1024, f"memory grew by {grown} bytes"


def test_gbt_message_over_max_bytes_is_refused():
    from fuzz.seeds import harness
    frame = max((t.frame for t in harness().templates("ESME")), key=len)
    r = Reassembler(max_bytes=64)
    with pytest.raises(GbtError, match="exceeds"):
        for b in segment(frame, max_block=40):
            r.feed(b, 0.0)
    assert r.pending == 0


def test_han_reassembler_flood_is_bounded():
    """Never-completed APS transmissions from thousands of (spoofed) sources."""
    r = han.Reassembler(timeout=30.0, done_ttl=30.0, max_partial=32, max_sources=100)
    first = han.decode_aps(han.fragment(bytes(300), counter=1, max_payload=50)[0])
    single = han.decode_aps(han.fragment(b"\x01\x02", counter=1)[0])
    for i in range(5000):
        r.feed(f"src{i}", dict(first, counter=i % 256), i * 0.001)
        r.feed(f"one{i}", dict(single, counter=i % 256), i * 0.001)
        assert len(r.partial) <= 32 and len(r.done) <= 100
    assert r.evicted >= 5000 - 32
    json.dumps(r.state)
    # a complete transmission still goes through
    frames = [han.decode_aps(f) for f in han.fragment(bytes(range(120)), counter=9, max_payload=50)]
    got = [r.feed("good", f, 10.0).payload for f in frames]
    assert got[-1] == bytes(range(120))


@pytest.mark.parametrize("device_type", ["ESME", "GSME", "CHF"])
def test_device_logs_are_bounded_under_a_flood_of_refused_commands(device_type):
    """1,000 commands with a bad MAC: each is refused with its alert; the logs keep their depth, the state stays
    small and JSON."""
    from fuzz.seeds import harness
    h = harness()
    dev = h.fresh(device_type)
    tpl = h.templates(device_type)[0]
    bad = bytearray(tpl.frame)
    bad[-1] ^= 0xFF
    size0 = len(json.dumps(dev.state))
    alerts = 0
    for i in range(1000):
        out = dev.receive(bytes(bad), h.now + i)
        alerts += sum(e.kind == "alert" for e in out)
    assert alerts == 1000
    assert len(dev.state["security_log"]) <= 100 and len(dev.state.get("alert_log", [])) <= 100
    assert len(json.dumps(dev.state)) < size0 + 40_000
    assert dev.state["counters"]["alert"] >= 1000        # the counter moves on; nothing else piles up


async def _until(cond, timeout=5.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("framing", ["gfi", "lencrc"])
async def test_wan_tcp_flood_degrades_with_counted_errors(framing):
    """2 MB of garbage with huge length claims on one connection: the server keeps its bound, counts the bytes,
    and still answers a good frame on the same connection and on a new one."""
    from firmware_emu.fleet.wan import TcpWanServer, encode_frame

    async def echo(frame, reply):
        await reply(frame)

    async with TcpWanServer(echo, framing=framing, max_payload=512) as server:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", server.port), 5)
        flood = _flood(random.Random(framing), 2_000_000)
        for i in range(0, len(flood), 65536):
            writer.write(flood[i:i + 65536])
            await asyncio.wait_for(writer.drain(), 5)
        good = b"\xDF" + bytes(200)
        writer.write(b"\r\n" + encode_frame(framing, good, 512))
        await asyncio.wait_for(writer.drain(), 5)
        await _until(lambda: server.stats()["frames_in"] >= 1, 10)
        st = server.stats()
        assert st["discarded_bytes"] >= 1_500_000
        writer.close()
        r2, w2 = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", server.port), 5)
        w2.write(encode_frame(framing, good, 512))
        await asyncio.wait_for(w2.drain(), 5)
        back = await asyncio.wait_for(r2.read(4096), 5)
        assert back
        w2.close()


def test_state_copy_is_cheap_after_a_flood():
    """Guard for the comparator of the security tests: a flooded device's state deep-copies quickly."""
    from fuzz.seeds import harness
    h = harness()
    dev = h.fresh("ESME")
    for i in range(200):
        dev.receive(b"\xdd" + bytes(i), h.now)
    copy.deepcopy(dev.state)


def test_future_dated_work_is_bounded(own_pki):
    """A flood of future-dated work fails cleanly once the device's capacity is used up; the schedule stops
    growing and what was accepted stays."""
    from firmware_emu.core.cosem import ScheduleFull
    from firmware_emu.core.device import MAX_SCHEDULED
    from firmware_emu.core.provisioning import default_anchors, device_keys
    from firmware_emu.esme.device import Esme
    summary, keystore = own_pki
    dev = Esme(device_keys(keystore, summary.devices[0]), anchors=default_anchors(keystore), now=1420070400.0)
    for i in range(MAX_SCHEDULED):
        dev.schedule(1420070400.0 + 86400 + i, "future_dated", {"i": i})
    with pytest.raises(ScheduleFull) as e:
        dev.schedule(1420070400.0 + 86400, "future_dated", {"i": -1})
    assert e.value.result == "temporary-failure"
    assert len(dev.state["schedule"]) == MAX_SCHEDULED
