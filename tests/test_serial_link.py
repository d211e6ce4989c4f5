"""SerialLink: framings over `loop://` and `socket://` (no pty needed), counters, bounded queues, HDLC
addressing and refusal of what a framing cannot carry, reconnection to a port that appears late."""
from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import pytest

from protocols.framing import decode_hdlc, encode_lencrc
from hil.serial_link import HdlcParams, SerialLink, SerialLinkError, encoder, parse_port_options

sys.path.insert(0, str(Path(__file__).parent))
from pty_pair import SOCAT, PtyPair  # noqa: E402

TIMEOUT = 5.0


@pytest.mark.parametrize("framing", ["gfi", "hdlc", "raw", "lencrc"])
async def test_loopback_round_trip(framing):
    async with SerialLink("loop://", framing=framing) as link:
        await link.wait_connected(TIMEOUT)
        msgs = [bytes([i]) * (i + 1) for i in range(20)]
        for m in msgs:
            assert link.send(m)
        assert [await link.recv(TIMEOUT) for _ in msgs] == msgs
        s = link.stats()
    assert s["frames_in"] == s["frames_out"] == 20 and s["connected"] == 1 and s["crc_errors"] == 0


async def test_counters_for_noise_crc_and_timeout_on_loopback():
    async with SerialLink("loop://", framing="raw", frame_timeout=0.05) as link:
        await link.wait_connected(TIMEOUT)
        bad = bytearray(encode_lencrc(b"hello"))
        bad[4] ^= 0xFF
        link.send_raw(b"noise" + bytes(bad) + encode_lencrc(b"ok") + encode_lencrc(b"partial")[:4])
        assert await link.recv(TIMEOUT) == b"ok"
        await asyncio.sleep(0.3)
        s = link.stats()
    assert s["crc_errors"] == 1 and s["resyncs"] >= 1 and s["timeouts"] == 1 and s["frames_in"] == 1
    assert s["discarded_bytes"] == 5 + len(bad) + 4


async def test_callback_gets_frame_info_and_handler_errors_are_counted():
    got = []

    def on_frame(payload, info):
        got.append((payload, info))
        if payload == b"boom":
            raise RuntimeError("handler bug")

    async with SerialLink("loop://", framing="hdlc", on_frame=on_frame) as link:
        await link.wait_connected(TIMEOUT)
        link.send(b"boom")
        link.send(b"fine")
        for _ in range(200):
            if len(got) == 2:
                break
            await asyncio.sleep(0.005)
        s = link.stats()
    assert [p for p, _ in got] == [b"boom", b"fine"] and s["handler_errors"] == 1
    assert got[1][1].hdlc.dest == 0x10 and got[1][1].hdlc.src == 0x01 and got[1][1].received_at > 0


def test_hdlc_addressing_by_role():
    srv = decode_hdlc(encoder("hdlc", HdlcParams(role="server"))(b"x"))
    cli = decode_hdlc(encoder("hdlc", HdlcParams(client=0x20, server=0x1234, role="client"))(b"x"))
    assert (srv.dest, srv.src, srv.control) == (0x10, 0x01, 0x13)
    assert (cli.dest, cli.src, cli.dest_len) == (0x1234, 0x20, 2)
    with pytest.raises(SerialLinkError):
        HdlcParams(role="peer")


async def test_oversize_for_hdlc_is_refused_and_counted():
    async with SerialLink("loop://", framing="hdlc") as link:
        await link.wait_connected(TIMEOUT)
        assert not link.send(bytes(3000))        # beyond one HDLC frame: no segmentation
        assert link.stats()["oversize_out"] == 1


async def test_bounded_output_queue_while_the_port_is_away(tmp_path):
    link = SerialLink(str(tmp_path / "nowhere"), framing="gfi", out_queue=3, min_backoff=0.01, max_backoff=0.02)
    await link.start()
    try:
        assert [link.send(b"m%d" % i) for i in range(5)] == [True, True, True, False, False]
        await asyncio.sleep(0.1)
        s = link.stats()
        assert s["queue_drops"] == 2 and s["queued"] == 3 and s["connect_failures"] >= 2 and s["connected"] == 0
    finally:
        await asyncio.wait_for(link.close(0.1), TIMEOUT)


async def test_port_that_appears_later_gets_the_queued_frames(tmp_path):
    if SOCAT is None:
        pytest.skip("socat not installed")
    pair = PtyPair(tmp_path / "p")
    link = SerialLink(pair.a, framing="gfi", min_backoff=0.01, max_backoff=0.05)
    await link.start()
    try:
        link.send(b"early")
        await asyncio.sleep(0.1)
        pair.start()
        async with SerialLink(pair.b, framing="gfi") as other:
            await link.wait_connected(TIMEOUT)
            assert await other.recv(TIMEOUT) == b"early"
    finally:
        await link.close()
        pair.stop()


async def test_socket_url():
    """`socket://` (pyserial's TCP URL) runs on the loop's TCP transport."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.setblocking(False)
    loop = asyncio.get_running_loop()
    port = srv.getsockname()[1]
    async with SerialLink(f"socket://127.0.0.1:{port}", framing="gfi") as link:
        conn, _ = await asyncio.wait_for(loop.sock_accept(srv), TIMEOUT)
        await link.wait_connected(TIMEOUT)
        link.send(b"\x01\x02")
        data = await asyncio.wait_for(loop.sock_recv(conn, 100), TIMEOUT)
        assert data == b"GBCS:DATA#0:2:0102\r\n"
        await loop.sock_sendall(conn, data)
        assert await link.recv(TIMEOUT) == b"\x01\x02"
        conn.close()
    srv.close()


async def test_close_is_clean_and_recv_after_close_raises():
    link = await SerialLink("loop://").start()
    await link.wait_connected(TIMEOUT)
    await asyncio.wait_for(link.close(), TIMEOUT)
    with pytest.raises(SerialLinkError):
        await link.recv(0.1)
    assert not link.send(b"x")


def test_bad_options():
    with pytest.raises(SerialLinkError):
        SerialLink("loop://", framing="slip")
    with pytest.raises(SerialLinkError):
        SerialLink("loop://", parity="X")
    with pytest.raises(ValueError):
        SerialLink("nosuchscheme://x")


def test_parse_port_options():
    assert parse_port_options("serial:///dev/ttyUSB0?framing=hdlc&baud=9600&parity=E") == \
        ("/dev/ttyUSB0", {"framing": "hdlc", "baudrate": 9600, "parity": "E"})
    assert parse_port_options("/dev/ttyS0") == ("/dev/ttyS0", {})
