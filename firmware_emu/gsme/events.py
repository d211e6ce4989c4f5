"""The GSME living through time: event logs (CS10b reads, CS11 clears), alerts it raises by itself
(`Gsme.stimulate`), its clock (GCS28), its battery and sleepy wake cycle, and a simulated past
(`Gsme.prepare("lived")`) for scenarios that presuppose history.

Theory of operation
-------------------
**Logs.** The security log (ZSE log id 4) and the general log (3) are views over what happened
(`metering.event_log`): alerts raised (`state["alert_log"]`), commands refused by the security checks
(`state["security_log"]`) and events logged without an alert (`state["gsme"]["logged_events"]`, e.g. a UTRN
refused in a Consumer Top Up Response). Clear Event Log (CS11) records the clearing time per log
(`state["gsme"]["log_cleared"]`); entries up to it are gone. The clearing itself is logged (0x8F52, security).

**Stimuli** (brief §6, GBZ alert payloads `01 09 | n | code | UTC | body`):

| code | use case | alert | body | form |
|------|----------|-------|------|------|
| 1000 / 1001 | GCA / GNCA | any | — | DF signed / DD MAC'd |
| 00F2 | MIIWA | 81A0 | reason (2 bytes; 5 unexpected hardware reset) | DD |
| 00CF | FDRA | 8F72 | SHA-256 of the image received | DF |
| 008B | GCS53 | 8F0A | billing data log: one encrypted Publish Snapshot (cause: end of billing period) | DF |

**Clock** (GCS28, ASN.1): the command carries a validity interval; inside it the GSME takes the time it was
received as its own (`clock_offset` 0, reliable from then on); outside it nothing changes. The response says the
device time and whether the clock is reliable.

**Battery and wake cycle.** A battery GSME sleeps and wakes every `wake_interval` (profile, seconds, default
1800) to poll the hub. `next_wake(now)` is the next wake instant; each wake costs `WAKE_COST_UAH`, each frame
sent or received `RADIO_COST_UAH` (from `profile["battery_mah"]`, default 19 Ah: a 15-year cell).
`battery_tick(device, now)` charges the wakes elapsed since the last call; crossing `LOW_BATTERY_FRACTION`
raises 0x8F1F "low battery capacity" once. RemainingBatteryLifeinDays (0x0702/0x0205) is derived from it.

    full ──wakes, radio──▶ … ──(remaining < 10 %: 0x8F1F)──▶ low ──▶ empty (the meter stops answering: the host's
    premises model decides; the state only says 0 days)

**A lived past** (`live(device, since, until)`): the factory-fresh device commissioned at `since` lives its
ordinary life up to `until` (the scenario's start): born at `since` in prepayment mode (periodic snapshots
from then; its clock never synchronised by GCS28, as RTDS GSMEs answer), topped up every ten days at the PPMID
(at most four times, the last just before the account change) with genuine UTRNs from its supplier (counters
1…4: top-up log, credit; the consumer buys about ten days of gas, so the credit ends low), a seasonal
two-rate TOU and friendly-credit tariff published 30 days before `until` (tariff change snapshot), moved to a
credit account 20 days before (change-of-mode snapshot; no more top-ups), a network-operator sampling session
a week before and another six hours before `until` (6-minute samples), and, the last evening, the consumer
keying the last UTRN again at the PPMID (duplicate UTRN: security log 0x8F51). Gas flows by the consumption
model throughout, charged hour by hour; the battery pays for every wake. Alerts raised in that past are
logged, not returned.
"""
from __future__ import annotations

import hashlib
import logging
import math

from protocols.asn1.payloads import decode_asn1, encode_asn1

from firmware_emu.core.alerts import AlertCode, CRITICAL_ALERT_CODES
from firmware_emu.core.clock import to_gbcs_seconds
from firmware_emu.core.device import Emitted, Reply
from firmware_emu.core.modular import handles
from firmware_emu.core.zcl import ZclContext
from firmware_emu.gsme.device import Gsme

log = logging.getLogger(__name__)

__all__ = ["log_event", "stimulate", "set_clock", "next_wake", "battery_tick", "battery", "live",
           "LOW_BATTERY_ALERT", "DEFAULT_WAKE_INTERVAL"]

EVENTS = 0x0709
SECURITY_LOG, GENERAL_LOG = 4, 3
#: ZSE ClearedEventsLogs bitmap: bit 0 all logs, then one bit per log id (3 general → 0x08, 4 security → 0x10).
_ALL_LOGS = (1, 2, 3, 4, 5)
LOW_BATTERY_ALERT = AlertCode.LOW_BATTERY_CAPACITY
DEFAULT_WAKE_INTERVAL = 1800.0
DEFAULT_BATTERY_MAH = 19_000.0
WAKE_COST_UAH = 5.0
RADIO_COST_UAH = 20.0
LOW_BATTERY_FRACTION = 0.10
IDLE_UA = 10.0             # sleep current (µA): the battery's floor drain


# --------------------------------------------------------------------------------------------- logs

def log_event(device, t: float, event_id: int, log_id: int | None = None) -> None:
    """Log an event without raising an alert (security log for security events, general otherwise)."""
    if log_id is None:
        log_id = SECURITY_LOG if event_id in CRITICAL_ALERT_CODES else GENERAL_LOG
    entries = device.state.setdefault("gsme", {}).setdefault("logged_events", [])
    entries.append({"t": t, "log_id": log_id, "event_id": int(event_id)})
    del entries[:-100]


def _clear_event_log(ctx: ZclContext, comp: dict):
    """CS11: Clear Event Log Request → Clear Event Log Response naming the logs cleared."""
    log_id = comp["zcl"]["payload"]["log_id"]
    ids = _ALL_LOGS if log_id == 0 else (log_id,)
    device = ctx.device
    cleared = device.state.setdefault("gsme", {}).setdefault("log_cleared", {})
    t = device.device_time(ctx.now)
    bitmap = 0x01 if log_id == 0 else 0
    for lid in ids:
        cleared[str(lid)] = t
        bitmap |= 1 << lid
    log_event(device, t + 1e-3, AlertCode.EVENT_LOG_CLEARED, SECURITY_LOG)
    device.event("event_log_cleared", log_id=log_id)
    return {"command_id": 0x02, "payload": {"cleared_events_logs": bitmap & 0xFF}}


# --------------------------------------------------------------------------------------------- clock (GCS28)

@handles(Gsme, "GCS28")
def set_clock(device, cmd, now) -> Reply:
    """GCS28: take the time of receipt as the device time when it lies in the validity interval."""
    from firmware_emu.core.credentials import _from_iso, _iso
    value = decode_asn1(cmd.content, base=cmd.content_offset, cra_flag="command", message_code=cmd.code)["value"]
    start, end = _from_iso(value["validity_interval_start"]), _from_iso(value["validity_interval_end"])
    g = device.state["gsme"]
    if device.faults.lookup("GCS28") is None and start <= now <= end:
        g["clock_offset"], g["clock_reliable"] = 0, True
        device.event("clock_set", t=now)
    else:
        device.event("clock_not_set", reason="outside validity interval")
    out = {"device_time": _iso(device.device_time(now)),
           "device_time_status": "reliable" if g.get("clock_reliable") else "unreliable"}
    return Reply(encode_asn1({"use_case_schema": "GCS28.response", "value": out}))


# --------------------------------------------------------------------------------------------- battery and wakes

def _battery(device) -> dict:
    g = device.state.setdefault("gsme", {})
    b = g.get("battery")
    if b is None:
        cap = float(device.profile.get("battery_mah", DEFAULT_BATTERY_MAH)) * 1000.0
        b = {"capacity_uah": cap, "remaining_uah": cap, "last_t": device.now, "low": False}
        g["battery"] = b
    return b


def battery(device) -> dict:
    """{"remaining_fraction", "remaining_days"} at the last accounting."""
    b = _battery(device)
    per_day = 86400 / wake_interval(device) * WAKE_COST_UAH + IDLE_UA * 24
    return {"remaining_fraction": b["remaining_uah"] / b["capacity_uah"],
            "remaining_days": int(b["remaining_uah"] // per_day)}


def wake_interval(device) -> float:
    return float(device.profile.get("wake_interval", DEFAULT_WAKE_INTERVAL))


def next_wake(device, now: float) -> float:
    """The next wake instant after `now` (wakes are aligned to whole intervals since the Unix epoch)."""
    w = wake_interval(device)
    return (math.floor(now / w) + 1) * w


def radio_used(device, frames: int = 1) -> None:
    """Frames sent or received cost radio energy (the device calls this per frame)."""
    b = _battery(device)
    b["remaining_uah"] = max(0.0, b["remaining_uah"] - RADIO_COST_UAH * frames)


def battery_tick(device, now: float) -> list[Emitted]:
    """Charge the wakes and sleep current since the last accounting; 0x8F1F once below 10 %."""
    b = _battery(device)
    last = b["last_t"] if b["last_t"] is not None else now
    if now <= last:
        return []
    w = wake_interval(device)
    wakes = math.floor(now / w) - math.floor(last / w)
    b["remaining_uah"] = max(0.0, b["remaining_uah"] - wakes * WAKE_COST_UAH - IDLE_UA * (now - last) / 3600)
    b["last_t"] = now
    if not b["low"] and b["remaining_uah"] < LOW_BATTERY_FRACTION * b["capacity_uah"]:
        b["low"] = True
        return [device.raise_alert(LOW_BATTERY_ALERT)]
    return []


# --------------------------------------------------------------------------------------------- stimuli

def _generic(device, message_code, alert_code, now, **detail):
    if alert_code is None:
        raise ValueError("a generic alert needs an alert code")
    return [device.raise_alert(alert_code, message_code=message_code, critical=message_code == 0x1000)]


def _miiwa(device, message_code, alert_code, now, reason: int = 5, **detail):
    log_event(device, now, alert_code or AlertCode.SMART_METER_INTEGRITY_WARNING)
    return [device.raise_alert(alert_code or AlertCode.SMART_METER_INTEGRITY_WARNING, message_code=message_code,
                               critical=False, extra={"meter_integrity_issue_warning": {"reason": int(reason)}})]


def _fdra(device, message_code, alert_code, now, image: bytes | None = None, image_hash: str | None = None,
          **detail):
    """A firmware image distributed to the meter was received: its SHA-256 goes back (the image held, else
    the running version's identity)."""
    from firmware_emu.core.credentials import firmware_version
    if image_hash is None:
        image_hash = hashlib.sha256(image if image is not None else
                                    f"{device.state['eui']}:{firmware_version(device)}".encode()).hexdigest()
    return [device.raise_alert(alert_code or AlertCode.FIRMWARE_VERIFICATION_SUCCESSFUL, message_code=message_code,
                               extra={"calculated_manufacturer_hash": image_hash.upper()})]


def _billing_log(device, message_code, alert_code, now, **detail):
    """GCS53: the billing data log was updated (end of billing period): its newest snapshot, encrypted."""
    from firmware_emu.gsme import metering
    t = device.device_time(now)
    from firmware_emu.gsme.prepayment import record_snapshot
    record_snapshot(device, t, metering.CAUSE_END_OF_BILLING_PERIOD)
    tiers, blocks = metering.tariff_split(device, t)
    payload = {"snapshot_id": 0, "snapshot_time": to_gbcs_seconds(t), "total_snapshots_found": 1,
               "command_index": 0, "total_number_of_commands": 1,
               "snapshot_cause": metering.CAUSE_END_OF_BILLING_PERIOD, "snapshot_payload_type": 6,
               "snapshot_sub_payload": metering._tou_block_payload(metering.volume(device, t), tiers, blocks)}
    comp = {"cluster": metering.METERING, "zcl": {
        "frame_control": {"frame_type": "cluster", "direction": "server_to_client", "disable_default_response": True},
        "sequence_number": 0, "command_id": 0x06, "payload": payload}}
    return [device.raise_alert(alert_code or AlertCode.BILLING_DATA_LOG_UPDATED, message_code=message_code,
                               extra={"encrypted_components": [comp]})]


_STIMULI = {0x1000: _generic, 0x1001: _generic, 0x00F2: _miiwa, 0x00CF: _fdra, 0x008B: _billing_log}


def stimulate(device, message_code: int, alert_code: int | None, now: float, **detail) -> list[Emitted]:
    fn = _STIMULI.get(message_code)
    if fn is None:
        raise NotImplementedError(f"GSME cannot be stimulated to raise 0x{message_code:04X}")
    device.now = now
    detail.pop("on_behalf_of", None)
    detail.pop("supplementary_counter", None)
    return fn(device, message_code, alert_code, now, **detail)


# --------------------------------------------------------------------------------------------- a lived past

DAY = 86400.0


def live(device, since: float, until: float) -> None:
    """Simulate the device's ordinary life from `since` to `until` (module docstring)."""
    from firmware_emu.core import utrn_guard
    from firmware_emu.gsme import prepayment, supply, tariff
    g = device.state["gsme"]
    g["born"] = since
    marks = [(since, "mode:prepayment"), (until - 30 * DAY, "tariff"), (until - 20 * DAY, "mode:credit"),
             (until - 7 * DAY, "sampling"), (until - 6 * 3600, "sampling"), (until - 4 * 3600, "duplicate")]
    top_ups = sorted(t for t in (until - 20 * DAY - 3600 - k * 10 * DAY for k in range(4)) if t > since)
    marks += [(t, f"top_up:{k + 1}") for k, t in enumerate(top_ups)]
    last_utrn = None
    for t, what in sorted(marks):
        if not since <= t <= until:
            continue
        device.now = t
        _catch_up(device, t)
        if what == "tariff":
            tariff.install(device, t, to_gbcs_seconds(t))
        elif what.startswith("mode:"):
            ctx = ZclContext(device, t)
            comp = {"cluster": prepayment.PREPAYMENT, "zcl": {
                "frame_control": {"frame_type": "cluster", "direction": "client_to_server"}, "sequence_number": 0,
                "command_id": 0x06, "payload": {"provider_id": 0, "issuer_event_id": to_gbcs_seconds(t),
                                                "implementation_date_time": 0, "cut_off_value": 0,
                                                "proposed_payment_control_configuration":
                                                    0x0007 if what == "mode:prepayment" else 0x0000}}}
            type(device).server()._serve_component(ctx, comp)
        elif what.startswith("top_up"):
            k = int(what.split(":")[1])
            last = k == len(top_ups)
            utrn = utrn_guard.make_utrn(device, k << 32, _top_up_pounds(device, t, until - 20 * DAY if last
                                                                        else t + 10 * DAY))
            if utrn is not None:
                prepayment.top_up(device, utrn, t, prepayment.ORIGIN_IHD)
                supply.press_button(device, t)     # a valve armed by the top-up: the consumer opens it
                last_utrn = utrn
        elif what == "sampling":
            from firmware_emu.gsme import metering
            metering.start_sampling(device, t, interval=360, max_samples=100)
        elif what == "duplicate" and last_utrn is not None:
            prepayment.top_up(device, last_utrn, t, prepayment.ORIGIN_IHD)
    device.now = until
    _catch_up(device, until)
    device.event("lived", since=since, until=until)


#: Step of a lived past: consumption is charged hour by hour at the price of the hour.
LIFE_STEP = 3600.0
#: What a lived consumer keeps in credit at the end: above the cut-off, below the emergency credit threshold.
END_CREDIT = 300_000


def _hours(t0: float, t1: float) -> list[float]:
    return [h * LIFE_STEP for h in range(math.floor(t0 / LIFE_STEP) + 1, math.ceil(t1 / LIFE_STEP))] + [t1]


def _catch_up(device, t: float) -> None:
    """What time alone causes up to `t` (consumption drawing credit, hour by hour; battery); alerts are
    logged, not sent."""
    from firmware_emu.gsme import prepayment
    last = prepayment.prepayment_state(device).get("charged_to") or device.now
    for h in _hours(last, t):
        prepayment.on_consumption(device, h)
    prepayment.prepayment_state(device)["charged_to"] = t
    battery_tick(device, t)


def _top_up_pounds(device, t: float, until: float) -> int:
    """The consumer buys what the gas until `until` will cost (hourly, at the tariff's prices), keeping
    END_CREDIT: so a lived meter ends low on credit, as prepayment meters usually are."""
    from firmware_emu.gsme import metering, prepayment, tariff
    cost, prev = 0, metering.volume(device, t)
    for h in _hours(t, until):
        vol = metering.volume(device, h)
        cost += (vol - prev) * tariff.unit_price(device, h) // 1000
        prev = vol
    need = cost + END_CREDIT - prepayment.prepayment_state(device)["credit"]
    return max(1, math.ceil(need / 100_000))


def setup(cls) -> None:
    server = cls.server()
    server.command(EVENTS, 0x01)(_clear_event_log)

