"""ESME supply control (ECS42/43/44/45), clock setting and commissioning (ECS70), alert behaviours (ECS25a…b3,
read by ECS25r1/r2) and the resets of load-limiting / power-quality / maximum-demand registers (ECS29e/f, ECS57).

Theory of operation
-------------------
Load switch (`state["esme"]["supply"]`: {"state", "reason", "since"}), driven by the Script table
0-0:10.0.106.255 `execute` and shown by Disconnect control 0-0:96.3.10.255 attribute 3 (control_state):

    enabled (1) ──script 52 / credit exhausted──▶ disabled (0) ──script 54 / credit restored──▶ armed (2)
       ▲  ▲                                          │                                            │
       │  └────────────────script 51─────────────────┘                                            │
       └────────────────── script 51, or the consumer presses the button (`press_button`) ─────────┘

Disabling raises nothing by itself (the 0x8F0F credit alert comes from `prepayment.on_consumption`). Arming an
enabled supply leaves it enabled. Faults injected on `9/0-0:10.0.106.255/m1` (also when a future-dated command
executes) fail the script before anything moves: the COSEM server checks them before the object runs.

Clock (Clock 0-0:1.0.0.255): the ESME keeps its own clock as an offset from the time the edge hands it (the Comms
Hub's time): device time = now + `state["esme"]["clock_offset"]` (`device_time`). ECS70 sets clock_base
(attr 9), presets {preset_time, validity start, validity end} (method 5) and adjusts (method 4): GBCS/SMETS
setValidTimeRange, the ESME aligns to the Comms Hub time when that time lies in the validity interval (to
preset_time instead when one is specified), else the clock is not adjusted: `other-reason` and 0x8F0C. The
first successful adjustment commissions the meter (`state["esme"]["commissioned"] = True`, ECS70Commission).
Attribute 2 reads the device time, attribute 4 the clock status (0x02 "doubtful" until first set).

Alert behaviours: a set of `Mask ‖ Actions` (2 × 256 bits, LSB = bit 0) on 0-30:97.98.{11,12,13,14} (supplier:
WAN alerting, HAN sharing, audible alarms, logging) or 0-33:97.98.{11,14} (network operator) changes, for each
mask bit, the matching bit of the 256-bit settings 0-3x:97.98.{15,16,17,18}; bit n stands for alert 0x81nn
(supplier) or 0x80nn (network operator). `alert_enabled(state, code)` tells whether a non-critical alert goes on
the WAN; critical alerts always do. Settings default to all on (audible alarms, .17, all off).

Messages, CIN, supplier name (ECS10/12/16/50), randomised offset (ECS38), APC/boost association (ECS62), voltage
and load limiter thresholds (ECS29a/d, ECS34, ECS37, ECS48) are plain stored attributes: the generic object
serves them with the appendix types.
"""
from __future__ import annotations

import logging

from firmware_emu.core.alerts import CRITICAL_ALERT_CODES, AlertCode
from firmware_emu.core.catalogue import default_value
from firmware_emu.core.clock import dlms_datetime, parse_dlms_datetime
from firmware_emu.core.cosem import AccessFailure, StoredObject, attr_key

log = logging.getLogger(__name__)

__all__ = ["register", "supply_state", "control_state", "enable", "disable", "arm", "press_button",
           "arm_after_credit", "device_time", "alert_enabled", "set_alert_behaviour", "CONTROL_STATE",
           "DISCONNECT_CONTROL", "SUPPLY_SCRIPTS", "CLOCK", "SCRIPT_ENABLE", "SCRIPT_DISABLE", "SCRIPT_ARM"]

DISCONNECT_CONTROL = "0-0:96.3.10.255"
SUPPLY_SCRIPTS = "0-0:10.0.106.255"
CLOCK = "0-0:1.0.0.255"
SCRIPT_ENABLE, SCRIPT_DISABLE, SCRIPT_ARM = 51, 52, 54
#: Disconnect control control_state values (appendix note of ECS45).
CONTROL_STATE = {"disabled": 0, "enabled": 1, "armed": 2}

CLOCK_STATUS_OK = 0x00
CLOCK_STATUS_DOUBTFUL = 0x02

#: Alert behaviour sets → the settings they change, and the alert code prefix of their bits.
BEHAVIOUR_TARGETS = {
    "0-30:97.98.11.255": "0-30:97.98.15.255", "0-30:97.98.12.255": "0-30:97.98.16.255",
    "0-30:97.98.13.255": "0-30:97.98.17.255", "0-30:97.98.14.255": "0-30:97.98.18.255",
    "0-33:97.98.11.255": "0-33:97.98.15.255", "0-33:97.98.14.255": "0-33:97.98.18.255",
}
#: The WAN alerting settings deciding `alert_enabled`, by the alert code's high byte.
WAN_SETTINGS = {0x81: "0-30:97.98.15.255", 0x80: "0-33:97.98.15.255"}
SETTINGS_BITS = 256


# --------------------------------------------------------------------------------------------- supply

def supply_state(device) -> dict:
    esme = device.state.setdefault("esme", {})
    return esme.setdefault("supply", {"state": "enabled", "reason": None, "since": None})


def control_state(device) -> int:
    return CONTROL_STATE[supply_state(device)["state"]]


def _move(device, to: str, now: float, reason: str | None) -> None:
    s = supply_state(device)
    if s["state"] != to:
        device.event("supply", frm=s["state"], to=to, reason=reason)
        s.update(state=to, reason=reason, since=now)


def enable(device, now: float, reason: str = "remote") -> None:
    """Script 51 (ECS42): close the load switch."""
    _move(device, "enabled", now, reason)


def disable(device, now: float, reason: str = "remote") -> None:
    """Script 52 (ECS43) or credit exhaustion: open the load switch (no alert by itself)."""
    _move(device, "disabled", now, reason)


def arm(device, now: float, reason: str = "remote") -> None:
    """Script 54 (ECS44): a disabled supply waits for the consumer; an enabled one stays enabled."""
    if supply_state(device)["state"] == "disabled":
        _move(device, "armed", now, reason)


def arm_after_credit(device, now: float) -> None:
    """Credit came back after exhaustion: only a supply that credit disabled is armed."""
    if supply_state(device)["state"] == "disabled" and supply_state(device)["reason"] == "credit":
        _move(device, "armed", now, "credit")


def press_button(device, now: float) -> bool:
    """The consumer presses the meter's button: an armed supply is enabled. Returns whether it was."""
    if supply_state(device)["state"] != "armed":
        return False
    _move(device, "enabled", now, "local")
    return True


class DisconnectControl(StoredObject):
    """Disconnect control (class 70): output_state (attr 2) and control_state (attr 3) from the supply state."""

    def get(self, ctx, class_id, obis, attr, selection):
        if attr == 2:
            return {"type": "boolean", "value": supply_state(ctx.device)["state"] == "enabled"}
        if attr == 3:
            return {"type": "enum", "value": control_state(ctx.device)}
        return super().get(ctx, class_id, obis, attr, selection)


class SupplyScripts(StoredObject):
    """Script table 0-0:10.0.106.255 `execute(script id)`: 51 enable, 52 disable, 54 arm."""

    def action(self, ctx, class_id, obis, method, arg):
        if method != 1:
            return super().action(ctx, class_id, obis, method, arg)
        if not isinstance(arg, dict) or arg.get("type") != "long-unsigned":
            raise AccessFailure("type-unmatched")
        script = {SCRIPT_ENABLE: enable, SCRIPT_DISABLE: disable, SCRIPT_ARM: arm}.get(arg["value"])
        if script is None:
            raise AccessFailure("object-undefined", f"no supply script {arg['value']}")
        script(ctx.device, ctx.now)
        return None


# --------------------------------------------------------------------------------------------- clock

def device_time(device, now: float) -> float:
    """The ESME's own clock: the edge's time plus the clock offset ECS70 corrects."""
    return device.device_time(now)


class Clock(StoredObject):
    """Clock (class 8) 0-0:1.0.0.255 for ECS70 / ECS70Commission (module docstring)."""

    def get(self, ctx, class_id, obis, attr, selection):
        esme = ctx.device.state.setdefault("esme", {})
        if attr == 2:
            return {"type": "octet-string", "value": dlms_datetime(device_time(ctx.device, ctx.now)).hex().upper()}
        if attr == 4:
            status = esme.get("clock_status", CLOCK_STATUS_OK if esme.get("commissioned") else CLOCK_STATUS_DOUBTFUL)
            return {"type": "unsigned", "value": status}
        return super().get(ctx, class_id, obis, attr, selection)

    def action(self, ctx, class_id, obis, method, arg):
        esme = ctx.device.state.setdefault("esme", {})
        if method == 5:
            try:
                preset, start, end = (bytes.fromhex(v["value"]) for v in arg["value"])
                times = [parse_dlms_datetime(b) if b != b"\xff" * 9 + b"\x80\x00\xff" else None
                         for b in (preset, start, end)]
            except (KeyError, TypeError, ValueError):
                raise AccessFailure("type-unmatched", "preset_adjusting_time is {time, start, end}") from None
            if times[1] is None or times[2] is None or isinstance(times[1], str) or isinstance(times[2], str) \
                    or times[2] < times[1]:
                raise AccessFailure("other-reason", "validity interval not usable")
            esme["clock_preset"] = {"time": times[0] if isinstance(times[0], float) else None,
                                    "start": times[1], "end": times[2]}
            return None
        if method == 4:
            preset = esme.pop("clock_preset", None)
            if preset is None:
                raise AccessFailure("other-reason", "no preset time")
            if not preset["start"] <= ctx.now <= preset["end"]:
                ctx.scratch.setdefault("alerts", []).append(
                    ctx.device.raise_alert(AlertCode.CLOCK_NOT_ADJUSTED_GT_10S))
                raise AccessFailure("other-reason", "Comms Hub time outside the validity interval")
            target = preset["time"] if preset["time"] is not None else ctx.now
            esme["clock_offset"] = target - ctx.now
            esme["clock_status"] = CLOCK_STATUS_OK
            if not esme.get("commissioned"):
                esme["commissioned"] = True
                ctx.device.event("commissioned")
            return None
        return super().action(ctx, class_id, obis, method, arg)


# --------------------------------------------------------------------------------------------- alert behaviours

def _bits_int(value: dict | None, nbits: int) -> int | None:
    try:
        v = value["value"]
        return int.from_bytes(bytes.fromhex(v["bits"]), "big") >> (len(v["bits"]) * 4 - int(v["length"])) \
            if int(v["length"]) == nbits else None
    except (TypeError, KeyError, ValueError):
        return None


def _bits_json(n: int, nbits: int) -> dict:
    return {"type": "bit-string", "value": {"length": nbits, "bits": n.to_bytes(nbits // 8, "big").hex().upper()}}


def _settings(cosem: dict, obis: str) -> int:
    current = _bits_int(cosem.get(attr_key(1, obis, 2)), SETTINGS_BITS)
    if current is None:  # factory settings: everything on, except audible alarms
        return 0 if obis.endswith(".17.255") else (1 << SETTINGS_BITS) - 1
    return current


def set_alert_behaviour(cosem: dict, obis: str, mask: int, actions: int) -> None:
    """Apply one Mask/Actions pair to the settings `obis` controls (bits under the mask take the actions)."""
    target = BEHAVIOUR_TARGETS[obis]
    full = (1 << SETTINGS_BITS) - 1
    new = (_settings(cosem, target) & ~mask & full) | (actions & mask)
    cosem[attr_key(1, target, 2)] = _bits_json(new, SETTINGS_BITS)


def alert_enabled(state: dict, alert_code: int) -> bool:
    """Whether the ESME sends this alert on the WAN: critical ones always; 0x81nn / 0x80nn by bit nn of the
    supplier / network operator WAN alerting settings (ECS25a / ECS25b)."""
    if alert_code in CRITICAL_ALERT_CODES or (alert_code >> 8) == 0x8F:
        return True
    obis = WAN_SETTINGS.get(alert_code >> 8)
    if obis is None:
        return True
    return bool((_settings(state.get("cosem", {}), obis) >> (alert_code & 0xFF)) & 1)


class AlertBehaviour(StoredObject):
    """Data objects 0-3x:97.98.{11..14}: stored as written, and applied to the settings they control."""

    def set(self, ctx, class_id, obis, attr, value):
        both = _bits_int(value, 2 * SETTINGS_BITS) if attr == 2 else None
        if attr == 2 and both is None:
            raise AccessFailure("type-unmatched", "Mask || Actions is 512 bits")
        super().set(ctx, class_id, obis, attr, value)
        if both is not None:
            set_alert_behaviour(ctx.cosem, obis, both >> SETTINGS_BITS, both & ((1 << SETTINGS_BITS) - 1))


class AlertSettings(StoredObject):
    """Data objects 0-3x:97.98.{15..18}: the current settings (all on until changed)."""

    def get(self, ctx, class_id, obis, attr, selection):
        if attr == 2:
            return _bits_json(_settings(ctx.cosem, obis), SETTINGS_BITS)
        return super().get(ctx, class_id, obis, attr, selection)


# --------------------------------------------------------------------------------------------- register resets

class ResettableRegister(StoredObject):
    """Register (3) / Extended register (4) `reset` (ECS29e/f voltage counters, ECS57 maximum demand): the value
    goes to zero, an extended register's capture_time to now, and the reset time is kept in
    `state["esme"]["resets"][obis]` for whoever computes the value."""

    def action(self, ctx, class_id, obis, method, arg):
        if method != 1:
            return super().action(ctx, class_id, obis, method, arg)
        entry = self.catalogue.attribute(class_id, obis, 2)
        zero = default_value(entry) if entry is not None else {"type": "double-long-unsigned", "value": 0}
        ctx.cosem[attr_key(class_id, obis, 2)] = zero
        if class_id == 4:
            ctx.cosem[attr_key(class_id, obis, 5)] = {
                "type": "octet-string", "value": dlms_datetime(device_time(ctx.device, ctx.now)).hex().upper()}
        ctx.device.state.setdefault("esme", {}).setdefault("resets", {})[f"{class_id}/{obis}"] = ctx.now
        return None


RESETTABLE = {
    3: ("1-0:32.32.0.4", "1-0:32.36.0.4", "1-0:52.32.0.4", "1-0:52.36.0.4", "1-0:72.32.0.4", "1-0:72.36.0.4"),
    4: ("1-0:1.6.0.255", "1-0:1.6.1.255", "1-0:2.6.0.255"),
}


def register(server, catalogue) -> None:
    server.register(DisconnectControl(catalogue), 70, DISCONNECT_CONTROL)
    server.register(SupplyScripts(catalogue), 9, SUPPLY_SCRIPTS)
    server.register(Clock(catalogue), 8, CLOCK)
    server.register(AlertBehaviour(catalogue), 1, *BEHAVIOUR_TARGETS)
    server.register(AlertSettings(catalogue), 1, *sorted(set(BEHAVIOUR_TARGETS.values()) | set(WAN_SETTINGS.values())))
    resettable = ResettableRegister(catalogue)
    for class_id, instances in RESETTABLE.items():
        # metering may serve these registers itself (it comes first in FAMILY_MODULES): leave them to it
        free = [o for o in instances if (class_id, o) not in server.by_instance and class_id not in server.by_class]
        if free:
            server.register(resettable, class_id, *free)
