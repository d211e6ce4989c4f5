"""The DCC "GFI" text framing used on serial/text lines by HIL rigs (gbcs-brief.md §7, HIL notes):

    GBCS:DATA#<channel>:<decimal length>:<HEX>\r\n

`length` is the number of message bytes (so the hex part has 2*length characters). Encoding writes upper-case
hex; decoding accepts either case. The marker `GBCS:` is where resynchronisation looks; a line whose length,
hex or terminator is wrong is a `syntax` error (there is no checksum: the length and the CRLF are the check).
"""
from __future__ import annotations

import binascii

from protocols import fast as _fast_backend
from protocols.errors import DecodeError, EncodeError
from protocols.framing.stream import ERROR, FRAME, NEED, BaseDeframer, Frame

__all__ = ["MARKER", "encode_gfi", "decode_gfi", "GfiDeframer"]

MARKER = b"GBCS:"
_DATA = b"DATA#"
_DIGITS = frozenset(b"0123456789")
MAX_CHANNEL_DIGITS = 3
MAX_LENGTH_DIGITS = 7


def encode_gfi(payload: bytes, channel: int = 0) -> bytes:
    if channel < 0:
        raise EncodeError(f"negative channel {channel}", "channel")
    return b"GBCS:DATA#%d:%d:%s\r\n" % (channel, len(payload), binascii.hexlify(payload).upper())


def _digits(buf, p: int, n: int, maxd: int, what: str):
    """Read 1..maxd decimal digits and a ':' at p: (value, next) / None (need more) / str (syntax error)."""
    j = p
    while j < n and j - p <= maxd and buf[j] in _DIGITS:
        j += 1
    if j >= n and j - p <= maxd:
        return None
    if j == p or j - p > maxd or buf[j] != 0x3A:
        return f"bad {what} field"
    return int(bytes(buf[p:j])), j + 1


def _parse(buf, pos: int, n: int, max_frame: int):
    """Parse a line starting at pos (which holds MARKER): NEED / ERROR / FRAME results as the deframer uses."""
    p = pos + len(MARKER)
    avail = bytes(buf[p:min(n, p + len(_DATA))])
    if avail != _DATA[:len(avail)]:
        return (ERROR, "syntax", "expected DATA# after GBCS:")
    if len(avail) < len(_DATA):
        return (NEED,)
    r = _digits(buf, p + len(_DATA), n, MAX_CHANNEL_DIGITS, "channel")
    if r is None:
        return (NEED,)
    if isinstance(r, str):
        return (ERROR, "syntax", r)
    channel, p = r
    r = _digits(buf, p, n, MAX_LENGTH_DIGITS, "length")
    if r is None:
        return (NEED,)
    if isinstance(r, str):
        return (ERROR, "syntax", r)
    length, p = r
    end = p + 2 * length + 2
    if end - pos > max_frame:
        return (ERROR, "oversize", f"length {length} gives a {end - pos}-byte line, over max_frame {max_frame}")
    if n < end:
        return (NEED,)
    if buf[end - 2:end] != b"\r\n":
        return (ERROR, "syntax", "line does not end in CRLF after the announced length")
    try:
        payload = binascii.a2b_hex(bytes(buf[p:end - 2]))
    except binascii.Error:
        return (ERROR, "syntax", "non-hex character in data")
    return (FRAME, Frame(payload, end - pos, channel=channel), end)


def decode_gfi(line: bytes) -> tuple[int, bytes]:
    """Decode exactly one GFI line (with its CRLF): (channel, payload). DecodeError on anything else."""
    line = bytes(line)
    if not line.startswith(MARKER):
        raise DecodeError("line does not start with GBCS:", "gfi", 0)
    r = _parse(line, 0, len(line), len(line))
    if r[0] != FRAME or r[2] != len(line):
        raise DecodeError(r[2] if r[0] == ERROR else "incomplete or trailing data", "gfi", 0)
    return r[1].channel, r[1].payload


class GfiDeframer(BaseDeframer):
    name = "gfi"

    def __init__(self, *, max_frame: int = 2 * 0xFFFF + 32, timeout: float | None = 1.0):
        super().__init__(max_frame=max_frame, timeout=timeout)

    def _find_start(self, buf, pos, n):
        return buf.find(MARKER, pos, n)

    def _tail_keep(self, buf, pos, n):
        for k in range(min(len(MARKER) - 1, n - pos), 0, -1):
            if buf[n - k:n] == MARKER[:k]:
                return k
        return 0

    def _try(self, buf, pos, n, flush):
        if _C is not None:
            # the C twin handles complete valid lines and "need more"; anything else is _parse's to word
            r = _C.gfi_try(buf, pos, n, self.max_frame)
            if r is not None:
                return (NEED,) if r[0] == 0 else (FRAME, Frame(r[1], r[2], channel=r[4]), r[3])
        return _parse(buf, pos, n, self.max_frame)


_C = _fast_backend.C
