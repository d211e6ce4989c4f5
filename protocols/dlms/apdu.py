"""The three DLMS APDUs GBCS carries (no association, no GET/SET-Request): Access-Request `D9` (commands),
Access-Response `DA` (responses) and Data-Notification `0F` (alerts), DLMS Green Book 9.5.

    D9 | long-invoke-id-and-priority (4) | date-time (octet-string, empty) | N specs | N Data
    DA | long-invoke-id-and-priority (4) | date-time | [access-request-specification] | N Data | N results
    0F | long-invoke-id-and-priority (4) | date-time | notification-body (Data)

The JSON form names classes, attributes and methods beside their numbers (informational keys, ignored by
`encode_apdu`).
"""
from __future__ import annotations

import construct as cs
from construct import Byte, Enum, Int8sb, Int8ub, Int16ub, Struct, Switch, this

from protocols import fast as _fast_backend
from protocols.dlms import cosem
from protocols.dlms.axdr import AxdrData
from protocols.dlms.obis import Obis
from protocols.errors import EncodeError
from protocols.prims import BerLength, End, Expect, HexBytes, HexPrefixed, Linked, Reject, build_value, compiled, parse_exact, to_jsonable

__all__ = ["AccessRequest", "AccessResponse", "DataNotification", "decode_apdu", "encode_apdu",
           "decode_apdu_declared", "encode_apdu_declared",
           "DATA_ACCESS_RESULT", "ACTION_RESULT", "access_request"]

ACCESS_REQUEST = 0xD9
ACCESS_RESPONSE = 0xDA
DATA_NOTIFICATION = 0x0F

SPEC_KIND = {"get": 1, "set": 2, "action": 3, "get-with-selection": 4, "set-with-selection": 5}

#: Data-Access-Result (Green Book 9.5): 0 success ... 250 other-reason.
DATA_ACCESS_RESULT = {
    "success": 0, "hardware-fault": 1, "temporary-failure": 2, "read-write-denied": 3, "object-undefined": 4,
    "object-class-inconsistent": 9, "object-unavailable": 11, "type-unmatched": 12, "scope-of-access-violated": 13,
    "data-block-unavailable": 14, "long-get-aborted": 15, "no-long-get-in-progress": 16,
    "long-set-aborted": 17, "no-long-set-in-progress": 18, "data-block-number-invalid": 19, "other-reason": 250,
}
#: Action-Result (Green Book 9.5).
ACTION_RESULT = {
    "success": 0, "hardware-fault": 1, "temporary-failure": 2, "read-write-denied": 3, "object-undefined": 4,
    "object-class-inconsistent": 9, "object-unavailable": 11, "type-unmatched": 12, "scope-of-access-violated": 13,
    "data-block-unavailable": 14, "long-action-aborted": 15, "no-long-action-in-progress": 16, "other-reason": 250,
}

InvokeIdAndPriority = HexBytes(cs.Bytes(4))

AttributeDescriptor = Struct(
    "class_id" / Int16ub,
    "instance_id" / Obis,
    "attribute_id" / Int8sb,
)
MethodDescriptor = Struct(
    "class_id" / Int16ub,
    "instance_id" / Obis,
    "method_id" / Int8sb,
)
SelectiveAccess = Struct(
    "selector" / Int8ub,
    "parameters" / AxdrData,
)

AccessRequestSpecification = Struct(
    "kind" / Enum(Byte, **SPEC_KIND),
    "descriptor" / Switch(this.kind, {
        "get": AttributeDescriptor, "set": AttributeDescriptor, "action": MethodDescriptor,
        "get-with-selection": AttributeDescriptor, "set-with-selection": AttributeDescriptor,
    }, default=Reject("unknown access-request-specification kind")),
    "access_selection" / Switch(this.kind, {"get-with-selection": SelectiveAccess,
                                            "set-with-selection": SelectiveAccess}, default=cs.Pass),
)

DataAccessResult = Enum(Byte, **DATA_ACCESS_RESULT)

AccessResult = Struct(
    "kind" / Enum(Byte, **SPEC_KIND),
    "result" / Switch(this.kind, {
        "action": Enum(Byte, **ACTION_RESULT), "get": DataAccessResult, "set": DataAccessResult,
        "get-with-selection": DataAccessResult, "set-with-selection": DataAccessResult,
    }, default=Reject("unknown access-response-specification kind")),
)

AccessRequest = Struct(
    Expect(bytes((ACCESS_REQUEST,)), "Access-Request tag"),
    "long_invoke_id_and_priority" / InvokeIdAndPriority,
    "date_time" / HexPrefixed(),
    "request_specifications" / cs.PrefixedArray(BerLength, AccessRequestSpecification),
    "data" / cs.PrefixedArray(BerLength, AxdrData),
    End,
)

AccessResponse = Struct(
    Expect(bytes((ACCESS_RESPONSE,)), "Access-Response tag"),
    "long_invoke_id_and_priority" / InvokeIdAndPriority,
    "date_time" / HexPrefixed(),
    "request_specifications" / Linked(cs.FocusedSeq(
        "value",
        "present" / cs.Rebuild(Int8ub, lambda ctx: 0 if ctx.value is None else 1),
        cs.Check(lambda ctx: ctx.present in (0, 1)),
        "value" / cs.If(this.present == 1, cs.PrefixedArray(BerLength, AccessRequestSpecification)),
    )),
    "data" / cs.PrefixedArray(BerLength, AxdrData),
    "results" / cs.PrefixedArray(BerLength, AccessResult),
    End,
)

DataNotification = Struct(
    Expect(bytes((DATA_NOTIFICATION,)), "Data-Notification tag"),
    "long_invoke_id_and_priority" / InvokeIdAndPriority,
    "date_time" / HexPrefixed(),
    "notification_body" / AxdrData,
    End,
)

#: tag -> (JSON name, declaration, compiled twin used for parsing)
APDUS = {
    ACCESS_REQUEST: ("access_request", AccessRequest, compiled(AccessRequest)),
    ACCESS_RESPONSE: ("access_response", AccessResponse, compiled(AccessResponse)),
    DATA_NOTIFICATION: ("data_notification", DataNotification, compiled(DataNotification)),
}
APDU_BY_NAME = {name: con for name, con, _ in APDUS.values()}

_INFO_KEYS = ("class_name", "attribute_name", "method_name")


def _name_descriptor(d: dict) -> None:
    """Add Blue Book names beside the numbers of an attribute or method descriptor (informational)."""
    cid = d["class_id"]
    name = cosem.class_name(cid)
    if name:
        d["class_name"] = name
    if "attribute_id" in d:
        an = cosem.attribute_name(cid, d["attribute_id"])
        if an:
            d["attribute_name"] = an
    elif "method_id" in d:
        mn = cosem.method_name(cid, d["method_id"])
        if mn:
            d["method_name"] = mn


def decode_apdu(data: bytes, *, base: int = 0, cra_flag: str | None = None, message_code: int | None = None) -> dict:
    """Decode a DLMS payload to `{<apdu name>: {...}}`. DecodeError names the field and absolute offset."""
    entry = APDUS.get(data[0]) if data else None
    if entry is None:
        from protocols.errors import DecodeError
        raise DecodeError(f"unknown DLMS APDU tag 0x{data[0]:02X}" if data else "empty DLMS payload", "dlms", base)
    name, con, fast = entry
    if _C is not None:
        value = _C.decode_dlms(data) if type(data) is bytes else None
    else:
        value = _decode_access_request_fast(data) if data[0] == ACCESS_REQUEST else None
    if value is None:
        value = to_jsonable(parse_exact(fast, data, field=f"dlms.{name}", base=base, slow=con))
    for spec in value.get("request_specifications") or ():
        _name_descriptor(spec["descriptor"])
    return {name: value}


def _strip(obj):
    """Drop informational names before building (they never affect the bytes)."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in _INFO_KEYS}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def encode_apdu(obj: dict, *, cra_flag: str | None = None, message_code: int | None = None) -> bytes:
    """Bytes of a DLMS payload JSON object (`{"access_request": {...}}` etc.)."""
    if not isinstance(obj, dict) or len(obj) != 1:
        raise EncodeError("DLMS payload must be one of access_request, access_response, data_notification",
                          "payload.dlms")
    name, value = next(iter(obj.items()))
    con = APDU_BY_NAME.get(name)
    if con is None:
        raise EncodeError(f"unknown DLMS APDU {name!r}", "payload.dlms")
    if name == "access_response":
        fast = _encode_access_response_fast(value)
        if fast is not None:
            return fast
    return build_value(con, _strip(value), field=f"payload.dlms.{name}")


def decode_apdu_declared(data: bytes, *, base: int = 0) -> dict:
    """`decode_apdu` by the declarations alone: the reference of the hand-written Access-Request parser."""
    entry = APDUS.get(data[0]) if data else None
    if entry is None:
        return decode_apdu(data, base=base)
    name, con, fast = entry
    value = to_jsonable(parse_exact(fast, data, field=f"dlms.{name}", base=base, slow=con))
    for spec in value.get("request_specifications") or ():
        _name_descriptor(spec["descriptor"])
    return {name: value}


def encode_apdu_declared(obj: dict) -> bytes:
    """`encode_apdu` by the declarations alone: the reference of the hand-built Access-Response."""
    name, value = next(iter(obj.items()))
    return build_value(APDU_BY_NAME[name], _strip(value), field=f"payload.dlms.{name}")


# -- hand-written fast paths ----------------------------------------------------------------------------------
#
# The Access-Request a command carries and the Access-Response a device answers are parsed and built on every
# DLMS round trip. Like protocols.gbcs.message's envelope fast paths they return exactly the declarations'
# result or None ("not sure": the declaration runs and produces every error); tests/test_fast_paths.py checks
# them against `decode_apdu_declared` / `encode_apdu_declared`.

_KIND_NAMES = {v: k for k, v in SPEC_KIND.items()}
_SELECTIVE = frozenset(("get-with-selection", "set-with-selection"))


def _ber(data: bytes, pos: int, end: int):
    if pos >= end:
        return None
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    if first == 0x81 and pos + 2 <= end and data[pos + 1] >= 0x80:
        return data[pos + 1], pos + 2
    if first == 0x82 and pos + 3 <= end:
        value = (data[pos + 1] << 8) | data[pos + 2]
        return (value, pos + 3) if value >= 0x100 else None
    return None


def _decode_access_request_fast(data: bytes) -> dict | None:
    """`decode_apdu(data)["access_request"]` of a well-formed Access-Request; None for anything else."""
    from protocols.dlms.axdr import parse_data
    from protocols.dlms.obis import obis_to_str
    end = len(data)
    if end < 8 or type(data) is not bytes:
        return None
    got = _ber(data, 5, end)
    if got is None or got[0] + got[1] > end:
        return None
    dt = data[got[1]:got[1] + got[0]].hex().upper()
    got = _ber(data, got[0] + got[1], end)
    if got is None:
        return None
    count, p = got
    specs = []
    try:
        for _ in range(count):
            if p + 10 > end:
                return None
            kind = _KIND_NAMES.get(data[p])
            if kind is None:
                return None
            cid = (data[p + 1] << 8) | data[p + 2]
            ident = data[p + 9]
            descriptor = {"class_id": cid, "instance_id": obis_to_str(data[p + 3:p + 9]),
                          ("method_id" if kind == "action" else "attribute_id"): ident - 256 if ident > 127 else ident}
            p += 10
            selection = None
            if kind in _SELECTIVE:
                if p >= end:
                    return None
                selector = data[p]
                params, p = parse_data(data, p + 1)
                selection = {"selector": selector, "parameters": params}
            _name_descriptor(descriptor)
            specs.append({"kind": kind, "descriptor": descriptor, "access_selection": selection})
        got = _ber(data, p, end)
        if got is None:
            return None
        count, p = got
        values = []
        for _ in range(count):
            value, p = parse_data(data, p)
            values.append(value)
    except Exception:                                   # noqa: BLE001 - the declaration reports it
        return None
    if p != end:
        return None
    return {"long_invoke_id_and_priority": data[1:5].hex().upper(), "date_time": dt,
            "request_specifications": specs, "data": values}


def _encode_access_response_fast(v) -> bytes | None:
    """`encode_apdu({"access_response": v})` for the shape `CosemServer.access` returns (no
    request-specifications echoed, results by name); None when unsure."""
    from protocols.dlms.axdr import build_data
    from protocols.prims import ber_length_bytes
    if type(v) is not dict or v.get("request_specifications", 0) is not None:
        return None
    invoke, dt, data, results = (v.get("long_invoke_id_and_priority"), v.get("date_time"), v.get("data"),
                                 v.get("results"))
    if type(invoke) is not str or type(dt) is not str or type(data) is not list or type(results) is not list:
        return None
    try:
        invoke_b, dt_b = bytes.fromhex(invoke), bytes.fromhex(dt)
    except ValueError:
        return None
    if len(invoke_b) != 4 or len(dt_b) > 0xFFFF or len(data) > 0xFFFF or len(results) > 0xFFFF:
        return None
    out = bytearray(b"\xDA")
    out += invoke_b
    out += ber_length_bytes(len(dt_b))
    out += dt_b
    out.append(0)
    out += ber_length_bytes(len(data))
    try:
        for d in data:
            out += build_data(d)
    except Exception:                                   # noqa: BLE001 - the declaration reports it
        return None
    out += ber_length_bytes(len(results))
    for r in results:
        if type(r) is not dict:
            return None
        kind, result = r.get("kind"), r.get("result")
        code = SPEC_KIND.get(kind) if type(kind) is str else None
        table = ACTION_RESULT if kind == "action" else DATA_ACCESS_RESULT
        value = table.get(result) if type(result) is str else None
        if code is None or value is None:
            return None
        out.append(code)
        out.append(value)
    return bytes(out)


# The C twin of the decoders above (protocols/fast.py; csrc/_gbcs_fast.c `decode_dlms`: Access-Request,
# Access-Response and Data-Notification), same contract; it gets its name tables from here.
_C = _fast_backend.C
if _C is not None:
    _C.set_tables("kind_names", _KIND_NAMES)
    _C.set_tables("access_results", {v: k for k, v in DATA_ACCESS_RESULT.items()})
    _C.set_tables("action_results", {v: k for k, v in ACTION_RESULT.items()})


def access_request(*specs: tuple) -> dict:
    """The JSON form of an Access-Request, as head ends send it (long invoke id and priority 0x20000000, no
    date-time), from `(kind, class_id, obis, index, data)` tuples: kind `get`, `set` or `action`; index the
    attribute or method id; data None for null-data."""
    request_specs, data = [], []
    for kind, class_id, obis, index, value in specs:
        descriptor = {"class_id": class_id, "instance_id": obis,
                      ("method_id" if kind == "action" else "attribute_id"): index}
        request_specs.append({"kind": kind, "descriptor": descriptor, "access_selection": None})
        data.append(value if value is not None else {"type": "null-data", "value": None})
    return {"access_request": {"long_invoke_id_and_priority": "20000000", "date_time": "",
                               "request_specifications": request_specs, "data": data}}
