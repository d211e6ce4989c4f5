"""The device core's GBCS security policy and persistence, on an ESME with an own test PKI.

Each refusal must raise the alert GBCS prescribes (or nothing, for frames the device cannot attribute) and leave
the device's state as it was, apart from its security log, alert log and alert counter."""
from __future__ import annotations

import copy

import pytest

from protocols.gbcs.message import decode, encode_grouping_header, wrap_mac_header
from protocols.security import ecc
from protocols.security.keystore import Role
from hil.remote_party import RemoteParty
from hil.verify import make_verifier

from firmware_emu.core.alerts import AlertCode
from firmware_emu.core.host import DeviceHost
from firmware_emu.core.provisioning import default_anchors, device_keys
from firmware_emu.core.store import StateStore
from firmware_emu.esme.device import Esme

T0 = 1420070400.0  # 2015-01-01T00:00:00Z


@pytest.fixture
def pki(own_pki):
    return own_pki




def party(pki, role=Role.SUPPLIER, **kw):
    summary, ks = pki
    return RemoteParty(ks, summary.organisations[role], **kw)


def dlms_command(originator: str, recipient: str, code: int, specs: list, data: list) -> dict:
    return {"grouping_header": {"cra_flag": "command", "originator": originator, "recipient": recipient,
                                "date_time": None, "other_information": {"message_code": f"0x{code:04X}"}},
            "payload": {"dlms": {"access_request": {"long_invoke_id_and_priority": "20000000", "date_time": "",
                                                    "request_specifications": specs, "data": data}}},
            "signature": ""}


def ecs43(rp: RemoteParty, recipient) -> dict:
    """ECS43 Remotely Open the Load Switch (critical, replay-protected, supplier only)."""
    spec = {"kind": "action", "descriptor": {"class_id": 9, "instance_id": "0-0:10.0.106.255", "method_id": 1},
            "access_selection": None}
    return dlms_command(rp.eui.hex().upper(), recipient, 0x0050, [spec], [{"type": "long-unsigned", "value": 52}])


def ecs17a(rp: RemoteParty, recipient) -> dict:
    """ECS17a Read ESME Energy Registers (Export Energy): non-critical, MAC only."""
    spec = {"kind": "get", "descriptor": {"class_id": 3, "instance_id": "1-0:2.8.0.255", "attribute_id": 2},
            "access_selection": None}
    return dlms_command(rp.eui.hex().upper(), recipient, 0x0026, [spec], [{"type": "null-data", "value": None}])


def eui(esme) -> str:
    return esme.eui.hex().upper()


def alert_codes(out) -> list:
    return [e.alert_code for e in out if e.kind == "alert"]


def test_non_critical_response_is_maced_and_echoes_the_counter(pki, esme):
    rp = party(pki, Role.NETWORK_OPERATOR)
    frame = rp.build(ecs17a(rp, eui(esme)))
    out = esme.receive(frame, T0)
    assert [e.kind for e in out] == ["response"]
    msg = decode(out[0].frame)
    assert out[0].frame[0] == 0xDD
    assert msg["grouping_header"]["originator_counter"] == rp.last_counter
    assert msg["grouping_header"]["recipient"] == rp.eui.hex().upper()
    assert make_verifier(pki[1])(out[0].frame, msg)["mac"] == "valid"


def test_critical_response_is_signed_by_the_device(pki, esme):
    rp = party(pki)
    out = esme.receive(rp.build(ecs43(rp, eui(esme))), T0)
    assert [e.kind for e in out] == ["response"]
    assert out[0].frame[0] == 0xDF
    verdict = make_verifier(pki[1])(out[0].frame, decode(out[0].frame))
    assert verdict["signature"] == "valid" and verdict["mac"] == "absent"


def _refused(esme, frame, alert):
    before = copy.deepcopy(esme.state)
    out = esme.receive(frame, T0)
    assert all(e.kind == "alert" for e in out)
    assert alert_codes(out) == ([alert] if alert is not None else [])
    after = copy.deepcopy(esme.state)
    for s in (before, after):
        s.pop("security_log")
        s.pop("alert_log", None)
        s["counters"].pop("alert")
    assert after == before, "a refused command changed the device"
    return out


def test_replayed_command_is_refused_and_changes_nothing(pki, esme):
    rp = party(pki)
    frame = rp.build(ecs43(rp, eui(esme)))
    assert [e.kind for e in esme.receive(frame, T0)] == ["response"]
    out = _refused(esme, frame, AlertCode.FAILED_AUTHENTICATION_OR_AUTHORISATION)
    assert esme.state["security_log"][-1]["reason"] == "replayed_counter"
    # the alert is the critical generic one, signed by the device, to the supplier
    msg = decode(out[0].frame)
    assert msg["grouping_header"]["other_information"]["message_code"] == "0x1000"
    assert make_verifier(pki[1])(out[0].frame, msg)["signature"] == "valid"


def test_stale_counter_is_refused(pki, esme):
    rp = party(pki)
    first = rp.build(ecs43(rp, eui(esme)))
    second = rp.build(ecs43(rp, eui(esme)))
    assert esme.receive(second, T0)[0].kind == "response"
    _refused(esme, first, AlertCode.FAILED_AUTHENTICATION_OR_AUTHORISATION)


def test_bad_mac_is_refused(pki, esme):
    rp = party(pki, Role.NETWORK_OPERATOR)
    frame = bytearray(rp.build(ecs17a(rp, eui(esme))))
    frame[-1] ^= 0x01
    _refused(esme, bytes(frame), AlertCode.FAILED_AUTHENTICATION_OR_AUTHORISATION)
    assert esme.state["security_log"][-1]["reason"] == "bad_mac"


def test_bad_signature_is_refused(pki, esme):
    rp = party(pki)
    pre = rp.build(ecs43(rp, eui(esme)), precommand=True)
    forged = pre + b"\x40" + ecc.sign(ecc.generate_private_key(), pre[1:])
    gh = decode(pre)["grouping_header"]
    mac = rp.command_mac(forged, rp.eui, esme.eui, gh["originator_counter"])
    _refused(esme, wrap_mac_header(forged, mac), AlertCode.FAILED_AUTHENTICATION_OR_AUTHORISATION)
    assert esme.state["security_log"][-1]["reason"] == "bad_signature"


def test_unsigned_critical_command_is_refused(pki, esme):
    rp = party(pki)
    _refused(esme, rp.build(ecs43(rp, eui(esme)), sign=False), AlertCode.FAILED_AUTHENTICATION_OR_AUTHORISATION)
    assert esme.state["security_log"][-1]["reason"] == "missing_signature"


def test_role_without_authority_is_refused(pki, esme):
    rp = party(pki, Role.NETWORK_OPERATOR)  # ECS43 is for the supplier only
    _refused(esme, rp.build(ecs43(rp, eui(esme))), AlertCode.SOURCE_HAS_NO_AUTHORITY)


def test_unknown_remote_party_is_refused(pki):
    summary, ks = pki
    anchors = {r: e for r, e in default_anchors(ks).items() if r is not Role.NETWORK_OPERATOR}
    dev = Esme(device_keys(ks, summary.devices[0]), anchors=anchors, now=T0)
    rp = party(pki, Role.NETWORK_OPERATOR)
    _refused(dev, rp.build(ecs17a(rp, eui(dev))), AlertCode.FAILED_AUTHENTICATION_OR_AUTHORISATION)
    assert dev.state["security_log"][-1]["reason"] == "unknown_remote_party"


def test_wrong_recipient_is_discarded_silently(pki, esme):
    rp = party(pki, Role.NETWORK_OPERATOR)
    other = pki[0].devices[1].hex().upper()
    _refused(esme, rp.build(ecs17a(rp, other)), None)
    assert esme.state["security_log"][-1]["reason"] == "wrong_recipient"


@pytest.mark.parametrize("garbage", [b"", b"\x00", b"\xdd\x00\x00", bytes(range(256))])
def test_garbage_is_discarded(esme, garbage):
    _refused(esme, garbage, None)


def test_malformed_payload_inside_a_valid_mac(pki, esme):
    rp = party(pki, Role.NETWORK_OPERATOR)
    good = decode(rp.build(ecs17a(rp, eui(esme))))
    gh = dict(good["grouping_header"])
    gh["originator_counter"] = rp.next_counter()
    signing = encode_grouping_header(gh, b"\xd9\x20\x00\x00", "")  # a truncated Access-Request
    mac = rp.command_mac(signing, rp.eui, esme.eui, gh["originator_counter"])
    _refused(esme, wrap_mac_header(signing, mac), AlertCode.COMMAND_INTEGRITY_CHECK_FAILED)


def test_state_is_json_and_survives_a_restart(pki, tmp_path):
    summary, ks = pki
    keys = device_keys(ks, summary.devices[0])
    anchors = default_anchors(ks)

    def factory(eui, device_type, state):
        return Esme(keys, state, now=T0)

    rp = party(pki)
    frame = rp.build(ecs43(rp, summary.devices[0].hex().upper()))
    with StateStore(tmp_path / "state.db") as store:
        host = DeviceHost(store, factory)
        host.add(Esme(keys, anchors=anchors, now=T0))
        assert [e.kind for e in host.receive(summary.devices[0], frame, T0)] == ["response"]
    with StateStore(tmp_path / "state.db") as store:  # a restart: a new host over the same file
        host = DeviceHost(store, factory)
        out = host.receive(summary.devices[0], frame, T0 + 1)
        assert alert_codes(out) == [AlertCode.FAILED_AUTHENTICATION_OR_AUTHORISATION]
        first_alert = out[0].counter
        out = host.receive(summary.devices[0], frame, T0 + 2)
        assert out[0].counter == first_alert + 1
        assert store.load(summary.devices[0].hex().upper())["counters"]["alert"] == first_alert + 1
