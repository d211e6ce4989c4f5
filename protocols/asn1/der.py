"""The generic DER layer: one TLV (tag, length, value), declared once as a construct, parsed by hand.

    tag     class(2) constructed(1) number(5) [high-tag-number form: 1F, then base-128 bytes, minimal]
    length  00..7F | 81 nn | 82 nnnn | 83 .. | 84 ..     minimal form only, indefinite (80) rejected
    value   constructed: a list of TLVs; primitive: bytes, checked by universal type

`DerTlv` parses one TLV into a `Tlv` tree (constructed values recursively) and builds a `Tlv` tree, or its
JSON form, back to bytes. Decoding is injective: every byte string has at most one tree and every tree
records everything needed to give the same bytes back (`encode(decode(b)) == b`).

The one deviation from strict DER is `82 00 nn` (nn >= 80) for lengths 128..255: GBCS devices write it in the
CS02a/b/f/g responses and alerts of the RTDS corpus. It is accepted only in that form and recorded on the node
(`long82`, JSON `"length_form": "82"`), so decoding stays injective and the bytes round-trip.

Primitive values are typed by their universal tag (JSON form, `node_to_json` / `node_from_json`):

    BOOLEAN (00/FF only)          {"tag": "BOOLEAN", "value": true}
    INTEGER / ENUMERATED          {"tag": "INTEGER", "value": 1000}      minimal two's complement only
    BIT STRING                    {"tag": "BIT STRING", "unused_bits": 7, "value": "80"}   padding bits zero
    OCTET STRING                  {"tag": "OCTET STRING", "value": "00DB12345678909C"}
    NULL                          {"tag": "NULL"}
    OBJECT IDENTIFIER             {"tag": "OBJECT IDENTIFIER", "value": "1.2.840.10045.2.1"}
    UTF8String, NumericString, PrintableString, IA5String, VisibleString, UTCTime, GeneralizedTime
                                  {"tag": "GeneralizedTime", "value": "20300115090000Z"}
    SEQUENCE / SET                {"tag": "SEQUENCE", "value": [...]}
    anything else                 {"tag": "[3]", "value": "0514"} (context), "[APPLICATION 1]", "[PRIVATE 2]",
                                  "[UNIVERSAL 9]"; constructed ones have a list as value.

Errors are `FieldError`s with the offset of the bad byte and a path of child indices (`asn1.1.0.length`);
`prims.parse_exact` turns them into `DecodeError`. Nesting is limited to `MAX_DEPTH` levels.
"""
from __future__ import annotations

import io
import re

import construct as cs
from construct import Construct

from protocols.errors import EncodeError
from protocols.prims import FieldError

__all__ = [
    "Tlv", "Raw", "DerTlv", "DER", "MAX_DEPTH", "parse_der", "serialize", "node_to_json", "node_from_json",
    "tag_key", "tag_name", "UNIVERSAL", "CONTEXT", "APPLICATION", "PRIVATE",
    "T_BOOLEAN", "T_INTEGER", "T_BIT_STRING", "T_OCTET_STRING", "T_NULL", "T_OID", "T_ENUMERATED",
    "T_UTF8", "T_SEQUENCE", "T_SET", "T_UTCTIME", "T_GENTIME", "int_content", "content_int",
    "oid_from_content", "oid_content",
]

MAX_DEPTH = 32          # nesting levels: GBCS payloads with certificates reach about 13
MAX_TAG_BYTES = 4       # high-tag-number form: up to 4 base-128 bytes (tag numbers < 2**28)
MAX_LENGTH_BYTES = 4    # 84 nn nn nn nn at most
MAX_INT_BYTES = 512     # larger INTEGER contents are shown as hex (JSON numbers stay printable)
MAX_OID_SUBID_BYTES = 20  # an OID arc of up to 140 bits (2.25.<UUID> needs 19 bytes)

UNIVERSAL, APPLICATION, CONTEXT, PRIVATE = 0, 1, 2, 3

T_BOOLEAN, T_INTEGER, T_BIT_STRING, T_OCTET_STRING, T_NULL, T_OID = 1, 2, 3, 4, 5, 6
T_ENUMERATED, T_UTF8, T_SEQUENCE, T_SET = 10, 12, 16, 17
T_NUMERIC, T_PRINTABLE, T_IA5, T_UTCTIME, T_GENTIME, T_VISIBLE = 18, 19, 22, 23, 24, 26

#: Universal types this layer understands: number -> (JSON name, kind). The kind selects the content check and
#: the JSON value; universal numbers not listed here stay untyped (`[UNIVERSAL n]`, hex or list).
UNIVERSAL_TYPES: dict[int, tuple[str, str]] = {
    T_BOOLEAN: ("BOOLEAN", "boolean"),
    T_INTEGER: ("INTEGER", "integer"),
    T_BIT_STRING: ("BIT STRING", "bits"),
    T_OCTET_STRING: ("OCTET STRING", "octets"),
    T_NULL: ("NULL", "null"),
    T_OID: ("OBJECT IDENTIFIER", "oid"),
    T_ENUMERATED: ("ENUMERATED", "integer"),
    T_UTF8: ("UTF8String", "utf8"),
    T_SEQUENCE: ("SEQUENCE", "constructed"),
    T_SET: ("SET", "constructed"),
    T_NUMERIC: ("NumericString", "ascii"),
    T_PRINTABLE: ("PrintableString", "ascii"),
    T_IA5: ("IA5String", "ascii"),
    T_UTCTIME: ("UTCTime", "ascii"),
    T_GENTIME: ("GeneralizedTime", "ascii"),
    T_VISIBLE: ("VisibleString", "ascii"),
}
UNIVERSAL_BY_NAME = {name: (number, kind) for number, (name, kind) in UNIVERSAL_TYPES.items()}
CLASS_NAMES = {APPLICATION: "APPLICATION", PRIVATE: "PRIVATE", UNIVERSAL: "UNIVERSAL"}
CLASS_BY_NAME = {"APPLICATION": APPLICATION, "PRIVATE": PRIVATE, "UNIVERSAL": UNIVERSAL}
_TAG_RE = re.compile(r"\[(?:(APPLICATION|PRIVATE|UNIVERSAL) )?([0-9]{1,9})\]")


def tag_key(cls: int, constructed: bool, number: int) -> int:
    """One int naming a tag (class, constructed bit, number): what schemas match on."""
    return (number << 3) | (cls << 1) | (1 if constructed else 0)


class Tlv:
    """One decoded TLV. `value` is a list of `Tlv` (constructed) or the raw content bytes (primitive).
    `start`/`end` delimit the whole TLV in the parsed buffer (so a schema can keep a sub-tree as raw bytes);
    `long82` marks the GBCS `82 00 nn` length form."""

    __slots__ = ("cls", "constructed", "number", "value", "start", "end", "long82", "key")

    def __init__(self, cls: int, constructed: bool, number: int, value, start: int = -1, end: int = -1,
                 long82: bool = False):
        self.cls = cls
        self.constructed = constructed
        self.number = number
        self.value = value
        self.start = start
        self.end = end
        self.long82 = long82
        self.key = (number << 3) | (cls << 1) | (1 if constructed else 0)

    def retag(self, cls: int, number: int) -> "Tlv":
        self.cls = cls
        self.number = number
        self.key = (number << 3) | (cls << 1) | (1 if self.constructed else 0)
        return self

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"Tlv({tag_name(self.cls, self.number)}, {self.value!r})"


class Raw:
    """Bytes that are already one whole encoded TLV (e.g. a certificate kept as it came): written as they are."""

    __slots__ = ("data",)

    def __init__(self, data: bytes):
        self.data = bytes(data)


def tag_name(cls: int, number: int) -> str:
    if cls == UNIVERSAL and number in UNIVERSAL_TYPES:
        return UNIVERSAL_TYPES[number][0]
    if cls == CONTEXT:
        return f"[{number}]"
    return f"[{CLASS_NAMES[cls]} {number}]"


# --------------------------------------------------------------------------------------------- content codecs

def content_int(content: bytes) -> int:
    return int.from_bytes(content, "big", signed=True)


def int_content(value: int) -> bytes:
    """Minimal two's-complement content of an INTEGER."""
    n = (value + (value < 0)).bit_length() // 8 + 1
    return value.to_bytes(n, "big", signed=True)


def _int_content_error(content: bytes) -> str | None:
    if not content:
        return "INTEGER with no content octets"
    if len(content) > 1 and ((content[0] == 0 and content[1] < 0x80) or (content[0] == 0xFF and content[1] >= 0x80)):
        return "non-minimal INTEGER encoding (redundant leading byte)"
    return None


def _oid_content_error(content: bytes) -> tuple[str, int] | None:
    if not content:
        return "OBJECT IDENTIFIER with no content octets", 0
    if content[-1] & 0x80:
        return "OBJECT IDENTIFIER ends inside a sub-identifier", len(content) - 1
    prev = 0
    run = 0
    for i, b in enumerate(content):
        if b == 0x80 and not (prev & 0x80):
            return "non-minimal OBJECT IDENTIFIER sub-identifier (leading 80)", i
        run = run + 1 if b & 0x80 else 0
        if run >= MAX_OID_SUBID_BYTES:
            return f"OBJECT IDENTIFIER sub-identifier longer than {MAX_OID_SUBID_BYTES} bytes", i
        prev = b
    return None


def oid_from_content(content: bytes) -> str:
    arcs = []
    value = 0
    for b in content:
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(value)
            value = 0
    first = arcs[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(a) for a in head + arcs[1:])


_OID_RE = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")


def oid_content(text: str) -> bytes:
    if not isinstance(text, str) or not _OID_RE.fullmatch(text):
        raise ValueError(f"not a dotted object identifier: {str(text)[:60]!r}")
    arcs = [int(a) for a in text.split(".")]
    if arcs[0] < 2 and arcs[1] >= 40:
        raise ValueError(f"second arc of {text!r} must be < 40")
    subids = [arcs[0] * 40 + arcs[1]] + arcs[2:]
    out = bytearray()
    for v in subids:
        chunk = [v & 0x7F]
        v >>= 7
        while v:
            chunk.append(0x80 | (v & 0x7F))
            v >>= 7
        if len(chunk) > MAX_OID_SUBID_BYTES:
            raise ValueError(f"an arc of {text[:40]!r} is too large")
        out.extend(reversed(chunk))
    return bytes(out)


def _bits_error(content: bytes) -> tuple[str, int] | None:
    if not content:
        return "BIT STRING with no content octets", 0
    unused = content[0]
    if unused > 7:
        return f"BIT STRING unused-bits count {unused} > 7", 0
    if len(content) == 1 and unused:
        return "empty BIT STRING with non-zero unused-bits count", 0
    if unused and content[-1] & ((1 << unused) - 1):
        return "BIT STRING padding bits not zero", len(content) - 1
    return None


# --------------------------------------------------------------------------------------------- the parser

class _DerError(Exception):
    """Internal: a parse failure; the child-index path is filled in on the way out of the recursion."""

    def __init__(self, message: str, offset: int, where: str):
        self.message = message
        self.offset = offset
        self.parts = [where] if where else []


#: universal number -> kind, for the parser's content checks (None: no check)
_KINDS = {number: kind for number, (_, kind) in UNIVERSAL_TYPES.items()}


def parse_der(data: bytes, pos: int, end: int, depth: int = 0, path: list | None = None) -> tuple[Tlv, int]:
    """Parse one TLV at `pos` (not past `end`); returns (node, position after it). Raises FieldError with the
    offset of the bad byte and the path `root.child.child.part` (root = `path[0]`, default `asn1`)."""
    try:
        return _parse(data, pos, end, depth)
    except _DerError as e:
        root = [str(p) for p in (path or ["asn1"]) if p != ""]
        raise FieldError(e.message, ".".join(root + [str(p) for p in e.parts]), e.offset) from None
    except RecursionError:
        raise FieldError("structure nested too deeply", ".".join(p for p in (path or ["asn1"]) if p), pos) from None


def _parse(data: bytes, pos: int, end: int, depth: int) -> tuple[Tlv, int]:
    if pos >= end:
        raise _DerError("tag missing: end of data", pos, "tag")
    start = pos
    first = data[pos]
    cls = first >> 6
    constructed = first & 0x20
    number = first & 0x1F
    pos += 1
    if number == 0x1F:
        number = 0
        count = 0
        while True:
            if pos >= end:
                raise _DerError("high tag number runs past the end of data", pos, "tag")
            b = data[pos]
            if count == 0 and b == 0x80:
                raise _DerError("non-minimal high tag number (leading 80)", pos, "tag")
            number = (number << 7) | (b & 0x7F)
            pos += 1
            count += 1
            if not b & 0x80:
                break
            if count >= MAX_TAG_BYTES:
                raise _DerError(f"tag number longer than {MAX_TAG_BYTES} bytes", pos, "tag")
        if number < 0x1F:
            raise _DerError(f"tag number {number} in high-tag-number form (must use one byte)", start, "tag")
    kind = None
    if cls == 0:
        if number == 0:
            raise _DerError("universal tag 0 (end-of-contents) is not DER", start, "tag")
        kind = _KINDS.get(number)
        if kind == "constructed":
            if not constructed:
                raise _DerError(f"{UNIVERSAL_TYPES[number][0]} must use the constructed form", start, "tag")
        elif kind is not None and constructed:
            raise _DerError(f"constructed {UNIVERSAL_TYPES[number][0]} is not DER", start, "tag")
    # length
    if pos >= end:
        raise _DerError("length missing: end of data", pos, "length")
    lb = data[pos]
    long82 = False
    if lb < 0x80:
        length = lb
        vstart = pos + 1
    elif lb == 0x80:
        raise _DerError("indefinite length (80) is not DER", pos, "length")
    else:
        n = lb & 0x7F
        if n > MAX_LENGTH_BYTES:
            raise _DerError(f"length form 0x{lb:02X} too long", pos, "length")
        vstart = pos + 1 + n
        if vstart > end:
            raise _DerError(f"length form 0x{lb:02X} needs {n} more bytes: end of data", pos, "length")
        length = int.from_bytes(data[pos + 1:vstart], "big")
        if length < 0x80 or length < (1 << (8 * (n - 1))):
            if n == 2 and length >= 0x80:
                long82 = True          # GBCS 82 00 nn (see the module docstring)
            else:
                raise _DerError(f"non-minimal length form 0x{lb:02X} for length {length}", pos, "length")
    vend = vstart + length
    if vend > end:
        raise _DerError(f"length {length} runs {vend - end} byte(s) past the end of its container", pos, "length")
    if constructed:
        if depth >= MAX_DEPTH:
            raise _DerError(f"structure nested deeper than {MAX_DEPTH} levels", start, "")
        children = []
        p = vstart
        depth += 1
        while p < vend:
            try:
                child, p = _parse(data, p, vend, depth)
            except _DerError as e:
                e.parts.insert(0, len(children))
                raise
            children.append(child)
        return Tlv(cls, True, number, children, start, vend, long82), vend
    content = data[vstart:vend]
    if kind is not None and kind != "octets":
        err = _check_content(kind, number, content)
        if err is not None:
            raise _DerError(err[0], vstart + err[1], "value")
    return Tlv(cls, False, number, content, start, vend, long82), vend


def _check_content(kind: str, number: int, content: bytes) -> tuple[str, int] | None:
    if kind == "integer":
        msg = _int_content_error(content)
        return None if msg is None else (msg, 0)
    if kind == "boolean":
        if len(content) != 1 or content[0] not in (0x00, 0xFF):
            return "DER BOOLEAN must be one byte 00 or FF", 0
        return None
    if kind == "null":
        return None if not content else ("NULL with content octets", 0)
    if kind == "bits":
        return _bits_error(content)
    if kind == "oid":
        return _oid_content_error(content)
    if kind == "ascii":
        for i, b in enumerate(content):
            if b >= 0x80:
                return f"non-ASCII byte in {UNIVERSAL_TYPES[number][0]}", i
        return None
    if kind == "utf8":
        try:
            content.decode("utf-8")
        except UnicodeDecodeError as e:
            return f"invalid UTF-8 in UTF8String: {e.reason}", e.start
        return None
    return None


# --------------------------------------------------------------------------------------------- the writer

def _header(cls: int, constructed: bool, number: int, length: int, long82: bool, policy82: bool = False) -> bytes:
    first = (cls << 6) | (0x20 if constructed else 0)
    if number < 0x1F and length < 0x80 and not long82:
        return bytes((first | number, length))
    if number < 0x1F:
        out = bytearray((first | number,))
    else:
        chunk = [number & 0x7F]
        v = number >> 7
        while v:
            chunk.append(0x80 | (v & 0x7F))
            v >>= 7
        if len(chunk) > MAX_TAG_BYTES:
            raise EncodeError(f"tag number {number} too large")
        out = bytearray((first | 0x1F,))
        out.extend(reversed(chunk))
    if length < 0x80:
        if long82:
            raise EncodeError(f"length_form 82 needs a length of at least 128, got {length}")
        out.append(length)
    elif (long82 or policy82) and length < 0x10000:
        out.append(0x82)
        out.extend(length.to_bytes(2, "big"))
    else:
        n = (length.bit_length() + 7) // 8
        if n > MAX_LENGTH_BYTES:
            raise EncodeError(f"length {length} too large")
        out.append(0x80 | n)
        out.extend(length.to_bytes(n, "big"))
    return bytes(out)


def serialize(node, long82: bool = False, depth: int = 0) -> bytes:
    """The bytes of a `Tlv`/`Raw` tree. With `long82`, every length 128..255 is written `82 00 nn` (the GBCS
    device style); otherwise a node's own `long82` flag decides."""
    if isinstance(node, Raw):
        return node.data
    if depth > MAX_DEPTH:
        raise EncodeError(f"structure nested deeper than {MAX_DEPTH} levels")
    if node.constructed:
        content = b"".join([serialize(c, long82, depth + 1) for c in node.value])
    else:
        content = node.value
    return _header(node.cls, node.constructed, node.number, len(content), node.long82, long82) + content


# --------------------------------------------------------------------------------------------- JSON form

def node_to_json(node: Tlv) -> dict:
    """The generic JSON form of a parsed tree (see the module docstring)."""
    out: dict = {"tag": tag_name(node.cls, node.number)}
    if node.long82:
        out["length_form"] = "82"
    value = node.value
    if node.constructed:
        out["value"] = [node_to_json(c) for c in value]
        return out
    kind = UNIVERSAL_TYPES[node.number][1] if node.cls == UNIVERSAL and node.number in UNIVERSAL_TYPES else None
    if kind == "integer":
        if len(value) > MAX_INT_BYTES:
            out["hex"] = value.hex().upper()
        else:
            out["value"] = content_int(value)
    elif kind == "boolean":
        out["value"] = value[0] == 0xFF
    elif kind == "null":
        pass
    elif kind == "bits":
        out["unused_bits"] = value[0]
        out["value"] = value[1:].hex().upper()
    elif kind == "oid":
        out["value"] = oid_from_content(value)
    elif kind == "ascii":
        out["value"] = value.decode("ascii")
    elif kind == "utf8":
        out["value"] = value.decode("utf-8")
    else:
        out["value"] = bytes(value).hex().upper()
    return out


def _hex(value, path: str) -> bytes:
    if not isinstance(value, str):
        raise EncodeError(f"expected a hex string, got {type(value).__name__}", path)
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise EncodeError(f"not a hex string: {value[:40]!r}", path) from None


def parse_tag_name(name, path: str) -> tuple[int, int, str | None]:
    """(class, number, kind) of a JSON tag name."""
    if not isinstance(name, str):
        raise EncodeError("tag must be a string such as 'SEQUENCE' or '[3]'", path)
    if name in UNIVERSAL_BY_NAME:
        number, kind = UNIVERSAL_BY_NAME[name]
        return UNIVERSAL, number, kind
    m = _TAG_RE.fullmatch(name)
    if not m:
        raise EncodeError(f"unknown tag {name!r}", path)
    cls = CLASS_BY_NAME[m.group(1)] if m.group(1) else CONTEXT
    number = int(m.group(2))
    if cls == UNIVERSAL and (number in UNIVERSAL_TYPES or number == 0):
        raise EncodeError(f"write universal tag {number} by its name, not {name!r}", path)
    return cls, number, None


def node_from_json(obj, path: str = "der", depth: int = 0) -> Tlv:
    """A `Tlv` tree from the generic JSON form; checks everything the parser checks, so what it builds decodes."""
    if depth > MAX_DEPTH:
        raise EncodeError(f"structure nested deeper than {MAX_DEPTH} levels", path)
    if not isinstance(obj, dict):
        raise EncodeError("a DER node must be an object with 'tag'", path)
    cls, number, kind = parse_tag_name(obj.get("tag"), f"{path}.tag")
    lf = obj.get("length_form")
    if lf not in (None, "82", "minimal"):
        raise EncodeError(f"length_form must be '82' or absent, got {lf!r}", f"{path}.length_form")
    long82 = lf == "82"
    value = obj.get("value")
    if kind == "constructed" or (kind is None and isinstance(value, list)):
        if not isinstance(value, list):
            raise EncodeError("a constructed value must be a list of nodes", f"{path}.value")
        children = [node_from_json(c, f"{path}.{i}", depth + 1) for i, c in enumerate(value)]
        return Tlv(cls, True, number, children, long82=long82)
    vpath = f"{path}.value"
    if kind is None or kind == "octets":
        content = _hex(value, vpath)
    elif kind == "integer":
        if "hex" in obj and value is None:
            content = _hex(obj["hex"], f"{path}.hex")
            msg = _int_content_error(content)
            if msg:
                raise EncodeError(msg, f"{path}.hex")
        else:
            if isinstance(value, bool) or not isinstance(value, int):
                raise EncodeError(f"expected an integer, got {value!r}", vpath)
            content = int_content(value)
    elif kind == "boolean":
        if not isinstance(value, bool):
            raise EncodeError(f"expected true or false, got {value!r}", vpath)
        content = b"\xFF" if value else b"\x00"
    elif kind == "null":
        if value is not None:
            raise EncodeError("NULL takes no value", vpath)
        content = b""
    elif kind == "bits":
        unused = obj.get("unused_bits", 0)
        if isinstance(unused, bool) or not isinstance(unused, int) or not 0 <= unused <= 7:
            raise EncodeError("unused_bits must be an integer 0..7", f"{path}.unused_bits")
        content = bytes((unused,)) + _hex(value, vpath)
        err = _bits_error(content)
        if err:
            raise EncodeError(err[0], vpath)
    elif kind == "oid":
        try:
            content = oid_content(value)
        except ValueError as e:
            raise EncodeError(str(e), vpath) from None
    elif kind == "ascii":
        if not isinstance(value, str):
            raise EncodeError("expected a string", vpath)
        try:
            content = value.encode("ascii")
        except UnicodeEncodeError:
            raise EncodeError("non-ASCII character in an ASCII string type", vpath) from None
    else:  # utf8
        if not isinstance(value, str):
            raise EncodeError("expected a string", vpath)
        try:
            content = value.encode("utf-8")
        except UnicodeEncodeError:
            raise EncodeError("string cannot be encoded as UTF-8", vpath) from None
    return Tlv(cls, False, number, content, long82=long82)


# --------------------------------------------------------------------------------------------- the construct

class DerTlv(Construct):
    """One DER TLV, recursively: parses to a `Tlv` tree (hand-written walk, see `parse_der`), builds from a
    `Tlv`/`Raw` tree or its JSON form. Parse errors are `FieldError`s with the offset of the bad byte."""

    def __init__(self, root: str = "asn1"):
        super().__init__()
        self.root = root

    def _parse(self, stream, context, path):
        if isinstance(stream, io.BytesIO):
            data = stream.getvalue()
            pos = stream.tell()
        else:
            pos = stream.tell()
            data = b"\x00" * pos + stream.read()
        node, end = parse_der(data, pos, len(data), 0, [self.root])
        stream.seek(end)
        return node

    def _build(self, obj, stream, context, path):
        if isinstance(obj, dict):
            obj = node_from_json(obj, self.root)
        if not isinstance(obj, (Tlv, Raw)):
            raise cs.ConstructError(f"expected a DER node, got {type(obj).__name__}", path=path)
        stream.write(serialize(obj))
        return obj

    def _sizeof(self, context, path):
        raise cs.SizeofError("variable length", path=path)


#: The one declaration of a DER value; GBCS payloads are exactly one TLV. Error paths are relative to it
#: (`0.1.length`); callers prefix their own field name.
DER = DerTlv(root="")
