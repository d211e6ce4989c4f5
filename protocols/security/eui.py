"""EUI-64 normalisation: every public function of `protocols.security` accepts an EUI as 8 bytes or as 16 hex
digits (any case, with optional '-', ':' or ' ' separators), because RTDS file names use lower case while the
brief and DUIS use upper case."""
from __future__ import annotations

from protocols.security.errors import InvalidEuiError

__all__ = ["EuiLike", "as_eui", "eui_hex"]

EuiLike = bytes | bytearray | memoryview | str

_SEPARATORS = str.maketrans("", "", "-: ")
#: EUIs given as text, converted (a fleet converts the same few hundred thousand over and over); bounded.
_FROM_TEXT: dict[str, bytes] = {}
_FROM_TEXT_MAX = 1 << 16


def as_eui(value: EuiLike) -> bytes:
    """The 8-byte form of an EUI given as bytes or hex text; raises InvalidEuiError otherwise."""
    if type(value) is bytes and len(value) == 8:  # hot path: KDF and MAC calls pass bytes
        return value
    if isinstance(value, (bytearray, memoryview)):
        value = bytes(value)
    if isinstance(value, bytes):
        if len(value) == 8:
            return value
        raise InvalidEuiError(f"an EUI is 8 bytes, got {len(value)}")
    if isinstance(value, str):
        got = _FROM_TEXT.get(value)
        if got is not None:
            return got
        text = value.translate(_SEPARATORS)
        if text[:2] in ("0x", "0X"):
            text = text[2:]
        if len(text) == 16:
            try:
                eui = bytes.fromhex(text)
            except ValueError:
                pass
            else:
                if len(_FROM_TEXT) >= _FROM_TEXT_MAX:
                    _FROM_TEXT.clear()
                _FROM_TEXT[value] = eui
                return eui
        raise InvalidEuiError(f"an EUI is 16 hex digits, got {value!r}")
    raise InvalidEuiError(f"an EUI is bytes or a hex string, got {type(value).__name__}")


def eui_hex(value: EuiLike) -> str:
    """Upper-case hex of an EUI, the form used in logs, JSON and the brief."""
    return as_eui(value).hex().upper()
