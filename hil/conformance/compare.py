"""Does a device's message have the same *form* as a reference message? Pure functions over decoded JSON.

Theory of operation
-------------------
A reference message (an RTDS RESPONSE or ALERT file) and the message a device under test emitted are both
decoded to the JSON form of `protocols.gbcs.message.decode`. Values that depend on the device's state (register
values, times, keys, counters of alerts) cannot be equal between two devices, so the comparison is of *form*:

    envelope ─▶ payload family ─▶ family rules ─▶ decrypted contents ─▶ security verdicts

* envelope: DD vs DF form, CRA flag, originator counter (responses: equal, the device echoes the command's;
  alerts: only an int, strictly increasing per device, which `alert_counters` checks across a case),
  originator, recipient, message code, every other-information field and value, date-time present or absent;
* DLMS: APDU kind, invoke id (responses; alerts: `0x20` ‖ low 24 bits of the counter), results in order (kind
  and result), data type trees (`firmware_emu.core.catalogue.same_shape`: array counts ignored);
  Data-Notification: the alert code value, the body's type tree;
* ASN.1: the use-case schema, the same keys recursively, values equal for enumerated/status/code fields
  (strings without digits, booleans, null), type-equal otherwise;
* GBZ: component count, clusters, encrypted flags, ZCL command ids, statuses, attribute ids and ZCL types;
* encrypted items (`hil.verify` decrypts both sides): their count and the decrypted data's form, by the same
  family rules;
* security (`security_failures`): the MAC of a DD frame and the signature of a DF frame must be valid.

Every function returns a list of differences, `"<field path>: <got> != <expected>"` (empty: same form), so a
runner can print one line per difference. Nothing here reads files, keys or clocks: issue 7's serial target
reuses it as is.
"""
from __future__ import annotations

import re

from firmware_emu.core.catalogue import same_shape
from protocols.gbcs.message import alert_code
from protocols.gbcs.message import code_value as _code

__all__ = ["compare_message", "compare_envelope", "compare_payload", "compare_decrypted", "security_failures",
           "alert_code", "alert_counters", "pair_alerts", "form"]

_DIGIT = re.compile(r"\d")
#: GBZ/ZCL fields whose values are part of the form (the rest is compared by type).
_GBZ_EQUAL = frozenset({"status", "status_name", "attribute_id", "type", "command_id", "cluster", "alert_code"})


def form(msg: dict) -> str:
    """`DD` (MAC header present) or `DF` (General-Signing only)."""
    return "DD" if msg.get("mac_header") else "DF"


# ------------------------------------------------------------------------------------------------- envelope


def compare_envelope(got: dict, expected: dict, *, counter: bool = True) -> list[str]:
    """Form, routing and replay fields. `counter=False` for alerts (their counters are the device's own)."""
    out = []
    if form(got) != form(expected):
        out.append(f"form: {form(got)} != {form(expected)}")
    g, e = got.get("grouping_header") or {}, expected.get("grouping_header") or {}
    for key in ("cra_flag", "originator", "recipient"):
        if g.get(key) != e.get(key):
            out.append(f"grouping_header.{key}: {g.get(key)} != {e.get(key)}")
    if counter:
        if g.get("originator_counter") != e.get("originator_counter"):
            out.append(f"grouping_header.originator_counter: {g.get('originator_counter')} != "
                       f"{e.get('originator_counter')}")
    elif not isinstance(g.get("originator_counter"), int) or isinstance(g.get("originator_counter"), bool):
        out.append(f"grouping_header.originator_counter: {g.get('originator_counter')!r} is not an integer")
    has_g, has_e = g.get("date_time") is not None, e.get("date_time") is not None
    if has_g != has_e:
        out.append(f"grouping_header.date_time: {'present' if has_g else 'absent'} != "
                   f"{'present' if has_e else 'absent'}")
    go, eo = g.get("other_information") or {}, e.get("other_information") or {}
    for key in sorted(set(go) | set(eo), key=lambda k: (k != "message_code", k)):
        if key not in go:
            out.append(f"grouping_header.other_information.{key}: absent != {eo[key]}")
        elif key not in eo:
            out.append(f"grouping_header.other_information.{key}: {go[key]} != absent")
        elif key in DEVICE_OWN_FIELDS:
            if not isinstance(go[key], int) or isinstance(go[key], bool):
                out.append(f"grouping_header.other_information.{key}: {go[key]!r} is not an integer")
        elif go[key] != eo[key]:
            out.append(f"grouping_header.other_information.{key}: {_short(go[key])} != {_short(eo[key])}")
    return out


#: Other-information fields whose value is the device's own counter (a URP response's supplementary originator
#: counter keys its encryption): state, like an alert counter, so compared by presence and type only.
DEVICE_OWN_FIELDS = frozenset({"supplementary_originator_counter"})


def _short(value) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


# ------------------------------------------------------------------------------------------------- payloads


def compare_payload(got: dict, expected: dict) -> list[str]:
    """The payload family and that family's form rules."""
    gp, ep = got.get("payload") or {}, expected.get("payload") or {}
    gf, ef = _family(gp), _family(ep)
    if gf != ef:
        return [f"payload: {gf} != {ef}"]
    if ef == "dlms":
        return _dlms(gp["dlms"], ep["dlms"], got.get("grouping_header") or {})
    if ef == "asn1":
        return _asn1(gp["asn1"], ep["asn1"])
    if ef == "gbz":
        return _gbz(gp["gbz"], ep["gbz"], "payload.gbz")
    return []


def _family(payload: dict) -> str:
    for fam in ("dlms", "gbz", "asn1"):
        if fam in payload:
            return fam
    return next(iter(payload), "none")


def _dlms(g: dict, e: dict, grouping_header: dict) -> list[str]:
    gk, ek = next(iter(g), None), next(iter(e), None)
    if gk != ek:
        return [f"payload.dlms: {gk} != {ek}"]
    ga, ea = g[gk], e[ek]
    out = []
    if ek == "access_response":
        if ga.get("long_invoke_id_and_priority") != ea.get("long_invoke_id_and_priority"):
            out.append(f"payload.dlms.invoke_id: {ga.get('long_invoke_id_and_priority')} != "
                       f"{ea.get('long_invoke_id_and_priority')}")
        if (ga.get("request_specifications") is None) != (ea.get("request_specifications") is None):
            out.append("payload.dlms.request_specifications: present/absent differs")
        gr, er = ga.get("results") or [], ea.get("results") or []
        if len(gr) != len(er):
            out.append(f"payload.dlms.results: {len(gr)} items != {len(er)} items")
        for i, (x, y) in enumerate(zip(gr, er)):
            if (x.get("kind"), x.get("result")) != (y.get("kind"), y.get("result")):
                out.append(f"payload.dlms.results[{i}]: {x.get('kind')} {x.get('result')} != "
                           f"{y.get('kind')} {y.get('result')}")
        d = same_shape(ga.get("data") or [], ea.get("data") or [])
        if d:
            out.append(_at("payload.dlms.data", d))
    elif ek == "data_notification":
        counter = grouping_header.get("originator_counter")
        invoke = ga.get("long_invoke_id_and_priority")
        if isinstance(counter, int) and invoke != f"{0x20000000 | (counter & 0xFFFFFF):08X}":
            out.append(f"payload.dlms.invoke_id: {invoke} != 20 ‖ low 24 bits of counter {counter}")
        gb, eb = ga.get("notification_body") or {}, ea.get("notification_body") or {}
        gc = alert_code({"payload": {"dlms": g}})
        ec = alert_code({"payload": {"dlms": e}})
        if gc != ec:
            out.append(f"payload.dlms.alert_code: {_hex4(gc)} != {_hex4(ec)}")
        d = same_shape(gb, eb)
        if d:
            out.append(_at("payload.dlms.body", d))
    elif ek == "access_request":
        out += _dlms_request(ga, ea)
    return out


def _dlms_request(ga: dict, ea: dict) -> list[str]:
    gs, es = ga.get("request_specifications") or [], ea.get("request_specifications") or []
    if len(gs) != len(es):
        return [f"payload.dlms.request_specifications: {len(gs)} items != {len(es)} items"]
    out = []
    for i, (x, y) in enumerate(zip(gs, es)):
        if (x.get("kind"), x.get("descriptor")) != (y.get("kind"), y.get("descriptor")):
            out.append(f"payload.dlms.request_specifications[{i}]: differs")
    d = same_shape(ga.get("data") or [], ea.get("data") or [])
    if d:
        out.append(_at("payload.dlms.data", d))
    return out


def _at(prefix: str, diff: str) -> str:
    """`same_shape`'s difference under a field path (its root is `.`)."""
    return prefix + (diff[1:] if diff.startswith(".:") else diff)


def _hex4(code) -> str:
    return f"{code:04X}" if isinstance(code, int) else str(code)


def _enumerated(value) -> bool:
    """A value that names something (enumeration, status, code word) rather than measuring or identifying."""
    return value is None or isinstance(value, bool) or (isinstance(value, str) and not _DIGIT.search(value))


def _kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "object"


def _asn1(g: dict, e: dict) -> list[str]:
    if g.get("use_case_schema") != e.get("use_case_schema"):
        return [f"payload.asn1.use_case_schema: {g.get('use_case_schema')} != {e.get('use_case_schema')}"]
    out: list[str] = []
    _asn1_diff(g.get("value"), e.get("value"), "payload.asn1.value", out)
    return out


def _asn1_diff(g, e, path: str, out: list[str]) -> None:
    if isinstance(e, dict) and isinstance(g, dict):
        for k in sorted(set(g) | set(e)):
            if k not in g:
                out.append(f"{path}.{k}: absent != present")
            elif k not in e:
                out.append(f"{path}.{k}: present != absent")
            else:
                _asn1_diff(g[k], e[k], f"{path}.{k}", out)
        return
    if isinstance(e, list) and isinstance(g, list):
        if e:  # array lengths are state; each element against its counterpart, or against the first
            for i, x in enumerate(g):
                _asn1_diff(x, e[i] if i < len(e) else e[0], f"{path}[{i}]", out)
        return
    if _kind(g) != _kind(e):
        out.append(f"{path}: {_kind(g)} != {_kind(e)}")
    elif _enumerated(e) and g != e:
        out.append(f"{path}: {g} != {e}")


def _gbz(g: dict, e: dict, path: str) -> list[str]:
    out = []
    if "alert_code" in g or "alert_code" in e:
        if _code(g.get("alert_code")) != _code(e.get("alert_code")):
            out.append(f"{path}.alert_code: {g.get('alert_code')} != {e.get('alert_code')}")
        if _kind(g.get("timestamp")) != _kind(e.get("timestamp")):
            out.append(f"{path}.timestamp: {_kind(g.get('timestamp'))} != {_kind(e.get('timestamp'))}")
    gc, ec = g.get("components") or [], e.get("components") or []
    if len(gc) != len(ec):
        out.append(f"{path}.components: {len(gc)} items != {len(ec)} items")
    for i, (x, y) in enumerate(zip(gc, ec)):
        p = f"{path}.components[{i}]"
        if x.get("cluster") != y.get("cluster"):
            out.append(f"{p}.cluster: {x.get('cluster')} != {y.get('cluster')}")
            continue
        xh, yh = x.get("extended_header_control") or {}, y.get("extended_header_control") or {}
        for flag in ("encrypted", "from_date_time"):
            if xh.get(flag) != yh.get(flag):
                out.append(f"{p}.extended_header_control.{flag}: {xh.get(flag)} != {yh.get(flag)}")
        xz, yz = x.get("zcl") or {}, y.get("zcl") or {}
        if xz.get("command_id") != yz.get("command_id"):
            out.append(f"{p}.zcl.command_id: {xz.get('command_id')} != {yz.get('command_id')}")
            continue
        if ("ciphered" in xz) != ("ciphered" in yz):
            out.append(f"{p}.zcl: {'ciphered' if 'ciphered' in xz else 'clear'} != "
                       f"{'ciphered' if 'ciphered' in yz else 'clear'}")
        elif "payload" in yz or "payload" in xz:
            _zcl_diff(xz.get("payload"), yz.get("payload"), f"{p}.zcl.payload", out)
    return out


def _zcl_diff(g, e, path: str, out: list[str], key: str = "") -> None:
    if isinstance(e, dict) and isinstance(g, dict):
        for k in sorted(set(g) | set(e)):
            if k.endswith("_name") and k != "status_name":
                continue  # informational names follow from the ids
            if k not in g:
                out.append(f"{path}.{k}: absent != present")
            elif k not in e:
                out.append(f"{path}.{k}: present != absent")
            else:
                _zcl_diff(g[k], e[k], f"{path}.{k}", out, k)
        return
    if isinstance(e, list) and isinstance(g, list):
        if key == "records" and len(g) != len(e):  # one record per attribute asked for
            out.append(f"{path}: {len(g)} items != {len(e)} items")
            return
        if e:
            for i, x in enumerate(g):
                _zcl_diff(x, e[i] if i < len(e) else e[0], f"{path}[{i}]", out, key)
        return
    if _kind(g) != _kind(e):
        out.append(f"{path}: {_kind(g)} != {_kind(e)}")
    elif key in _GBZ_EQUAL and g != e:
        out.append(f"{path}: {g} != {e}")


# ------------------------------------------------------------------------------------------------- decrypted


def compare_decrypted(got: list[dict], expected: list[dict], family: str) -> list[str]:
    """The decrypted items of both sides (`hil.verify` "decrypted" lists), in order: same count, the device's
    decrypt validly, and their data have the same form. Expected items that could not be decrypted are not
    compared (no key)."""
    out = []
    if len(got) != len(expected):
        return [f"decrypted: {len(got)} items != {len(expected)} items"]
    for i, (x, y) in enumerate(zip(got, expected)):
        p = f"decrypted[{i}]"
        if x.get("status") != "valid":
            out.append(f"{p}: decryption {x.get('status')}")
            continue
        if y.get("status") != "valid" or "data" not in y:
            continue
        if "data" not in x:
            out.append(f"{p}: does not decode")
            continue
        if family == "dlms":
            d = same_shape(x["data"], y["data"])
            if d:
                out.append(_at(f"{p}.data", d))
        else:
            sub: list[str] = []
            _zcl_diff(x["data"], y["data"], f"{p}.data", sub)
            out += sub
    return out


# ------------------------------------------------------------------------------------------------- security


def security_failures(msg: dict, verdicts: dict) -> list[str]:
    """A device's frame must carry what its form promises: a valid MAC on DD, a valid signature on DF (critical
    responses and alerts are signed, not MAC'd), and encrypted items that decrypt."""
    out = []
    if form(msg) == "DD" and verdicts.get("mac") != "valid":
        out.append(f"security.mac: {verdicts.get('mac')} != valid")
    sig = verdicts.get("signature")
    if form(msg) == "DF" and sig != "valid":
        out.append(f"security.signature: {sig} != valid")
    elif form(msg) == "DD" and sig not in ("absent", "valid"):
        out.append(f"security.signature: {sig} != valid")
    if verdicts.get("decryption") not in (None, "absent", "valid"):
        out.append(f"security.decryption: {verdicts.get('decryption')} != valid")
    return out


# ------------------------------------------------------------------------------------------------- whole messages


def compare_message(got: dict, expected: dict, *, got_decrypted: list | None = None,
                    expected_decrypted: list | None = None) -> list[str]:
    """Every difference of form between an emitted message and its reference (responses and alerts)."""
    is_alert = (expected.get("grouping_header") or {}).get("cra_flag") == "alert"
    out = compare_envelope(got, expected, counter=not is_alert)
    out += compare_payload(got, expected)
    if got_decrypted is not None and expected_decrypted is not None and (got_decrypted or expected_decrypted):
        out += compare_decrypted(got_decrypted, expected_decrypted, _family((expected.get("payload") or {})))
    return out


def alert_counters(alerts: list[dict]) -> list[str]:
    """Alerts of one device, in emission order: their counters strictly increase."""
    out = []
    last = None
    for i, msg in enumerate(alerts):
        c = (msg.get("grouping_header") or {}).get("originator_counter")
        if isinstance(c, int) and last is not None and c <= last:
            out.append(f"alert[{i}].grouping_header.originator_counter: {c} not > {last}")
        if isinstance(c, int):
            last = c
    return out


def pair_alerts(got: list[dict], expected: list[dict]) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Match emitted alerts to expected ones by alert code, then order: (pairs of indices, unmatched emitted,
    unmatched expected)."""
    pairs, used = [], set()
    unmatched_got = []
    for i, g in enumerate(got):
        code = alert_code(g)
        j = next((j for j, e in enumerate(expected) if j not in used and alert_code(e) == code), None)
        if j is None:
            unmatched_got.append(i)
        else:
            used.add(j)
            pairs.append((i, j))
    return pairs, unmatched_got, [j for j in range(len(expected)) if j not in used]
