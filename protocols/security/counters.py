"""Anti-replay rules for originator counters (GBCS 4.3.1.5 / 6.2.4 and, for top-ups, 14.3). Sans-IO: these
objects are immutable values; the caller persists them (e.g. as JSON ints) and replaces them after each accept.

* **Commands** (`ReplayGuard`): a device keeps, per remote party, the last originator counter it accepted, and
  accepts a command only when its counter is **strictly greater**. Accepting moves the watermark up.
* **UTRN top-ups** (`UtrnCounterCache`): a UTRN carries only bits 32..41 of its originator counter, and
  consumers may type UTRNs in any order, so a meter keeps a *UTRN Counter Cache* of recently accepted counters
  (100 entries, the size a known GBCS device implementation uses for GBCS 14.1) instead of one watermark.
  What is implemented here:
    - a counter must have its low 32 bits zero (else INVALID);
    - a counter already in the cache is a REPLAY;
    - when the cache is full, a counter not greater than the lowest cached one is STALE (it may have been
      accepted and evicted already, so it cannot be told apart from a replay);
    - accepting adds the counter and, when full, evicts the lowest one;
    - the full counter is deduced from the 10 transmitted bits with GBCS Table 27: the candidate whose bits
      32..41 match and that lies within ±512 UTRN-counter steps of the highest cached counter.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from protocols.security.errors import SecurityError

__all__ = ["CounterCheck", "ReplayGuard", "UtrnCounterCache", "utrn_counter_from_bits", "UTRN_CACHE_SIZE"]

UTRN_CACHE_SIZE = 100
_U64 = 1 << 64
_LOW32 = 0xFFFFFFFF


class CounterCheck(str, Enum):
    """Outcome of a counter check: only ACCEPT lets the message through."""

    ACCEPT = "accept"
    REPLAY = "replay"      #: seen before, or not above the last accepted counter
    STALE = "stale"        #: below the UTRN window: may be an evicted replay
    INVALID = "invalid"    #: not a counter of the right form (range, low bits)

    def __bool__(self) -> bool:
        return self is CounterCheck.ACCEPT


@dataclass(frozen=True)
class ReplayGuard:
    """Last accepted originator counter of one remote party (None before the first command)."""

    last_accepted: int | None = None

    def check(self, counter: int) -> CounterCheck:
        """ACCEPT when `counter` is strictly greater than the last accepted one."""
        if not isinstance(counter, int) or not 0 <= counter < _U64:
            return CounterCheck.INVALID
        if self.last_accepted is not None and counter <= self.last_accepted:
            return CounterCheck.REPLAY
        return CounterCheck.ACCEPT

    def accept(self, counter: int) -> "ReplayGuard":
        """The guard after accepting `counter`; raises SecurityError if the check does not pass."""
        verdict = self.check(counter)
        if verdict is not CounterCheck.ACCEPT:
            raise SecurityError(f"originator counter {counter} rejected: {verdict.value}")
        return ReplayGuard(counter)


def utrn_counter_from_bits(bits: int, highest: int | None) -> int:
    """Full 64-bit UTRN originator counter from the 10 PTUT bits, near the highest cached counter (GBCS Table 27).

    Works on UTRN counters (the top 32 bits): p = low 10 bits of the highest one V, q = V - p, then pick
    s = r, r + 1024 or r - 1024 so that s lies within p ± 512; the result is (q + s) << 32."""
    if not 0 <= bits < 1024:
        raise SecurityError(f"PTUT counter bits are 10 bits, got {bits}")
    v = (highest or 0) >> 32
    p = v & 0x3FF
    q = v - p
    if bits < p - 512:
        s = bits + 1024
    elif bits > p + 512:
        s = bits - 1024
    else:
        s = bits
    utrn_counter = q + s
    if not 0 <= utrn_counter <= _LOW32:  # no candidate on that side of the wrap: stay in the current block
        utrn_counter = q + bits
    return utrn_counter << 32


@dataclass(frozen=True)
class UtrnCounterCache:
    """The recently accepted UTRN originator counters of one meter (full 64-bit values, low 32 bits zero)."""

    counters: tuple[int, ...] = ()
    size: int = UTRN_CACHE_SIZE

    def __post_init__(self):
        if self.size < 1:
            raise SecurityError("UTRN counter cache size must be at least 1")
        object.__setattr__(self, "counters", tuple(sorted(set(self.counters)))[-self.size:])

    @property
    def highest(self) -> int | None:
        return self.counters[-1] if self.counters else None

    @property
    def lowest(self) -> int | None:
        return self.counters[0] if self.counters else None

    def counter_from_bits(self, bits: int) -> int:
        """The full counter a UTRN with these PTUT counter bits most likely used (GBCS Table 27)."""
        return utrn_counter_from_bits(bits, self.highest)

    def check(self, counter: int) -> CounterCheck:
        """ACCEPT, REPLAY (already in the cache), STALE (not above a full cache's lowest) or INVALID."""
        if not isinstance(counter, int) or not 0 <= counter < _U64 or counter & _LOW32:
            return CounterCheck.INVALID
        if counter in self.counters:
            return CounterCheck.REPLAY
        if len(self.counters) >= self.size and counter <= self.counters[0]:
            return CounterCheck.STALE
        return CounterCheck.ACCEPT

    def accept(self, counter: int) -> "UtrnCounterCache":
        """The cache after accepting `counter` (lowest evicted when full); raises SecurityError if not acceptable."""
        verdict = self.check(counter)
        if verdict is not CounterCheck.ACCEPT:
            raise SecurityError(f"UTRN counter {counter:#018x} rejected: {verdict.value}")
        kept = self.counters[1:] if len(self.counters) >= self.size else self.counters
        return UtrnCounterCache(kept + (counter,), self.size)
