"""WAN adapters: how GBCS frames reach the fleet from a head end and how responses and alerts go back.

Theory of operation
-------------------
Every adapter (TCP here, MQTT in `fleet.mqtt`) implements the same small, transport-neutral interface
(`WanAdapter`), so the fleet host never sees a socket or a broker:

- **In**: each intact frame is handed to the host's `on_frame(frame, reply)` coroutine. `reply` is an `Origin`:
  awaiting `reply(frame)` sends a frame back to where the command came from (the TCP connection, the hub's
  `/up` topic); it also says where the frame came from: `reply.hint` (the hub EUI the transport names, e.g. the
  MQTT topic, or None when the transport names none, as on TCP), `reply.received_at` (the adapter's clock when
  the frame was deframed) and `reply.source` (a connection id or topic, for logs).
- **Out**: `await adapter.send(frame, to=...)` for what is not a direct answer (unsolicited alerts, late
  responses of future-dated work). `to` is a hub EUI (MQTT: the `/up` topic of that hub) or a TCP connection id;
  what `to=None` or an unknown target means is the adapter's documented alert policy.
- **Bounds**: nothing grows with a flood. Inbound frames are deframed with the project's streaming deframers
  (`protocols.framing.make_deframer`: bounded buffer, resync after garbage, partial-frame timeout); outbound
  frames wait in bounded queues (TCP: the connection's write buffer, capped at `max_write_buffer` bytes) and a
  frame that does not fit is dropped and counted in `queue_drops`, never buffered without limit.
- **Counters**: `adapter.stats()` returns a flat dict of ints (frames and bytes in/out, framing errors,
  resyncs, disconnects, queue drops ...) for the metrics exporter.

TCP server (`TcpWanServer`)
---------------------------
One listener speaks one framing, chosen when it is built:

- `gfi`: the DCC test-tool text framing `GBCS:DATA#<channel>:<decimal length>:<HEX>\\r\\n`
  (`protocols.framing.gfi`); answers use the channel of the command, alerts channel 0.
- `lencrc` (alias `binary`): the project's binary length-prefixed form `A5 | length (2, BE) | payload | CRC-16/X.25
  (2, BE)` (`protocols.framing.lencrc`). The magic byte and CRC let the server resynchronise after garbage, which
  a bare 4-byte length prefix cannot.

Each connection is read by its own task; its frames are handled **one after another, in order** (GBCS replay
counters need per-device order), and the connection is not read further while the handler runs, so a client that
floods the server is held back by TCP flow control rather than by dropping its commands. A host that wants more
parallelism spawns its own (bounded) work from `on_frame`. A handler that raises is logged and counted
(`handler_errors`); the connection stays up. Garbage between frames is skipped and counted (`resyncs`,
`discarded_bytes`), a length over `max_payload` is refused (`oversize`), a partial frame older than
`frame_timeout` is dropped (`framing_errors`), a connection silent for `idle_timeout` is closed (`idle_timeouts`),
connections over `max_clients` are refused (`rejected_connections`).

Responses go back on the connection the command came from (the `Origin`); if that connection has gone, the
response is dropped (`undeliverable`). Alerts (`send(frame)` with `to=None` or a hub EUI, since a TCP connection
is not bound to a hub) follow `alert_policy`: `all` (default: every connected client whose address is in
`alert_hosts`, when given), `oldest` or `newest` (one such client), `none`. With no eligible client connected,
alerts wait in a bounded backlog (`alert_backlog`, oldest dropped first and counted) handed to the next eligible
client that connects. `send(frame, to="tcp-7")` targets one connection.

`close(grace)` stops accepting, lets handlers that are running finish (up to `grace` seconds), flushes what was
written and closes every connection.

`TcpWanClient` is the head-end side (tests, benchmarks): connect, `send`, `recv`, `request`.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import asdict, dataclass
from typing import Awaitable, Callable, Generic, Iterable, Protocol, TypeVar, runtime_checkable

from protocols.errors import EncodeError, GbcsEmuError
from protocols.framing import Frame, FrameError, make_deframer
from protocols.framing.gfi import encode_gfi
from protocols.framing.lencrc import MAX_PAYLOAD as LENCRC_MAX_PAYLOAD, OVERHEAD as LENCRC_OVERHEAD, encode_lencrc

__all__ = [
    "WanError", "WanClosed", "FrameTooLarge", "Reply", "FrameHandler", "Origin", "WanCounters", "WanAdapter",
    "BoundedQueue", "TcpWanServer", "TcpWanClient", "FRAMINGS", "ALERT_POLICIES", "wire_max_frame",
    "encode_frame",
]

log = logging.getLogger(__name__)

Reply = Callable[[bytes], Awaitable[None]]
FrameHandler = Callable[[bytes, "Origin"], Awaitable[None]]

#: Framings a TCP listener can speak: name → the deframer name in protocols.framing.
FRAMINGS = {"gfi": "gfi", "lencrc": "lencrc", "binary": "lencrc"}
ALERT_POLICIES = ("all", "oldest", "newest", "none")

_READ_CHUNK = 1 << 16
_GFI_HEADER_MAX = len(b"GBCS:DATA#999:9999999:") + 2


class WanError(GbcsEmuError):
    """Misuse of a WAN adapter (unknown framing, bad target, not started)."""


class WanClosed(WanError):
    """The connection or adapter is closed: nothing more will arrive."""


class FrameTooLarge(WanError, EncodeError):
    """An outbound frame over the adapter's `max_payload`: a bug of the sender, never silently truncated."""


class Origin:
    """Where an inbound frame came from and how to answer it: `await origin(frame)` sends the answer back.

    `hint` is the hub (or device) EUI the transport names (MQTT topic) or None; `received_at` the adapter's clock
    when the frame arrived; `source` a connection id or topic for logs."""

    __slots__ = ("hint", "received_at", "source", "_send")

    def __init__(self, hint: str | None, received_at: float, source: str, send: Callable[[bytes], Awaitable[bool]]):
        self.hint, self.received_at, self.source, self._send = hint, received_at, source, send

    async def __call__(self, frame: bytes) -> bool:
        """Send `frame` back; True when it was handed to the transport (False: dropped and counted)."""
        return await self._send(frame)

    def __repr__(self) -> str:
        return f"Origin(hint={self.hint!r}, source={self.source!r}, received_at={self.received_at!r})"


@dataclass
class WanCounters:
    """What an adapter counts; `as_dict()` is the metrics view. Gauges: `connections`, `queued`."""

    frames_in: int = 0
    frames_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    framing_errors: int = 0      # frames dropped by the deframer: syntax, crc, oversize, partial-frame timeout
    oversize: int = 0            # of which: a length over max_payload
    resyncs: int = 0             # garbage skipped to the next frame start
    discarded_bytes: int = 0
    handler_errors: int = 0
    queue_drops: int = 0         # outbound (or MQTT inbound) frames dropped because a bounded queue was full
    undeliverable: int = 0       # answers whose connection had gone, alerts with nowhere to go
    connections: int = 0
    connections_total: int = 0
    rejected_connections: int = 0
    disconnects: int = 0
    idle_timeouts: int = 0
    reconnects: int = 0          # MQTT: successful connections after the first
    connect_failures: int = 0    # MQTT: attempts that failed (broker away)
    not_ours: int = 0            # MQTT: frames for hubs this shard does not serve
    queued: int = 0              # MQTT: frames waiting to be published

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def count_error(self, ev: FrameError) -> None:
        """Account for one deframer error event."""
        self.discarded_bytes += ev.discarded_bytes
        if ev.kind == "resync":
            self.resyncs += 1
            return
        self.framing_errors += 1
        if ev.kind == "oversize":
            self.oversize += 1


@runtime_checkable
class WanAdapter(Protocol):
    """What the fleet host needs of a WAN adapter (module docstring)."""

    counters: WanCounters

    async def start(self) -> None: ...

    async def send(self, frame: bytes, to: str | None = None) -> bool: ...

    async def close(self, grace: float = 2.0) -> None: ...

    def stats(self) -> dict[str, int]: ...


T = TypeVar("T")


class BoundedQueue(Generic[T]):
    """A FIFO of at most `maxsize` items for one consumer: `put` never blocks (a full queue drops the new item and
    counts it), `get` waits; after `close()` `get` drains what is left, then raises WanClosed."""

    def __init__(self, maxsize: int):
        if maxsize < 1:
            raise ValueError("maxsize must be positive")
        self.maxsize = maxsize
        self.drops = 0
        self._items: collections.deque[T] = collections.deque()
        self._ready = asyncio.Event()
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, item: T) -> bool:
        if self._closed or len(self._items) >= self.maxsize:
            self.drops += 1
            return False
        self._items.append(item)
        self._ready.set()
        return True

    def put_front(self, item: T) -> None:
        """Give an item back (a publish that failed); may exceed maxsize by the one item being retried."""
        self._items.appendleft(item)
        self._ready.set()

    def get_nowait(self) -> T | None:
        return self._items.popleft() if self._items else None

    async def get(self, timeout: float | None = None) -> T:
        while not self._items:
            if self._closed:
                raise WanClosed("queue closed")
            self._ready.clear()
            if timeout is None:
                await self._ready.wait()
            else:
                await asyncio.wait_for(self._ready.wait(), timeout)
        return self._items.popleft()

    def close(self) -> None:
        self._closed = True
        self._ready.set()


def _framing(name: str) -> str:
    try:
        return FRAMINGS[name.lower()]
    except KeyError:
        raise WanError(f"unknown WAN framing {name!r}; known: {', '.join(FRAMINGS)}") from None


def wire_max_frame(framing: str, max_payload: int) -> int:
    """Bytes on the wire of the largest frame carrying `max_payload` message bytes in `framing`."""
    if _framing(framing) == "gfi":
        return _GFI_HEADER_MAX + 2 * max_payload
    return LENCRC_OVERHEAD + max_payload


def encode_frame(framing: str, payload: bytes, max_payload: int, channel: int = 0) -> bytes:
    """One message in the listener's framing; FrameTooLarge over `max_payload`."""
    if len(payload) > max_payload:
        raise FrameTooLarge(f"frame of {len(payload)} bytes over max_payload {max_payload}", "payload")
    if _framing(framing) == "gfi":
        return encode_gfi(payload, channel)
    return encode_lencrc(payload)


def _check_max_payload(framing: str, max_payload: int) -> int:
    limit = LENCRC_MAX_PAYLOAD if _framing(framing) == "lencrc" else 9_999_999
    if not 1 <= max_payload <= limit:
        raise WanError(f"max_payload {max_payload} outside 1..{limit} for {framing}")
    return max_payload


# ---------------------------------------------------------------------------------------------------------------
# TCP server


class _Conn:
    __slots__ = ("id", "peer", "host", "reader", "writer", "deframer", "last_rx", "opened", "task", "busy",
                 "closed", "out", "out_bytes")

    def __init__(self, cid: str, reader, writer, deframer, now: float):
        self.id, self.reader, self.writer, self.deframer = cid, reader, writer, deframer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.host = peer[0] if isinstance(peer, tuple) else None
        self.last_rx = self.opened = now
        self.task: asyncio.Task | None = None
        self.busy = False
        self.closed = False
        self.out: list[bytes] = []       # frames written since the last flush (one send per loop pass)
        self.out_bytes = 0


class TcpWanServer:
    """GBCS over TCP for a head end (module docstring). `await start()`, then `port` is the bound port."""

    def __init__(self, on_frame: FrameHandler, *, host: str = "127.0.0.1", port: int = 0, framing: str = "gfi",
                 max_payload: int = LENCRC_MAX_PAYLOAD, frame_timeout: float | None = 5.0,
                 idle_timeout: float | None = 600.0, max_clients: int = 1024, max_write_buffer: int = 1 << 20,
                 alert_policy: str = "all", alert_hosts: Iterable[str] | None = None, alert_backlog: int = 1024,
                 housekeeping_interval: float = 0.5, clock: Callable[[], float] = time.time):
        self.on_frame = on_frame
        self.host, self.port = host, port
        self.framing = framing.lower()
        self._deframer_name = _framing(framing)
        self.max_payload = _check_max_payload(framing, max_payload)
        self.max_frame = wire_max_frame(framing, max_payload)
        self.frame_timeout, self.idle_timeout = frame_timeout, idle_timeout
        self.max_clients, self.max_write_buffer = max_clients, max_write_buffer
        if alert_policy not in ALERT_POLICIES:
            raise WanError(f"unknown alert policy {alert_policy!r}; known: {', '.join(ALERT_POLICIES)}")
        self.alert_policy = alert_policy
        self.alert_hosts = frozenset(alert_hosts) if alert_hosts is not None else None
        self._backlog: collections.deque[bytes] = collections.deque()
        self.alert_backlog = alert_backlog
        self.housekeeping_interval = housekeeping_interval
        self.clock = clock
        self.counters = WanCounters()
        self._conns: dict[str, _Conn] = {}
        self._next_id = 0
        self._server: asyncio.base_events.Server | None = None
        self._housekeeper: asyncio.Task | None = None
        self._closing = False

    # -- lifecycle ------------------------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._server is not None:
            raise WanError("TCP WAN server already started")
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=_READ_CHUNK)
        self.port = self._server.sockets[0].getsockname()[1]
        self._housekeeper = asyncio.create_task(self._housekeeping(), name="tcp-wan-housekeeping")
        log.info("TCP WAN (%s) listening on %s:%d", self.framing, self.host, self.port)

    async def __aenter__(self) -> "TcpWanServer":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def connections(self) -> list[str]:
        """Ids of the connected clients, oldest first."""
        return list(self._conns)

    def stats(self) -> dict[str, int]:
        self.counters.connections = len(self._conns)
        return self.counters.as_dict()

    async def close(self, grace: float = 2.0) -> None:
        """Stop accepting, let running handlers finish (up to `grace` s), flush and close every connection."""
        if self._closing:
            return
        self._closing = True
        if self._server is not None:
            self._server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while any(c.busy for c in self._conns.values()) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        tasks = [c.task for c in self._conns.values() if c.task is not None]
        writers = [c.writer for c in self._conns.values()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if writers:  # each connection's task closed its writer: wait for what was written to go out
            flushed = asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)
            try:
                await asyncio.wait_for(flushed, max(0.1, deadline - loop.time()))
            except asyncio.TimeoutError:
                log.warning("TCP WAN: some clients did not take their last frames within %.1f s", grace)
        if self._housekeeper is not None:
            self._housekeeper.cancel()
            await asyncio.gather(self._housekeeper, return_exceptions=True)
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), max(0.1, deadline - loop.time()))
            except asyncio.TimeoutError:
                log.warning("TCP WAN: connections still closing after %.1f s", grace)
        log.info("TCP WAN on port %d closed", self.port)

    # -- outbound -------------------------------------------------------------------------------------------------
    def _write(self, conn: _Conn, frame: bytes, channel: int = 0) -> bool:
        """Queue a frame on the connection; the frames queued during one pass of the event loop leave in one
        `send` (`_flush`, scheduled once): a fleet answers a batch of commands at a time, and a system call
        per response cost as much as a fifth of a read's handling."""
        data = encode_frame(self._deframer_name, frame, self.max_payload, channel)
        if conn.closed or conn.writer.is_closing():
            self.counters.undeliverable += 1
            return False
        if conn.writer.transport.get_write_buffer_size() + conn.out_bytes + len(data) > self.max_write_buffer:
            self.counters.queue_drops += 1
            log.warning("TCP WAN %s: write buffer full, frame of %d bytes dropped", conn.id, len(frame))
            return False
        if not conn.out:
            asyncio.get_running_loop().call_soon(self._flush, conn)
        conn.out.append(data)
        conn.out_bytes += len(data)
        self.counters.frames_out += 1
        self.counters.bytes_out += len(data)
        return True

    def _flush(self, conn: _Conn) -> None:
        """Hand the queued frames to the transport (before any close, so nothing written is lost)."""
        if not conn.out:
            return
        data, frames = b"".join(conn.out), len(conn.out)
        conn.out.clear()
        conn.out_bytes = 0
        if conn.writer.is_closing():
            self.counters.undeliverable += frames
            self.counters.frames_out -= frames
            return
        conn.writer.write(data)

    def _close_conn(self, conn: _Conn) -> None:
        self._flush(conn)
        conn.writer.close()

    def _alert_targets(self) -> list[_Conn]:
        if self.alert_policy == "none":
            return []
        eligible = [c for c in self._conns.values()
                    if not c.closed and (self.alert_hosts is None or c.host in self.alert_hosts)]
        if not eligible or self.alert_policy == "all":
            return eligible
        return [eligible[0] if self.alert_policy == "oldest" else eligible[-1]]

    async def send(self, frame: bytes, to: str | None = None) -> bool:
        """Send an unsolicited frame: to one connection id (`tcp-N`), else by the alert policy (module docstring).
        True when at least one client got it or it waits in the backlog."""
        if to is not None and to.startswith("tcp-"):
            conn = self._conns.get(to)
            if conn is None:
                encode_frame(self._deframer_name, frame, self.max_payload)  # still refuse oversize frames
                self.counters.undeliverable += 1
                return False
            return self._write(conn, frame)
        targets = self._alert_targets()
        if not targets:
            encode_frame(self._deframer_name, frame, self.max_payload)
            if self.alert_policy == "none" or self.alert_backlog <= 0:
                self.counters.undeliverable += 1
                return False
            if len(self._backlog) >= self.alert_backlog:
                self._backlog.popleft()
                self.counters.queue_drops += 1
            self._backlog.append(bytes(frame))
            return True
        sent = [self._write(c, frame) for c in targets]
        return any(sent)

    def _flush_backlog(self, conn: _Conn) -> None:
        if self._backlog and conn in self._alert_targets():
            while self._backlog:
                self._write(conn, self._backlog.popleft())

    # -- inbound --------------------------------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        c = self.counters
        if self._closing or len(self._conns) >= self.max_clients:
            c.rejected_connections += 1
            log.warning("TCP WAN: refused a connection from %s (%s)", writer.get_extra_info("peername"),
                        "closing" if self._closing else f"max_clients {self.max_clients}")
            writer.close()
            return
        loop = asyncio.get_running_loop()
        self._next_id += 1
        conn = _Conn(f"tcp-{self._next_id}", reader, writer,
                     make_deframer(self._deframer_name, max_frame=self.max_frame, timeout=self.frame_timeout),
                     loop.time())
        conn.task = asyncio.current_task()
        self._conns[conn.id] = conn
        c.connections_total += 1
        log.info("TCP WAN %s: connected from %s", conn.id, conn.peer)
        self._flush_backlog(conn)
        try:
            while not self._closing:
                data = await reader.read(_READ_CHUNK)
                if not data:
                    break
                now = loop.time()
                conn.last_rx = now
                c.bytes_in += len(data)
                events = conn.deframer.feed(data, now)
                if events:
                    conn.busy = True
                    try:
                        await self._handle(conn, events)
                    finally:
                        conn.busy = False
        except (ConnectionError, OSError) as e:
            log.info("TCP WAN %s: connection error %s", conn.id, e)
        except asyncio.CancelledError:
            pass
        finally:
            conn.closed = True
            self._conns.pop(conn.id, None)
            c.disconnects += 1
            self._close_conn(conn)
            log.info("TCP WAN %s: disconnected", conn.id)

    async def _handle(self, conn: _Conn, events: list) -> None:
        c = self.counters
        for ev in events:
            if isinstance(ev, FrameError):
                c.count_error(ev)
                log.debug("TCP WAN %s: %s (%s, %d bytes)", conn.id, ev.kind, ev.detail, ev.discarded_bytes)
                continue
            assert isinstance(ev, Frame)
            c.frames_in += 1
            channel = ev.channel or 0

            async def reply(frame: bytes, _conn=conn, _channel=channel) -> bool:
                return self._write(_conn, frame, _channel)

            try:
                await self.on_frame(ev.payload, Origin(None, self.clock(), conn.id, reply))
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a bad handler call must not take the connection down
                c.handler_errors += 1
                log.exception("TCP WAN %s: frame handler failed", conn.id)

    async def _housekeeping(self) -> None:
        """Partial-frame timeouts and idle connections, checked for all connections by one task."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.housekeeping_interval)
            now = loop.time()
            for conn in list(self._conns.values()):
                for ev in conn.deframer.poll(now):
                    if isinstance(ev, FrameError):
                        self.counters.count_error(ev)
                if (self.idle_timeout is not None and not conn.busy and not conn.closed
                        and now - conn.last_rx > self.idle_timeout):
                    self.counters.idle_timeouts += 1
                    log.info("TCP WAN %s: idle for %.0f s, closing", conn.id, now - conn.last_rx)
                    conn.closed = True
                    self._close_conn(conn)


# ---------------------------------------------------------------------------------------------------------------
# TCP client (head-end side)


class TcpWanClient:
    """The head-end side of a TCP WAN link: `await TcpWanClient.connect(host, port, framing="gfi")`.

    Received frames wait in a bounded queue (`queue` frames; further frames are dropped and counted in
    `counters.queue_drops`); `recv` raises WanClosed once the server has closed and the queue is empty."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, framing: str = "gfi",
                 max_payload: int = LENCRC_MAX_PAYLOAD, queue: int = 4096):
        self.framing = _framing(framing)
        self.max_payload = _check_max_payload(framing, max_payload)
        self._reader, self._writer = reader, writer
        self._deframer = make_deframer(self.framing, max_frame=wire_max_frame(framing, max_payload), timeout=5.0)
        self._queue: BoundedQueue[bytes] = BoundedQueue(queue)
        self.counters = WanCounters(connections=1, connections_total=1)
        self._task = asyncio.create_task(self._read(), name="tcp-wan-client")

    @classmethod
    async def connect(cls, host: str, port: int, *, framing: str = "gfi", max_payload: int = LENCRC_MAX_PAYLOAD,
                      queue: int = 4096, timeout: float = 5.0) -> "TcpWanClient":
        _framing(framing)
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, limit=_READ_CHUNK), timeout)
        return cls(reader, writer, framing=framing, max_payload=max_payload, queue=queue)

    async def __aenter__(self) -> "TcpWanClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        return self._queue.closed

    def stats(self) -> dict[str, int]:
        self.counters.queue_drops = self._queue.drops
        return self.counters.as_dict()

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await self._reader.read(_READ_CHUNK)
                if not data:
                    break
                self.counters.bytes_in += len(data)
                for ev in self._deframer.feed(data, loop.time()):
                    if isinstance(ev, FrameError):
                        self.counters.count_error(ev)
                    elif self._queue.put(ev.payload):
                        self.counters.frames_in += 1
        except (ConnectionError, OSError):
            pass
        finally:
            self.counters.connections = 0
            self.counters.disconnects += 1
            self._queue.close()

    async def send_raw(self, data: bytes) -> None:
        """Write bytes as they are (garbage, split frames: tests)."""
        if self._writer.is_closing():
            raise WanClosed("connection closed")
        self._writer.write(data)
        self.counters.bytes_out += len(data)
        await self._writer.drain()

    async def send(self, frame: bytes, channel: int = 0) -> None:
        await self.send_raw(encode_frame(self.framing, frame, self.max_payload, channel))
        self.counters.frames_out += 1

    async def recv(self, timeout: float | None = 5.0) -> bytes:
        """The next frame from the server; TimeoutError after `timeout` s, WanClosed once the link is closed."""
        return await self._queue.get(timeout)

    async def request(self, frame: bytes, timeout: float | None = 5.0) -> bytes:
        """Send a command and return the next frame that arrives (responses come back in order on one link)."""
        await self.send(frame)
        return await self.recv(timeout)

    async def close(self) -> None:
        if not self._writer.is_closing():
            self._writer.close()
        try:
            await asyncio.wait_for(self._writer.wait_closed(), 2.0)
        except (asyncio.TimeoutError, ConnectionError, OSError):
            pass
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
