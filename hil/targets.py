"""Devices under test outside the process, for `gbcs-emu conformance rtds --target URL [--control HOST:PORT]`.

URLs (`open_target`):

* `inproc:` (the default): not here, `hil.conformance.rtds.InprocTarget`, a fresh emulated device per case;
* `tcp://HOST:PORT`: GFI text framing over TCP (`firmware_emu.fleet.wan.TcpWanClient`) → `TcpTarget`;
* `serial:///dev/ttyX?framing=gfi&baud=115200&parity=N`, a bare port path, `socket://HOST:PORT`,
  `rfc2217://HOST:PORT` (pyserial's `serial_for_url` through `hil.serial_link.SerialLink`) → `SerialTarget`.

Any of them may add `eui=<16 hex>`: the EUI of the device under test (cases addressed to other EUIs are skipped;
with a control channel the device tells its EUI itself). No framing code here: the transports deframe.

Theory of operation
-------------------
The runner is synchronous (`Target`: `send`, `tick`, `next_wakeup`, ...); the transports are asyncio. A
`RemoteTarget` owns one event loop in a daemon thread (`_LoopThread`) holding the frame channel (and the control
client); every Target call runs a coroutine there and waits for it, bounded by the case's deadline.

One RemoteTarget serves the whole run; `begin_case(eui, now, profile)` starts a case and its deadline
(`timeout` seconds from then)::

    with control (hil.control):                            without control:
      reset(profile, now) → fresh device, clock at now       drain the line (late frames of the previous case:
      wait until the line delivered every frame the            counted in `stray_frames`)
        device says it wrote (`line_out`)                    send(frame): write, return []
      send(frame): write; poll `status` until the device     settle(frames, N): wait until N frames arrived
        took it (`line_in`); collect up to its `line_out`      or the deadline → `timed_out`
      tick(t): control `clock set=t` → collect; stimulate,   tick/next_wakeup: nothing (a device on its own
        prepare, faults, certificates: control requests        clock emits its future-dated alerts when due)

With control, the line stays the source of truth but the device's frame counters tell the runner exactly how many
frames to wait for, so a case never waits for frames that will not come; a case whose frames did not all
arrive by the deadline is marked `timed_out` (the runner reports `timeout: expected N frames, got M`).
Without control, certificates come from `certificates_for(eui)` (the runner's own provisioning, which `hil
serve` with the same seed matches).
"""
from __future__ import annotations

import asyncio
import threading
import time
import urllib.parse
from typing import Callable

from protocols.errors import GbcsEmuError
from protocols.security.eui import as_eui, eui_hex

__all__ = ["TargetError", "RemoteTarget", "TcpTarget", "SerialTarget", "open_target", "split_target_url",
           "DEFAULT_TIMEOUT"]

DEFAULT_TIMEOUT = 5.0
#: How often `send` asks a controlled device whether it took the command yet.
POLL = 0.001
#: Our own URL options, removed before the URL reaches pyserial.
_OPTIONS = ("framing", "baud", "baudrate", "parity", "eui")


class TargetError(GbcsEmuError):
    """A target URL that cannot be used, or a device under test that cannot be reached."""


def split_target_url(url: str) -> tuple[str, str, dict]:
    """(kind, transport URL, options): kind `inproc`, `tcp` or `serial`; options framing, baudrate, parity,
    eui when given."""
    text = url.strip()
    if text in ("inproc", "inproc:", "inproc://"):
        return "inproc", text, {}
    parts = urllib.parse.urlsplit(text)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    opts: dict = {}
    for k, v in query:
        if k == "framing":
            opts["framing"] = v.lower()
        elif k in ("baud", "baudrate"):
            if not v.isdigit():
                raise TargetError(f"{url}: baud must be a number, not {v!r}")
            opts["baudrate"] = int(v)
        elif k == "parity":
            opts["parity"] = v.upper()
        elif k == "eui":
            try:
                opts["eui"] = eui_hex(as_eui(v))
            except (ValueError, GbcsEmuError):
                raise TargetError(f"{url}: eui must be 16 hex digits, not {v!r}") from None
    rest = urllib.parse.urlencode([(k, v) for k, v in query if k not in _OPTIONS])
    if parts.scheme == "tcp":
        if parts.hostname is None or parts.port is None:
            raise TargetError(f"{url}: want tcp://HOST:PORT")
        if opts.get("framing", "gfi") != "gfi":
            raise TargetError(f"{url}: tcp:// targets speak GFI framing")
        return "tcp", f"{parts.hostname}:{parts.port}", opts
    if parts.scheme == "serial":
        if not parts.path:
            raise TargetError(f"{url}: want serial:///dev/ttyX?framing=gfi&baud=115200")
        return "serial", parts.path, opts
    if parts.scheme in ("socket", "rfc2217", "loop", "spy", "alt", "hwgrep") or (not parts.scheme and parts.path):
        base = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, rest, parts.fragment))
        return "serial", base, opts
    raise TargetError(f"unknown target {url!r}; want inproc:, tcp://HOST:PORT or serial:///dev/ttyX?framing=gfi")


class _LoopThread:
    """An asyncio loop in a daemon thread; `run(coro, timeout)` from the caller's thread."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="gbcs-emu-target", daemon=True)
        self._thread.start()

    def run(self, coro, timeout: float):
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except TimeoutError:
            fut.cancel()
            raise

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self.loop.close()


class _TcpChannel:
    """GFI over TCP (TcpWanClient); reconnects when the connection is gone at the start of a case."""

    def __init__(self, address: str):
        host, _, port = address.rpartition(":")
        self.host, self.port = host, int(port)
        self.client = None
        self.reconnects = -1

    async def open(self, timeout: float) -> None:
        from firmware_emu.fleet.wan import TcpWanClient
        self.client = await TcpWanClient.connect(self.host, self.port, framing="gfi", timeout=timeout)
        self.reconnects += 1

    async def ensure(self, timeout: float) -> None:
        if self.client is None or self.client.closed:
            await self.open(timeout)

    async def send(self, frame: bytes) -> None:
        await self.client.send(frame)

    async def recv(self, timeout: float) -> bytes:
        from firmware_emu.fleet.wan import WanClosed
        try:
            return await self.client.recv(timeout)
        except WanClosed:
            raise TargetError(f"tcp://{self.host}:{self.port}: connection closed by the device") from None

    def stats(self) -> dict:
        return self.client.stats() if self.client is not None else {}

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()


class _SerialChannel:
    """A SerialLink (framing, baud and parity from the URL; it reconnects by itself)."""

    def __init__(self, url: str, framing: str = "gfi", baudrate: int = 115200, parity: str = "N"):
        from hil.serial_link import HdlcParams, SerialLink
        # the runner is the head end: HDLC frames go dest=server, src=client
        self.link = SerialLink(url, framing=framing, baudrate=baudrate, parity=parity,
                               hdlc=HdlcParams(role="client"))
        self.reconnects = 0

    async def open(self, timeout: float) -> None:
        await self.link.start()
        try:
            await self.link.wait_connected(timeout)
        except asyncio.TimeoutError:
            await self.link.close(grace=0)
            raise TargetError(f"{self.link.url}: the port did not open within {timeout:g} s") from None

    async def ensure(self, timeout: float) -> None:
        if not self.link.connected:
            await self.link.wait_connected(timeout)

    async def send(self, frame: bytes) -> None:
        if not self.link.send(frame):
            raise TargetError(f"{self.link.url}: the frame was refused by the link")

    async def recv(self, timeout: float) -> bytes:
        return await self.link.recv(timeout)

    def stats(self) -> dict:
        s = self.link.stats()
        self.reconnects = s.get("reconnects", 0)
        return s

    async def close(self) -> None:
        await self.link.close(grace=0.5)


class RemoteTarget:
    """A device under test behind a frame channel, optionally with a control channel (module docstring).
    `open()` first, `close()` last; `begin_case()` before each case."""

    def __init__(self, url: str, channel, *, control: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                 eui: str | None = None, certificates_for: Callable[[str], dict] | None = None):
        self.url, self.channel, self.timeout = url, channel, float(timeout)
        self.control_address = control
        self.certificates_for = certificates_for
        self.eui: str | None = eui
        self.device_type: str | None = None
        self.ctl = None
        self._thread: _LoopThread | None = None
        self._rx = 0                 # frames received from the line since open()
        self._offset = 0             # device's line_out - our _rx when in step (frames the line never delivered)
        self._line_in = 0            # device's line_in after the last reset
        self._sent = 0               # commands sent since the last reset
        self._case_eui: str | None = None
        self._certs: dict[str, bytes] = {}
        self.deadline = 0.0
        self.timed_out = False
        self.stray_frames = 0        # frames that arrived outside any case's wait (late, or lost sync)
        self.line_losses = 0         # frames the device wrote that never arrived

    @property
    def controlled(self) -> bool:
        return self.ctl is not None

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def open(self) -> "RemoteTarget":
        self._thread = _LoopThread()
        try:
            self._run(self._open(), self.timeout * 2 + 1)
        except BaseException:
            self.close()
            raise
        return self

    async def _open(self) -> None:
        try:
            await self.channel.open(self.timeout)
        except (OSError, asyncio.TimeoutError) as e:
            raise TargetError(f"{self.url}: cannot connect: {e or type(e).__name__}") from None
        if self.control_address:
            from hil.control import ControlClient, parse_hostport
            host, port = parse_hostport(self.control_address)
            try:
                self.ctl = await ControlClient.connect(host, port, timeout=self.timeout)
            except (OSError, asyncio.TimeoutError) as e:
                raise TargetError(f"control {self.control_address}: cannot connect: {e or type(e).__name__}") \
                    from None
            info = await self.ctl.call("info")
            if self.eui is not None and info["eui"] != self.eui:
                raise TargetError(f"{self.url}: eui={self.eui} but the device under test says it is {info['eui']}")
            self.eui, self.device_type = info["eui"], info.get("device_type")
            await self._drain(0.05)
            self._offset = info["line_out"] - self._rx

    def close(self) -> None:
        if self._thread is None:
            return
        try:
            self._run(self._close(), 5)
        except (TimeoutError, GbcsEmuError, OSError):
            pass
        self._thread.close()
        self._thread = None

    async def _close(self) -> None:
        if self.ctl is not None:
            await self.ctl.close()
        await self.channel.close()

    def __enter__(self) -> "RemoteTarget":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def stats(self) -> dict:
        return {**self.channel.stats(), "stray_frames": self.stray_frames, "line_losses": self.line_losses}

    # -- plumbing -----------------------------------------------------------------------------------------------
    def _run(self, coro, timeout: float | None = None):
        if self._thread is None:
            raise TargetError("target not open")
        try:
            return self._thread.run(coro, self.timeout + 1 if timeout is None else timeout)
        except TimeoutError:
            raise TargetError(f"{self.url}: no answer within {self.timeout:g} s") from None

    def _left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    async def _drain(self, wait: float) -> int:
        n = 0
        while True:
            try:
                await self.channel.recv(wait)
            except asyncio.TimeoutError:
                return n
            self._rx += 1
            n += 1

    async def _collect_to(self, line_out: int) -> list[bytes]:
        """Frames until we have received all the device says it wrote, or the deadline."""
        out = []
        while self._rx + self._offset < line_out:
            try:
                out.append(await self.channel.recv(max(self._left(), 0.001)))
            except asyncio.TimeoutError:
                self.timed_out = True
                self.line_losses += line_out - self._rx - self._offset
                self._offset = line_out - self._rx         # back in step for the next case
                break
            self._rx += 1
        return out

    async def _call(self, op: str, **args) -> dict:
        return await self.ctl.call(op, timeout=max(self._left(), 0.5), **args)

    # -- a case -------------------------------------------------------------------------------------------------
    def begin_case(self, eui: str | None, now: float, profile: dict | None = None) -> None:
        """Start a case: its deadline; with control a fresh device (`profile`) at `now` and the line in step."""
        self.deadline = time.monotonic() + self.timeout
        self.timed_out = False
        self._case_eui = eui
        self._run(self._begin(now, profile))

    async def _begin(self, now: float, profile: dict | None) -> None:
        try:
            await self.channel.ensure(self._left())
        except (OSError, asyncio.TimeoutError) as e:
            raise TargetError(f"{self.url}: device gone: {e or type(e).__name__}") from None
        if self.ctl is None:
            if profile:
                raise TargetError("a device profile needs --control")
            self.stray_frames += await self._drain(0.005)
            return
        reply = await self._call("reset", profile=profile, now=now)
        self._line_in, self._sent = reply["line_in"], 0
        late = self._rx
        await self._collect_to(reply["line_out"])
        self.stray_frames += self._rx - late
        self.timed_out = False                 # a late frame of the previous case is not this case's timeout
        certs = await self._call("certificates")
        self._certs = {k: bytes.fromhex(certs[k]) for k in ("ds", "ka") if certs.get(k)}

    # -- Target -------------------------------------------------------------------------------------------------
    def send(self, frame: bytes, now: float) -> list[bytes]:
        return self._run(self._send(frame))

    async def _send(self, frame: bytes) -> list[bytes]:
        await self.channel.send(frame)
        self._sent += 1
        if self.ctl is None:
            return []
        while True:
            st = await self._call("status")
            if st["line_in"] >= self._line_in + self._sent:
                break
            if self._left() <= 0:
                self.timed_out = True
                return []
            await asyncio.sleep(POLL)
        return await self._collect_to(st["line_out"])

    def tick(self, now: float) -> list[bytes]:
        if self.ctl is None:
            return []
        return self._run(self._with_frames("clock", set=now))

    async def _with_frames(self, op: str, **args) -> list[bytes]:
        reply = await self._call(op, **args)
        return await self._collect_to(reply["line_out"])

    def next_wakeup(self) -> float | None:
        if self.ctl is None or self._left() <= 0:
            return None
        return self._run(self._call("status"))["next_wakeup"]

    def inject_fault(self, target: str, result: str, *, at_execution: bool = False) -> None:
        self._need_control("a fault")
        self._run(self._call("fault", target=target, result=result, at_execution=at_execution))

    def stimulate(self, message_code: int, alert_code: int | None, now: float, **detail) -> list[bytes]:
        if self.ctl is None:
            raise NotImplementedError("stimulating a device needs --control")
        return self._run(self._with_frames("stimulate", message_code=message_code, alert_code=alert_code,
                                           detail=detail))

    def prepare(self, condition: str, **detail) -> None:
        if self.ctl is None:
            raise NotImplementedError(f"preparing {condition!r} needs --control")
        self._run(self._call("prepare", condition=condition, detail=detail))

    def certificates(self) -> dict[str, bytes]:
        if self.ctl is not None:
            return dict(self._certs)
        eui = self._case_eui or self.eui
        if self.certificates_for is None or eui is None:
            return {}
        return self.certificates_for(eui)

    def settle(self, frames: list[bytes], expected: int) -> list[bytes]:
        """Without control: wait until `expected` frames arrived in all or the deadline (then `timed_out`).
        With control every frame the device wrote has been waited for already."""
        if self.ctl is not None or len(frames) >= expected:
            return frames
        return frames + self._run(self._settle(expected - len(frames)))

    async def _settle(self, n: int) -> list[bytes]:
        out: list[bytes] = []
        while len(out) < n:
            try:
                out.append(await self.channel.recv(max(self._left(), 0.001)))
            except asyncio.TimeoutError:
                self.timed_out = True
                break
            self._rx += 1
        return out

    def _need_control(self, what: str) -> None:
        if self.ctl is None:
            raise TargetError(f"{what} needs --control")


class TcpTarget(RemoteTarget):
    """`tcp://HOST:PORT`: a device (or a bench relay) speaking GFI-framed GBCS on a TCP socket."""

    def __init__(self, address: str, **kw):
        super().__init__(f"tcp://{address}", _TcpChannel(address), **kw)


class SerialTarget(RemoteTarget):
    """A device on a serial line: a port path, a pty, `socket://`, `rfc2217://` (pyserial's serial_for_url)."""

    def __init__(self, url: str, *, framing: str = "gfi", baudrate: int = 115200, parity: str = "N", **kw):
        super().__init__(url, _SerialChannel(url, framing, baudrate, parity), **kw)


def open_target(url: str, *, control: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                certificates_for: Callable[[str], dict] | None = None) -> RemoteTarget | None:
    """The opened remote target of `url` (None for `inproc:`); TargetError when it cannot be reached."""
    kind, address, opts = split_target_url(url)
    if kind == "inproc":
        if control:
            raise TargetError("--control goes with a remote --target (tcp://, serial://)")
        return None
    common = dict(control=control, timeout=timeout, eui=opts.get("eui"), certificates_for=certificates_for)
    if kind == "tcp":
        target: RemoteTarget = TcpTarget(address, **common)
    else:
        from hil.serial_link import FRAMINGS
        framing = opts.get("framing", "gfi")
        if framing not in FRAMINGS:
            raise TargetError(f"{url}: unknown framing {framing!r}; known: {', '.join(FRAMINGS)}")
        try:
            target = SerialTarget(address, framing=framing, baudrate=opts.get("baudrate", 115200),
                                  parity=opts.get("parity", "N"), **common)
        except (ValueError, OSError) as e:
            raise TargetError(f"{url}: {e}") from None
    return target.open()

