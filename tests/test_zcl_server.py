"""The GBZ/ZCL server (core/zcl.py) on the emulated GSME: Read Attributes records and types from the appendix,
unknown attributes, Default Responses, break-on-error, fault targets, encryption where the template says, the
generated catalogue, GBZ alert payloads; and the RTDS GSME cases the framework alone makes pass."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from firmware_emu.core import zcl
from firmware_emu.core.provisioning import default_anchors, device_keys
from firmware_emu.gsme.device import Gsme
from hil.remote_party import RemoteParty
from hil.verify import verify_message
from protocols.gbcs.message import decode
from protocols.security.keystore import Role
from protocols.zigbee.gbz import decode_gbz

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT.parent / "shared" / "docs" / "spec"
T0 = 1420070400.0
GCS13A, GCS38, GCS60 = 0x0074, 0x0084, 0x008D


@pytest.fixture
def gsme(own_pki):
    summary, ks = own_pki
    return Gsme(device_keys(ks, summary.devices[1]), anchors=default_anchors(ks), now=T0, profile={"seed": 3})


@pytest.fixture
def rp(own_pki):
    summary, ks = own_pki
    return RemoteParty(ks, summary.organisations[Role.SUPPLIER])


def read(cluster: int, *attrs: int, seq: int = 0) -> dict:
    return {"cluster": cluster, "zcl": {
        "frame_control": {"frame_type": "global", "manufacturer_specific": False, "direction": "client_to_server",
                          "disable_default_response": False, "reserved": 0},
        "sequence_number": seq, "command_id": 0, "payload": {"attributes": [{"attribute_id": a} for a in attrs]}}}


def send(rp, dev, code: int, *components) -> tuple[dict, list]:
    cmd = {"grouping_header": {"cra_flag": "command", "originator": rp.eui.hex().upper(),
                               "recipient": dev.eui.hex().upper(), "date_time": None,
                               "other_information": {"message_code": f"0x{code:04X}"}},
           "payload": {"gbz": {"components": list(components)}}, "signature": ""}
    out = dev.receive(rp.build(cmd), T0)
    assert [e.kind for e in out][:1] == ["response"], dev.events
    msg = decode(out[0].frame)
    return msg, verify_message(out[0].frame, msg, rp.keystore)["decrypted"]


def comps(msg) -> list:
    return msg["payload"]["gbz"]["components"]


def test_read_attributes_types_come_from_the_appendix_and_unknown_ones_are_unsupported(rp, gsme):
    msg, dec = send(rp, gsme, GCS38, read(0x0702, 0x0206, 0x7777))
    (c,) = comps(msg)
    assert c["zcl"]["command_id"] == zcl.READ_ATTRIBUTES_RESPONSE and not c["extended_header_control"]["encrypted"]
    fw, unknown = c["zcl"]["payload"]["records"]
    assert (fw["attribute_id"], fw["status"], fw["type"]) == (0x0206, 0, "octet_string")
    assert unknown["status"] == 0x86 and "type" not in unknown
    assert msg["grouping_header"]["date_time"] is None and dec == []


def test_sensitive_components_are_encrypted_for_the_recipient_and_carry_the_doubtful_clock(rp, gsme):
    msg, dec = send(rp, gsme, GCS13A, read(0x0702, 0x0302, 0x0301, 0x0300, 0x0000))
    (c,) = comps(msg)
    assert c["extended_header_control"]["encrypted"] and "ciphered" in c["zcl"]
    assert [d["status"] for d in dec] == ["valid"]
    recs = dec[0]["data"]["records"]
    assert [(r["attribute_id"], r["type"]) for r in recs] == [(0x0302, "uint24"), (0x0301, "uint24"),
                                                               (0x0300, "enum8"), (0x0000, "uint48")]
    assert recs[2]["value"] == 1 and recs[0]["value"] == 1000
    assert msg["grouping_header"]["date_time"]["clock_status"] == 0x02   # unsynchronised GSME (brief §1.3)
    gsme.state["gsme"]["clock_reliable"] = True
    msg, _ = send(rp, gsme, GCS13A, read(0x0702, 0x0000))
    assert msg["grouping_header"]["date_time"]["clock_status"] == 0x00


def test_attribute_fault_fails_its_record_and_breaks_the_following_components(rp, gsme):
    gsme.faults.fail(zcl.zcl_attr_target(0x0702, 0x0A00), "HARDWARE_FAILURE")
    msg, _ = send(rp, gsme, GCS60, read(0x0702, 0x0A00, seq=0), read(0x0705, 0x0001, seq=1))
    first, second = comps(msg)
    assert first["zcl"]["payload"]["records"][0]["status"] == 0xC0
    assert "type" not in first["zcl"]["payload"]["records"][0]
    assert second["zcl"]["command_id"] == zcl.DEFAULT_RESPONSE and second["zcl"]["sequence_number"] == 1
    assert second["zcl"]["payload"]["command_id"] == 0xFF and second["zcl"]["payload"]["status"] == 1


def test_command_fault_by_sequence_number_hits_only_that_component(rp, gsme):
    def snap(seq):
        return {"cluster": 0x0702, "zcl": {
            "frame_control": {"frame_type": "cluster", "manufacturer_specific": False,
                              "direction": "client_to_server", "disable_default_response": False, "reserved": 0},
            "sequence_number": seq, "command_id": 0x06, "payload": {
                "earliest_start_time": 473212804, "latest_end_time": 504921603, "snapshot_offset": seq,
                "snapshot_cause": 1}}}
    gsme.faults.fail(zcl.zcl_target(0x0702, 0x06) + "#1", "HARDWARE_FAILURE")
    msg, dec = send(rp, gsme, 0x0077, snap(0), snap(1), snap(2))
    a, b, c = comps(msg)
    assert a["zcl"]["command_id"] == 0x06 and a["extended_header_control"]["encrypted"]
    assert b["zcl"]["payload"] == {"command_id": 6, "command_name": "Get Snapshot", "status": 0xC0,
                                   "status_name": "HARDWARE_FAILURE"}
    assert c["zcl"]["payload"]["command_id"] == 0xFF
    assert dec[0]["status"] == "valid"


def test_status_codes_and_targets():
    assert zcl.status_code("HARDWARE_FAILURE") == 0xC0 == zcl.status_code("hardware-fault")
    assert zcl.status_code("NOT_FOUND") == 0x8B and zcl.status_code(0x7E) == 0x7E
    assert zcl.zcl_target(0x0702, 8) == "0702/08" and zcl.zcl_attr_target(0x0702, 0) == "0702/attr/0000"


def test_gbz_alert_payload_layout():
    raw = zcl.gbz_alert_content(0x810E, T0)
    assert raw.hex().upper() == "010900810E1C374A80"     # the brief's §6 example of the ZigBee form
    fd = zcl.gbz_alert_content(0x8F66, T0, message_code=0x00CD, future_dated_instruction={
        "message_code": 0x006D, "originator_counter": 1005, "cluster": 0x0705,
        "frame_control": {"frame_type": "cluster", "manufacturer_specific": False, "direction": "client_to_server",
                          "disable_default_response": False, "reserved": 0}, "command_id": 6})
    d = decode_gbz(fd, cra_flag="alert", message_code=0x00CD)
    assert d["alert_code"] == "0x8F66" and d["future_dated_instruction"]["originator_counter"] == 1005


@pytest.mark.skipif(not (SPEC / "gbcs-use-cases.json").exists(), reason="GBCS spec files absent")
def test_catalogue_json_matches_a_fresh_generation():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_zcl_catalogue.py"), "--check", "--spec", str(SPEC)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_catalogue_knows_gsme_attribute_types_and_encrypted_responses():
    cat = zcl.ZclCatalogue.for_device("GSME")
    assert cat.attribute(0x0702, 0x0000)["type"] == "uint48"
    assert cat.attribute(0x0700, 0x0617)["type"] == "bitmap8"
    assert cat.response_kind("GCS14", 0x0705, 1)["encrypted"] and not cat.response_kind("GCS14", 0x0700, 1)["encrypted"]
    assert cat.default_response_only("GCS24", 0x0702, 0x0E)   # not in the appendix: known from GCS24a's template


# ------------------------------------------------------------------------------------------------- RTDS

READ_CASES = ["11.2_GCS38", "4.1.1_GCS13a", "4.1.2_GCS13c", "4.1.4_GCS13b", "4.3_GCS14", "4.18_GCS60",
              "4.18_GCS60a", "6.2.8_GCS21a", "6.2.4_GCS21m", "4.6.1_GCS16a", "4.8.1_GCS17", "4.10_GCS18"]


def test_rtds_gsme_read_cases(rtds, keystore_dir, tmp_path):
    """Every GSME (…A1) case of these read use cases passes the runner (case directories copied to tmp_path),
    except GCS18 SUCCESS: it presupposes a sampling session that GCS31 would have opened."""
    import shutil
    from hil.conformance import rtds as runner
    root = tmp_path / "cases"
    for d in READ_CASES:
        if not (rtds / d).is_dir():
            pytest.skip(f"RTDS case {d} not available")
        shutil.copytree(rtds / d, root / d)
    report = runner.run_rtds_conformance(root, keystore_dir, out=lambda line: None)
    gsme = [r for r in report.results if r.device_type == "GSME"]
    assert len(gsme) >= 25
    bad = [(r.case.name, r.failures[:2]) for r in gsme
           if r.status != "passed" and r.case.name != "4.10_GCS18/GCS18_4.10_SUCCESS"]
    assert not bad
