"""PPMID and HCALCS: the RTDS cases addressed to / raised by them (…A4, …A5), their ASN.1 use cases built from
state, the PPMID's HAN commands (PCS01/PCS02 with a device-to-device MAC, PECS01–03 as ZSE) and the HCALCS
switch driven by ZSE load control events."""
from __future__ import annotations

import json
import shutil
import struct

import pytest

from protocols.gbcs.message import decode, encode_grouping_header, wrap_mac_header
from protocols.prims import read_ber_length
from protocols.security.eui import as_eui, eui_hex
from protocols.security.kdf import KdfMode
from protocols.security.keystore import Keystore, Usage
from protocols.security.mac import message_mac, verify_message_mac
from protocols.zigbee.gbz import EPOCH_2000, decode_gbz, encode_gbz

from firmware_emu.core.provisioning import default_anchors, device_keys
from firmware_emu.devices import device_class
from firmware_emu.hcalcs.device import Hcalcs
from firmware_emu.ppmid import han
from firmware_emu.ppmid.device import Ppmid

T0 = 1420070400.0
CASE_DIRS = ("11.2_CS08", "NA_CS09", "8.7.2_CS03CNonCritical")
PPMID_EUI, HCALCS_EUI, GSME_EUI, ESME_EUI = "00DB1234567890A4", "00DB1234567890A5", "00DB1234567890A1", \
    "00DB1234567890A0"
UTRN = "12345678901234567890"   # any 20 digits: the PPMID checks the form, the meter the authenticity


# ------------------------------------------------------------------------------------------------ RTDS


@pytest.fixture(scope="module")
def rtds_run(rtds, keystore_dir, tmp_path_factory):
    """The conformance runner over the RTDS cases of …A4/…A5 only (copied aside so the types infer alone)."""
    from hil.conformance.rtds import run_rtds_conformance
    d = tmp_path_factory.mktemp("rtds-ppmid")
    for name in CASE_DIRS:
        shutil.copytree(rtds / name, d / name)
    return run_rtds_conformance(d, keystore_dir, out=lambda line: None)


def test_every_rtds_case_of_ppmid_and_hcalcs_passes(rtds_run):
    results = {r.case.name.split("/")[-1]: r for r in rtds_run.results}
    assert sorted(results) == ["CS03CNonCritical_8.7.2_ERROR", "CS03CNonCritical_8.7.2_SUCCESS",
                               "CS08_11.2_ERROR", "CS08_11.2_SUCCESS", "CS09_NA_8F8B_ALERT"]
    assert {r.case.name: r.failures for r in rtds_run.results if not r.passed} == {}
    assert results["CS08_11.2_ERROR"].device_type == "HCALCS"
    assert results["CS08_11.2_SUCCESS"].device_type == "PPMID"


@pytest.fixture
def rtds_keys(keystore_dir):
    from hil.conformance.rtds import _Provisioner
    prov = _Provisioner(Keystore(keystore_dir), seed=1)
    return prov


def _rtds_device(prov, cls, eui, profile=None):
    return cls(prov.keys(eui), anchors=prov.anchors, now=T0, profile=profile)


def _answer(frames):
    (frame,) = frames
    return decode(frame.frame)


def test_cs08_reports_the_running_version_from_state(rtds, rtds_keys):
    command = bytes.fromhex((rtds / "11.2_CS08" / "CS08_11.2_SUCCESS_COMMAND_GBCS.HEX").read_text().strip())
    dev = _rtds_device(rtds_keys, Ppmid, PPMID_EUI, {"firmware_version": "0a0b0c0d"})
    value = _answer(dev.receive(command, T0))["payload"]["asn1"]["value"]
    assert value == {"firmware_version": "0A0B0C0D", "response_code": "success"}
    dev = _rtds_device(rtds_keys, Ppmid, PPMID_EUI)
    dev.faults.fail("CS08", "read_failure")
    assert _answer(dev.receive(command, T0))["payload"]["asn1"]["value"]["response_code"] == "read_failure"


def test_cs03c_joins_the_meter_with_its_certificate_and_refuses_without(rtds, rtds_keys):
    d = rtds / "8.7.2_CS03CNonCritical"
    ok = bytes.fromhex((d / "CS03CNonCritical_8.7.2_SUCCESS_COMMAND_GBCS.HEX").read_text().strip())
    bad = bytes.fromhex((d / "CS03CNonCritical_8.7.2_ERROR_COMMAND_GBCS.HEX").read_text().strip())
    dev = _rtds_device(rtds_keys, Ppmid, PPMID_EUI)
    assert _answer(dev.receive(bad, T0))["payload"]["asn1"]["value"]["response_code"] == \
        "invalid_or_missing_certificate"
    assert dev.state["meters"] == {}
    msg = _answer(dev.receive(ok, T0))
    assert msg["payload"]["asn1"]["value"]["response_code"] == "success"
    other = decode(ok)["payload"]["asn1"]["value"]
    entry = dev.state["meters"][other["other_device"]]
    assert entry["device_type"] == "GSME" and entry["ka_certificate"] == other["other_device_certificate"]["der"]
    # an HCALCS is joined to an ESME only
    hc = _rtds_device(rtds_keys, Hcalcs, PPMID_EUI)
    assert _answer(hc.receive(ok, T0))["payload"]["asn1"]["value"]["response_code"] == \
        "invalid_join_method_and_role"
    # the ACB's signature view must not let a tampered command through
    tampered = bytearray(ok)
    tampered[-20] ^= 1
    dev = _rtds_device(rtds_keys, Ppmid, PPMID_EUI)
    out = dev.receive(bytes(tampered), T0)
    assert [e.kind for e in out] == ["alert"] and dev.state["meters"] == {}
    alert = decode(out[0].frame)["payload"]["gbz"]          # a ZigBee device's alerts are GBZ
    assert (alert["alert_code"], alert["timestamp_iso"]) == ("0x8F53", "2015-01-01T00:00:00Z")


def test_cs09_firmware_activation_alerts_from_state(rtds_keys, tmp_path):
    dev = _rtds_device(rtds_keys, Ppmid, PPMID_EUI, {"firmware_version": "01000000"})
    first, second = dev.stimulate(0x012B, 0x8F8B, T0)[0], dev.activate_image(T0 + 60)[0]
    assert (first.counter, second.counter) == (5000, 5001)
    assert first.recipient == eui_hex(rtds_keys.anchors[next(r for r in rtds_keys.anchors if r.name ==
                                                              "ACCESS_CONTROL_BROKER")])
    values = [decode(e.frame)["payload"]["asn1"]["value"] for e in (first, second)]
    assert [v["firmware_version"] for v in values] == ["01000001", "01000002"]
    assert values[0]["date_time"] == "2015-01-01T00:00:00Z" and values[0]["activate_image"] == "success"
    assert decode(first.frame)["signature"]     # critical: DF, signed
    # a model on the CPL only runs certified images
    cpl = tmp_path / "cpl.toml"
    cpl.write_text('[[product]]\nmodel = "IHD-1"\ndevice_type = "PPMID"\nfactory_version = "02000000"\n'
                   f'[[product.firmware]]\nversion = "02000001"\nimage_hash = "{"AB" * 32}"\n')
    dev = _rtds_device(rtds_keys, Ppmid, PPMID_EUI, {"cpl": str(cpl), "model": "IHD-1"})
    bad = decode(dev.activate_image(T0, image_hash="CD" * 32)[0].frame)["payload"]["asn1"]["value"]
    assert (bad["firmware_version"], bad["activate_image"]) == ("02000000", "failure")
    good = decode(dev.activate_image(T0, image_hash="AB" * 32)[0].frame)["payload"]["asn1"]["value"]
    assert (good["firmware_version"], good["activate_image"]) == ("02000001", "success")


def test_pcs01_is_unverifiable_with_rtds_keys(rtds_keys, keystore_dir):
    dev = _rtds_device(rtds_keys, Ppmid, PPMID_EUI)
    gsme_ka = Keystore(keystore_dir).certificate(as_eui(GSME_EUI), Usage.KA)
    dev.prepare("joined_to_meter", meter=GSME_EUI, device_type="GSME", ka_certificate=gsme_ka)
    before = dev.state["counters"]["alert"]
    with pytest.raises(han.HanKeyUnavailable):
        dev.enter_utrn(UTRN, T0)
    assert dev.state["counters"]["alert"] == before and dev.state["han"]["pending"] == {}


# ------------------------------------------------------------------------------------------------ own PKI: PCS01/02


@pytest.fixture
def premises(own_pki):
    """A PPMID (device 1 of the own PKI) joined to a GSME (device 0), both holding their private keys."""
    summary, keystore = own_pki
    gsme_keys = device_keys(keystore, summary.devices[0])
    ppmid = Ppmid(device_keys(keystore, summary.devices[1]), anchors=default_anchors(keystore), now=T0)
    ppmid.prepare("joined_to_meter", meter=gsme_keys.eui, device_type="GSME",
                  ka_certificate=gsme_keys.ka_certificate)
    return ppmid, gsme_keys


def _signing(frame: bytes) -> bytes:
    _, pos = read_ber_length(frame, 7)
    return frame[pos + 5:len(frame) - 12]


def _gsme_answer(gsme_keys, ppmid, command: bytes, components: list[dict], *, corrupt: bool = False) -> bytes:
    gh = decode(command)["grouping_header"]
    content = encode_gbz({"components": components}, cra_flag="response")
    rgh = {"cra_flag": "response", "originator_counter": gh["originator_counter"], "originator": eui_hex(gsme_keys.eui),
           "recipient": eui_hex(ppmid.eui), "date_time": None,
           "other_information": {"message_code": gh["other_information"]["message_code"]}}
    signing = encode_grouping_header(rgh, content, "")
    mac = message_mac(gsme_keys.secret(ppmid.eui), gsme_keys.eui, ppmid.eui, KdfMode.RESPONSE,
                      gh["originator_counter"], signing)
    return wrap_mac_header(signing, bytes(12) if corrupt else mac)


def _component(cluster, fc, command_id, payload, seq=0):
    return {"extended_header_control": {"last": True}, "cluster": cluster,
            "zcl": {"frame_control": fc, "sequence_number": seq, "command_id": command_id, "payload": payload}}


def test_pcs01_top_up_is_macd_device_to_device_and_the_answer_updates_the_display(premises):
    ppmid, gsme_keys = premises
    (sent,) = ppmid.enter_utrn(UTRN, T0 + 5)
    assert (sent.kind, sent.message_code, sent.counter, sent.recipient) == \
        ("han_command", 0x009B, 5000, eui_hex(gsme_keys.eui))
    msg = decode(sent.frame)
    gh = msg["grouping_header"]
    assert (gh["cra_flag"], gh["originator"], gh["other_information"]) == \
        ("command", eui_hex(ppmid.eui), {"message_code": "0x009B", "use_case": "PCS01"})
    # the GSME verifies with its own KA private key and the PPMID's certificate
    assert verify_message_mac(gsme_keys.secret(ppmid.eui), ppmid.eui, gsme_keys.eui, KdfMode.COMMAND,
                              gh["originator_counter"], _signing(sent.frame), bytes.fromhex(msg["mac_header"]["mac"]))
    (comp,) = msg["payload"]["gbz"]["components"]
    assert (comp["cluster"], comp["zcl"]["command_name"]) == (0x0705, "Consumer Top Up")
    assert comp["zcl"]["payload"] == {"originating_device": 2, "top_up_code": UTRN.encode().hex().upper()}

    server = {"frame_type": "cluster", "direction": "server_to_client"}
    answer = [_component(0x0705, server, 0x03, {"result_type": 0, "top_up_value": 1000, "source_of_top_up": 2,
                                                "credit_remaining": 2500})]
    assert ppmid.receive(_gsme_answer(gsme_keys, ppmid, sent.frame, answer, corrupt=True), T0 + 6) == []
    assert "credit_remaining" not in ppmid.display()          # a bad MAC changes nothing
    assert ppmid.receive(_gsme_answer(gsme_keys, ppmid, sent.frame, answer), T0 + 6) == []
    shown = ppmid.display()
    assert shown["credit_remaining"] == 2500 and shown["last_top_up"]["result"] == "accepted"
    assert ppmid.state["han"]["pending"] == {}
    # the same answer again is not a pending command any more
    assert ppmid.receive(_gsme_answer(gsme_keys, ppmid, sent.frame, answer), T0 + 7) == []
    assert ppmid.events[-1]["event"] == "han_dropped"
    json.dumps(ppmid.state)


def test_pcs02_emergency_credit_and_keypad_refusals(premises):
    ppmid, gsme_keys = premises
    (sent,) = ppmid.select_emergency_credit(T0)
    comp = decode(sent.frame)["payload"]["gbz"]["components"][0]
    assert (sent.message_code, comp["zcl"]["command_name"]) == (0x0090, "Select Available Emergency Credit")
    assert comp["zcl"]["payload"] == {"command_issue_date_time": 0, "originating_device": 2}
    default = [_component(0x0705, {"frame_type": "global", "direction": "server_to_client"}, 0x0B,
                          {"command_id": 0, "status": 0})]
    ppmid.receive(_gsme_answer(gsme_keys, ppmid, sent.frame, default), T0 + 1)
    assert ppmid.display()["emergency_credit"] == "activated"
    with pytest.raises(han.HanRefused):
        ppmid.enter_utrn("1234", T0)
    with pytest.raises(han.HanRefused):          # a GSME's supply is not enabled from the PPMID
        ppmid.enable_supply(T0)


def test_pecs_commands_to_an_esme_are_zse(premises):
    ppmid, _ = premises
    ppmid.prepare("joined_to_meter", meter=ESME_EUI, device_type="ESME")
    (top_up,) = ppmid.enter_utrn(UTRN, T0, meter=ESME_EUI)
    (supply,) = ppmid.enable_supply(T0, meter=ESME_EUI)
    assert (top_up.kind, top_up.message_code, supply.message_code) == ("zse_command", 0x0116, 0x0118)
    zcl = decode_gbz(supply.frame)["components"][0]["zcl"]
    assert (zcl["command_name"], zcl["payload"]) == ("Local Change Supply", {"proposed_supply_status": 2})
    server = {"frame_type": "cluster", "direction": "server_to_client"}
    answer = encode_gbz({"components": [_component(0x0705, server, 0x03, {
        "result_type": 0x12, "top_up_value": 500, "source_of_top_up": 2, "credit_remaining": 700},
        seq=top_up.counter)]}, cra_flag="response")
    ppmid.receive_zse(answer, ESME_EUI, T0 + 1)
    shown = ppmid.display(ESME_EUI)
    assert shown["credit_remaining"] == 700 and shown["last_top_up"]["result"] == "accepted_supply_armed"
    assert ppmid.receive_zse(answer, "00DB123456789999", T0 + 1) == [] and \
        ppmid.events[-1]["reason"] == "not joined"
    polls = ppmid.poll(T0 + 2)
    assert sorted(p.recipient for p in polls) == sorted([eui_hex(e) for e in ppmid.state["meters"]])


def test_device_types_map_to_these_classes():
    assert device_class("PPMID") is Ppmid and device_class("HCALCS") is Hcalcs


# ------------------------------------------------------------------------------------------------ HCALCS


def _load_control_event(event_id, start, minutes, duty=0xFF, seq=0):
    raw = struct.pack("<IHBIHBBBhhbBB", event_id, 0x0100, 0, start, minutes, 1, 0xFF, 0xFF, -32768, -32768, -128,
                      duty, 0)
    return encode_gbz({"components": [_component(0x0701, {"frame_type": "cluster", "direction": "server_to_client"},
                                                 0x00, {"raw": raw.hex()}, seq)]})


def _statuses(frames):
    out = []
    for e in frames:
        raw = bytes.fromhex(decode_gbz(e.frame)["components"][0]["zcl"]["payload"]["raw"])
        out.append(struct.unpack_from("<IB", raw))
    return out


def test_hcalcs_switches_on_load_control_events(own_pki):
    summary, keystore = own_pki
    hc = Hcalcs(device_keys(keystore, summary.devices[1]), anchors=default_anchors(keystore), now=T0)
    hc.prepare("joined_to_meter", meter=ESME_EUI, device_type="ESME")
    start = int(T0 + 600 - EPOCH_2000)
    out = hc.receive_zse(_load_control_event(7, start, 30), ESME_EUI, T0)
    assert _statuses(out) == [(7, 0x01)] and hc.load_state == "on"
    assert _statuses(hc.tick(T0 + 600)) == [(7, 0x02)] and hc.load_state == "off"
    assert _statuses(hc.tick(T0 + 600 + 1800)) == [(7, 0x03)] and hc.load_state == "on"
    # an event that turns the load on (duty 100 %) on an off-by-default switch, cancelled early
    hc.state["hcalcs"]["default"] = "off"
    hc.switch("off", T0 + 3000, "test")
    hc.receive_zse(_load_control_event(8, 0, 60, duty=100), ESME_EUI, T0 + 3000)
    assert hc.load_state == "on"
    cancel = struct.pack("<IHBBI", 8, 0x0100, 0, 0, 0)
    out = hc.receive_zse(encode_gbz({"components": [_component(
        0x0701, {"frame_type": "cluster", "direction": "server_to_client"}, 0x01, {"raw": cancel.hex()})]}),
        ESME_EUI, T0 + 3100)
    assert _statuses(out) == [(8, 0x06)] and hc.load_state == "off"
    assert [e["state"] for e in hc.state["hcalcs"]["log"]] == ["off", "on", "off", "on", "off"]
    assert hc.next_wakeup() is None
    (request,) = hc.request_control(T0)
    assert decode_gbz(request.frame)["components"][0]["zcl"]["command_id"] == 0x01
    json.dumps(hc.state)


# ------------------------------------------------------------------------------------------------ CS02e / CS06


@pytest.mark.parametrize("cls", [Ppmid, Hcalcs])
def test_credential_use_cases_come_with_core_credentials(cls, tmp_path):
    """CS02e and CS06 (core.credentials) on these types: the device certificate, a CPL image of the model."""
    from hil.remote_party import RemoteParty
    from protocols.security.keystore import Role
    from protocols.security.pki import init_pki
    summary = init_pki(tmp_path / "pki", devices=1, seed=5)
    ks = Keystore(tmp_path / "pki")
    cpl = tmp_path / "cpl.toml"
    cpl.write_text(f'[[product]]\nmodel = "M-1"\ndevice_type = "{cls.DEVICE_TYPE}"\nfactory_version = "03000000"\n'
                   f'[[product.firmware]]\nversion = "03000001"\nimage_hash = "{"EF" * 32}"\n')
    dev = cls(device_keys(ks, summary.devices[0]), anchors=default_anchors(ks), now=T0,
              profile={"cpl": str(cpl), "model": "M-1"})
    supplier = next(e for e in ks.euis() if ks.role(e) is Role.SUPPLIER and ks.ds_private(e) is not None)
    party = RemoteParty(ks, supplier, counter_store=tmp_path / "counters.json", initial_counter=1000)

    def send(code, schema, value):
        frame = party.build({"grouping_header": {"recipient": eui_hex(dev.eui),
                                                 "other_information": {"message_code": code}},
                             "payload": {"asn1": {"use_case_schema": schema, "value": value}}})
        return _answer(dev.receive(frame, T0))["payload"]["asn1"]["value"]

    cert = send("0x000C", "CS02e.command", {"key_usage": ["digital_signature"]})
    assert bytes.fromhex(cert["device_certificate"]["der"]) == dev.keys.ds_certificate
    outcome = send("0x0012", "CS06.command", {"manufacturer_image_hash": "EF" * 32, "originator_counter": 0})
    assert outcome == {"execution_outcome": {"response_code": "success", "firmware_version": "03000001"}}
