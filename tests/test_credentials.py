"""ESME ASN.1 use cases: firmware activation against the CPL, trust-anchor replacement, device log, and the
shape of the responses to the RTDS commands (read from RTDS, never copied)."""
from __future__ import annotations

import json

import pytest

import firmware_emu.core.credentials as credentials
from firmware_emu.core.cosem import attr_key
from firmware_emu.esme.device import FIRMWARE_VERSION
from firmware_emu.core.cpl import Cpl, CplError, load_cpl
from firmware_emu.core.provisioning import default_anchors, device_keys
from firmware_emu.esme.device import Esme
from hil.remote_party import RemoteParty
from protocols.gbcs.message import decode
from protocols.security.eui import eui_hex
from protocols.security.keystore import Keystore, Role, Usage
from protocols.security.pki import PkiIssuer, init_pki

T0 = 1420070400.0          # 2015-01-01
ESME_PRODUCT = load_cpl().product("EMU-ESME-1")


@pytest.fixture
def pki(tmp_path):
    summary = init_pki(tmp_path, devices=1, seed=11)
    head = Keystore(tmp_path)                     # what the head end knows (grows with new parties)
    dev_ks = Keystore(tmp_path)                   # what the device was provisioned with
    eui = summary.devices[0]
    device = Esme(device_keys(dev_ks, eui), anchors=default_anchors(dev_ks), now=T0,
                  profile={"model": "EMU-ESME-1"})
    return tmp_path, head, device


def _party(head, role, tmp_path, name="counters.json"):
    eui = next(e for e in head.euis() if head.role(e) is role and head.ds_private(e) is not None)
    return RemoteParty(head, eui, counter_store=tmp_path / name, initial_counter=1000)


def _command(device, code, value, schema):
    return {"grouping_header": {"recipient": eui_hex(device.eui), "other_information": {"message_code": code}},
            "payload": {"asn1": {"use_case_schema": schema, "value": value}}}


def _send(device, party, code, value, schema, now=T0, **kw):
    frame = party.build(_command(device, code, value, schema), **kw)
    out = device.receive(frame, now)
    responses = [decode(o.frame) for o in out if o.kind == "response"]
    return (responses[0] if responses else None), out


def _asn1(msg):
    return msg["payload"]["asn1"]["value"]


# ------------------------------------------------------------------------------------------------ CS06 and the CPL

def _cs06(device, party, image_hash, when=None):
    value = {"manufacturer_image_hash": image_hash, "originator_counter": 0}
    if when:
        value["execution_date_time"] = when
    return _send(device, party, "0x0012", value, "CS06.command")


def test_cs06_hash_on_the_cpl_activates_and_reports_the_new_version(pki):
    tmp_path, head, device = pki
    supplier = _party(head, Role.SUPPLIER, tmp_path)
    target = ESME_PRODUCT.firmware[1]
    assert credentials.firmware_version(device) == ESME_PRODUCT.factory_version != target.version
    resp, _ = _cs06(device, supplier, target.image_hash)
    assert _asn1(resp) == {"execution_outcome": {"response_code": "success", "firmware_version": target.version}}
    assert resp["grouping_header"]["date_time"] is not None and resp["signature"]      # critical: signed
    assert credentials.firmware_version(device) == target.version
    assert device.state["cosem"][attr_key(*FIRMWARE_VERSION)]["value"] == target.version


def test_cs06_hash_not_on_the_cpl_fails_and_changes_nothing(pki):
    tmp_path, head, device = pki
    supplier = _party(head, Role.SUPPLIER, tmp_path)
    before = credentials.firmware_version(device)
    resp, _ = _cs06(device, supplier, "AB" * 32)
    assert _asn1(resp)["execution_outcome"] == {"response_code": "hash_mismatch", "firmware_version": before}
    assert credentials.firmware_version(device) == before and "firmware" not in device.state


def test_cs06_future_dated_accepts_then_alerts_00ca_at_execution(pki):
    tmp_path, head, device = pki
    supplier = _party(head, Role.SUPPLIER, tmp_path)
    target = ESME_PRODUCT.firmware[2]
    resp, _ = _cs06(device, supplier, target.image_hash, "2015-01-02T00:00:00Z")
    assert _asn1(resp) == {"command_accepted": None}
    assert credentials.firmware_version(device) != target.version
    alerts = device.tick(T0 + 86400)
    assert [a.message_code for a in alerts] == [0x00CA]
    body = _asn1(decode(alerts[0].frame))
    assert body["alert_code"] == "0x8F66" and body["date_time"] == "2015-01-02T00:00:00Z"
    assert body["execution_outcome"]["firmware_version"] == target.version
    assert credentials.firmware_version(device) == target.version


def test_cs06_future_dated_fault_at_execution_gives_8f67(pki):
    tmp_path, head, device = pki
    supplier = _party(head, Role.SUPPLIER, tmp_path)
    device.faults.fail("CS06", at_execution=True)
    _cs06(device, supplier, ESME_PRODUCT.firmware[1].image_hash, "2015-01-02T00:00:00Z")
    body = _asn1(decode(device.tick(T0 + 86400)[0].frame))
    assert body["alert_code"] == "0x8F67" and body["execution_outcome"]["response_code"] == "activation_failure"
    assert credentials.firmware_version(device) == ESME_PRODUCT.factory_version


def test_cpl_rejects_a_malformed_file(tmp_path):
    bad = tmp_path / "cpl.json"
    bad.write_text(json.dumps({"product": [{"model": "X", "device_type": "ESME",
                                            "firmware": [{"version": "01", "image_hash": "12"}]}]}))
    with pytest.raises(CplError):
        load_cpl(bad)
    assert Cpl.from_dict({"product": []}).product("X") is None


# ------------------------------------------------------------------------------------------------ CS02b

def _replacement_value(counter, new_eui, issuer_ks):
    replacements = []
    for usage, cell in ((Usage.DS, {"remote_party_role": "supplier", "key_usage": ["digital_signature"]}),
                        (Usage.KA, {"remote_party_role": "supplier", "key_usage": ["key_agreement"]}),
                        (Usage.PP_KA, {"remote_party_role": "supplier", "key_usage": ["key_agreement"],
                                       "cell_usage": "prepayment_top_up"})):
        der = issuer_ks.certificate(new_eui, usage)
        replacements.append({"replacement_certificate": {"der": der.hex().upper()},
                             "target_trust_anchor_cell": cell})
    return {"authorising_remote_party_control": {
        "credentials_replacement_mode": "supplier_by_supplier",
        "authorising_remote_party_ta_cell": {"remote_party_role": "supplier", "key_usage": ["digital_signature"]},
        "authorising_remote_party_seq_number": counter, "new_remote_party_floor_seq_number": 0},
        "replacements": replacements, "certification_path_certificates": []}


def _read_firmware(device, party):
    """ECS52-like read through the DLMS path is another family's; CS02a is ours: any accepted command will do."""
    value = {"authorising_remote_party_ta_cell": {"remote_party_role": "supplier", "key_usage": ["digital_signature"]},
             "remote_party_roles": ["supplier"]}
    return _send(device, party, "0x011B", value, "CS02f.command", mac=False, sign=True)


def test_cs02b_replacement_moves_trust_to_the_new_supplier(pki):
    tmp_path, head, device = pki
    old = _party(head, Role.SUPPLIER, tmp_path)
    new_eui = bytes.fromhex("90B3D51FEE030000")
    PkiIssuer.load(tmp_path / "ca").issue_organisation(head, Role.SUPPLIER, new_eui)
    new = RemoteParty(head, new_eui, counter_store=tmp_path / "counters.json", initial_counter=1000)

    resp, _ = _read_firmware(device, new)
    assert resp is None                                   # not anchored yet: refused

    counter = (old.counters.last(old.eui) or 999) + 1
    resp, _ = _send(device, old, "0x0102", _replacement_value(counter, new_eui, head), "CS02b.command",
                    counter=counter, sign=True)
    outcome = _asn1(resp)["execution_outcome"]
    assert [o["status_code"] for o in outcome["replacement_outcomes"]] == ["success"] * 3
    assert {o["replacing_subject_unique_id"] for o in outcome["replacement_outcomes"]} == {"90B3D51FEE030000"}
    assert device.anchors[Role.SUPPLIER] == new_eui
    assert set(device.state["anchor_certificates"]["supplier"]) == {"ds", "ka", "pp_ka"}

    resp, _ = _read_firmware(device, new)                 # the new supplier's signature now verifies
    assert resp is not None and _asn1(resp)["remote_party_details"][0]["trust_anchor_cells"][0][
        "subject_unique_id"] == "90B3D51FEE030000"
    resp, out = _read_firmware(device, old)               # and the old one is refused
    assert resp is None and out and out[0].kind == "alert"


def test_anchor_certificates_survive_a_restart(pki):
    tmp_path, head, device = pki
    old = _party(head, Role.SUPPLIER, tmp_path)
    new_eui = bytes.fromhex("90B3D51FEE030000")
    PkiIssuer.load(tmp_path / "ca").issue_organisation(head, Role.SUPPLIER, new_eui)
    counter = (old.counters.last(old.eui) or 999) + 1
    _send(device, old, "0x0102", _replacement_value(counter, new_eui, head), "CS02b.command", counter=counter,
          sign=True)
    state = json.loads(json.dumps(device.state))
    restarted = Esme(device_keys(Keystore(tmp_path), device.eui), state, now=T0)
    credentials.install_anchor_certificates(restarted)
    new = RemoteParty(head, new_eui, counter_store=tmp_path / "counters.json", initial_counter=5000)
    resp, _ = _read_firmware(restarted, new)
    assert resp is not None


def test_cs02b_refused_when_the_mode_does_not_match_the_originator(pki):
    tmp_path, head, device = pki
    no = _party(head, Role.NETWORK_OPERATOR, tmp_path)
    new_eui = bytes.fromhex("90B3D51FEE030000")
    PkiIssuer.load(tmp_path / "ca").issue_organisation(head, Role.SUPPLIER, new_eui)
    counter = 2000
    resp, out = _send(device, no, "0x0102", _replacement_value(counter, new_eui, head), "CS02b.command",
                      counter=counter, sign=True)
    assert resp is None and [o.alert_code for o in out] == [0x8F30]
    assert device.anchors[Role.SUPPLIER] != new_eui


# ------------------------------------------------------------------------------------------------ CS02c/d/e, log

def test_cs02c_then_cs02d_installs_the_new_key_pair(pki):
    tmp_path, head, device = pki
    supplier = _party(head, Role.SUPPLIER, tmp_path)
    resp, _ = _send(device, supplier, "0x000A", {"key_usage": ["digital_signature"]}, "CS02c.command")
    csr_der = bytes.fromhex(_asn1(resp)["certification_request"]["der"])
    from cryptography import x509
    csr = x509.load_der_x509_csr(csr_der)
    assert csr.is_signature_valid
    # the CA certifies the request; the device installs it and signs with the new key from then on
    from protocols.security.pki import DEVICE_POLICY
    issuer = PkiIssuer.load(tmp_path / "ca")
    from cryptography.x509 import SubjectAlternativeName
    san = csr.extensions.get_extension_for_class(SubjectAlternativeName).value
    cert = issuer._end_entity(issuer._cas["device"], x509.Name([]), csr.public_key(), Usage.DS, DEVICE_POLICY,
                              "cs02d", san)
    from cryptography.hazmat.primitives import serialization
    der = cert.public_bytes(serialization.Encoding.DER)
    resp, _ = _send(device, supplier, "0x000B", {"device_certificate": {"der": der.hex().upper()}}, "CS02d.command")
    assert _asn1(resp) == {"response_code": "success"}
    assert device.keys.ds_certificate == der
    resp, _ = _send(device, supplier, "0x000C", {"key_usage": ["digital_signature"]}, "CS02e.command")
    assert bytes.fromhex(_asn1(resp)["device_certificate"]["der"]) == der


def test_cs03a1_join_then_conflicting_type_then_cs04ac_unjoin(pki):
    tmp_path, head, device = pki
    supplier = _party(head, Role.SUPPLIER, tmp_path)
    other = "00DB000000000099"

    def join(device_type):
        return _asn1(_send(device, supplier, "0x000D", {"method": 0, "other_device": other,
                                                        "device_type": device_type}, "CS03A1.command")[0])

    assert join("HCALCS") == {"response_code": "success"}
    assert join("PPMID") == {"response_code": "incompatible_with_existing_entry"}
    unjoin = lambda: _asn1(_send(device, supplier, "0x000F", {"other_device": other}, "CS04AC.command")[0])  # noqa
    assert unjoin() == {"response_code": "success"}
    assert unjoin() == {"response_code": "not_in_device_log"}


# ------------------------------------------------------------------------------------------------ RTDS shapes

def _shape(x):
    if isinstance(x, dict):
        return {k: _shape(v) for k, v in x.items() if k not in ("mac", "signature", "der", "originator_counter")}
    if isinstance(x, list):
        return [_shape(v) for v in x[:1]]
    return type(x).__name__


def _form(msg):
    return "mac_header" in msg, bool(msg.get("signature"))


RTDS_SUCCESS = [
    "6.15.1_CS02gLoadControllerBySupplier/CS02gLoadControllerBySupplier_6.15.1_IMMEDIATE_SUCCESS",
    "6.15.1_CS02gLoadControllerBySupplier/CS02gLoadControllerBySupplier_6.15.1_FUTURE_DATED_SUCCESS",
    "6.15.1_CS02gLoadControllerBySupplier/CS02gLoadControllerBySupplier_6.15.1_CANCELLATION_SUCCESS",
    "6.15.2_CS02d/CS02d_6.15.2_SUCCESS", "6.17_CS02c/CS02c_6.17_SUCCESS",
    "6.23_CS02bSupplierByTransCoS/CS02bSupplierByTransCoS_6.23_IMMEDIATE_SUCCESS",
    "6.23_CS02bSupplierByTransCoS/CS02bSupplierByTransCoS_6.23_FUTURE_DATED_SUCCESS",
    "6.23_CS02bSupplierByTransCoS/CS02bSupplierByTransCoS_6.23_CANCELLATION_SUCCESS",
    "6.24.1_CS02aMAC/CS02aMAC_6.24.1_SUCCESS", "6.24.1_CS02fMAC/CS02fMAC_6.24.1_SUCCESS",
    "8.5_CS02bACBByACB/CS02bACBByACB_8.5_SUCCESS", "8.7.1_CS03A1/CS03A1_8.7.1_SUCCESS",
    "NA_CS02fSignature/CS02fSignature_NA_SUCCESS",
    "NA_CS02gLoadControllerByLoadController/CS02gLoadControllerByLoadController_NA_IMMEDIATE_SUCCESS",
    "NA_CS02gLoadControllerByLoadController/CS02gLoadControllerByLoadController_NA_FUTURE_DATED_SUCCESS",
    "NA_CS02gLoadControllerByLoadController/CS02gLoadControllerByLoadController_NA_CANCELLATION_SUCCESS",
    "8.8.1_CS04ACCritical/CS04ACCritical_8.8.1_SUCCESS",
]


@pytest.fixture(scope="module")
def rtds_keystore(keystore_dir):
    return Keystore(keystore_dir)


def _rtds_device(ks, eui):
    return Esme(device_keys(ks, eui, issuer=PkiIssuer(seed=1)), anchors=default_anchors(ks), now=T0)


@pytest.mark.parametrize("case", RTDS_SUCCESS, ids=lambda c: c.split("/")[1])
def test_rtds_success_response_shape(case, rtds, rtds_keystore):
    from hil.conformance.codec import read_message_file
    command = read_message_file(rtds / f"{case}_COMMAND_GBCS.HEX")
    expected = decode(read_message_file(rtds / f"{case}_RESPONSE_GBCS.HEX"))
    device = _rtds_device(rtds_keystore, decode(command)["grouping_header"]["recipient"])
    if "CS04AC" in case:     # precondition of the scenario: the device to unjoin is in the log
        credentials.join_device(device, _asn1(decode(command))["other_device"], "PPMID")
    got = [decode(o.frame) for o in device.receive(command, T0) if o.kind == "response"]
    assert got, device.events[-3:]
    assert _form(got[0]) == _form(expected)
    assert _shape(got[0]) == _shape(expected)
    assert got[0]["grouping_header"]["other_information"] == expected["grouping_header"]["other_information"]
    if "asn1" in expected["payload"] and "response_code" in _asn1(expected):
        assert _asn1(got[0])["response_code"] == _asn1(expected)["response_code"]


FUTURE_ALERTS = [
    ("6.23_CS02bSupplierByTransCoS/CS02bSupplierByTransCoS_6.23_FUTURE_DATED_SUCCESS",
     "6.23_CS02bSupplierByTransCoS/CS02bSupplierByTransCoS_6.23_8F66_FUTURE_DATED_SUCCESS_ALERT", None),
    ("6.15.1_CS02gLoadControllerBySupplier/CS02gLoadControllerBySupplier_6.15.1_FUTURE_DATED_SUCCESS",
     "6.15.1_CS02gLoadControllerBySupplier/CS02gLoadControllerBySupplier_6.15.1_8F66_FUTURE_DATED_SUCCESS_ALERT",
     None),
    ("6.15.1_CS02gLoadControllerBySupplier/CS02gLoadControllerBySupplier_6.15.1_FUTURE_DATED_ERROR",
     "6.15.1_CS02gLoadControllerBySupplier/CS02gLoadControllerBySupplier_6.15.1_8F67_FUTURE_DATED_ERROR_ALERT",
     "CS02g"),
    ("NA_CS02gLoadControllerByLoadController/CS02gLoadControllerByLoadController_NA_FUTURE_DATED_SUCCESS",
     "NA_CS02gLoadControllerByLoadController/CS02gLoadControllerByLoadController_NA_8F66_FUTURE_DATED_SUCCESS_ALERT",
     None),
]


@pytest.mark.parametrize("command,alert,fault", FUTURE_ALERTS, ids=lambda c: str(c).split("/")[-1])
def test_rtds_future_dated_outcome_alert(command, alert, fault, rtds, rtds_keystore):
    from hil.conformance.codec import read_message_file
    frame = read_message_file(rtds / f"{command}_COMMAND_GBCS.HEX")
    expected = decode(read_message_file(rtds / f"{alert}_GBCS.HEX"))
    device = _rtds_device(rtds_keystore, decode(frame)["grouping_header"]["recipient"])
    if fault:
        device.faults.fail(fault, at_execution=True)
    device.receive(frame, T0)
    assert device.tick(T0 + 3600) == []                  # not yet
    alerts = device.tick(device.next_wakeup())
    assert len(alerts) == 1
    got = decode(alerts[0].frame)
    assert _form(got) == _form(expected) and _shape(got) == _shape(expected)
    assert _asn1(got) == _asn1(expected)                 # the outcome is all device state + command: exact
