"""A whole GBCS message: bytes <-> the documented JSON form (docs/json-format.md).

Layers, outermost first: optional General-Ciphering MAC header (`DD`), the General-Signing grouping header
(`DF`), the payload (DLMS, GBZ or ASN.1, told apart by its first bytes), the optional signature and the MAC.
A GBT block (`DD` with filled routing fields and an `E0` APDU) decodes to `gbt_block` instead.

Each layer is parsed by its own construct declaration over exactly its own bytes; errors carry the offset in
the whole message. Informational keys that `decode` adds (names) are ignored by `encode`.
"""
from __future__ import annotations

from typing import Callable

from protocols.errors import DecodeError, EncodeError
from protocols.gbcs import envelope as env
from protocols.gbcs.registry import REGISTRY
from protocols.prims import build_value, parse_exact, to_jsonable

__all__ = ["decode", "encode", "split_payload", "payload_family", "PAYLOAD_FAMILIES"]

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
    raw payload (security, devices) without decoding it. The payload is None for a GBT block."""
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


def encode_grouping_header(gh: dict, content: bytes, signature) -> bytes:
    """The General-Signing APDU bytes (`DF` through the signature, or through the payload when `signature`
    is None: a pre-command)."""
    if not isinstance(gh, dict):
        raise EncodeError("grouping_header must be an object", "grouping_header")
    oi = gh.get("other_information") or {}
    obj = {
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
    return build_value(env.GeneralSigning, obj, field="grouping_header")


def wrap_mac_header(signing: bytes, mac: bytes | str, header: dict | None = None) -> bytes:
    """Wrap a General-Signing APDU in the General-Ciphering MAC header."""
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

