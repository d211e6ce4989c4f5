"""Device time: an injectable clock and the GBCS / DLMS time encodings.

Devices never read the wall clock; the edge hands them `now` (architecture.md). `SimClock` lets a fleet run
faster than real time from a monotonic source, so host clock steps never make device time jump or go back;
`FixedClock` is the test clock. All times are UTC seconds since the Unix epoch (float).

GBCS counts logs and profiles in seconds since 2000-01-01 UTC (`GBCS_EPOCH`, same value as
`protocols.zigbee.gbz.EPOCH_2000`) and carries 12-byte DLMS date-times (layout `protocols.gbcs.envelope
.DlmsDateTime`, reused here). We always write UTC with hundredths 0 and deviation 0x8000 (unspecified) unless
told otherwise; on reading, a specified deviation follows Blue Book ed. 12+: deviation = local - UTC, minutes.
"""
from __future__ import annotations

import calendar
import math
import time
from typing import Callable, Protocol, runtime_checkable

from protocols.gbcs.envelope import DlmsDateTime

#: 2000-01-01T00:00:00Z in Unix seconds: the zero of GBCS log and profile timestamps.
GBCS_EPOCH = 946684800
#: DLMS deviation value meaning "not specified".
DEVIATION_UNSPECIFIED = -32768
NOT_SPECIFIED = 0xFF
DLMS_DATETIME_LENGTH = 12

#: GBCS "now" (execute immediately) and "never" date-time patterns.
DLMS_NOW = bytes(9) + b"\x80\x00\xff"
DLMS_NEVER = b"\xff" * 9 + b"\x80\x00\xff"


@runtime_checkable
class Clock(Protocol):
    """Anything that tells device time (UTC seconds since the Unix epoch)."""

    def now(self) -> float: ...


class SimClock:
    """Simulated UTC time running at `speed` x a monotonic source: fast-forwardable, never backwards."""

    def __init__(self, start: float, speed: float = 1.0, source: Callable[[], float] = time.monotonic):
        if speed < 0 or not math.isfinite(speed):
            raise ValueError(f"speed must be finite and >= 0, got {speed!r}")
        self._source = source
        # now() = _base + (source() - _ref) * _speed; set_speed re-bases so time is continuous.
        self._base = float(start)
        self._ref = source()
        self._speed = float(speed)

    @property
    def speed(self) -> float:
        return self._speed

    def now(self) -> float:
        return self._base + (self._source() - self._ref) * self._speed

    def advance(self, seconds: float) -> None:
        """Jump forward (fast-forward a test or a fleet to the next interesting moment)."""
        if seconds < 0:
            raise ValueError("SimClock never goes backwards")
        self._base += seconds

    def set_speed(self, speed: float) -> None:
        """Change the rate from this moment on; the current time does not jump."""
        if speed < 0 or not math.isfinite(speed):
            raise ValueError(f"speed must be finite and >= 0, got {speed!r}")
        ref = self._source()
        self._base += (ref - self._ref) * self._speed
        self._ref = ref
        self._speed = float(speed)


class FixedClock:
    """Test clock: stands still until told; monotonic like real device time."""

    def __init__(self, t: float = float(GBCS_EPOCH)):
        self._t = float(t)

    def now(self) -> float:
        return self._t

    def set(self, t: float) -> None:
        if t < self._t:
            raise ValueError(f"FixedClock never goes backwards ({t} < {self._t})")
        self._t = float(t)

    def advance(self, dt: float) -> None:
        if dt < 0:
            raise ValueError("FixedClock never goes backwards")
        self._t += dt


def to_gbcs_seconds(t: float) -> int:
    """Unix seconds -> whole seconds since 2000-01-01 UTC (floored, as a log timestamp)."""
    return math.floor(t) - GBCS_EPOCH


def from_gbcs_seconds(s: int) -> float:
    return float(s + GBCS_EPOCH)


def dlms_datetime_json(t: float, *, deviation: int = DEVIATION_UNSPECIFIED, clock_status: int = 0x00) -> dict:
    """The dict form of `DlmsDateTime` (the codec's JSON) for UTC time `t`, whole seconds, hundredths 0."""
    tm = time.gmtime(math.floor(t))
    return {
        "year": tm.tm_year,
        "month": tm.tm_mon,
        "day_of_month": tm.tm_mday,
        "day_of_week": tm.tm_wday + 1,  # DLMS: 1 = Monday .. 7 = Sunday
        "hour": tm.tm_hour,
        "minute": tm.tm_min,
        "second": tm.tm_sec,
        "hundredths": 0,
        "deviation": deviation,
        "clock_status": clock_status,
    }


def dlms_datetime(t: float, *, deviation: int = DEVIATION_UNSPECIFIED, clock_status: int = 0x00) -> bytes:
    """12-byte DLMS date-time for UTC time `t` (the date/time fields are UTC whatever `deviation` says)."""
    return DlmsDateTime.build(dlms_datetime_json(t, deviation=deviation, clock_status=clock_status))


def parse_dlms_datetime(b: bytes) -> float | None | str:
    """UTC seconds of a 12-byte DLMS date-time, "now" / "never" for the GBCS patterns, None for an absent one
    (empty bytes, as the grouping header's `00` length).

    Wildcards (0xFF / 0xFD / 0xFE) in year, month, day, hour, minute or second name no single moment and
    raise ValueError. Day-of-week and hundredths 0xFF are tolerated (redundant / sub-second); a specified
    day-of-week must match the date.
    """
    b = bytes(b)
    if not b:
        return None
    if len(b) != DLMS_DATETIME_LENGTH:
        raise ValueError(f"DLMS date-time is {DLMS_DATETIME_LENGTH} bytes, got {len(b)}")
    if b == DLMS_NOW:
        return "now"
    if b == DLMS_NEVER:
        return "never"
    d = DlmsDateTime.parse(b)
    year, month, day = d.year, d.month, d.day_of_month
    hour, minute, second = d.hour, d.minute, d.second
    if year == 0xFFFF or not (1 <= month <= 12) or not (1 <= day <= 31):
        raise ValueError(f"DLMS date not fully specified or out of range: {b.hex().upper()}")
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError(f"DLMS time not fully specified or out of range: {b.hex().upper()}")
    if day > calendar.monthrange(year, month)[1]:
        raise ValueError(f"no day {day} in {year}-{month:02d}")
    hundredths = 0 if d.hundredths == NOT_SPECIFIED else d.hundredths
    if hundredths > 99:
        raise ValueError(f"hundredths out of range: {hundredths}")
    if d.day_of_week != NOT_SPECIFIED and d.day_of_week != calendar.weekday(year, month, day) + 1:
        raise ValueError(f"day of week {d.day_of_week} does not match {year}-{month:02d}-{day:02d}")
    t = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)) + hundredths / 100
    if d.deviation != DEVIATION_UNSPECIFIED:
        if not -720 <= d.deviation <= 720:
            raise ValueError(f"deviation out of range: {d.deviation}")
        t -= d.deviation * 60  # fields are local time; local = UTC + deviation
    return float(t)
