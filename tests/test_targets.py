"""Devices under test outside the process (`hil.targets`) and the control channel (`hil.control`): URL parsing,
the sans-IO control handler, the asyncio control server/client, `hil serve`'s device behind it, and a TCP target
against a fake device (with and without control), its per-case deadlines and counters. Every wait is bounded."""
from __future__ import annotations

import asyncio
import json
import time

import pytest

from hil.control import (ControlClient, ControlClock, ControlError, ControlHandler, ControlNotImplemented,
                         ControlServer, ServedDevice, parse_hostport)
from hil.targets import TargetError, TcpTarget, _LoopThread, open_target, split_target_url

T0 = 1420070400.0


# ------------------------------------------------------------------------------------------------- URLs


def test_target_urls():
    assert split_target_url("inproc:")[0] == "inproc"
    assert split_target_url("tcp://127.0.0.1:4059") == ("tcp", "127.0.0.1:4059", {})
    kind, url, opts = split_target_url("serial:///dev/ttyUSB0?framing=hdlc&baud=9600&parity=e&eui=00db1234567890a0")
    assert (kind, url) == ("serial", "/dev/ttyUSB0")
    assert opts == {"framing": "hdlc", "baudrate": 9600, "parity": "E", "eui": "00DB1234567890A0"}
    # pyserial URLs keep their own options, ours are taken off
    assert split_target_url("socket://h:7000?logging=debug&eui=00DB1234567890A0")[:2] == \
        ("serial", "socket://h:7000?logging=debug")
    assert split_target_url("rfc2217://h:7000")[:2] == ("serial", "rfc2217://h:7000")
    assert split_target_url("/dev/ttyS0")[:2] == ("serial", "/dev/ttyS0")
    for bad in ("http://x", "tcp://nohost", "tcp://h:1?framing=hdlc", "serial:///dev/x?baud=fast",
                "serial:///dev/x?eui=12"):
        with pytest.raises(TargetError):
            split_target_url(bad)
    with pytest.raises(TargetError):
        open_target("inproc:", control="127.0.0.1:1")
    assert parse_hostport("127.0.0.1:80") == ("127.0.0.1", 80)
    assert parse_hostport("tcp://[::1]:80") == ("::1", 80)
    for bad in ("80", "h:", "h:x", "h:70000"):
        with pytest.raises(ControlError):
            parse_hostport(bad)


# ------------------------------------------------------------------------------------------------- control


class FakeDevice:
    """A Controlled device that records what it is told; its line counters are set by the test."""

    def __init__(self):
        self.now, self.calls, self.line_in, self.line_out = T0, [], 0, 0
        self.wakeup: float | None = None
        self.emit = lambda frame: None

    def info(self):
        return {"eui": "00DB1234567890A0", "device_type": "ESME", "speed": 0.0}

    def status(self):
        return {"now": self.now, "next_wakeup": self.wakeup, "line_in": self.line_in, "line_out": self.line_out}

    def reset(self, profile, now):
        self.calls.append(("reset", profile, now))
        self.now = T0 if now is None else now

    def set_clock(self, t):
        self.now = max(self.now, t)
        out = [b"\xdf\x09\x03tick"] if self.wakeup is not None and self.wakeup <= t else []
        self.wakeup = None if out else self.wakeup
        for f in out:
            self.emit(f)
        return out

    def inject_fault(self, target, result, at_execution):
        self.calls.append(("fault", target, result, at_execution))

    def prepare(self, condition, detail):
        if condition == "lived":
            raise NotImplementedError("ESME cannot be prepared for 'lived'")
        self.calls.append(("prepare", condition, detail))

    def stimulate(self, message_code, alert_code, detail):
        frame = bytes([0xDF, 0x09, 0x03]) + message_code.to_bytes(2, "big")
        self.emit(frame)
        return [frame]

    def certificates(self):
        return {"ds": b"\x30\x01", "ka": b"\x30\x02"}


def _ask(handler, **req) -> dict:
    return json.loads(handler.handle(json.dumps(req)))


def test_control_handler_ops_and_errors():
    dev = FakeDevice()
    h = ControlHandler(dev)
    info = _ask(h, id=1, op="info")
    assert info["ok"] and info["id"] == 1 and info["eui"] == "00DB1234567890A0" and "stimulate" in info["ops"]
    assert {"now", "next_wakeup", "line_in", "line_out"} <= set(info)          # every reply has the status
    assert _ask(h, id=2, op="reset", profile={"twin": True}, now=T0 + 5)["now"] == T0 + 5
    assert dev.calls[-1] == ("reset", {"twin": True}, T0 + 5)
    assert _ask(h, id=3, op="fault", target="x/a2", result="hardware-fault", at_execution=True)["ok"]
    assert dev.calls[-1] == ("fault", "x/a2", "hardware-fault", True)
    assert _ask(h, id=4, op="prepare", condition="device_joined", detail={"other_device": "AB"})["ok"]
    assert _ask(h, id=5, op="stimulate", message_code="0x8F30")["frames"] == ["DF09038F30"]
    dev.wakeup = T0 + 60
    r = _ask(h, id=6, op="clock", advance=100)
    assert r["frames"] == ["DF09037469636B"] and r["now"] == T0 + 105
    assert _ask(h, id=7, op="certificates")["ds"] == "3001"

    def err(**req):
        r = _ask(h, **req)
        assert r["ok"] is False and r["id"] == req.get("id")
        return r["error"]["type"]

    assert err(id=8, op="prepare", condition="lived") == "not_implemented"
    assert err(id=9, op="warp") == "unknown_op"
    assert err(id=10, op="clock") == "bad_request"
    assert err(id=11, op="clock", advance=-1) == "bad_request"
    assert err(id=12, op="fault", target="", result="x") == "bad_request"
    assert err(id=13, op="stimulate", message_code=True) == "bad_request"
    assert err(id=14, op="reset", now="tomorrow") == "bad_request"
    assert json.loads(h.handle(b"{not json"))["error"]["type"] == "bad_request"
    assert json.loads(h.handle(b"[1]"))["error"]["type"] == "bad_request"
    assert h.errors == 9


async def test_control_server_and_client():
    dev = FakeDevice()
    server = await ControlServer(ControlHandler(dev), "127.0.0.1", 0, max_clients=1).start()
    try:
        client = await ControlClient.connect(*server.address, timeout=2)
        assert (await client.call("info"))["device_type"] == "ESME"
        with pytest.raises(ControlNotImplemented) as e:
            await client.call("prepare", condition="lived")
        assert isinstance(e.value, NotImplementedError)
        with pytest.raises(ControlError) as e:
            await client.call("warp")
        assert e.value.kind == "unknown_op"
        # a second client is over max_clients: closed at once
        extra = await ControlClient.connect(*server.address, timeout=2)
        with pytest.raises(ControlError):
            await extra.call("info", timeout=2)
        await extra.close()
        assert server.rejected == 1
        await client.close()
        # a line longer than MAX_LINE closes that connection, the server carries on
        reader, writer = await asyncio.open_connection(*server.address)
        writer.write(b"x" * ((1 << 20) + 1) + b"\n")
        reply = await asyncio.wait_for(reader.readline(), 5)
        assert json.loads(reply)["error"]["type"] == "bad_request"
        try:                                                    # closed (reset: our unread bytes)
            assert await asyncio.wait_for(reader.read(), 5) == b""
        except ConnectionResetError:
            pass
        writer.close()
        client = await ControlClient.connect(*server.address, timeout=2)
        assert (await client.call("status"))["ok"]
        await client.close()
    finally:
        await server.close()


def test_served_device_resets_moves_the_clock_and_writes_frames_on_the_line(own_pki):
    """`hil serve`'s side: a reset is a fresh device with the same keys (profile applied, clock set back)."""
    from hil.serve import DeviceServer
    summary, ks = own_pki
    eui = summary.devices[0].hex().upper()
    server = DeviceServer("ESME", eui, ks, T0)
    written: list[bytes] = []
    clock = ControlClock(T0 + 1000, 0.0)
    dev = ServedDevice(server, clock, ks, written.append, lambda: {"frames_in": 3, "frames_out": 4, "queued": 1})
    first = server.device
    assert dev.status()["line_out"] == 5 and dev.status()["now"] == T0 + 1000
    dev.reset({"twin": True}, T0)
    assert server.device is not first and clock.now() == T0
    assert server.device.state != first.state                   # the twin build
    assert server.device.keys is not first.keys and server.device.keys.ds_certificate == first.keys.ds_certificate
    assert dev.certificates()["ds"] == first.keys.ds_certificate
    dev.set_clock(T0 + 10)
    assert clock.now() == T0 + 10
    dev.set_clock(T0)                                           # never back, except by reset
    assert clock.now() == T0 + 10
    with pytest.raises(NotImplementedError):
        dev.prepare("no such condition", {})
    dev.inject_fault("x/a2", "hardware-fault", False)
    assert server.device.faults is not None
    h = ControlHandler(dev)
    r = _ask(h, id=1, op="stimulate", message_code=0x8F30, alert_code=0x8F30)
    assert r["ok"] is False or [bytes.fromhex(f) for f in r["frames"]] == written


# ------------------------------------------------------------------------------------------------- TCP target


class FakeDut:
    """A device under test on TCP (GFI) in its own loop thread: answers each frame with `answers` frames; its
    control channel (FakeDevice) counts the line as the real one does."""

    def __init__(self, answers: int = 1, control: bool = True, lie: int = 0):
        from firmware_emu.fleet.wan import TcpWanServer
        self.thread = _LoopThread()
        self.dev = FakeDevice()
        self.answers, self.lie = answers, lie

        async def on_frame(frame, reply):
            self.dev.line_in += 1
            for i in range(self.answers):
                await reply(frame + bytes([i]))
                self.dev.line_out += 1
            self.dev.line_out += self.lie          # claims frames it never wrote

        def emit(frame):
            self.dev.line_out += 1
            asyncio.get_running_loop().create_task(self.server.send(frame))

        self.dev.emit = emit

        async def start():
            self.server = TcpWanServer(on_frame, framing="gfi")
            await self.server.start()
            self.ctl = await ControlServer(ControlHandler(self.dev)).start() if control else None

        self.thread.run(start(), 5)
        self.url = f"tcp://127.0.0.1:{self.server.address[1]}"
        self.control = "{}:{}".format(*self.ctl.address) if control else None

    def close(self):
        async def stop():
            if self.ctl is not None:
                await self.ctl.close()
            await self.server.close(grace=0.5)
        self.thread.run(stop(), 5)
        self.thread.close()


@pytest.fixture
def dut(request):
    d = FakeDut(**getattr(request, "param", {}))
    yield d
    d.close()


def test_tcp_target_with_control_waits_for_exactly_what_the_device_wrote(dut):
    with open_target(dut.url, control=dut.control, timeout=2) as t:
        assert isinstance(t, TcpTarget) and t.controlled and t.eui == "00DB1234567890A0"
        t.begin_case("00DB1234567890A0", T0, {"twin": True})
        assert dut.dev.calls[-1] == ("reset", {"twin": True}, T0)
        assert t.certificates() == {"ds": b"\x30\x01", "ka": b"\x30\x02"}
        assert t.send(b"\xdf\x09\x01cmd", T0) == [b"\xdf\x09\x01cmd\x00"]
        assert t.stimulate(0x8F30, 0x8F30, T0) == [b"\xdf\x09\x03\x8f\x30"]
        dut.dev.wakeup = T0 + 60
        assert t.next_wakeup() == T0 + 60
        assert t.tick(T0 + 60) == [b"\xdf\x09\x03tick"] and t.next_wakeup() is None
        t.inject_fault("x/a2", "hardware-fault")
        with pytest.raises(NotImplementedError):
            t.prepare("lived")
        assert not t.timed_out and t.stats()["stray_frames"] == 0


@pytest.mark.parametrize("dut", [{"lie": 1}], indirect=True)
def test_tcp_target_times_out_on_frames_the_line_never_delivered(dut):
    with open_target(dut.url, control=dut.control, timeout=0.3) as t:
        t.begin_case(None, T0)
        began = time.monotonic()
        assert t.send(b"\xdf\x09\x01cmd", T0) == [b"\xdf\x09\x01cmd\x00"]
        assert t.timed_out and 0.2 < time.monotonic() - began < 2
        assert t.stats()["line_losses"] == 1
        t.begin_case(None, T0)                                   # back in step: the next case is clean
        assert not t.timed_out
        t.send(b"\xdf\x09\x01cmd", T0)


@pytest.mark.parametrize("dut", [{"answers": 2, "control": False}], indirect=True)
def test_tcp_target_without_control_settles_on_the_expected_count(dut):
    with open_target(dut.url + "?eui=00DB1234567890A0", timeout=0.3,
                     certificates_for=lambda eui: {"ds": eui.encode()}) as t:
        assert not t.controlled and t.eui == "00DB1234567890A0"
        t.begin_case("00DB1234567890A0", T0)
        assert t.certificates() == {"ds": b"00DB1234567890A0"}
        frames = t.send(b"\xdf\x09\x01a", T0)
        assert frames == [] and t.next_wakeup() is None and t.tick(T0) == []
        assert t.settle(frames, 1) == [b"\xdf\x09\x01a\x00"] and not t.timed_out
        with pytest.raises(NotImplementedError):
            t.stimulate(0x8F30, None, T0)
        with pytest.raises(TargetError):
            t.inject_fault("x", "y")
        with pytest.raises(TargetError):
            t.begin_case(None, T0, {"twin": True})
        t.begin_case(None, T0)                                   # the second answer is late: drained, counted
        assert t.stray_frames == 1
        began = time.monotonic()
        got = t.settle(t.send(b"\xdf\x09\x01b", T0), 3)
        assert len(got) == 2 and t.timed_out and time.monotonic() - began < 2


def test_unreachable_targets_fail_fast(tmp_path):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    began = time.monotonic()
    with pytest.raises(TargetError, match="cannot connect"):
        open_target(f"tcp://127.0.0.1:{port}", timeout=0.5)
    with pytest.raises(TargetError, match="did not open"):
        open_target(f"serial://{tmp_path}/no-such-tty?framing=gfi", timeout=0.3)
    assert time.monotonic() - began < 5
