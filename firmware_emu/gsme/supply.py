"""GSME supply: the gas valve (ZSE Metering Change Supply → Supply Status Response: GCS32 close, GCS39 arm;
SupplyStatus attribute 0x0014 for GCS33 reads).

Theory of operation
-------------------
The valve is a three-state machine in `state["gsme"]["supply"]` (ZSE SupplyStatus values):

    ON (2) ──Change Supply "off" (GCS32) / credit exhausted──▶ OFF (0) ──Change Supply "armed" (GCS39) /
    credit restored──▶ ARMED (1) ──consumer presses the button (`press_button`)──▶ ON (2)

A remote "ON" is refused (NOT_AUTHORIZED): a gas supply is only ever opened at the meter, by the consumer, once
armed. Arming an open valve leaves it open. While the valve is closed no gas flows: the closed intervals are
kept in `closed` ([[start, end|null], ...]) and `metering.volume` subtracts the model's flow over them, so the
register, profiles and snapshots stop with the valve. `reason` ("remote" / "credit") is why it last closed.
"""
from __future__ import annotations

import logging

from firmware_emu.core.zcl import Status, ZclContext, ZclFailure

log = logging.getLogger(__name__)

__all__ = ["OFF", "ARMED", "ON", "status", "close", "arm", "press_button", "closed_intervals", "setup"]

METERING = 0x0702
OFF, ARMED, ON = 0x00, 0x01, 0x02
NAMES = {OFF: "off", ARMED: "armed", ON: "on"}
SUPPLY_ARMED_ALERT = 0x8F32


def _supply(device) -> dict:
    gsme = device.state.setdefault("gsme", {})
    return gsme.setdefault("supply", {"status": ON, "closed": [], "reason": None})


def status(device) -> int:
    return _supply(device)["status"]


def closed_intervals(device) -> list:
    return device.state.get("gsme", {}).get("supply", {}).get("closed", [])


def close(device, now: float, reason: str = "remote") -> list:
    s = _supply(device)
    if s["status"] == ON:
        s["closed"].append([device.device_time(now), None])
        del s["closed"][:-100]
    s["status"], s["reason"] = OFF, reason
    device.event("valve", state="off", reason=reason)
    return []


def arm(device, now: float, reason: str = "remote") -> list:
    s = _supply(device)
    if s["status"] == OFF:
        s["status"] = ARMED
        device.event("valve", state="armed", reason=reason)
    return []


def press_button(device, now: float) -> list:
    """The consumer opens an armed valve at the meter."""
    s = _supply(device)
    if s["status"] != ARMED:
        return []
    s["status"] = ON
    if s["closed"] and s["closed"][-1][1] is None:
        s["closed"][-1][1] = device.device_time(now)
    device.event("valve", state="on", reason="button")
    return []


def _change_supply(ctx: ZclContext, comp: dict):
    """GCS32/GCS39: Change Supply → Supply Status Response with the resulting state."""
    p = comp["zcl"]["payload"]
    proposed = p["proposed_supply_status"]
    if proposed == ON:
        raise ZclFailure(Status.NOT_AUTHORIZED, "a gas valve is opened at the meter only")
    if proposed not in (OFF, ARMED):
        raise ZclFailure(Status.INVALID_VALUE, "unknown supply status")
    if not ctx.scratch.get("plan_only"):
        (close if proposed == OFF else arm)(ctx.device, ctx.now, "remote")
    return {"command_id": 0x0C, "payload": {
        "provider_id": p.get("provider_id", 0), "issuer_event_id": p.get("issuer_event_id", 0),
        "implementation_date_time": p.get("implementation_date_time", 0), "supply_status": status(ctx.device)}}


def setup(cls) -> None:
    server = cls.server()
    server.command(METERING, 0x0B)(_change_supply)
    server.attribute(METERING, 0x0014)(lambda ctx, c, a: status(ctx.device))
