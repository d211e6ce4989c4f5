"""The MQTT WAN adapter: GBCS frames to and from hubs through an MQTT broker (aiomqtt kept inside this module).

Theory of operation
-------------------
Topics, one pair per hub (`prefix` defaults to `gbcs`):

    <prefix>/<HUB EUI>/down   commands from the head end          (MqttWan subscribes, MqttHeadEnd publishes)
    <prefix>/<HUB EUI>/up     responses and alerts from the fleet  (MqttWan publishes, MqttHeadEnd subscribes)

The payload is the raw GBCS message (no framing: MQTT already delimits messages); everything is QoS 1. The hub
EUI is 16 upper-case hex digits; the adapter hands it to the host as `Origin.hint`.

**Shards.** A process serves the hubs it is given: `hubs=[...]` subscribes exactly their `down` topics (in
batches), which the broker filters, so K processes with disjoint hub sets never see each other's traffic;
`filters=[...]` subscribes topic filters (default `<prefix>/+/down`) and an optional `serves(hub) -> bool`
drops, and counts as `not_ours`, frames for hubs the process does not serve (a wildcard cannot select a subset
of EUIs, so with a wildcard every process receives every command and ignores the others').

**Reconnection.** One task owns the connection: connect, subscribe, read; when the broker goes away it waits
`min_backoff` doubling to `max_backoff` (with jitter) and tries again, forever, until `close()`. With
`persistent_session=True` and a fixed `identifier` the broker keeps this client's subscriptions and queues its
QoS 1 commands while it is away (and across broker restarts when the broker persists sessions).

**Outbound.** `send(frame, to=hub)` (and answers through the `Origin`) only enqueue: a bounded queue
(`out_queue` frames; a full queue drops the new frame, counted in `queue_drops`) drained in order by one
publisher task that publishes while connected and, when the connection breaks mid-publish, keeps the frame and
publishes it again after the reconnection (at-least-once, as QoS 1 is). So what was queued while the broker was
away goes out once it is back, in order.

**Inbound.** Commands are spread over `workers` bounded queues by hub (`inbound_queue` frames each; a full
queue drops and counts), each drained by one task calling `on_frame` one frame at a time, so the commands of one
hub are handled in the order they arrived while different hubs proceed independently.

`close(grace)` stops taking commands, lets the queued ones be handled and the answers be published (up to
`grace` seconds), then disconnects cleanly. `MqttHeadEnd` is the other side, for tests and benchmarks.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from typing import Callable, Iterable

import aiomqtt

from protocols.security.eui import as_eui, eui_hex
from protocols.security.errors import InvalidEuiError

from firmware_emu.fleet.wan import (BoundedQueue, FrameHandler, FrameTooLarge, Origin, WanClosed, WanCounters,
                                    WanError)

__all__ = ["MqttWan", "MqttHeadEnd", "down_topic", "up_topic", "DEFAULT_PREFIX", "QOS"]

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "gbcs"
QOS = 1
DEFAULT_MAX_PAYLOAD = 0xFFFF
_SUBSCRIBE_BATCH = 500
_ids = itertools.count(1)


def down_topic(hub, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}/{eui_hex(hub)}/down"


def up_topic(hub, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}/{eui_hex(hub)}/up"


class _MqttLink:
    """One MQTT connection with reconnection, subscriptions and an ordered, bounded publish queue."""

    direction_in = "down"   # the topic suffix this side receives

    def __init__(self, host: str, port: int = 1883, *, prefix: str = DEFAULT_PREFIX, identifier: str | None = None,
                 persistent_session: bool = False, keepalive: int = 30, min_backoff: float = 0.2,
                 max_backoff: float = 10.0, out_queue: int = 10_000, publish_timeout: float = 10.0,
                 max_payload: int = DEFAULT_MAX_PAYLOAD, clock: Callable[[], float] = time.time):
        if persistent_session and not identifier:
            raise WanError("a persistent MQTT session needs a fixed identifier")
        self.host, self.port, self.prefix = host, port, prefix.rstrip("/")
        self.identifier = identifier or f"gbcs-emu-{type(self).__name__.lower()}-{next(_ids)}-{random.getrandbits(32):08x}"
        self.persistent_session = persistent_session
        self.keepalive = keepalive
        self.min_backoff, self.max_backoff = min_backoff, max_backoff
        self.publish_timeout = publish_timeout
        self.max_payload = max_payload
        self.clock = clock
        self.counters = WanCounters()
        self._out: BoundedQueue[tuple[str, bytes]] = BoundedQueue(out_queue)
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._connections = 0
        self._inflight: asyncio.Task | None = None
        self._publishing = False
        self._tasks: list[asyncio.Task] = []
        self._closing = False

    # -- to implement ---------------------------------------------------------------------------------------------
    def _subscriptions(self) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _deliver(self, hub: str, topic: str, payload: bytes, received_at: float) -> None:  # pragma: no cover
        raise NotImplementedError

    # -- lifecycle ------------------------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._tasks:
            raise WanError("MQTT link already started")
        name = type(self).__name__
        self._tasks = [asyncio.create_task(self._run(), name=f"{name}-connection"),
                       asyncio.create_task(self._publisher(), name=f"{name}-publisher")]

    async def __aenter__(self):
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Until connected and subscribed; TimeoutError after `timeout` s."""
        await asyncio.wait_for(self._connected.wait(), timeout)

    def stats(self) -> dict[str, int]:
        self.counters.connections = int(self.connected)
        self.counters.queued = len(self._out) + int(self._publishing)
        self.counters.queue_drops = self._out.drops + self._inbound_drops()
        return self.counters.as_dict()

    def _inbound_drops(self) -> int:
        return 0

    async def _drain(self, deadline: float) -> None:
        """Wait until the publish queue is empty (or the deadline passes)."""
        loop = asyncio.get_running_loop()
        while (len(self._out) or self._publishing) and loop.time() < deadline and self.connected:
            await asyncio.sleep(0.01)

    async def close(self, grace: float = 2.0) -> None:
        """Publish what is queued (up to `grace` s while connected), then disconnect cleanly."""
        if self._closing:
            return
        self._closing = True
        loop = asyncio.get_running_loop()
        await self._before_close(loop.time() + grace)
        await self._drain(loop.time() + grace)
        if len(self._out) or self._publishing:
            log.warning("%s: closing with %d frames unpublished", self.identifier, len(self._out) + self._publishing)
        self._out.close()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._connected.clear()

    async def _before_close(self, deadline: float) -> None:
        pass

    # -- connection -----------------------------------------------------------------------------------------------
    def _new_client(self) -> aiomqtt.Client:
        return aiomqtt.Client(self.host, self.port, identifier=self.identifier,
                              clean_session=not self.persistent_session, keepalive=self.keepalive,
                              timeout=self.publish_timeout, max_queued_incoming_messages=self._incoming_limit(),
                              logger=log)

    def _incoming_limit(self) -> int:
        return 10_000

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        subs = self._subscriptions()
        for i in range(0, len(subs), _SUBSCRIBE_BATCH):
            await client.subscribe([(t, QOS) for t in subs[i:i + _SUBSCRIBE_BATCH]])

    async def _run(self) -> None:
        backoff = self.min_backoff
        failures = 0
        while not self._closing:
            client = self._new_client()
            try:
                async with client:
                    await self._subscribe(client)
                    self._client = client
                    self._connections += 1
                    if self._connections > 1:
                        self.counters.reconnects += 1
                    self._connected.set()
                    log.info("%s: connected to %s:%d (%s)", self.identifier, self.host, self.port,
                             "reconnection" if self._connections > 1 else "first connection")
                    backoff, failures = self.min_backoff, 0
                    async for msg in client.messages:
                        self._on_message(msg)
            except aiomqtt.MqttError as e:
                if self._client is client:
                    self.counters.disconnects += 1
                    log.warning("%s: lost the broker: %s", self.identifier, e)
                else:
                    self.counters.connect_failures += 1
                    failures += 1
                    (log.warning if failures == 1 else log.debug)(
                        "%s: cannot connect to %s:%d: %s", self.identifier, self.host, self.port, e)
            finally:
                self._connected.clear()
                self._client = None
                if self._inflight is not None:
                    self._inflight.cancel()   # its PUBACK will never come on this connection: publish again
            if self._closing:
                break
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, self.max_backoff)

    def _on_message(self, msg) -> None:
        topic = msg.topic.value
        payload = msg.payload if isinstance(msg.payload, (bytes, bytearray)) else b""
        hub = self._hub_of(topic)
        if hub is None:
            self.counters.framing_errors += 1
            log.debug("%s: ignored a message on %s", self.identifier, topic)
            return
        self._deliver(hub, topic, bytes(payload), self.clock())

    def _hub_of(self, topic: str) -> str | None:
        head, sep, rest = topic.partition(self.prefix + "/")
        if head or not sep:
            return None
        hub, sep, tail = rest.partition("/")
        if tail != self.direction_in or len(hub) != 16:
            return None
        try:
            return eui_hex(hub)
        except InvalidEuiError:
            return None

    # -- outbound -------------------------------------------------------------------------------------------------
    def _enqueue(self, topic: str, frame: bytes) -> bool:
        if len(frame) > self.max_payload:
            raise FrameTooLarge(f"frame of {len(frame)} bytes over max_payload {self.max_payload}", "payload")
        if self._closing and self._out.closed:
            self.counters.undeliverable += 1
            return False
        ok = self._out.put((topic, bytes(frame)))
        if not ok:
            log.warning("%s: publish queue full (%d), frame to %s dropped", self.identifier, self._out.maxsize, topic)
        return ok

    async def _publisher(self) -> None:
        while True:
            try:
                topic, payload = await self._out.get()
            except WanClosed:
                return
            self._publishing = True
            try:
                while True:
                    await self._connected.wait()
                    client = self._client
                    if client is None:
                        await asyncio.sleep(0.01)
                        continue
                    self._inflight = asyncio.create_task(client.publish(topic, payload, qos=QOS))
                    try:
                        await asyncio.wait({self._inflight})
                    except asyncio.CancelledError:
                        self._inflight.cancel()
                        raise
                    task, self._inflight = self._inflight, None
                    if not task.cancelled() and task.exception() is None:
                        self.counters.frames_out += 1
                        self.counters.bytes_out += len(payload)
                        break
                    if not task.cancelled():
                        log.info("%s: publish to %s failed (%s); retrying after reconnection", self.identifier,
                                 topic, task.exception())
                    # wait for the connection task to notice the loss (or for the next connection)
                    await asyncio.sleep(0.05)
            finally:
                self._publishing = False


class MqttWan(_MqttLink):
    """The fleet side: commands from `<prefix>/<hub>/down` to `on_frame`, answers and alerts to `.../up`.

    Give `hubs` (exact subscriptions: a broker-side shard) or `filters` (default `<prefix>/+/down`) with an
    optional `serves(hub)` predicate (module docstring)."""

    direction_in = "down"

    def __init__(self, on_frame: FrameHandler, host: str, port: int = 1883, *, hubs: Iterable | None = None,
                 filters: Iterable[str] | None = None, serves: Callable[[str], bool] | None = None,
                 workers: int = 4, inbound_queue: int = 1024, **kw):
        super().__init__(host, port, **kw)
        if hubs is not None and filters is not None:
            raise WanError("give hubs or filters, not both")
        self.on_frame = on_frame
        self.hubs = frozenset(eui_hex(h) for h in hubs) if hubs is not None else None
        self.filters = list(filters) if filters is not None else None
        if self.hubs is not None and serves is None:
            serves = self.hubs.__contains__
        self.serves = serves
        if workers < 1:
            raise WanError("workers must be at least 1")
        self._queues: list[BoundedQueue] = [BoundedQueue(inbound_queue) for _ in range(workers)]
        self._busy = 0

    def _subscriptions(self) -> list[str]:
        if self.hubs is not None:
            return [down_topic(h, self.prefix) for h in sorted(self.hubs)]
        return self.filters or [f"{self.prefix}/+/down"]

    def _incoming_limit(self) -> int:
        return sum(q.maxsize for q in self._queues)

    def _inbound_drops(self) -> int:
        return sum(q.drops for q in self._queues)

    async def start(self) -> None:
        await super().start()
        self._tasks += [asyncio.create_task(self._worker(q), name=f"MqttWan-worker-{i}")
                        for i, q in enumerate(self._queues)]

    def _deliver(self, hub: str, topic: str, payload: bytes, received_at: float) -> None:
        c = self.counters
        if self.serves is not None and not self.serves(hub):
            c.not_ours += 1
            return
        if self._closing:
            c.undeliverable += 1
            return
        c.bytes_in += len(payload)
        if not payload or len(payload) > self.max_payload:
            c.framing_errors += 1
            c.oversize += bool(payload)
            log.warning("%s: refused a %d-byte message on %s", self.identifier, len(payload), topic)
            return
        q = self._queues[hash(hub) % len(self._queues)]
        if q.put((hub, topic, payload, received_at)):
            c.frames_in += 1
        else:
            log.warning("%s: inbound queue full, command for hub %s dropped", self.identifier, hub)

    async def _worker(self, q: BoundedQueue) -> None:
        while True:
            try:
                hub, topic, payload, received_at = await q.get()
            except WanClosed:
                return
            self._busy += 1

            async def reply(frame: bytes, _hub=hub) -> bool:
                return self._enqueue(up_topic(_hub, self.prefix), frame)

            try:
                await self.on_frame(payload, Origin(hub, received_at, topic, reply))
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one bad command must not stop the worker
                self.counters.handler_errors += 1
                log.exception("%s: frame handler failed for hub %s", self.identifier, hub)
            finally:
                self._busy -= 1

    async def _before_close(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while (self._busy or any(len(q) for q in self._queues)) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        for q in self._queues:
            q.close()

    async def send(self, frame: bytes, to=None) -> bool:
        """Queue `frame` for `<prefix>/<to>/up`; `to` is the hub EUI (required: MQTT has no broadcast)."""
        if to is None:
            raise WanError("MqttWan.send needs the hub EUI (to=...)")
        return self._enqueue(up_topic(to, self.prefix), frame)


class MqttHeadEnd(_MqttLink):
    """The head-end side (tests, benchmarks): publish commands to `.../down`, receive from `.../up`.

    `hubs=None` listens to every hub (`<prefix>/+/up`). Received frames wait in one bounded queue (`queue`)."""

    direction_in = "up"

    def __init__(self, host: str, port: int = 1883, *, hubs: Iterable | None = None, queue: int = 4096, **kw):
        super().__init__(host, port, **kw)
        self.hubs = sorted({eui_hex(h) for h in hubs}) if hubs is not None else None
        self._queue_max = queue
        self._received: list[tuple[str, bytes]] = []
        self._arrived = asyncio.Event()
        self._dropped = 0

    def _subscriptions(self) -> list[str]:
        if self.hubs is not None:
            return [up_topic(h, self.prefix) for h in self.hubs]
        return [f"{self.prefix}/+/up"]

    def _inbound_drops(self) -> int:
        return self._dropped

    def _deliver(self, hub: str, topic: str, payload: bytes, received_at: float) -> None:
        if len(self._received) >= self._queue_max:
            self._dropped += 1
            return
        self.counters.frames_in += 1
        self.counters.bytes_in += len(payload)
        self._received.append((hub, payload))
        self._arrived.set()

    async def publish(self, hub, frame: bytes) -> bool:
        """Queue a command for `<prefix>/<hub>/down`."""
        return self._enqueue(down_topic(hub, self.prefix), frame)

    send = publish

    async def recv(self, hub=None, timeout: float | None = 5.0) -> tuple[str, bytes]:
        """The oldest received (hub, frame), from `hub` only when given; TimeoutError after `timeout` s."""
        want = eui_hex(as_eui(hub)) if hub is not None else None

        def take():
            for i, (h, f) in enumerate(self._received):
                if want is None or h == want:
                    del self._received[i]
                    return h, f
            return None

        async def wait():
            while (got := take()) is None:
                self._arrived.clear()
                await self._arrived.wait()
            return got

        got = take()
        return got if got is not None else await asyncio.wait_for(wait(), timeout)

    async def request(self, hub, frame: bytes, timeout: float | None = 5.0) -> bytes:
        """Publish a command to `hub` and return the next frame that hub sends up."""
        await self.publish(hub, frame)
        return (await self.recv(hub, timeout))[1]
