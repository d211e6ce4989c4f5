"""Sans-IO framers for carrying GBCS messages over byte streams: DCC GFI text lines, IEC 62056-46 HDLC and
a magic+length+CRC binary framing. Bytes in, `Frame`/`FrameError` events out, time injected by the caller.

    d = make_deframer("hdlc", max_frame=512, timeout=0.5)
    for ev in d.feed(chunk, now=time.monotonic()): ...
    for ev in d.poll(now=time.monotonic()): ...      # reports timeouts when nothing arrives
"""
from __future__ import annotations

from protocols.framing.crc import USING_C_EXTENSION, x25
from protocols.framing.gfi import GfiDeframer, decode_gfi, encode_gfi
from protocols.framing.hdlc import HdlcDeframer, HdlcFrame, decode_hdlc, encode_hdlc
from protocols.framing.lencrc import LenCrcDeframer, decode_lencrc, encode_lencrc
from protocols.framing.stream import ERROR_KINDS, BaseDeframer, Deframer, Event, Frame, FrameError

__all__ = ["Deframer", "BaseDeframer", "Event", "Frame", "FrameError", "ERROR_KINDS", "make_deframer",
           "DEFRAMERS", "GfiDeframer", "HdlcDeframer", "LenCrcDeframer", "HdlcFrame", "encode_gfi", "decode_gfi",
           "encode_hdlc", "decode_hdlc", "encode_lencrc", "decode_lencrc", "x25", "USING_C_EXTENSION"]

DEFRAMERS: dict[str, type[BaseDeframer]] = {
    "gfi": GfiDeframer,
    "hdlc": HdlcDeframer,
    "raw": LenCrcDeframer,
    "lencrc": LenCrcDeframer,
}


def make_deframer(name: str, **opts) -> BaseDeframer:
    """A deframer by name (`gfi`, `hdlc`, `raw`/`lencrc`); opts: max_frame (bytes on the wire), timeout (s)."""
    try:
        cls = DEFRAMERS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown framing {name!r}; known: {', '.join(sorted(DEFRAMERS))}") from None
    return cls(**opts)
