"""HDLC frames as IEC 62056-46 (DLMS/COSEM over serial) uses them: the framing a meter's optical or
serial port speaks, so a HIL rig can talk to the emulator like to a real ESME.

Wire layout (no byte stuffing: the length field, not a scan for 0x7E, says where the frame ends):

    7E | format (2) | dest addr (1/2/4) | src addr (1/2/4) | control | [HCS (2) | information] | FCS (2) | 7E

- format, big-endian: type 0xA (4 bits) | segmentation bit S | 11-bit frame length (everything between the
  flags, i.e. format .. FCS);
- addresses: 7 bits per byte, most significant first, the low bit of each byte is the extension bit and is 1
  only in the last byte; 1, 2 or 4 bytes. An n-byte address is a 7n-bit integer here (for a 2-byte server
  address that is upper << 7 | lower);
- HCS: CRC-16/X.25 of format .. control, little-endian, present only when there is an information field;
- FCS: CRC-16/X.25 of format .. information (all between the flags but the FCS), little-endian.
Two frames may share one flag (closing flag = next opening flag); extra flags between frames are idle fill.
"""
from __future__ import annotations

from dataclasses import dataclass

import construct as cs

from protocols import fast as _fast_backend
from protocols.errors import DecodeError, EncodeError
from protocols.framing.crc import x25
from protocols.framing.stream import ERROR, FRAME, NEED, SKIP, BaseDeframer, Frame
from protocols.prims import parse_exact

__all__ = ["FLAG", "HdlcFrame", "HDLC_FORMAT", "HDLC_ADDRESS", "HDLC_HEADER", "encode_hdlc", "decode_hdlc",
           "HdlcDeframer", "MAX_LENGTH"]

FLAG = 0x7E
FRAME_TYPE = 0xA
MAX_LENGTH = 0x7FF          # 11-bit length field
MIN_LENGTH = 7              # format 2 + dest 1 + src 1 + control 1 + FCS 2
ADDRESS_SIZES = (1, 2, 4)


@dataclass(frozen=True, slots=True)
class HdlcFrame:
    dest: int
    src: int
    control: int
    info: bytes = b""
    segmented: bool = False
    dest_len: int = 1
    src_len: int = 1


class _AddressAdapter(cs.Adapter):
    """Bytes with an extension bit <-> Container(value, length); builds from such a container or a plain int
    (minimal length)."""

    def _decode(self, obj, context, path):
        if len(obj) not in ADDRESS_SIZES:
            raise cs.ValidationError(f"address of {len(obj)} bytes (must be 1, 2 or 4)", path=path)
        value = 0
        for b in obj:
            value = (value << 7) | (b >> 1)
        return cs.Container(value=value, length=len(obj))

    def _encode(self, obj, context, path):
        if isinstance(obj, int):
            value, length = obj, None
        else:
            value, length = obj["value"], obj.get("length")
        if value < 0:
            raise cs.ValidationError(f"negative address {value}", path=path)
        if length is None:
            length = next((k for k in ADDRESS_SIZES if value < 1 << (7 * k)), 0)
        if length not in ADDRESS_SIZES or value >= 1 << (7 * length):
            raise cs.ValidationError(f"address {value} does not fit in 1, 2 or 4 bytes as asked ({length})",
                                     path=path)
        out = [((value >> (7 * (length - 1 - i))) & 0x7F) << 1 for i in range(length)]
        out[-1] |= 1
        return out


HDLC_FORMAT = cs.BitStruct(
    "type" / cs.Const(FRAME_TYPE, cs.Nibble),
    "segmented" / cs.Flag,
    "length" / cs.BitsInteger(11),
)
HDLC_ADDRESS = _AddressAdapter(cs.RepeatUntil(lambda b, lst, ctx: b & 1 or len(lst) > 4, cs.Int8ub))
HDLC_HEADER = cs.Struct(
    "format" / HDLC_FORMAT,
    "dest" / HDLC_ADDRESS,
    "src" / HDLC_ADDRESS,
    "control" / cs.Int8ub,
)


def encode_hdlc(info: bytes, *, dest: int, src: int, control: int, segmented: bool = False,
                dest_len: int | None = None, src_len: int | None = None) -> bytes:
    """One complete frame, flags included. Address lengths default to the smallest of 1/2/4 bytes that fits."""
    if not 0 <= control <= 0xFF:
        raise EncodeError(f"control {control} is not a byte", "control")
    try:
        hdr = bytearray(HDLC_HEADER.build({
            "format": {"segmented": segmented, "length": 0},
            "dest": {"value": dest, "length": dest_len},
            "src": {"value": src, "length": src_len},
            "control": control,
        }))
    except cs.ConstructError as e:
        raise EncodeError(str(e), "hdlc") from None
    length = len(hdr) + (2 + len(info) if info else 0) + 2
    if length > MAX_LENGTH:
        raise EncodeError(f"frame length {length} exceeds {MAX_LENGTH}", "info")
    fmt = (FRAME_TYPE << 12) | (0x800 if segmented else 0) | length
    hdr[0], hdr[1] = fmt >> 8, fmt & 0xFF
    body = hdr
    if info:
        body += x25(hdr).to_bytes(2, "little")
        body += info
    body += x25(body).to_bytes(2, "little")
    return bytes((FLAG,)) + bytes(body) + bytes((FLAG,))


def _decode_body(body: bytes, base: int = 0) -> HdlcFrame:
    """Decode format .. FCS (no flags); FCS already checked or checked here. DecodeError on failure."""
    hdr = parse_exact(HDLC_HEADER, body, field="hdlc", base=base, allow_trailing=True)
    hlen = 3 + hdr.dest.length + hdr.src.length
    rest = len(body) - hlen - 2
    if rest < 0:
        raise DecodeError("frame shorter than its header and FCS", "hdlc", base + len(body))
    if rest == 0:
        info = b""
    else:
        if rest <= 2:
            raise DecodeError("HCS without an information field", "hdlc.hcs", base + hlen)
        hcs = body[hlen] | (body[hlen + 1] << 8)
        if x25(body[:hlen]) != hcs:
            raise DecodeError(f"HCS 0x{hcs:04X} does not match", "hdlc.hcs", base + hlen)
        info = bytes(body[hlen + 2:len(body) - 2])
    return HdlcFrame(hdr.dest.value, hdr.src.value, hdr.control, info, bool(hdr.format.segmented),
                     hdr.dest.length, hdr.src.length)


def decode_hdlc(data: bytes) -> HdlcFrame:
    """Decode exactly one frame with both flags; DecodeError on anything else."""
    data = bytes(data)
    if len(data) < MIN_LENGTH + 2 or data[0] != FLAG or data[-1] != FLAG:
        raise DecodeError("not a flag-delimited HDLC frame", "hdlc", 0)
    fmt = (data[1] << 8) | data[2]
    if fmt >> 12 != FRAME_TYPE:
        raise DecodeError(f"frame type 0x{fmt >> 12:X}, expected 0xA", "hdlc.format.type", 1)
    if (fmt & 0x7FF) != len(data) - 2:
        raise DecodeError(f"length field {fmt & 0x7FF} but {len(data) - 2} bytes between flags",
                          "hdlc.format.length", 1)
    fcs = data[-3] | (data[-2] << 8)
    if x25(data[1:-3]) != fcs:
        raise DecodeError(f"FCS 0x{fcs:04X} does not match", "hdlc.fcs", len(data) - 3)
    return _decode_body(data[1:-1], base=1)


class HdlcDeframer(BaseDeframer):
    name = "hdlc"

    def __init__(self, *, max_frame: int = MAX_LENGTH + 2, timeout: float | None = 1.0):
        super().__init__(max_frame=max_frame, timeout=timeout)

    def _find_start(self, buf, pos, n):
        return buf.find(FLAG, pos, n)

    def _try(self, buf, pos, n, flush):
        if _C is not None:
            # the C twin handles complete valid frames and "need more"; anything else is decided below
            r = _C.hdlc_try(buf, pos, n, self.max_frame)
            if r is not None:
                if r[0] == 0:
                    return (NEED,)
                _, info, wire, end, dest, src, control, seg, dl, sl = r
                return (FRAME, Frame(info, wire, hdlc=HdlcFrame(dest, src, control, info, seg, dl, sl)), end)
        # idle flags: keep only the last one as the opening flag
        while pos + 1 < n and buf[pos + 1] == FLAG:
            pos += 1
        if n - pos < 3:
            if n - pos == 1:
                return (SKIP, n) if flush else (NEED,)
            return (NEED,)
        fmt = (buf[pos + 1] << 8) | buf[pos + 2]
        if fmt >> 12 != FRAME_TYPE:
            return (SKIP, pos + 1)     # a closing flag followed by something else: not a start
        length = fmt & 0x7FF
        if length < MIN_LENGTH:
            return (ERROR, "syntax", f"frame length {length} below the minimum {MIN_LENGTH}")
        if length + 2 > self.max_frame:
            return (ERROR, "oversize", f"frame length {length} over max_frame {self.max_frame}")
        end = pos + length + 1      # index of the closing flag
        if end >= n:
            return (NEED,)
        if buf[end] != FLAG:
            return (ERROR, "syntax", f"no closing flag after {length} bytes")
        fcs = buf[end - 2] | (buf[end - 1] << 8)
        view = memoryview(buf)
        try:
            ok = x25(view[pos + 1:end - 2]) == fcs
        finally:
            view.release()
        if not ok:
            return (ERROR, "crc", f"FCS 0x{fcs:04X} does not match")
        try:
            frame = _decode_body(bytes(buf[pos + 1:end]))
        except DecodeError as e:
            return (ERROR, "crc" if e.field == "hdlc.hcs" and "match" in e.message else "syntax", str(e))
        # the closing flag may open the next frame: leave it in the buffer
        return (FRAME, Frame(frame.info, length + 2, hdlc=frame), end)


_C = _fast_backend.C
