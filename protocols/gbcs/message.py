"""A whole GBCS message: bytes <-> the documented JSON form (docs/json-format.md).

Layers, outermost first: optional General-Ciphering MAC header (`DD`), the General-Signing grouping header
(`DF`), the payload (DLMS, GBZ or ASN.1, told apart by its first bytes), the optional signature and the MAC.
A GBT block (`DD` with filled routing fields and an `E0` APDU) decodes to `gbt_block` instead.

Each layer is parsed by its own construct declaration over exactly its own bytes; errors carry the offset in
the whole message. Informational keys that `decode` adds (names) are ignored by `encode`.
"""
from __future__ import annotations

from typing import Callable

from protocols import fast as _fast_backend
from protocols.errors import DecodeError, EncodeError
from protocols.gbcs import envelope as env
from protocols.gbcs.registry import REGISTRY
from protocols.prims import ber_length_bytes, build_value, parse_exact, to_jsonable

__all__ = ["decode", "encode", "split_payload", "split_payload_declared", "payload_family", "PAYLOAD_FAMILIES",
           "encode_grouping_header", "encode_grouping_header_declared", "wrap_mac_header",
           "wrap_mac_header_declared", "alert_code", "code_value"]

DLMS_TAGS = frozenset((0xD9, 0xDA, 0x0F))
GBZ_PROFILE = b"\x01\x09"

_GC_FIELDS = ("transaction_id", "originator_system_title", "recipient_system_title", "date_time",
              "other_information")


def payload_family(content: bytes, message_code: int | None = None) -> str:
    """Which payload family `content` is: `dlms` (D9/DA/0F), `gbz` (profile 01 09) or `asn1` (anything else).

    The first bytes decide alone: no ASN.1 payload GBCS defines can start with those bytes, and a payload of
    the wrong family for its message code is a device error that the device layer reports, not the codec.
    `message_code` is accepted for callers that have it and is not needed."""
    if content[:1] and content[0] in DLMS_TAGS:
        return "dlms"
    if content[:2] == GBZ_PROFILE:
        return "gbz"
    return "asn1"


_CODEC_MODULES = {
    "dlms": ("protocols.dlms.apdu", "decode_apdu", "encode_apdu"),
    "gbz": ("protocols.zigbee.gbz", "decode_gbz", "encode_gbz"),
    "asn1": ("protocols.asn1.payloads", "decode_asn1", "encode_asn1"),
}
_CODECS: dict[str, tuple[Callable, Callable]] = {}


def _codec(family: str) -> tuple[Callable, Callable]:
    """(decode, encode) of a payload family, imported on first use."""
    codec = _CODECS.get(family)
    if codec is None:
        import importlib
        module, dec, enc = _CODEC_MODULES[family]
        mod = importlib.import_module(module)
        codec = _CODECS[family] = (getattr(mod, dec), getattr(mod, enc))
    return codec


PAYLOAD_FAMILIES = ("dlms", "gbz", "asn1")


def _grouping_header_json(gs) -> dict:
    other = gs.other_information
    code = other.message_code
    oi = {"message_code": f"0x{code:04X}"}
    entry = REGISTRY.get(code)
    if entry is not None:
        oi["use_case"] = entry.name
    for key in ("supplementary_remote_party_id", "supplementary_remote_party_counter",
                "supplementary_originator_counter", "supplementary_remote_party_ka_certificate"):
        if other[key] is not None:
            oi[key] = other[key]
    return {
        "cra_flag": str(gs.transaction_id.cra_flag),
        "originator_counter": gs.transaction_id.originator_counter,
        "originator": gs.originator,
        "recipient": gs.recipient,
        "date_time": to_jsonable(gs.date_time),
        "other_information": oi,
    }


def split_payload(data: bytes) -> tuple[dict, bytes | None, int]:
    """(decoded envelope without payload, payload bytes, payload offset in `data`): for layers that need the
    raw payload (security, devices) without decoding it. The payload is None for a GBT block.

    The common shapes (a MAC'd `DD` around a `DF`, or a bare `DF`) go through a hand-written parser
    (`_split_fast`) that returns exactly what the declarations give; anything it does not recognise as well
    formed (a GBT block, filled General-Ciphering fields, any error) is parsed by the declarations
    (`split_payload_declared`), so errors are always theirs."""
    if type(data) is not bytes:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise DecodeError(f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
    fast = _C.split_envelope(data) if _C is not None else _split_fast(data)
    if fast is not None:
        return fast
    return split_payload_declared(data)


# -- hand-written fast paths ------------------------------------------------------------------------------------
#
# Theory of operation: the envelope is parsed (and, for responses and alerts, built) several times per frame,
# so its two common shapes are hand-coded over offsets into the message, the way `prims.BufferConstruct` pieces
# are. They never decide anything the declarations would not: a fast parser either returns exactly the
# declared result or None ("not sure"), and the caller then runs the declaration, which also produces every
# error. A fast builder likewise returns the declared bytes or None. tests/test_fast_paths.py checks both
# against the declarations over every RTDS message and hypothesis-generated and mutated ones.

_CRA_NAMES = {v: k for k, v in env.CRA_FLAG.items()}

# The C twin of `_split_fast` (protocols/fast.py; csrc/_gbcs_fast.c `split_envelope`), same contract.
_C = _fast_backend.C
if _C is not None:
    _C.set_tables("cra_names", _CRA_NAMES)
    _C.set_tables("use_cases", {code: REGISTRY.get(code).name for code in {e.code for e in REGISTRY}})
_DD_EMPTY_FIELDS = bytes(6)        # five empty General-Ciphering fields and the absent key-info
_SUPPLEMENTARY = ("supplementary_remote_party_id", "supplementary_remote_party_counter",
                  "supplementary_originator_counter", "supplementary_remote_party_ka_certificate")


def _ber(data: bytes, pos: int, end: int) -> tuple[int, int] | None:
    """A minimal A-XDR length at `pos` (forms 00..7F, 81 nn, 82 nnnn), or None for anything else."""
    if pos >= end:
        return None
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    if first == 0x81:
        if pos + 2 > end or data[pos + 1] < 0x80:
            return None
        return data[pos + 1], pos + 2
    if first == 0x82:
        if pos + 3 > end:
            return None
        value = (data[pos + 1] << 8) | data[pos + 2]
        return (value, pos + 3) if value >= 0x100 else None
    return None


def _dlms_datetime(b: bytes) -> dict:
    """`to_jsonable(DlmsDateTime.parse(b))` for 12 bytes."""
    dev = (b[9] << 8) | b[10]
    return {"year": (b[0] << 8) | b[1], "month": b[2], "day_of_month": b[3], "day_of_week": b[4], "hour": b[5],
            "minute": b[6], "second": b[7], "hundredths": b[8], "deviation": dev - 0x10000 if dev & 0x8000 else dev,
            "clock_status": b[11]}


def _split_fast(data: bytes) -> tuple[dict, bytes, int] | None:
    """`split_payload` for a well-formed MAC'd `DD`/`DF` or bare `DF` message; None for anything else."""
    n = len(data)
    if n < 33:
        return None
    out: dict = {}
    tag = data[0]
    if tag == 0xDD:
        if data[1:7] != _DD_EMPTY_FIELDS:
            return None
        got = _ber(data, 7, n)
        if got is None or got[0] + got[1] != n or got[0] < 5 + 1 + env.MAC_LENGTH:
            return None
        p = got[1]
        start, end = p + 5, n - env.MAC_LENGTH
        if data[start] != 0xDF:
            return None
        out["mac_header"] = {"security_header": {"security_control": data[p],
                                                 "invocation_counter": int.from_bytes(data[p + 1:p + 5], "big")},
                             "mac": data[end:].hex().upper()}
    elif tag == 0xDF:
        start, end = 0, n
    else:
        return None
    p = start
    if end - p < 33 or data[p + 1] != 9 or data[p + 11] != 8 or data[p + 20] != 8:
        return None
    cra = _CRA_NAMES.get(data[p + 2])
    if cra is None:
        return None
    counter = int.from_bytes(data[p + 3:p + 11], "big")
    originator = data[p + 12:p + 20].hex().upper()
    recipient = data[p + 21:p + 29].hex().upper()
    p += 29
    if data[p] == 0:
        date_time = None
        p += 1
    elif data[p] == 12 and p + 13 <= end:
        date_time = _dlms_datetime(data[p + 1:p + 13])
        p += 13
    else:
        return None
    got = _ber(data, p, end)
    if got is None:
        return None
    size, q = got
    oi_end = q + size
    if oi_end > end or size < 2 or not (size in (2, 10, 18, 26) or size > 26):
        return None
    code = (data[q] << 8) | data[q + 1]
    oi = {"message_code": f"0x{code:04X}"}
    entry = REGISTRY.get(code)
    if entry is not None:
        oi["use_case"] = entry.name
    if size >= 10:
        oi["supplementary_remote_party_id"] = data[q + 2:q + 10].hex().upper()
    if size >= 18:
        oi["supplementary_remote_party_counter"] = int.from_bytes(data[q + 10:q + 18], "big")
    if size == 26:
        oi["supplementary_originator_counter"] = int.from_bytes(data[q + 18:q + 26], "big")
    elif size > 26:
        oi["supplementary_remote_party_ka_certificate"] = data[q + 18:oi_end].hex().upper()
    got = _ber(data, oi_end, end)
    if got is None:
        return None
    size, c0 = got
    c1 = c0 + size
    if c1 == end:
        sig = None
    elif c1 + 1 == end and data[c1] == 0:
        sig = ""
    elif c1 + 1 + env.SIGNATURE_LENGTH == end and data[c1] == env.SIGNATURE_LENGTH:
        sig = data[c1 + 1:end].hex().upper()
    else:
        return None
    out["grouping_header"] = {"cra_flag": cra, "originator_counter": counter, "originator": originator,
                              "recipient": recipient, "date_time": date_time, "other_information": oi}
    out["signature"] = sig
    return out, data[c0:c1], c0


def _u(value, limit: int) -> bool:
    """An int (not a bool) in 0 .. limit-1."""
    return type(value) is int and 0 <= value < limit


def _eui_bytes(value) -> bytes | None:
    if type(value) is not str or len(value) != 16:
        return None
    try:
        b = bytes.fromhex(value)
    except ValueError:
        return None
    return b if len(b) == 8 else None


_DT_KEYS = ("year", "month", "day_of_month", "day_of_week", "hour", "minute", "second", "hundredths", "deviation",
            "clock_status")


def _build_signing_fast(obj: dict) -> bytes | None:
    """`build_value(env.GeneralSigning, obj)` for the shapes devices build; None when unsure."""
    tid = obj["transaction_id"]
    cra = env.CRA_FLAG.get(tid["cra_flag"]) if type(tid["cra_flag"]) is str else None
    counter = tid["originator_counter"]
    originator, recipient = _eui_bytes(obj["originator"]), _eui_bytes(obj["recipient"])
    if cra is None or not _u(counter, 1 << 64) or originator is None or recipient is None:
        return None
    out = bytearray(b"\xDF\x09")
    out.append(cra)
    out += counter.to_bytes(8, "big")
    out += b"\x08"
    out += originator
    out += b"\x08"
    out += recipient
    dt = obj["date_time"]
    if dt is None:
        out.append(0)
    else:
        if type(dt) is not dict or len(dt) != len(_DT_KEYS):
            return None
        vals = [dt.get(k) for k in _DT_KEYS]
        if not (_u(vals[0], 1 << 16) and all(_u(v, 256) for v in vals[1:8]) and _u(vals[9], 256)
                and type(vals[8]) is int and -0x8000 <= vals[8] < 0x8000):
            return None
        out.append(12)
        out += vals[0].to_bytes(2, "big")
        out += bytes(vals[1:8])
        out += vals[8].to_bytes(2, "big", signed=True)
        out.append(vals[9])
    oi = obj["other_information"]
    code = oi["message_code"]
    if not _u(code, 1 << 16):
        return None
    info = bytearray(code.to_bytes(2, "big"))
    rp_id, rp_counter, o_counter, cert = (oi[k] for k in _SUPPLEMENTARY)
    if rp_id is not None:
        b = _eui_bytes(rp_id)
        if b is None:
            return None
        info += b
    for c in (rp_counter, o_counter):
        if c is not None:
            if not _u(c, 1 << 64):
                return None
            info += c.to_bytes(8, "big")
    if cert is not None:
        if type(cert) is not str:
            return None
        try:
            info += bytes.fromhex(cert)
        except ValueError:
            return None
    content = obj["content"]
    if type(content) is not bytes or len(content) > 0xFFFF or len(info) > 0xFFFF:
        return None
    out += ber_length_bytes(len(info))
    out += info
    out += ber_length_bytes(len(content))
    out += content
    sig = obj["signature"]
    if sig is None:
        pass
    elif sig == "":
        out.append(0)
    elif type(sig) is str and len(sig) == 2 * env.SIGNATURE_LENGTH:
        try:
            raw = bytes.fromhex(sig)
        except ValueError:
            return None
        if len(raw) != env.SIGNATURE_LENGTH:
            return None
        out += b"\x40"
        out += raw
    else:
        return None
    return bytes(out)


def split_payload_declared(data: bytes) -> tuple[dict, bytes | None, int]:
    """`split_payload` by the construct declarations alone: the reference the fast path is tested against."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise DecodeError("empty message", "", 0)
    out: dict = {}
    tag = data[0]
    if tag == env.GENERAL_CIPHERING_TAG:
        gc = parse_exact(env.GeneralCipheringFast, data, field="general_ciphering", slow=env.GeneralCiphering)
        cc = gc.ciphered_content
        body = bytes.fromhex(cc.body)
        body_offset = len(data) - len(body)
        header = {k: gc[k] for k in _GC_FIELDS if gc[k]}
        header["security_header"] = to_jsonable(cc.security_header)
        if body[:1] == bytes((env.GBT_TAG,)):
            gbt = parse_exact(env.GbtApdu, body, field="gbt_block", base=body_offset)
            header.update(to_jsonable(gbt))
            out["gbt_block"] = header
            return out, None, body_offset
        if len(gc.transaction_id) or body[:1] != bytes((env.GENERAL_SIGNING_TAG,)):
            raise DecodeError("General-Ciphering must carry a General-Signing APDU (DF) or a GBT block (E0)",
                              "general_ciphering.ciphered_content", body_offset)
        if len(body) < 1 + env.MAC_LENGTH:
            raise DecodeError("ciphered content shorter than a MAC", "general_ciphering.ciphered_content",
                              body_offset)
        header["mac"] = body[-env.MAC_LENGTH:].hex().upper()
        out["mac_header"] = header
        signing, signing_offset = body[:-env.MAC_LENGTH], body_offset
    elif tag == env.GENERAL_SIGNING_TAG:
        signing, signing_offset = data, 0
    else:
        raise DecodeError(f"unknown message tag 0x{tag:02X} (expected DD or DF)", "tag", 0)
    gs = parse_exact(env.GeneralSigningFast, signing, field="grouping_header", base=signing_offset,
                     slow=env.GeneralSigning)
    content = bytes.fromhex(gs.content)
    sig = gs.signature
    tail = 0 if sig is None else 1 + len(sig) // 2
    content_offset = signing_offset + len(signing) - tail - len(content)
    out["grouping_header"] = _grouping_header_json(gs)
    out["signature"] = sig
    return out, content, content_offset


def decode(data: bytes) -> dict:
    """Decode one GBCS message to its JSON form. Raises DecodeError (field path, byte offset) on bad input."""
    msg, content, offset = split_payload(data)
    if content is None:
        return msg
    code = int(msg["grouping_header"]["other_information"]["message_code"], 16)
    family = payload_family(content, code)
    decoder = _codec(family)[0]
    cra = msg["grouping_header"]["cra_flag"]
    payload = decoder(content, base=offset, cra_flag=cra, message_code=code)
    ordered = {}
    if "mac_header" in msg:
        ordered["mac_header"] = msg["mac_header"]
    ordered["grouping_header"] = msg["grouping_header"]
    ordered["payload"] = {family: payload}
    ordered["signature"] = msg["signature"]
    return ordered


def _int(value, field: str) -> int:
    if isinstance(value, bool):
        raise EncodeError("expected an integer", field)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            pass
    raise EncodeError(f"expected an integer or a 0x string, got {value!r}", field)


def _message_code(oi: dict) -> int:
    if "message_code" in oi:
        return _int(oi["message_code"], "grouping_header.other_information.message_code")
    if "use_case" in oi:
        entry = REGISTRY.by_name(oi["use_case"])
        if entry is None:
            raise EncodeError(f"unknown use case {oi['use_case']!r}", "grouping_header.other_information.use_case")
        return entry.code
    raise EncodeError("message_code missing", "grouping_header.other_information")


def encode_payload(payload: dict, *, cra_flag: str = "command", message_code: int | None = None) -> bytes:
    """The payload bytes of a `payload` JSON object ({family: value})."""
    if not isinstance(payload, dict) or len(payload) != 1:
        raise EncodeError("payload must be an object with exactly one of dlms, gbz, asn1", "payload")
    family, value = next(iter(payload.items()))
    if family not in PAYLOAD_FAMILIES:
        raise EncodeError(f"unknown payload family {family!r}", "payload")
    return _codec(family)[1](value, cra_flag=cra_flag, message_code=message_code)


def _signing_obj(gh: dict, content: bytes, signature) -> dict:
    if not isinstance(gh, dict):
        raise EncodeError("grouping_header must be an object", "grouping_header")
    oi = gh.get("other_information") or {}
    return {
        "transaction_id": {"cra_flag": gh.get("cra_flag"),
                           "originator_counter": _int(gh.get("originator_counter"),
                                                      "grouping_header.originator_counter")},
        "originator": gh.get("originator"),
        "recipient": gh.get("recipient"),
        "date_time": gh.get("date_time"),
        "other_information": {
            "message_code": _message_code(oi),
            "supplementary_remote_party_id": oi.get("supplementary_remote_party_id"),
            "supplementary_remote_party_counter": oi.get("supplementary_remote_party_counter"),
            "supplementary_originator_counter": oi.get("supplementary_originator_counter"),
            "supplementary_remote_party_ka_certificate": oi.get("supplementary_remote_party_ka_certificate"),
        },
        "content": content,
        "signature": signature,
    }


def encode_grouping_header(gh: dict, content: bytes, signature) -> bytes:
    """The General-Signing APDU bytes (`DF` through the signature, or through the payload when `signature`
    is None: a pre-command). Common shapes are built by hand (`_build_signing_fast`, same bytes), the rest
    by the declaration."""
    obj = _signing_obj(gh, content, signature)
    fast = _build_signing_fast(obj)
    if fast is not None:
        return fast
    return build_value(env.GeneralSigning, obj, field="grouping_header")


def encode_grouping_header_declared(gh: dict, content: bytes, signature) -> bytes:
    """`encode_grouping_header` by the declaration alone: the reference of the hand-built path."""
    return build_value(env.GeneralSigning, _signing_obj(gh, content, signature), field="grouping_header")


def wrap_mac_header(signing: bytes, mac: bytes | str, header: dict | None = None) -> bytes:
    """Wrap a General-Signing APDU in the General-Ciphering MAC header (built by hand when no header fields
    are given: the declaration's bytes, see tests/test_fast_paths.py)."""
    if not header and type(signing) is bytes and type(mac) is bytes and len(mac) == env.MAC_LENGTH:
        body = 5 + len(signing) + env.MAC_LENGTH
        return b"".join((b"\xDD\x00\x00\x00\x00\x00\x00", ber_length_bytes(body),
                         b"\x11\x00\x00\x00\x00", signing, mac))
    return wrap_mac_header_declared(signing, mac, header)


def wrap_mac_header_declared(signing: bytes, mac: bytes | str, header: dict | None = None) -> bytes:
    """`wrap_mac_header` by the declaration alone."""
    header = header or {}
    mac = bytes.fromhex(mac) if isinstance(mac, str) else bytes(mac)
    if len(mac) != env.MAC_LENGTH:
        raise EncodeError(f"MAC must be {env.MAC_LENGTH} bytes", "mac_header.mac")
    sh = header.get("security_header") or {"security_control": env.SC_AUTHENTICATED, "invocation_counter": 0}
    obj = {k: header.get(k, "") for k in _GC_FIELDS}
    obj["ciphered_content"] = {"security_header": sh, "body": signing + mac}
    return build_value(env.GeneralCiphering, obj, field="mac_header")


def mac_aad(signing: bytes) -> bytes:
    """The GMAC additional data of a MAC'd message: `11 00 00 00 00 00` + the General-Signing APDU."""
    return bytes((env.SC_AUTHENTICATED,)) + bytes(5) + signing


def encode(msg: dict) -> bytes:
    """Encode the JSON form back to bytes: the exact inverse of `decode`."""
    if not isinstance(msg, dict):
        raise EncodeError("message must be an object")
    if "gbt_block" in msg:
        blk = msg["gbt_block"]
        gbt = build_value(env.GbtApdu, blk, field="gbt_block")
        obj = {k: blk.get(k, "") for k in _GC_FIELDS}
        obj["ciphered_content"] = {"security_header": blk.get("security_header"), "body": gbt}
        return build_value(env.GeneralCiphering, obj, field="gbt_block")
    gh = msg.get("grouping_header")
    if gh is None:
        raise EncodeError("grouping_header missing")
    code = _message_code(gh.get("other_information") or {})
    content = encode_payload(msg.get("payload"), cra_flag=gh.get("cra_flag", "command"), message_code=code)
    signing = encode_grouping_header(gh, content, msg.get("signature"))
    if "mac_header" in msg:
        mh = msg["mac_header"] or {}
        return wrap_mac_header(signing, mh.get("mac", ""), mh)
    return signing


# ------------------------------------------------------------------------------------------------ alerts

def code_value(value) -> int | None:
    """A message or alert code given as an integer or as hex text ("0x8F53", "8F53"); None otherwise."""
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 16)
        except ValueError:
            return None
    return None


def alert_code(msg: dict) -> int | None:
    """The alert code an alert carries, whatever its payload family (None when it has none)."""
    payload = msg.get("payload") or {}
    if "dlms" in payload:
        dn = payload["dlms"].get("data_notification") or {}
        body = dn.get("notification_body") or {}
        items = body.get("value") if body.get("type") == "structure" else None
        if items and isinstance(items[0], dict) and isinstance(items[0].get("value"), int):
            return items[0]["value"]
        return None
    if "gbz" in payload:
        return code_value(payload["gbz"].get("alert_code"))
    if "asn1" in payload:
        value = payload["asn1"].get("value")
        if isinstance(value, dict):
            return code_value(value.get("alert_code"))
    return None
