"""ESME metering: registers from the consumption model, protected reads, profiles with range selection, logs;
and the shape of every RTDS SUCCESS response of the metering use cases (skipped without RTDS)."""
from __future__ import annotations

import calendar
import pathlib

import pytest

from protocols.gbcs.message import decode
from protocols.security.keystore import Keystore, Role
from hil.remote_party import RemoteParty
from hil.verify import make_verifier, verify_message

from firmware_emu.core.catalogue import Catalogue, default_value, same_shape
from firmware_emu.core.clock import dlms_datetime, to_gbcs_seconds
from firmware_emu.core.consumption import HALF_HOUR
from firmware_emu.core.cosem import attr_key
from firmware_emu.core.provisioning import default_anchors, device_keys
from firmware_emu.esme import metering
from firmware_emu.esme.device import Esme

T0 = 1420070400.0  # 2015-01-01T00:00:00Z
NULL = {"type": "null-data", "value": None}


@pytest.fixture
def pki(own_pki):
    return own_pki


@pytest.fixture
def esme(pki):
    summary, ks = pki
    return Esme(device_keys(ks, summary.devices[0]), anchors=default_anchors(ks), now=T0, profile={"seed": 7})


def party(pki, role=Role.SUPPLIER) -> RemoteParty:
    summary, ks = pki
    return RemoteParty(ks, summary.organisations[role])


def command(rp: RemoteParty, esme, code: int, specs: list, data: list) -> dict:
    return {"grouping_header": {"cra_flag": "command", "originator": rp.eui.hex().upper(),
                                "recipient": esme.eui.hex().upper(), "date_time": None,
                                "other_information": {"message_code": f"0x{code:04X}"}},
            "payload": {"dlms": {"access_request": {"long_invoke_id_and_priority": "20000000", "date_time": "",
                                                    "request_specifications": specs, "data": data}}},
            "signature": ""}


def get(class_id, obis, attr, selection=None) -> dict:
    return {"kind": "get-with-selection" if selection else "get",
            "descriptor": {"class_id": class_id, "instance_id": obis, "attribute_id": attr},
            "access_selection": selection}


def protected(rp: RemoteParty, esme, code: int, obis30: str, targets: list) -> dict:
    """A get_protected_attributes command: targets are (class, obis hex, attr, access selection or None)."""
    descriptors = []
    for class_id, ln, attr, access in targets:
        descriptors.append({"type": "structure", "value": [
            {"type": "long-unsigned", "value": class_id}, {"type": "octet-string", "value": ln},
            {"type": "integer", "value": attr}, {"type": "long-unsigned", "value": 0},
            access or {"type": "structure", "value": [{"type": "enum", "value": 0}, NULL]}]})
    params = {"type": "structure", "value": [{"type": "enum", "value": 2}, {"type": "structure", "value": [
        {"type": "octet-string", "value": "04" + "00" * 8}, {"type": "octet-string", "value": "00" * 8},
        {"type": "octet-string", "value": "00" * 8}, {"type": "octet-string", "value": ""},
        {"type": "structure", "value": [{"type": "enum", "value": 2}, {"type": "structure", "value": [
            {"type": "octet-string", "value": "02"}, {"type": "octet-string", "value": ""}]}]}]}]}
    arg = {"type": "structure", "value": [{"type": "array", "value": descriptors},
                                          {"type": "array", "value": [params]}]}
    spec = {"kind": "action", "descriptor": {"class_id": 30, "instance_id": obis30, "method_id": 1},
            "access_selection": None}
    return command(rp, esme, code, [spec], [arg])


def date_range(t_from: float, t_to: float) -> dict:
    return {"type": "structure", "value": [{"type": "enum", "value": 1}, {"type": "structure", "value": [
        {"type": "octet-string", "value": dlms_datetime(t_from).hex().upper()},
        {"type": "octet-string", "value": dlms_datetime(t_to).hex().upper()}]}]}


def response(out) -> dict:
    kinds = [e.kind for e in out]
    assert kinds[0] == "response", kinds
    return decode(out[0].frame)


def dlms_data(msg) -> list:
    return msg["payload"]["dlms"]["access_response"]["data"]


def results(msg) -> list:
    return [r["result"] for r in msg["payload"]["dlms"]["access_response"]["results"]]


def decrypted(pki, out) -> dict:
    msg = response(out)
    v = verify_message(out[0].frame, msg, pki[1])
    assert v["mac"] == "valid" and v["decryption"] == "valid", v
    return v["decrypted"][0]["data"]


# ------------------------------------------------------------------------------------------ behaviour

def test_ecs17a_import_register_rises_with_time_and_is_the_model(pki, esme):
    rp = party(pki, Role.NETWORK_OPERATOR)
    cmd = command(rp, esme, 0x0026, [get(3, "1-0:1.8.0.255", 2), get(3, "1-0:1.8.0.255", 3)], [NULL, NULL])
    first = dlms_data(response(esme.receive(rp.build(cmd), T0)))
    later = dlms_data(response(esme.receive(rp.build(cmd), T0 + 3600)))
    model = metering.meter(esme)
    assert first[0] == {"type": "double-long-unsigned", "value": model.energy_wh(T0)}
    assert later[0]["value"] == model.energy_wh(T0 + 3600) > first[0]["value"]
    assert first[1]["value"][1] == {"type": "enum", "value": 30}     # Wh


def test_a_different_seed_is_a_different_meter(pki):
    summary, ks = pki
    a = Esme(device_keys(ks, summary.devices[0]), anchors=default_anchors(ks), now=T0, profile={"seed": 1})
    b = Esme(device_keys(ks, summary.devices[0]), anchors=default_anchors(ks), now=T0, profile={"seed": 2})
    assert metering.meter(a).energy_wh(T0) != metering.meter(b).energy_wh(T0)


def test_ecs17b_decrypts_to_the_register_values(pki, esme):
    rp = party(pki)
    out = esme.receive(rp.build(protected(rp, esme, 0x0027, "0-0:43.2.8.255",
                                          [(1, "00005E2C220A", 2, None)])), T0)
    msg = response(out)
    params = dlms_data(msg)[0]["value"][0]["value"][0]["value"][1]["value"]
    assert params[1]["value"] == esme.eui.hex().upper() and params[2]["value"] == rp.eui.hex().upper()
    assert params[0]["value"] == "04" + f"{rp.last_counter:016X}"
    collection = decrypted(pki, out)["value"][0]
    model = metering.meter(esme)
    assert collection["value"][0]["value"] == model.energy_wh(T0)
    assert collection["value"][2]["value"] == model.reactive_varh(T0)
    entry = Catalogue.for_device("ESME").attribute(1, "0-0:94.44.34.10", 2)
    assert same_shape(collection, default_value(entry)) is None


def test_ecs22b_range_returns_exactly_the_half_hours_in_range(pki, esme):
    rp = party(pki)
    t_from, t_to = T0 - 6 * 3600, T0 - 3 * 3600 + 60       # 3 h and a minute: 7 capture times
    out = esme.receive(rp.build(protected(rp, esme, 0x0037, "0-0:43.2.7.255",
                                          [(7, "0000630100FF", 2, date_range(t_from, t_to))])), T0)
    rows = decrypted(pki, out)["value"][0]["value"]["values"]
    expected = list(range(to_gbcs_seconds(t_from), to_gbcs_seconds(t_to) + 1, HALF_HOUR))
    assert [r[0] for r in rows] == expected
    model = metering.meter(esme)
    for t, wh in rows:
        end = t + 946684800
        assert wh == model.energy_wh(end) - model.energy_wh(end - HALF_HOUR)


def test_profile_has_no_entries_in_the_future(pki, esme):
    rp = party(pki)
    spec = get(7, "0-0:99.1.2.255", 2, {"selector": 1, "parameters": {"type": "structure", "value": [
        {"type": "structure", "value": [{"type": "long-unsigned", "value": 1},
                                        {"type": "octet-string", "value": "00005E2C64FF"},
                                        {"type": "integer", "value": 2}, {"type": "long-unsigned", "value": 0}]},
        {"type": "double-long-unsigned", "value": to_gbcs_seconds(T0) - 3600},
        {"type": "double-long-unsigned", "value": to_gbcs_seconds(T0) + 86400},
        {"type": "array", "value": []}]}})
    data = dlms_data(response(esme.receive(rp.build(command(rp, esme, 0x0038, [spec], [NULL])), T0 + 10)))
    assert [r[0] for r in data[0]["value"]["values"]] == [to_gbcs_seconds(T0) - 3600 + i * 1800 for i in range(3)]


def test_tou_registers_follow_the_active_calendar(pki, esme):
    """Two rates: 101 from 00:00, 102 from 07:00: both fill, and the TOU registers sum to the import register."""
    def action(start, sel):
        return {"type": "structure", "value": [{"type": "octet-string", "value": start},
                                               {"type": "octet-string", "value": "00000A0064FF"},
                                               {"type": "long-unsigned", "value": sel}]}
    esme.state["cosem"][attr_key(20, "0-0:13.0.0.255", 5)] = {"type": "array", "value": [
        {"type": "structure", "value": [{"type": "unsigned", "value": 1}, {"type": "array", "value": [
            action("00000000", 101), action("07000000", 102)]}]}]}
    esme.state["cosem"][attr_key(20, "0-0:13.0.0.255", 4)] = {"type": "array", "value": [
        {"type": "structure", "value": [{"type": "octet-string", "value": "01"}] +
         [{"type": "unsigned", "value": 1}] * 7}]}
    assert metering.tou_registers(esme, T0)[0] == metering.meter(esme).energy_wh(T0)   # snapshot taken
    t = T0 + 2 * 86400
    regs = metering.tou_registers(esme, t)
    assert sum(regs) == metering.meter(esme).energy_wh(t)
    assert regs[1] > 0 and regs[0] > metering.meter(esme).energy_wh(T0)
    assert not any(regs[2:])


def test_refused_commands_show_in_the_security_log_and_ecs15a_clears_the_event_log(pki, esme):
    rp, no = party(pki), party(pki, Role.NETWORK_OPERATOR)
    good = no.build(command(no, esme, 0x0026, [get(3, "1-0:2.8.0.255", 2)], [NULL]))
    bad = bytearray(good)
    bad[-1] ^= 1                                                   # MAC broken
    esme.receive(bytes(bad), T0 + 5)
    everything = {"selector": 1, "parameters": {"type": "structure", "value": [
        {"type": "structure", "value": [{"type": "long-unsigned", "value": 1},
                                        {"type": "octet-string", "value": "00005E2C64FF"},
                                        {"type": "integer", "value": 2}, {"type": "long-unsigned", "value": 0}]},
        {"type": "double-long-unsigned", "value": 0}, {"type": "double-long-unsigned", "value": 0xFFFFFFFF},
        {"type": "array", "value": []}]}}
    cmd = command(rp, esme, 0x0049, [get(7, "0-0:99.98.1.255", 2, everything)], [NULL])
    rows = dlms_data(response(esme.receive(rp.build(cmd), T0 + 10)))[0]["value"]["values"]
    assert [to_gbcs_seconds(T0 + 5), 0x8F53] in rows

    from firmware_emu.core.logs import append_log, log_rows
    append_log(esme, "event", [to_gbcs_seconds(T0), 0x8F01, ""])
    clear = {"kind": "action", "descriptor": {"class_id": 7, "instance_id": "0-0:99.98.0.255", "method_id": 1},
             "access_selection": None}
    msg = response(esme.receive(rp.build(command(rp, esme, 0x0024, [clear], [{"type": "integer", "value": 0}])),
                                T0 + 20))
    assert results(msg) == ["success"]
    assert log_rows(esme, "event") == []
    assert [to_gbcs_seconds(T0 + 20), 0x8F52] in log_rows(esme, "security")


def test_injected_fault_inside_a_protected_read_fails_the_read(pki, esme):
    rp = party(pki)
    esme.faults.fail("1/0-0:94.44.34.10/a2", "hardware-fault")
    out = esme.receive(rp.build(protected(rp, esme, 0x0027, "0-0:43.2.8.255",
                                          [(1, "00005E2C220A", 2, None)])), T0)
    assert results(response(out)) == ["hardware-fault"]


def test_reads_are_not_replay_protected_so_a_replayed_read_is_answered_again(pki, esme):
    """GBCS leaves reads (ECS17a) out of replay protection: the same frame twice gets two responses."""
    rp = party(pki, Role.NETWORK_OPERATOR)
    frame = rp.build(command(rp, esme, 0x0026, [get(3, "1-0:2.8.0.255", 2)], [NULL]))
    assert response(esme.receive(frame, T0))
    assert response(esme.receive(frame, T0 + 1))


# ------------------------------------------------------------------------------------------ RTDS shapes

RTDS_CASES = (
    "11.2_ECS52 3.3_ECS15a 4.1.1_ECS17b 4.1.2_ECS17d 4.1.3_ECS17e 4.10_ECS23 4.11.1_ECS24 4.11.2_ECS24b "
    "4.12.1_ECS18b 4.14_ECS21b 4.17_ECS66 4.2_ECS17a 4.3_ECS19 4.4.2_ECS20b 4.4.3_ECS20c 4.4.5_ECS20d "
    "4.6.2_ECS21c 4.8.1_ECS22b 4.8.2_ECS22c 4.8.3_ECS22a 6.13_ECS35a 6.13_ECS35b 6.13_ECS35e 6.13_ECS35f "
    "6.2.10_ECS25r1 6.2.3_ECS26d 6.2.3_ECS26l 6.2.4_ECS26e 6.2.4_ECS26m 6.2.7_ECS40 6.2.9_ECS26j 7.11_ECS61c "
    "7.14_ECS61d 7.7_ECS61a").split()


@pytest.fixture(scope="module")
def rtds_keys(rtds_dir):
    from protocols.security.pki import PkiIssuer
    ks = Keystore(rtds_dir / "keystore")
    return ks, PkiIssuer(seed=1), make_verifier(ks)


def _success_commands(rtds: pathlib.Path):
    for d in RTDS_CASES:
        yield from sorted((rtds / d).glob("*SUCCESS_COMMAND_GBCS.HEX"))


@pytest.mark.parametrize("case", [c.split("_", 1)[1] for c in RTDS_CASES])
def test_rtds_success_response_shapes(case, rtds, rtds_keys):
    from hil.conformance.codec import read_message_file
    ks, issuer, verifier = rtds_keys
    files = [f for f in _success_commands(rtds) if f.parent.name.endswith(case)]
    if not files:
        pytest.skip(f"no RTDS SUCCESS case for {case}")
    for cmd_file in files:
        frame = read_message_file(cmd_file)
        expected_raw = read_message_file(pathlib.Path(str(cmd_file).replace("_COMMAND_", "_RESPONSE_")))
        expected = decode(expected_raw)
        eui = decode(frame)["grouping_header"]["recipient"]
        device = Esme(device_keys(ks, eui, issuer=issuer), anchors=default_anchors(ks), now=T0,
                      profile={"twin": "_TWIN_" in cmd_file.name})
        out = device.receive(frame, T0)
        got = decode(response(out) and out[0].frame)
        ga, gb = got["grouping_header"], expected["grouping_header"]
        assert ("mac_header" in got) == ("mac_header" in expected), cmd_file.name
        for k in ("cra_flag", "originator_counter", "originator", "recipient"):
            assert ga[k] == gb[k], (cmd_file.name, k)
        oi_a, oi_b = dict(ga["other_information"]), dict(gb["other_information"])
        if "supplementary_originator_counter" in oi_b:
            assert "supplementary_originator_counter" in oi_a, cmd_file.name
            # the device's own counter: its value depends on the alerts it raised before
            oi_a.pop("supplementary_originator_counter"), oi_b.pop("supplementary_originator_counter")
        assert oi_a == oi_b, cmd_file.name
        assert (ga["date_time"] is None) == (gb["date_time"] is None), cmd_file.name
        assert results(got) == results(expected), cmd_file.name
        assert same_shape(dlms_data(got), dlms_data(expected)) is None, cmd_file.name
        va, vb = verifier(out[0].frame, got), verifier(expected_raw, expected)
        assert va["mac"] in ("valid", "absent") and va["decryption"] == vb["decryption"], (cmd_file.name, va)
        for a, b in zip(va["decrypted"], vb["decrypted"]):
            assert same_shape(a["data"], b["data"]) is None, cmd_file.name


def test_billing_log_captures_are_month_starts(pki, esme):
    rp = party(pki)
    t_from = calendar.timegm((2014, 10, 15, 0, 0, 0))
    out = esme.receive(rp.build(protected(rp, esme, 0x0030, "0-0:43.2.2.255",
                                          [(7, "0000620100FF", 2, date_range(t_from, T0))])), T0 + 60)
    rows = decrypted(pki, out)["value"][0]["value"]["values"]
    assert [r[0] for r in rows] == [to_gbcs_seconds(calendar.timegm((y, m, 1, 0, 0, 0)))
                                    for y, m in ((2014, 11), (2014, 12), (2015, 1))]
    model = metering.meter(esme)
    assert rows[-1][1] == model.energy_wh(T0) and sum(rows[-1][2]) == rows[-1][1]
