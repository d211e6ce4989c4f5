"""GBZ: the ZigBee SE payload of GSME, GPF and PPMID messages (GBCS 7.2 / brief 2.2, 6), bytes <-> JSON.

Commands and responses::

    01 09 | n | n x component
    component = ctl (1) | cluster (2, BE) | length (2, BE) | [from date time (4, BE)]            (ctl bit 4)
                | [additional header control (1) | frame counter (1)]                          (ctl bit 1)
                | ZCL header: frame control (1) [manufacturer code (2, LE)] sequence no. (1) command id (1)
                | ZCL payload (LE)     or, when encrypted (ctl bit 1):
                | ciphered length (2, BE) | security control (1) | invocation counter (4, BE) | ciphertext | tag (12)

    ctl: bit 0 last component (only on the final one), bit 1 encrypted, bit 4 From Date Time present; the
    other bits are kept as `reserved` (ctl & 0xEC) so every byte round-trips. When both bit 4 and bit 1 are
    set, the From Date Time comes first (the order of the extended header fields in GBCS).

Alerts (CRA flag 3)::

    01 09 | n | alert code (2, BE) | timestamp (4, BE, UTC s since 2000) | body
    body: 00CD future-dated outcome: len (1) = 14 | message code (2) | originator counter (8) | cluster (2) |
                                     frame control (1) | [manufacturer code (2)] | command id (1)   (all BE)
          00CF firmware distribution receipt: 09 | length | calculated manufacturer hash (DLMS octet string)
          00F2 meter integrity issue warning: reason (2, BE)
          anything else (1000/1001 generic alerts, 008B GCS53): n components, as above

    The body form is chosen by the message code when the caller knows it, else by the alert code (8F66/8F67,
    8F72, 81A0). For the three special forms `n` is kept as `number_of_components`.

JSON (see `decode_gbz`): byte strings are upper-case hex, names (`cluster_name`, `command_name`,
`attribute_name`, `status_name`, `*_iso`) are informational and ignored by `encode_gbz`. Every input that
decodes re-encodes to the same bytes; anything else raises DecodeError(field path, absolute offset).
"""
from __future__ import annotations

import struct
import time
from typing import NamedTuple

import construct as cs

from protocols import fast as _fast_backend
from protocols.errors import DecodeError, EncodeError
from protocols.prims import FieldError, ber_length_bytes, build_value, parse_exact, read_ber_length, to_jsonable
from protocols.zigbee import zcl
from protocols.zigbee.clusters import (
    CLUSTERS, STATUS_NAMES, attribute_name, cluster_command, cluster_name,
)
from protocols.zigbee.zcl import DIRECTIONS, GLOBAL_COMMANDS, build_frame_control, parse_frame_control

__all__ = ["decode_gbz", "encode_gbz", "decode_zcl_payload", "encode_zcl_payload", "command_name", "INFO_KEYS",
           "GBZ_PROFILE", "ALERT_FORM_BY_MESSAGE_CODE", "ALERT_FORM_BY_ALERT_CODE", "TAG_LENGTH"]

GBZ_PROFILE = b"\x01\x09"
TAG_LENGTH = 12
SECURITY_HEADER_LENGTH = 5
EPOCH_2000 = 946684800  # 2000-01-01T00:00:00Z in Unix seconds

CTL_LAST, CTL_ENCRYPTED, CTL_FROM_DATE_TIME = 0x01, 0x02, 0x10
CTL_RESERVED = 0xFF & ~(CTL_LAST | CTL_ENCRYPTED | CTL_FROM_DATE_TIME)

#: The informational keys `decode_gbz` adds beside the numbers they describe; `encode_gbz` ignores them.
INFO_KEYS = frozenset({"cluster_name", "command_name", "attribute_name", "status_name", "reason_name",
                       "from_date_time_iso", "timestamp_iso"})

FUTURE_DATED, FIRMWARE_RECEIPT, INTEGRITY_WARNING, COMPONENTS = (
    "future_dated_instruction", "calculated_manufacturer_hash", "meter_integrity_issue_warning", "components")
#: Alert payload body forms by GBCS message code (known from the grouping header)...
ALERT_FORM_BY_MESSAGE_CODE = {0x00CD: FUTURE_DATED, 0x00CF: FIRMWARE_RECEIPT, 0x00F2: INTEGRITY_WARNING}
#: ...and by alert code, when the message code is not known.
ALERT_FORM_BY_ALERT_CODE = {0x8F66: FUTURE_DATED, 0x8F67: FUTURE_DATED, 0x8F72: FIRMWARE_RECEIPT,
                            0x81A0: INTEGRITY_WARNING}
#: Meter Integrity Issue Warning "other info" (GBCS 16).
INTEGRITY_REASONS = {
    0x0000: "Other", 0x0001: "Error Non Volatile Memory", 0x0002: "Error Program Execution",
    0x0003: "Error Program Storage", 0x0004: "Error RAM", 0x0005: "Error Unexpected Hardware Reset",
    0x0006: "Error Watchdog", 0x0007: "Error Metrology Firmware Verification Failure",
    0x0008: "Error Measurement Fault", 0x0009: "Unspecified Smart Meter Operational Integrity Error",
}
DLMS_OCTET_STRING = 0x09
FUTURE_DATED_LENGTH = 14

#: Keep a last-resort net that turns an unexpected Python error into DecodeError (tests switch it off to
#: surface bugs instead of hiding them).
SAFETY_NET = True

_U32BE = struct.Struct(">I")


def _err(msg: str, offset: int, path: str = "") -> FieldError:
    return FieldError(msg, path, offset)


def _iso(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(EPOCH_2000 + seconds))


# ============================================================================================ payloads

class _Spec(NamedTuple):
    name: str | None
    con: cs.Construct | None        # declaration (builds); None = layout unknown -> {"raw": hex}
    fast: object | None             # parser derived from `con` (None -> construct fallback)
    kind: str | None                # "global" | "cluster" | None


_RAW = _Spec(None, None, None, None)
_SPECS: dict[tuple, _Spec] = {}
_FAST: dict[int, object] = {}
_COMPILED: dict[int, cs.Construct] = {}


def _fast_for(con):
    if con is None:
        return None
    key = id(con)
    if key not in _FAST:
        _FAST[key] = zcl.fast_parser(con)
    return _FAST[key]


def _make_spec(cluster: int, fc: int, cmd: int) -> _Spec:
    ft = fc & 3
    if ft == 0:
        g = GLOBAL_COMMANDS.get(cmd)
        if g is None:
            return _RAW
        return _Spec(g.name, g.payload, _fast_for(g.payload), "global")
    if ft == 1:
        if fc & 4:  # manufacturer-specific cluster command: layout unknown
            return _RAW
        c = cluster_command(cluster, DIRECTIONS[(fc >> 3) & 1], cmd)
        if c is not None:
            return _Spec(c.name, c.payload, _fast_for(c.payload), "cluster")
    return _RAW


def _spec(cluster: int, fc: int, cmd: int) -> _Spec:
    if fc & 3 == 0:
        key = (None, fc & 0x0F, cmd)  # general commands: the layout does not depend on the cluster
    elif cluster in CLUSTERS:
        key = (cluster, fc & 0x0F, cmd)
    else:
        return _RAW  # unknown cluster: never cached, so hostile input cannot grow the cache
    s = _SPECS.get(key)
    if s is None:
        s = _SPECS[key] = _make_spec(cluster, fc, cmd)
    return s


def command_name(cluster: int, frame_control: int, command_id: int) -> str | None:
    """The name of the ZCL command `command_id` under this frame control byte, if known."""
    return _spec(cluster, frame_control, command_id).name


def _named(rec: dict, cluster: int | None) -> dict:
    """A record with `attribute_name` / `status_name` inserted after the numbers they name."""
    out = {}
    for k, v in rec.items():
        out[k] = v
        if k == "attribute_id" and cluster is not None:
            n = attribute_name(cluster, v)
            if n:
                out["attribute_name"] = n
        elif k == "status":
            n = STATUS_NAMES.get(v)
            if n:
                out["status_name"] = n
    return out


def _annotate(value: dict, spec: _Spec, cluster: int, fc: int) -> dict:
    if spec.kind != "global":
        return value
    names_cluster = None if fc & 4 else cluster
    if spec.name == "Default Response":  # name the command it answers (sent the other way)
        cmd_ref = value["command_id"]
        out = {"command_id": cmd_ref}
        other = DIRECTIONS[((fc >> 3) & 1) ^ 1]
        c = cluster_command(cluster, other, cmd_ref)
        if c is not None:
            out["command_name"] = c.name
        out["status"] = value["status"]
        n = STATUS_NAMES.get(value["status"])
        if n:
            out["status_name"] = n
        return out
    for key in ("records", "attributes"):
        recs = value.get(key)
        if isinstance(recs, list):
            value[key] = [_named(r, names_cluster) for r in recs]
    return value


def _parse_payload(buf: bytes, pos: int, end: int, spec: _Spec, cluster: int, fc: int, path: str) -> dict:
    if spec.con is None:
        return {"raw": buf[pos:end].hex().upper()}
    if spec.fast is not None:
        try:
            value, p = spec.fast(buf, pos, end, None)
        except FieldError as e:
            raise _err(e.raw_message, e.offset, f"{path}.{e.path}" if e.path else path) from None
        if p != end:
            raise _err(f"{end - p} unexpected trailing byte(s) after the {spec.name} payload", p, path)
    else:  # pragma: no cover - every declaration has a fast parser today; kept for future declarations
        fast = _COMPILED.get(id(spec.con))
        if fast is None:
            fast = _COMPILED[id(spec.con)] = spec.con.compile()
        value = to_jsonable(parse_exact(fast, buf[pos:end], field=path, base=pos, slow=spec.con))
    return _annotate(value, spec, cluster, fc)


def _build_payload(value, spec: _Spec, path: str) -> bytes:
    if isinstance(value, dict) and len(value) == 1 and "raw" in value:
        raw = value["raw"]
        if not isinstance(raw, str):
            raise EncodeError("raw must be a hex string", f"{path}.raw")
        try:
            return bytes.fromhex(raw)
        except ValueError:
            raise EncodeError("raw must be a hex string", f"{path}.raw") from None
    if spec.con is None:
        raise EncodeError('no declared layout for this command: give the payload as {"raw": hex}', path)
    if not isinstance(value, dict):
        raise EncodeError("payload must be an object", path)
    return build_value(spec.con, value, field=path)


def decode_zcl_payload(payload: bytes, *, cluster: int, frame_control, command_id: int, base: int = 0,
                       field: str = "payload") -> dict:
    """Decode a bare ZCL payload (e.g. the plaintext of an encrypted GBZ component) for this cluster, frame
    control (byte or JSON) and command id. DecodeError offsets are `base` + offset in `payload`."""
    try:
        fc = build_frame_control(frame_control)
    except EncodeError as e:
        raise DecodeError(f"bad frame control: {e.message}", field, base) from None
    data = bytes(payload)
    spec = _spec(cluster, fc, command_id)
    try:
        return _parse_payload(data, 0, len(data), spec, cluster, fc, field)
    except FieldError as e:
        raise DecodeError(e.raw_message, e.path or field, base + (e.offset or 0)) from None
    except DecodeError as e:  # pragma: no cover - construct fallback
        raise DecodeError(e.message, e.field, base + (e.offset or 0)) from None


def encode_zcl_payload(value: dict, *, cluster: int, frame_control, command_id: int,
                       field: str = "payload") -> bytes:
    """The bytes of a bare ZCL payload JSON object (the inverse of `decode_zcl_payload`)."""
    fc = build_frame_control(frame_control)
    return _build_payload(value, _spec(cluster, fc, command_id), field)


# ========================================================================================== components

def _parse_zcl_header(buf: bytes, p: int, end: int, cluster: int, path: str):
    """frame control [manufacturer code] sequence number command id -> (zcl dict, fc, spec, next pos)."""
    if p + 3 > end:
        raise _err("ZCL header needs 3 bytes: end of component", p, f"{path}.zcl")
    fc = buf[p]
    zh = {"frame_control": parse_frame_control(fc)}
    p += 1
    if fc & 4:
        if p + 4 > end:
            raise _err("ZCL header with manufacturer code needs 5 bytes: end of component", p - 1, f"{path}.zcl")
        zh["manufacturer_code"] = buf[p] | (buf[p + 1] << 8)
        p += 2
    cmd = buf[p + 1]
    zh["sequence_number"] = buf[p]
    zh["command_id"] = cmd
    spec = _spec(cluster, fc, cmd)
    if spec.name is not None:
        zh["command_name"] = spec.name
    return zh, fc, spec, p + 2


def _parse_component(buf: bytes, start: int, end: int, ctl: int, cluster: int, path: str) -> dict:
    comp: dict = {
        "extended_header_control": {"last": bool(ctl & CTL_LAST), "encrypted": bool(ctl & CTL_ENCRYPTED),
                                    "from_date_time": bool(ctl & CTL_FROM_DATE_TIME),
                                    "reserved": ctl & CTL_RESERVED},
        "cluster": cluster,
    }
    name = cluster_name(cluster)
    if name is not None:
        comp["cluster_name"] = name
    p = start
    if ctl & CTL_FROM_DATE_TIME:
        if p + 4 > end:
            raise _err("From Date Time needs 4 bytes: end of component", p, f"{path}.from_date_time")
        fdt = _U32BE.unpack_from(buf, p)[0]
        comp["from_date_time"] = fdt
        comp["from_date_time_iso"] = _iso(fdt)
        p += 4
    encrypted = ctl & CTL_ENCRYPTED
    if encrypted:
        if p + 2 > end:
            raise _err("additional header needs 2 bytes: end of component", p, f"{path}.additional_header_control")
        comp["additional_header_control"] = buf[p]
        comp["frame_counter"] = buf[p + 1]
        p += 2
    zh, fc, spec, p = _parse_zcl_header(buf, p, end, cluster, path)
    if encrypted:
        if p + 2 > end:
            raise _err("ciphered information length needs 2 bytes: end of component", p,
                       f"{path}.zcl.ciphered")
        clen = (buf[p] << 8) | buf[p + 1]
        p += 2
        if p + clen != end:
            raise _err(f"ciphered information length {clen} disagrees with the {end - p} byte(s) left in the "
                       "component", p - 2, f"{path}.zcl.ciphered")
        if clen < SECURITY_HEADER_LENGTH + TAG_LENGTH:
            raise _err(f"ciphered information of {clen} bytes cannot hold a security header and a tag", p - 2,
                       f"{path}.zcl.ciphered")
        zh["ciphered"] = {
            "security_header": {"security_control": buf[p], "invocation_counter": _U32BE.unpack_from(buf, p + 1)[0]},
            "ciphertext": buf[p + SECURITY_HEADER_LENGTH:end - TAG_LENGTH].hex().upper(),
            "tag": buf[end - TAG_LENGTH:end].hex().upper(),
        }
    else:
        zh["payload"] = _parse_payload(buf, p, end, spec, cluster, fc, f"{path}.zcl.payload")
    comp["zcl"] = zh
    return comp


def _parse_components(buf: bytes, pos: int, end: int, n: int, prefix: str = "components"):
    if _C is not None:
        # the C twin splits the component headers; on None ("not sure") the loop below finds and words the error
        got = _C.gbz_split(buf, pos, end, n)
        if got is not None:
            return [_parse_component(buf, s, e, ctl, cluster, f"{prefix}.{i}")
                    for i, (ctl, cluster, s, e) in enumerate(got[0])], got[1]
    comps = []
    for i in range(n):
        path = f"{prefix}.{i}"
        if pos + 5 > end:
            raise _err(f"component {i} of {n}: header needs 5 bytes: end of data", pos, path)
        ctl = buf[pos]
        if ctl & CTL_LAST and i != n - 1:
            raise _err(f"'last component' bit set on component {i} of {n}", pos,
                       f"{path}.extended_header_control.last")
        cluster = (buf[pos + 1] << 8) | buf[pos + 2]
        length = (buf[pos + 3] << 8) | buf[pos + 4]
        start = pos + 5
        cend = start + length
        if cend > end:
            raise _err(f"component length {length} runs past the end of data ({end - start} byte(s) left)",
                       pos + 3, f"{path}.length")
        comps.append(_parse_component(buf, start, cend, ctl, cluster, path))
        pos = cend
    return comps, pos


_C = _fast_backend.C


# ============================================================================================== alerts

def _alert_form(message_code: int | None, alert_code: int) -> str:
    if message_code is not None:
        return ALERT_FORM_BY_MESSAGE_CODE.get(message_code, COMPONENTS)
    return ALERT_FORM_BY_ALERT_CODE.get(alert_code, COMPONENTS)


def _parse_future_dated(buf: bytes, pos: int, end: int) -> tuple[dict, int]:
    path = FUTURE_DATED
    if pos >= end:
        raise _err("future-dated alert payload length missing: end of data", pos, path)
    n = buf[pos]
    body_end = pos + 1 + n
    if body_end > end:
        raise _err(f"future-dated alert payload of {n} bytes runs past the end of data", pos, path)
    p = pos + 1
    if p + 12 > body_end:
        raise _err("future-dated alert payload needs message code, counter and cluster (12 bytes)", pos, path)
    code = (buf[p] << 8) | buf[p + 1]
    counter = int.from_bytes(buf[p + 2:p + 10], "big")
    cluster = (buf[p + 10] << 8) | buf[p + 11]
    out = {"message_code": f"0x{code:04X}", "originator_counter": counter, "cluster": cluster}
    name = cluster_name(cluster)
    if name is not None:
        out["cluster_name"] = name
    p += 12
    if p >= body_end:
        raise _err("frame control missing", p, f"{path}.frame_control")
    fc = buf[p]
    out["frame_control"] = parse_frame_control(fc)
    p += 1
    if fc & 4:
        if p + 2 > body_end:
            raise _err("manufacturer code needs 2 bytes", p, f"{path}.manufacturer_code")
        out["manufacturer_code"] = (buf[p] << 8) | buf[p + 1]
        p += 2
    if p >= body_end:
        raise _err("command id missing", p, f"{path}.command_id")
    cmd = buf[p]
    out["command_id"] = cmd
    cname = _spec(cluster, fc, cmd).name
    if cname is not None:
        out["command_name"] = cname
    p += 1
    if p != body_end:
        raise _err(f"{body_end - p} unexpected byte(s) in the future-dated alert payload", p, path)
    return out, p


def _decode_alert(buf: bytes, message_code: int | None) -> dict:
    end = len(buf)
    if end < 9:
        raise _err("GBZ alert header needs 9 bytes (profile, count, alert code, timestamp): end of data", end,
                   "alert_code" if end >= 3 else "")
    n = buf[2]
    code = (buf[3] << 8) | buf[4]
    ts = _U32BE.unpack_from(buf, 5)[0]
    out = {"alert_code": f"0x{code:04X}", "timestamp": ts, "timestamp_iso": _iso(ts)}
    form = _alert_form(message_code, code)
    pos = 9
    if form == COMPONENTS:
        out[COMPONENTS], pos = _parse_components(buf, pos, end, n)
    else:
        out["number_of_components"] = n
        if form == FUTURE_DATED:
            out[FUTURE_DATED], pos = _parse_future_dated(buf, pos, end)
        elif form == FIRMWARE_RECEIPT:
            if pos >= end or buf[pos] != DLMS_OCTET_STRING:
                raise _err("calculated manufacturer hash must be a DLMS octet-string (09)", pos, FIRMWARE_RECEIPT)
            try:
                ln, p = read_ber_length(buf, pos + 1)
            except FieldError as e:
                raise _err(e.raw_message, e.offset, FIRMWARE_RECEIPT) from None
            if p + ln > end:
                raise _err(f"calculated manufacturer hash of {ln} bytes runs past the end of data", pos + 1,
                           FIRMWARE_RECEIPT)
            out[FIRMWARE_RECEIPT] = buf[p:p + ln].hex().upper()
            pos = p + ln
        else:  # INTEGRITY_WARNING
            if pos + 2 > end:
                raise _err("meter integrity issue reason needs 2 bytes: end of data", pos, INTEGRITY_WARNING)
            reason = (buf[pos] << 8) | buf[pos + 1]
            w = {"reason": reason}
            if reason in INTEGRITY_REASONS:
                w["reason_name"] = INTEGRITY_REASONS[reason]
            out[INTEGRITY_WARNING] = w
            pos += 2
    if pos != end:
        raise _err(f"{end - pos} unexpected trailing byte(s)", pos)
    return out


# ============================================================================================== decode

def _check_profile(buf: bytes) -> None:
    if len(buf) < 3:
        raise _err("GBZ payload needs profile id and component count: end of data", len(buf),
                   "profile_id" if len(buf) < 2 else "number_of_components")
    if buf[0] != 0x01 or buf[1] != 0x09:
        raise _err(f"profile id must be 0x0109 (Smart Energy), got 0x{buf[0]:02X}{buf[1]:02X}", 0, "profile_id")


def decode_gbz(data: bytes, *, base: int = 0, cra_flag: str = "command", message_code: int | None = None) -> dict:
    """Decode a GBZ payload. `cra_flag` "alert" selects the alert form; `message_code` (when known) picks the
    alert body layout. Raises DecodeError(field path, `base` + offset) on anything that is not exact GBZ.

    Command/response JSON: `{"components": [component, ...]}` with each component::

        {"extended_header_control": {"last", "encrypted", "from_date_time", "reserved"},
         "cluster": 1794, "cluster_name": "Metering",
         ["from_date_time": 473385600, "from_date_time_iso": "2015-01-01T00:00:00Z",]
         ["additional_header_control": 0, "frame_counter": 0,]                      (encrypted components)
         "zcl": {"frame_control": {...}, ["manufacturer_code",] "sequence_number", "command_id",
                 "command_name", "payload": {...}  |  "ciphered": {"security_header": {"security_control",
                 "invocation_counter"}, "ciphertext": hex, "tag": hex}}}

    Alert JSON: `{"alert_code": "0x810E", "timestamp", "timestamp_iso", "components": [...]}` or, for the
    special forms, `number_of_components` plus one of `future_dated_instruction`,
    `calculated_manufacturer_hash`, `meter_integrity_issue_warning`.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(f"expected bytes, got {type(data).__name__}", "", base)
    buf = bytes(data)
    try:
        if cra_flag not in ("command", "response", "alert"):
            raise _err(f"unknown cra_flag {cra_flag!r}", 0)
        _check_profile(buf)
        if cra_flag == "alert":
            return _decode_alert(buf, message_code)
        comps, pos = _parse_components(buf, 3, len(buf), buf[2])
        if pos != len(buf):
            raise _err(f"{len(buf) - pos} unexpected trailing byte(s) after {buf[2]} component(s)", pos)
        return {COMPONENTS: comps}
    except FieldError as e:
        raise DecodeError(e.raw_message, e.path or "", base + (e.offset or 0)) from None
    except DecodeError as e:  # pragma: no cover - construct fallback (offsets relative to `buf`)
        raise DecodeError(e.message, e.field, base + (e.offset or 0)) from None
    except RecursionError:  # pragma: no cover - nesting is bounded by zcl.MAX_DEPTH
        raise DecodeError("structure nested too deeply", "", base) from None
    except (IndexError, KeyError, TypeError, ValueError, OverflowError, struct.error) as e:
        if not SAFETY_NET:
            raise
        raise DecodeError(f"undecodable GBZ ({type(e).__name__}: {e})", "", base) from None


# ============================================================================================== encode

def _int(v, name: str, lo: int, hi: int) -> int:
    if isinstance(v, str):
        try:
            v = int(v, 0)
        except ValueError:
            raise EncodeError(f"{name} must be an integer or a 0x string, got {v!r}", name) from None
    if isinstance(v, bool) or not isinstance(v, int):
        raise EncodeError(f"{name} must be an integer, got {v!r}", name)
    if not lo <= v <= hi:
        raise EncodeError(f"{name} {v} out of range {lo}..{hi}", name)
    return v


def _hexbytes(v, name: str) -> bytes:
    if not isinstance(v, str):
        raise EncodeError(f"{name} must be a hex string", name)
    try:
        return bytes.fromhex(v)
    except ValueError:
        raise EncodeError(f"{name}: not a hex string", name) from None


def _flag(d: dict, key: str, default: bool) -> bool:
    v = d.get(key, default)
    if not isinstance(v, bool):
        raise EncodeError(f"{key} must be true or false", key)
    return v


def _sub(path: str, e: EncodeError) -> EncodeError:
    return EncodeError(e.message, f"{path}.{e.field}" if e.field else path)


def _build_zcl_header(zh: dict, out: bytearray) -> int:
    try:
        fc = build_frame_control(zh.get("frame_control"))
    except EncodeError as e:
        raise _sub("frame_control", e) from None
    out.append(fc)
    if fc & 4:
        out += _int(zh.get("manufacturer_code"), "manufacturer_code", 0, 0xFFFF).to_bytes(2, "little")
    elif zh.get("manufacturer_code") is not None:
        raise EncodeError("manufacturer_code given but frame_control.manufacturer_specific is false",
                          "manufacturer_code")
    out.append(_int(zh.get("sequence_number", 0), "sequence_number", 0, 0xFF))
    out.append(_int(zh.get("command_id"), "command_id", 0, 0xFF))
    return fc


def _build_component(comp, i: int, n: int, path: str) -> bytes:
    if not isinstance(comp, dict):
        raise EncodeError("a component must be an object", path)
    cluster = _int(comp.get("cluster"), "cluster", 0, 0xFFFF)
    zh = comp.get("zcl")
    if not isinstance(zh, dict):
        raise EncodeError("zcl must be an object", f"{path}.zcl")
    ciphered = zh.get("ciphered")
    has_fdt = comp.get("from_date_time") is not None
    ehc = comp.get("extended_header_control")
    if ehc is None:
        last, encrypted, fdt, reserved = i == n - 1, ciphered is not None, has_fdt, 0
    else:
        if not isinstance(ehc, dict):
            raise EncodeError("extended_header_control must be an object", f"{path}.extended_header_control")
        try:
            last = _flag(ehc, "last", i == n - 1)
            encrypted = _flag(ehc, "encrypted", ciphered is not None)
            fdt = _flag(ehc, "from_date_time", has_fdt)
            reserved = _int(ehc.get("reserved", 0), "reserved", 0, 0xFF)
        except EncodeError as e:
            raise _sub(f"{path}.extended_header_control", e) from None
        if reserved & ~CTL_RESERVED:
            raise EncodeError(f"reserved bits 0x{reserved:02X} overlap last/encrypted/from_date_time (mask 0xEC)",
                              f"{path}.extended_header_control.reserved")
    if last and i != n - 1:
        raise EncodeError("'last' may only be set on the final component", f"{path}.extended_header_control.last")
    if fdt != has_fdt:
        raise EncodeError("from_date_time must be given exactly when extended_header_control.from_date_time",
                          f"{path}.from_date_time")
    if encrypted != (ciphered is not None):
        raise EncodeError("zcl.ciphered must be given exactly when extended_header_control.encrypted",
                          f"{path}.zcl.ciphered")
    ctl = int(last) | int(encrypted) << 1 | int(fdt) << 4 | reserved
    body = bytearray()
    try:
        if fdt:
            body += _int(comp["from_date_time"], "from_date_time", 0, 0xFFFFFFFF).to_bytes(4, "big")
        if encrypted:
            body.append(_int(comp.get("additional_header_control", 0), "additional_header_control", 0, 0xFF))
            body.append(_int(comp.get("frame_counter", 0), "frame_counter", 0, 0xFF))
    except EncodeError as e:
        raise _sub(path, e) from None
    try:
        fc = _build_zcl_header(zh, body)
    except EncodeError as e:
        raise _sub(f"{path}.zcl", e) from None
    if encrypted:
        cpath = f"{path}.zcl.ciphered"
        if not isinstance(ciphered, dict):
            raise EncodeError("ciphered must be an object", cpath)
        sh = ciphered.get("security_header") or {}
        if not isinstance(sh, dict):
            raise EncodeError("security_header must be an object", f"{cpath}.security_header")
        try:
            sc = _int(sh.get("security_control", 0x31), "security_control", 0, 0xFF)
            ic = _int(sh.get("invocation_counter", 0), "invocation_counter", 0, 0xFFFFFFFF)
        except EncodeError as e:
            raise _sub(f"{cpath}.security_header", e) from None
        try:
            ct = _hexbytes(ciphered.get("ciphertext", ""), "ciphertext")
            tag = _hexbytes(ciphered.get("tag"), "tag")
        except EncodeError as e:
            raise _sub(cpath, e) from None
        if len(tag) != TAG_LENGTH:
            raise EncodeError(f"tag must be {TAG_LENGTH} bytes", f"{cpath}.tag")
        clen = SECURITY_HEADER_LENGTH + len(ct) + TAG_LENGTH
        if clen > 0xFFFF:
            raise EncodeError("ciphertext too long", f"{cpath}.ciphertext")
        body += clen.to_bytes(2, "big") + bytes((sc,)) + ic.to_bytes(4, "big") + ct + tag
    else:
        if "payload" not in zh:
            raise EncodeError("payload missing", f"{path}.zcl.payload")
        body += _build_payload(zh["payload"], _spec(cluster, fc, zh["command_id"]), f"{path}.zcl.payload")
    if len(body) > 0xFFFF:
        raise EncodeError(f"component of {len(body)} bytes exceeds the 16-bit length", path)
    return bytes((ctl,)) + cluster.to_bytes(2, "big") + len(body).to_bytes(2, "big") + bytes(body)


def _build_components(comps, prefix: str = COMPONENTS) -> bytes:
    if not isinstance(comps, list):
        raise EncodeError("components must be a list", prefix)
    if len(comps) > 0xFF:
        raise EncodeError("at most 255 components", prefix)
    n = len(comps)
    return b"".join(_build_component(c, i, n, f"{prefix}.{i}") for i, c in enumerate(comps))


def _build_future_dated(fd) -> bytes:
    if not isinstance(fd, dict):
        raise EncodeError("future_dated_instruction must be an object", FUTURE_DATED)
    try:
        body = bytearray()
        body += _int(fd.get("message_code"), "message_code", 0, 0xFFFF).to_bytes(2, "big")
        body += _int(fd.get("originator_counter"), "originator_counter", 0, (1 << 64) - 1).to_bytes(8, "big")
        body += _int(fd.get("cluster"), "cluster", 0, 0xFFFF).to_bytes(2, "big")
        try:
            fc = build_frame_control(fd.get("frame_control"))
        except EncodeError as e:
            raise _sub("frame_control", e) from None
        body.append(fc)
        if fc & 4:
            body += _int(fd.get("manufacturer_code"), "manufacturer_code", 0, 0xFFFF).to_bytes(2, "big")
        body.append(_int(fd.get("command_id"), "command_id", 0, 0xFF))
    except EncodeError as e:
        raise _sub(FUTURE_DATED, e) from None
    return bytes((len(body),)) + bytes(body)


def _encode_alert(obj: dict) -> bytes:
    code = _int(obj.get("alert_code"), "alert_code", 0, 0xFFFF)
    ts = _int(obj.get("timestamp"), "timestamp", 0, 0xFFFFFFFF)
    forms = [k for k in (FUTURE_DATED, FIRMWARE_RECEIPT, INTEGRITY_WARNING) if k in obj]
    if len(forms) > 1 or (forms and COMPONENTS in obj):
        raise EncodeError(f"an alert carries one body: got {forms + ([COMPONENTS] if COMPONENTS in obj else [])}")
    if not forms:
        comps = obj.get(COMPONENTS, [])
        body = _build_components(comps)
        n = len(comps)
    else:
        form = forms[0]
        n = _int(obj.get("number_of_components", 1), "number_of_components", 0, 0xFF)
        if form == FUTURE_DATED:
            body = _build_future_dated(obj[form])
        elif form == FIRMWARE_RECEIPT:
            h = _hexbytes(obj[form], FIRMWARE_RECEIPT)
            body = bytes((DLMS_OCTET_STRING,)) + ber_length_bytes(len(h)) + h
        else:
            w = obj[form]
            if not isinstance(w, dict):
                raise EncodeError("meter_integrity_issue_warning must be {reason}", INTEGRITY_WARNING)
            try:
                body = _int(w.get("reason"), "reason", 0, 0xFFFF).to_bytes(2, "big")
            except EncodeError as e:
                raise _sub(INTEGRITY_WARNING, e) from None
    return GBZ_PROFILE + bytes((n,)) + code.to_bytes(2, "big") + ts.to_bytes(4, "big") + body


def encode_gbz(obj: dict, *, cra_flag: str = "command", message_code: int | None = None) -> bytes:
    """Bytes of a GBZ payload JSON object (the exact inverse of `decode_gbz`). EncodeError names the field."""
    if not isinstance(obj, dict):
        raise EncodeError("GBZ payload must be an object")
    try:
        if cra_flag == "alert":
            return _encode_alert(obj)
        if cra_flag not in ("command", "response"):
            raise EncodeError(f"unknown cra_flag {cra_flag!r}")
        comps = obj.get(COMPONENTS)
        body = _build_components(comps)
        return GBZ_PROFILE + bytes((len(comps),)) + body
    except EncodeError:
        raise
    except RecursionError:
        raise EncodeError("structure nested too deeply") from None
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError, struct.error) as e:
        raise EncodeError(f"invalid GBZ payload ({type(e).__name__}: {e})") from None
