"""ESME supply control (ECS42/43/44/45), replay protection of a critical supply command, clock setting and
commissioning (ECS70), alert behaviours (ECS25a/r1); RTDS shapes of the SUCCESS cases."""
from __future__ import annotations

import copy

import pytest

from firmware_emu.core.alerts import AlertCode
from firmware_emu.core.clock import dlms_datetime, parse_dlms_datetime
from firmware_emu.esme import prepayment, supply
from protocols.security import Role
from protocols.security.pki import DEFAULT_ORGANISATIONS, default_device_eui

from test_esme_prepayment import T0, data, dlms_command, results, rtds_shape_mismatch, send

SUPPLIER = DEFAULT_ORGANISATIONS[Role.SUPPLIER]
DEVICE = default_device_eui(1)




def script(code: int, script_id: int) -> dict:
    return dlms_command(code, ("action", 9, supply.SUPPLY_SCRIPTS, 1, {"type": "long-unsigned", "value": script_id}))


ECS42 = lambda: script(0x004F, supply.SCRIPT_ENABLE)      # noqa: E731
ECS43 = lambda: script(0x0050, supply.SCRIPT_DISABLE)     # noqa: E731
ECS44 = lambda: script(0x0051, supply.SCRIPT_ARM)         # noqa: E731


def ecs45(esme, supplier) -> int:
    response, _ = send(esme, supplier, dlms_command(0x0052, ("get", 70, supply.DISCONNECT_CONTROL, 3, None)))
    assert results(response) == ["success"]
    assert data(response)[0]["type"] == "enum"
    return data(response)[0]["value"]


def test_disable_then_enable(esme, supplier):
    assert ecs45(esme, supplier) == supply.CONTROL_STATE["enabled"]
    response, alerts = send(esme, supplier, ECS43())
    assert results(response) == ["success"] and alerts == []                 # disabling raises nothing
    assert response.get("signature") and "mac_header" not in response        # critical: device-signed DF
    assert ecs45(esme, supplier) == supply.CONTROL_STATE["disabled"]
    response, _ = send(esme, supplier, ECS42())
    assert results(response) == ["success"]
    assert ecs45(esme, supplier) == supply.CONTROL_STATE["enabled"]


def test_arm_then_the_consumer_presses_the_button(esme, supplier):
    send(esme, supplier, ECS44())                                            # arming an enabled supply: no change
    assert ecs45(esme, supplier) == supply.CONTROL_STATE["enabled"]
    assert not supply.press_button(esme, T0)
    send(esme, supplier, ECS43())
    response, _ = send(esme, supplier, ECS44())
    assert results(response) == ["success"]
    assert ecs45(esme, supplier) == supply.CONTROL_STATE["armed"]
    assert supply.press_button(esme, T0 + 5)
    assert ecs45(esme, supplier) == supply.CONTROL_STATE["enabled"]


def test_unknown_script_fails_and_changes_nothing(esme, supplier):
    response, _ = send(esme, supplier, script(0x0050, 53))
    assert results(response) == ["object-undefined"]
    assert ecs45(esme, supplier) == supply.CONTROL_STATE["enabled"]


def test_injected_fault_on_the_load_switch(esme, supplier):
    esme.faults.fail(f"9/{supply.SUPPLY_SCRIPTS}/m1", "hardware-fault")
    response, _ = send(esme, supplier, ECS43())
    assert results(response) == ["hardware-fault"]
    assert supply.control_state(esme) == supply.CONTROL_STATE["enabled"]


def _without_bookkeeping(state: dict) -> dict:
    s = copy.deepcopy(state)
    for bookkeeping in ("security_log", "alert_log"):   # the refusal is logged and alerted, nothing else moves
        s.pop(bookkeeping, None)
    s["counters"].pop("alert")
    return s


def test_replayed_ecs43_is_refused_and_changes_nothing(esme, supplier):
    disable = supplier.build(ECS43())
    esme.receive(disable, T0)
    send(esme, supplier, ECS42())
    assert supply.control_state(esme) == supply.CONTROL_STATE["enabled"]
    before = copy.deepcopy(esme.state)
    out = esme.receive(disable, T0 + 60)
    assert [(e.kind, e.alert_code) for e in out] == [("alert", AlertCode.FAILED_AUTHENTICATION_OR_AUTHORISATION)]
    assert supply.control_state(esme) == supply.CONTROL_STATE["enabled"]
    assert _without_bookkeeping(esme.state) == _without_bookkeeping(before)
    assert esme.state["security_log"][-1]["reason"] == "replayed_counter"


# ------------------------------------------------------------------------------------------------- clock

def ecs70(start: float, end: float) -> dict:
    never = "FFFFFFFFFFFFFFFFFF8000FF"
    window = {"type": "structure", "value": [{"type": "octet-string", "value": never},
                                             {"type": "octet-string", "value": dlms_datetime(start).hex()},
                                             {"type": "octet-string", "value": dlms_datetime(end).hex()}]}
    return dlms_command(0x0062, ("set", 8, supply.CLOCK, 9, {"type": "enum", "value": 5}),
                        ("action", 8, supply.CLOCK, 5, window),
                        ("action", 8, supply.CLOCK, 4, {"type": "integer", "value": 0}),
                        ("get", 8, supply.CLOCK, 2, None), ("get", 8, supply.CLOCK, 4, None))


def test_ecs70_commissioning_moves_the_clock(esme, supplier):
    esme.state["esme"]["clock_offset"] = -3600.0                              # the meter runs an hour late
    assert supply.device_time(esme, T0) == T0 - 3600
    assert not esme.state["esme"]["commissioned"]
    response, alerts = send(esme, supplier, ecs70(T0 - 10, T0 + 10), T0)
    assert results(response) == ["success"] * 5 and alerts == []
    assert parse_dlms_datetime(bytes.fromhex(data(response)[3]["value"])) == T0
    assert data(response)[4] == {"type": "unsigned", "value": supply.CLOCK_STATUS_OK}
    assert supply.device_time(esme, T0 + 100) == T0 + 100
    assert esme.state["esme"]["commissioned"] is True


def test_ecs70_outside_its_validity_window_does_not_adjust(esme, supplier):
    esme.state["esme"]["clock_offset"] = 120.0
    response, alerts = send(esme, supplier, ecs70(T0 - 600, T0 - 300), T0)
    assert results(response) == ["success", "success", "other-reason", "other-reason", "other-reason"]
    assert alerts == [AlertCode.CLOCK_NOT_ADJUSTED_GT_10S]
    assert supply.device_time(esme, T0) == T0 + 120
    assert not esme.state["esme"]["commissioned"]


# ------------------------------------------------------------------------------------------------- alert behaviour

def behaviour(mask_bits: list[int], on_bits: list[int]) -> dict:
    mask = sum(1 << b for b in mask_bits)
    actions = sum(1 << b for b in on_bits)
    value = ((mask << 256) | actions).to_bytes(64, "big").hex().upper()
    return {"type": "bit-string", "value": {"length": 512, "bits": value}}


def test_alert_behaviour_switches_a_non_critical_alert_off(esme, supplier):
    assert supply.alert_enabled(esme.state, AlertCode.CREDIT_BELOW_LOW_CREDIT_THRESHOLD)
    response, _ = send(esme, supplier, dlms_command(0x00AC, ("set", 1, "0-30:97.98.11.255", 2, behaviour([0x0D], []))))
    assert results(response) == ["success"]
    assert not supply.alert_enabled(esme.state, AlertCode.CREDIT_BELOW_LOW_CREDIT_THRESHOLD)
    assert supply.alert_enabled(esme.state, AlertCode.CREDIT_ADDED_LOCALLY)             # outside the mask
    assert supply.alert_enabled(esme.state, AlertCode.CREDIT_BELOW_DISABLEMENT_THRESHOLD)  # critical
    response, _ = send(esme, supplier, dlms_command(0x00EE, ("get", 1, "0-30:97.98.15.255", 2, None)))
    bits = int(data(response)[0]["value"]["bits"], 16)
    assert not bits >> 0x0D & 1 and bits >> 0x0E & 1
    prepayment.set_payment_mode(esme, prepayment.PREPAYMENT_MODE)
    prepayment.prepayment_state(esme)["meter_balance"] = 300_000
    alerts = prepayment.on_consumption(esme, T0 + 60, energy_wh=10_000)
    assert AlertCode.CREDIT_BELOW_LOW_CREDIT_THRESHOLD not in [a.alert_code for a in alerts]
    send(esme, supplier, dlms_command(0x00AC, ("set", 1, "0-30:97.98.11.255", 2, behaviour([0x0D], [0x0D]))))
    assert supply.alert_enabled(esme.state, AlertCode.CREDIT_BELOW_LOW_CREDIT_THRESHOLD)


def test_alert_behaviour_of_the_wrong_length_is_refused(esme, supplier):
    short = {"type": "bit-string", "value": {"length": 256, "bits": "00" * 32}}
    response, _ = send(esme, supplier, dlms_command(0x00AC, ("set", 1, "0-30:97.98.11.255", 2, short)))
    assert results(response) == ["type-unmatched"]


# ------------------------------------------------------------------------------------------------- RTDS

RTDS_CASES = ["7.1_ECS42", "7.2_ECS43", "7.4_ECS45", "6.5_ECS29a", "6.5_ECS29d", "6.27_ECS29e", "6.27_ECS29f",
              "6.12_ECS34", "6.18.1_ECS37", "7.12_ECS38", "6.26_ECS48", "6.18.2_ECS57", "7.9_ECS62Add",
              "8.1.1_ECS70Commission", "3.1_ECS10", "3.2_ECS12", "3.4_ECS16", "9.1_ECS50", "6.22_ECS25a",
              "6.22_ECS25a2", "6.22_ECS25a3", "6.22_ECS25b", "6.22_ECS25b3", "6.2.10_ECS25r1",
              "6.8_ECS30"]


@pytest.mark.parametrize("case", RTDS_CASES)
def test_rtds_success_shapes(rtds, keystore_dir, case):
    assert rtds_shape_mismatch(rtds, keystore_dir, case) == []
