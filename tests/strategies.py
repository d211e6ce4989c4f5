"""Hypothesis helpers shared by the differential tests (C vs Python, fast path vs declaration)."""
from __future__ import annotations

from hypothesis import strategies as st

#: Byte values that mean something in a GBCS envelope (CRA flags, DD/DF tags, length forms, GBT bits).
ENVELOPE_BYTES = st.sampled_from([0x00, 0x08, 0x09, 0x0C, 0x40, 0x7F, 0x80, 0x81, 0x82, 0x83, 0xDD, 0xDF, 0xE0,
                                  0xFF])


def mutate(draw, raw: bytearray, byte=st.integers(0, 255)) -> bytes:
    """One to four mutations of `raw`: a bit flipped, the tail cut, a byte inserted, a byte replaced by `byte`."""
    for _ in range(draw(st.integers(1, 4))):
        if not raw:
            break
        op = draw(st.sampled_from(["flip", "cut", "insert", "byte"]))
        i = draw(st.integers(0, len(raw) - 1))
        if op == "flip":
            raw[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del raw[i:]
        elif op == "insert":
            raw.insert(i, draw(st.integers(0, 255)))
        else:
            raw[i] = draw(byte)
    return bytes(raw)
