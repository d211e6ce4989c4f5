"""A minimal binary framing for links that carry raw GBCS bytes (test rigs, TCP, serial without HDLC).

Wire layout (all big-endian):

    A5 | LL LL | payload (LLLL bytes) | CC CC
    magic  length                       CRC-16/X.25 over length + payload

The magic byte gives resynchronisation a place to look, the CRC rejects frames that start at an 0xA5 inside
garbage or a payload. The declaration is `LENCRC`; the deframer scans the same layout by hand (hot path).
"""
from __future__ import annotations

import construct as cs

from protocols.errors import EncodeError
from protocols.framing.crc import x25
from protocols.framing.stream import ERROR, FRAME, NEED, BaseDeframer, Frame
from protocols.prims import parse_exact

__all__ = ["MAGIC", "LENCRC", "encode_lencrc", "decode_lencrc", "LenCrcDeframer", "MAX_PAYLOAD", "OVERHEAD"]

MAGIC = 0xA5
MAX_PAYLOAD = 0xFFFF
OVERHEAD = 5

LENCRC = cs.Struct(
    "magic" / cs.Const(bytes((MAGIC,))),
    "body" / cs.RawCopy(cs.Struct(
        "length" / cs.Rebuild(cs.Int16ub, cs.len_(cs.this.payload)),
        "payload" / cs.Bytes(cs.this.length),
    )),
    "crc" / cs.Checksum(cs.Int16ub, lambda data: x25(data), cs.this.body.data),
)


def encode_lencrc(payload: bytes) -> bytes:
    """One frame around `payload`: built by hand on the hot path (the encoding of `LENCRC`, which the tests
    check byte for byte against the declaration)."""
    if len(payload) > MAX_PAYLOAD:
        raise EncodeError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}", "payload")
    body = len(payload).to_bytes(2, "big") + bytes(payload)
    return bytes((MAGIC,)) + body + x25(body).to_bytes(2, "big")


def decode_lencrc(data: bytes) -> bytes:
    """Decode exactly one frame; DecodeError on anything else."""
    return parse_exact(LENCRC, bytes(data), field="lencrc").body.value.payload


class LenCrcDeframer(BaseDeframer):
    name = "lencrc"

    def __init__(self, *, max_frame: int = MAX_PAYLOAD + OVERHEAD, timeout: float | None = 1.0):
        super().__init__(max_frame=max_frame, timeout=timeout)

    def _find_start(self, buf, pos, n):
        return buf.find(MAGIC, pos, n)

    def _try(self, buf, pos, n, flush):
        if n - pos < 3:
            return (NEED,)
        length = (buf[pos + 1] << 8) | buf[pos + 2]
        total = length + OVERHEAD
        if total > self.max_frame:
            return (ERROR, "oversize", f"length {length} gives a {total}-byte frame, over max_frame {self.max_frame}")
        if n - pos < total:
            return (NEED,)
        end = pos + total
        view = memoryview(buf)
        try:
            crc = x25(view[pos + 1:end - 2])
        finally:
            view.release()
        got = (buf[end - 2] << 8) | buf[end - 1]
        if crc != got:
            return (ERROR, "crc", f"CRC 0x{got:04X}, computed 0x{crc:04X}")
        return (FRAME, Frame(bytes(buf[pos + 3:end - 2]), total), end)
