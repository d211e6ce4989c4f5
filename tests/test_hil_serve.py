"""`hil serve`: an emulated ESME on one end of a socat pty pair, a head end (RemoteParty over a SerialLink) on
the other. Faults injected on the line are survived and counted; a vanished port comes back; state persists."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from protocols.framing import encode_gfi, encode_lencrc
from protocols.gbcs.message import decode
from protocols.security.keystore import Role
from hil.capture import read_capture
from hil.remote_party import RemoteParty
from hil.serial_link import HdlcParams, SerialLink
from hil.serve import ServeConfig, serve
from hil.verify import make_verifier

sys.path.insert(0, str(Path(__file__).parent))
import pty_pair as _pty  # noqa: E402

pty_pair = _pty.pty_pair   # the fixture (tests/pty_pair.py)

T0 = 1420070400.0
TIMEOUT = 5.0


def ecs17a(rp: RemoteParty, recipient: str) -> dict:
    """ECS17a Read ESME Energy Registers (Export Energy): non-critical, MAC only."""
    spec = {"kind": "get", "descriptor": {"class_id": 3, "instance_id": "1-0:2.8.0.255", "attribute_id": 2},
            "access_selection": None}
    return _dlms(rp, recipient, 0x0026, spec, {"type": "null-data", "value": None})


def ecs43(rp: RemoteParty, recipient: str) -> dict:
    """ECS43 Remotely Open the Load Switch: critical, replay-protected."""
    spec = {"kind": "action", "descriptor": {"class_id": 9, "instance_id": "0-0:10.0.106.255", "method_id": 1},
            "access_selection": None}
    return _dlms(rp, recipient, 0x0050, spec, {"type": "long-unsigned", "value": 52})


def _dlms(rp, recipient, code, spec, data) -> dict:
    return {"grouping_header": {"cra_flag": "command", "originator": rp.eui.hex().upper(), "recipient": recipient,
                                "date_time": None, "other_information": {"message_code": f"0x{code:04X}"}},
            "payload": {"dlms": {"access_request": {"long_invoke_id_and_priority": "20000000", "date_time": "",
                                                    "request_specifications": [spec], "data": [data]}}},
            "signature": ""}


@pytest.fixture
def rig(own_pki, pty_pair, tmp_path):
    summary, ks = own_pki
    eui = summary.devices[0].hex().upper()
    def party(role):
        return RemoteParty(ks, summary.organisations[role], counter_store=tmp_path / "counters.json",
                           initial_counter=1000)
    # ECS17a is a network operator's read; ECS43 a supplier's command
    return {"eui": eui, "rp": party(Role.NETWORK_OPERATOR), "sup": party(Role.SUPPLIER), "ks": ks, "keystore": ks.directories[0], "pair": pty_pair, "tmp": tmp_path}


class Served:
    """`serve` running as a task of the test's loop."""

    def __init__(self, cfg: ServeConfig):
        self.cfg, self.lines, self.stop = cfg, [], asyncio.Event()
        self.link = self.server = None
        self.counters = None

    async def __aenter__(self):
        ready = asyncio.Event()

        def on_ready(link, server):
            self.link, self.server = link, server
            ready.set()

        self.task = asyncio.create_task(serve(self.cfg, stop=self.stop, out=self.lines.append, ready=on_ready))
        await asyncio.wait_for(ready.wait(), TIMEOUT)
        await self.link.wait_connected(TIMEOUT)
        return self

    async def __aexit__(self, *exc):
        self.stop.set()
        self.counters = await asyncio.wait_for(self.task, TIMEOUT)


def config(rig, **kw) -> ServeConfig:
    base = dict(port=rig["pair"].a, eui=rig["eui"], keystore=rig["keystore"], device="esme", start=T0, speed=0.0,
                certs=rig["tmp"] / "certs", frame_timeout=0.2)
    base.update(kw)
    return ServeConfig(**base)


async def head_end(rig, framing="gfi", **kw) -> SerialLink:
    link = await SerialLink(rig["pair"].b, framing=framing, hdlc=HdlcParams(role="client"), **kw).start()
    await link.wait_connected(TIMEOUT)
    return link


def check_response(rig, frame: bytes, counter: int) -> dict:
    msg = decode(frame)
    assert msg["grouping_header"]["cra_flag"] == "response"
    assert msg["grouping_header"]["originator_counter"] == counter
    assert make_verifier(rig["ks"])(frame, msg)["mac"] == "valid"
    return msg


@pytest.mark.parametrize("framing", ["gfi", "hdlc", "raw"])
async def test_serve_answers_ecs17a_over_a_pty(rig, framing):
    capture = rig["tmp"] / "cap.pcapng"
    async with Served(config(rig, framing=framing, capture=capture)) as s:
        he = await head_end(rig, framing)
        try:
            rp = rig["rp"]
            frame = rp.build(ecs17a(rp, rig["eui"]))
            assert he.send(frame)
            check_response(rig, await he.recv(TIMEOUT), rp.last_counter)
        finally:
            await he.close()
    assert s.lines[0] == f"eui: {rig['eui']} (ESME)"
    assert s.lines[1] == f"certificates: {rig['tmp'] / 'certs'}"
    assert (rig["tmp"] / "certs" / f"{rig['eui'].lower()}-ds.pem").is_file()
    counters = json.loads(s.lines[-1].removeprefix("counters: "))
    assert counters["frames_in"] == 1 and counters["frames_out"] == 1 and counters["commands"] == 1
    recs = read_capture(capture)
    assert [r.direction for r in recs] == ["in", "out"] and recs[0].data == frame


async def test_faults_on_the_line_are_survived_and_counted(rig):
    """Noise between frames, a flipped byte, dropped bytes and a frame split across reads: every intact frame is
    answered, every broken one is counted, nothing hangs."""
    rp = rig["rp"]
    async with Served(config(rig, framing="raw")) as s:
        he = await head_end(rig, "raw")
        try:
            # noise between frames
            good = encode_lencrc(rp.build(ecs17a(rp, rig["eui"])))
            he.send_raw(b"\x00\xffnoise\x13" + good + b"more noise")
            check_response(rig, await he.recv(TIMEOUT), rp.last_counter)
            # a flipped byte: the CRC fails, no answer; the next intact frame is answered
            bad = bytearray(encode_lencrc(rp.build(ecs17a(rp, rig["eui"]))))
            bad[20] ^= 0x01
            he.send_raw(bytes(bad))
            # dropped bytes: a truncated frame, abandoned after the inter-frame timeout
            cut = encode_lencrc(rp.build(ecs17a(rp, rig["eui"])))
            he.send_raw(cut[:30])
            await asyncio.sleep(0.5)
            # a frame split across reads
            whole = encode_lencrc(rp.build(ecs17a(rp, rig["eui"])))
            for i in range(0, len(whole), 7):
                he.send_raw(whole[i:i + 7])
                await asyncio.sleep(0.01)
            check_response(rig, await he.recv(TIMEOUT), rp.last_counter)
            with pytest.raises(asyncio.TimeoutError):
                await he.recv(0.2)
        finally:
            await he.close()
    c = s.counters
    assert c["frames_in"] == 2 and c["commands"] == 2
    assert c["crc_errors"] >= 1, c
    assert c["timeouts"] >= 1, c
    assert c["resyncs"] >= 1 and c["discarded_bytes"] > 0, c


async def test_gfi_garbage_and_bad_lines_are_counted(rig):
    rp = rig["rp"]
    async with Served(config(rig, framing="gfi")) as s:
        he = await head_end(rig, "gfi")
        try:
            frame = rp.build(ecs17a(rp, rig["eui"]))
            line = encode_gfi(frame)
            he.send_raw(b"junk\r\n" + b"GBCS:DATA#0:5:ZZZZZZZZZZ\r\n" + line)
            check_response(rig, await he.recv(TIMEOUT), rp.last_counter)
        finally:
            await he.close()
    c = s.counters
    assert c["frames_in"] == 1 and c["syntax_errors"] >= 1 and c["resyncs"] >= 1, c


async def test_port_vanishes_and_comes_back(rig):
    rp, pair = rig["rp"], rig["pair"]
    async with Served(config(rig)) as s:
        he = await head_end(rig, max_backoff=0.2)
        try:
            he.send(rp.build(ecs17a(rp, rig["eui"])))
            check_response(rig, await he.recv(TIMEOUT), rp.last_counter)
            pair.stop()                      # the cable is pulled
            await asyncio.sleep(0.5)
            assert not s.link.connected
            pair.start()                     # ... and plugged back: same link names, new ptys
            await s.link.wait_connected(TIMEOUT)
            await he.wait_connected(TIMEOUT)
            await asyncio.sleep(0.05)
            he.send(rp.build(ecs17a(rp, rig["eui"])))
            check_response(rig, await he.recv(TIMEOUT), rp.last_counter)
        finally:
            await he.close()
    c = s.counters
    assert c["disconnects"] == 1 and c["reconnects"] == 1 and c["frames_in"] == 2, c


async def test_state_carries_on_after_a_restart(rig):
    """With --state, a replay-protected command accepted before a restart is refused after it."""
    rp = rig["sup"]
    cfg = config(rig, state=rig["tmp"] / "state.db")
    frame = rp.build(ecs43(rp, rig["eui"]))
    async with Served(cfg) as s:
        he = await head_end(rig)
        try:
            he.send(frame)
            assert decode(await he.recv(TIMEOUT))["grouping_header"]["cra_flag"] == "response"
        finally:
            await he.close()
    async with Served(cfg) as s:
        he = await head_end(rig)
        try:
            he.send(frame)
            msg = decode(await he.recv(TIMEOUT))
            assert msg["grouping_header"]["cra_flag"] == "alert"      # replay refused: the counter persisted
        finally:
            await he.close()
    assert "resumed from" in s.lines[0]


def test_cli_serve_prints_identity_and_counters(rig):
    """The console script: identity lines first, counters as JSON last, clean exit on SIGINT."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "firmware_emu.cli", "hil", "serve", "--port", rig["pair"].a, "--eui", rig["eui"],
           "--keystore", str(rig["keystore"]), "--certs", str(rig["tmp"] / "c"), "--start", "2015-01-01T00:00:00Z",
           "--speed", "0", "--capture", str(rig["tmp"] / "cap.jsonl")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=Path(__file__).resolve().parents[1])
    try:
        lines = [proc.stdout.readline() for _ in range(3)]
        assert lines[0].startswith(f"eui: {rig['eui']}") and lines[2].startswith("serving on ")

        async def talk():
            he = await head_end(rig)
            try:
                rp = rig["rp"]
                he.send(rp.build(ecs17a(rp, rig["eui"])))
                # a cold process's first frame (imports, keys): generous on a loaded CI machine
                check_response(rig, await he.recv(6 * TIMEOUT), rp.last_counter)
            finally:
                await he.close()

        asyncio.run(talk())
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    last = out.strip().splitlines()[-1]
    assert json.loads(last.removeprefix("counters: "))["frames_out"] == 1
    assert [r.direction for r in read_capture(rig["tmp"] / "cap.jsonl")] == ["in", "out"]


def test_cli_serve_usage_errors(tmp_path):
    from click.testing import CliRunner
    from firmware_emu.cli import main
    r = CliRunner().invoke(main, ["hil", "serve", "--port", "loop://", "--eui", "00DB000000000001", "--keystore",
                                  str(tmp_path), "--capture", str(tmp_path / "x.txt")])
    assert r.exit_code == 2 and "pcapng" in r.output
