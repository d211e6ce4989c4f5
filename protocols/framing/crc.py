"""CRC-16/X.25 (the HDLC FCS/HCS, also used by the length+CRC framing), from crcmod's C extension.

design.md measured the C extension at ~270 MB/s and its pure-Python fallback at ~22 MB/s: the fallback
still works, but it must never be silent, so importing this module warns when the extension is missing.
Check value: CRC-16/X.25 of b"123456789" is 0x906E.
"""
from __future__ import annotations

import warnings

import crcmod.predefined
from crcmod import crcmod as _crcmod_impl

__all__ = ["x25", "USING_C_EXTENSION"]

USING_C_EXTENSION: bool = bool(getattr(_crcmod_impl, "_usingExtension", False))
if not USING_C_EXTENSION:  # pragma: no cover - depends on the installation
    warnings.warn("crcmod C extension missing: CRC-16/X.25 runs in pure Python (~12x slower)",
                  RuntimeWarning, stacklevel=2)

#: CRC-16/X.25: poly 0x1021 reflected, init 0xFFFF, xorout 0xFFFF. Accepts any bytes-like object.
x25 = crcmod.predefined.mkPredefinedCrcFun("x-25")

from protocols import fast as _fast_backend  # noqa: E402

if _fast_backend.C is not None:
    #: the C codec's slice-by-8 CRC (same values and calling convention, tests/test_c_backend.py)
    x25 = _fast_backend.C.crc16_x25
