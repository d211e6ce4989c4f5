"""JSON for persisted state: orjson (about ten times faster than the standard library on a premises' state),
falling back to `json` for what orjson does not take.

Why: a fleet encodes a premises' whole state at every commit and decodes it at every load; with the standard
library that was a fifth of a read's cost. The output is JSON either way (orjson: UTF-8, compact separators),
so stores written before still load and either library reads what the other wrote. Non-finite floats never
reach a state (the codecs give them as hex, docs/json-format.md); orjson would write them as null.
"""
from __future__ import annotations

import json

try:
    import orjson
except ImportError:                                        # pragma: no cover - a declared dependency
    orjson = None

__all__ = ["dumps", "loads", "copy"]

_ENC = json.JSONEncoder(separators=(",", ":"))


def dumps(obj) -> bytes:
    """Compact JSON bytes. The standard library takes over for integers beyond 64 bits and non-string keys
    (which it writes as strings)."""
    if orjson is not None:
        try:
            return orjson.dumps(obj)
        except TypeError:
            pass
    return _ENC.encode(obj).encode()


def loads(data: bytes | str):
    """JSON bytes or text. The standard library takes over for what orjson refuses (`NaN` written by older
    versions)."""
    if orjson is not None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return json.loads(data)


def copy(obj):
    """A deep copy of a JSON tree as a JSON round trip makes it (tuples become lists, keys strings)."""
    return loads(dumps(obj))
