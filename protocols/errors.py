"""One error base for the whole project, and the typed codec errors.

Every decoder reports bad input as `DecodeError` naming the field path and the byte offset in the
outermost buffer, so a user can find the bad byte in a hex dump; nothing else may escape a decoder.
"""
from __future__ import annotations


class GbcsEmuError(Exception):
    """Base of every error this project raises on purpose."""


class DecodeError(GbcsEmuError, ValueError):
    """Bytes that are not a valid message: names the field path and the byte offset."""

    def __init__(self, message: str, field: str = "", offset: int | None = None):
        self.message = message
        self.field = field
        self.offset = offset
        where = []
        if field:
            where.append(f"field {field}")
        if offset is not None:
            where.append(f"offset {offset}")
        super().__init__(f"{message} ({', '.join(where)})" if where else message)

    def as_dict(self) -> dict:
        """The `error` object of `decode --jsonl` (docs/json-format.md)."""
        return {"type": type(self).__name__, "field": self.field, "offset": self.offset, "message": self.message}


class EncodeError(GbcsEmuError, ValueError):
    """A JSON/dict form that cannot be turned into bytes: names the field path."""

    def __init__(self, message: str, field: str = ""):
        self.message = message
        self.field = field
        super().__init__(f"{message} (field {field})" if field else message)

    def as_dict(self) -> dict:
        return {"type": type(self).__name__, "field": self.field, "offset": None, "message": self.message}


class InternalError(GbcsEmuError):
    """A bug of ours met on some input: reported like a decode error (never a traceback), and worth a report."""

    def as_dict(self) -> dict:
        return {"type": "InternalError", "field": "", "offset": None, "message": str(self)}


def guarded(func, *args, **kwargs):
    """Call `func`; anything but our own errors becomes InternalError. For user-facing edges (CLI, runners):
    the library itself lets bugs surface so tests catch them."""
    try:
        return func(*args, **kwargs)
    except GbcsEmuError:
        raise
    except Exception as e:  # noqa: BLE001
        raise InternalError(f"{type(e).__name__}: {e}") from e
