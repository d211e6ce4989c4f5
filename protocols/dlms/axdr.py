"""A-XDR `Data` (DLMS Green Book 9.5 / IEC 62056-6-2), the value type of every DLMS payload.

The tag table `DATA_TYPES` is the one declaration: tag, name, and either a fixed struct format or a
variable form. `AxdrData` is a construct that parses and builds with that table by hand, over a buffer and an
offset, because nested Data is the hot path of every ESME/CHF message (an interpreted construct Switch costs
~30x more). JSON form: `{"type": name, "value": ...}`; structures and arrays hold a list of Data; a
compact-array holds its `type_description` and a list of untagged values. Only canonical encodings decode
(minimal lengths, bit-string padding kept as bytes), so encode(decode(b)) == b.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass


from protocols import fast as _fast_backend
from protocols.errors import DecodeError, EncodeError
from protocols.prims import BufferConstruct, FieldError, ber_length_bytes, read_ber_length

__all__ = ["DATA_TYPES", "AxdrData", "parse_data", "build_data", "decode_data", "encode_data",
           "TYPE_BY_NAME", "data_value"]

MAX_DEPTH = 48


@dataclass(frozen=True, slots=True)
class DataType:
    tag: int
    name: str
    fmt: str | None = None      # struct format of a fixed-size numeric value
    kind: str = "int"           # int | float | fixed-bytes | octets | visible | utf8 | bits | bool | null | ...
    size: int = 0               # fixed byte size for fixed-bytes kinds


DATA_TYPES: tuple[DataType, ...] = (
    DataType(0, "null-data", kind="null"),
    DataType(1, "array", kind="array"),
    DataType(2, "structure", kind="structure"),
    DataType(3, "boolean", kind="bool"),
    DataType(4, "bit-string", kind="bits"),
    DataType(5, "double-long", ">i"),
    DataType(6, "double-long-unsigned", ">I"),
    DataType(9, "octet-string", kind="octets"),
    DataType(10, "visible-string", kind="visible"),
    DataType(12, "utf8-string", kind="utf8"),
    DataType(13, "bcd", ">B"),
    DataType(15, "integer", ">b"),
    DataType(16, "long", ">h"),
    DataType(17, "unsigned", ">B"),
    DataType(18, "long-unsigned", ">H"),
    DataType(19, "compact-array", kind="compact"),
    DataType(20, "long64", ">q"),
    DataType(21, "long64-unsigned", ">Q"),
    DataType(22, "enum", ">B"),
    DataType(23, "float32", ">f", kind="float", size=4),
    DataType(24, "float64", ">d", kind="float", size=8),
    DataType(25, "date-time", kind="fixed-bytes", size=12),
    DataType(26, "date", kind="fixed-bytes", size=5),
    DataType(27, "time", kind="fixed-bytes", size=4),
    DataType(28, "delta-integer", ">b"),
    DataType(29, "delta-long", ">h"),
    DataType(30, "delta-double-long", ">i"),
    DataType(31, "delta-unsigned", ">B"),
    DataType(32, "delta-long-unsigned", ">H"),
    DataType(33, "delta-double-long-unsigned", ">I"),
)

TYPE_BY_TAG: dict[int, DataType] = {t.tag: t for t in DATA_TYPES}
TYPE_BY_NAME: dict[str, DataType] = {t.name: t for t in DATA_TYPES}
_STRUCTS = {t.tag: struct.Struct(t.fmt) for t in DATA_TYPES if t.fmt}


def _err(msg: str, pos: int, path: str = "") -> FieldError:
    return FieldError(msg, path, pos)


def _with_index(e: FieldError, key) -> FieldError:
    e.path = f"{key}.{e.path}" if e.path else str(key)
    return e


# ---------------------------------------------------------------------------------------------- parsing

def _parse_value(buf, pos: int, t: DataType, depth: int):
    """Parse the value (no tag) of type `t` at `pos`: (json value, next pos)."""
    st = _STRUCTS.get(t.tag)
    if st is not None:
        end = pos + st.size
        if end > len(buf):
            raise _err(f"{t.name} needs {st.size} bytes: end of data", pos)
        v = st.unpack_from(buf, pos)[0]
        if t.kind == "float":
            raw = bytes(buf[pos:end])
            if not math.isfinite(v) or st.pack(v) != raw:
                v = raw.hex().upper()
        return v, end
    kind = t.kind
    if kind == "octets" or kind == "visible" or kind == "utf8":
        n, p = read_ber_length(buf, pos)
        end = p + n
        if end > len(buf):
            raise _err(f"{t.name} of {n} bytes runs past the end of data", pos)
        raw = bytes(buf[p:end])
        if kind == "octets":
            return raw.hex().upper(), end
        if kind == "visible":
            return raw.decode("latin-1"), end
        try:
            return raw.decode("utf-8"), end
        except UnicodeDecodeError as e:
            raise _err(f"invalid UTF-8 in utf8-string: {e.reason}", p + e.start) from None
    if kind == "structure" or kind == "array":
        n, p = read_ber_length(buf, pos)
        items = []
        for i in range(n):
            if p >= len(buf):
                raise _err(f"{t.name} of {n} elements ends after {i}: end of data", p, str(i))
            try:
                item, p = _parse_data(buf, p, depth + 1)
            except FieldError as e:
                raise _with_index(e, i) from None
            items.append(item)
        return items, p
    if kind == "bool":
        if pos >= len(buf):
            raise _err("boolean: end of data", pos)
        b = buf[pos]
        if b > 1:
            return b, pos + 1   # not canonical TRUE, but kept exactly as an int
        return bool(b), pos + 1
    if kind == "null":
        return None, pos
    if kind == "bits":
        nbits, p = read_ber_length(buf, pos)
        nbytes = (nbits + 7) // 8
        end = p + nbytes
        if end > len(buf):
            raise _err(f"bit-string of {nbits} bits runs past the end of data", pos)
        return {"length": nbits, "bits": bytes(buf[p:end]).hex().upper()}, end
    if kind == "fixed-bytes":
        end = pos + t.size
        if end > len(buf):
            raise _err(f"{t.name} needs {t.size} bytes: end of data", pos)
        return bytes(buf[pos:end]).hex().upper(), end
    if kind == "compact":
        return _parse_compact(buf, pos, depth)
    raise _err(f"unsupported type {t.name}", pos)  # pragma: no cover - table and kinds agree


def _parse_data(buf, pos: int, depth: int = 0):
    if depth > MAX_DEPTH:
        raise _err("Data nested too deeply", pos)
    try:
        tag = buf[pos]
    except IndexError:
        raise _err("Data tag missing: end of data", pos) from None
    t = TYPE_BY_TAG.get(tag)
    if t is None:
        raise _err(f"unknown A-XDR data tag 0x{tag:02X}", pos, "type")
    try:
        value, end = _parse_value(buf, pos + 1, t, depth)
    except FieldError as e:
        raise _with_index(e, "value") from None
    return {"type": t.name, "value": value}, end


def _parse_type_description(buf, pos: int, depth: int):
    if depth > MAX_DEPTH:
        raise _err("type description nested too deeply", pos)
    if pos >= len(buf):
        raise _err("type description: end of data", pos)
    tag = buf[pos]
    t = TYPE_BY_TAG.get(tag)
    if t is None or t.kind == "compact":
        raise _err(f"invalid type 0x{tag:02X} in compact-array type description", pos)
    pos += 1
    if t.kind == "array":
        if pos + 2 > len(buf):
            raise _err("array type description: end of data", pos)
        count = int.from_bytes(buf[pos:pos + 2], "big")
        inner, pos = _parse_type_description(buf, pos + 2, depth + 1)
        return {"array": {"count": count, "type": inner}}, pos
    if t.kind == "structure":
        n, pos = read_ber_length(buf, pos)
        items = []
        for _ in range(n):
            td, pos = _parse_type_description(buf, pos, depth + 1)
            items.append(td)
        return {"structure": items}, pos
    return t.name, pos


def _parse_untagged(buf, pos: int, td, depth: int):
    """A compact-array element: the value of type description `td`, without tags."""
    if depth > MAX_DEPTH:
        raise _err("compact-array nested too deeply", pos)
    if isinstance(td, str):
        return _parse_value(buf, pos, TYPE_BY_NAME[td], depth)
    if "structure" in td:
        out = []
        for i, sub in enumerate(td["structure"]):
            try:
                v, pos = _parse_untagged(buf, pos, sub, depth + 1)
            except FieldError as e:
                raise _with_index(e, i) from None
            out.append(v)
        return out, pos
    arr = td["array"]
    out = []
    for i in range(arr["count"]):
        start = pos
        try:
            v, pos = _parse_untagged(buf, pos, arr["type"], depth + 1)
        except FieldError as e:
            raise _with_index(e, i) from None
        if pos == start:
            # an element type of zero size (null-data, empty arrays): nested counts would multiply into
            # billions of elements read from no bytes at all (fuzzing found the hang)
            raise _err("compact-array element of zero size", pos)
        out.append(v)
    return out, pos


def _parse_compact(buf, pos: int, depth: int):
    try:
        td, pos = _parse_type_description(buf, pos, depth)
    except FieldError as e:
        raise _with_index(e, "type_description") from None
    n, p = read_ber_length(buf, pos)
    end = p + n
    if end > len(buf):
        raise _err(f"compact-array contents of {n} bytes run past the end of data", pos)
    values = []
    sub = buf[:end]  # elements may not read past the contents
    while p < end:
        start = p
        try:
            v, p = _parse_untagged(sub, p, td, depth + 1)
        except FieldError as e:
            raise _with_index(e, f"values.{len(values)}") from None
        if p == start:
            raise _err("compact-array element of zero size", p)
        values.append(v)
    return {"type_description": td, "values": values}, end


def parse_data(buf, pos: int = 0) -> tuple[dict, int]:
    """Parse one Data at `pos` of `buf`: (json, next position). Raises FieldError (offset into `buf`).
    The C twin answers first when present; on None ("not sure") the Python parser decides."""
    if _C is not None and type(buf) in _C_BUFFERS and type(pos) is int:
        got = _C.axdr_parse(buf, pos)
        if got is not None:
            return got
    try:
        return _parse_data(buf, pos)
    except RecursionError:
        raise _err("Data nested too deeply", pos) from None


_C = _fast_backend.C
_C_BUFFERS = (bytes, bytearray, memoryview)
if _C is not None:
    _C.set_axdr_names({t.tag: t.name for t in DATA_TYPES})


# --------------------------------------------------------------------------------------------- building

def _build_value(out: bytearray, t: DataType, v, depth: int) -> None:
    st = _STRUCTS.get(t.tag)
    if st is not None:
        if t.kind == "float" and isinstance(v, str):
            raw = bytes.fromhex(v)
            if len(raw) != st.size:
                raise EncodeError(f"{t.name} hex must be {st.size} bytes")
            out += raw
            return
        if isinstance(v, bool) or not isinstance(v, (int, float) if t.kind == "float" else int):
            raise EncodeError(f"{t.name} needs a number, got {v!r}")
        try:
            out += st.pack(v)
        except struct.error as e:
            raise EncodeError(f"{t.name}: {e}") from None
        return
    kind = t.kind
    if kind in ("octets", "fixed-bytes"):
        raw = _hex(v, t.name)
        if kind == "fixed-bytes":
            if len(raw) != t.size:
                raise EncodeError(f"{t.name} must be {t.size} bytes")
        else:
            out += ber_length_bytes(len(raw))
        out += raw
        return
    if kind == "visible" or kind == "utf8":
        if not isinstance(v, str):
            raise EncodeError(f"{t.name} needs a string")
        try:
            raw = v.encode("latin-1" if kind == "visible" else "utf-8")
        except UnicodeEncodeError:
            raise EncodeError(f"{t.name} has characters outside its character set") from None
        out += ber_length_bytes(len(raw)) + raw
        return
    if kind == "structure" or kind == "array":
        if not isinstance(v, list):
            raise EncodeError(f"{t.name} needs a list of Data")
        out += ber_length_bytes(len(v))
        for i, item in enumerate(v):
            try:
                _build_data(out, item, depth + 1)
            except EncodeError as e:
                raise EncodeError(e.message, f"{i}.{e.field}".rstrip(".")) from None
        return
    if kind == "bool":
        if isinstance(v, bool):
            out.append(1 if v else 0)
        elif isinstance(v, int) and 0 <= v <= 255:
            out.append(v)
        else:
            raise EncodeError("boolean needs true/false")
        return
    if kind == "null":
        if v is not None:
            raise EncodeError("null-data has no value")
        return
    if kind == "bits":
        if not isinstance(v, dict) or "length" not in v or "bits" not in v:
            raise EncodeError("bit-string needs {length, bits}")
        raw = _hex(v["bits"], t.name)
        if len(raw) != (v["length"] + 7) // 8:
            raise EncodeError("bit-string bits do not match its length")
        out += ber_length_bytes(v["length"]) + raw
        return
    if kind == "compact":
        _build_compact(out, v, depth)
        return
    raise EncodeError(f"unsupported type {t.name}")  # pragma: no cover


def _hex(v, name: str) -> bytes:
    if isinstance(v, (bytes, bytearray)):
        return bytes(v)
    if not isinstance(v, str):
        raise EncodeError(f"{name} needs a hex string")
    try:
        return bytes.fromhex(v)
    except ValueError:
        raise EncodeError(f"{name}: not a hex string") from None


def _build_data(out: bytearray, d, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise EncodeError("Data nested too deeply")
    if not isinstance(d, dict) or "type" not in d:
        raise EncodeError("Data must be an object with type and value")
    t = TYPE_BY_NAME.get(d["type"])
    if t is None:
        raise EncodeError(f"unknown Data type {d['type']!r}", "type")
    out.append(t.tag)
    try:
        _build_value(out, t, d.get("value"), depth)
    except EncodeError as e:
        raise EncodeError(e.message, f"value.{e.field}".rstrip(".")) from None


def _build_type_description(out: bytearray, td, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise EncodeError("type description nested too deeply")
    if isinstance(td, str):
        t = TYPE_BY_NAME.get(td)
        if t is None or t.kind in ("compact", "array", "structure"):
            raise EncodeError(f"invalid type {td!r} in type description")
        out.append(t.tag)
    elif isinstance(td, dict) and "structure" in td:
        out.append(2)
        out += ber_length_bytes(len(td["structure"]))
        for sub in td["structure"]:
            _build_type_description(out, sub, depth + 1)
    elif isinstance(td, dict) and "array" in td:
        arr = td["array"]
        out.append(1)
        out += int(arr["count"]).to_bytes(2, "big")
        _build_type_description(out, arr["type"], depth + 1)
    else:
        raise EncodeError("invalid type description")


def _build_untagged(out: bytearray, td, v, depth: int) -> None:
    if isinstance(td, str):
        _build_value(out, TYPE_BY_NAME[td], v, depth)
        return
    if "structure" in td:
        subs = td["structure"]
        if not isinstance(v, list) or len(v) != len(subs):
            raise EncodeError("compact-array structure value does not match its type description")
        for sub, item in zip(subs, v):
            _build_untagged(out, sub, item, depth + 1)
        return
    arr = td["array"]
    if not isinstance(v, list) or len(v) != arr["count"]:
        raise EncodeError("compact-array array value does not match its type description")
    for item in v:
        _build_untagged(out, arr["type"], item, depth + 1)


def _build_compact(out: bytearray, v, depth: int) -> None:
    if not isinstance(v, dict) or "type_description" not in v or "values" not in v:
        raise EncodeError("compact-array needs {type_description, values}")
    _build_type_description(out, v["type_description"], depth)
    contents = bytearray()
    for i, item in enumerate(v["values"]):
        try:
            _build_untagged(contents, v["type_description"], item, depth + 1)
        except EncodeError as e:
            raise EncodeError(e.message, f"values.{i}") from None
    out += ber_length_bytes(len(contents)) + contents


def build_data(d: dict) -> bytes:
    """Bytes of one Data JSON object. Raises EncodeError naming the field."""
    out = bytearray()
    try:
        _build_data(out, d)
    except RecursionError:
        raise EncodeError("Data nested too deeply") from None
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        if isinstance(e, EncodeError):
            raise
        raise EncodeError(f"invalid Data: {type(e).__name__}: {e}") from None
    return bytes(out)


# --------------------------------------------------------------------------------------------- construct

class AxdrData(BufferConstruct):
    """construct adapter around the table-driven A-XDR Data codec, so APDU declarations can embed Data."""

    def fast_parse(self, buf, pos, end):
        return parse_data(buf, pos)

    def fast_build(self, obj, out):
        out += build_data(obj)


AxdrData = AxdrData()


def decode_data(data: bytes, base: int = 0) -> dict:
    """One whole Data (e.g. a decrypted protected attribute); DecodeError on bad or trailing bytes."""
    try:
        value, end = parse_data(data, 0)
    except FieldError as e:
        raise DecodeError(e.raw_message, (e.path or "").replace(" -> ", "."), base + (e.offset or 0)) from None
    if end != len(data):
        raise DecodeError(f"{len(data) - end} unexpected trailing byte(s)", "", base + end)
    return value


def encode_data(d: dict) -> bytes:
    return build_data(d)


def data_value(d: dict):
    """The plain value of a Data JSON object, recursively (for device logic that does not care about tags)."""
    if d["type"] in ("structure", "array"):
        return [data_value(x) for x in d["value"]]
    return d["value"]
