"""`gbcs-emu hil bridge`: a real device on a serial line joins a head end (TCP, GFI or length+CRC framing) or the
fleet's MQTT topic pair as a hub, frames both ways, each side reconnecting on its own.

Theory of operation
-------------------
    device ══serial══▶ SerialLink.on_frame ──(up)──▶ net side: TCP write now / MQTT publish queue
    device ◀══serial══ SerialLink.send ◀──(down)── net side: each deframed TCP frame / MQTT message

No task sits between the two sides: a frame deframed on one side is written on the other inside the same
callback, so the bridge adds one deframe + one encode + one write per frame. What the other side cannot take
right now waits in a bounded queue (the serial link's output queue; the TCP side's `pending`, `out_queue`
frames, filled while the head end is away and flushed on reconnection; MQTT's publish queue) and overflow is
dropped and counted, never buffered without bound.

    TCP side:  CONNECTING ──ok──▶ UP ──EOF / error──▶ backoff (min_backoff doubling to max_backoff) ──▶ CONNECTING
    MQTT side: `firmware_emu.fleet.mqtt.MqttWan` serving one hub: `<prefix>/<hub>/down` in, `/up` out

Latency per frame (`latency_up_us`, `latency_down_us`: mean, p50, p99, max) is the loop clock from the moment
the frame's last byte was read on one side to the moment its bytes were handed to the other side's transport
(written to the kernel, or queued when the transport is flow-controlled). `bench/serial.py` measures it.
"""
from __future__ import annotations

import asyncio
import collections
import json
import logging
import random
import statistics
import urllib.parse
from dataclasses import dataclass
from typing import Callable

from protocols.errors import GbcsEmuError
from protocols.framing import Frame, FrameError, make_deframer
from protocols.security.eui import as_eui, eui_hex

from firmware_emu.fleet.wan import FRAMINGS as TCP_FRAMINGS, WanCounters, encode_frame, wire_max_frame
from hil.capture import open_capture, tap
from hil.serial_link import FrameInfo, HdlcParams, SerialLink

__all__ = ["BridgeConfig", "Bridge", "BridgeError", "LatencyStats", "TcpSide", "MqttSide", "parse_to", "bridge"]

log = logging.getLogger(__name__)

_READ_CHUNK = 1 << 16
TCP_MAX_PAYLOAD = 0xFFFF


class BridgeError(GbcsEmuError):
    """A bridge that cannot be set up (bad `--to`, unknown framing)."""


class LatencyStats:
    """Per-frame latencies: count, mean and max over all frames, p50/p99 over the last `window`."""

    def __init__(self, window: int = 8192):
        self.count, self.total, self.max = 0, 0.0, 0.0
        self._recent: collections.deque[float] = collections.deque(maxlen=window)

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        self.max = max(self.max, seconds)
        self._recent.append(seconds)

    def as_dict(self) -> dict:
        """Microseconds."""
        if not self.count:
            return {"count": 0}
        recent = sorted(self._recent)
        pick = lambda q: recent[min(len(recent) - 1, int(q * len(recent)))]  # noqa: E731
        return {"count": self.count, "mean": round(1e6 * self.total / self.count, 1),
                "p50": round(1e6 * statistics.median(recent), 1), "p99": round(1e6 * pick(0.99), 1),
                "max": round(1e6 * self.max, 1)}


def parse_to(to: str) -> tuple[str, str, int, str | None]:
    """`tcp://HOST:PORT` or `mqtt://HOST:PORT/<hub EUI>` → (scheme, host, port, hub)."""
    u = urllib.parse.urlsplit(to)
    if u.scheme not in ("tcp", "mqtt") or not u.hostname:
        raise BridgeError(f"--to must be tcp://HOST:PORT or mqtt://HOST:PORT/<hub EUI>, not {to!r}")
    try:
        port = u.port or (1883 if u.scheme == "mqtt" else None)
    except ValueError:
        raise BridgeError(f"bad port in {to!r}") from None
    if port is None:
        raise BridgeError(f"{to!r} names no port")
    hub = None
    if u.scheme == "mqtt":
        path = u.path.strip("/")
        if not path:
            raise BridgeError(f"{to!r}: the hub EUI is the path: mqtt://HOST:PORT/<hub EUI>")
        try:
            hub = eui_hex(as_eui(path))
        except (GbcsEmuError, ValueError):
            raise BridgeError(f"{to!r}: {path!r} is not an EUI-64") from None
    return u.scheme, u.hostname, port, hub


class TcpSide:
    """A reconnecting TCP client to a head end's GBCS listener (GFI or length+CRC framing)."""

    def __init__(self, host: str, port: int, deliver: Callable[[bytes, float], None], *, framing: str = "gfi",
                 out_queue: int = 256, min_backoff: float = 0.05, max_backoff: float = 2.0,
                 frame_timeout: float = 5.0):
        if framing.lower() not in TCP_FRAMINGS:
            raise BridgeError(f"unknown --to-framing {framing!r}; known: gfi, lencrc")
        self.host, self.port, self.deliver = host, port, deliver
        self.framing = TCP_FRAMINGS[framing.lower()]
        self.min_backoff, self.max_backoff, self.frame_timeout = min_backoff, max_backoff, frame_timeout
        self.counters = WanCounters()
        self.pending: collections.deque[bytes] = collections.deque()
        self.out_queue = out_queue
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task | None = None
        self.connected = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"bridge-tcp {self.host}:{self.port}")

    def stats(self) -> dict:
        self.counters.queued = len(self.pending)
        self.counters.connections = int(self._writer is not None)
        return self.counters.as_dict()

    def send(self, payload: bytes) -> bool:
        data = encode_frame(self.framing, payload, TCP_MAX_PAYLOAD)
        w = self._writer
        if w is not None and not w.is_closing() and not self.pending:
            w.write(data)
            self.counters.frames_out += 1
            self.counters.bytes_out += len(data)
            return True
        if len(self.pending) >= self.out_queue:
            self.counters.queue_drops += 1
            return False
        self.pending.append(data)
        return True

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = self.min_backoff
        c = self.counters
        first = True
        while True:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), 5.0)
            except (OSError, asyncio.TimeoutError) as e:
                c.connect_failures += 1
                if c.connect_failures == 1 or c.connect_failures % 50 == 0:
                    log.info("bridge: head end %s:%d unreachable (%s); retrying", self.host, self.port, e)
                await asyncio.sleep(backoff * (0.75 + random.random() / 2))
                backoff = min(backoff * 2, self.max_backoff)
                continue
            backoff = self.min_backoff
            c.connections_total += 1
            if not first:
                c.reconnects += 1
            first = False
            deframer = make_deframer(self.framing, max_frame=wire_max_frame(self.framing, TCP_MAX_PAYLOAD),
                                     timeout=self.frame_timeout)
            while self.pending:
                data = self.pending.popleft()
                writer.write(data)
                c.frames_out += 1
                c.bytes_out += len(data)
            self._writer = writer
            self.connected.set()
            log.info("bridge: connected to %s:%d (%s)", self.host, self.port, self.framing)
            try:
                while True:
                    data = await reader.read(_READ_CHUNK)
                    if not data:
                        break
                    now = loop.time()
                    c.bytes_in += len(data)
                    for ev in deframer.feed(data, now):
                        if isinstance(ev, FrameError):
                            c.count_error(ev)
                        else:
                            assert isinstance(ev, Frame)
                            c.frames_in += 1
                            self.deliver(ev.payload, now)
            except (ConnectionError, OSError) as e:
                log.info("bridge: head end connection error %s", e)
            finally:
                self._writer = None
                self.connected.clear()
                c.disconnects += 1
                writer.close()

    async def close(self) -> None:
        w = self._writer
        if w is not None:
            try:
                await asyncio.wait_for(w.drain(), 1.0)
            except (asyncio.TimeoutError, ConnectionError, OSError):
                pass
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


class MqttSide:
    """The fleet's topic pair of one hub: commands from `<prefix>/<hub>/down`, answers to `/up`."""

    def __init__(self, host: str, port: int, hub: str, deliver: Callable[[bytes, float], None], *,
                 prefix: str = "gbcs", out_queue: int = 10_000):
        from firmware_emu.fleet.mqtt import MqttWan
        self.hub, self.deliver = hub, deliver
        self._loop_time = asyncio.get_running_loop().time

        async def on_frame(payload: bytes, origin) -> None:
            self.deliver(payload, self._loop_time())

        self.wan = MqttWan(on_frame, host, port, hubs=[hub], prefix=prefix, out_queue=out_queue)
        self.counters = self.wan.counters
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        await self.wan.start()

    def stats(self) -> dict:
        return self.wan.stats()

    def send(self, payload: bytes) -> bool:
        task = asyncio.get_running_loop().create_task(self.wan.send(payload, to=self.hub))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.wan.close()


@dataclass
class BridgeConfig:
    port: str
    to: str
    framing: str = "gfi"
    to_framing: str = "gfi"
    baudrate: int = 115200
    parity: str = "N"
    capture: object = None
    mqtt_prefix: str = "gbcs"
    frame_timeout: float = 0.5
    hdlc: HdlcParams = HdlcParams(role="client")


class Bridge:
    """Serial ↔ network, both reconnecting (module docstring). `await start()`, `stats()`, `await close()`."""

    def __init__(self, cfg: BridgeConfig):
        self.cfg = cfg
        scheme, host, port, hub = parse_to(cfg.to)
        self.latency_up, self.latency_down = LatencyStats(), LatencyStats()
        self.capture = open_capture(cfg.capture, [("serial", cfg.port)]) if cfg.capture else None
        self.serial = SerialLink(cfg.port, framing=cfg.framing, baudrate=cfg.baudrate, parity=cfg.parity,
                                 hdlc=cfg.hdlc, frame_timeout=cfg.frame_timeout, on_frame=self._up,
                                 capture=tap(self.capture))
        self._scheme, self._host, self._port, self._hub = scheme, host, port, hub
        self.net: TcpSide | MqttSide | None = None
        self._clock = None

    async def start(self) -> "Bridge":
        self._clock = asyncio.get_running_loop().time
        if self._scheme == "tcp":
            self.net = TcpSide(self._host, self._port, self._down, framing=self.cfg.to_framing)
        else:
            self.net = MqttSide(self._host, self._port, self._hub, self._down, prefix=self.cfg.mqtt_prefix)
        await self.net.start()
        await self.serial.start()
        return self

    def _up(self, payload: bytes, info: FrameInfo) -> None:
        if self.net.send(payload):
            self.latency_up.add(self._clock() - info.received_at)

    def _down(self, payload: bytes, received_at: float) -> None:
        if self.serial.send(payload):
            self.latency_down.add(self._clock() - received_at)

    def stats(self) -> dict:
        return {"serial": self.serial.stats(), "net": self.net.stats() if self.net else {},
                "latency_up_us": self.latency_up.as_dict(), "latency_down_us": self.latency_down.as_dict(),
                **({"captured": self.capture.frames} if self.capture is not None else {})}

    async def close(self) -> None:
        await self.serial.close()
        if self.net is not None:
            await self.net.close()
        if self.capture is not None:
            self.capture.close()


async def bridge(cfg: BridgeConfig, *, stop: asyncio.Event | None = None, out: Callable[[str], None] = print,
                 ready: Callable[[Bridge], None] | None = None) -> dict:
    """Run a bridge until `stop` is set; print what it joins first and its counters (JSON) last."""
    b = Bridge(cfg)
    stop = stop or asyncio.Event()
    out(f"bridging {cfg.port} ({cfg.framing}, {cfg.baudrate} 8{cfg.parity.upper()[:1]}1) <-> {cfg.to}"
        + (f" ({cfg.to_framing})" if b._scheme == "tcp" else ""))
    await b.start()
    if ready is not None:
        ready(b)
    try:
        await stop.wait()
    finally:
        await b.close()
        counters = b.stats()
        out("counters: " + json.dumps(counters, separators=(",", ":")))
    return counters
