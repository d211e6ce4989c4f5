"""Named ASN.1 types over the generic DER tree: declare a GBCS structure once, get decode (tree -> named JSON
values) and encode (named JSON values -> tree) from the same declaration.

    JoinDeviceCommand = Seq(
        F("method", Integer()),
        F("other_device", Octets()),
        F("device_type", Integer(DEVICE_TYPES)),
        F("other_device_certificate", Certificate(), optional=True),
    )

A tree that does not fit raises `Mismatch` (the payload then falls back to the generic DER form, it is not an
error); bad JSON on encode raises `EncodeError` with the dotted field path. `Asn1Schema` wraps a declaration
as a construct (`Asn1Schema(JoinDeviceCommand).parse(b)` / `.build(value)`) over `der.DerTlv`.

Values: INTEGER -> int (or the name from a table, unknown numbers stay ints), OCTET STRING -> upper-case hex,
GeneralizedTime `YYYYMMDDhhmmssZ` -> `YYYY-MM-DDThh:mm:ssZ`, NULL -> null, named-bit BIT STRING -> list of
names, SEQUENCE -> object (absent OPTIONAL fields are left out), SEQUENCE OF -> list, CHOICE -> an object
with exactly one key. Encoding accepts names or numbers for enumerations.
"""
from __future__ import annotations

import re
from contextvars import ContextVar
from typing import Callable

import construct as cs

from protocols.asn1 import der
from protocols.asn1.der import (CONTEXT, T_BIT_STRING, T_ENUMERATED, T_GENTIME, T_INTEGER, T_NULL, T_OCTET_STRING,
                                T_SEQUENCE, UNIVERSAL, Raw, Tlv, tag_key)
from protocols.errors import EncodeError
from protocols.prims import FieldError

__all__ = [
    "Mismatch", "Type", "Integer", "Enumerated", "AlertCode", "Octets", "Time", "Null", "NamedBits", "Certificate",
    "Seq", "SeqOf", "Choice", "Implicit", "F", "Asn1Schema", "TRUSTED_RAW",
]


class Mismatch(Exception):
    """The DER tree is valid but does not have this schema's shape."""


def _int_arg(value, names_rev: dict | None, path: str) -> int:
    if isinstance(value, bool):
        raise EncodeError("expected an integer or a name", path)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and names_rev is not None and value in names_rev:
        return names_rev[value]
    if names_rev:
        raise EncodeError(f"unknown name {value!r} (known: {', '.join(sorted(names_rev))})", path)
    raise EncodeError(f"expected an integer, got {value!r}", path)


class Type:
    """A schema node. `keys` are the tag keys a value of this type can start with (OPTIONAL/CHOICE look-ahead)."""

    keys: frozenset = frozenset()
    #: (class, constructed, number) of a single-tag type, so `Implicit` can retag it
    tag: tuple[int, bool, int] | None = None

    def decode(self, node: Tlv, data: bytes):
        if node.key not in self.keys:
            raise Mismatch
        return self.decode_content(node, data)

    def decode_content(self, node: Tlv, data: bytes):
        raise NotImplementedError

    def encode(self, value, path: str):
        raise NotImplementedError

    def info_keys(self) -> frozenset:
        return frozenset()


class _Single(Type):
    def __init__(self, cls: int, constructed: bool, number: int):
        self.tag = (cls, constructed, number)
        self.keys = frozenset((tag_key(cls, constructed, number),))

    def _node(self, value) -> Tlv:
        cls, constructed, number = self.tag
        return Tlv(cls, constructed, number, value)


class Integer(_Single):
    """INTEGER (or ENUMERATED), optionally with a name table {number: name}."""

    def __init__(self, names: dict[int, str] | None = None, universal: int = T_INTEGER):
        super().__init__(UNIVERSAL, False, universal)
        self.names = names
        self.names_rev = {v: k for k, v in names.items()} if names else None

    def decode_content(self, node, data):
        value = der.content_int(node.value)
        if self.names:
            return self.names.get(value, value)
        return value

    def encode(self, value, path):
        return self._node(der.int_content(_int_arg(value, self.names_rev, path)))


def Enumerated(names: dict[int, str] | None = None) -> Integer:
    return Integer(names, universal=T_ENUMERATED)


class AlertCode(Integer):
    """A GBCS alert code as a DER INTEGER (`02 03 00 8F 66`), shown as `"0x8F66"`."""

    def __init__(self):
        super().__init__()

    def decode_content(self, node, data):
        value = der.content_int(node.value)
        if not 0 <= value <= 0xFFFF:
            raise Mismatch
        return f"0x{value:04X}"

    def encode(self, value, path):
        if isinstance(value, str):
            text = value[2:] if value[:2].lower() == "0x" else value
            try:
                if not text.isalnum():
                    raise ValueError
                value = int(text, 16)
            except ValueError:
                raise EncodeError(f"alert code must look like '0x8F66', got {value!r}", path) from None
        value = _int_arg(value, None, path)
        if not 0 <= value <= 0xFFFF:
            raise EncodeError(f"alert code {value} out of range 0..0xFFFF", path)
        return self._node(der.int_content(value))


class Octets(_Single):
    """OCTET STRING as upper-case hex."""

    def __init__(self):
        super().__init__(UNIVERSAL, False, T_OCTET_STRING)

    def decode_content(self, node, data):
        return node.value.hex().upper()

    def encode(self, value, path):
        if not isinstance(value, str):
            raise EncodeError(f"expected a hex string, got {type(value).__name__}", path)
        try:
            return self._node(bytes.fromhex(value))
        except ValueError:
            raise EncodeError(f"not a hex string: {value[:40]!r}", path) from None


_GT_RE = re.compile(rb"(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)Z")
_ISO_RE = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)Z", re.ASCII)
_GT_TEXT_RE = re.compile(r"\d{14}Z", re.ASCII)


class Time(_Single):
    """GeneralizedTime `YYYYMMDDhhmmssZ` (the only form GBCS uses) as ISO 8601 `YYYY-MM-DDThh:mm:ssZ`; other
    forms do not match the schema. Encoding also takes the raw `YYYYMMDDhhmmssZ` text."""

    def __init__(self):
        super().__init__(UNIVERSAL, False, T_GENTIME)

    def decode_content(self, node, data):
        m = _GT_RE.fullmatch(node.value)
        if m is None:
            raise Mismatch
        y, mo, d, h, mi, s = (g.decode() for g in m.groups())
        return f"{y}-{mo}-{d}T{h}:{mi}:{s}Z"

    def encode(self, value, path):
        if isinstance(value, str):
            m = _ISO_RE.fullmatch(value)
            if m:
                return self._node(("".join(m.groups()) + "Z").encode())
            if _GT_TEXT_RE.fullmatch(value):
                return self._node(value.encode())
        raise EncodeError(f"expected a UTC time 'YYYY-MM-DDThh:mm:ssZ', got {value!r}", path)


class Null(_Single):
    def __init__(self):
        super().__init__(UNIVERSAL, False, T_NULL)

    def decode_content(self, node, data):
        return None

    def encode(self, value, path):
        if value is not None:
            raise EncodeError(f"NULL takes the value null, got {value!r}", path)
        return self._node(b"")


MAX_BITS = 1 << 16


class NamedBits(_Single):
    """A named-bit BIT STRING (e.g. X.509 KeyUsage) as a list of bit names (unknown bits as numbers). DER
    drops trailing zero bits; a non-canonical encoding fails the exact re-encode check and falls back."""

    def __init__(self, names: dict[int, str]):
        super().__init__(UNIVERSAL, False, T_BIT_STRING)
        self.names = names
        self.names_rev = {v: k for k, v in names.items()}

    def decode_content(self, node, data):
        content = node.value
        unused = content[0]
        nbits = (len(content) - 1) * 8 - unused
        if nbits > MAX_BITS:
            raise Mismatch
        out = []
        for i in range(nbits):
            if content[1 + i // 8] & (0x80 >> (i % 8)):
                out.append(self.names.get(i, i))
        # DER named-bit lists drop trailing zero bits: the last bit must be set (or the string empty)
        if nbits and not content[-1] & (1 << unused):
            raise Mismatch
        return out

    def encode(self, value, path):
        if not isinstance(value, list):
            raise EncodeError("expected a list of bit names", path)
        bits = set()
        for i, v in enumerate(value):
            b = _int_arg(v, self.names_rev, f"{path}.{i}")
            if not 0 <= b < MAX_BITS:
                raise EncodeError(f"bit number {b} out of range", f"{path}.{i}")
            bits.add(b)
        if not bits:
            return self._node(b"\x00")
        top = max(bits)
        body = bytearray(top // 8 + 1)
        for b in bits:
            body[b // 8] |= 0x80 >> (b % 8)
        return self._node(bytes((7 - top % 8,)) + bytes(body))


#: Set while `decode_asn1` re-encodes a value it has just decoded: certificate bytes came from a validated
#: tree then, so `Certificate.encode` need not parse them again.
TRUSTED_RAW: ContextVar[bool] = ContextVar("asn1_trusted_raw", default=False)


_CACHE_SIZE = 256
#: certificates already checked as one valid DER SEQUENCE (the same few certificates recur in traffic)
_VALID_RAW: set[bytes] = set()
#: (summary function, raw certificate bytes) -> informational summary
_INFO_CACHE: dict[tuple, dict] = {}


class Certificate(Type):
    """A whole DER structure kept as it came (X.509 certificate, PKCS#10 request): `{"der": hex, ...info}`.
    `info(node, data)` adds informational keys (subject, EUI...) that encoding ignores."""

    def __init__(self, info: Callable[[Tlv, bytes], dict] | None = None):
        self.keys = frozenset((tag_key(UNIVERSAL, True, T_SEQUENCE),))
        self.info = info

    def decode_content(self, node, data):
        raw = data[node.start:node.end]
        out = {"der": raw.hex().upper()}
        if self.info is not None:
            cache_key = (self.info, raw)
            info = _INFO_CACHE.get(cache_key)
            if info is None:
                try:
                    info = self.info(node, data)
                except Exception:  # informational only: never let it break decoding
                    info = {}
                if len(_INFO_CACHE) >= _CACHE_SIZE:
                    _INFO_CACHE.clear()
                _INFO_CACHE[cache_key] = info
            for k, v in info.items():
                out[k] = list(v) if isinstance(v, list) else v
        return out

    def encode(self, value, path):
        if isinstance(value, dict):
            if "der" not in value:
                raise EncodeError("certificate object needs 'der' (hex)", path)
            value, path = value["der"], f"{path}.der"
        if not isinstance(value, str):
            raise EncodeError("expected the certificate as hex DER", path)
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raise EncodeError(f"not a hex string: {value[:40]!r}", path) from None
        if TRUSTED_RAW.get() or raw in _VALID_RAW:
            return Raw(raw)
        try:
            node, end = der.parse_der(raw, 0, len(raw), 1, ["der"])
        except FieldError as e:
            raise EncodeError(f"certificate is not valid DER: {e.raw_message} (byte {e.offset})", path) from None
        if end != len(raw) or node.key not in self.keys:
            raise EncodeError("certificate must be exactly one DER SEQUENCE", path)
        if len(_VALID_RAW) >= _CACHE_SIZE:
            _VALID_RAW.clear()
        _VALID_RAW.add(raw)
        return Raw(raw)


class F:
    """A SEQUENCE component: name, type, OPTIONAL, and an optional informational companion
    `info=(key, fn)` whose `fn(value)` is shown beside the field (and ignored on encode)."""

    __slots__ = ("name", "type", "optional", "info")

    def __init__(self, name: str, type_: Type, optional: bool = False,
                 info: tuple[str, Callable] | None = None):
        self.name = name
        self.type = type_
        self.optional = optional
        self.info = info


class Seq(_Single):
    """SEQUENCE { fields } -> object. OPTIONAL components are told apart by their tag (DER order)."""

    def __init__(self, *fields: F):
        super().__init__(UNIVERSAL, True, T_SEQUENCE)
        self.fields = fields
        names = [f.name for f in fields]
        self.allowed = frozenset(names + [f.info[0] for f in fields if f.info])
        self.info_only = frozenset(f.info[0] for f in fields if f.info)

    def decode_content(self, node, data):
        children = node.value
        n = len(children)
        i = 0
        out = {}
        for f in self.fields:
            if i < n and children[i].key in f.type.keys:
                value = f.type.decode_content(children[i], data)
                out[f.name] = value
                if f.info is not None:
                    extra = f.info[1](value)
                    if extra is not None:
                        out[f.info[0]] = extra
                i += 1
            elif not f.optional:
                raise Mismatch
        if i != n:
            raise Mismatch
        return out

    def encode(self, value, path):
        if not isinstance(value, dict):
            raise EncodeError(f"expected an object, got {type(value).__name__}", path)
        unknown = [k for k in value if k not in self.allowed]
        if unknown:
            raise EncodeError(f"unknown key {unknown[0]!r}", f"{path}.{unknown[0]}" if path else unknown[0])
        children = []
        for f in self.fields:
            fpath = f"{path}.{f.name}" if path else f.name
            v = value.get(f.name)
            if v is None and not (f.name in value and isinstance(f.type, Null)):
                if f.optional:
                    continue
                if not isinstance(f.type, Null):
                    raise EncodeError(f"missing field {f.name!r}", fpath)
            children.append(f.type.encode(v, fpath))
        return self._node(children)


class SeqOf(_Single):
    """SEQUENCE OF item -> list."""

    def __init__(self, item: Type):
        super().__init__(UNIVERSAL, True, T_SEQUENCE)
        self.item = item

    def decode_content(self, node, data):
        item = self.item
        keys = item.keys
        out = []
        for child in node.value:
            if child.key not in keys:
                raise Mismatch
            out.append(item.decode_content(child, data))
        return out

    def encode(self, value, path):
        if not isinstance(value, list):
            raise EncodeError(f"expected a list, got {type(value).__name__}", path)
        return self._node([self.item.encode(v, f"{path}.{i}") for i, v in enumerate(value)])


class Choice(Type):
    """CHOICE (or a named top-level value): `{alternative_name: value}` with exactly one key."""

    def __init__(self, *alternatives: tuple[str, Type]):
        self.alternatives = alternatives
        keys = set()
        for _, t in alternatives:
            if keys & t.keys:
                raise ValueError("CHOICE alternatives must have distinct tags")
            keys |= t.keys
        self.keys = frozenset(keys)
        self.by_name = dict(alternatives)

    def decode_content(self, node, data):
        key = node.key
        for name, t in self.alternatives:
            if key in t.keys:
                return {name: t.decode_content(node, data)}
        raise Mismatch

    def encode(self, value, path):
        if not isinstance(value, dict) or len(value) != 1:
            names = ", ".join(self.by_name)
            raise EncodeError(f"expected an object with exactly one of: {names}", path)
        name, v = next(iter(value.items()))
        if name not in self.by_name:
            raise EncodeError(f"unknown alternative {name!r} (expected one of: {', '.join(self.by_name)})",
                              f"{path}.{name}" if path else name)
        return self.by_name[name].encode(v, f"{path}.{name}" if path else name)


class Implicit(_Single):
    """[n] IMPLICIT inner: the context-specific tag replaces the inner type's tag."""

    def __init__(self, number: int, inner: _Single):
        if inner.tag is None:
            raise ValueError("IMPLICIT needs a single-tag inner type")
        super().__init__(CONTEXT, inner.tag[1], number)
        self.inner = inner

    def decode_content(self, node, data):
        return self.inner.decode_content(node, data)

    def encode(self, value, path):
        return self.inner.encode(value, path).retag(CONTEXT, self.tag[2])


class Asn1Schema(cs.Adapter):
    """A schema as a construct over one DER TLV: `parse` gives the named value (raising on a shape mismatch),
    `build` takes it back to bytes."""

    def __init__(self, schema: Type, long82: bool = False):
        super().__init__(der.DerTlv())
        self.schema = schema
        self.long82 = long82

    def _decode(self, obj, context, path):
        # positions in `obj` are relative to the stream; re-anchor them on the node's own bytes
        data = der.serialize(obj)
        obj = der.parse_der(data, 0, len(data), 0, ["asn1"])[0]
        if obj.key not in self.schema.keys:
            raise cs.MappingError("DER value does not match the schema", path=path)
        try:
            return self.schema.decode_content(obj, data)
        except Mismatch:
            raise cs.MappingError("DER value does not match the schema", path=path) from None

    def _encode(self, obj, context, path):
        node = self.schema.encode(obj, "")
        if self.long82 and isinstance(node, Tlv):
            return Raw(der.serialize(node, long82=True))
        return node
