"""GSME tariff: the ZSE Calendar cluster (0x0707) and the current price (Price 0x0700): what GCS01a/b, GCS05 and
the friendly-credit set-ups publish, and what GCS21b/GCS21f read back.

Theory of operation
-------------------
A calendar is one `state["gsme"]["calendars"][<calendar type>]` record: the Publish Calendar header (ids,
start time, type, name) plus the day profiles, week profiles and seasons published after it. Publish Calendar
starts a new calendar of its type (replacing the one held); Publish Day/Week Profile and Publish Seasons fill
the calendar with the same issuer calendar id (else the one published last). Special days are held per
calendar type in `state["gsme"]["special_days"]`. Types: 0 delivered (TOU price tiers), 3 friendly credit.

    Publish Calendar ─▶ new calendar (snapshot: change of calendar, + tariff information for type 0)
    Publish Day/Week Profile, Seasons ─▶ into that calendar
    Get Day/Week Profiles, Seasons, Special Days, Calendar ─▶ Publish … per item | NOT_FOUND (none held)
    Get Current Price ─▶ Publish Price (tier from the TOU calendar, prices from the Price attributes) | NOT_FOUND

Which calendar a read concerns: Get Special Days and Get Calendar name their type; the profile reads take it
from the use case (GCS21b reads the prepayment set-up: the friendly-credit calendar; the rest the TOU one).
Future-dated publication goes through `core.zcl.plan_future_dated`: while `ctx.scratch["plan_only"]` the
handlers only acknowledge. Price attributes are plain stored ZCL attributes (`Publish …` of GCS01a/b store
them); `unit_price` is what prepayment charges per m3 (millipence).
"""
from __future__ import annotations

import calendar as _cal
import logging
import time

from firmware_emu.core.clock import to_gbcs_seconds
from firmware_emu.core.zcl import DEFAULT_RESPONSE, Status, ZclContext, ZclFailure, get_stored, set_attribute

log = logging.getLogger(__name__)

__all__ = ["CALENDAR", "PRICE", "TOU", "FRIENDLY_CREDIT", "calendar", "special_days", "current_tier",
           "unit_price", "install", "setup"]

CALENDAR, PRICE = 0x0707, 0x0700
TOU, FRIENDLY_CREDIT = 0, 3
CAUSE_TARIFF, CAUSE_CALENDAR = 0x00000008, 0x00000100
#: Calendar read by the use case (module docstring); default TOU.
USE_CASE_CALENDAR = {"GCS21b": FRIENDLY_CREDIT}
DEFAULT_PRICE = 66_000          # millipence per m3 when no price is held
_IDS = ("provider_id", "issuer_event_id", "issuer_calendar_id")


def _tariff(device) -> dict:
    g = device.state.setdefault("gsme", {})
    g.setdefault("calendars", {})
    g.setdefault("special_days", {})
    return g


def calendar(device, calendar_type: int) -> dict | None:
    return device.state.get("gsme", {}).get("calendars", {}).get(str(calendar_type))


def special_days(device, calendar_type: int) -> dict | None:
    return device.state.get("gsme", {}).get("special_days", {}).get(str(calendar_type))


def _ids(p: dict) -> dict:
    return {k: p.get(k, 0) for k in _IDS}


def _snapshot(device, t: float, cause: int) -> None:
    from firmware_emu.gsme.prepayment import record_snapshot
    record_snapshot(device, t, cause)


# --------------------------------------------------------------------------------------------- publishing

def _publish_calendar(ctx: ZclContext, comp: dict):
    if ctx.scratch.get("plan_only"):
        return None
    p = comp["zcl"]["payload"]
    device = ctx.device
    cal = dict(p, days={}, weeks={}, seasons=[], t=device.device_time(ctx.now))
    _tariff(device)["calendars"][str(p["calendar_type"])] = cal
    _tariff(device)["last_published"] = str(p["calendar_type"])
    _snapshot(device, cal["t"], CAUSE_CALENDAR | (CAUSE_TARIFF if p["calendar_type"] == TOU else 0))
    device.event("calendar_published", calendar_type=p["calendar_type"], id=p["issuer_calendar_id"])
    return None


def _target_calendar(device, p: dict) -> dict:
    """The calendar a profile belongs to: the one with its issuer calendar id (the last published first)."""
    g = _tariff(device)
    cals = g["calendars"]
    if not cals:
        raise ZclFailure(Status.NOT_FOUND, "no calendar to add a profile to")
    order = sorted(cals.values(), key=lambda c: (c["t"], str(c["calendar_type"]) == g.get("last_published")))
    same = [c for c in order if c["issuer_calendar_id"] == p.get("issuer_calendar_id")]
    return (same or order)[-1]


def _publish_part(kind: str):
    def handler(ctx: ZclContext, comp: dict):
        if ctx.scratch.get("plan_only"):
            return None
        p = comp["zcl"]["payload"]
        cal = _target_calendar(ctx.device, p)
        if kind == "days":
            cal["days"][str(p["day_id"])] = {"entries": p["day_schedule_entries"], **_ids(p)}
        elif kind == "weeks":
            cal["weeks"][str(p["week_id"])] = {k: v for k, v in p.items() if k.startswith("day_id_ref")}
        else:
            cal["seasons"] = list(p["season_entries"])
        return None
    return handler


def _publish_special_days(ctx: ZclContext, comp: dict):
    if ctx.scratch.get("plan_only"):
        return None
    p = comp["zcl"]["payload"]
    _tariff(ctx.device)["special_days"][str(p["calendar_type"])] = {
        **_ids(p), "start_time": p["start_time"], "entries": list(p["special_day_entries"])}
    return None


# --------------------------------------------------------------------------------------------- reads

def _read_calendar(ctx: ZclContext, calendar_type: int | None = None) -> dict:
    if calendar_type is None:
        calendar_type = USE_CASE_CALENDAR.get(ctx.use_case or "", TOU)
    cal = calendar(ctx.device, calendar_type)
    if cal is None:
        raise ZclFailure(Status.NOT_FOUND, "no such calendar held")
    return cal


def _get_calendar(ctx: ZclContext, comp: dict):
    p = comp["zcl"]["payload"]
    cal = _read_calendar(ctx, p["calendar_type"] if p.get("calendar_type", 0xFF) != 0xFF else None)
    return {"command_id": 0x00, "payload": {k: cal[k] for k in (
        *_IDS, "start_time", "calendar_type", "calendar_time_reference", "calendar_name", "number_of_seasons",
        "number_of_week_profiles", "number_of_day_profiles")}}


def _ranged(items: dict, start: int, n: int) -> list[tuple[int, object]]:
    keys = sorted(int(k) for k in items if int(k) >= start)
    return [(k, items[str(k)]) for k in (keys[:n] if n else keys)]


def _get_day_profiles(ctx: ZclContext, comp: dict):
    p = comp["zcl"]["payload"]
    cal = _read_calendar(ctx)
    days = _ranged(cal["days"], p["start_day_id"], p["number_of_days"])
    if not days:
        raise ZclFailure(Status.NOT_FOUND, "no day profile")
    return [{"command_id": 0x01, "payload": {
        **_ids(cal), "day_id": d, "total_number_of_schedule_entries": len(day["entries"]), "command_index": 0,
        "total_number_of_commands": 1, "calendar_type": cal["calendar_type"], "day_schedule_entries": day["entries"]}}
        for d, day in days]


def _get_week_profiles(ctx: ZclContext, comp: dict):
    p = comp["zcl"]["payload"]
    cal = _read_calendar(ctx)
    weeks = _ranged(cal["weeks"], p["start_week_id"], p["number_of_weeks"])
    if not weeks:
        raise ZclFailure(Status.NOT_FOUND, "no week profile")
    return [{"command_id": 0x02, "payload": {**_ids(cal), "week_id": w, **refs}} for w, refs in weeks]


def _get_seasons(ctx: ZclContext, comp: dict):
    cal = _read_calendar(ctx)
    if not cal["seasons"]:
        raise ZclFailure(Status.NOT_FOUND, "no seasons")
    return {"command_id": 0x03, "payload": {**_ids(cal), "command_index": 0, "total_number_of_commands": 1,
                                            "season_entries": cal["seasons"]}}


def _get_special_days(ctx: ZclContext, comp: dict):
    p = comp["zcl"]["payload"]
    sd = special_days(ctx.device, p["calendar_type"])
    if sd is None or calendar(ctx.device, p["calendar_type"]) is None:
        raise ZclFailure(Status.NOT_FOUND, "no special days")
    entries = sd["entries"][:p["number_of_events"]] if p["number_of_events"] else sd["entries"]
    return {"command_id": 0x04, "payload": {
        **_ids(sd), "start_time": sd["start_time"], "calendar_type": p["calendar_type"],
        "total_number_of_special_days": len(entries), "command_index": 0, "total_number_of_commands": 1,
        "special_day_entries": entries}}


# --------------------------------------------------------------------------------------------- price

def _day_of(device, t: float, cal: dict) -> dict | None:
    """The day profile in force at device time `t`: a special day, else the season's week profile."""
    y, m, d, _, _, _, wday = time.gmtime(t)[:7]
    sd = special_days(device, cal["calendar_type"])
    for e in (sd or {}).get("entries", []):
        date = e["special_day_date"]
        if date["month"] == m and date["day"] == d and date.get("year") in (None, y):
            return cal["days"].get(str(e["day_id_ref"]))
    week = None
    for s in cal["seasons"]:
        date = s["season_start_date"]
        start = _cal.timegm((date.get("year") or y, date["month"], date["day"], 0, 0, 0))
        if start <= t:
            week = cal["weeks"].get(str(s["week_id_ref"])) or week
    if week is None and cal["weeks"]:
        week = cal["weeks"][sorted(cal["weeks"], key=int)[0]]
    if week is None:
        return None
    name = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")[wday]
    return cal["days"].get(str(week[f"day_id_ref_{name}"]))


def current_tier(device, t: float) -> int | None:
    """The TOU price tier at device time `t` (None without a TOU calendar)."""
    cal = calendar(device, TOU)
    if cal is None:
        return None
    day = _day_of(device, t, cal)
    if not day:
        return 1
    minutes = int(t % 86400) // 60
    tier = 1
    for e in sorted(day["entries"], key=lambda e: e["start_time"]):
        if e["start_time"] <= minutes:
            tier = e.get("price_tier", tier)
    return tier


def _price_attr(device, attribute_id: int) -> int | None:
    v = get_stored(device.state, PRICE, attribute_id)
    return int(v["value"]) if v is not None else None


def unit_price(device, t: float) -> int:
    """Millipence per m3 at device time `t`: the current tier's block-1 price, else the flat price."""
    tier = current_tier(device, t)
    price = _price_attr(device, 0x0400 + 0x10 * tier) if tier else None
    if price is None:
        price = _price_attr(device, 0x0400)
    return price if price else int(device.profile.get("unit_price_per_m3", DEFAULT_PRICE))


def _get_current_price(ctx: ZclContext, comp: dict):
    """Get Current Price → Publish Price of the tier in force (NOT_FOUND without a tariff)."""
    device = ctx.device
    cal = calendar(device, TOU)
    if cal is None:
        raise ZclFailure(Status.NOT_FOUND, "no tariff held")
    t = device.device_time(ctx.now)
    tier = current_tier(device, t) or 1
    trailing = _price_attr(device, 0x0617) or 0
    return {"command_id": 0x00, "payload": {
        "provider_id": cal["provider_id"], "rate_label": "", "issuer_event_id": cal["issuer_event_id"],
        "current_time": to_gbcs_seconds(t), "unit_of_measure": _price_attr(device, 0x0615) or 0x01,
        "currency": _price_attr(device, 0x0616) or 826,
        "price_trailing_digit_and_price_tier": (trailing & 0xF0) | (tier & 0x0F),
        "number_of_price_tiers_and_register_tier": (len(_tiers(cal)) << 4) | (tier & 0x0F), "start_time": 0,
        "duration_in_minutes": 1440, "price": unit_price(device, t), "extension": None}}


def _tiers(cal: dict) -> set[int]:
    return {e.get("price_tier", 1) for d in cal["days"].values() for e in d["entries"]} or {1}


# --------------------------------------------------------------------------------------------- a tariff

def install(device, now: float, issuer_id: int) -> None:
    """Publish a complete tariff the way a supplier does (GCS01a/GCS05 components through the ZCL server): a
    seasonal two-rate TOU calendar (winter from October, summer from April; weekday and weekend day profiles
    of each: four days, two weeks, two seasons; night tier 2), Christmas and New Year's Day as special days, a
    friendly-credit calendar of the same shape (evenings, nights and weekends friendly) and the tier prices.
    Used by a lived device's history (`events.live`)."""
    def comp(cluster, cid, payload):
        return {"cluster": cluster, "zcl": {"frame_control": {"frame_type": "cluster", "direction": "server_to_client"},
                                            "sequence_number": 0, "command_id": cid, "payload": payload}}

    def calendar_components(ctype: int, cal_id: int, field: str, days: dict, seasons, specials) -> list[dict]:
        ids = {"provider_id": 0, "issuer_event_id": issuer_id, "issuer_calendar_id": cal_id}
        out = [comp(CALENDAR, 0x00, {**ids, "start_time": 0, "calendar_type": ctype, "calendar_time_reference": 0,
                                     "calendar_name": "", "number_of_seasons": 2, "number_of_week_profiles": 2,
                                     "number_of_day_profiles": len(days)})]
        for day_id, entries in days.items():
            out.append(comp(CALENDAR, 0x01, {
                **ids, "day_id": day_id, "total_number_of_schedule_entries": len(entries), "command_index": 0,
                "total_number_of_commands": 1, "calendar_type": ctype,
                "day_schedule_entries": [{"start_time": m, field: v} for m, v in entries]}))
        for week_id, (weekday, weekend) in ((1, (1, 2)), (2, (3, 4))):
            out.append(comp(CALENDAR, 0x02, {**ids, "week_id": week_id, **{f"day_id_ref_{n}": weekday for n in (
                "monday", "tuesday", "wednesday", "thursday", "friday")}, "day_id_ref_saturday": weekend,
                "day_id_ref_sunday": weekend}))
        out.append(comp(CALENDAR, 0x03, {**ids, "command_index": 0, "total_number_of_commands": 1, "season_entries": [
            {"season_start_date": _date(sy, m, d), "week_id_ref": w} for sy, m, d, w in seasons]}))
        out.append(comp(CALENDAR, 0x04, {**ids, "start_time": 0, "calendar_type": ctype,
                                         "total_number_of_special_days": len(specials), "command_index": 0,
                                         "total_number_of_commands": 1, "special_day_entries": [
            {"special_day_date": _date(sy, m, d), "day_id_ref": 2} for sy, m, d in specials]}))
        return out


    tou = {1: [(0, 2), (390, 1), (1410, 2)], 2: [(0, 2)], 3: [(0, 2), (330, 1), (1380, 2)], 4: [(0, 2)]}
    friendly = {1: [(0, 1), (480, 0), (1080, 1)], 2: [(0, 1)], 3: [(0, 1), (420, 0), (1140, 1)], 4: [(0, 1)]}
    y = time.gmtime(now).tm_year
    # TOU: this winter and next summer, dated; the public holidays of the season, dated
    comps = calendar_components(TOU, issuer_id, "price_tier", tou, [(y, 10, 1, 1), (y + 1, 4, 1, 2)],
                                [(y, 12, 25), (y, 12, 26), (y + 1, 1, 1)])
    # friendly credit: recurring seasons; next year's May and August bank holidays, then recurring holidays
    comps += calendar_components(FRIENDLY_CREDIT, issuer_id + 1, "friendly_credit_enable", friendly,
                                 [(None, 4, 1, 2), (None, 10, 1, 1)],
                                 [(y + 1, 5, _first_monday(y + 1, 5)), (y + 1, 8, _last_monday(y + 1, 8)),
                                  (None, 12, 25), (None, 12, 26)])
    server = type(device).server()
    ctx = ZclContext(device, now)
    for c in comps:
        out, _ = server._serve_component(ctx, c)
        if out and out[0]["zcl"]["command_id"] == DEFAULT_RESPONSE and out[0]["zcl"]["payload"]["status"]:
            raise RuntimeError(f"tariff installation failed at {c['zcl']['command_id']}")
    for attribute_id, value, typ in ((0x0410, 72_000, "uint32"), (0x0420, 41_000, "uint32"),
                                     (0x0400, 66_000, "uint32"), (0x0616, 826, "uint16"), (0x0615, 0x01, "enum8"),
                                     (0x0617, 0x30, "bitmap8")):
        set_attribute(device.state, PRICE, attribute_id, value, typ)


def _date(year, month: int, day: int) -> dict:
    """A ZCL Date (year None: every year)."""
    return {"year": year, "month": month, "day": day, "day_of_week": 0xFF}


def _first_monday(year: int, month: int) -> int:
    return 1 + (7 - _cal.weekday(year, month, 1)) % 7


def _last_monday(year: int, month: int) -> int:
    last = _cal.monthrange(year, month)[1]
    return last - _cal.weekday(year, month, last)


def setup(cls) -> None:
    server = cls.server()
    s2c = "server_to_client"
    server.command(CALENDAR, 0x00, s2c)(_publish_calendar)
    server.command(CALENDAR, 0x01, s2c)(_publish_part("days"))
    server.command(CALENDAR, 0x02, s2c)(_publish_part("weeks"))
    server.command(CALENDAR, 0x03, s2c)(_publish_part("seasons"))
    server.command(CALENDAR, 0x04, s2c)(_publish_special_days)
    server.command(CALENDAR, 0x00)(_get_calendar)
    server.command(CALENDAR, 0x01)(_get_day_profiles)
    server.command(CALENDAR, 0x02)(_get_week_profiles)
    server.command(CALENDAR, 0x03)(_get_seasons)
    server.command(CALENDAR, 0x04)(_get_special_days)
    server.command(PRICE, 0x00)(_get_current_price)
