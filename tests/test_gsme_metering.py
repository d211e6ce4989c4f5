"""GSME metering reads (firmware_emu/gsme/metering.py): the gas register is the seeded gas model in dm3 and
grows with time, the half-hour profile sums to the register's difference and stops at the present, snapshots
are the register at their capture instants, empty windows answer NOT_FOUND."""
from __future__ import annotations

import pytest

from firmware_emu.core.consumption import DAY, HALF_HOUR
from firmware_emu.core.provisioning import default_anchors, device_keys
from firmware_emu.gsme import metering
from firmware_emu.gsme.device import Gsme
from hil.remote_party import RemoteParty
from hil.verify import verify_message
from protocols.gbcs.message import decode
from protocols.security.keystore import Role

T0 = 1420070400.0          # 2015-01-01T00:00:00Z
G0 = 473385600             # the same instant in GBCS seconds (since 2000)


def make(own_pki, seed=3):
    summary, ks = own_pki
    return Gsme(device_keys(ks, summary.devices[1]), anchors=default_anchors(ks), now=T0, profile={"seed": seed})


@pytest.fixture
def rp(own_pki):
    summary, ks = own_pki
    return RemoteParty(ks, summary.organisations[Role.SUPPLIER])


def cluster_cmd(cluster, cid, payload, seq=0):
    return {"cluster": cluster, "zcl": {
        "frame_control": {"frame_type": "cluster", "manufacturer_specific": False, "direction": "client_to_server",
                          "disable_default_response": False, "reserved": 0},
        "sequence_number": seq, "command_id": cid, "payload": payload}}


def read(cluster, *attrs):
    return {"cluster": cluster, "zcl": {
        "frame_control": {"frame_type": "global", "manufacturer_specific": False, "direction": "client_to_server",
                          "disable_default_response": False, "reserved": 0},
        "sequence_number": 0, "command_id": 0, "payload": {"attributes": [{"attribute_id": a} for a in attrs]}}}


def send(rp, dev, code, *components, now=T0):
    cmd = {"grouping_header": {"cra_flag": "command", "originator": rp.eui.hex().upper(),
                               "recipient": dev.eui.hex().upper(), "date_time": None,
                               "other_information": {"message_code": f"0x{code:04X}"}},
           "payload": {"gbz": {"components": list(components)}}, "signature": ""}
    out = dev.receive(rp.build(cmd), now)
    msg = decode(out[0].frame)
    dec = verify_message(out[0].frame, msg, rp.keystore)["decrypted"]
    return msg["payload"]["gbz"]["components"], [d.get("data") for d in dec]


def summation(rp, dev, now):
    _, dec = send(rp, dev, 0x0074, read(0x0702, 0x0000), now=now)
    return dec[0]["records"][0]["value"]


def test_gas_register_is_the_model_in_dm3_and_rises(own_pki, rp):
    dev = make(own_pki)
    v0 = summation(rp, dev, T0)
    assert v0 == metering.meter(dev).volume_dm3(T0)
    v1 = summation(rp, dev, T0 + DAY)
    assert v1 > v0
    # ~1.4 kW thermal mean over a day is a few m3 of gas, never hundreds
    assert 500 < v1 - v0 < 20_000
    assert summation(rp, make(own_pki, seed=4), T0 + DAY) != v1


def test_half_hour_profile_sums_to_the_register_difference_and_stops_now(own_pki, rp):
    dev = make(own_pki)
    start = G0 - DAY
    comps, dec = send(rp, dev, 0x0078, cluster_cmd(0x0702, 0x08, {
        "sample_id": 0, "earliest_sample_time": start, "sample_type": 0, "number_of_samples": 97}))
    assert comps[0]["zcl"]["command_id"] == 0x07 and comps[0]["extended_header_control"]["encrypted"]
    p = dec[0]
    assert p["number_of_samples"] == len(p["samples"]) == 48          # the 49th half-hour is in the future
    assert p["sample_request_interval"] == HALF_HOUR and p["sample_start_time"] == start
    m = metering.meter(dev)
    assert sum(p["samples"]) == m.volume_dm3(T0) - m.volume_dm3(T0 - DAY)


def test_profile_older_than_retention_is_not_found(own_pki, rp):
    dev = make(own_pki)
    comps, _ = send(rp, dev, 0x0078, cluster_cmd(0x0702, 0x08, {
        "sample_id": 0, "earliest_sample_time": G0 - 800 * DAY, "sample_type": 0, "number_of_samples": 48}))
    assert comps[0]["zcl"]["command_id"] == 0x0B and comps[0]["zcl"]["payload"]["status"] == 0x8B


def test_daily_snapshots_newest_first_then_not_found(own_pki, rp):
    dev = make(own_pki)
    window = {"earliest_start_time": G0 - 2 * DAY + 4, "latest_end_time": G0 + 365 * DAY, "snapshot_cause": 1}
    comps, dec = send(rp, dev, 0x0077, *[cluster_cmd(0x0702, 0x06, dict(window, snapshot_offset=i), seq=i)
                                          for i in range(3)])
    assert [c["zcl"]["command_id"] for c in comps] == [0x06, 0x06, 0x0B]
    assert comps[2]["zcl"]["payload"]["status"] == 0x8B
    newest, older = dec
    assert newest["snapshot_time"] == G0 and older["snapshot_time"] == G0 - DAY
    assert newest["total_snapshots_found"] == 2
    m = metering.meter(dev)
    assert newest["snapshot_sub_payload"]["current_summation_delivered"] == m.volume_dm3(T0)
    assert sum(newest["snapshot_sub_payload"]["tier_summations"]) == m.volume_dm3(T0)


def test_billing_snapshots_are_month_starts(own_pki):
    dev = make(own_pki)
    times = metering.snapshot_times(dev, T0 + 40 * DAY, T0 - 70 * DAY, T0 + 40 * DAY,
                                    metering.CAUSE_END_OF_BILLING_PERIOD)
    import time
    assert [time.strftime("%Y-%m-%d %H:%M", time.gmtime(t)) for t, _ in times] == [
        "2015-02-01 00:00", "2015-01-01 00:00", "2014-12-01 00:00", "2014-11-01 00:00"]


def test_empty_logs_and_calendars_are_not_found_without_breaking(own_pki, rp):
    dev = make(own_pki)
    comps, _ = send(rp, dev, 0x00BF, cluster_cmd(0x0707, 0x01, {
        "provider_id": 0, "issuer_calendar_id": 0xFFFFFFFF, "start_day_id": 1, "number_of_days": 0}, seq=0),
        read(0x0700, 0x0616))
    assert comps[0]["zcl"]["payload"]["status"] == 0x8B
    assert comps[1]["zcl"]["command_id"] == 0x01     # NOT_FOUND does not break the next component


def test_firmware_version_follows_cs06_state(own_pki, rp):
    dev = make(own_pki)
    dev.state.setdefault("firmware", {})["version"] = "0A0B0C0D"
    _, _ = send(rp, dev, 0x0084, read(0x0702, 0x0206))
    comps, _ = send(rp, dev, 0x0084, read(0x0702, 0x0206))
    assert comps[0]["zcl"]["payload"]["records"][0]["value"] == "0A0B0C0D"
