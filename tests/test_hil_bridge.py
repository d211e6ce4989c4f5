"""`hil bridge`: a device on a serial line (an emulated ESME served on one end of a socat pty pair) joins a head
end through the bridge on the other end: a TCP GFI listener (`TcpWanServer`) or the fleet's MQTT topic pair."""
from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from protocols.gbcs.message import decode
from firmware_emu.fleet.wan import TcpWanServer
from hil.bridge import Bridge, BridgeConfig, BridgeError, LatencyStats, parse_to
from hil.capture import read_capture
from hil.serve import ServeConfig

sys.path.insert(0, str(Path(__file__).parent))
import mqtt_broker as _broker  # noqa: E402
import pty_pair as _pty  # noqa: E402
import test_hil_serve as _serve  # noqa: E402
from test_hil_serve import T0, TIMEOUT, Served, check_response, ecs17a  # noqa: E402

# fixtures shared with other modules
mqtt_broker = _broker.mqtt_broker
pty_pair = _pty.pty_pair
rig = _serve.rig


class HeadEnd:
    """A TCP GFI listener as a head end's test tool: commands go to the bridge's connection, answers queue up."""

    def __init__(self, port: int = 0):
        self.got: asyncio.Queue = asyncio.Queue()
        self.server = TcpWanServer(self._on_frame, port=port, framing="gfi", housekeeping_interval=0.05)

    async def _on_frame(self, frame, origin) -> None:
        await self.got.put(frame)

    async def __aenter__(self):
        await self.server.start()
        return self

    async def __aexit__(self, *exc):
        await self.server.close(0.5)

    async def wait_client(self) -> str:
        for _ in range(int(TIMEOUT / 0.01)):
            if self.server.connections:
                return self.server.connections[-1]
            await asyncio.sleep(0.01)
        raise TimeoutError("the bridge did not connect")

    async def request(self, frame: bytes) -> bytes:
        assert await self.server.send(frame, to=await self.wait_client())
        return await asyncio.wait_for(self.got.get(), TIMEOUT)


def serve_cfg(rig) -> ServeConfig:
    return ServeConfig(port=rig["pair"].a, eui=rig["eui"], keystore=rig["keystore"], start=T0, speed=0.0,
                       certs=rig["tmp"] / "certs", frame_timeout=0.2)


async def test_bridge_pty_to_tcp_both_ways_with_capture(rig):
    rp = rig["rp"]
    cap = rig["tmp"] / "bridge.pcapng"
    async with HeadEnd() as he, Served(serve_cfg(rig)):
        b = await Bridge(BridgeConfig(port=rig["pair"].b, to=f"tcp://127.0.0.1:{he.server.port}",
                                      capture=cap)).start()
        try:
            for _ in range(3):
                check_response(rig, await he.request(rp.build(ecs17a(rp, rig["eui"]))), rp.last_counter)
            stats = b.stats()
        finally:
            await b.close()
    assert stats["serial"]["frames_in"] == 3 and stats["serial"]["frames_out"] == 3
    assert stats["net"]["frames_in"] == 3 and stats["net"]["frames_out"] == 3
    assert stats["latency_up_us"]["count"] == 3 and stats["latency_down_us"]["count"] == 3
    recs = read_capture(cap)
    assert [r.direction for r in recs] == ["out", "in"] * 3      # out = to the device, in = from it


async def test_bridge_reconnects_to_the_head_end_and_queues_meanwhile(rig):
    rp = rig["rp"]
    async with Served(serve_cfg(rig)) as s:
        he = HeadEnd()
        await he.server.start()
        port = he.server.port
        b = await Bridge(BridgeConfig(port=rig["pair"].b, to=f"tcp://127.0.0.1:{port}")).start()
        b.net.max_backoff = 0.1
        try:
            check_response(rig, await he.request(rp.build(ecs17a(rp, rig["eui"]))), rp.last_counter)
            await he.server.close(0.2)                      # the head end goes away
            for _ in range(100):
                if not b.net.connected.is_set():
                    break
                await asyncio.sleep(0.01)
            # an alert-like unsolicited frame from the device while the head end is away waits in the queue
            s.link.send(rp.build(ecs17a(rp, rig["eui"])))  # any frame: the bridge does not look inside
            await asyncio.sleep(0.1)
            he2 = HeadEnd(port)
            async with he2:
                await asyncio.wait_for(b.net.connected.wait(), TIMEOUT)
                queued = await asyncio.wait_for(he2.got.get(), TIMEOUT)
                assert decode(queued)["grouping_header"]["cra_flag"] == "command"
                check_response(rig, await he2.request(rp.build(ecs17a(rp, rig["eui"]))), rp.last_counter)
            stats = b.stats()
        finally:
            await b.close()
    assert stats["net"]["reconnects"] >= 1 and stats["net"]["disconnects"] >= 1
    assert stats["net"]["connect_failures"] >= 1


async def test_bridge_survives_the_serial_port_vanishing(rig):
    rp, pair = rig["rp"], rig["pair"]
    async with HeadEnd() as he, Served(serve_cfg(rig)) as s:
        b = await Bridge(BridgeConfig(port=pair.b, to=f"tcp://127.0.0.1:{he.server.port}")).start()
        b.serial.max_backoff = 0.1
        try:
            check_response(rig, await he.request(rp.build(ecs17a(rp, rig["eui"]))), rp.last_counter)
            pair.stop()
            await asyncio.sleep(0.3)
            pair.start()
            await b.serial.wait_connected(TIMEOUT)
            await s.link.wait_connected(TIMEOUT)
            check_response(rig, await he.request(rp.build(ecs17a(rp, rig["eui"]))), rp.last_counter)
            stats = b.stats()
        finally:
            await b.close()
    assert stats["serial"]["reconnects"] == 1 and stats["serial"]["disconnects"] == 1


async def test_bridge_to_the_fleet_mqtt_topics(rig, mqtt_broker):
    from firmware_emu.fleet.mqtt import MqttHeadEnd
    rp = rig["rp"]
    to = f"mqtt://{mqtt_broker.host}:{mqtt_broker.port}/{rig['eui']}"
    async with Served(serve_cfg(rig)):
        b = await Bridge(BridgeConfig(port=rig["pair"].b, to=to)).start()
        head = MqttHeadEnd(mqtt_broker.host, mqtt_broker.port, hubs=[rig["eui"]])
        await head.start()
        try:
            await head.wait_connected(TIMEOUT)
            await b.net.wan.wait_connected(TIMEOUT)
            frame = await head.request(rig["eui"], rp.build(ecs17a(rp, rig["eui"])), TIMEOUT)
            check_response(rig, frame, rp.last_counter)
        finally:
            await head.close()
            await b.close()


def test_parse_to():
    assert parse_to("tcp://127.0.0.1:4059") == ("tcp", "127.0.0.1", 4059, None)
    assert parse_to("mqtt://broker/00db000000000001") == ("mqtt", "broker", 1883, "00DB000000000001")
    for bad in ("udp://x:1", "tcp://host", "mqtt://host:1883/", "mqtt://h:1/notaneui"):
        with pytest.raises(BridgeError):
            parse_to(bad)


def test_latency_stats():
    s = LatencyStats(window=4)
    assert s.as_dict() == {"count": 0}
    for v in (1e-6, 2e-6, 3e-6, 100e-6, 4e-6):
        s.add(v)
    d = s.as_dict()
    assert d["count"] == 5 and d["max"] == 100.0 and d["mean"] == 22.0


def test_cli_bridge_usage_errors():
    from click.testing import CliRunner
    from firmware_emu.cli import main
    r = CliRunner().invoke(main, ["hil", "bridge", "--port", "loop://", "--to", "udp://x:1"])
    assert r.exit_code == 2 and "--to must be" in r.output
