"""OBIS codes (IEC 62056-61): six value groups, written `A-B:C.D.E.F` in JSON."""
from __future__ import annotations

import re

import construct as cs

__all__ = ["Obis", "obis_to_str", "obis_from_str"]

_OBIS_RE = re.compile(r"^(\d{1,3})-(\d{1,3}):(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$")


def obis_to_str(raw: bytes) -> str:
    a, b, c, d, e, f = raw
    return f"{a}-{b}:{c}.{d}.{e}.{f}"


def obis_from_str(text: str) -> bytes:
    """`1-0:1.8.0.255` (or 12 hex digits) to 6 bytes; ValueError when it is neither."""
    m = _OBIS_RE.match(text.strip())
    if m:
        parts = [int(g) for g in m.groups()]
        if all(p <= 255 for p in parts):
            return bytes(parts)
    raw = bytes.fromhex(text)
    if len(raw) != 6:
        raise ValueError(f"not an OBIS code: {text!r}")
    return raw


class ObisAdapter(cs.Adapter):
    def _decode(self, obj, context, path):
        return obis_to_str(obj)

    def _encode(self, obj, context, path):
        try:
            return obis_from_str(obj)
        except (ValueError, AttributeError, TypeError):
            raise cs.MappingError(f"not an OBIS code: {obj!r}", path=path) from None


Obis = ObisAdapter(cs.Bytes(6))
