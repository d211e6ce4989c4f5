"""The TCP WAN adapter: GFI text and binary (lencrc) framing, many clients, garbage, disconnects, bounds."""
from __future__ import annotations

import asyncio
import socket

import pytest

from protocols.framing.gfi import encode_gfi
from protocols.framing.lencrc import encode_lencrc
from protocols.gbcs.message import decode
from hil.verify import make_verifier

from firmware_emu.fleet.wan import (FrameTooLarge, Origin, TcpWanClient, TcpWanServer, WanAdapter, WanClosed,
                                    WanError)

T0 = 1420070400.0  # 2015-01-01T00:00:00Z
FRAMINGS = ("gfi", "lencrc")
ENCODE = {"gfi": encode_gfi, "lencrc": encode_lencrc}


async def echo(frame: bytes, reply: Origin) -> None:
    await reply(frame)


async def until(cond, timeout: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.01)


@pytest.fixture(params=FRAMINGS)
def framing(request):
    return request.param


async def test_round_trip_echo(framing):
    seen = []

    async def handler(frame, reply):
        seen.append((reply.hint, reply.source, type(reply.received_at)))
        await reply(frame[::-1])

    async with TcpWanServer(handler, framing=framing) as server:
        assert isinstance(server, WanAdapter)
        async with await TcpWanClient.connect("127.0.0.1", server.port, framing=framing) as client:
            assert await client.request(b"\xDD\x00\x01\x02") == b"\x02\x01\x00\xDD"
            assert await client.request(bytes(range(256)) * 4) == (bytes(range(256)) * 4)[::-1]
        st = server.stats()
    assert seen[0] == (None, "tcp-1", float)
    assert st["frames_in"] == st["frames_out"] == 2
    assert st["bytes_in"] == st["bytes_out"] > 1024
    assert st["framing_errors"] == st["resyncs"] == st["handler_errors"] == 0


async def test_gfi_wire_format_and_channel_echo():
    async with TcpWanServer(echo, framing="gfi") as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GBCS:DATA#3:2:abcd\r\n")   # lower-case hex is accepted, channel 3 is answered on 3
        line = await asyncio.wait_for(reader.readline(), 3)
        assert line == b"GBCS:DATA#3:2:ABCD\r\n"
        writer.close()


async def test_binary_wire_format_is_lencrc():
    async with TcpWanServer(echo, framing="binary") as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(encode_lencrc(b"\x01\x02\x03"))
        got = await asyncio.wait_for(reader.readexactly(8), 3)
        assert got == encode_lencrc(b"\x01\x02\x03") and got[:3] == b"\xA5\x00\x03"
        writer.close()


def ecs17a(rp, recipient: str) -> dict:
    """ECS17a Read ESME Energy Registers (Export Energy): non-critical, MAC only."""
    spec = {"kind": "get", "descriptor": {"class_id": 3, "instance_id": "1-0:2.8.0.255", "attribute_id": 2},
            "access_selection": None}
    return {"grouping_header": {"cra_flag": "command", "originator": rp.eui.hex().upper(), "recipient": recipient,
                                "date_time": None, "other_information": {"message_code": "0x0026"}},
            "payload": {"dlms": {"access_request": {"long_invoke_id_and_priority": "20000000", "date_time": "",
                                                    "request_specifications": [spec],
                                                    "data": [{"type": "null-data", "value": None}]}}},
            "signature": ""}


@pytest.fixture
def network_operator(own_pki, tmp_path):
    """The network operator of `own_pki` as a head end (ECS17a is a network-operator read)."""
    from hil.remote_party import RemoteParty
    from protocols.security.keystore import Role
    summary, keystore = own_pki
    return RemoteParty(keystore, summary.organisations[Role.NETWORK_OPERATOR],
                       counter_store=tmp_path / "no-counters.json", initial_counter=1000)


async def test_a_real_esme_answers_an_ecs17a_read_whose_mac_verifies(own_pki, esme, network_operator, supplier,
                                                                     framing):
    """The device core behind the adapter: the response travels back on the command's connection, MAC intact;
    an alert the device raises goes to the connected clients."""
    async def device(frame: bytes, reply: Origin) -> None:
        for out in esme.receive(frame, T0):
            if out.kind == "response":
                await reply(out.frame)
            else:
                await server.send(out.frame)

    verify = make_verifier(own_pki[1])
    no = network_operator
    server = TcpWanServer(device, framing=framing)
    async with server:
        async with await TcpWanClient.connect("127.0.0.1", server.port, framing=framing) as client:
            for _ in range(3):
                response = await client.request(no.build(ecs17a(no, esme.eui.hex().upper())))
                msg = decode(response)
                assert msg["grouping_header"]["cra_flag"] == "response"
                assert msg["grouping_header"]["originator_counter"] == no.last_counter
                assert msg["grouping_header"]["recipient"] == no.eui.hex().upper()
                assert verify(response, msg)["mac"] == "valid"
            # the supplier may not read export energy: the device raises an alert, which reaches the client too
            alert = await client.request(supplier.build(ecs17a(supplier, esme.eui.hex().upper())))
            msg = decode(alert)
            assert msg["grouping_header"]["cra_flag"] == "alert"
            assert verify(alert, msg)["signature"] == "valid"
        assert server.stats()["frames_out"] == 4


async def test_garbage_between_frames_is_skipped_and_counted(framing):
    enc = ENCODE[framing]
    async with TcpWanServer(echo, framing=framing) as server:
        async with await TcpWanClient.connect("127.0.0.1", server.port, framing=framing) as client:
            await client.send_raw(b"hello\x00\xff\r\n" + enc(b"one") + b"GBCS:JUNK\r\n\x5A\x5A" + enc(b"two")
                                  + b"trailing noise")
            assert await client.recv() == b"one"
            assert await client.recv() == b"two"
            assert await client.request(b"three") == b"three"
        st = server.stats()
    assert st["frames_in"] == 3
    assert st["resyncs"] >= 2 and st["discarded_bytes"] >= len(b"hello\x00\xff\r\n") + len(b"trailing noise")


async def test_a_frame_split_across_writes(framing):
    wire = ENCODE[framing](b"split across many writes")
    async with TcpWanServer(echo, framing=framing) as server:
        async with await TcpWanClient.connect("127.0.0.1", server.port, framing=framing) as client:
            for i in range(0, len(wire), 3):
                await client.send_raw(wire[i:i + 3])
                await asyncio.sleep(0.002)
            assert await client.recv() == b"split across many writes"
            # and two frames in one write
            await client.send_raw(ENCODE[framing](b"a") + ENCODE[framing](b"b"))
            assert [await client.recv(), await client.recv()] == [b"a", b"b"]
        assert server.stats()["framing_errors"] == 0


async def test_client_disconnect_mid_frame_does_not_hurt_the_server(framing):
    wire = ENCODE[framing](b"never finished")
    async with TcpWanServer(echo, framing=framing) as server:
        for _ in range(3):
            quitter = await TcpWanClient.connect("127.0.0.1", server.port, framing=framing)
            await quitter.send_raw(wire[: len(wire) // 2])
            await quitter.close()
        # and one that resets the connection under the server's feet
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall(wire[:5])
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
        await until(lambda: server.stats()["disconnects"] == 4)
        async with await TcpWanClient.connect("127.0.0.1", server.port, framing=framing) as client:
            assert await client.request(b"still here") == b"still here"
        st = server.stats()
    assert st["frames_in"] == 1 and st["connections_total"] == 5


async def test_oversize_frame_is_refused_and_counted(framing):
    async with TcpWanServer(echo, framing=framing, max_payload=64) as server:
        async with await TcpWanClient.connect("127.0.0.1", server.port, framing=framing) as client:
            await client.send(b"\x11" * 100)          # over the server's limit
            assert await client.request(b"ok") == b"ok"  # the next frame is served
            with pytest.raises(FrameTooLarge):
                await server.send(b"\x22" * 65)          # and the server refuses to send one
        st = server.stats()
    assert st["oversize"] == 1 and st["framing_errors"] == 1 and st["frames_in"] == 1


async def test_partial_frame_times_out_and_the_stream_recovers(framing):
    wire = ENCODE[framing](b"late")
    async with TcpWanServer(echo, framing=framing, frame_timeout=0.1, housekeeping_interval=0.02) as server:
        async with await TcpWanClient.connect("127.0.0.1", server.port, framing=framing) as client:
            await client.send_raw(wire[:4])
            await until(lambda: server.stats()["framing_errors"] == 1)
            assert await client.request(b"fresh") == b"fresh"


async def test_many_concurrent_clients():
    async with TcpWanServer(echo, framing="gfi") as server:
        async def one(i: int) -> None:
            async with await TcpWanClient.connect("127.0.0.1", server.port) as client:
                for j in range(20):
                    payload = b"%d/%d" % (i, j)
                    assert await client.request(payload) == payload

        await asyncio.gather(*(one(i) for i in range(50)))
        st = server.stats()
    assert st["frames_in"] == st["frames_out"] == 1000 and st["connections_total"] == 50


async def test_pipelined_commands_are_answered_in_order():
    async with TcpWanServer(echo, framing="lencrc") as server:
        async with await TcpWanClient.connect("127.0.0.1", server.port, framing="lencrc") as client:
            for i in range(500):
                await client.send(i.to_bytes(2, "big"))
            assert [int.from_bytes(await client.recv(), "big") for _ in range(500)] == list(range(500))


async def test_a_failing_handler_does_not_drop_the_connection():
    async def flaky(frame, reply):
        if frame == b"boom":
            raise RuntimeError("handler bug")
        await reply(frame)

    async with TcpWanServer(flaky) as server:
        async with await TcpWanClient.connect("127.0.0.1", server.port) as client:
            await client.send(b"boom")
            assert await client.request(b"after") == b"after"
        assert server.stats()["handler_errors"] == 1


async def test_alerts_reach_every_client_and_wait_in_a_backlog_when_none_is_connected():
    async with TcpWanServer(echo) as server:
        assert await server.send(b"early alert")       # nobody connected: backlog
        a = await TcpWanClient.connect("127.0.0.1", server.port)
        assert await a.recv() == b"early alert"
        b = await TcpWanClient.connect("127.0.0.1", server.port)
        await until(lambda: len(server.connections) == 2)
        assert await server.send(b"to all", to="0123456789ABCDEF")   # a hub EUI: by the alert policy
        assert await a.recv() == b"to all" and await b.recv() == b"to all"
        second = server.connections[1]
        assert await server.send(b"to one", to=second)
        assert await b.recv() == b"to one"
        with pytest.raises(asyncio.TimeoutError):
            await a.recv(timeout=0.1)
        assert not await server.send(b"gone", to="tcp-999")
        await a.close()
        await b.close()
        assert server.stats()["undeliverable"] == 1


async def test_alert_policy_oldest_and_unknown_policy():
    with pytest.raises(WanError):
        TcpWanServer(echo, alert_policy="random")
    with pytest.raises(WanError):
        TcpWanServer(echo, framing="morse")
    async with TcpWanServer(echo, alert_policy="oldest") as server:
        a = await TcpWanClient.connect("127.0.0.1", server.port)
        b = await TcpWanClient.connect("127.0.0.1", server.port)
        await until(lambda: len(server.connections) == 2)
        await server.send(b"alert")
        assert await a.recv() == b"alert"
        with pytest.raises(asyncio.TimeoutError):
            await b.recv(timeout=0.1)
        await a.close()
        await b.close()


async def test_idle_connections_are_closed():
    async with TcpWanServer(echo, idle_timeout=0.2, housekeeping_interval=0.02) as server:
        client = await TcpWanClient.connect("127.0.0.1", server.port)
        assert await client.request(b"x") == b"x"
        with pytest.raises(WanClosed):
            await client.recv(timeout=3)
        assert server.stats()["idle_timeouts"] == 1
        await client.close()


async def test_max_clients():
    async with TcpWanServer(echo, max_clients=2) as server:
        a = await TcpWanClient.connect("127.0.0.1", server.port)
        b = await TcpWanClient.connect("127.0.0.1", server.port)
        await until(lambda: len(server.connections) == 2)
        c = await TcpWanClient.connect("127.0.0.1", server.port)
        with pytest.raises(WanClosed):
            await c.recv(timeout=3)
        assert await a.request(b"fine") == b"fine"
        assert server.stats()["rejected_connections"] == 1
        for cl in (a, b, c):
            await cl.close()


async def test_a_client_that_does_not_read_loses_frames_not_the_server_memory():
    async def flood(frame, reply):
        for _ in range(400):
            await reply(b"\x00" * 60000)

    async with TcpWanServer(flood, framing="lencrc", max_write_buffer=256 * 1024) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(encode_lencrc(b"go"))
        await until(lambda: server.stats()["frames_in"] == 1 and server.stats()["frames_out"]
                    + server.stats()["queue_drops"] == 400)
        st = server.stats()
        assert st["queue_drops"] > 0
        writer.close()


async def test_graceful_close_finishes_the_running_command():
    started = asyncio.Event()

    async def slow(frame, reply):
        started.set()
        await asyncio.sleep(0.2)
        await reply(frame)

    server = TcpWanServer(slow)
    await server.start()
    client = await TcpWanClient.connect("127.0.0.1", server.port)
    await client.send(b"slow one")
    await started.wait()
    await server.close(grace=2.0)
    assert await client.recv() == b"slow one"
    with pytest.raises(WanClosed):
        await client.recv(timeout=2)
    with pytest.raises(OSError):
        await TcpWanClient.connect("127.0.0.1", server.port, timeout=1)
    await client.close()


async def test_answers_of_one_loop_pass_leave_in_one_send_and_a_close_flushes_them(monkeypatch):
    """A batch of answers written without yielding is one transport write; closing right after loses none."""
    writes: list[int] = []
    held: list[Origin] = []

    async def hold(frame, reply):
        held.append((frame, reply))

    async with TcpWanServer(hold, framing="gfi") as server:
        async with await TcpWanClient.connect("127.0.0.1", server.port, framing="gfi") as client:
            for i in range(50):
                await client.send(i.to_bytes(2, "big"))
            await until(lambda: len(held) == 50)
            conn = next(iter(server._conns.values()))
            real = conn.writer.write
            monkeypatch.setattr(conn.writer, "write", lambda data: (writes.append(len(data)), real(data))[1])
            for frame, reply in held[:25]:                 # one pass of the loop: no await in between suspends
                assert await reply(frame)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            assert len(writes) == 1
            for frame, reply in held[25:]:
                assert await reply(frame)
            server._close_conn(conn)                       # before the scheduled flush ran
            got = [int.from_bytes(await client.recv(), "big") for _ in range(50)]
            assert got == list(range(50)) and len(writes) == 2
    assert server.stats()["frames_out"] == 50
