"""A framed asyncio link over a serial line: GBCS messages in and out of real ports, `socket://`, `rfc2217://`
and `loop://`, with reconnection when the port goes away.

Theory of operation
-------------------
One `SerialLink` owns one port, opened only through `serial.serial_for_url(url, baudrate, parity, bytesize,
stopbits, timeout=0, do_not_open=True)` so every URL pyserial knows shares this code:

* ports with a file descriptor (real ports, ptys) run on pyserial-asyncio-fast's `SerialTransport` (the event
  loop's reader/writer callbacks, no polling, no threads);
* `socket://` runs on the loop's TCP transport, as `serial_asyncio_fast.create_serial_connection` does;
* URL handlers without a descriptor (`loop://`, `rfc2217://`) are polled every `poll_interval` seconds
  (`in_waiting` + a non-blocking `read`), which pyserial-asyncio-fast itself does not support.

A supervisor task keeps the port open::

    CLOSED ──start()──▶ OPENING ──ok──▶ CONNECTED ──port vanished (read/write error, EOF)──▶ WAITING
                          │ fail (counted: connect_failures)      ▲                              │
                          └──── sleep backoff (min_backoff, doubling to max_backoff) ◀───────────┘
    any ──close()──▶ CLOSED (the output queue is flushed to a connected port first, up to `grace` s)

A device unplugged (a USB adapter pulled, the pty's other end closed) surfaces as a read error or readiness
without data; the link counts a `disconnect`, drops a partial frame (`lost_partial_bytes`), and reopens the
same URL with backoff; each successful reopen counts a `reconnect`.

Inbound bytes go to the framing's streaming deframer (`protocols.framing.make_deframer`: resync after garbage,
bounded buffer, partial frames dropped after the inter-frame timeout `frame_timeout`, which a housekeeping task
checks with `poll`). Every deframer event is counted (`frames_in`, `crc_errors`, `resyncs`, `timeouts`,
`syntax_errors`, `oversize`, `discarded_bytes`). Each intact frame is handed to `on_frame(payload, info)` when
given (synchronously, in arrival order; `info.received_at` is the loop clock when its last byte arrived), else
queued for `recv()` in a bounded queue (`in_queue`, overflow dropped and counted in `in_queue_drops`).

Outbound, `send(payload)` frames the message and writes it at once when the port is up and its write buffer
below the high-water mark; otherwise the frame waits in a bounded FIFO (`out_queue` frames; a full queue drops
the new frame, counted in `queue_drops`) flushed on reconnection or when the transport resumes writing. A frame
being written when the port vanishes is lost with the port (as on a real line).

Framings, by name: `gfi` (`GBCS:DATA#0:<len>:<HEX>\\r\\n`), `hdlc` (IEC 62056-46 frames, `HdlcParams`),
`raw`/`lencrc` (`A5 len payload CRC`). HDLC here carries one whole GBCS message per UI frame (control 0x13,
no SNRM/UA connection, no sequence numbers); a message longer than one frame's information field
(`protocols.framing.hdlc.MAX_LENGTH` minus the header: about 2 KB) is refused (`oversize_out`), since HDLC
segmentation is not implemented.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import random
import urllib.parse
from dataclasses import asdict, dataclass, field
from typing import Callable

import serial
import serial_asyncio_fast

from protocols.errors import EncodeError, GbcsEmuError
from protocols.framing import Frame, FrameError, make_deframer
from protocols.framing.gfi import encode_gfi
from protocols.framing.hdlc import encode_hdlc
from protocols.framing.lencrc import encode_lencrc

__all__ = ["SerialLink", "SerialLinkError", "LinkCounters", "HdlcParams", "FrameInfo", "FRAMINGS",
           "PARITIES", "encoder", "open_serial", "parse_port_options"]

log = logging.getLogger(__name__)

#: Framing names a link speaks (`raw` is the binary length+CRC framing).
FRAMINGS = ("gfi", "hdlc", "raw", "lencrc")
PARITIES = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD,
            "M": serial.PARITY_MARK, "S": serial.PARITY_SPACE}


class SerialLinkError(GbcsEmuError):
    """Misuse of a link (unknown framing or parity, not started) or a port that cannot be described."""


@dataclass(frozen=True)
class HdlcParams:
    """HDLC addressing (IEC 62056-46) for the frames a link writes. Defaults: client address 0x10 (the DLMS
    public client SAP 16), server address 0x01 (upper HDLC address 1, the management logical device; 1 byte),
    control 0x13 (UI with the P/F bit). `role` says which end this link is: `server` (an emulated device:
    writes dest=client, src=server) or `client` (a head end or a bridge facing a real device: dest=server,
    src=client). Received frames are accepted whatever their addresses (`FrameInfo.hdlc` has them)."""

    client: int = 0x10
    server: int = 0x01
    control: int = 0x13
    role: str = "server"

    def __post_init__(self):
        if self.role not in ("server", "client"):
            raise SerialLinkError(f"HDLC role must be server or client, not {self.role!r}")


@dataclass(frozen=True, slots=True)
class FrameInfo:
    """What goes with an inbound frame: loop-clock time of its last byte, the GFI channel, the HDLC header."""

    received_at: float
    wire_length: int
    channel: int | None = None
    hdlc: object = None


@dataclass
class LinkCounters:
    """What a link counts; `as_dict()` is the flat view printed on exit and exported to metrics."""

    frames_in: int = 0
    frames_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    crc_errors: int = 0
    resyncs: int = 0
    timeouts: int = 0            # partial frames dropped after the inter-frame timeout
    syntax_errors: int = 0
    oversize: int = 0            # inbound length claims over max_frame
    oversize_out: int = 0        # outbound messages the framing cannot carry (refused)
    discarded_bytes: int = 0
    lost_partial_bytes: int = 0  # partial frame dropped when the port vanished
    queue_drops: int = 0         # outbound frames dropped: output queue full
    in_queue_drops: int = 0      # inbound frames dropped: recv() queue full
    handler_errors: int = 0
    connects: int = 0
    reconnects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    queued: int = 0              # gauge: frames waiting in the output queue
    connected: int = 0           # gauge

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def count(self, ev: FrameError) -> None:
        self.discarded_bytes += ev.discarded_bytes
        if ev.kind == "crc":
            self.crc_errors += 1
        elif ev.kind == "resync":
            self.resyncs += 1
        elif ev.kind == "timeout":
            self.timeouts += 1
        elif ev.kind == "oversize":
            self.oversize += 1
        else:
            self.syntax_errors += 1


def encoder(framing: str, hdlc: HdlcParams | None = None) -> Callable[[bytes], bytes]:
    """payload -> wire bytes for a framing name; EncodeError when the framing cannot carry the payload."""
    name = framing.lower()
    if name == "gfi":
        return encode_gfi
    if name in ("raw", "lencrc"):
        return encode_lencrc
    if name == "hdlc":
        p = hdlc or HdlcParams()
        dest, src = (p.client, p.server) if p.role == "server" else (p.server, p.client)
        return lambda payload: encode_hdlc(payload, dest=dest, src=src, control=p.control)
    raise SerialLinkError(f"unknown framing {framing!r}; known: {', '.join(FRAMINGS)}")


def open_serial(url: str, *, baudrate: int = 115200, parity: str = "N", bytesize: int = 8, stopbits: float = 1,
                do_not_open: bool = True) -> serial.SerialBase:
    """The one place a port object is made: `serial.serial_for_url` with the line settings, non-blocking."""
    try:
        par = PARITIES[parity.upper()[:1]]
    except (KeyError, AttributeError):
        raise SerialLinkError(f"unknown parity {parity!r}; known: N, E, O, M, S") from None
    return serial.serial_for_url(url, baudrate=baudrate, parity=par, bytesize=bytesize, stopbits=stopbits,
                                 timeout=0, do_not_open=do_not_open)


class _Proto(asyncio.Protocol):
    def __init__(self, link: "SerialLink", lost: asyncio.Event):
        self.link, self.lost = link, lost

    def data_received(self, data: bytes) -> None:
        self.link._on_data(data)

    def connection_lost(self, exc) -> None:
        self.link._log_lost(exc)
        self.lost.set()

    def pause_writing(self) -> None:
        self.link._paused = True

    def resume_writing(self) -> None:
        self.link._paused = False
        self.link._flush()


class _PolledTransport:
    """For URL handlers without a file descriptor (`loop://`, `rfc2217://`): reads by polling `in_waiting`,
    writes straight through (their writes do not block)."""

    def __init__(self, ser, proto: _Proto, interval: float):
        self._ser, self._proto, self._interval = ser, proto, interval
        self._closing = False
        self._task = asyncio.get_running_loop().create_task(self._poll(), name="serial-poll")

    async def _poll(self) -> None:
        exc = None
        try:
            while not self._closing:
                n = self._ser.in_waiting
                if n:
                    data = self._ser.read(n)
                    if data:
                        self._proto.data_received(bytes(data))
                        continue
                await asyncio.sleep(self._interval)
        except asyncio.CancelledError:
            pass
        except (serial.SerialException, OSError) as e:
            exc = e
        finally:
            self._closing = True
            try:
                self._ser.close()
            except Exception:  # noqa: BLE001 - closing a broken port
                pass
            self._proto.connection_lost(exc)

    def write(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self._ser.write(data)
        except (serial.SerialException, OSError) as e:
            log.info("serial write failed: %s", e)
            self.close()

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._task.cancel()

    abort = close


@dataclass
class _InQueue:
    maxsize: int
    items: collections.deque = field(default_factory=collections.deque)
    ready: asyncio.Event = field(default_factory=asyncio.Event)


class SerialLink:
    """A framed, reconnecting serial link (module docstring). `await start()`, `send()`, `await recv()`,
    `await close()`; `stats()` is the counters as a dict."""

    def __init__(self, url: str, *, framing: str = "gfi", baudrate: int = 115200, parity: str = "N",
                 bytesize: int = 8, stopbits: float = 1, hdlc: HdlcParams | None = None,
                 max_frame: int | None = None, frame_timeout: float | None = 0.5,
                 on_frame: Callable[[bytes, FrameInfo], None] | None = None, in_queue: int = 1024,
                 out_queue: int = 256, reconnect: bool = True, min_backoff: float = 0.05, max_backoff: float = 2.0,
                 poll_interval: float = 0.001, capture=None, name: str | None = None):
        self.url = url
        self.framing = framing.lower()
        self.hdlc = hdlc or HdlcParams()
        self._encode = encoder(self.framing, self.hdlc)
        self.line = dict(baudrate=baudrate, parity=parity, bytesize=bytesize, stopbits=stopbits)
        open_serial(url, **self.line)          # validate the URL and settings now, not in the supervisor
        self.max_frame, self.frame_timeout = max_frame, frame_timeout
        self.on_frame = on_frame
        self.reconnect, self.min_backoff, self.max_backoff = reconnect, min_backoff, max_backoff
        self.poll_interval = poll_interval
        self.capture = capture
        self.name = name or url
        self.counters = LinkCounters()
        self._deframer = self._new_deframer()
        self._in = _InQueue(in_queue)
        self._out: collections.deque[bytes] = collections.deque()
        self._out_max = out_queue
        self._transport = None
        self._paused = False
        self._closing = False
        self._connected = asyncio.Event()
        self._supervisor: asyncio.Task | None = None
        self._housekeeper: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _new_deframer(self):
        opts = {"timeout": self.frame_timeout}
        if self.max_frame is not None:
            opts["max_frame"] = self.max_frame
        return make_deframer(self.framing, **opts)

    # -- lifecycle --------------------------------------------------------------------------------------------
    async def start(self) -> "SerialLink":
        if self._supervisor is not None:
            raise SerialLinkError("link already started")
        self._loop = asyncio.get_running_loop()
        self._supervisor = self._loop.create_task(self._supervise(), name=f"serial-link {self.name}")
        if self.frame_timeout is not None:
            self._housekeeper = self._loop.create_task(self._housekeeping(), name=f"serial-timeouts {self.name}")
        return self

    async def __aenter__(self) -> "SerialLink":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    async def wait_connected(self, timeout: float | None = 5.0) -> None:
        """Until the port is open (TimeoutError after `timeout` s)."""
        await asyncio.wait_for(self._connected.wait(), timeout)

    def stats(self) -> dict[str, int]:
        self.counters.queued = len(self._out)
        self.counters.connected = int(self.connected)
        return self.counters.as_dict()

    async def close(self, grace: float = 1.0) -> None:
        """Flush queued frames to a connected port (up to `grace` s), then close the port and stop."""
        if self._closing:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.connected and (self._out or self._transport.get_write_buffer_size()) and loop.time() < deadline:
            await asyncio.sleep(0.005)
        self._closing = True
        for task in (self._housekeeper, self._supervisor):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (self._housekeeper, self._supervisor) if t is not None),
                             return_exceptions=True)
        self._in.ready.set()

    # -- the port ---------------------------------------------------------------------------------------------
    async def _open(self, lost: asyncio.Event):
        loop = asyncio.get_running_loop()
        proto = _Proto(self, lost)
        scheme = urllib.parse.urlparse(self.url).scheme
        if scheme == "socket":
            transport, _ = await serial_asyncio_fast.create_serial_connection(
                loop, lambda: proto, self.url, **self._line_args())
            return transport
        ser = open_serial(self.url, **self.line)
        ser.open()
        try:
            fd = ser.fileno()
        except (AttributeError, NotImplementedError, serial.SerialException, OSError):
            fd = None
        if fd is None:
            transport = _PolledTransport(ser, proto, self.poll_interval)
            proto.connection_made(transport)
            return transport
        transport, _ = await serial_asyncio_fast.connection_for_serial(loop, lambda: proto, ser)
        return transport

    def _line_args(self) -> dict:
        line = dict(self.line)
        line["parity"] = PARITIES[line["parity"].upper()[:1]]
        return dict(line, timeout=0)

    async def _supervise(self) -> None:
        backoff = self.min_backoff
        c = self.counters
        while not self._closing:
            lost = asyncio.Event()
            try:
                transport = await self._open(lost)
            except asyncio.CancelledError:
                raise
            except (serial.SerialException, OSError, ValueError) as e:
                c.connect_failures += 1
                if c.connect_failures == 1 or c.connect_failures % 50 == 0:
                    log.info("serial %s: cannot open (%s); retrying", self.name, e)
                if not self.reconnect:
                    return
                await asyncio.sleep(backoff * (0.75 + random.random() / 2))
                backoff = min(backoff * 2, self.max_backoff)
                continue
            backoff = self.min_backoff
            self._transport, self._paused = transport, False
            c.connects += 1
            if c.connects > 1:
                c.reconnects += 1
            log.info("serial %s: open (%s framing)", self.name, self.framing)
            self._connected.set()
            self._flush()
            try:
                await lost.wait()
            except asyncio.CancelledError:
                transport.close()
                await asyncio.sleep(0)       # let the transport close the port
                raise
            finally:
                self._transport = None
                self._connected.clear()
            c.disconnects += 1
            if self._deframer.buffered:
                c.lost_partial_bytes += self._deframer.buffered
            self._deframer = self._new_deframer()
            if not self.reconnect or self._closing:
                return

    def _log_lost(self, exc) -> None:
        if not self._closing:
            log.info("serial %s: port lost (%s)", self.name, exc or "closed")

    async def _housekeeping(self) -> None:
        interval = max(0.01, min(self.frame_timeout / 2, 0.25))
        while True:
            await asyncio.sleep(interval)
            for ev in self._deframer.poll(self._loop.time()):
                self._event(ev, 0.0)

    # -- inbound ----------------------------------------------------------------------------------------------
    def _on_data(self, data: bytes) -> None:
        now = self._loop.time()
        self.counters.bytes_in += len(data)
        for ev in self._deframer.feed(data, now):
            self._event(ev, now)

    def _event(self, ev, now: float) -> None:
        if isinstance(ev, FrameError):
            self.counters.count(ev)
            log.debug("serial %s: %s (%s, %d bytes)", self.name, ev.kind, ev.detail, ev.discarded_bytes)
            return
        assert isinstance(ev, Frame)
        self.counters.frames_in += 1
        if self.capture is not None:
            self.capture.write("in", ev.payload)
        info = FrameInfo(now, ev.wire_length, ev.channel, ev.hdlc)
        if self.on_frame is not None:
            try:
                self.on_frame(ev.payload, info)
            except Exception:  # noqa: BLE001 - a failing handler must not take the link down
                self.counters.handler_errors += 1
                log.exception("serial %s: frame handler failed", self.name)
            return
        q = self._in
        if len(q.items) >= q.maxsize:
            self.counters.in_queue_drops += 1
            return
        q.items.append((ev.payload, info))
        q.ready.set()

    async def recv_info(self, timeout: float | None = 5.0) -> tuple[bytes, FrameInfo]:
        """The next inbound frame and its FrameInfo; TimeoutError after `timeout` s; SerialLinkError once closed."""
        q = self._in
        while not q.items:
            if self._closing:
                raise SerialLinkError("link closed")
            q.ready.clear()
            await asyncio.wait_for(q.ready.wait(), timeout)
        return q.items.popleft()

    async def recv(self, timeout: float | None = 5.0) -> bytes:
        """The next inbound message (only when the link has no `on_frame` callback)."""
        return (await self.recv_info(timeout))[0]

    # -- outbound ---------------------------------------------------------------------------------------------
    def send(self, payload: bytes) -> bool:
        """Frame and write one message (or queue it while the port is away); False when refused or dropped."""
        try:
            data = self._encode(payload)
        except EncodeError as e:
            self.counters.oversize_out += 1
            log.warning("serial %s: cannot frame a %d-byte message in %s: %s", self.name, len(payload),
                        self.framing, e)
            return False
        if self.capture is not None:
            self.capture.write("out", payload)
        return self._send_wire(data)

    def send_raw(self, data: bytes) -> bool:
        """Write bytes as they are (noise, split or corrupted frames: tests and fault injection)."""
        return self._send_wire(bytes(data), count=False)

    def _send_wire(self, data: bytes, count: bool = True) -> bool:
        if self._closing:
            return False
        t = self._transport
        if t is not None and not t.is_closing() and not self._paused and not self._out:
            t.write(data)
            self.counters.bytes_out += len(data)
            self.counters.frames_out += count
            return True
        if len(self._out) >= self._out_max:
            self.counters.queue_drops += 1
            return False
        self._out.append((data, count))
        return True

    def _flush(self) -> None:
        t = self._transport
        while self._out and t is not None and not t.is_closing() and not self._paused:
            data, count = self._out.popleft()
            t.write(data)
            self.counters.bytes_out += len(data)
            self.counters.frames_out += count

    @property
    def write_buffer(self) -> int:
        """Bytes written but not yet taken by the port (0 when it took everything)."""
        t = self._transport
        return t.get_write_buffer_size() if t is not None else 0


def parse_port_options(url: str) -> tuple[str, dict]:
    """Split `serial:///dev/ttyX?framing=gfi&baud=115200` style options off a URL (for targets and tools):
    (pyserial URL, {"framing", "baudrate", "parity"} present)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "serial":
        return url, {}
    opts = dict(urllib.parse.parse_qsl(parts.query))
    out: dict = {}
    if "framing" in opts:
        out["framing"] = opts["framing"]
    if "baud" in opts or "baudrate" in opts:
        out["baudrate"] = int(opts.get("baud") or opts["baudrate"])
    if "parity" in opts:
        out["parity"] = opts["parity"]
    return parts.path, out
