"""ZigBee Cluster Library (ZCL) frames as GBCS carries them inside GBZ components: data types, the field
constructs every command declaration is built from, the frame header and the general ("global") commands.

Byte order: everything in a ZCL frame is LITTLE-endian (GBCS brief pitfall 1); only the GBZ extended header
around it (`gbz.py`) is big-endian.

Declarations and speed
----------------------
Command payloads are declared once, as construct `Struct`s of the field constructs below (`Uint32`,
`UtcTime`, `OctetString`, `Entries(...)`, ...). Those declarations build (encode) as ordinary constructs.
For decoding, `fast_parser(con)` turns a declaration into a plain-Python parser over (buffer, position, end)
that returns plain dicts directly (consecutive fixed fields become one `struct.unpack_from`), because
interpreted construct costs ~30 us per small struct and even compiled construct needs ~25 us for a greedy
list. The fast parser is derived from the declaration, so there is still one source of truth; a test checks
that it agrees with construct's own parser.

ZCL typed values (`ZCL_TYPES`, one table) are parsed and built by hand (`parse_typed` / `build_typed`).

JSON forms
----------
* typed value: `{"type": <name>, "value": ...}`; integers, bitmaps, enums and UTC times are ints; `bool` is
  true/false (any other byte is kept as an int); floats are numbers, or the raw little-endian bytes as hex when
  the value is not finite or would not re-encode to the same bits; data8..64 and keys are hex (wire order);
  `ieee_address` is the EUI-64 in the usual big-endian order; strings: octet strings are hex, character
  strings are text (latin-1, so every byte string round-trips); `null` is the ZCL "invalid" string (length
  0xFF / 0xFFFF); arrays/sets/bags are `{"element_type", "elements"}` (`elements` null when the count is the
  invalid 0xFFFF); structures are a list of typed values; date is `{"year", "month", "day", "day_of_week"}`
  (year null for 0xFF, other fields raw, 0xFF = "any"); time of day is `{"hours", "minutes", "seconds",
  "hundredths"}`.
* frame control: `{"frame_type": "global" | "cluster" | 2 | 3, "manufacturer_specific", "direction":
  "client_to_server" | "server_to_client", "disable_default_response", "reserved" (bits 5-7 as 0..7)}`.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any, Callable

import construct as cs
from construct import Int8ul, Int16ul, Int24ul, Int32sl, Int32ul, Struct

from protocols.errors import EncodeError
from protocols.prims import BufferConstruct as FastConstruct, FieldError, _stream_buffer

__all__ = [
    "ZclType", "ZCL_TYPES", "TYPE_BY_ID", "TYPE_BY_NAME", "parse_typed", "build_typed",
    "FastConstruct", "Entries", "Counted", "Trailing", "SwitchOn", "HexRest", "OctetString", "CharString",
    "LongOctetString", "Date", "TimeOfDay", "TypeId", "TypedValue",
    "Uint8", "Uint16", "Uint24", "Uint32", "Uint48", "Uint56", "Uint64", "Int8", "Int16", "Int24", "Int32",
    "Int48", "Bitmap8", "Bitmap16", "Bitmap24", "Bitmap32", "Enum8", "Enum16", "UtcTime", "Bool8",
    "fast_parser", "FastParser", "GLOBAL_COMMANDS", "GlobalCommand",
    "parse_frame_control", "build_frame_control", "FRAME_TYPES", "DIRECTIONS", "MAX_DEPTH",
]

MAX_DEPTH = 16  # nesting of ZCL arrays/structures; deeper input is rejected, never a RecursionError


def _err(msg: str, offset: int, path: str = "") -> FieldError:
    return FieldError(msg, path, offset)


def _prefix(e: FieldError, key) -> FieldError:
    e.path = f"{key}.{e.path}" if e.path else str(key)
    return e


def _eprefix(e: EncodeError, key) -> EncodeError:
    return EncodeError(e.message, f"{key}.{e.field}" if e.field else str(key))


# ============================================================================================ data types

@dataclass(frozen=True, slots=True)
class ZclType:
    """One ZCL data type (ZCL spec table 2-10): id, JSON name, value kind and fixed size (0 = variable)."""
    id: int
    name: str
    kind: str
    size: int = 0
    analog: bool = False  # analog types carry a "reportable change" in Configure Reporting


def _sized(base: int, stem: str, kind: str, analog: bool = False) -> tuple[ZclType, ...]:
    return tuple(ZclType(base + i, f"{stem}{8 * (i + 1)}", kind, i + 1, analog) for i in range(8))


#: Every standard ZCL data type, by type id. The one declaration of the type table.
ZCL_TYPES: tuple[ZclType, ...] = (
    ZclType(0x00, "no_data", "null"),
    *_sized(0x08, "data", "data"),
    ZclType(0x10, "bool", "bool", 1),
    *_sized(0x18, "bitmap", "uint"),
    *_sized(0x20, "uint", "uint", True),
    *_sized(0x28, "int", "int", True),
    ZclType(0x30, "enum8", "uint", 1),
    ZclType(0x31, "enum16", "uint", 2),
    ZclType(0x38, "float_semi", "float", 2, True),
    ZclType(0x39, "float_single", "float", 4, True),
    ZclType(0x3A, "float_double", "float", 8, True),
    ZclType(0x41, "octet_string", "octets"),
    ZclType(0x42, "char_string", "chars"),
    ZclType(0x43, "long_octet_string", "long_octets"),
    ZclType(0x44, "long_char_string", "long_chars"),
    ZclType(0x48, "array", "array"),
    ZclType(0x4C, "struct", "struct"),
    ZclType(0x50, "set", "array"),
    ZclType(0x51, "bag", "array"),
    ZclType(0xE0, "time_of_day", "tod", 4, True),
    ZclType(0xE1, "date", "date", 4, True),
    ZclType(0xE2, "utc_time", "uint", 4, True),
    ZclType(0xE8, "cluster_id", "uint", 2),
    ZclType(0xE9, "attribute_id", "uint", 2),
    ZclType(0xEA, "bacnet_oid", "uint", 4),
    ZclType(0xF0, "ieee_address", "eui64", 8),
    ZclType(0xF1, "security_key", "data", 16),
    ZclType(0xFF, "unknown", "null"),
)
TYPE_BY_ID: dict[int, ZclType] = {t.id: t for t in ZCL_TYPES}
TYPE_BY_NAME: dict[str, ZclType] = {t.name: t for t in ZCL_TYPES}

_FLOAT_FMT = {2: struct.Struct("<e"), 4: struct.Struct("<f"), 8: struct.Struct("<d")}
#: smallest encoding of one element of each kind (arrays check count x this against the bytes left, so a
#: claimed count never costs memory the data does not back)
_MIN_SIZE = {"octets": 1, "chars": 1, "long_octets": 2, "long_chars": 2, "array": 3, "struct": 2}


def _min_size(t: ZclType) -> int:
    return t.size or _MIN_SIZE.get(t.kind, 0)


def _type_at(buf, pos: int, end: int) -> ZclType:
    if pos >= end:
        raise _err("data type missing: end of data", pos, "type")
    t = TYPE_BY_ID.get(buf[pos])
    if t is None:
        raise _err(f"unknown ZCL data type 0x{buf[pos]:02X}", pos, "type")
    return t


def parse_typed(buf, pos: int, end: int, t: ZclType, depth: int = 0):
    """Parse the value (no type byte) of ZCL type `t` at `pos` (not past `end`): (JSON value, next pos)."""
    size = t.size
    kind = t.kind
    if size:
        nxt = pos + size
        if nxt > end:
            raise _err(f"{t.name} needs {size} byte(s): end of data", pos)
        if kind == "uint":
            return int.from_bytes(buf[pos:nxt], "little"), nxt
        if kind == "int":
            return int.from_bytes(buf[pos:nxt], "little", signed=True), nxt
        if kind == "bool":
            b = buf[pos]
            return (bool(b) if b < 2 else b), nxt
        if kind == "data":
            return bytes(buf[pos:nxt]).hex().upper(), nxt
        if kind == "float":
            fmt = _FLOAT_FMT[size]
            raw = bytes(buf[pos:nxt])
            v = fmt.unpack(raw)[0]
            if not math.isfinite(v) or fmt.pack(v) != raw:
                return raw.hex().upper(), nxt
            return v, nxt
        if kind == "eui64":
            return bytes(buf[pos:nxt])[::-1].hex().upper(), nxt
        if kind == "date":
            y = buf[pos]
            return {"year": None if y == 0xFF else 1900 + y, "month": buf[pos + 1], "day": buf[pos + 2],
                    "day_of_week": buf[pos + 3]}, nxt
        if kind == "tod":
            return {"hours": buf[pos], "minutes": buf[pos + 1], "seconds": buf[pos + 2],
                    "hundredths": buf[pos + 3]}, nxt
        raise _err(f"unsupported type {t.name}", pos)  # pragma: no cover - table and kinds agree
    if kind in ("octets", "chars", "long_octets", "long_chars"):
        wide = kind.startswith("long")
        lsize = 2 if wide else 1
        if pos + lsize > end:
            raise _err(f"{t.name} length missing: end of data", pos)
        n = int.from_bytes(buf[pos:pos + lsize], "little")
        pos += lsize
        if n == (0xFFFF if wide else 0xFF):
            return None, pos  # the ZCL "invalid" string: no octets follow
        nxt = pos + n
        if nxt > end:
            raise _err(f"{t.name} of {n} bytes runs past the end of data", pos - lsize)
        raw = bytes(buf[pos:nxt])
        return (raw.hex().upper() if kind.endswith("octets") else raw.decode("latin-1")), nxt
    if kind == "null":
        return None, pos
    if depth >= MAX_DEPTH:
        raise _err("ZCL array/structure nested too deeply", pos)
    if kind == "array":
        et = _type_at(buf, pos, end)
        if et.kind == "null":
            raise _err(f"{t.name} element type {et.name} has no data", pos, "element_type")
        if pos + 3 > end:
            raise _err(f"{t.name} count missing: end of data", pos + 1, "elements")
        n = buf[pos + 1] | (buf[pos + 2] << 8)
        p = pos + 3
        if n == 0xFFFF:
            return {"element_type": et.name, "elements": None}, p
        if n * _min_size(et) > end - p:
            raise _err(f"{t.name} of {n} elements runs past the end of data", pos + 1, "elements")
        items = []
        for i in range(n):
            try:
                v, p = parse_typed(buf, p, end, et, depth + 1)
            except FieldError as e:
                raise _prefix(e, f"elements.{i}") from None
            items.append(v)
        return {"element_type": et.name, "elements": items}, p
    if kind == "struct":
        if pos + 2 > end:
            raise _err("struct count missing: end of data", pos)
        n = buf[pos] | (buf[pos + 1] << 8)
        p = pos + 2
        if n == 0xFFFF:
            return None, p
        if n > end - p:
            raise _err(f"struct of {n} elements runs past the end of data", pos)
        items = []
        for i in range(n):
            try:
                et = _type_at(buf, p, end)
                v, p = parse_typed(buf, p + 1, end, et, depth + 1)
            except FieldError as e:
                raise _prefix(e, i) from None
            items.append({"type": et.name, "value": v})
        return items, p
    raise _err(f"unsupported type {t.name}", pos)  # pragma: no cover


def _hex(v, n: int | None = None) -> bytes:
    if not isinstance(v, str):
        raise EncodeError(f"expected a hex string, got {type(v).__name__}")
    try:
        raw = bytes.fromhex(v)
    except ValueError:
        raise EncodeError(f"not a hex string: {v[:40]!r}") from None
    if n is not None and len(raw) != n:
        raise EncodeError(f"expected {n} byte(s) of hex, got {len(raw)}")
    return raw


def _int(v, name: str = "value") -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise EncodeError(f"{name} must be an integer, got {v!r}")
    return v


def _ranged(v, lo: int, hi: int, name: str = "value") -> int:
    v = _int(v, name)
    if not lo <= v <= hi:
        raise EncodeError(f"{name} {v} out of range {lo}..{hi}")
    return v


def type_of(name) -> ZclType:
    """The ZclType named `name` (a JSON type name, or a type id int)."""
    t = TYPE_BY_NAME.get(name) if isinstance(name, str) else (
        TYPE_BY_ID.get(name) if isinstance(name, int) and not isinstance(name, bool) else None)
    if t is None:
        raise EncodeError(f"unknown ZCL data type {name!r}", "type")
    return t


def build_typed(out: bytearray, t: ZclType, v, depth: int = 0) -> None:
    """Append the value bytes (no type byte) of `v` as ZCL type `t`. EncodeError on a bad value."""
    size = t.size
    kind = t.kind
    if kind == "uint":
        out += _ranged(v, 0, (1 << (8 * size)) - 1).to_bytes(size, "little")
    elif kind == "int":
        half = 1 << (8 * size - 1)
        out += _ranged(v, -half, half - 1).to_bytes(size, "little", signed=True)
    elif kind == "bool":
        out.append(int(v) if isinstance(v, bool) else _ranged(v, 0, 255))
    elif kind == "data":
        out += _hex(v, size)
    elif kind == "float":
        if isinstance(v, str):
            out += _hex(v, size)
        elif isinstance(v, bool) or not isinstance(v, (int, float)):
            raise EncodeError(f"{t.name} must be a number or hex, got {v!r}")
        else:
            try:
                out += _FLOAT_FMT[size].pack(v)
            except (struct.error, OverflowError) as e:
                raise EncodeError(f"{t.name}: {e}") from None
    elif kind == "eui64":
        out += _hex(v, 8)[::-1]
    elif kind == "date":
        if not isinstance(v, dict):
            raise EncodeError("date must be {year, month, day, day_of_week}")
        y = v.get("year")
        out.append(0xFF if y is None else _ranged(y, 1900, 2154, "year") - 1900)
        for k in ("month", "day", "day_of_week"):
            out.append(_ranged(v.get(k), 0, 255, k))
    elif kind == "tod":
        if not isinstance(v, dict):
            raise EncodeError("time_of_day must be {hours, minutes, seconds, hundredths}")
        for k in ("hours", "minutes", "seconds", "hundredths"):
            out.append(_ranged(v.get(k), 0, 255, k))
    elif kind in ("octets", "chars", "long_octets", "long_chars"):
        wide = kind.startswith("long")
        lsize = 2 if wide else 1
        invalid = 0xFFFF if wide else 0xFF
        if v is None:
            out += invalid.to_bytes(lsize, "little")
            return
        if kind.endswith("octets"):
            raw = _hex(v)
        else:
            if not isinstance(v, str):
                raise EncodeError(f"{t.name} must be a string, got {type(v).__name__}")
            try:
                raw = v.encode("latin-1")
            except UnicodeEncodeError:
                raise EncodeError(f"{t.name} has characters outside latin-1") from None
        if len(raw) >= invalid:
            raise EncodeError(f"{t.name} of {len(raw)} bytes is too long (max {invalid - 1})")
        out += len(raw).to_bytes(lsize, "little") + raw
    elif kind == "null":
        if v is not None:
            raise EncodeError(f"{t.name} has no value (use null)")
    elif depth >= MAX_DEPTH:
        raise EncodeError("ZCL array/structure nested too deeply")
    elif kind == "array":
        if not isinstance(v, dict):
            raise EncodeError(f"{t.name} must be {{element_type, elements}}")
        try:
            et = type_of(v.get("element_type"))
        except EncodeError:
            raise EncodeError(f"unknown element type {v.get('element_type')!r}", "element_type") from None
        if et.kind == "null":
            raise EncodeError(f"{t.name} element type {et.name} has no data", "element_type")
        out.append(et.id)
        items = v.get("elements")
        if items is None:
            out += b"\xff\xff"
            return
        if not isinstance(items, list) or len(items) >= 0xFFFF:
            raise EncodeError("elements must be a list of at most 65534 values", "elements")
        out += len(items).to_bytes(2, "little")
        for i, item in enumerate(items):
            try:
                build_typed(out, et, item, depth + 1)
            except EncodeError as e:
                raise _eprefix(e, f"elements.{i}") from None
    elif kind == "struct":
        if v is None:
            out += b"\xff\xff"
            return
        if not isinstance(v, list) or len(v) >= 0xFFFF:
            raise EncodeError("struct must be a list of at most 65534 typed values")
        out += len(v).to_bytes(2, "little")
        for i, item in enumerate(v):
            try:
                build_typed_value(out, item, depth + 1)
            except EncodeError as e:
                raise _eprefix(e, i) from None
    else:  # pragma: no cover
        raise EncodeError(f"unsupported type {t.name}")


def parse_typed_value(buf, pos: int, end: int, depth: int = 0):
    """A type byte and its value: ({"type", "value"}, next pos)."""
    t = _type_at(buf, pos, end)
    try:
        v, p = parse_typed(buf, pos + 1, end, t, depth)
    except FieldError as e:
        raise _prefix(e, "value") from None
    return {"type": t.name, "value": v}, p


def build_typed_value(out: bytearray, tv, depth: int = 0) -> None:
    if not isinstance(tv, dict) or "type" not in tv:
        raise EncodeError("a typed value must be {type, value}")
    t = type_of(tv["type"])
    out.append(t.id)
    try:
        build_typed(out, t, tv.get("value"), depth)
    except EncodeError as e:
        raise _eprefix(e, "value") from None


# ================================================================================ fast-parsing constructs

class _ZclTyped(FastConstruct):
    """A ZCL value of one declared type as a command field: strings (length prefix, 0xFF[FF] = invalid ->
    null) and fixed-size values with a structured JSON form (date, time of day)."""

    def __init__(self, type_name: str):
        super().__init__()
        self.ztype = TYPE_BY_NAME[type_name]

    def fast_parse(self, buf, pos, end):
        return parse_typed(buf, pos, end, self.ztype)

    def fast_build(self, obj, out):
        build_typed(out, self.ztype, obj)


class _ZclFixed(_ZclTyped):
    """A fixed-size typed field: its size is known, so Structs holding it can be sized."""

    def _sizeof(self, context, path):
        return self.ztype.size


class TypeIdField(FastConstruct):
    """A data-type byte: the type name, or the raw int for an id that names no type (keeps exactness)."""

    def fast_parse(self, buf, pos, end):
        if pos >= end:
            raise _err("data type missing: end of data", pos)
        t = TYPE_BY_ID.get(buf[pos])
        return (t.name if t else buf[pos]), pos + 1

    def fast_build(self, obj, out):
        if isinstance(obj, int) and not isinstance(obj, bool):
            if obj in TYPE_BY_ID:
                raise EncodeError(f"type id 0x{obj:02X} must be given by its name {TYPE_BY_ID[obj].name!r}")
            out.append(_ranged(obj, 0, 255, "type"))
        else:
            out.append(type_of(obj).id)


class TypedValueField(FastConstruct):
    """A type byte followed by a value of that type: {"type", "value"}."""

    def fast_parse(self, buf, pos, end):
        return parse_typed_value(buf, pos, end)

    def fast_build(self, obj, out):
        build_typed_value(out, obj)


class HexRestField(FastConstruct):
    """All remaining bytes, as hex (unknown or opaque sub-payloads)."""

    def fast_parse(self, buf, pos, end):
        return bytes(buf[pos:end]).hex().upper(), end

    def fast_build(self, obj, out):
        out += _hex(obj)


OctetString = _ZclTyped("octet_string")
CharString = _ZclTyped("char_string")
LongOctetString = _ZclTyped("long_octet_string")
Date = _ZclFixed("date")
TimeOfDay = _ZclFixed("time_of_day")
TypeId = TypeIdField()
TypedValue = TypedValueField()
HexRest = HexRestField()

# Field aliases named after the ZCL types of the spec tables (all little-endian).
Uint8 = Int8ul
Uint16 = Int16ul
Uint24 = Int24ul
Uint32 = Int32ul
Uint48 = cs.BytesInteger(6, swapped=True)
Uint56 = cs.BytesInteger(7, swapped=True)
Uint64 = cs.Int64ul
Int8 = cs.Int8sl
Int16 = cs.Int16sl
Int24 = cs.Int24sl
Int32 = Int32sl
Int48 = cs.BytesInteger(6, signed=True, swapped=True)
Bitmap8 = Int8ul
Bitmap16 = Int16ul
Bitmap24 = Int24ul
Bitmap32 = Int32ul
Enum8 = Int8ul
Enum16 = Int16ul
Bool8 = Int8ul  # ZCL boolean inside command payloads, kept as its byte (0/1) so every value round-trips
UtcTime = Int32ul  # ZCL UTCTime: seconds since 2000-01-01T00:00:00Z, little-endian


class Entries(cs.Subconstruct):
    """Repeated `subcon` up to the end of the payload (ZSE "sub-payloads" and logs); each must consume bytes."""

    def _parse(self, stream, context, path):
        buf, pos = _stream_buffer(stream)
        end = len(buf)
        del buf
        items = cs.ListContainer()
        while pos < end:
            items.append(self.subcon._parsereport(stream, context, path))
            nxt = stream.tell()
            if nxt == pos:
                raise FieldError("entry of zero size", path, pos)
            pos = nxt
        return items

    def _build(self, obj, stream, context, path):
        if not isinstance(obj, (list, tuple)):
            raise cs.RangeError(f"expected a list, got {type(obj).__name__}", path=path)
        for i, item in enumerate(obj):
            context._index = i
            self.subcon._build(item, stream, context, f"{path} -> {i}")
        return obj

    def _sizeof(self, context, path):
        raise cs.SizeofError("greedy", path=path)


class Counted(cs.Subconstruct):
    """A count field (`countfield`, e.g. Uint8) then that many `subcon`: a list whose length is the count."""

    def __init__(self, countfield, subcon):
        super().__init__(subcon)
        self.countfield = countfield

    def _parse(self, stream, context, path):
        n = self.countfield._parsereport(stream, context, path)
        return cs.ListContainer(self.subcon._parsereport(stream, context, f"{path} -> {i}") for i in range(n))

    def _build(self, obj, stream, context, path):
        if not isinstance(obj, (list, tuple)):
            raise cs.RangeError(f"expected a list, got {type(obj).__name__}", path=path)
        self.countfield._build(len(obj), stream, context, path)
        for i, item in enumerate(obj):
            self.subcon._build(item, stream, context, f"{path} -> {i}")
        return obj

    def _sizeof(self, context, path):
        raise cs.SizeofError("counted", path=path)


class Trailing(cs.Subconstruct):
    """Optional trailing field(s): absent (null) when the payload ends before them (ZCL lets later SE
    versions append fields). Only valid at the end of a declaration; a null field cannot precede a present one.
    """

    def _parse(self, stream, context, path):
        buf, pos = _stream_buffer(stream)
        end = len(buf)
        del buf
        if pos >= end:
            return None
        return self.subcon._parsereport(stream, context, path)

    def _build(self, obj, stream, context, path):
        if obj is None:
            context._trailing_gap = True
            return None
        if context.get("_trailing_gap"):
            raise cs.ConstructError("an optional trailing field follows an absent one", path=path)
        return self.subcon._build(obj, stream, context, path)

    def _sizeof(self, context, path):
        raise cs.SizeofError("optional", path=path)


class SwitchOn(cs.Switch):
    """`Switch` keyed on an earlier field of the same Struct, by name (so the fast parser can follow it)."""

    def __init__(self, keyfield: str, cases: dict, default=None):
        super().__init__(getattr(cs.this, keyfield), cases, default)
        self.keyfield = keyfield


# ======================================================================================== fast parser

FastParser = Callable[[Any, int, int, dict | None], tuple[Any, int]]


def _fixed_group(fields: list[tuple[str, str]]):
    """Consecutive little-endian format fields parsed with one struct.unpack_from."""
    names = [n for n, _ in fields]
    st = struct.Struct("<" + "".join(f for _, f in fields))
    size = st.size
    offsets = []
    o = 0
    for _, f in fields:
        offsets.append(o)
        o += struct.calcsize("<" + f)

    def parse(buf, pos, end, d):
        if pos + size > end:
            for name, off, (_, f) in zip(names, offsets, fields):
                if pos + off + struct.calcsize("<" + f) > end:
                    raise _err(f"{name} needs {struct.calcsize('<' + f)} byte(s): end of data", pos + off, name)
        d.update(zip(names, st.unpack_from(buf, pos)))
        return pos + size
    return parse


def _leaf(con) -> FastParser | None:
    """A fast parser for a single (non-Struct) construct, or None when it is not one we know."""
    if isinstance(con, cs.Renamed):
        return _leaf(con.subcon)
    if isinstance(con, cs.FormatField):
        st = struct.Struct(con.fmtstr)
        size = st.size

        def parse(buf, pos, end, ctx):
            if pos + size > end:
                raise _err(f"needs {size} byte(s): end of data", pos)
            return st.unpack_from(buf, pos)[0], pos + size
        return parse
    if isinstance(con, cs.BytesInteger) and isinstance(con.length, int) and isinstance(con.swapped, bool):
        size, signed, order = con.length, con.signed, ("little" if con.swapped else "big")

        def parse(buf, pos, end, ctx):
            if pos + size > end:
                raise _err(f"needs {size} byte(s): end of data", pos)
            return int.from_bytes(buf[pos:pos + size], order, signed=signed), pos + size
        return parse
    if isinstance(con, FastConstruct):
        fp = con.fast_parse
        return lambda buf, pos, end, ctx: fp(buf, pos, end)
    if isinstance(con, cs.Struct):
        return fast_parser(con)
    if isinstance(con, Entries):
        sub = _leaf(con.subcon)
        if sub is None:
            return None

        def parse(buf, pos, end, ctx):
            items = []
            while pos < end:
                try:
                    v, nxt = sub(buf, pos, end, None)
                except FieldError as e:
                    raise _prefix(e, len(items)) from None
                if nxt == pos:  # pragma: no cover - every declared entry has a fixed part
                    raise _err("entry of zero size", pos, str(len(items)))
                items.append(v)
                pos = nxt
            return items, pos
        return parse
    if isinstance(con, Counted):
        cnt, sub = _leaf(con.countfield), _leaf(con.subcon)
        if cnt is None or sub is None:
            return None

        def parse(buf, pos, end, ctx):
            n, pos = cnt(buf, pos, end, None)
            if n > end - pos:  # each element takes at least one byte
                raise _err(f"count {n} runs past the end of data", pos - 1)
            items = []
            for i in range(n):
                try:
                    v, pos = sub(buf, pos, end, None)
                except FieldError as e:
                    raise _prefix(e, i) from None
                items.append(v)
            return items, pos
        return parse
    if isinstance(con, Trailing):
        sub = _leaf(con.subcon)
        if sub is None:
            return None
        return lambda buf, pos, end, ctx: (None, pos) if pos >= end else sub(buf, pos, end, ctx)
    if isinstance(con, SwitchOn):
        cases = {k: _leaf(v) for k, v in con.cases.items()}
        default = _leaf(con.default) if con.default is not None else None
        if any(v is None for v in cases.values()) or (con.default is not None and default is None):
            return None
        key = con.keyfield

        def parse(buf, pos, end, ctx):
            p = cases.get(ctx[key], default)
            if p is None:
                raise _err(f"no layout for {key} = {ctx[key]}", pos)
            return p(buf, pos, end, ctx)
        return parse
    return None


def fast_parser(con: cs.Struct) -> FastParser | None:
    """A plain-Python parser derived from the Struct declaration `con` (None if it uses constructs the fast
    path does not know: the caller then falls back to construct). Returns dicts; errors name the field."""
    if not isinstance(con, cs.Struct):
        return _leaf(con)
    steps: list = []
    group: list[tuple[str, str]] = []

    def flush():
        if group:
            steps.append(("group", _fixed_group(list(group)), None))
            group.clear()

    for sc in con.subcons:
        name = sc.name
        inner = sc.subcon if isinstance(sc, cs.Renamed) else sc
        if name and isinstance(inner, cs.FormatField) and inner.fmtstr[0] == "<":
            group.append((name, inner.fmtstr[1:]))
            continue
        flush()
        p = _leaf(inner)
        if p is None or not name:
            return None
        steps.append(("field", p, name))
    flush()

    def parse(buf, pos, end, ctx=None):
        d: dict = {}
        for kind, p, name in steps:
            if kind == "group":
                pos = p(buf, pos, end, d)
            else:
                try:
                    d[name], pos = p(buf, pos, end, d)
                except FieldError as e:
                    raise _prefix(e, name) from None
        return d, pos
    return parse


# ======================================================================================== frame header

FRAME_TYPES = {0: "global", 1: "cluster"}
FRAME_TYPE_BY_NAME = {v: k for k, v in FRAME_TYPES.items()}
DIRECTIONS = {0: "client_to_server", 1: "server_to_client"}
DIRECTION_BY_NAME = {v: k for k, v in DIRECTIONS.items()}


def parse_frame_control(fc: int) -> dict:
    """ZCL frame control byte -> JSON (bits 0-1 frame type, 2 manufacturer specific, 3 direction, 4 disable
    default response, 5-7 reserved, kept as an int so every byte round-trips)."""
    ft = fc & 3
    return {
        "frame_type": FRAME_TYPES.get(ft, ft),
        "manufacturer_specific": bool(fc & 4),
        "direction": DIRECTIONS[(fc >> 3) & 1],
        "disable_default_response": bool(fc & 0x10),
        "reserved": fc >> 5,
    }


def _flag(d: dict, key: str) -> int:
    v = d.get(key, False)
    if not isinstance(v, bool):
        raise EncodeError(f"{key} must be true or false", key)
    return int(v)


def build_frame_control(d) -> int:
    """JSON frame control (or a plain int) -> the byte."""
    if isinstance(d, int) and not isinstance(d, bool):
        return _ranged(d, 0, 255, "frame_control")
    if not isinstance(d, dict):
        raise EncodeError("frame_control must be an object")
    ft = d.get("frame_type")
    if isinstance(ft, str):
        if ft not in FRAME_TYPE_BY_NAME:
            raise EncodeError(f"unknown frame_type {ft!r}", "frame_type")
        ft = FRAME_TYPE_BY_NAME[ft]
    else:
        try:
            ft = _ranged(ft, 0, 3, "frame_type")
        except EncodeError as e:
            raise EncodeError(e.message, "frame_type") from None
    direction = d.get("direction", "client_to_server")
    if direction not in DIRECTION_BY_NAME:
        raise EncodeError(f"unknown direction {direction!r}", "direction")
    try:
        reserved = _ranged(d.get("reserved", 0), 0, 7, "reserved")
    except EncodeError as e:
        raise EncodeError(e.message, "reserved") from None
    return (ft | _flag(d, "manufacturer_specific") << 2 | DIRECTION_BY_NAME[direction] << 3
            | _flag(d, "disable_default_response") << 4 | reserved << 5)


# ============================================================================== general (global) commands

class _RecordList(FastConstruct):
    """Base of the hand-written record lists of the general commands (parse to the end of the payload)."""

    def fast_parse(self, buf, pos, end):
        items = []
        while pos < end:
            try:
                rec, pos = self.record(buf, pos, end, len(items) == 0)
            except FieldError as e:
                raise _prefix(e, len(items)) from None
            items.append(rec)
        return items, pos

    def fast_build(self, obj, out):
        if not isinstance(obj, list):
            raise EncodeError("records must be a list")
        for i, rec in enumerate(obj):
            if not isinstance(rec, dict):
                raise EncodeError("a record must be an object", str(i))
            try:
                self.build_record(rec, out, i, len(obj))
            except EncodeError as e:
                raise _eprefix(e, i) from None


def _need(buf_len_end: int, pos: int, n: int, what: str, path: str = "") -> None:
    if pos + n > buf_len_end:
        raise _err(f"{what} needs {n} byte(s): end of data", pos, path)


def _u16(buf, pos: int) -> int:
    return buf[pos] | (buf[pos + 1] << 8)


def _put_u16(out: bytearray, v, name: str) -> None:
    try:
        out += _ranged(v, 0, 0xFFFF, name).to_bytes(2, "little")
    except EncodeError as e:
        raise EncodeError(e.message, name) from None


def _put_u8(out: bytearray, v, name: str) -> None:
    try:
        out.append(_ranged(v, 0, 0xFF, name))
    except EncodeError as e:
        raise EncodeError(e.message, name) from None


class ReadAttributeStatusRecords(_RecordList):
    """Read Attributes Response: `attribute id (2) | status (1) | [type (1) | value]` (value only on success)."""

    def record(self, buf, pos, end, first):
        _need(end, pos, 3, "attribute record", "attribute_id")
        rec = {"attribute_id": _u16(buf, pos), "status": buf[pos + 2]}
        pos += 3
        if rec["status"] == 0:
            t = _type_at(buf, pos, end)
            try:
                value, pos = parse_typed(buf, pos + 1, end, t)
            except FieldError as e:
                raise _prefix(e, "value") from None
            rec["type"] = t.name
            rec["value"] = value
        return rec, pos

    def build_record(self, rec, out, i, n):
        _put_u16(out, rec.get("attribute_id"), "attribute_id")
        _put_u8(out, rec.get("status", 0), "status")
        if rec.get("status", 0) == 0:
            build_typed_value(out, rec)


class AttributeValueRecords(_RecordList):
    """Write Attributes / Report Attributes: `attribute id (2) | type (1) | value`."""

    def record(self, buf, pos, end, first):
        _need(end, pos, 2, "attribute record", "attribute_id")
        t = _type_at(buf, pos + 2, end)
        try:
            value, nxt = parse_typed(buf, pos + 3, end, t)
        except FieldError as e:
            raise _prefix(e, "value") from None
        return {"attribute_id": _u16(buf, pos), "type": t.name, "value": value}, nxt

    def build_record(self, rec, out, i, n):
        _put_u16(out, rec.get("attribute_id"), "attribute_id")
        build_typed_value(out, rec)


class StatusRecords(_RecordList):
    """Write Attributes Response (`status | attribute id`) or Configure Reporting Response (`status | direction
    | attribute id`); a lone `00` status means "all succeeded" and carries no attribute id."""

    def __init__(self, with_direction: bool):
        super().__init__()
        self.with_direction = with_direction

    def record(self, buf, pos, end, first):
        if pos + 1 == end and buf[pos] == 0 and first:
            return {"status": 0}, pos + 1
        n = 4 if self.with_direction else 3
        _need(end, pos, n, "status record")
        rec = {"status": buf[pos]}
        if self.with_direction:
            rec["direction"] = buf[pos + 1]
        rec["attribute_id"] = _u16(buf, pos + n - 2)
        return rec, pos + n

    def build_record(self, rec, out, i, n):
        if "attribute_id" not in rec:
            if n != 1 or rec.get("status", 0) != 0:
                raise EncodeError("only a lone success record may omit attribute_id", "attribute_id")
            out.append(0)
            return
        _put_u8(out, rec.get("status", 0), "status")
        if self.with_direction:
            _put_u8(out, rec.get("direction", 0), "direction")
        _put_u16(out, rec.get("attribute_id"), "attribute_id")


def _parse_reporting(rec: dict, buf, pos: int, end: int):
    """The direction-dependent tail of a reporting-configuration record."""
    if rec["direction"] == 0:
        t = _type_at(buf, pos, end)
        _need(end, pos + 1, 4, "reporting intervals", "minimum_reporting_interval")
        rec["type"] = t.name
        rec["minimum_reporting_interval"] = _u16(buf, pos + 1)
        rec["maximum_reporting_interval"] = _u16(buf, pos + 3)
        pos += 5
        if t.analog:
            try:
                rec["reportable_change"], pos = parse_typed(buf, pos, end, t)
            except FieldError as e:
                raise _prefix(e, "reportable_change") from None
    elif rec["direction"] == 1:
        _need(end, pos, 2, "timeout period", "timeout_period")
        rec["timeout_period"] = _u16(buf, pos)
        pos += 2
    else:
        raise _err(f"invalid reporting direction {rec['direction']}", pos - 3, "direction")
    return rec, pos


def _build_reporting(rec: dict, out: bytearray) -> None:
    d = rec.get("direction", 0)
    if d == 0:
        t = type_of(rec.get("type"))
        out.append(t.id)
        _put_u16(out, rec.get("minimum_reporting_interval"), "minimum_reporting_interval")
        _put_u16(out, rec.get("maximum_reporting_interval"), "maximum_reporting_interval")
        if t.analog:
            try:
                build_typed(out, t, rec.get("reportable_change"))
            except EncodeError as e:
                raise _eprefix(e, "reportable_change") from None
        elif rec.get("reportable_change") is not None:
            raise EncodeError(f"{t.name} is not analog: no reportable_change", "reportable_change")
    elif d == 1:
        _put_u16(out, rec.get("timeout_period"), "timeout_period")
    else:
        raise EncodeError("direction must be 0 or 1", "direction")


class ReportingConfigRecords(_RecordList):
    """Configure Reporting: `direction | attribute id | (type | min | max | [change]) or timeout`."""

    def record(self, buf, pos, end, first):
        _need(end, pos, 3, "reporting record", "attribute_id")
        rec = {"direction": buf[pos], "attribute_id": _u16(buf, pos + 1)}
        return _parse_reporting(rec, buf, pos + 3, end)

    def build_record(self, rec, out, i, n):
        _put_u8(out, rec.get("direction", 0), "direction")
        _put_u16(out, rec.get("attribute_id"), "attribute_id")
        _build_reporting(rec, out)


class ReportingConfigResponseRecords(_RecordList):
    """Read Reporting Configuration Response: `status | direction | attribute id | [as Configure Reporting]`."""

    def record(self, buf, pos, end, first):
        _need(end, pos, 4, "reporting record", "attribute_id")
        rec = {"status": buf[pos], "direction": buf[pos + 1], "attribute_id": _u16(buf, pos + 2)}
        if rec["status"] != 0:
            return rec, pos + 4
        return _parse_reporting(rec, buf, pos + 4, end)

    def build_record(self, rec, out, i, n):
        _put_u8(out, rec.get("status", 0), "status")
        _put_u8(out, rec.get("direction", 0), "direction")
        _put_u16(out, rec.get("attribute_id"), "attribute_id")
        if rec.get("status", 0) == 0:
            _build_reporting(rec, out)


@dataclass(frozen=True, slots=True)
class GlobalCommand:
    id: int
    name: str
    payload: cs.Construct | None  # None: layout not declared, the payload is kept as {"raw": hex}


def _g(cid: int, name: str, payload=None) -> GlobalCommand:
    return GlobalCommand(cid, name, payload)


_AttributeIds = Struct("attributes" / Entries(Struct("attribute_id" / Uint16)))
_DiscoverRequest = Struct("start_attribute_id" / Uint16, "maximum_attribute_ids" / Uint8)
_DiscoverCommandsRequest = Struct("start_command_id" / Uint8, "maximum_command_ids" / Uint8)
_DiscoverCommandsResponse = Struct("discovery_complete" / Uint8, "command_ids" / Entries(Uint8))

#: The ZCL general command frames (frame type 0), by command id; the payload layout does not depend on the
#: direction. Declared once; names and the decoder registry derive from this tuple.
GLOBAL_COMMAND_LIST: tuple[GlobalCommand, ...] = (
    _g(0x00, "Read Attributes", _AttributeIds),
    _g(0x01, "Read Attributes Response", Struct("records" / ReadAttributeStatusRecords())),
    _g(0x02, "Write Attributes", Struct("records" / AttributeValueRecords())),
    _g(0x03, "Write Attributes Undivided", Struct("records" / AttributeValueRecords())),
    _g(0x04, "Write Attributes Response", Struct("records" / StatusRecords(with_direction=False))),
    _g(0x05, "Write Attributes No Response", Struct("records" / AttributeValueRecords())),
    _g(0x06, "Configure Reporting", Struct("records" / ReportingConfigRecords())),
    _g(0x07, "Configure Reporting Response", Struct("records" / StatusRecords(with_direction=True))),
    _g(0x08, "Read Reporting Configuration", Struct("records" / Entries(Struct(
        "direction" / Uint8, "attribute_id" / Uint16)))),
    _g(0x09, "Read Reporting Configuration Response", Struct("records" / ReportingConfigResponseRecords())),
    _g(0x0A, "Report Attributes", Struct("records" / AttributeValueRecords())),
    _g(0x0B, "Default Response", Struct("command_id" / Uint8, "status" / Enum8)),
    _g(0x0C, "Discover Attributes", _DiscoverRequest),
    _g(0x0D, "Discover Attributes Response", Struct(
        "discovery_complete" / Uint8,
        "attributes" / Entries(Struct("attribute_id" / Uint16, "type" / TypeId)))),
    _g(0x0E, "Read Attributes Structured"),
    _g(0x0F, "Write Attributes Structured"),
    _g(0x10, "Write Attributes Structured Response"),
    _g(0x11, "Discover Commands Received", _DiscoverCommandsRequest),
    _g(0x12, "Discover Commands Received Response", _DiscoverCommandsResponse),
    _g(0x13, "Discover Commands Generated", _DiscoverCommandsRequest),
    _g(0x14, "Discover Commands Generated Response", _DiscoverCommandsResponse),
    _g(0x15, "Discover Attributes Extended", _DiscoverRequest),
    _g(0x16, "Discover Attributes Extended Response", Struct(
        "discovery_complete" / Uint8,
        "attributes" / Entries(Struct("attribute_id" / Uint16, "type" / TypeId, "access_control" / Bitmap8)))),
)
GLOBAL_COMMANDS: dict[int, GlobalCommand] = {c.id: c for c in GLOBAL_COMMAND_LIST}
