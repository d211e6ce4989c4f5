"""Every DLMS use case of the GBCS appendix, sampled in RTDS or not, builds, encodes and decodes.

For each use case the command is assembled from the appendix's COSEM rows (class, OBIS, attribute or method,
A-XDR type; builders in `hil.spec_commands`); rows of one attribute or method become one
access-request-specification. The response answers each specification; alert use cases become a
Data-Notification. Values are generated from the declared types, so nothing here comes from a sample message.
"""
from __future__ import annotations

import pytest

from protocols.gbcs.message import decode, encode
from hil.spec_commands import dlms_use_cases, envelope, spec_path, specs_from_rows, value_for

SPEC = spec_path()
pytestmark = pytest.mark.skipif(not SPEC.exists(), reason="GBCS spec data absent")

CASES = dlms_use_cases() if SPEC.exists() else []


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
