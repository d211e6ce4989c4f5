"""ESME tariffs and future-dated execution: passive values become active at their activation time, each
instruction reporting 8F66 (or 8F67 when it fails then); "never" cancels; the TOU calendar drives the rate.

Commands are built by a head end (`hil.remote_party`) with an own test PKI; the RTDS checks at the end replay
the published SUCCESS cases and compare the shapes of responses and 8F66 alerts (skipped without RTDS)."""
from __future__ import annotations

import copy
import json
import pathlib

import pytest

from protocols.gbcs.message import decode
from protocols.gbcs.registry import REGISTRY
from protocols.security.keystore import Keystore, Role
from protocols.security.pki import PkiIssuer
from hil.remote_party import RemoteParty

from firmware_emu.core.alerts import FUTURE_DATED_DLMS_ALERT, AlertCode
from firmware_emu.core.catalogue import Catalogue, default_value, same_shape
from firmware_emu.core.clock import DLMS_NEVER, DLMS_NOW, dlms_datetime
from firmware_emu.core.cosem import AccessContext, attr_key
from firmware_emu.core.provisioning import default_anchors, device_keys
from firmware_emu.esme import future, tariff
from firmware_emu.esme.device import Esme

T0 = 1420070400.0          # 2015-01-01T00:00:00Z (a Thursday)
DAY = 86400.0
PRICES = "0-0:19.20.0.255"
STANDING = "0-0:19.20.4.255"
CAT = Catalogue.for_device("ESME")


_Esme = Esme


@pytest.fixture
def pki(own_pki):
    return own_pki




@pytest.fixture
def supplier(pki):
    summary, ks = pki
    return RemoteParty(ks, summary.organisations[Role.SUPPLIER], initial_counter=1000)


# -------------------------------------------------------------------------------------------- helpers

def _eui(dev) -> str:
    return dev.eui.hex().upper()


def _set(class_id, obis, attr) -> dict:
    return {"kind": "set", "descriptor": {"class_id": class_id, "instance_id": obis, "attribute_id": attr},
            "access_selection": None}


def _command(rp: RemoteParty, dev, code: int, specs: list, data: list) -> dict:
    return {"grouping_header": {"cra_flag": "command", "originator": rp.eui.hex().upper(), "recipient": _eui(dev),
                                "date_time": None, "other_information": {"message_code": f"0x{code:04X}"}},
            "payload": {"dlms": {"access_request": {"long_invoke_id_and_priority": "20000000", "date_time": "",
                                                    "request_specifications": specs, "data": data}}},
            "signature": ""}


def _when(at) -> dict:
    raw = {"now": DLMS_NOW, "never": DLMS_NEVER}.get(at) if isinstance(at, str) else dlms_datetime(at)
    return {"type": "octet-string", "value": raw.hex().upper()}


def _charge(obis: str, prices: list[int]) -> dict:
    """A unit_charge_passive of the appendix's shape carrying `prices`."""
    value = copy.deepcopy(default_value(CAT.attribute(113, obis, 6)))
    element = value["value"][2]["value"][0]
    table = []
    for i, p in enumerate(prices, 1):
        e = copy.deepcopy(element)
        if e["value"][0]["value"]:
            e["value"][0]["value"] = f"{i:02X}"
        e["value"][1]["value"] = p
        table.append(e)
    value["value"][2]["value"] = table
    return value


def ecs01b(rp, dev, at, prices=(1500, 1700), standing=2500) -> bytes:
    """ECS01b Set Price on ESME: standing charge and TOU price matrix with one activation time."""
    specs = [_set(113, STANDING, 6), _set(113, PRICES, 6), _set(113, STANDING, 7), _set(113, PRICES, 7)]
    data = [_charge(STANDING, [standing]), _charge(PRICES, list(prices)), _when(at), _when(at)]
    return rp.build(_command(rp, dev, 0x00A2, specs, data))


def _read(dev, class_id, obis, attr, t):
    """A DLMS get served by the ESME's object model at time t."""
    spec = {"kind": "get", "descriptor": {"class_id": class_id, "instance_id": obis, "attribute_id": attr},
            "access_selection": None}
    req = {"long_invoke_id_and_priority": "20000001", "date_time": "", "request_specifications": [spec],
           "data": [{"type": "null-data", "value": None}]}
    resp = dev.server().access(AccessContext(dev, t), req)["access_response"]
    assert resp["results"][0]["result"] == "success"
    return resp["data"][0]


def _prices(value) -> list[int]:
    return [e["value"][1]["value"] for e in value["value"][2]["value"]]


def _results(out) -> list[str]:
    msg = decode(out[0].frame)
    return [r["result"] for r in msg["payload"]["dlms"]["access_response"]["results"]]


def _outcome(alert) -> tuple[int, int, int, int, str, int]:
    """(alert code, message code, command counter, class, OBIS hex, attr) of a 00CC alert."""
    body = decode(alert.frame)["payload"]["dlms"]["data_notification"]["notification_body"]["value"]
    raw = bytes.fromhex(body[2]["value"])
    return (body[0]["value"], int.from_bytes(raw[0:2], "big"), int.from_bytes(raw[2:10], "big"),
            int.from_bytes(raw[10:12], "big"), raw[12:18].hex().upper(), raw[18])


# -------------------------------------------------------------------------------------------- future-dated

def test_future_dated_price_takes_effect_at_its_time(esme, supplier):
    at = T0 + 10 * DAY
    before = _prices(_read(esme, 113, PRICES, 5, T0))
    out = esme.receive(ecs01b(supplier, esme, at), T0)
    assert [e.kind for e in out] == ["response"]
    assert _results(out) == ["success"] * 4
    assert decode(out[0].frame)["grouping_header"]["date_time"] is not None   # future-dated capable
    counter = supplier.last_counter
    assert [p["target"] for p in future.pending(esme)] == [[113, STANDING, 7], [113, PRICES, 7]]

    assert esme.tick(at - 1) == []
    assert _prices(_read(esme, 113, PRICES, 5, at - 1)) == before       # still the old prices

    alerts = esme.tick(at)
    assert [(a.kind, a.message_code, a.alert_code) for a in alerts] == \
        [("alert", FUTURE_DATED_DLMS_ALERT, AlertCode.FUTURE_DATED_COMMAND_SUCCEEDED)] * 2
    assert [_outcome(a) for a in alerts] == [
        (0x8F66, 0x00A2, counter, 113, "0000131404FF", 7),
        (0x8F66, 0x00A2, counter, 113, "0000131400FF", 7)]
    assert "mac_header" not in decode(alerts[0].frame)                  # critical alert: DF, signed
    assert _prices(_read(esme, 113, PRICES, 5, at)) == [1500, 1700]
    assert _prices(_read(esme, 113, STANDING, 5, at)) == [2500]
    assert future.pending(esme) == [] and esme.next_wakeup() is None
    json.dumps(esme.state)                                              # persisted schedule stays JSON


def test_fault_at_execution_raises_8F67_and_changes_nothing(esme, supplier):
    at = T0 + DAY
    esme.faults.fail(f"113/{PRICES}/a6", "hardware-fault", at_execution=True)
    out = esme.receive(ecs01b(supplier, esme, at), T0)
    assert _results(out) == ["success"] * 4                           # accepted: the fault is at execution
    before = _prices(_read(esme, 113, PRICES, 5, T0))
    alerts = esme.tick(at + 5)
    assert [a.alert_code for a in alerts] == [AlertCode.FUTURE_DATED_COMMAND_SUCCEEDED,
                                              AlertCode.FUTURE_DATED_COMMAND_FAILED]
    assert _outcome(alerts[1])[3:] == (113, "0000131400FF", 7)
    assert _prices(_read(esme, 113, PRICES, 5, at)) == before          # failed instruction: not activated
    assert _prices(_read(esme, 113, STANDING, 5, at)) == [2500]        # the other one was


def test_fault_on_receipt_refuses_with_break_on_error_and_schedules_nothing(esme, supplier):
    esme.faults.fail(f"113/{STANDING}/a7", "hardware-fault")
    out = esme.receive(ecs01b(supplier, esme, T0 + DAY), T0)
    assert _results(out) == ["success", "success", "hardware-fault", "other-reason"]
    assert future.pending(esme) == []


def test_never_cancels_the_pending_instruction(esme, supplier):
    at = T0 + DAY
    esme.receive(ecs01b(supplier, esme, at), T0)
    assert len(future.pending(esme)) == 2
    out = esme.receive(ecs01b(supplier, esme, "never", prices=(9, 9)), T0 + 60)
    assert _results(out) == ["success"] * 4
    assert future.pending(esme) == []
    before = _prices(_read(esme, 113, PRICES, 5, T0))
    assert esme.tick(at + DAY) == []
    assert _prices(_read(esme, 113, PRICES, 5, at + DAY)) == before


def test_a_newer_command_supersedes_the_pending_one(esme, supplier):
    esme.receive(ecs01b(supplier, esme, T0 + DAY), T0)
    esme.receive(ecs01b(supplier, esme, T0 + 2 * DAY, prices=(11, 12)), T0 + 60)
    assert [p["at"] for p in future.pending(esme)] == [T0 + 2 * DAY] * 2
    assert esme.tick(T0 + DAY + 1) == []
    assert len(esme.tick(T0 + 2 * DAY)) == 2
    assert _prices(_read(esme, 113, PRICES, 5, T0 + 2 * DAY)) == [11, 12]


def test_immediate_activation_applies_at_once_without_alert(esme, supplier):
    out = esme.receive(ecs01b(supplier, esme, "now", prices=(21, 22)), T0)
    assert [e.kind for e in out] == ["response"]
    assert _prices(_read(esme, 113, PRICES, 5, T0)) == [21, 22]
    assert future.pending(esme) == []


def test_replayed_critical_command_is_refused(esme, supplier):
    frame = ecs01b(supplier, esme, T0 + DAY)
    assert [e.kind for e in esme.receive(frame, T0)] == ["response"]
    state = json.dumps(esme.state["schedule"])
    out = esme.receive(frame, T0 + 1)
    assert [(e.kind, e.alert_code) for e in out] == [("alert", AlertCode.FAILED_AUTHENTICATION_OR_AUTHORISATION)]
    assert json.dumps(esme.state["schedule"]) == state


def test_future_dated_payment_mode_switch(esme, supplier):
    """ECS03-like: the passive Account's mode becomes the active payment mode at the activation time."""
    acct = "0-1:19.0.0.255"
    ccc = default_value(CAT.attribute(111, acct, 11))
    specs = [_set(111, acct, 2), _set(111, acct, 11), _set(111, acct, 13)]
    mode = {"type": "structure", "value": [{"type": "enum", "value": 2}, {"type": "enum", "value": 1}]}
    at = T0 + 3 * DAY
    out = esme.receive(supplier.build(_command(supplier, esme, 0x001A, specs, [mode, ccc, _when(at)])), T0)
    assert _results(out) == ["success"] * 3
    assert tariff.tariff_state(esme.state)["payment_mode"] == "credit"
    [alert] = esme.tick(at)
    assert _outcome(alert)[3:] == (111, "0001130000FF", 13)
    assert tariff.tariff_state(esme.state)["payment_mode"] == "prepayment"
    assert _read(esme, 111, "0-0:19.0.0.255", 2, at) == mode


# -------------------------------------------------------------------------------------------- TOU rate, blocks, debt

def _calendar_value(week_days: list[int], switches: dict[int, list[tuple[int, int]]]) -> tuple[dict, dict, dict]:
    """Season/week/day profile values of one season, one week, and day profiles {day id: [(hour, selector)]}."""
    os_ = lambda b: {"type": "octet-string", "value": b.hex().upper()}        # noqa: E731
    u = lambda n: {"type": "unsigned", "value": n}                               # noqa: E731
    season = {"type": "array", "value": [{"type": "structure", "value": [
        os_(b"all"), os_(bytes.fromhex("FFFF0101FF000000008000FF")), os_(b"W1")]}]}
    week = {"type": "array", "value": [{"type": "structure", "value": [os_(b"W1")] + [u(d) for d in week_days]}]}
    days = []
    for day_id, day in sorted(switches.items()):
        actions = [{"type": "structure", "value": [os_(bytes([h, 0, 0, 0])), os_(bytes.fromhex("00000A0064FF")),
                                                   {"type": "long-unsigned", "value": sel}]}
                   for h, sel in day]
        days.append({"type": "structure", "value": [u(day_id), {"type": "array", "value": actions}]})
    return season, week, {"type": "array", "value": days}


def test_future_dated_calendar_drives_the_active_rate(esme, supplier):
    """ECS01c-like: a secondary-element calendar activated in the future changes `active_rate` then."""
    cal = tariff.SECONDARY_CALENDAR
    season, week, days = _calendar_value([2] * 7, {2: [(0, 201), (7, 204), (19, 203)]})
    at = T0 + DAY
    specs = [_set(20, cal, 7), _set(20, cal, 8), _set(20, cal, 9), _set(20, cal, 10)]
    out = esme.receive(supplier.build(_command(supplier, esme, 0x00B7, specs, [season, week, days, _when(at)])), T0)
    assert _results(out) == ["success"] * 4
    t_morning = at + 8 * 3600
    assert tariff.active_rate(esme.state, t_morning, element="secondary") == 1     # no calendar yet
    [alert] = esme.tick(at)
    assert _outcome(alert)[3:] == (20, "00000D0001FF", 10)
    assert tariff.active_rate(esme.state, at + 3 * 3600, element="secondary") == 1
    assert tariff.active_rate(esme.state, t_morning, element="secondary") == 4
    assert tariff.active_rate(esme.state, at + 20 * 3600, element="secondary") == 3


def test_special_day_overrides_the_week(esme):
    season, week, days = _calendar_value([1, 1, 1, 1, 1, 2, 2], {1: [(0, 1), (12, 2)], 2: [(0, 3), (12, 4)]})
    cosem = esme.state["cosem"]
    cal = tariff.PRIMARY_CALENDAR
    cosem[attr_key(20, cal, 3)], cosem[attr_key(20, cal, 4)], cosem[attr_key(20, cal, 5)] = season, week, days
    noon_thu = T0 + 13 * 3600                       # 2015-01-01 is a Thursday (weekday day id 1)
    assert tariff.active_rate(esme.state, noon_thu) == 2          # weekday: day profile 1
    assert tariff.active_rate(esme.state, noon_thu - 6 * 3600) == 1
    assert tariff.active_rate(esme.state, noon_thu + 2 * DAY) == 4  # Saturday: day profile 2
    cosem[attr_key(11, tariff.PRIMARY_SPECIAL_DAYS, 2)] = {"type": "array", "value": [{"type": "structure", "value": [
        {"type": "long-unsigned", "value": 1}, {"type": "octet-string", "value": "FFFF0101FF"},
        {"type": "unsigned", "value": 2}]}]}
    assert tariff.active_rate(esme.state, noon_thu) == 4          # New Year's Day runs day profile 2
    assert tariff.active_rate(esme.state, T0 + 6 * 3600) == 3
    assert tariff.active_rate(esme.state, noon_thu + DAY) == 2      # Friday 2 January: a weekday again


def test_ecs05_resets_the_block_counter_matrix(esme, supplier):
    tariff.accumulate(esme.state, T0, 1234)
    assert sum(map(sum, tariff.tariff_state(esme.state)["block_counters"])) == 1234
    spec = {"kind": "action", "descriptor": {"class_id": 9, "instance_id": tariff.TOU_SCRIPT_TABLE, "method_id": 1},
            "access_selection": None}
    out = esme.receive(supplier.build(_command(supplier, esme, 0x001D, [spec],
                                               [{"type": "long-unsigned", "value": 99}])), T0 + 60)
    assert _results(out) == ["success"]
    ts = tariff.tariff_state(esme.state)
    assert sum(map(sum, ts["block_counters"])) == 0 and ts["block_period_start"] == T0 + 60


def test_block_thresholds_move_consumption_to_the_next_block(esme):
    esme.state["cosem"][attr_key(21, "0-0:16.0.11.255", 2)] = {"type": "array", "value": [
        {"type": "double-long-unsigned", "value": 1000}, {"type": "double-long-unsigned", "value": 0},
        {"type": "double-long-unsigned", "value": 0}]}
    assert tariff.accumulate(esme.state, T0, 600) == (1, 1)
    assert tariff.accumulate(esme.state, T0, 600) == (1, 1)
    assert tariff.accumulate(esme.state, T0, 10) == (1, 2)


def test_ecs07_debt_adjustment_adds_to_total_amount_remaining(esme, supplier):
    debt = "0-0:19.20.3.255"
    spec = {"kind": "action", "descriptor": {"class_id": 113, "instance_id": debt, "method_id": 4},
            "access_selection": None}
    amount = {"type": "double-long", "value": 5000}
    for _ in range(2):
        out = esme.receive(supplier.build(_command(supplier, esme, 0x001E, [spec], [amount])), T0)
        assert _results(out) == ["success"]
    assert esme.state["cosem"][attr_key(113, debt, 12)]["value"] == 10000


# -------------------------------------------------------------------------------------------- RTDS shapes

RTDS_DIRS = ["1.1.2_ECS01c", "1.2.1_ECS01b", "1.6_ECS02", "1.7_ECS05", "2.1_ECS08a", "2.3_ECS07", "6.14.1_ECS46a",
             "6.14.2_ECS46c", "6.14.3_ECS46d", "7.13_ECS47a", "7.16_ECS47e", "7.5_ECS47Activate",
             "7.6_ECS47Deactivate"]


def _rtds_cases(rtds: pathlib.Path):
    for d in RTDS_DIRS:
        for cf in sorted((rtds / d).glob("*SUCCESS_COMMAND_GBCS.HEX")):
            yield cf


def _same_form(got: dict, exp: dict) -> list[str]:
    problems = []
    g, e = got["grouping_header"], exp["grouping_header"]
    if ("mac_header" in got) != ("mac_header" in exp):
        problems.append("form")
    for k in ("cra_flag", "originator", "recipient", "other_information"):
        if g[k] != e[k]:
            problems.append(k)
    if (g["date_time"] is None) != (e["date_time"] is None):
        problems.append("date_time")
    return problems


def test_rtds_success_cases_match_in_shape(rtds_dir):
    """Every SUCCESS command of these families: response form, results and data shapes as RTDS; the future-dated
    ones then raise as many 8F66 alerts as RTDS holds, naming the same activation attributes in the same order."""
    from hil.conformance.codec import read_message_file
    rtds = rtds_dir / "RTDS-4.5.0"
    ks = Keystore(rtds_dir / "keystore")
    checked, problems = 0, []
    for cf in _rtds_cases(rtds):
        cmd = decode(read_message_file(cf))
        assert REGISTRY.get(int(cmd["grouping_header"]["other_information"]["message_code"], 16)) is not None
        dev = _Esme(device_keys(ks, cmd["grouping_header"]["recipient"], issuer=PkiIssuer(seed=1)),
                    anchors=default_anchors(ks), now=T0)
        out = dev.receive(read_message_file(cf), T0)
        exp = decode(read_message_file(pathlib.Path(str(cf).replace("_COMMAND_", "_RESPONSE_"))))
        got = decode(out[0].frame)
        bad = _same_form(got, exp)
        ga, ea = got["payload"]["dlms"]["access_response"], exp["payload"]["dlms"]["access_response"]
        if ga["results"] != ea["results"]:
            bad.append("results")
        bad += [f"data {d}" for a, b in zip(ga["data"], ea["data"]) if (d := same_shape(a, b))]
        variant = cf.name.split("_", 2)[2].rsplit("_COMMAND", 1)[0]
        expected = sorted(cf.parent.glob(f"*_8F66_{variant}_ALERT_*.HEX"),
                          key=lambda p: decode(read_message_file(p))["grouping_header"]["originator_counter"])
        alerts = dev.tick(dev.next_wakeup()) if dev.next_wakeup() is not None else []
        if len(alerts) != len(expected):
            bad.append(f"{len(alerts)} alerts, RTDS {len(expected)}")
        for a, p in zip(alerts, expected):
            am, em = decode(a.frame), decode(read_message_file(p))
            bad += _same_form(am, em)
            gb = am["payload"]["dlms"]["data_notification"]["notification_body"]
            eb = em["payload"]["dlms"]["data_notification"]["notification_body"]
            if same_shape(gb, eb) or gb["value"][0] != eb["value"][0] or gb["value"][2] != eb["value"][2]:
                bad.append(f"alert {p.name}")
        if bad:
            problems.append(f"{cf.name}: {bad}")
        checked += 1
    assert checked >= 20
    assert problems == []
