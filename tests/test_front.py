"""The DCC front: commands built for users (signed when critical, MAC'd always, ACB-routed where GBCS does it),
threshold anomaly detection with a sliding window, the quarantine and its release/discard API, TOML thresholds."""
from __future__ import annotations

import pytest

from protocols.gbcs.message import decode
from protocols.security.keystore import Role
from hil.verify import make_verifier

from firmware_emu.core.provisioning import default_anchors, device_keys
from firmware_emu.esme.device import Esme
from firmware_emu.fleet.front import (
    AnomalyConfig, DccFront, FrontConfigError, Quarantined, QuarantineFull, Sent, Threshold, UnknownQuarantine,
    UnknownUser,
)

T0 = 1420070400.0  # 2015-01-01T00:00:00Z
HOUR = 3600.0


def dlms_command(recipient: str, code: int, specs: list, data: list) -> dict:
    return {"grouping_header": {"cra_flag": "command", "recipient": recipient, "date_time": None,
                                "other_information": {"message_code": f"0x{code:04X}"}},
            "payload": {"dlms": {"access_request": {"long_invoke_id_and_priority": "20000000", "date_time": "",
                                                    "request_specifications": specs, "data": data}}},
            "signature": ""}


def ecs43(recipient: str) -> dict:
    """ECS43 Remotely Open the Load Switch: critical."""
    spec = {"kind": "action", "descriptor": {"class_id": 9, "instance_id": "0-0:10.0.106.255", "method_id": 1},
            "access_selection": None}
    return dlms_command(recipient, 0x0050, [spec], [{"type": "long-unsigned", "value": 52}])


def ecs17a(recipient: str) -> dict:
    """ECS17a Read ESME Energy Registers (Export Energy): non-critical."""
    spec = {"kind": "get", "descriptor": {"class_id": 3, "instance_id": "1-0:2.8.0.255", "attribute_id": 2},
            "access_selection": None}
    return dlms_command(recipient, 0x0026, [spec], [{"type": "null-data", "value": None}])


def ccs01(recipient: str, device: str) -> dict:
    """CCS01 Add Device to CHF device log: the ACB sends it on behalf of the supplier."""
    znc = {"class_id": 104, "instance_id": "0-0:30.3.0.255"}
    specs = [{"kind": "action", "descriptor": {**znc, "method_id": 1}, "access_selection": None},
             {"kind": "set", "descriptor": {**znc, "attribute_id": 3}, "access_selection": None},
             {"kind": "set", "descriptor": {**znc, "attribute_id": 2}, "access_selection": None}]
    data = [{"type": "structure", "value": [{"type": "octet-string", "value": device}, {"type": "enum", "value": 1},
                                            {"type": "octet-string", "value": "30313233343536373839414243444546"},
                                            {"type": "enum", "value": 0}]},
            {"type": "long-unsigned", "value": 90}, {"type": "boolean", "value": 255}]
    return dlms_command(recipient, 0x0001, specs, data)


@pytest.fixture
def pki(own_pki):
    summary, ks = own_pki
    return summary, ks, make_verifier(ks)


@pytest.fixture
def users(pki):
    summary = pki[0]
    return {"supplier": summary.organisations[Role.SUPPLIER].hex().upper(),
            "no": summary.organisations[Role.NETWORK_OPERATOR].hex().upper(),
            "acb": summary.organisations[Role.ACCESS_CONTROL_BROKER].hex().upper()}


@pytest.fixture
def device(pki) -> str:
    return pki[0].devices[0].hex().upper()


def front_for(pki, users, thresholds=(), **kw) -> DccFront:
    return DccFront(pki[1], [users["supplier"], users["no"]], config=AnomalyConfig(tuple(thresholds), **kw),
                    initial_counter=1000)


def verdicts(pki, frame: bytes) -> dict:
    return pki[2](frame, decode(frame))


# -- building --------------------------------------------------------------------------------------------------------

def test_critical_commands_are_signed_by_the_user_and_maced(pki, users, device):
    front = front_for(pki, users)
    out = front.submit(ecs43(device), users["supplier"], T0)
    assert isinstance(out, Sent) and out.signed and not out.via_acb
    assert (out.use_case, out.message_code, out.originator, out.recipient) == ("ECS43", 0x0050, users["supplier"],
                                                                               device)
    msg = decode(out.frame)
    assert out.frame[0] == 0xDD and msg["grouping_header"]["originator_counter"] == out.counter
    v = verdicts(pki, out.frame)
    assert v["signature"] == "valid" and v["mac"] == "valid"


def test_non_critical_commands_are_maced_not_signed(pki, users, device):
    front = front_for(pki, users)
    out = front.submit(ecs17a(device), users["no"], T0)
    assert not out.signed
    v = verdicts(pki, out.frame)
    assert v["mac"] == "valid" and v["signature"] != "valid"
    assert decode(out.frame)["grouping_header"]["originator"] == users["no"]


def test_an_esme_accepts_what_the_front_sends(pki, users, device):
    summary, ks, _ = pki
    esme = Esme(device_keys(ks, summary.devices[0]), anchors=default_anchors(ks), now=T0)
    front = front_for(pki, users)
    for user, cmd in ((users["supplier"], ecs43(device)), (users["no"], ecs17a(device))):
        out = esme.receive(front.submit(cmd, user, T0).frame, T0)
        assert [e.kind for e in out] == ["response"]


def test_acb_routed_use_cases_carry_the_supplementary_remote_party(pki, users, device):
    front = front_for(pki, users)
    out = front.submit(ccs01(device, "00DB1234567890A0"), users["supplier"], T0)
    assert out.via_acb and out.originator == users["acb"] and out.use_case == "CCS01"
    gh = decode(out.frame)["grouping_header"]
    assert gh["originator"] == users["acb"]
    assert gh["other_information"]["supplementary_remote_party_id"] == users["supplier"]
    assert gh["other_information"]["supplementary_remote_party_counter"] >= 1000
    assert verdicts(pki, out.frame)["mac"] == "valid"
    # the user's own use cases go direct; the ACB itself never routes through itself
    assert not front.routes_via_acb(users["supplier"], "ECS43")
    assert not front.routes_via_acb(users["acb"], "CCS01")
    # a role that may send the use case itself (ECS26i: supplier / NO) sends it direct
    assert not front.routes_via_acb(users["supplier"], "ECS26i")


def test_counters_increase_and_unknown_users_are_refused(pki, users, device):
    front = front_for(pki, users)
    a = front.submit(ecs43(device), users["supplier"], T0)
    b = front.submit(ecs43(device), users["supplier"], T0 + 1)
    assert b.counter > a.counter >= 1000
    with pytest.raises(UnknownUser):
        front.submit(ecs43(device), "90B3D51F30FFFFFF", T0)


# -- anomaly detection -----------------------------------------------------------------------------------------------

def test_the_n_plus_first_command_in_a_window_is_quarantined_and_reported(pki, users, device):
    t = Threshold(users["supplier"], "ECS43", 3, HOUR)
    front = front_for(pki, users, [t])
    sent = [front.submit(ecs43(device), users["supplier"], T0 + i) for i in range(3)]
    assert all(isinstance(s, Sent) for s in sent)
    last_counter = sent[-1].counter
    held = front.submit(ecs43(device), users["supplier"], T0 + 10)
    assert isinstance(held, Quarantined)
    r = held.report
    assert (r.user, r.use_case, r.count, r.limit, r.window, r.at) == (users["supplier"], "ECS43", 4, 3, HOUR,
                                                                       T0 + 10)
    assert front.drain_reports() == [r] and front.drain_reports() == []
    assert [q.id for q in front.quarantined()] == [r.id]
    # nothing was built: no originator counter was spent on it
    assert front.counters.last(users["supplier"]) == last_counter
    # other use cases and other users are not held by this threshold
    assert isinstance(front.submit(ecs17a(device), users["supplier"], T0 + 11), Sent)
    assert isinstance(front.submit(ecs43(device), users["no"], T0 + 12), Sent)


def test_release_sends_and_discard_drops(pki, users, device):
    front = front_for(pki, users, [Threshold(users["supplier"], "ECS43", 1, HOUR)])
    assert isinstance(front.submit(ecs43(device), users["supplier"], T0), Sent)
    q1 = front.submit(ecs43(device), users["supplier"], T0 + 1).report.id
    q2 = front.submit(ecs43(device), users["supplier"], T0 + 2).report.id
    released = front.release(q1, T0 + 3)
    assert isinstance(released, Sent) and released.use_case == "ECS43"
    v = verdicts(pki, released.frame)
    assert v["signature"] == "valid" and v["mac"] == "valid"
    dropped = front.discard(q2)
    assert dropped.id == q2 and dropped.use_case == "ECS43"
    assert front.quarantined() == []
    with pytest.raises(UnknownQuarantine):
        front.release(q2, T0 + 4)
    with pytest.raises(UnknownQuarantine):
        front.discard(q1)


def test_the_window_slides_with_time(pki, users, device):
    front = front_for(pki, users, [Threshold(users["supplier"], "ECS43", 2, HOUR)])
    times = [T0, T0 + 1800]
    for t in times:
        assert isinstance(front.submit(ecs43(device), users["supplier"], t), Sent)
    assert isinstance(front.submit(ecs43(device), users["supplier"], T0 + HOUR - 1), Quarantined)
    # exactly one hour after the first command, it has left the window
    assert isinstance(front.submit(ecs43(device), users["supplier"], T0 + HOUR), Sent)
    assert isinstance(front.submit(ecs43(device), users["supplier"], T0 + HOUR + 10), Quarantined)
    counts = front.window_count(users["supplier"], "ECS43", T0 + 1800 + HOUR)
    assert list(counts.values()) == [1]


def test_wildcards_count_each_user_apart_and_use_cases_together(pki, users, device):
    front = front_for(pki, users, [Threshold("*", "*", 2, HOUR)])
    assert isinstance(front.submit(ecs43(device), users["supplier"], T0), Sent)
    assert isinstance(front.submit(ecs17a(device), users["supplier"], T0), Sent)
    assert isinstance(front.submit(ecs17a(device), users["supplier"], T0), Quarantined)   # both use cases count
    assert isinstance(front.submit(ecs17a(device), users["no"], T0), Sent)                # another user: own count


def test_the_quarantine_is_bounded(pki, users, device):
    front = front_for(pki, users, [Threshold(users["supplier"], "ECS43", 0, HOUR)], max_quarantined=2,
                      max_reports=1)
    for i in range(2):
        assert isinstance(front.submit(ecs43(device), users["supplier"], T0 + i), Quarantined)
    with pytest.raises(QuarantineFull):
        front.submit(ecs43(device), users["supplier"], T0 + 5)
    assert len(front.quarantined()) == 2 and len(front.drain_reports()) == 1


# -- configuration ---------------------------------------------------------------------------------------------------

def test_thresholds_from_toml():
    cfg = AnomalyConfig.from_toml("""
        [anomaly_detection]
        max_quarantined = 50

        [[anomaly_detection.thresholds]]
        user = "90b3d51f30010000"
        use_case = "ecs43"       # any case: stored as the registry spells it
        limit = 100
        window = "1h"

        [[anomaly_detection.thresholds]]
        use_case = "ECS17a"
        limit = 5
        window = 90
    """)
    assert cfg.max_quarantined == 50 and cfg.max_reports == 10000
    assert cfg.thresholds == (Threshold("90B3D51F30010000", "ECS43", 100, 3600.0),
                              Threshold("*", "ECS17a", 5, 90.0))
    assert AnomalyConfig.from_toml("[other]\nx = 1\n").thresholds == ()


@pytest.mark.parametrize("body, match", [
    ('use_case = "ECS43"\nlimit = 1', "window missing"),
    ('use_case = "XYZ99"\nlimit = 1\nwindow = 1', "unknown use case"),
    ('limit = -1\nwindow = 1', "non-negative"),
    ('limit = 1\nwindow = "soon"', "bad window"),
    ('limit = 1\nwindow = 0', "positive"),
    ('user = "nobody"\nlimit = 1\nwindow = 1', "not an EUI"),
    ('limit = 1\nwindow = 1\ncolour = "red"', "unknown threshold keys"),
])
def test_bad_thresholds_are_typed_errors(body, match):
    with pytest.raises(FrontConfigError, match=match):
        AnomalyConfig.from_toml("[[anomaly_detection.thresholds]]\n" + body)


def test_route_override_and_the_urp_form(pki, users, device):
    front = front_for(pki, users)
    out = front.submit(ecs17a(device), users["supplier"], T0, route="acb", urp=True)
    oi = decode(out.frame)["grouping_header"]["other_information"]
    assert out.via_acb and oi["supplementary_remote_party_id"] == users["supplier"]
    assert bytes.fromhex(oi["supplementary_remote_party_ka_certificate"]) == pki[1].certificate(users["supplier"],
                                                                                                 "ka")
    assert verdicts(pki, out.frame)["mac"] == "valid"
    assert front.routes_via_acb(users["supplier"], "GCS16b")       # URP reads always go through the ACB
