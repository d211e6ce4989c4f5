"""The codec backend selector: the optional C fast path `protocols._fast` (csrc/_gbcs_fast.c) or pure Python.

The C functions mirror the hand-written Python fast paths and keep their contract: they return exactly the
declared result or None ("not sure"), and the callers then run the Python path, which also produces every
error. So the backend changes speed, never values (tests/test_c_backend.py checks that over the RTDS and
generated input).

- `GBCS_EMU_PURE_PYTHON=1` turns the C path off (CI runs the whole suite both ways).
- When the extension was built with this install (setup.py leaves `_fast_expected` beside it) or
  `GBCS_EMU_REQUIRE_C=1` is set, but it cannot be imported, a RuntimeWarning says so once: the pure path is
  several times slower and must never be silent. Without a compiler nothing was expected and nothing is said.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from types import ModuleType

__all__ = ["C", "CRYPTO", "backend", "expected", "disabled", "pure_python", "HOOKED_MODULES"]


def disabled() -> bool:
    """True when GBCS_EMU_PURE_PYTHON=1 asks for the pure-Python codec."""
    return os.environ.get("GBCS_EMU_PURE_PYTHON", "") == "1"


def expected() -> bool:
    """True when the C module should be importable: built with this install, or required by the environment."""
    return (os.environ.get("GBCS_EMU_REQUIRE_C", "") == "1"
            or (Path(__file__).resolve().parent / "_fast_expected").is_file())


def _load() -> ModuleType | None:
    if disabled():
        return None
    try:
        from protocols import _fast
    except ImportError as e:
        if expected():
            warnings.warn(f"protocols._fast (the C codec) was expected but cannot be imported ({e}); "
                          "running the pure-Python codec, several times slower. Reinstall with a compiler "
                          "(pip install -e .) or set GBCS_EMU_PURE_PYTHON=1 to choose it.",
                          RuntimeWarning, stacklevel=3)
        return None
    return _fast


#: The C module, or None on the pure-Python backend.
C: ModuleType | None = _load()
#: True when the C module has its libcrypto part (KDF + GMAC).
CRYPTO: bool = bool(C is not None and getattr(C, "HAVE_CRYPTO", 0))


def backend() -> str:
    """"c" when the C fast path is active, else "python"."""
    return "c" if C is not None else "python"


#: The modules holding a `_C` hook (module attribute), switched off together by `pure_python()`.
HOOKED_MODULES = ("protocols.gbcs.message", "protocols.dlms.apdu", "protocols.dlms.axdr", "protocols.zigbee.gbz",
                  "protocols.framing.gfi", "protocols.framing.hdlc", "protocols.security.mac")


@contextlib.contextmanager
def pure_python():
    """Run the pure-Python paths in this process for the duration (the reference of the differential tests
    and fuzzers; GBCS_EMU_PURE_PYTHON=1 is the same for a whole process). Not thread-safe."""
    import importlib

    import crcmod.predefined
    mods = [importlib.import_module(name) for name in HOOKED_MODULES]
    crc = importlib.import_module("protocols.framing.crc")
    hdlc = importlib.import_module("protocols.framing.hdlc")
    lencrc = importlib.import_module("protocols.framing.lencrc")
    mac = importlib.import_module("protocols.security.mac")
    saved = [(mod, mod._C) for mod in mods]
    saved_x25 = [(mod, mod.x25) for mod in (crc, hdlc, lencrc)]
    saved_crypto = mac._C_CRYPTO
    py_x25 = crcmod.predefined.mkPredefinedCrcFun("x-25")
    try:
        for mod, _ in saved:
            mod._C = None
        for mod, _ in saved_x25:
            mod.x25 = py_x25
        mac._C_CRYPTO = False
        yield
    finally:
        for mod, c in saved:
            mod._C = c
        for mod, f in saved_x25:
            mod.x25 = f
        mac._C_CRYPTO = saved_crypto
