"""The Communications Hub Function: CHF Device Log (CCS01/02/03/04/06/07) with the CS14 alert it causes,
sub-GHz reads and sets, identity, logs, the CHF's own alerts, and the WAN ↔ HAN routing role; RTDS CHF
commands are replayed against a fresh CHF and compared by form (read from RTDS, never copied)."""
from __future__ import annotations

import pytest

from firmware_emu.chf import network
from firmware_emu.chf.device import Chf
from firmware_emu.chf.routing import HanRouter
from firmware_emu.core.provisioning import default_anchors, device_keys
from hil.remote_party import RemoteParty
from protocols.gbcs.gbt import segment
from protocols.gbcs.message import decode
from protocols.security.eui import eui_hex
from protocols.security.keystore import Role

T0 = 1420070400.0
NC = "0-0:30.3.0.255"
HISTORIC = "0-0:30.3.1.255"
ESME_EUI, GSME_EUI, PPMID_EUI = "00DB0000000000E1", "00DB0000000000E2", "00DB0000000000E3"
INSTALL_CODE = "00112233445566778899AABBCCDDEEFF"


@pytest.fixture
def chf(own_pki):
    summary, ks = own_pki
    return Chf(device_keys(ks, summary.devices[1]), anchors=default_anchors(ks), now=T0)


@pytest.fixture
def acb(own_pki, tmp_path):
    summary, ks = own_pki
    return RemoteParty(ks, summary.organisations[Role.ACCESS_CONTROL_BROKER], counter_store=tmp_path / "acb.json",
                       initial_counter=1000)


@pytest.fixture
def supplier_eui(own_pki):
    return own_pki[0].organisations[Role.SUPPLIER]


def _spec(kind, class_id, obis, index):
    key = "method_id" if kind == "action" else "attribute_id"
    return {"kind": kind, "descriptor": {"class_id": class_id, "instance_id": obis, key: index},
            "access_selection": None}


def _send(chf, acb, supplier_eui, code, specs, data, now=T0):
    cmd = {"grouping_header": {"recipient": eui_hex(chf.eui), "other_information": {"message_code": code}},
           "payload": {"dlms": {"access_request": {"long_invoke_id_and_priority": "20000000", "date_time": "",
                                                   "request_specifications": specs, "data": data}}}}
    out = chf.receive(acb.build(cmd, on_behalf_of=supplier_eui), now)
    responses = [decode(o.frame) for o in out if o.kind == "response"]
    assert len(responses) == 1, [o.describe() for o in out]
    r = responses[0]
    assert r["grouping_header"]["recipient"] == eui_hex(acb.eui)
    assert r["grouping_header"]["other_information"]["supplementary_remote_party_id"] == eui_hex(supplier_eui)
    ar = r["payload"]["dlms"]["access_response"]
    return ar["data"], [x["result"] for x in ar["results"]], [o for o in out if o.kind == "alert"]


def _os(h):
    return {"type": "octet-string", "value": h}


def _register(eui, dtype):
    return {"type": "structure", "value": [_os(eui), {"type": "enum", "value": 1}, _os(INSTALL_CODE),
                                           {"type": "enum", "value": dtype}]}


def _ccs01(chf, acb, sup, eui, dtype, now=T0, timeout=90):
    return _send(chf, acb, sup, "0x0001", [_spec("action", 104, NC, 1), _spec("set", 104, NC, 3),
                                           _spec("set", 104, NC, 2)],
                 [_register(eui, dtype), {"type": "long-unsigned", "value": timeout},
                  {"type": "boolean", "value": True}], now)


def _alert_body(emitted):
    msg = decode(emitted.frame)
    return msg, msg["payload"]["dlms"]["data_notification"]["notification_body"]["value"]


# ------------------------------------------------------------------------------------------------ device log

def test_ccs01_adds_device_then_cs14_to_acb_and_join_window(chf, acb, supplier_eui):
    data, results, alerts = _ccs01(chf, acb, supplier_eui, ESME_EUI, 0)
    assert results == ["success"] * 3 and alerts == []
    assert network.logged(chf, ESME_EUI)["hashed_link_key"] == ""
    # GBCS: adding a device sends CS14 with the updated log, the key hash still empty; it comes with time
    out = chf.tick(T0 + network.CS14_DELAY)
    assert [o.message_code for o in out] == [0x0018]
    msg, body = _alert_body(out[0])
    assert msg["grouping_header"]["recipient"] == eui_hex(acb.eui) and msg["grouping_header"]["originator_counter"] == 4000
    assert body[0]["value"] == 0x8F12
    devices = body[2]["value"][2]["value"]
    assert [d["value"][0]["value"] for d in devices] == [ESME_EUI] and devices[0]["value"][1]["value"] == ""
    # joining is open for the 90 s the command set: the ESME joins and gets a link key (→ another CS14)
    assert network.han_join(chf, ESME_EUI, T0 + 30)
    assert len(network.logged(chf, ESME_EUI)["hashed_link_key"]) == 32
    _, body = _alert_body(chf.tick(T0 + 40)[0])
    assert body[2]["value"][2]["value"][0]["value"][1]["value"] == network.logged(chf, ESME_EUI)["hashed_link_key"]
    # a device not in the log never joins; a logged one after the window closed neither
    assert not network.han_join(chf, "00DB0000000000FF", T0 + 31)
    _ccs01(chf, acb, supplier_eui, GSME_EUI, 1, now=T0 + 100, timeout=10)
    assert not network.han_join(chf, GSME_EUI, T0 + 200)


def test_registering_a_logged_device_again_keeps_its_key(chf, acb, supplier_eui):
    _ccs01(chf, acb, supplier_eui, ESME_EUI, 0)
    network.han_join(chf, ESME_EUI, T0 + 1)
    key = network.logged(chf, ESME_EUI)["hashed_link_key"]
    _, results, _ = _ccs01(chf, acb, supplier_eui, ESME_EUI, 0, now=T0 + 5)
    assert results[0] == "success" and network.logged(chf, ESME_EUI)["hashed_link_key"] == key
    assert len(network.chf_state(chf)["device_log"]) == 1


def test_log_is_bounded_to_16_devices(chf, acb, supplier_eui):
    for i in range(16):
        assert _ccs01(chf, acb, supplier_eui, f"00DB00000000A0{i:02X}", 132, now=T0 + i)[1][0] == "success"
    _, results, _ = _ccs01(chf, acb, supplier_eui, "00DB00000000B000", 132, now=T0 + 20)
    assert results == ["temporary-failure", "other-reason", "other-reason"]


def test_ccs02_moves_device_to_historic_log_and_ccs07_reads_both(chf, acb, supplier_eui):
    _ccs01(chf, acb, supplier_eui, ESME_EUI, 0)
    _ccs01(chf, acb, supplier_eui, PPMID_EUI, 132, now=T0 + 1)
    network.han_join(chf, PPMID_EUI, T0 + 2)
    key = network.logged(chf, PPMID_EUI)["hashed_link_key"]
    _, results, _ = _send(chf, acb, supplier_eui, "0x0002", [_spec("action", 104, NC, 2)], [_os(PPMID_EUI)], T0 + 3)
    assert results == ["success"] and network.logged(chf, PPMID_EUI) is None
    data, results, _ = _send(chf, acb, supplier_eui, "0x00FE",
                             [_spec("action", 104, NC, 4), _spec("action", 104, HISTORIC, 4)],
                             [{"type": "null-data", "value": None}] * 2, T0 + 4)
    assert results == ["success", "success"]
    current = [d["value"][0]["value"] for d in data[0]["value"][2]["value"]]
    historic = [(d["value"][0]["value"], d["value"][1]["value"]) for d in data[1]["value"][2]["value"]]
    assert current == [ESME_EUI] and historic == [(PPMID_EUI, key)]
    assert data[0]["value"][1]["value"] == eui_hex(chf.eui)          # the PAN is the CHF's until restored
    # back from the historic log: it communicates with its old key, without a new join window
    _ccs01(chf, acb, supplier_eui, PPMID_EUI, 132, now=T0 + 500, timeout=0)
    assert network.logged(chf, PPMID_EUI)["hashed_link_key"] == key
    assert network.han_join(chf, PPMID_EUI, T0 + 600)


def test_ccs03_restores_pan_and_ccs04_lists_active_devices(chf, acb, supplier_eui):
    pan = "0A0B0C0D0E0F1011"
    devices = [{"type": "structure", "value": [_os(ESME_EUI), _os("11" * 16)]},
               {"type": "structure", "value": [_os(GSME_EUI), _os("22" * 16)]}]
    _, results, _ = _send(chf, acb, supplier_eui, "0x0003", [_spec("action", 104, NC, 5)],
                          [{"type": "structure", "value": [_os(pan), {"type": "array", "value": devices}]}])
    assert results == ["success"]
    assert network.chf_state(chf)["extended_pan_id"] == pan
    data, results, alerts = _send(chf, acb, supplier_eui, "0x0004", [_spec("get", 104, NC, 4)],
                                  [{"type": "null-data", "value": None}], T0 + 1)
    rows = data[0]["value"]
    assert [r["value"][0]["value"] for r in rows] == [ESME_EUI, GSME_EUI]
    assert all(len(r["value"]) == 14 for r in rows)
    (cs14,) = alerts                                # due meanwhile: it goes out with the next frames
    assert _alert_body(cs14)[1][2]["value"][1]["value"] == pan


def test_faults_and_type_errors_follow_break_on_error(chf, acb, supplier_eui):
    chf.faults.fail(f"104/{NC}/a3", "hardware-fault")
    _, results, _ = _ccs01(chf, acb, supplier_eui, ESME_EUI, 0)
    assert results == ["success", "hardware-fault", "other-reason"]
    chf.faults.clear()
    _, results, _ = _send(chf, acb, supplier_eui, "0x0002", [_spec("action", 104, NC, 2)],
                          [{"type": "long-unsigned", "value": 1}], T0 + 1)
    assert results == ["type-unmatched"]


# ------------------------------------------------------------------------------------------------ sub-GHz, identity

def test_sub_ghz_channel_configuration_and_scan(chf, acb, supplier_eui):
    data, _, _ = _send(chf, acb, supplier_eui, "0x010A", [_spec("get", 1, "0-0:94.44.10.2", 2)],
                       [{"type": "null-data", "value": None}])
    bits = int(data[0]["value"]["bits"], 16)
    assert bits >> 27 == 28 and bits & 0x07FFFFFF == 1
    config, _, _ = _send(chf, acb, supplier_eui, "0x010C", [_spec("get", 1, "0-0:94.44.10.0", 2)],
                         [{"type": "null-data", "value": None}], T0 + 1)
    new = config[0]
    new["value"][6]["value"] = 9
    _, results, alerts = _send(chf, acb, supplier_eui, "0x010D", [_spec("set", 1, "0-0:94.44.10.0", 2)], [new], T0 + 2)
    assert results == ["success"] and [a.message_code for a in alerts] == [0x0113]
    assert _alert_body(alerts[0])[1][2] == new
    _, results, alerts = _send(chf, acb, supplier_eui, "0x010E", [_spec("set", 1, "0-0:94.44.10.1", 2)],
                               [{"type": "unsigned", "value": 0}], T0 + 3)
    assert results == ["success"] and alerts == []
    out = chf.tick(T0 + 3 + network.SCAN_DURATION)
    assert [o.alert_code for o in out] == [0x8F28, 0x8F26]
    data, _, _ = _send(chf, acb, supplier_eui, "0x010A", [_spec("get", 1, "0-0:94.44.10.2", 2)],
                       [{"type": "null-data", "value": None}], T0 + 100)
    assert int(data[0]["value"]["bits"], 16) & 0x07FFFFFF == 2      # moved to the next channel


def test_identity_reads(own_pki, acb, supplier_eui):
    summary, ks = own_pki
    chf = Chf(device_keys(ks, summary.devices[1]), anchors=default_anchors(ks), now=T0,
              profile={"model": "HUB-X", "manufacturer": "ACME"})
    data, results, _ = _send(chf, acb, supplier_eui, "0x00FA", [_spec("get", 1, "0-0:96.1.4.255", 2),
                                                                _spec("get", 1, "0-0:96.1.6.255", 2)],
                             [{"type": "null-data", "value": None}] * 2)
    assert results == ["success", "success"]
    assert [bytes.fromhex(d["value"]) for d in data] == [b"HUB-X", b"ACME"]


def test_event_log_range_read_shows_device_log_changes(chf, acb, supplier_eui):
    _ccs01(chf, acb, supplier_eui, ESME_EUI, 0)
    sel = {"selector": 1, "parameters": {"type": "structure", "value": [
        {"type": "structure", "value": [{"type": "long-unsigned", "value": 8}, _os("0000010000FF"),
                                        {"type": "integer", "value": 2}, {"type": "long-unsigned", "value": 0}]},
        {"type": "double-long-unsigned", "value": 0}, {"type": "double-long-unsigned", "value": 2**32 - 1},
        {"type": "array", "value": []}]}}
    spec = dict(_spec("get-with-selection", 7, "0-0:99.98.0.255", 2), access_selection=sel)
    data, results, _ = _send(chf, acb, supplier_eui, "0x0093", [spec], [{"type": "null-data", "value": None}], T0 + 1)
    assert results == ["success"]
    assert [(v[1], v[2]) for v in data[0]["value"]["values"]] == [(0x8F12, ESME_EUI)]


def test_alert_stimuli_go_to_the_acb(chf, own_pki):
    acb_eui = eui_hex(own_pki[0].organisations[Role.ACCESS_CONTROL_BROKER])
    for code, alert in [(0x0018, 0x8F12), (0x0111, 0x8F26), (0x0115, 0x8F2D), (0x0113, 0x8F2A), (0x0110, 0x8F20)]:
        (e,) = chf.stimulate(code, alert, T0)
        msg = decode(e.frame)
        assert msg["grouping_header"]["recipient"] == acb_eui and e.alert_code == alert and "mac_header" in msg
    (e,) = chf.stimulate(0x0128, 0x8F8A, T0, eui=PPMID_EUI, version="01020304")
    msg = decode(e.frame)
    assert "mac_header" not in msg and msg["signature"]                       # critical: DF, signed
    assert msg["payload"]["asn1"]["value"]["entity_id"] == PPMID_EUI
    with pytest.raises(NotImplementedError):
        chf.stimulate(0x0067, 0x8F35, T0)


def test_state_survives_a_restart(own_pki, chf, acb, supplier_eui):
    import json
    _ccs01(chf, acb, supplier_eui, ESME_EUI, 0)
    state = json.loads(json.dumps(chf.state))
    summary, ks = own_pki
    again = Chf(device_keys(ks, summary.devices[1]), state, anchors=default_anchors(ks), now=T0 + 1)
    assert network.logged(again, ESME_EUI) is not None
    assert [o.message_code for o in again.tick(T0 + 2)] == [0x0018]


# ------------------------------------------------------------------------------------------------ routing

def _frame(acb, recipient, code="0x0027", counter=None):
    from protocols.gbcs.message import encode_grouping_header, wrap_mac_header
    gh = {"cra_flag": "command", "originator_counter": counter or acb.next_counter(), "originator": eui_hex(acb.eui),
          "recipient": recipient, "date_time": None, "other_information": {"message_code": code}}
    return wrap_mac_header(encode_grouping_header(gh, b"\xD9\x20\x00\x00\x00\x00\x00\x00", ""), "00" * 12)


def test_routing_wan_to_han(chf, acb, supplier_eui):
    gpf = "00DB0000000000E4"
    router = HanRouter(chf, gpf=gpf, queue_limit=2)
    _ccs01(chf, acb, supplier_eui, ESME_EUI, 0)
    _ccs01(chf, acb, supplier_eui, GSME_EUI, 1, now=T0 + 1)
    network.han_join(chf, ESME_EUI, T0 + 2)
    network.han_join(chf, GSME_EUI, T0 + 2)
    hows = [(d.to, d.how) for f in (_frame(acb, ESME_EUI), _frame(acb, GSME_EUI), _frame(acb, gpf),
                                      _frame(acb, eui_hex(chf.eui)), _frame(acb, PPMID_EUI))
            for d in router.route_wan(f, T0 + 10)]
    assert hows == [(ESME_EUI, "now"), (GSME_EUI, "queued"), (gpf, "gpf"), ("CHF", "chf"), (PPMID_EUI, "undeliverable")]
    second = _frame(acb, GSME_EUI)
    assert router.route_wan(second, T0 + 11)[0].how == "queued"
    assert router.route_wan(_frame(acb, GSME_EUI), T0 + 12)[0].how == "dropped"      # bounded queue
    got = router.poll(GSME_EUI, T0 + 20)
    assert len(got) == 2 and got[1] == second and router.queued(GSME_EUI) == 0
    assert network.logged(chf, GSME_EUI)["last_communication"] == T0 + 20
    # queued frames expire
    router.route_wan(_frame(acb, GSME_EUI), T0 + 30)
    assert router.poll(GSME_EUI, T0 + 30 + router.queue_ttl + 1) == []


def test_routing_reassembles_gbt_from_the_wan(chf, acb):
    router = HanRouter(chf)
    whole = _frame(acb, eui_hex(chf.eui))
    blocks = segment(whole, max_block=16)
    outs = [router.route_wan(b, T0) for b in reversed(blocks)]
    assert all(o == [] for o in outs[:-1]) and outs[-1][0].frame == whole and outs[-1][0].how == "chf"


def test_routing_han_to_wan(chf, acb, supplier_eui):
    router = HanRouter(chf, wan_max_message=40, gbt_block=32)
    _ccs01(chf, acb, supplier_eui, ESME_EUI, 0)
    _ccs01(chf, acb, supplier_eui, GSME_EUI, 1)
    from protocols.gbcs.message import encode_grouping_header
    def han(orig, recip):
        gh = {"cra_flag": "response", "originator_counter": 5, "originator": orig, "recipient": recip,
              "date_time": None, "other_information": {"message_code": "0x0027"}}
        return encode_grouping_header(gh, b"\xDA" + bytes(30), "")
    assert router.route_han(han(ESME_EUI, eui_hex(acb.eui)), ESME_EUI, T0) == []          # not joined yet
    network.han_join(chf, ESME_EUI, T0 + 1)
    frame = han(ESME_EUI, eui_hex(acb.eui))
    blocks = router.route_han(frame, ESME_EUI, T0 + 2)
    assert len(blocks) > 1 and all(decode(b)["gbt_block"] for b in blocks)                # longer than the WAN limit
    assert router.route_han(han(GSME_EUI, eui_hex(acb.eui)), ESME_EUI, T0 + 3) == []     # spoofed originator
    assert router.route_han(han(ESME_EUI, GSME_EUI), ESME_EUI, T0 + 4) == []             # HAN → HAN: queued
    assert router.queued(GSME_EUI) == 1
    assert network.chf_state(chf)["logs"]["security"]


# ------------------------------------------------------------------------------------------------ RTDS

RTDS_CHF_DIRS = ["8.11_CCS01", "8.11_CCS02", "8.12.1_CCS03", "8.9_CCS05CCS04", "8.9_CCS06", "8.9_CCS07",
                 "6.2.4_ECS26i", "6.2.4_ECS26n", "6.13_ECS35c", "6.13_ECS35d", "6.29_DBCH05", "6.30_DBCH03",
                 "6.31_DBCH01", "NA_CS14", "NA_DBCH07", "NA_DBCH11", "NA_CCS08", "NA_CS02bWPByWP"]


def test_rtds_chf_cases_pass(rtds, keystore_dir, tmp_path):
    """Every RTDS case addressed to or raised by the CHF (…A2), through the conformance runner."""
    import shutil
    from hil.conformance.rtds import run_rtds_conformance
    for d in RTDS_CHF_DIRS:
        shutil.copytree(rtds / d, tmp_path / d)          # a scratch copy outside the repository
    report = run_rtds_conformance(tmp_path, keystore_dir, out=lambda line: None,
                                  device_types={"00DB1234567890A2": "CHF"})
    chf = [r for r in report.results if r.eui == "00DB1234567890A2"]
    assert len(chf) == 31                       # 13 use cases × SUCCESS/ERROR, CS02bWPByWP, 4 alerts
    assert [(r.case.name, r.failures[:3]) for r in chf if r.status != "passed"] == []
