"""Alerts the ESME raises by itself (events.stimulate): the device lives the event, then reports it; RTDS
alert-only cases are compared by shape (read from RTDS, never copied)."""
from __future__ import annotations

import pytest

from firmware_emu.esme import events  # registers the outage timer
from firmware_emu.core.clock import dlms_datetime
from firmware_emu.core.provisioning import default_anchors, device_keys
from firmware_emu.esme.device import Esme
from protocols.gbcs.message import decode
from protocols.security.eui import eui_hex
from protocols.security.keystore import Keystore, Role
from protocols.security.pki import PkiIssuer, init_pki

T0 = 1420070400.0


@pytest.fixture
def device(tmp_path):
    summary = init_pki(tmp_path, devices=1, seed=5)
    ks = Keystore(tmp_path)
    return Esme(device_keys(ks, summary.devices[0]), anchors=default_anchors(ks), now=T0)


def _body(frame):
    return decode(frame)["payload"]["dlms"]["data_notification"]["notification_body"]["value"]


def test_outage_yields_ecs80_to_the_network_operator(device):
    start, end = T0 + 60, T0 + 60 + 600
    assert device.stimulate(0x0067, None, start, start=start, end=end) == []     # still off: nothing yet
    assert device.state["supply_events"]["powered"] is False
    out = device.tick(end)
    assert [(o.message_code, o.alert_code) for o in out] == [(0x0067, 0x8F36)]   # ≥ 3 minutes
    assert out[0].recipient == eui_hex(device.anchors[Role.NETWORK_OPERATOR])
    msg = decode(out[0].frame)
    assert "mac_header" not in msg and msg["signature"]                           # critical: signed, no MAC
    body = _body(out[0].frame)
    assert body[2]["value"] == dlms_datetime(start).hex().upper()
    assert body[3]["value"] == dlms_datetime(end).hex().upper()
    assert [e["event"] for e in device.state["event_log"]] == ["supply_interrupted", "supply_restored"]
    assert device.state["supply_events"]["powered"] is True


def test_short_outage_is_8f35(device):
    out = device.stimulate(0x0067, None, T0 + 100, start=T0, end=T0 + 30)
    assert [o.alert_code for o in out] == [0x8F35]


def test_alert_behaviour_can_disable_an_alert(device):
    device.state["alert_behaviour"] = {"0x810E": False}
    assert not events.alert_enabled(device, 0x810E) and events.alert_enabled(device, 0x8F30)
    assert device.stimulate(0x1001, 0x810E, T0) == []
    assert device.state["event_log"][-1]["event"] == "alert_suppressed"
    assert [o.alert_code for o in device.stimulate(0x1000, 0x8F30, T0)] == [0x8F30]


def test_generic_alerts_are_signed_or_maced_by_criticality(device):
    critical, = device.stimulate(0x1000, 0x8F30, T0)
    plain, = device.stimulate(0x1001, 0x810E, T0)
    assert decode(critical.frame)["signature"] and "mac_header" not in decode(critical.frame)
    assert "mac_header" in decode(plain.frame) and not decode(plain.frame)["signature"]
    assert plain.counter == critical.counter + 1


def test_fdra_records_the_image_held(device):
    out, = device.stimulate(0x00CE, 0x8F72, T0, image_hash="AB" * 32)
    assert _body(out.frame)[2]["value"] == "AB" * 32
    assert device.state["firmware"]["received_image_hash"] == "AB" * 32


def test_future_dated_outcome_alerts_are_not_stimulated(device):
    with pytest.raises(NotImplementedError):
        device.stimulate(0x00CB, 0x8F66, T0)


# ------------------------------------------------------------------------------------------------ RTDS shapes

def _shape(x):
    if isinstance(x, dict):
        return {k: _shape(v) for k, v in x.items() if k not in ("mac", "signature", "originator_counter")}
    if isinstance(x, list):
        return [_shape(v) for v in x[:1]]
    return type(x).__name__


RTDS_ALERTS = [
    ("NA_GCA-DLMS/GCA-DLMS_NA_8F30_ALERT", "A0", 0x1000, 0x8F30, {}),
    ("NA_GNCA-DLMS/GNCA-DLMS_NA_810E_ALERT", "A0", 0x1001, 0x810E, {}),
    ("NA_MIIWA-DLMS/MIIWA-DLMS_NA_81A0_ALERT", "A0", 0x00F0, 0x81A0, {"reason": 5}),
    ("NA_ECS68/ECS68_NA_8F0A_SINGLE_ALERT", "A0", 0x0061, 0x8F0A, {}),
    ("NA_ECS68/ECS68_NA_8F0A_TWIN_ALERT", "A0", 0x0061, 0x8F0A, {}),
    ("NA_ECS100/ECS100_NA_8F85_ALERT", "A6", 0x0120, 0x8F85, {"command_message_code": 0x0012,
                                                              "command_counter": 7}),
    ("NA_ECS100/ECS100_NA_8F85_SUPPLEMENTARY_REMOTE_PARTY_ALERT", "A6", 0x0120, 0x8F85,
     {"command_message_code": 0x0012, "command_counter": 7, "on_behalf_of": "90B3D51F30010000",
      "supplementary_counter": 8}),
    ("NA_ECS101/ECS101_NA_8F86_INPUT_ALERT", "A0", 0x0121, 0x8F86, {"direction": "input", "apc": 3, "level": 5}),
    ("NA_ECS101/ECS101_NA_8F86_OUTPUT_ALERT", "A0", 0x0121, 0x8F86, {"direction": "output", "apc": 5,
                                                                     "level": 5}),
    ("NA_ECS200/ECS200_NA_8F88_ALERT", "A0", 0x0123, 0x8F88, {"output_state": 1}),
]


@pytest.mark.parametrize("case,eui,code,alert,detail", RTDS_ALERTS, ids=lambda c: str(c).split("/")[-1])
def test_rtds_alert_shape(case, eui, code, alert, detail, rtds, keystore_dir):
    from hil.conformance.codec import read_message_file
    from hil.verify import make_verifier
    ks = Keystore(keystore_dir)
    device = Esme(device_keys(ks, f"00DB1234567890{eui}", issuer=PkiIssuer(seed=1)), anchors=default_anchors(ks),
                  now=T0, profile={"twin": True} if "TWIN" in case else None)
    expected = decode(read_message_file(rtds / f"{case}_GBCS.HEX"))
    out, = device.stimulate(code, alert, T0, **detail)
    got = decode(out.frame)
    assert ("mac_header" in got, bool(got["signature"])) == ("mac_header" in expected, bool(expected["signature"]))
    assert _shape(got) == _shape(expected)
    gh, eh = got["grouping_header"], expected["grouping_header"]
    assert (gh["recipient"], gh["other_information"].keys()) == (eh["recipient"], eh["other_information"].keys())
    verify = make_verifier(ks)
    verdicts = verify(out.frame, got)
    assert verdicts["mac"] in ("valid", "absent") and verdicts["decryption"] in ("valid", "absent")
    wanted = verify(read_message_file(rtds / f"{case}_GBCS.HEX"), expected)["decrypted"]
    assert [_shape(d.get("data")) for d in verdicts["decrypted"]] == [_shape(d.get("data")) for d in wanted]
