"""Construct building blocks shared by every GBCS wire format, and the one decode/encode wrapper.

Conventions every format follows (docs/json-format.md):
- byte strings parse to upper-case hex strings (`HexBytes`), so a parsed tree *is* the JSON form and builds back;
- lengths use the A-XDR/BER forms `00..7F`, `81 nn`, `82 nnnn` (`BerLength`), and only the minimal form is
  accepted, so decoding is injective and `encode(decode(b)) == b` holds for every input that decodes;
- a custom construct that parses by hand reports bad input as `FieldError` with the offset of the bad byte
  in the stream it was given; `parse_exact` turns every construct error into `DecodeError` with the field path
  and the offset in the outermost buffer.
"""
from __future__ import annotations

import io
import re
import struct
from typing import Any

import construct as cs
from construct import Adapter, Construct, ConstructError, Container, ListContainer

from protocols.errors import DecodeError, EncodeError

__all__ = [
    "BerLength", "BerPrefixed", "BufferConstruct", "End", "Expect", "FieldError", "Linked", "OptionalTail", "Reject", "StrictEnum", "compiled", "HexBytes", "Hex", "HexPrefixed", "Eui", "parse_exact", "build_value",
    "to_jsonable", "ber_length_bytes", "read_ber_length", "strip_info",
]

MAX_LENGTH_BYTES = 4  # 84 nn nn nn nn at most: GBCS never exceeds 82, the rest only exists to give a clear error


class FieldError(ConstructError):
    """A construct error that knows the stream offset of the offending byte."""

    def __init__(self, message: str, path: str | None = None, offset: int | None = None):
        self.offset = offset
        self.raw_message = message
        super().__init__(message, path)


def read_ber_length(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Decode an A-XDR length at `pos` in `buf`; returns (length, next position). Minimal forms only."""
    try:
        first = buf[pos]
    except IndexError:
        raise FieldError("length byte missing: end of data", offset=pos) from None
    if first < 0x80:
        return first, pos + 1
    n = first & 0x7F
    if n == 0 or n > MAX_LENGTH_BYTES:
        raise FieldError(f"invalid length form 0x{first:02X}", offset=pos)
    if pos + 1 + n > len(buf):
        raise FieldError(f"length form 0x{first:02X} needs {n} more bytes: end of data", offset=pos)
    value = int.from_bytes(buf[pos + 1:pos + 1 + n], "big")
    if value < 0x80 or value < (1 << (8 * (n - 1))):
        raise FieldError(f"non-minimal length form 0x{first:02X} for length {value}", offset=pos)
    return value, pos + 1 + n


def ber_length_bytes(value: int) -> bytes:
    """The minimal A-XDR length form of `value`."""
    if value < 0:
        raise EncodeError(f"negative length {value}")
    if value < 0x80:
        return bytes((value,))
    n = (value.bit_length() + 7) // 8
    if n > MAX_LENGTH_BYTES:
        raise EncodeError(f"length {value} too large")
    return bytes((0x80 | n,)) + value.to_bytes(n, "big")


def _stream_buffer(stream) -> tuple[bytes, int]:
    """The whole buffer behind a BytesIO stream and the current position (hand parsers work on offsets)."""
    if isinstance(stream, io.BytesIO):
        return stream.getbuffer(), stream.tell()
    pos = stream.tell()
    data = stream.read()
    stream.seek(pos)
    return b"\x00" * pos + data, pos


class BufferConstruct(Construct):
    """A construct whose parser is hand-written over (buffer, position, end).

    `fast_parse(buf, pos, end) -> (value, next pos)` raises FieldError with an absolute offset and a dotted
    path relative to the construct; `fast_build(obj, out)` appends bytes and raises EncodeError. `_parse` and
    `_build` adapt both to construct streams, so these pieces embed in ordinary declarations.
    """

    def fast_parse(self, buf, pos: int, end: int):  # pragma: no cover - abstract
        raise NotImplementedError

    def fast_build(self, obj, out: bytearray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _parse(self, stream, context, path):
        buf, pos = _stream_buffer(stream)
        try:
            value, end = self.fast_parse(buf, pos, len(buf))
        except FieldError as e:
            raise FieldError(e.raw_message, f"{path} -> {e.path}" if e.path else path, e.offset) from None
        finally:
            del buf
        stream.seek(end)
        return value

    def _build(self, obj, stream, context, path):
        out = bytearray()
        try:
            self.fast_build(obj, out)
        except EncodeError as e:
            raise EncodeError(e.message, f"{path} -> {e.field}" if e.field else path) from None
        stream.write(bytes(out))
        return obj

    def _sizeof(self, context, path):
        raise cs.SizeofError("variable size", path=path)


class BerLength(BufferConstruct):
    """A-XDR length: `00..7F`, `81 nn`, `82 nnnn` (minimal form only)."""

    def fast_parse(self, buf, pos, end):
        return read_ber_length(buf, pos)

    def _build(self, obj, stream, context, path):
        if not isinstance(obj, int):
            raise cs.IntegerError(f"length must be an int, got {obj!r}", path=path)
        stream.write(ber_length_bytes(obj))
        return obj

    def _sizeof(self, context, path):
        raise cs.SizeofError("variable length", path=path)

    def _emitparse(self, code):
        code.append("""
            from protocols.prims import read_ber_length as _read_ber_length
            def parse_ber_length(io):
                value, end = _read_ber_length(io.getbuffer(), io.tell())
                io.seek(end)
                return value
        """)
        return "parse_ber_length(io)"


BerLength = BerLength()


class BerPrefixed(cs.Subconstruct):
    """`subcon` over exactly the next A-XDR-length-prefixed bytes. Unlike construct's Prefixed, errors inside
    keep absolute offsets, a length past the end names the length's own offset, and leftover bytes inside
    the prefixed region are an error (canonical decoding)."""

    def _parse(self, stream, context, path):
        start = stream.tell()
        buf, _ = _stream_buffer(stream)
        try:
            n, body = read_ber_length(buf, start)
        except FieldError as e:
            raise FieldError(e.raw_message, path, e.offset) from None
        finally:
            del buf
        stream.seek(body)
        data = stream.read(n)
        if len(data) != n:
            raise FieldError(f"length {n} runs past the end of data ({len(data)} bytes left)", path, start)
        sub = io.BytesIO(data)
        try:
            value = self.subcon._parsereport(sub, context, path)
        except FieldError as e:
            raise FieldError(e.raw_message, e.path or path, body + (e.offset or 0)) from None
        except ConstructError as e:
            raise FieldError(_message(e), e.path or path, body + sub.tell()) from None
        if sub.tell() != n:
            raise FieldError(f"{n - sub.tell()} unexpected byte(s) inside a length-prefixed field", path,
                             body + sub.tell())
        return value

    def _build(self, obj, stream, context, path):
        sub = io.BytesIO()
        value = self.subcon._build(obj, sub, context, path)
        data = sub.getvalue()
        stream.write(ber_length_bytes(len(data)))
        stream.write(data)
        return value

    def _sizeof(self, context, path):
        raise cs.SizeofError("variable length", path=path)


class HexBytes(Adapter):
    """Bytes on the wire, an upper-case hex string in the parsed tree and in JSON."""

    def _decode(self, obj, context, path):
        return obj.hex().upper()

    def _encode(self, obj, context, path):
        if isinstance(obj, (bytes, bytearray, memoryview)):
            return bytes(obj)
        if not isinstance(obj, str):
            raise cs.MappingError(f"expected a hex string, got {type(obj).__name__}", path=path)
        try:
            return bytes.fromhex(obj)
        except ValueError:
            raise cs.MappingError(f"not a hex string: {obj[:40]!r}", path=path) from None

    def _emitparse(self, code):
        return f"({self.subcon._compileparse(code)}).hex().upper()"


def Hex(n: int | Any) -> Construct:
    """Fixed-size (or context-sized) bytes shown as hex."""
    return HexBytes(cs.Bytes(n))


def HexPrefixed() -> Construct:
    """A-XDR-length-prefixed bytes shown as hex."""
    return HexBytes(BerPrefixed(cs.GreedyBytes))


Eui = Hex(8)


class Expect(Construct):
    """A constant (tag or fixed length byte): like construct's Const, but the error names the byte's offset."""

    def __init__(self, value: bytes, what: str = ""):
        super().__init__()
        self.value = value
        self.what = what
        self.flagbuildnone = True

    def _parse(self, stream, context, path):
        pos = stream.tell()
        got = stream.read(len(self.value))
        if got != self.value:
            what = f"{self.what} " if self.what else ""
            found = got.hex().upper() or "end of data"
            raise FieldError(f"expected {what}{self.value.hex().upper()}, found {found}", path, pos)
        return None

    def _build(self, obj, stream, context, path):
        stream.write(self.value)
        return None

    def _sizeof(self, context, path):
        return len(self.value)

    def _emitparse(self, code):
        code.append("""
            from protocols.prims import expect_bytes as _expect_bytes
        """)
        return f"_expect_bytes(io, {self.value!r}, {self.what!r})"


def expect_bytes(stream, value: bytes, what: str):
    """Compiled twin of Expect._parse."""
    pos = stream.tell()
    got = stream.read(len(value))
    if got != value:
        what = f"{what} " if what else ""
        raise FieldError(f"expected {what}{value.hex().upper()}, found {got.hex().upper() or 'end of data'}",
                         None, pos)
    return None


class StrictEnum(Adapter):
    """A closed enumeration (e.g. the CRA flag): parses to the name, and a value the format does not define is
    an error at that byte, not a number passed on. Builds from the name or the number."""

    def __init__(self, subcon, **mapping):
        super().__init__(subcon)
        self.by_value = {v: k for k, v in mapping.items()}
        self.by_name = dict(mapping)

    def _parse(self, stream, context, path):
        pos = stream.tell()
        raw = self.subcon._parsereport(stream, context, path)
        name = self.by_value.get(raw)
        if name is None:
            raise FieldError(f"undefined value {raw} (defined: "
                             + ", ".join(f"{v} {k}" for k, v in self.by_name.items()) + ")", path, pos)
        return name

    def _encode(self, obj, context, path):
        if obj in self.by_name:
            return self.by_name[obj]
        if isinstance(obj, int) and obj in self.by_value:
            return obj
        raise cs.MappingError(f"undefined value {obj!r}", path=path)


class Reject(Construct):
    """A Switch default for values the format does not define: a clear error instead of a misparse."""

    def __init__(self, message: str):
        super().__init__()
        self.message = message

    def _parse(self, stream, context, path):
        raise FieldError(self.message, path, stream.tell() - 1)

    def _build(self, obj, stream, context, path):
        raise cs.MappingError(self.message, path=path)


class _End(Construct):
    """Like construct's Terminated, but names the offset of the first unexpected byte."""

    def __init__(self):
        super().__init__()
        self.flagbuildnone = True

    def _parse(self, stream, context, path):
        pos = stream.tell()
        rest = len(stream.read())
        stream.seek(pos)
        if rest:
            raise FieldError(f"{rest} unexpected trailing byte(s)", path, pos)
        return None

    def _build(self, obj, stream, context, path):
        return None

    def _sizeof(self, context, path):
        return 0


End = _End()


class OptionalTail(cs.Subconstruct):
    """A field that may be missing at the end of its buffer: None when no byte is left. Unlike construct's
    Optional, a present-but-bad field is an error in both directions, never silently dropped."""

    def __init__(self, subcon):
        super().__init__(subcon)
        self.flagbuildnone = True

    def _parse(self, stream, context, path):
        pos = stream.tell()
        if not stream.read(1):
            return None
        stream.seek(pos)
        return self.subcon._parsereport(stream, context, path)

    def _build(self, obj, stream, context, path):
        if obj is None:
            return None
        return self.subcon._build(obj, stream, context, path)


class Linked(cs.Subconstruct):
    """Keeps `subcon` interpreted inside a compiled declaration (it holds Python callables that construct's
    compiler cannot emit); everything around it is still compiled."""


def compiled(con: Construct) -> Construct:
    """`con.compile()`: the same declaration, parsed by generated code (about 5x faster)."""
    return con.compile()

_PATH_NOISE = re.compile(r"^\(parsing\)\s*(->\s*)?|^\(building\)\s*(->\s*)?")


def _clean_path(path: str | None, prefix: str) -> str:
    path = _PATH_NOISE.sub("", path or "").replace(" -> ", ".").replace("(???)", "").strip(". ")
    path = re.sub(r"\.{2,}", ".", path)
    if prefix and path:
        return f"{prefix}.{path}"
    return prefix or path


def _message(e: ConstructError) -> str:
    if isinstance(e, FieldError):
        return e.raw_message
    text = str(e)
    if text.startswith("Error in path"):
        text = text.split("\n", 1)[1] if "\n" in text else text
    return text


def parse_exact(con: Construct, data: bytes, *, field: str = "", base: int = 0, slow: Construct | None = None,
                allow_trailing: bool = False, **context):
    """Parse all of `data` with `con`; any failure becomes DecodeError(field path, absolute offset).

    `slow` is the interpreted twin of a compiled `con`: compiled parsers lose the field path, so on failure the
    input is parsed again with `slow` to name the field exactly (errors are rare, the hot path stays compiled).
    """
    stream = io.BytesIO(data)
    try:
        value = con.parse_stream(stream, **context)
    except DecodeError as e:
        raise DecodeError(e.message, _clean_path(e.field, field), base + (e.offset or 0)) from None
    except (ConstructError, RecursionError, ValueError, OverflowError, UnicodeError, IndexError, KeyError,
            TypeError, struct.error) as e:
        if slow is not None and slow is not con:
            return parse_exact(slow, data, field=field, base=base, allow_trailing=allow_trailing, **context)
        offset = getattr(e, "offset", None)
        if offset is None:
            offset = stream.tell()
        if isinstance(e, RecursionError):
            msg = "structure nested too deeply"
        elif isinstance(e, ConstructError):
            msg = _message(e)
        else:
            msg = f"{type(e).__name__}: {e}"
        raise DecodeError(msg, _clean_path(getattr(e, "path", None), field), base + offset) from None
    end = stream.tell()
    if end != len(data) and not allow_trailing:
        raise DecodeError(f"{len(data) - end} unexpected trailing byte(s)", field, base + end)
    return value


def build_value(con: Construct, obj, *, field: str = "", **context) -> bytes:
    """Build `obj` with `con`; any failure becomes EncodeError naming the field path."""
    try:
        return con.build(obj, **context)
    except EncodeError as e:
        raise EncodeError(e.message, _clean_path(e.field, field)) from None
    except (ConstructError, ValueError, TypeError, KeyError, OverflowError, AttributeError, IndexError,
            UnicodeError, RecursionError) as e:
        msg = _message(e) if isinstance(e, ConstructError) else f"{type(e).__name__}: {e}"
        raise EncodeError(msg, _clean_path(getattr(e, "path", None), field)) from None


def to_jsonable(obj):
    """A parsed construct tree as plain JSON types: drops `_` keys, hex-encodes stray bytes, enums as names.

    Plain dicts and lists are already JSON (hand parsers such as A-XDR Data produce them) and are not walked.
    """
    t = type(obj)
    if t is Container:
        return {k: to_jsonable(v) for k, v in obj.items() if not (isinstance(k, str) and k.startswith("_"))}
    if t is ListContainer:
        return [to_jsonable(v) for v in obj]
    if t is dict or t is list or t is str or t is int or obj is None:
        return obj
    if isinstance(obj, cs.EnumIntegerString):
        return str(obj)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj).hex().upper()
    return obj


def strip_info(obj: dict, keys: tuple[str, ...]) -> dict:
    """A copy of `obj` without informational keys (names that `decode` adds and `encode` ignores)."""
    return {k: v for k, v in obj.items() if k not in keys}
