"""Every DLMS use case of the GBCS appendix, sampled in RTDS or not, builds, encodes and decodes.

For each use case the command is assembled from the appendix's COSEM rows (class, OBIS, attribute or method,
A-XDR type); rows of one attribute or method become one access-request-specification. The response answers
each specification; alert use cases become a Data-Notification. Values are generated from the declared types,
so nothing here comes from a sample message.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from protocols.gbcs.message import decode, encode

SPEC = Path(__file__).resolve().parents[2] / "shared" / "docs" / "spec" / "gbcs-use-cases.json"
pytestmark = pytest.mark.skipif(not SPEC.exists(), reason="GBCS spec data absent")

_SIMPLE = {"double-long-unsigned": 7, "integer": -3, "long-unsigned": 500, "unsigned": 9, "double-long": -70000,
           "enum": 2, "boolean": True, "long": -500, "long64": -1, "long64-unsigned": 1}


def value_for(dlms_type: str | None) -> dict:
    """A Data value of the appendix's declared type (`octet-string(12)[[OPTIONAL]]` style)."""
    t = re.sub(r"\[\[.*?\]\]", "", dlms_type or "").strip()
    m = re.match(r"([a-z0-9-]+)(?:\((\d+)\))?", t)
    name, size = (m.group(1), int(m.group(2)) if m and m.group(2) else None) if m else ("", None)
    if name in _SIMPLE:
        return {"type": name, "value": _SIMPLE[name]}
    if name == "octet-string":
        return {"type": name, "value": "AB" * min(size or 4, 64)}
    if name in ("visible-string", "utf8-string"):
        return {"type": name, "value": "x" * min(size or 4, 64)}
    if name == "bit-string":
        n = min(size or 8, 512)
        return {"type": name, "value": {"length": n, "bits": "00" * ((n + 7) // 8)}}
    if name == "structure":
        return {"type": "structure", "value": []}
    return {"type": "null-data", "value": None}


def dlms_use_cases():
    ucs = json.loads(SPEC.read_text())
    out = []
    for uc in ucs:
        for t in uc["targets"]:
            if t["content_type"] == "DLMS COSEM" and uc["message_code"] is not None and (t["command"] or t["alerts"]):
                out.append((uc, t))
                break
    return out


CASES = dlms_use_cases() if SPEC.exists() else []


def specs_from_rows(rows, update: bool):
    groups: dict[tuple, list] = {}
    for r in rows:
        if r["class_id"] is None or r["obis"] is None or r["index"] is None:
            continue
        groups.setdefault((r["class_id"], r["obis"], r["kind"], r["index"]), []).append(r)
    specs, data = [], []
    for (class_id, obis, kind, index), rs in groups.items():
        vals = [value_for(r["dlms_type"]) for r in rs]
        value = vals[0] if len(vals) == 1 else {"type": "structure", "value": vals}
        if kind == "method":
            specs.append({"kind": "action", "descriptor": {"class_id": class_id, "instance_id": obis,
                                                           "method_id": index}, "access_selection": None})
            data.append(value)
        else:
            specs.append({"kind": "set" if update else "get", "descriptor": {"class_id": class_id, "instance_id": obis,
                                                                            "attribute_id": index},
                          "access_selection": None})
            data.append(value if update else {"type": "null-data", "value": None})
    return specs, data


def envelope(uc, cra, payload, counter=4096):
    return {"mac_header": {"security_header": {"security_control": 17, "invocation_counter": 0},
                           "mac": "00" * 12},
            "grouping_header": {"cra_flag": cra, "originator_counter": counter, "originator": "AA00000000000001",
                                "recipient": "BB00000000000001", "date_time": None,
                                "other_information": {"message_code": uc["message_code_hex"]}},
            "payload": {"dlms": payload}, "signature": ""}


def test_the_appendix_has_dlms_use_cases():
    assert len(CASES) > 100


@pytest.mark.parametrize("uc,target", CASES, ids=[uc["name"] for uc, _ in CASES])
def test_dlms_use_case_command_and_response_round_trip(uc, target):
    invoke = "20001000"
    if target["command"]:
        specs, data = specs_from_rows(target["command"], uc["read_or_update"] == "Update")
        assert specs, f"{uc['name']}: no COSEM rows"
        cmd = envelope(uc, "command", {"access_request": {"long_invoke_id_and_priority": invoke, "date_time": "",
                                                          "request_specifications": specs, "data": data}})
        raw = encode(cmd)
        dec = decode(raw)
        assert dec["grouping_header"]["other_information"]["use_case"] == uc["name"]
        got = dec["payload"]["dlms"]["access_request"]["request_specifications"]
        assert [(s["descriptor"]["class_id"], s["descriptor"]["instance_id"]) for s in got] == \
            [(s["descriptor"]["class_id"], s["descriptor"]["instance_id"]) for s in specs]
        assert encode(dec) == raw
        results = [{"kind": s["kind"], "result": "success"} for s in specs]
        rdata = [d if s["kind"] == "get" else {"type": "null-data", "value": None} for s, d in
                 zip(specs, specs_from_rows(target["command"], True)[1])]
        resp = envelope(uc, "response", {"access_response": {"long_invoke_id_and_priority": invoke, "date_time": "",
                                                             "request_specifications": None, "data": rdata,
                                                             "results": results}})
        raw = encode(resp)
        assert encode(decode(raw)) == raw
    if target["alerts"]:
        body = [value_for(r["dlms_type"]) for r in target["alerts"]]
        alert = envelope(uc, "alert", {"data_notification": {"long_invoke_id_and_priority": invoke, "date_time": "",
                                                             "notification_body": {"type": "structure",
                                                                                   "value": body}}})
        raw = encode(alert)
        assert decode(raw)["grouping_header"]["cra_flag"] == "alert" and encode(decode(raw)) == raw
