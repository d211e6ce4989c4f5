"""GPF logs: the Daily Consumption Log (GCS61) and the GPF Device Log with its backup to the DCC (GCS62) and its
restore from it (GCS59).

Theory of operation
-------------------
Daily Consumption Log (GCS61, ZSE Metering Get Sampled Data with sample id 1): the GPF keeps one entry per UTC
day, the gas consumed that day (dm3, the GSME's register at the two midnights), for `DAILY_LOG_DEPTH` days.
Nothing is stored: entries are differences of the seeded gas register (`firmware_emu.gsme.metering.volume`).
A request whose window holds no completed day is answered NOT_FOUND. Sample id 0 (the half-hour profile) is
the GSME's own implementation.

GPF Device Log (the devices paired with the gas meter: PPMIDs, Type 2 devices...): the log of
`core.credentials` (`state["credentials"]["device_log"]`). Every change made by a join or an unjoin is backed
up to the DCC: alert 0x8071 in message GCS62 (0x00B2, to the ACB) carrying the whole log. After a comms hub
replacement the DCC restores it (GCS59): each entry is joined again and answered with its join response code;
a restore raises no backup (the DCC holds that log already)::

    CS03x / CS04x ──log changed?──yes──▶ response + alert GCS62 {8071, time, log}
    GCS59 {entries} ──▶ join each ──▶ response {restore outcomes}
    stimulate(0x00B2) ──▶ a device joins (`other_device`, default the hub's next EUI) ──▶ GCS62

Faults: target "GCS59" (every entry) with a join response code name.
"""
from __future__ import annotations

import math

from protocols.asn1.payloads import decode_asn1, encode_asn1
from protocols.errors import DecodeError
from protocols.security.eui import as_eui, eui_hex

from firmware_emu.core import credentials
from firmware_emu.core.clock import from_gbcs_seconds, to_gbcs_seconds
from firmware_emu.core.consumption import DAY
from firmware_emu.core.device import Reply
from firmware_emu.core.modular import handles
from firmware_emu.core.zcl import Status, ZclContext, ZclFailure

__all__ = ["setup", "daily_log", "backup_alert", "restore", "DAILY_LOG_DEPTH", "GCS62", "DEVICE_LOG_BACKUP"]

METERING = 0x0702
GET_SAMPLED_DATA, GET_SAMPLED_DATA_RESPONSE = 0x08, 0x07
DAILY_SAMPLE_ID = 1
#: SMETS DailyConsumptionLog: logEntries[1..731].
DAILY_LOG_DEPTH = 731
#: ZSE SampleRequestInterval is uint16 seconds: a day does not fit, the field says "not applicable".
INTERVAL_NOT_APPLICABLE = 0xFFFF
MAX_UINT24 = 0xFFFFFF
GCS62, DEVICE_LOG_BACKUP = 0x00B2, 0x8071
_JOIN_CODES = frozenset({"invalid_message_code_for_join_method_and_role", "invalid_join_method_and_role",
                         "incompatible_with_existing_entry", "device_log_full", "write_failure"})


# ----------------------------------------------------------------------------------------------- GCS61

def daily_log(device, t_from: float, now: float, limit: int) -> list[tuple[float, int]]:
    """(day start, dm3 consumed that day) of the completed days from `t_from`, oldest first, at most `limit`."""
    from firmware_emu.gsme.metering import volume
    first = max(math.ceil(t_from / DAY) * DAY, math.floor(now / DAY) * DAY - DAILY_LOG_DEPTH * DAY)
    last = math.floor(now / DAY) * DAY            # the day starting here is not complete
    days = [float(d) for d in range(int(first), int(last), DAY)][:max(0, limit)]
    return [(d, volume(device, d + DAY) - volume(device, d)) for d in days]


def _get_sampled_data(ctx: ZclContext, comp: dict):
    p = comp["zcl"]["payload"]
    if p["sample_id"] != DAILY_SAMPLE_ID:
        from firmware_emu.gsme import metering
        return metering._sampled_data(ctx, comp)
    rows = daily_log(ctx.device, from_gbcs_seconds(p["earliest_sample_time"]), ctx.device.device_time(ctx.now),
                     p["number_of_samples"])
    if not rows:
        raise ZclFailure(Status.NOT_FOUND, "no completed day in the daily consumption log from that time")
    return {"command_id": GET_SAMPLED_DATA_RESPONSE, "payload": {
        "sample_id": DAILY_SAMPLE_ID, "sample_start_time": to_gbcs_seconds(rows[0][0]),
        "sample_type": p["sample_type"], "sample_request_interval": INTERVAL_NOT_APPLICABLE,
        "number_of_samples": len(rows), "samples": [min(v, MAX_UINT24) for _, v in rows]}}


# ----------------------------------------------------------------------------------------------- device log

def _log(device) -> list[dict]:
    return device.state.setdefault("credentials", {}).setdefault("device_log", [])


def backup_alert(device):
    """GCS62: the whole device log to the DCC (alert 0x8071)."""
    content = encode_asn1({"use_case_schema": "GCS62.alert", "value": {
        "alert_code": f"0x{DEVICE_LOG_BACKUP:04X}", "date_time": credentials._iso(device.now),
        "device_log_entries": [dict(e) for e in _log(device)]}})
    return device.raise_alert(DEVICE_LOG_BACKUP, message_code=GCS62, content=content)


def restore(device, cmd, now) -> Reply:
    """GCS59: join every entry of the backed-up log again; one outcome per entry, no backup alert."""
    payload = decode_asn1(cmd.content, base=cmd.content_offset, cra_flag="command", message_code=cmd.code)
    if payload.get("use_case_schema") is None:
        raise DecodeError("payload does not have the shape of GCS59", "asn1", cmd.content_offset)
    fault = device.faults.lookup("GCS59")
    outcomes = []
    for entry in payload["value"]["device_log_entries"]:
        if fault:
            code = fault if fault in _JOIN_CODES else "write_failure"
        else:
            code = credentials.join_device(device, as_eui(entry["device_id"]), entry["device_type"])
        outcomes.append({"device_log_entry": dict(entry), "join_response_code": code})
    device.event("device_log_restored", entries=len(outcomes))
    return Reply(encode_asn1({"use_case_schema": "GCS59.response", "value": {"restore_outcomes": outcomes}}))


def _backed_up(handler):
    """A join/unjoin handler that backs the device log up (GCS62) when it changed it."""
    def run(device, cmd, now) -> Reply:
        before = [dict(e) for e in _log(device)]
        reply = handler(device, cmd, now)
        if _log(device) != before:
            reply.alerts.append(backup_alert(device))
        return reply
    run.__doc__ = handler.__doc__
    return run


def stimulate_backup(device, now: float, **detail) -> list:
    """A device joins the GPF (the `other_device` given, else the hub's next EUI, a PPMID): backup alert."""
    other = detail.get("other_device")
    if other is None:
        eui = int.from_bytes(device.eui, "big")
        other = eui_hex(((eui & ~0xFF) | ((eui + 1) & 0xFF)).to_bytes(8, "big"))
    credentials.join_device(device, as_eui(other), detail.get("device_type", "PPMID"))
    return [backup_alert(device)]


# ----------------------------------------------------------------------------------------------- setup

def setup(cls) -> None:
    cls.server().command(METERING, GET_SAMPLED_DATA)(_get_sampled_data)
    from firmware_emu.gsme.events import _clear_event_log      # CS11 targets the GPF too (its own event logs)
    cls.server().command(0x0709, 0x01)(_clear_event_log)
    handles(cls, "GCS59")(restore)
    handles(cls, "CS03A1", "CS03A2", "CS03B", "CS03C")(_backed_up(credentials.join))
    handles(cls, "CS04AC", "CS04B")(_backed_up(credentials.unjoin))
