"""Future-dated execution of ESME DLMS commands (GBCS: 8F66/8F67 "future dated execution of instruction").

Theory of operation
-------------------
A future-dated-capable command (ECS01a-d, ECS02/03, ECS08/08a, ECS46c/d…) writes passive values and, per
**instruction**, an activation date-time (`tariff.instruction`: Activity calendar attr 10, Charge attr 7,
Account attr 13, GBCS 9000 attr 6). `plan` runs the whole Access-Request through the COSEM server as usual
(so the response, its results and break-on-error are the ordinary ones: a future-dated command is
acknowledged exactly like an immediate one, RTDS FUTURE_DATED_*_RESPONSE), then arms each activation that
succeeded, in command order (`arm`):

    "now" (00…00 8000 FF) or a time ≤ now ──▶ copy passive → active at once; no alert
    a time in the future ──▶ pending: `device.schedule(at, "future_dated", data)`
    "never" (FF…FF 8000 FF) ──▶ nothing pending (the RTDS CANCELLATION variants: same command, "never")

and whatever the value, an instruction still pending for the same activation attribute is dropped first: a
newer command for an instruction supersedes (or, with "never", cancels) the older one.

When the time comes, `execute(device, data, at)` (wired from `Esme.on_timer(kind="future_dated")`) checks
the execution-time faults (`faults.lookup(target, executing=True)`) of the instruction's passive attributes and
its activation attribute; none → copy passive → active and raise 8F66, else leave the active values and raise
8F67. Either alert is message code 0x00CC, stamped with the execution time, body (brief §6)
`… 09 13 <message code (2)> <originator counter of the command (8)> <class (2) OBIS (6) attr (1)>` naming the
activation attribute. Instructions of one command share one time and keep command order (`schedule` is
stable), so the alerts come in command order (RTDS ECS08a: 9 alerts, ECS01c: 3, ECS01b: 2, ECS02: 1).

`data` is JSON only (persisted): {"use_case", "message_code", "counter", "originator", "target": [class,
OBIS, attr], "at"}.
"""
from __future__ import annotations

import logging

from protocols.security.eui import eui_hex

from firmware_emu.core.modular import on_timer
from firmware_emu.core.alerts import FUTURE_DATED_DLMS_ALERT, AlertCode
from firmware_emu.core.cosem import AccessContext, dlms_target
from firmware_emu.core.device import Emitted, Reply
from firmware_emu.esme import tariff

log = logging.getLogger(__name__)

__all__ = ["plan", "arm", "cancel", "execute", "pending", "KIND"]

#: The schedule kind of future-dated instructions (`Device.schedule`).
KIND = "future_dated"


def _has_activation(request: dict) -> bool:
    for spec in request.get("request_specifications") or []:
        d = spec.get("descriptor") or {}
        if spec.get("kind") == "set" and tariff.is_activation(d.get("class_id"), d.get("instance_id"),
                                                             d.get("attribute_id")):
            return True
    return False


def plan(device, ctx: AccessContext, request: dict) -> Reply | None:
    """Serve a future-dated-capable Access-Request; None when it holds no activation (serve it as usual)."""
    if not _has_activation(request):
        return None
    from protocols.dlms.apdu import encode_apdu
    ctx.scratch["future_plan"] = True
    response = device.server().access(ctx, request)
    for item in ctx.scratch.get("activations", []):
        arm(ctx, item)
    return Reply(encode_apdu(response, cra_flag="response"), alerts=ctx.scratch.get("alerts", []))


def cancel(device, target) -> int:
    """Drop the instruction pending for this activation attribute; returns how many were dropped."""
    target = list(target)
    return device.unschedule(lambda s: s["kind"] == KIND and s["data"].get("target") == target)


def pending(device) -> list[dict]:
    """The future-dated instructions waiting (their `data`, with "at"), in execution order."""
    return [dict(s["data"], at=s["at"]) for s in device.state["schedule"] if s["kind"] == KIND]


def arm(ctx: AccessContext, item: dict) -> None:
    """Act on one successful activation set (module docstring)."""
    device, target, when = ctx.device, tuple(item["target"]), item["when"]
    dropped = cancel(device, target)
    if when == "never":
        device.event("future_dated_cancelled", target=list(target), dropped=dropped)
        return
    if when == "now" or when <= ctx.now:
        tariff.activate(device, target, ctx.now)
        return
    cmd = ctx.cmd
    data = {
        "use_case": cmd.entry.name if cmd is not None else None,
        "message_code": cmd.code if cmd is not None else 0,
        "counter": cmd.header["originator_counter"] if cmd is not None else 0,
        "originator": eui_hex(cmd.originator) if cmd is not None else None,
        "target": list(target),
        "at": when,
    }
    device.schedule(when, KIND, data)
    device.event("future_dated_scheduled", target=list(target), at=when, dropped=dropped)


def _members(target) -> list:
    """The attributes an instruction touches, passive sources first, activation attribute last."""
    return [src for src, _ in tariff.instruction(tuple(target))] + [tuple(target)]


def outcome_body(data: dict) -> bytes:
    """<message code (2)> <originator counter (8)> <class (2) OBIS (6) attr (1)> of the activation attribute."""
    from protocols.dlms.obis import obis_from_str
    class_id, obis, attr = data["target"]
    return (int(data["message_code"]).to_bytes(2, "big") + int(data["counter"]).to_bytes(8, "big")
            + int(class_id).to_bytes(2, "big") + obis_from_str(obis) + int(attr).to_bytes(1, "big"))


def execute(device, data: dict, at: float) -> list[Emitted]:
    """Run one due future-dated instruction; returns its 8F66/8F67 alert."""
    target = data["target"]
    failure = None
    for m in _members(target):
        failure = device.faults.lookup(dlms_target("set", *m), executing=True)
        if failure:
            break
    if failure:
        code = AlertCode.FUTURE_DATED_COMMAND_FAILED
        device.event("future_dated_failed", target=target, result=failure)
    else:
        tariff.activate(device, tuple(target), at)
        code = AlertCode.FUTURE_DATED_COMMAND_SUCCEEDED
    body = {"type": "octet-string", "value": outcome_body(data).hex().upper()}
    return [device.raise_alert(int(code), message_code=FUTURE_DATED_DLMS_ALERT, extra=[body])]


def setup(cls) -> None:
    """Run future-dated DLMS work on its device type when it comes due."""
    on_timer(cls, KIND)(execute)
