"""GSME metering and identity reads: Metering (0x0702) and Basic (0x0000) attributes, the half-hour profile
(GCS17/GCS18 Get Sampled Data), billing and daily snapshots (GCS15c, GCS16a Get Snapshot; GCS15b, GCS16b Get
Prepay Snapshot).

Theory of operation
-------------------
Nothing measured is stored. The gas register is the seeded `ConsumptionModel(kind="gas")` of this meter (seed
`profile["seed"]`, key the device EUI; optional profile keys `mean_kw`, `t0`, `initial_wh`): volume in dm3,
published as CurrentSummationDelivered with UnitOfMeasure 0x01 (m3), Multiplier 1 and Divisor 1000, so the
register reads in m3 with three decimals. Profiles and snapshots are differences of that register at the
instants a real meter would have captured them:

* half-hour profile (sample id 0): one uint24 per whole half-hour, kept for `PROFILE_RETENTION` (13 months);
* daily snapshots (cause bit 0, "general") at every UTC midnight; billing snapshots (cause bit 1, "end of
  billing period") at midnight on the 1st of each month; both kept for `SNAPSHOT_RETENTION`.

A request whose window holds nothing the device keeps is answered NOT_FOUND (a Default Response that does not
break the components after it). Tier (TOU) and block registers split the total by the tariff, which phase 2
provides (`tariff_split`); without one everything is in tier/block 1.

    Read Attributes ─▶ getter (model) | stored | appendix default
    Get Sampled Data ─▶ Get Sampled Data Response (encrypted per the template) | NOT_FOUND
    Get Snapshot ─▶ Publish Snapshot (encrypted per the template) | NOT_FOUND
"""
from __future__ import annotations

import calendar
import math
import time

from firmware_emu.core.clock import GBCS_EPOCH, from_gbcs_seconds, to_gbcs_seconds
from firmware_emu.core.consumption import DAY, HALF_HOUR, ConsumptionModel, model_of
from firmware_emu.core.zcl import Status, ZclContext, ZclFailure

__all__ = ["METERING", "BASIC", "meter", "volume", "setup", "snapshot_times", "tariff_split",
           "prepayment_balances", "event_log", "event_configuration", "PROFILE_RETENTION", "SNAPSHOT_RETENTION"]

BASIC, METERING, PRICE, PREPAYMENT = 0x0000, 0x0702, 0x0700, 0x0705
#: ZSE Metering UnitOfMeasure 0x01: m3 (binary); the register counts dm3.
UNIT_M3, MULTIPLIER, DIVISOR = 0x01, 1, 1000
PROFILE_RETENTION = 395 * DAY           # 13 months of half-hour data
SNAPSHOT_RETENTION = 731 * DAY
#: ZSE snapshot causes (bitmap32).
CAUSE_GENERAL, CAUSE_END_OF_BILLING_PERIOD = 0x00000001, 0x00000002
MAX_UINT24 = 0xFFFFFF
N_TIERS = 4


def meter(device) -> ConsumptionModel:
    """This meter's gas consumption model (deterministic in the EUI and the profile)."""
    prof = device.profile
    return model_of(device, {k: prof[k] for k in ("mean_kw", "t0", "initial_wh") if k in prof}, kind="gas")


def volume(device, t: float) -> int:
    """The gas register (dm3) at device time `t`: the model's flow, less what it would have flowed while the
    valve was closed (`supply.closed_intervals`)."""
    m = meter(device)
    v = m.volume_dm3(t)
    for start, end in device.state.get("gsme", {}).get("supply", {}).get("closed", []):
        if start >= t:
            continue
        stop = t if end is None else min(end, t)
        v -= m.volume_dm3(stop) - m.volume_dm3(start)
    return v


def tariff_split(device, now: float) -> tuple[list[int], list[int]]:
    """(TOU tier registers, block registers) in dm3. Phase 2 (`firmware_emu.gsme.tariff`) replaces this by
    setting `Gsme.tariff_split`; without a tariff everything is in tier 1 and block 1."""
    split = getattr(type(device), "tariff_split", None)
    if split is not None:
        return split(device, now)
    total = volume(device, now)
    return [total] + [0] * (N_TIERS - 1), [total] + [0] * (N_TIERS - 1)


def _now(ctx: ZclContext) -> float:
    return ctx.device.device_time(ctx.now)


# ----------------------------------------------------------------------------------------------- attributes

def _summation(ctx, cluster, attr):
    return volume(ctx.device, _now(ctx))


def _tier(ctx, cluster, attr):
    return tariff_split(ctx.device, _now(ctx))[0][(attr - 0x0100) // 2]


def _block(ctx, cluster, attr):
    return tariff_split(ctx.device, _now(ctx))[1][attr - 0x0700]


def _profile_value(key: str, default):
    def get(ctx, cluster, attr):
        return ctx.device.profile.get(key, default)
    return get


def _battery_days(ctx, cluster, attr):
    """RemainingBatteryLifeinDays from the battery model (`events.battery`)."""
    from firmware_emu.gsme import events
    return min(events.battery(ctx.device)["remaining_days"], 0xFFFF)


def _firmware(ctx, cluster, attr):
    """GCS38: the running firmware version (`core.credentials`: CS06 changes it)."""
    from firmware_emu.core.credentials import firmware_version
    return firmware_version(ctx.device)


# ----------------------------------------------------------------------------------------------- profile

def _sampled_data(ctx: ZclContext, comp: dict):
    """GCS17: the half-hour consumption profile (sample id 0) from `earliest_sample_time`."""
    p = comp["zcl"]["payload"]
    if p["sample_id"] != 0:
        sessions = ctx.state.get("zcl", {}).get("sampling", {})
        if str(p["sample_id"]) not in sessions:
            raise ZclFailure(Status.NOT_FOUND, "no such sampling session")
        return _session_samples(ctx, p, sessions[str(p["sample_id"])])
    now = _now(ctx)
    earliest = math.ceil(from_gbcs_seconds(p["earliest_sample_time"]) / HALF_HOUR) * HALF_HOUR
    end = min(earliest + p["number_of_samples"] * HALF_HOUR, math.floor(now / HALF_HOUR) * HALF_HOUR)
    first = max(earliest, math.ceil((now - PROFILE_RETENTION) / HALF_HOUR) * HALF_HOUR)
    n = max(0, int((end - first) // HALF_HOUR))
    if n <= 0:
        raise ZclFailure(Status.NOT_FOUND, "no half-hour profile data in that window")
    rows = meter(ctx.device).half_hour_profile(first, first + n * HALF_HOUR, quantity="volume")
    return {"command_id": 0x07, "payload": {
        "sample_id": 0, "sample_start_time": to_gbcs_seconds(first), "sample_type": p["sample_type"],
        "sample_request_interval": HALF_HOUR, "number_of_samples": len(rows),
        "samples": [min(v, MAX_UINT24) for _, v in rows]}}


def _session_samples(ctx: ZclContext, p: dict, session: dict):
    """Samples of a Start Sampling session (GCS31 opens them): consumption per interval since its start."""
    now = _now(ctx)
    interval = session["interval"]
    start = from_gbcs_seconds(session["start"])
    first = max(start, from_gbcs_seconds(p["earliest_sample_time"]))
    first = start + math.ceil((first - start) / interval) * interval
    n = min(p["number_of_samples"], session["max_samples"], max(0, int((now - first) // interval)))
    if n <= 0:
        raise ZclFailure(Status.NOT_FOUND, "no samples yet")
    m = meter(ctx.device)
    samples = [min(m.volume_dm3(first + (i + 1) * interval) - m.volume_dm3(first + i * interval), MAX_UINT24)
               for i in range(n)]
    return {"command_id": 0x07, "payload": {
        "sample_id": p["sample_id"], "sample_start_time": to_gbcs_seconds(first), "sample_type": p["sample_type"],
        "sample_request_interval": interval, "number_of_samples": n, "samples": samples}}


def start_sampling(device, now: float, *, interval: int, max_samples: int, start: float | None = None,
                   sample_type: int = 0) -> int:
    """Open a sampling session (GCS31) and return its sample id: 1, 2, … (0 is the half-hour profile)."""
    sessions = device.state.setdefault("zcl", {}).setdefault("sampling", {})
    sid = max([int(k) for k in sessions] + [0]) + 1
    t = device.device_time(now) if start is None else start
    sessions[str(sid)] = {"start": to_gbcs_seconds(t), "interval": int(interval), "max_samples": int(max_samples),
                          "type": sample_type}
    for old in sorted(sessions, key=int)[:-4]:   # a meter keeps a few sessions
        del sessions[old]
    return sid


def _start_sampling(ctx: ZclContext, comp: dict):
    """GCS31: Start Sampling → Start Sampling Response with the new session's id (0xFFFF: refused)."""
    p = comp["zcl"]["payload"]
    if p["sample_request_interval"] <= 0 or p["max_number_of_samples"] <= 0:
        return {"command_id": 0x0D, "payload": {"sample_id": 0xFFFF}}
    start = from_gbcs_seconds(p["start_sampling_time"]) if p["start_sampling_time"] else None
    sid = start_sampling(ctx.device, ctx.now, interval=p["sample_request_interval"],
                         max_samples=p["max_number_of_samples"], start=start, sample_type=p["sample_type"])
    return {"command_id": 0x0D, "payload": {"sample_id": sid}}


# ----------------------------------------------------------------------------------------------- snapshots

def _month_starts(t_from: float, t_to: float) -> list[float]:
    y, m = time.gmtime(t_from)[:2]
    out = []
    while True:
        t = calendar.timegm((y, m, 1, 0, 0, 0))
        if t > t_to:
            return out
        if t >= t_from:
            out.append(float(t))
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)


def snapshot_times(device, now: float, t_from: float, t_to: float, cause: int) -> list[tuple[float, int]]:
    """(time, cause) of the snapshots the device holds in [t_from, t_to) matching `cause`, newest first: the
    periodic ones (daily, monthly billing; since the device was born, `state["gsme"]["born"]`, when its past
    was lived: a factory-state meter's register model reaches back without limit), and the
    event-driven ones (tariff change, change of mode…) recorded in `state["gsme"]["snapshots"]` as {"t",
    "cause"}. The latest end time is exclusive (a window ending at midnight does not hold that midnight's
    snapshot); one taken at `now` is held."""
    born = device.state.get("gsme", {}).get("born") or GBCS_EPOCH
    t_from = max(t_from, now - SNAPSHOT_RETENTION, GBCS_EPOCH, born)
    t_to = min(t_to - 1, now)
    out: list[tuple[float, int]] = []
    if t_to < t_from:
        return out
    if cause & CAUSE_GENERAL:
        out += [(float(d), CAUSE_GENERAL) for d in range(math.ceil(t_from / DAY) * DAY, int(t_to) + 1, DAY)]
    if cause & CAUSE_END_OF_BILLING_PERIOD:
        out += [(t, CAUSE_END_OF_BILLING_PERIOD) for t in _month_starts(t_from, t_to)]
    for snap in device.state.get("gsme", {}).get("snapshots", []):  # event-driven ones (tariff change, CoS...)
        if snap["cause"] & cause and t_from <= snap["t"] <= t_to:
            out.append((float(snap["t"]), snap["cause"]))
    out.sort(key=lambda x: -x[0])
    return out


def _get_snapshot(ctx: ZclContext, comp: dict):
    """GCS15c/GCS16a: the snapshot at `snapshot_offset` (0 = newest) among those in the window."""
    p = comp["zcl"]["payload"]
    found = snapshot_times(ctx.device, _now(ctx), from_gbcs_seconds(p["earliest_start_time"]),
                           from_gbcs_seconds(p["latest_end_time"]), p["snapshot_cause"])
    if p["snapshot_offset"] >= len(found):
        raise ZclFailure(Status.NOT_FOUND, "no snapshot at that offset")
    t, cause = found[p["snapshot_offset"]]
    tiers, blocks = tariff_split(ctx.device, t)
    payload = {"snapshot_id": p["snapshot_offset"], "snapshot_time": to_gbcs_seconds(t),
               "total_snapshots_found": min(len(found), 0xFF),          # a UINT8: a factory meter holds more
               "command_index": 0, "total_number_of_commands": 1,
               "snapshot_cause": cause, "snapshot_payload_type": 6,
               "snapshot_sub_payload": _tou_block_payload(volume(ctx.device, t), tiers, blocks)}
    return {"command_id": 0x06, "payload": payload}


def _tou_block_payload(total: int, tiers: list[int], blocks: list[int]) -> dict:
    """Snapshot payload type 6 (TOU + block information set delivered)."""
    return {"current_summation_delivered": total, "tier_summations": tiers,
            "number_of_tiers_and_block_thresholds_in_use": (len(tiers) << 4) | (len(blocks) - 1),
            "tier_block_summations": blocks}


def prepayment_balances(device) -> dict:
    """The Debt/Credit Status of a prepayment snapshot (payload type 0). Phase 2
    (`firmware_emu.gsme.prepayment`) replaces this by setting `Gsme.prepayment_balances`; until then the
    balances stored in `state["gsme"]["prepayment"]` (all zero on a new meter)."""
    fn = getattr(type(device), "prepayment_balances", None)
    if fn is not None:
        return fn(device)
    stored = device.state.get("gsme", {}).get("prepayment", {})
    return {k: int(stored.get(k, 0)) for k in ("accumulated_debt", "type1_debt_remaining", "type2_debt_remaining",
                                              "type3_debt_remaining", "emergency_credit_remaining",
                                              "credit_remaining")}


def _get_prepay_snapshot(ctx: ZclContext, comp: dict):
    """GCS15b/GCS16b: the prepayment snapshot at `snapshot_offset` (0 = newest) among those in the window."""
    p = comp["zcl"]["payload"]
    found = snapshot_times(ctx.device, _now(ctx), from_gbcs_seconds(p["earliest_start_time"]),
                           from_gbcs_seconds(p["latest_end_time"]), p["snapshot_cause"])
    if p["snapshot_offset"] >= len(found):
        raise ZclFailure(Status.NOT_FOUND, "no prepayment snapshot at that offset")
    t, cause = found[p["snapshot_offset"]]
    return {"command_id": 0x01, "payload": {
        "snapshot_id": p["snapshot_offset"], "snapshot_time": to_gbcs_seconds(t),
        "total_snapshots_found": min(len(found), 0xFF), "command_index": 0, "total_number_of_commands": 1,
        "snapshot_cause": cause, "snapshot_payload_type": 0, "snapshot_payload": prepayment_balances(ctx.device)}}


# ----------------------------------------------------------------------------------------------- setup

def _update_site_id(ctx: ZclContext, comp: dict):
    """GCS41: Update SiteID (Device Management, from the head end) sets the MPRN that GCS46 reads
    (Metering SiteID 0x0307); acknowledged with a Default Response."""
    from firmware_emu.core.zcl import set_attribute
    set_attribute(ctx.state, METERING, 0x0307, comp["zcl"]["payload"]["site_id"] or "", "octet_string")
    return None


def setup(cls) -> None:
    """Register the metering and identity attributes and the profile/snapshot reads on the GSME's server."""
    server = cls.server()
    server.command(0x0708, 0x03, "server_to_client")(_update_site_id)
    server.attribute(METERING, 0x0000)(_summation)
    server.attribute(METERING, 0x0100, 0x0102, 0x0104, 0x0106)(_tier)
    server.attribute(METERING, 0x0700, 0x0701, 0x0702, 0x0703)(_block)
    server.attribute(METERING, 0x0300)(lambda ctx, c, a: UNIT_M3)
    server.attribute(METERING, 0x0301)(lambda ctx, c, a: MULTIPLIER)
    server.attribute(METERING, 0x0302)(lambda ctx, c, a: DIVISOR)
    server.attribute(METERING, 0x0206)(_firmware)
    server.attribute(BASIC, 0x0004)(_profile_value("manufacturer", "gbcs-emu"))
    server.attribute(BASIC, 0x0005)(_profile_value("model", "GSME-EMU"))
    server.command(METERING, 0x08)(_sampled_data)
    server.command(METERING, 0x07)(_start_sampling)
    server.attribute(METERING, 0x0205)(_battery_days)
    server.command(METERING, 0x06)(_get_snapshot)
    server.command(PREPAYMENT, 0x07)(_get_prepay_snapshot)
    setup_logs(server)
    setup_configuration(server)


# ----------------------------------------------------------------------------------------------- logs

def _top_up_log(ctx: ZclContext, comp: dict):
    """GCS15e: the newest `number_of_records` top-ups between From Date Time and `latest_end_time`
    (`state["gsme"]["top_up_log"]`, entries {top_up_code, top_up_amount, top_up_time}; prepayment fills it)."""
    p = comp["zcl"]["payload"]
    lo = comp.get("from_date_time", 0)
    hi = p["latest_end_time"]
    rows = [r for r in ctx.state.get("gsme", {}).get("top_up_log", []) if lo <= r["top_up_time"] <= hi]
    rows = sorted(rows, key=lambda r: -r["top_up_time"])[:p["number_of_records"]]
    if not rows:
        raise ZclFailure(Status.NOT_FOUND, "no top-up in that window")
    return {"command_id": 0x05, "payload": {"command_index": 0, "total_number_of_commands": 1,
                                            "top_up_payload": rows}}


def _debt_repayment_log(ctx: ZclContext, comp: dict):
    """GCS15d: the newest `number_of_debts` payment-based debt repayments of `debt_type` between From Date Time
    and `latest_end_time` (`state["gsme"]["debt_log"]`, entries {collection_time, amount_collected, debt_type,
    outstanding_debt}); a meter that collected none answers NOT_FOUND, the template's alternate response."""
    p = comp["zcl"]["payload"]
    lo = comp.get("from_date_time", 0)
    rows = [r for r in ctx.state.get("gsme", {}).get("debt_log", [])
            if lo <= r["collection_time"] <= p["latest_end_time"] and p["debt_type"] in (0xFF, r["debt_type"])]
    rows = sorted(rows, key=lambda r: -r["collection_time"])[:p["number_of_debts"]]
    if not rows:
        raise ZclFailure(Status.NOT_FOUND, "no debt repayment in that window")
    return {"command_id": 0x06, "payload": {"command_index": 0, "total_number_of_commands": 1,
                                            "debt_payload": rows}}


#: ZSE event log ids: 1 tamper, 2 fault, 3 general, 4 security, 5 network.
SECURITY_LOG, GENERAL_LOG = 4, 3


def event_log(device, log_id: int) -> list[dict]:
    """Entries {log_id, event_id, event_time, event_data} of a GSME event log, oldest first: alerts raised
    (critical ones in the security log, the rest in the general log), commands the security checks refused
    (security log, with the alert code they carry) and events logged without an alert
    (`state["gsme"]["logged_events"]`); entries up to a Clear Event Log of their log (CS11) are gone."""
    from firmware_emu.core.alerts import CRITICAL_ALERT_CODES, AlertCode
    gsme = device.state.get("gsme", {})
    cleared = gsme.get("log_cleared", {})
    rows = []
    for a in device.state.get("alert_log", []):
        if a.get("alert_code") is not None:
            rows.append((a["t"], SECURITY_LOG if a["alert_code"] in CRITICAL_ALERT_CODES else GENERAL_LOG,
                         a["alert_code"]))
    for r in device.state.get("security_log", []):
        code = AlertCode.SOURCE_HAS_NO_AUTHORITY if r.get("reason") == "role_not_allowed" else \
            AlertCode.COMMAND_INTEGRITY_CHECK_FAILED if r.get("reason") == "unsupported_use_case" else \
            AlertCode.FAILED_AUTHENTICATION_OR_AUTHORISATION
        rows.append((r["t"], SECURITY_LOG, int(code)))
    rows += [(e["t"], e["log_id"], e["event_id"]) for e in gsme.get("logged_events", [])]
    out = []
    for t, lid, code in sorted(rows, key=lambda r: r[0]):
        if log_id in (0, lid) and t > cleared.get(str(lid), float("-inf")):
            out.append({"log_id": lid, "event_id": int(code), "event_time": to_gbcs_seconds(t), "event_data": ""})
    return out


def _get_event_log(ctx: ZclContext, comp: dict):
    """CS10b: the events of one log between start and end time, newest first from `event_offset`."""
    p = comp["zcl"]["payload"]
    log_id = p["event_control_log_id"] & 0x0F
    rows = [e for e in event_log(ctx.device, log_id) if p["start_time"] <= e["event_time"] <= p["end_time"]
            and (p["event_id"] in (0, e["event_id"]))]
    rows.sort(key=lambda e: -e["event_time"])
    page = rows[p["event_offset"]:]
    if p["number_of_events"]:
        page = page[:p["number_of_events"]]
    if not page:
        raise ZclFailure(Status.NOT_FOUND, "no event in that window")
    return {"command_id": 0x01, "payload": {"total_number_of_matching_events": len(rows), "command_index": 0,
                                            "total_commands": 1, "log_payload_control": 0, "log_payload": page}}


def _no_calendar(ctx: ZclContext, comp: dict):
    """Calendar and price reads on a meter that holds none (phase-2 `tariff` registers the real ones)."""
    raise ZclFailure(Status.NOT_FOUND, "no calendar / price held")


def setup_logs(server) -> None:
    server.command(PREPAYMENT, 0x08)(_top_up_log)
    server.command(PREPAYMENT, 0x0A)(_debt_repayment_log)
    server.command(0x0709, 0x00)(_get_event_log)
    for cid in (0x00, 0x01, 0x02, 0x03, 0x04):   # Get Calendar, Day/Week Profiles, Seasons, Special Days
        server.command(0x0707, cid)(_no_calendar)
    server.command(PRICE, 0x00)(_no_calendar)     # Get Current Price


# ----------------------------------------------------------------------------------------------- configuration reads

#: ZSE BillingPeriodDurationType low nibble: 3 = months.
MONTHS = 0x03


def _billing_period(ctx: ZclContext, comp: dict):
    """GCS21d/GCS21k: the billing period (`state["gsme"]["billing_period"]`, set by phase-2 tariff use cases;
    factory default: monthly, from the start of the current month)."""
    now = _now(ctx)
    y, m = time.gmtime(now)[:2]
    bp = ctx.state.get("gsme", {}).get("billing_period") or {
        "start": to_gbcs_seconds(calendar.timegm((y, m, 1, 0, 0, 0))), "duration": 1, "duration_type": MONTHS,
        "issuer_event_id": 0}
    return {"command_id": 0x09, "payload": {
        "provider_id": 0, "issuer_event_id": bp["issuer_event_id"], "billing_period_start_time": bp["start"],
        "billing_period_duration": bp["duration"], "billing_period_duration_type": bp["duration_type"],
        "tariff_type": comp["zcl"]["payload"].get("tariff_type", 0)}}


#: ZSE event configuration bitmap: log id in bits 0-2 (3 general, 4 security), bit 3 push to the WAN.
_LOG_GENERAL, _LOG_SECURITY, _PUSH_WAN = 0x03, 0x04, 0x08


def event_configuration(device) -> dict[int, int]:
    """Event id → configuration: what phase-2 GCS20 sets (`state["gsme"]["event_configuration"]`) over the
    factory one (critical alert codes logged to the security log and pushed, the rest to the general log)."""
    from firmware_emu.core.alerts import CRITICAL_ALERT_CODES, AlertCode
    conf = {int(c): (_LOG_SECURITY | _PUSH_WAN) if c in CRITICAL_ALERT_CODES else _LOG_GENERAL for c in AlertCode}
    conf.update({int(k, 0): v for k, v in device.state.get("gsme", {}).get("event_configuration", {}).items()})
    return conf


def _get_event_configuration(ctx: ZclContext, comp: dict):
    """GCS20r: one event's configuration, or every event of a group when the low byte is 0xFF."""
    eid = comp["zcl"]["payload"]["event_id"]
    conf = event_configuration(ctx.device)
    ids = [e for e in sorted(conf) if (e >> 8) == (eid >> 8)] if eid & 0xFF == 0xFF else [eid]
    rows = [{"event_id": e, "event_configuration": conf[e]} for e in ids if e in conf]
    if not rows:
        raise ZclFailure(Status.NOT_FOUND, "no such event")
    return {"command_id": 0x04, "payload": {"command_index": 0, "total_commands": 1,
                                            "event_configuration_payload": rows}}


def setup_configuration(server) -> None:
    server.command(PRICE, 0x0B)(_billing_period)
    server.command(0x0708, 0x05, "server_to_client")(_get_event_configuration)
