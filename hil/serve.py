"""`gbcs-emu hil serve`: an emulated device answering GBCS on a serial line, so a real hub, a test tool or the
conformance runner (`--target serial://...`) can talk to it as to a meter on a bench.

Theory of operation
-------------------
    serial port ──SerialLink (framing, reconnect)──▶ frame ──▶ DeviceServer.receive(frame, clock.now())
         ▲                                                          │ (commit first, with --state)
         └──────────────── link.send(response / alerts) ◀───────────┘
    timer task: sleeps until device.next_wakeup() (sim time → real time by --speed) ─▶ tick ─▶ link.send

* **Provisioning** is the RTDS runner's (`hil.conformance.rtds._Provisioner`): `device_keys(keystore, eui,
  issuer=PkiIssuer(seed))`, so a keystore without the device's private keys (RTDS) gets a self-issued DS key
  pair (deterministic for a seed: the same seed gives the same certificates as `conformance rtds --save`), and
  trust anchors from `default_anchors(keystore)`. The device's own DS and KA certificates are written to a
  directory (`<eui>-ds.pem`, `<eui>-ka.pem`) so a test tool can check its signatures and MACs.
* **Device types**: `esme`, `gsme` (answers directly on the line: no HAN, no wake cycle), `hub` = the CHF
  alone. Not a whole premises: commissioning a premises needs the head end's private keys (an own PKI), which
  an RTDS keystore lacks, and a hub test tool addresses the CHF; HAN devices behind a hub are the fleet's job.
* **Time** is a `SimClock` from `--start` (default: now) at `--speed` (1 = real time, 0 = frozen: the
  conformance setting, where every command sees the start time).
* **Control** (`--control HOST:PORT`, `hil.control`): a JSON-lines TCP side channel for a conformance runner
  (reset to a fresh device with a profile, clock, faults, prepare, stimulate, certificates); the serial line
  stays pure GBCS, and frames a control action makes the device emit are written on it too.
* **Persistence** (`--state DB`): the device lives in a `core.host.DeviceHost` over a `StateStore`; a command's
  new state is committed before its response is written, and a restart with the same DB carries on (counters,
  schedule, object model) instead of provisioning a fresh device.

Frames are handled one at a time in arrival order (the link's callback runs the device synchronously), which
GBCS replay counters need.
"""
from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from protocols.errors import GbcsEmuError
from protocols.security.eui import as_eui, eui_hex
from protocols.security.keystore import Keystore

from hil.capture import open_capture, tap
from hil.serial_link import FrameInfo, HdlcParams, SerialLink

__all__ = ["ServeConfig", "DeviceServer", "serve", "DEVICE_CHOICES", "ServeError", "write_certificates"]

log = logging.getLogger(__name__)

#: `--device` name → emulated device type.
DEVICE_CHOICES = {"esme": "ESME", "gsme": "GSME", "hub": "CHF"}
#: Longest real-time sleep of the timer task (it re-checks the device's next wake-up at least this often).
MAX_IDLE = 1.0


class ServeError(GbcsEmuError):
    """A device that cannot be served (unknown type, keys missing, state of another device)."""


@dataclass
class ServeConfig:
    port: str
    eui: str
    keystore: Path
    device: str = "esme"
    framing: str = "gfi"
    baudrate: int = 115200
    parity: str = "N"
    capture: Path | None = None
    start: float | None = None          # UTC epoch seconds; None: now
    speed: float = 1.0
    state: Path | None = None
    certs: Path | None = None
    seed: int = 1
    frame_timeout: float = 0.5
    hdlc: HdlcParams = field(default_factory=lambda: HdlcParams(role="server"))
    control: str | None = None          # HOST:PORT of the control channel (hil.control); None: no control


def write_certificates(directory: Path, eui: str, device) -> dict[str, Path]:
    """The device's DS and KA certificates as PEM (`<eui>-ds.pem`, `<eui>-ka.pem`), the RTDS keystore layout."""
    from firmware_emu.core.provisioning import certificate_pem
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for usage, der in (("ds", device.keys.ds_certificate), ("ka", device.keys.ka_certificate)):
        if der:
            p = directory / f"{eui.lower()}-{usage}.pem"
            p.write_bytes(certificate_pem(der))
            out[usage] = p
    return out


class DeviceServer:
    """One emulated device, provisioned as the RTDS runner does, optionally persistent (sans-IO: frames and
    times in, frames out)."""

    def __init__(self, device_type: str, eui, keystore: Keystore, now: float, *, state: Path | None = None,
                 seed: int = 1):
        from firmware_emu.core.provisioning import default_anchors, device_keys
        from firmware_emu.devices import device_class
        from protocols.security.pki import PkiIssuer
        self.device_type = device_type.upper()
        self.eui = eui_hex(as_eui(eui))
        cls = device_class(self.device_type)
        if cls is None:
            raise ServeError(f"{self.device_type} is not emulated")
        self.keys = device_keys(keystore, self.eui, issuer=PkiIssuer(seed=seed))
        anchors = default_anchors(keystore)
        self.host = None
        self.store = None
        self.resumed = False
        if state is None:
            self.device = cls(self.keys, anchors=anchors, now=now)
            return
        from firmware_emu.core.host import DeviceHost
        from firmware_emu.core.store import StateStore
        self.store = StateStore(str(state))

        def factory(eui: str, dtype: str, st: dict | None):
            if dtype.upper() != self.device_type:
                raise ServeError(f"{state} holds {eui} as a {dtype}, not a {self.device_type}")
            return cls(self.keys, st, anchors=anchors, now=now)

        self.host = DeviceHost(self.store, factory, max_cached=4)
        self.device = self.host.device(self.eui)
        if self.device is None:
            self.device = cls(self.keys, anchors=anchors, now=now)
            self.host.add(self.device)
        else:
            self.resumed = True

    def receive(self, frame: bytes, now: float) -> list[bytes]:
        if self.host is not None:
            return [e.frame for e in self.host.receive(self.eui, frame, now)]
        return [e.frame for e in self.device.receive(frame, now)]

    def tick(self, now: float) -> list[bytes]:
        if self.host is not None:
            return [e.frame for e in self.host.tick(self.eui, now)]
        return [e.frame for e in self.device.tick(now)]

    def next_wakeup(self) -> float | None:
        return self.device.next_wakeup()

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


async def serve(cfg: ServeConfig, *, stop: asyncio.Event | None = None, out: Callable[[str], None] = print,
                ready: Callable[[SerialLink, DeviceServer], None] | None = None) -> dict:
    """Serve until `stop` is set (or cancelled); print the EUI, certificates and port first and the counters
    last; return the counters."""
    from firmware_emu.core.clock import SimClock
    device_type = DEVICE_CHOICES.get(cfg.device.lower())
    if device_type is None:
        raise ServeError(f"unknown device {cfg.device!r}; known: {', '.join(DEVICE_CHOICES)}")
    keystore = Keystore(Path(cfg.keystore))
    t_start = time.time() if cfg.start is None else cfg.start
    if cfg.control:
        from hil.control import ControlClock, parse_hostport
        control_addr = parse_hostport(cfg.control)
        clock = ControlClock(t_start, cfg.speed)     # a control reset may set it back for a fresh device
    else:
        clock = SimClock(t_start, cfg.speed)
    server = DeviceServer(device_type, cfg.eui, keystore, clock.now(), state=cfg.state, seed=cfg.seed)
    certs = Path(cfg.certs) if cfg.certs else Path(tempfile.mkdtemp(prefix="gbcs-emu-hil-"))
    write_certificates(certs, server.eui, server.device)
    capture = open_capture(cfg.capture, [("serial", cfg.port)]) if cfg.capture else None
    stop = stop or asyncio.Event()
    wake = asyncio.Event()
    stats = {"commands": 0, "frames_sent": 0, "ticks_with_output": 0, "device_errors": 0}
    link: SerialLink

    def on_frame(payload: bytes, info: FrameInfo) -> None:
        stats["commands"] += 1
        try:
            frames = server.receive(payload, clock.now())
        except GbcsEmuError as e:
            stats["device_errors"] += 1
            log.warning("device refused a frame: %s", e)
            return
        for f in frames:
            link.send(f)
        stats["frames_sent"] += len(frames)
        wake.set()

    link = SerialLink(cfg.port, framing=cfg.framing, baudrate=cfg.baudrate, parity=cfg.parity, hdlc=cfg.hdlc,
                      frame_timeout=cfg.frame_timeout, on_frame=on_frame, capture=tap(capture))
    out(f"eui: {server.eui} ({server.device_type}{', resumed from ' + str(cfg.state) if server.resumed else ''})")
    out(f"certificates: {certs}")
    out(f"serving on {cfg.port} ({cfg.framing}, {cfg.baudrate} 8{cfg.parity.upper()[:1]}1)")
    control = None
    if cfg.control:
        from hil.control import ControlHandler, ControlServer, ServedDevice
        control = await ControlServer(ControlHandler(ServedDevice(server, clock, keystore, link.send, link.stats)),
                                      *control_addr).start()
        out("control on {}:{}".format(*control.address))
    await link.start()
    if ready is not None:
        ready(link, server)

    async def timers() -> None:
        while True:
            now = clock.now()
            t = server.next_wakeup()
            if t is not None and t <= now:
                frames = server.tick(now)
                if frames:
                    stats["ticks_with_output"] += 1
                    stats["frames_sent"] += len(frames)
                for f in frames:
                    link.send(f)
                if server.next_wakeup() == t:    # a timer that does not move on must not spin
                    await asyncio.sleep(MAX_IDLE)
                continue
            delay = MAX_IDLE if t is None or clock.speed == 0 else min(MAX_IDLE, (t - now) / clock.speed)
            wake.clear()
            try:
                await asyncio.wait_for(wake.wait(), max(delay, 0.001))
            except asyncio.TimeoutError:
                pass

    timer_task = asyncio.create_task(timers(), name="hil-serve-timers")
    try:
        await stop.wait()
    finally:
        timer_task.cancel()
        await asyncio.gather(timer_task, return_exceptions=True)
        if control is not None:
            await control.close()
        await link.close()
        server.close()
        if capture is not None:
            capture.close()
        counters = {**link.stats(), **stats}
        if capture is not None:
            counters["captured"] = capture.frames
        out("counters: " + json.dumps(counters, separators=(",", ":")))
    return counters
