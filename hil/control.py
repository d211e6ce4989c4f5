"""A small JSON-lines control protocol a device under test MAY offer next to its GBCS line, so a conformance
runner can set up scenario preconditions on it (`gbcs-emu hil serve --control HOST:PORT`, `conformance rtds
--control HOST:PORT`).

Why a side channel: RTDS ERROR commands are byte-identical to the SUCCESS ones (the failure is the device's
state), future-dated work needs the device's clock moved, alert-only cases need the device to live through an
event, and every case wants a fresh device. None of that can be said in GBCS, and the GBCS line must stay pure.

Theory of operation
-------------------
One TCP connection carries requests and replies, one JSON object per line (UTF-8, `\\n`-terminated, at most
`MAX_LINE` bytes), strictly request → reply in order::

    → {"id": 7, "op": "fault", "target": "3/1-0:1.8.0.255/a2", "result": "hardware-fault", "at_execution": false}
    ← {"id": 7, "ok": true, "now": 1420070400.0, "next_wakeup": null, "line_in": 12, "line_out": 14}
    → {"id": 8, "op": "nonsense"}
    ← {"id": 8, "ok": false, "error": {"type": "unknown_op", "message": "..."}, ...status}

Operations (`OPS`), arguments and what the reply adds besides the status:

    info                                             eui, device_type, speed, protocol, ops
    reset         profile?: {..}, now?: epoch s      a freshly provisioned device (same keys), clock at `now`
    clock         set?: epoch s | advance?: s        moves the clock (never back, except by reset) and runs the
                                                     device's timers now due → frames
    fault         target, result, at_execution?      the device's FaultPlan gets the fault
    prepare       condition, detail?: {..}           `Device.prepare(condition, **detail)`
    stimulate     message_code, alert_code?, detail?  `Device.stimulate(...)` at the device's now → frames
    certificates                                     ds, ka (DER, hex)
    status                                           (the status only)

Every reply carries the status: `now`, `next_wakeup` (epoch s or null), `line_in` / `line_out` (GBCS frames the
device has taken from / written to its line since it started). `frames` (hex) are the GBCS frames a control
action made the device emit; they are ALSO written on the GBCS line, as a real device would, and the line
stays the runner's source of truth (`line_out` tells it how many frames to wait for). Error types:
`bad_request`, `unknown_op`, `not_implemented` (the device cannot do that: `ControlNotImplemented`, a
NotImplementedError), `unsupported` (not in this configuration), `device_error`.

Sans-IO: `ControlHandler.handle(line) -> reply line` over a `Controlled` device; `ControlServer` and
`ControlClient` are the asyncio edges (bounded line length, bounded number of clients, timeouts).
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
from typing import Callable, Protocol

from protocols.errors import GbcsEmuError

__all__ = ["ControlError", "ControlNotImplemented", "Controlled", "ControlHandler", "ControlServer",
           "ControlClient", "ControlClock", "ServedDevice", "parse_hostport", "OPS", "MAX_LINE", "PROTOCOL"]

log = logging.getLogger(__name__)

PROTOCOL = 1
#: Longest request or reply line (a reply with frames of a few KB each stays far below).
MAX_LINE = 1 << 20
#: Bound of the timer loop a clock move runs (as the runner's MAX_TICKS).
MAX_TIMER_STEPS = 64
OPS = ("info", "reset", "clock", "fault", "prepare", "stimulate", "certificates", "status")


class ControlError(GbcsEmuError):
    """A control request that failed (`kind` = the reply's error type) or a control channel that broke."""

    def __init__(self, message: str, kind: str = "device_error"):
        super().__init__(message)
        self.kind = kind


class ControlNotImplemented(ControlError, NotImplementedError):
    """The device cannot do what was asked (a condition it cannot be prepared for, an alert it cannot raise)."""


def parse_hostport(text: str) -> tuple[str, int]:
    """`HOST:PORT` (or `[v6]:PORT`, or `tcp://HOST:PORT`) → (host, port); ControlError when malformed."""
    s = text.strip()
    if s.startswith("tcp://"):
        s = s[len("tcp://"):]
    host, sep, port = s.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ControlError(f"want HOST:PORT, not {text!r}", "bad_request")
    return host, int(port)


# --------------------------------------------------------------------------------------------- the device side


class Controlled(Protocol):
    """What a device under test lets the handler do (`ServedDevice` for `hil serve`)."""

    def info(self) -> dict: ...
    def status(self) -> dict: ...
    def reset(self, profile: dict | None, now: float | None) -> None: ...
    def set_clock(self, t: float) -> list[bytes]: ...
    def inject_fault(self, target: str, result: str, at_execution: bool) -> None: ...
    def prepare(self, condition: str, detail: dict) -> None: ...
    def stimulate(self, message_code: int, alert_code: int | None, detail: dict) -> list[bytes]: ...
    def certificates(self) -> dict[str, bytes]: ...


def _num(req: dict, key: str, *, required: bool = False) -> float | None:
    v = req.get(key)
    if v is None:
        if required:
            raise ControlError(f"{key!r} is required", "bad_request")
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ControlError(f"{key!r} must be a number, not {v!r}", "bad_request")
    return float(v)


def _code(req: dict, key: str, *, required: bool = False) -> int | None:
    v = req.get(key)
    if v is None and not required:
        return None
    if isinstance(v, str):
        try:
            return int(v, 0)
        except ValueError:
            pass
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 0xFFFF:
        return v
    raise ControlError(f"{key!r} must be a 16-bit code (int or '0x8F66'), not {v!r}", "bad_request")


def _str(req: dict, key: str) -> str:
    v = req.get(key)
    if not isinstance(v, str) or not v:
        raise ControlError(f"{key!r} must be a non-empty string", "bad_request")
    return v


def _dict(req: dict, key: str) -> dict | None:
    v = req.get(key)
    if v is not None and not isinstance(v, dict):
        raise ControlError(f"{key!r} must be an object", "bad_request")
    return v


class ControlHandler:
    """Sans-IO: one request line in, one reply line out (never raises on bad input)."""

    def __init__(self, device: Controlled):
        self.device = device
        self.requests = 0
        self.errors = 0

    def handle(self, line: bytes | str) -> bytes:
        self.requests += 1
        rid = None
        try:
            try:
                req = json.loads(line)
            except (ValueError, UnicodeDecodeError) as e:
                raise ControlError(f"not JSON: {e}", "bad_request") from None
            if not isinstance(req, dict):
                raise ControlError("a request is a JSON object", "bad_request")
            rid = req.get("id")
            reply = {"id": rid, "ok": True, **self._dispatch(req)}
        except NotImplementedError as e:
            reply = self._error(rid, "not_implemented", str(e))
        except ControlError as e:
            reply = self._error(rid, e.kind, str(e))
        except (GbcsEmuError, ValueError, TypeError, KeyError) as e:
            reply = self._error(rid, "device_error", f"{type(e).__name__}: {e}")
        except Exception as e:  # noqa: BLE001 - a crash in the device is an answer, not a dead server
            log.exception("control request failed")
            reply = self._error(rid, "device_error", f"{type(e).__name__}: {e}")
        try:
            reply.update(self.device.status())
        except Exception:  # noqa: BLE001
            pass
        return (json.dumps(reply, separators=(",", ":")) + "\n").encode()

    def _error(self, rid, kind: str, message: str) -> dict:
        self.errors += 1
        return {"id": rid, "ok": False, "error": {"type": kind, "message": message}}

    def _dispatch(self, req: dict) -> dict:
        op = req.get("op")
        d = self.device
        if op == "info":
            return {**d.info(), "protocol": PROTOCOL, "ops": list(OPS)}
        if op == "status":
            return {}
        if op == "reset":
            d.reset(_dict(req, "profile"), _num(req, "now"))
            return {**d.info(), "frames": []}
        if op == "clock":
            t, adv = _num(req, "set"), _num(req, "advance")
            if (t is None) == (adv is None):
                raise ControlError("clock wants exactly one of 'set' and 'advance'", "bad_request")
            if adv is not None:
                if adv < 0:
                    raise ControlError("the clock never goes back (reset does)", "bad_request")
                t = d.status()["now"] + adv
            return {"frames": [f.hex().upper() for f in d.set_clock(t)]}
        if op == "fault":
            d.inject_fault(_str(req, "target"), _str(req, "result"), bool(req.get("at_execution", False)))
            return {}
        if op == "prepare":
            d.prepare(_str(req, "condition"), _dict(req, "detail") or {})
            return {}
        if op == "stimulate":
            frames = d.stimulate(_code(req, "message_code", required=True), _code(req, "alert_code"),
                                 _dict(req, "detail") or {})
            return {"frames": [f.hex().upper() for f in frames]}
        if op == "certificates":
            return {k: v.hex().upper() for k, v in d.certificates().items() if v}
        raise ControlError(f"unknown op {op!r}; known: {', '.join(OPS)}", "unknown_op")


class ControlClock:
    """`SimClock` that a control `reset` may set back (a fresh device lives from `now` again); otherwise it
    only moves forward, like device time."""

    def __init__(self, start: float, speed: float = 1.0):
        from firmware_emu.core.clock import SimClock
        self._make = SimClock
        self._clock = SimClock(start, speed)

    @property
    def speed(self) -> float:
        return self._clock.speed

    def now(self) -> float:
        return self._clock.now()

    def advance(self, seconds: float) -> None:
        self._clock.advance(seconds)

    def set(self, t: float) -> None:
        """Forward to `t` (no-op when already past it)."""
        now = self._clock.now()
        if t > now:
            self._clock.advance(t - now)

    def restart(self, t: float) -> None:
        self._clock = self._make(t, self._clock.speed)


class ServedDevice:
    """`hil serve`'s device behind the control channel: a `hil.serve.DeviceServer`, its clock and its link.
    Frames a control action makes the device emit are written on the link (`emit`) and returned."""

    def __init__(self, server, clock: ControlClock, keystore, emit: Callable[[bytes], bool],
                 line_stats: Callable[[], dict]):
        from firmware_emu.core.provisioning import default_anchors
        self.server, self.clock, self.emit, self.line_stats = server, clock, emit, line_stats
        self.anchors = default_anchors(keystore)
        # the keys as provisioned, before any device could change its view of the remote parties (CS02): each
        # reset starts from a copy of these, as the runner's provisioner does
        self._keys = dataclasses.replace(server.keys, _secrets={})

    @property
    def device(self):
        return self.server.device

    def info(self) -> dict:
        return {"eui": self.server.eui, "device_type": self.server.device_type, "speed": self.clock.speed}

    def status(self) -> dict:
        s = self.line_stats()
        return {"now": self.clock.now(), "next_wakeup": self.device.next_wakeup(), "line_in": s.get("frames_in", 0),
                "line_out": s.get("frames_out", 0) + s.get("queued", 0)}

    def reset(self, profile: dict | None, now: float | None) -> None:
        if self.server.host is not None:
            raise ControlError("reset is not available with --state (the device is persistent)", "unsupported")
        from firmware_emu.devices import device_class
        t = self.clock.now() if now is None else now
        self.clock.restart(t)
        cls = device_class(self.server.device_type)
        self.server.device = cls(dataclasses.replace(self._keys, _secrets={}), anchors=self.anchors, now=t,
                                 profile=profile)

    def _send(self, frames: list[bytes]) -> list[bytes]:
        for f in frames:
            self.emit(f)
        return frames

    def set_clock(self, t: float) -> list[bytes]:
        self.clock.set(t)
        now = self.clock.now()
        out: list[bytes] = []
        for _ in range(MAX_TIMER_STEPS):
            w = self.device.next_wakeup()
            if w is None or w > now:
                break
            frames = self.server.tick(now)
            out += frames
            if self.device.next_wakeup() == w and not frames:
                break
        return self._send(out)

    def inject_fault(self, target: str, result: str, at_execution: bool) -> None:
        self.device.faults.fail(target, result, at_execution=at_execution)

    def prepare(self, condition: str, detail: dict) -> None:
        self.device.prepare(condition, **detail)

    def stimulate(self, message_code: int, alert_code: int | None, detail: dict) -> list[bytes]:
        emitted = self.device.stimulate(message_code, alert_code, self.clock.now(), **detail)
        return self._send([e.frame for e in emitted])

    def certificates(self) -> dict[str, bytes]:
        keys = self.device.keys
        return {"ds": keys.ds_certificate, "ka": keys.ka_certificate}


# --------------------------------------------------------------------------------------------- asyncio edges


class ControlServer:
    """Serves a `ControlHandler` on TCP: requests handled one at a time per connection, in order; at most
    `max_clients` connections (more are closed at once); a line over `MAX_LINE` closes its connection."""

    def __init__(self, handler: ControlHandler, host: str = "127.0.0.1", port: int = 0, *, max_clients: int = 4):
        self.handler, self.host, self.port, self.max_clients = handler, host, port, max_clients
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self.rejected = 0

    async def start(self) -> "ControlServer":
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_LINE)
        return self

    @property
    def address(self) -> tuple[str, int]:
        return self._server.sockets[0].getsockname()[:2]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._conns) >= self.max_clients:
            self.rejected += 1
            writer.close()
            return
        self._conns.add(writer)
        try:
            while True:
                try:
                    line = await reader.readline()
                except (asyncio.LimitOverrunError, ValueError):
                    writer.write(json.dumps({"id": None, "ok": False, "error": {
                        "type": "bad_request", "message": f"line longer than {MAX_LINE} bytes"}}).encode() + b"\n")
                    break
                if not line:
                    break
                if not line.strip():
                    continue
                writer.write(self.handler.handle(line))
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._conns.discard(writer)
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._conns):
                w.close()
            try:
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            except asyncio.TimeoutError:
                pass


class ControlClient:
    """The runner's side: `await ControlClient.connect(host, port)`, `await call(op, **args)` → the reply dict;
    a failed request raises ControlError (ControlNotImplemented for `not_implemented`), a silent device
    TimeoutError after `timeout` seconds."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float = 5.0):
        self._reader, self._writer, self.timeout = reader, writer, timeout
        self._id = 0
        self._lock = asyncio.Lock()

    @classmethod
    async def connect(cls, host: str, port: int, *, timeout: float = 5.0) -> "ControlClient":
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, limit=MAX_LINE), timeout)
        return cls(reader, writer, timeout)

    async def call(self, op: str, *, timeout: float | None = None, **args) -> dict:
        async with self._lock:
            self._id += 1
            rid = self._id
            self._writer.write((json.dumps({"id": rid, "op": op, **args}, separators=(",", ":")) + "\n").encode())
            await self._writer.drain()
            while True:
                line = await asyncio.wait_for(self._reader.readline(), timeout or self.timeout)
                if not line:
                    raise ControlError("control connection closed by the device", "closed")
                reply = json.loads(line)
                if reply.get("id") == rid:
                    break
        if not reply.get("ok"):
            err = reply.get("error") or {}
            kind, message = err.get("type", "device_error"), err.get("message", "")
            cls = ControlNotImplemented if kind == "not_implemented" else ControlError
            raise cls(f"control {op}: {message}", kind)
        return reply

    async def close(self) -> None:
        self._writer.close()
        try:
            await asyncio.wait_for(self._writer.wait_closed(), 2.0)
        except (asyncio.TimeoutError, ConnectionError, OSError):
            pass
