"""The common sans-IO streaming deframer API: bytes in, `Frame`/`FrameError` events out, time injected.

No sockets, serial ports or event loops here: the caller feeds whatever bytes arrived with the current time
(`feed(data, now)`) and calls `poll(now)` when nothing arrived, so inter-frame timeouts are checked against
the injected clock and tests are deterministic.

Every deframer built on `BaseDeframer`:
- resynchronises after garbage by skipping to the next plausible frame start (a `resync` event counts the
  skipped bytes); a frame that fails its check (`crc`, `syntax`, `oversize`) is abandoned by skipping its start
  byte and searching again, so a frame hidden behind a corrupt one is still found;
- handles a frame split across any number of feeds and several frames in one feed;
- on a timeout (no byte for more than `timeout` seconds while a partial frame is buffered) abandons the partial
  frame but rescans the bytes behind it, so complete frames there are still delivered;
- never keeps more than `max_frame` bytes (one frame on the wire, framing included) between feeds: a length
  claim over `max_frame` gives an `oversize` event immediately.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Union, runtime_checkable

__all__ = ["Frame", "FrameError", "Event", "Deframer", "BaseDeframer", "ERROR_KINDS"]

ERROR_KINDS = ("crc", "resync", "timeout", "oversize", "syntax")


@dataclass(frozen=True, slots=True)
class Frame:
    """One intact frame: its payload (message bytes), its size on the wire, and framer-specific metadata
    (`channel` for GFI, the decoded `HdlcFrame` as `hdlc` for HDLC)."""
    payload: bytes
    wire_length: int
    channel: int | None = None
    hdlc: Any = None


@dataclass(frozen=True, slots=True)
class FrameError:
    """Bytes that were dropped: `kind` is one of ERROR_KINDS, `discarded_bytes` how many input bytes went."""
    kind: str
    detail: str
    discarded_bytes: int


Event = Union[Frame, FrameError]


@runtime_checkable
class Deframer(Protocol):
    frames: int
    crc_errors: int
    resyncs: int
    timeouts: int
    discarded_bytes: int

    def feed(self, data: bytes, now: float) -> list[Event]: ...

    def poll(self, now: float) -> list[Event]: ...


# results of BaseDeframer._try
NEED = 0    # (NEED,): candidate at pos is incomplete
FRAME = 1   # (FRAME, Frame, next_pos)
ERROR = 2   # (ERROR, kind, detail)
SKIP = 3    # (SKIP, next_pos): bytes that are neither frame nor garbage (HDLC idle flags), dropped silently


class BaseDeframer:
    """Shared buffer, timeout and resync logic; subclasses supply `_find_start`, `_try` and maybe `_tail_keep`."""

    name = "base"

    def __init__(self, *, max_frame: int, timeout: float | None = 1.0):
        if max_frame < 1:
            raise ValueError("max_frame must be positive")
        self.max_frame = max_frame
        self.timeout = timeout
        self._buf = bytearray()
        self._last: float | None = None
        self.frames = self.crc_errors = self.resyncs = self.timeouts = self.discarded_bytes = 0
        self.oversize = self.syntax_errors = 0

    # -- public API -----------------------------------------------------------------------------------------
    def feed(self, data: bytes, now: float) -> list[Event]:
        out: list[Event] = []
        self._check_timeout(now, out)
        if data:
            self._buf += data
            self._last = now
            self._scan(out, flush=False)
        return out

    def poll(self, now: float) -> list[Event]:
        out: list[Event] = []
        self._check_timeout(now, out)
        return out

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame (never more than max_frame between calls)."""
        return len(self._buf)

    def counters(self) -> dict[str, int]:
        return {"frames": self.frames, "crc_errors": self.crc_errors, "resyncs": self.resyncs,
                "timeouts": self.timeouts, "discarded_bytes": self.discarded_bytes, "oversize": self.oversize,
                "syntax_errors": self.syntax_errors}

    # -- subclass hooks -------------------------------------------------------------------------------------
    def _find_start(self, buf: bytearray, pos: int, n: int) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _try(self, buf: bytearray, pos: int, n: int, flush: bool) -> tuple:  # pragma: no cover - abstract
        raise NotImplementedError

    def _tail_keep(self, buf: bytearray, pos: int, n: int) -> int:
        """With no frame start in buf[pos:n], how many trailing bytes may still begin one (a split marker)."""
        return 0

    # -- machinery ------------------------------------------------------------------------------------------
    def _check_timeout(self, now: float, out: list[Event]) -> None:
        if (self._buf and self.timeout is not None and self._last is not None
                and now - self._last > self.timeout):
            self._scan(out, flush=True)
            self._buf.clear()

    def _drop(self, out: list[Event], kind: str, count: int, detail: str) -> None:
        out.append(FrameError(kind, detail, count))
        self.discarded_bytes += count
        if kind == "resync":
            self.resyncs += 1
        elif kind == "crc":
            self.crc_errors += 1
        elif kind == "timeout":
            self.timeouts += 1
        elif kind == "oversize":
            self.oversize += 1
        else:
            self.syntax_errors += 1

    def _scan(self, out: list[Event], flush: bool) -> None:
        buf = self._buf
        n = len(buf)
        pos = 0
        while pos < n:
            start = self._find_start(buf, pos, n)
            if start < 0:
                keep = 0 if flush else self._tail_keep(buf, pos, n)
                if n - keep > pos:
                    self._drop(out, "timeout" if flush else "resync", n - keep - pos,
                               "timeout, no frame start" if flush else "no frame start")
                pos = n - keep
                break
            if start > pos:
                self._drop(out, "resync", start - pos, "garbage before frame start")
                pos = start
            r = self._try(buf, pos, n, flush)
            tag = r[0]
            if tag == FRAME:
                out.append(r[1])
                self.frames += 1
                pos = r[2]
                continue
            if tag == SKIP:
                pos = r[1]
                continue
            if tag == NEED:
                if not flush:
                    break
                kind, detail = "timeout", "partial frame abandoned after inter-frame timeout"
            else:
                kind, detail = r[1], r[2]
            nxt = self._find_start(buf, pos + 1, n)
            if nxt < 0:
                nxt = n - (0 if flush else self._tail_keep(buf, pos + 1, n))
            self._drop(out, kind, nxt - pos, detail)
            pos = nxt
        if pos:
            del buf[:pos]
