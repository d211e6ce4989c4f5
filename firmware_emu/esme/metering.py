"""ESME metering: registers, protected (encrypted) reads, profiles and logs, identity reads.

Theory of operation
-------------------
Nothing measured is stored. Every register is the seeded `ConsumptionModel` of this meter (seed
`state["esme"]["profile"]["seed"]`, key the device EUI; optional profile keys `mean_kw`, `solar_kwp`,
`t0`, `initial_wh`) evaluated at `ctx.now`, so values rise with time, survive restarts and agree between
every read path:

* ECS17a Register (3) import/export active/reactive energy `1-0:{1,2,3,4}.8.0.255` (Wh / varh);
* ECS17b/17c/17d/17e/19 Data (1) collections `0-0:94.44.34.{10,20,1,2,30}` (import registers, power,
  48 TOU registers, 4x16 block registers, prepayment balances);
* ECS18a/18b Demand register (4) `1-0:{1,2}.6.{0,1}.255`: the highest half-hour demand since the last reset
  (method 1, ECS57), at most the last 31 days;
* half-hour, daily and billing profiles / read logs (Profile generic 7, `firmware_emu.core.logs`): differences
  or snapshots of the same integer registers at their capture times, so profiles sum to register deltas.

TOU split. The active tariff is whatever the tariff module left in the generic store: the Activity calendar
`20/0-0:13.0.0.255` active season (3), week (4) and day (5) profiles and the Special days table
`11/0-0:11.0.0.255` (2); the script selector of the day action in force (1..48 or 101..148) names the TOU rate.
Without a calendar all energy is rate 1. Block thresholds are the Register monitor `21/0-0:16.0.11.255`
thresholds (cumulative Wh within the calendar month). TOU registers are kept as a snapshot
`state["esme"]["metering"]["tou"] = {"since", "registers", "tariff"}` (registers at `since` under tariff
`tariff`); a read walks the half hours since then and rolls the snapshot forward once it is a week old,
or when the tariff changed (the energy before the change stays where the old tariff put it):

    no tariff --calendar appears--> snapshot(since=now) --read, >7 days--> snapshot(since=now) ...
                                         \\--tariff changes--> snapshot(since=now, new tariff)

Prepayment values (ECS19, prepayment logs) are read from `state["esme"]["prepayment"]` keys `meter_balance`,
`emergency_credit_balance`, `accumulated_debt`, `time_debt_1`, `time_debt_2`, `payment_debt` (the prepayment
module's; missing keys read 0). Credit and debt-repayment logs, event/security/power logs and the
change-of-tariff billing log are appended by whoever lives the event with `logs.append_log`.

Protected reads (Data protection 30 `0-0:43.2.x.255` method 1 get_protected_attributes, ECS17b/17d/17e/19/
20b/20c/21a/21b/22b/66): every attribute descriptor of the argument is served by the same COSEM server as a
plain get (so injected faults and shapes are shared), the values are gathered in one structure, A-XDR
encoded and encrypted (KDF mode 04, device → remote party; for an unknown-remote-party read with the KA
certificate the command carried and the supplementary originator counter the device takes from its own
counter, brief §3.4 / pitfall 8). The response is {protection parameters with the titles turned round,
octet-string `31 00000000 ‖ ciphertext ‖ tag`}. A URP response's other-information carries that counter:
`ctx.scratch["other_information"]` (the ESME passes it to the Reply).
"""
from __future__ import annotations

import calendar
import hashlib
import json
import logging
import math
import time

from protocols.dlms.axdr import encode_data
from protocols.security.eui import as_eui, eui_hex
from protocols.security.mac import encrypt_payload

from firmware_emu.core.catalogue import Catalogue
from firmware_emu.core.clock import GBCS_EPOCH, dlms_datetime, to_gbcs_seconds
from firmware_emu.core.consumption import DAY, HALF_HOUR, MAX_TOU_INTERVALS, ConsumptionModel, model_of
from firmware_emu.core.cosem import NULL, AccessContext, AccessFailure, CosemObject, StoredObject, attr_key
from firmware_emu.core import logs
from firmware_emu.core.logs import ProfileObject, capture_times, is_twin
from firmware_emu.esme.tariff import selector_to_rate

log = logging.getLogger(__name__)

__all__ = ["register", "meter", "secondary_meter", "tou_registers", "block_registers", "prepayment_balances",
           "ENCRYPTED_HEADER"]

ENCRYPTED_HEADER = bytes.fromhex("3100000000")
N_TOU = 48
N_SECONDARY_TOU = 4
N_BLOCKS = 4
BLOCK_MATRIX = 16            # block registers are [block 1..4] x [TOU 1..16]
_ROLL_AFTER = 7 * DAY
_MD_WINDOW = 31 * DAY
_WH = {"type": "structure", "value": [{"type": "integer", "value": 0}, {"type": "enum", "value": 30}]}
_VARH = {"type": "structure", "value": [{"type": "integer", "value": 0}, {"type": "enum", "value": 32}]}

CALENDAR = "0-0:13.0.0.255"
SPECIAL_DAYS = "0-0:11.0.0.255"
BLOCK_MONITOR = "0-0:16.0.11.255"
PREPAYMENT_KEYS = ("emergency_credit_balance", "meter_balance", "payment_debt", "time_debt_1", "time_debt_2",
                   "accumulated_debt")


def _dlu(v: int) -> dict:
    return {"type": "double-long-unsigned", "value": max(0, min(int(v), 0xFFFFFFFF))}


def _dl(v: int) -> dict:
    return {"type": "double-long", "value": max(-0x80000000, min(int(v), 0x7FFFFFFF))}


# ----------------------------------------------------------------------------------------------- the model

def _profile(device) -> dict:
    return device.profile


def meter(device) -> ConsumptionModel:
    """This meter's consumption model (deterministic in the EUI and the profile)."""
    prof = _profile(device)
    return model_of(device, {k: prof[k] for k in ("mean_kw", "solar_kwp", "t0", "initial_wh") if k in prof})


def secondary_meter(device) -> ConsumptionModel:
    """The second measuring element of a twin-element ESME (its own, smaller load)."""
    return model_of(device, {"mean_kw": float(_profile(device).get("secondary_mean_kw", 0.15))}, suffix="/secondary")


# ----------------------------------------------------------------------------------------------- tariff

def _stored(ctx_or_device, class_id: int, obis: str, attr: int):
    device = getattr(ctx_or_device, "device", ctx_or_device)
    return device.state.get("cosem", {}).get(attr_key(class_id, obis, attr))


def _date_matches(date_hex: str, t: float) -> bool:
    """A DLMS date (5 bytes, wildcards FFFF / FF) against UTC time t."""
    b = bytes.fromhex(date_hex)
    if len(b) < 4:
        return False
    tm = time.gmtime(t)
    year = int.from_bytes(b[0:2], "big")
    return (year == 0xFFFF or year == tm.tm_year) and b[2] in (0xFF, tm.tm_mon) and b[3] in (0xFF, tm.tm_mday)


class Tariff:
    """The TOU rate in force at any time, from the active Activity calendar (see the module docstring)."""

    def __init__(self, seasons, weeks, days, special):
        self.seasons = sorted(seasons, key=lambda s: s[0])   # (start month-day key, week name)
        self.weeks = weeks                                     # name -> [day id Mon..Sun]
        self.days = days                                       # day id -> [(seconds of day, rate)]
        self.special = special                                 # [(date hex, day id)]

    @classmethod
    def from_state(cls, device) -> "Tariff | None":
        seasons_d, weeks_d, days_d = (_stored(device, 20, CALENDAR, a) for a in (3, 4, 5))
        if not days_d or not days_d.get("value"):
            return None
        try:
            seasons = []
            for s in (seasons_d or {}).get("value", []):
                start = bytes.fromhex(s["value"][1]["value"])
                seasons.append(((start[2] if start[2] != 0xFF else 1, start[3] if start[3] != 0xFF else 1),
                                s["value"][2]["value"]))
            weeks = {w["value"][0]["value"]: [d["value"] for d in w["value"][1:8]]
                     for w in (weeks_d or {}).get("value", [])}
            days = {}
            for d in days_d["value"]:
                actions = []
                for a in d["value"][1]["value"]:
                    st = bytes.fromhex(a["value"][0]["value"])
                    sec = (st[0] if st[0] != 0xFF else 0) * 3600 + (st[1] if st[1] != 0xFF else 0) * 60
                    actions.append((sec, _rate(a["value"][2]["value"])))
                days[d["value"][0]["value"]] = sorted(actions)
            special = [(s["value"][1]["value"], s["value"][2]["value"])
                       for s in (_stored(device, 11, SPECIAL_DAYS, 2) or {}).get("value", [])]
        except (KeyError, IndexError, TypeError, ValueError) as e:
            log.info("tariff: calendar not understood (%s); all energy in rate 1", e)
            return None
        return cls(seasons, weeks, days, special)

    def day_id(self, t: float):
        for date_hex, day in self.special:
            if _date_matches(date_hex, t):
                return day
        tm = time.gmtime(t)
        week = None
        for (month, mday), name in self.seasons:
            if (tm.tm_mon, tm.tm_mday) >= (month, mday):
                week = name
        if week is None and self.seasons:
            week = self.seasons[-1][1]      # before the first season start of the year: last year's last season
        days = self.weeks.get(week) or next(iter(self.weeks.values()), None)
        if days is None:
            return next(iter(self.days), None)
        return days[tm.tm_wday] if tm.tm_wday < len(days) else days[0]

    def rate_of(self, t: float) -> int:
        actions = self.days.get(self.day_id(t)) or []
        sec = int(t) % DAY
        rate = actions[-1][1] if actions else 0      # before the first action: the previous day's last one
        for start, r in actions:
            if start <= sec:
                rate = r
        return rate


def _rate(selector: int) -> int:
    """Script selector -> TOU rate index (0-based), by the one rule `tariff.selector_to_rate` applies."""
    return selector_to_rate(selector) - 1


def _tariff_fingerprint(device) -> str | None:
    parts = [_stored(device, 20, CALENDAR, a) for a in (3, 4, 5)] + [_stored(device, 11, SPECIAL_DAYS, 2)]
    if not parts[2]:
        return None
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def tou_registers(device, now: float) -> list[int]:
    """The 48 TOU import registers (Wh) at `now`; they sum to the import register."""
    m = meter(device)
    total = m.energy_wh(now)
    fp = _tariff_fingerprint(device)
    st = device.state.setdefault("esme", {}).setdefault("metering", {})
    snap = st.get("tou")
    if fp is None and snap is None:
        return [total] + [0] * (N_TOU - 1)
    if snap is None:
        snap = st["tou"] = {"since": math.floor(now), "registers": [total] + [0] * (N_TOU - 1), "tariff": fp}
    since = snap["since"]
    if now <= since:
        regs = list(snap["registers"])
        regs[0] += total - sum(regs)      # reads before the snapshot: the difference is rate 1's
        return regs
    tariff = Tariff.from_state(device) if snap["tariff"] is not None else None
    regs = list(snap["registers"])
    t_from = since
    if (now - since) / HALF_HOUR > MAX_TOU_INTERVALS:
        t_from = now - MAX_TOU_INTERVALS * HALF_HOUR      # unread for years: the old part goes to rate 1
        regs[0] += m.energy_wh(t_from) - m.energy_wh(since)
    if tariff is None:
        regs[0] += total - m.energy_wh(t_from)
    else:
        for i, v in enumerate(m.tou_registers(t_from, now, tariff.rate_of, N_TOU)):
            regs[i] += v
    if fp != snap["tariff"] or now - since > _ROLL_AFTER:
        st["tou"] = {"since": math.floor(now), "registers": regs, "tariff": fp}
    return regs


def block_registers(device, now: float) -> list[int]:
    """The 4x16 block registers (Wh): this calendar month's energy split by the block thresholds of the
    Register monitor (cumulative Wh in the month; 0xFFFFFFFF = no threshold), counted in TOU column 1."""
    m = meter(device)
    tm = time.gmtime(now)
    month_start = float(calendar.timegm((tm.tm_year, tm.tm_mon, 1, 0, 0, 0)))
    thresholds = []
    mon = _stored(device, 21, BLOCK_MONITOR, 2)
    for x in (mon or {}).get("value", []) if isinstance(mon, dict) else []:
        if isinstance(x, dict) and isinstance(x.get("value"), int) and x["value"] < 0xFFFFFFFF:
            thresholds.append(x["value"])
    thresholds = sorted(thresholds)[:N_BLOCKS - 1]
    blocks = m.block_registers(month_start, now, thresholds, period_start=month_start)
    blocks += [0] * (N_BLOCKS - len(blocks))
    out = [0] * (N_BLOCKS * BLOCK_MATRIX)
    for b, v in enumerate(blocks[:N_BLOCKS]):
        out[b * BLOCK_MATRIX] = v
    return out


def prepayment_balances(device) -> dict[str, int]:
    pp = device.state.get("esme", {}).get("prepayment", {})
    return {k: int(pp.get(k, 0)) if isinstance(pp.get(k, 0), (int, float)) else 0 for k in PREPAYMENT_KEYS}


# ----------------------------------------------------------------------------------------------- registers

class EnergyRegister(StoredObject):
    """Register (3) of cumulative energy: attribute 2 from the model, scaler_unit from the appendix."""

    def __init__(self, catalogue, quantity: str, unit: dict):
        super().__init__(catalogue)
        self.quantity, self.unit = quantity, unit

    def value(self, ctx: AccessContext) -> int:
        m = meter(ctx.device)
        if self.quantity == "import":
            return m.energy_wh(ctx.now)
        if self.quantity == "export":
            return m.export_wh(ctx.now)
        tan_phi = math.tan(math.acos(m.power_factor))
        if self.quantity == "reactive_import":
            return m.reactive_varh(ctx.now)
        return math.floor(m.export_wh(ctx.now) * tan_phi)      # reactive export

    def get(self, ctx, class_id, obis, attr, selection):
        if attr == 1:
            return {"type": "octet-string", "value": _obis_hex(obis)}
        if attr == 2:
            return _dlu(self.value(ctx))
        if attr == 3:
            return self.stored(ctx, class_id, obis, attr) or self.unit
        return super().get(ctx, class_id, obis, attr, selection)


class DemandRegister(StoredObject):
    """Demand register (4): the highest half-hour average power (W) since the last reset (method 1, ECS57),
    over at most the last 31 days; attribute 5 is the end of that half hour."""

    def __init__(self, catalogue, export: bool):
        super().__init__(catalogue)
        self.export = export

    def _peak(self, ctx, obis) -> tuple[int, float | None]:
        st = ctx.device.state.get("esme", {}).get("metering", {}).get("md_reset", {})
        since = max(st.get(obis, 0.0), ctx.now - _MD_WINDOW)
        m = meter(ctx.device)
        if self.export:
            if not m.solar_kwp:
                return 0, None
            best = (0, None)
            for t_end, _ in m.half_hour_profile(since, ctx.now):
                s = t_end + GBCS_EPOCH
                w = (m.export_wh(s) - m.export_wh(s - HALF_HOUR)) * 2
                if w > best[0]:
                    best = (w, float(s))
            return best
        try:
            return m.max_demand(since, ctx.now)
        except ValueError:
            return 0, None

    def get(self, ctx, class_id, obis, attr, selection):
        if attr == 2:
            return _dlu(self._peak(ctx, obis)[0])
        if attr == 5:
            t = self._peak(ctx, obis)[1]
            if t is None:
                return super().get(ctx, class_id, obis, attr, selection)
            return {"type": "octet-string", "value": dlms_datetime(t).hex().upper()}
        return super().get(ctx, class_id, obis, attr, selection)

    def action(self, ctx, class_id, obis, method, arg):
        if method == 1:
            st = ctx.device.state.setdefault("esme", {}).setdefault("metering", {})
            st.setdefault("md_reset", {})[obis] = ctx.now
            return None
        return super().action(ctx, class_id, obis, method, arg)


# ----------------------------------------------------------------------------------------------- collections

def _import_collection(ctx: AccessContext, twin: bool) -> dict:
    m = meter(ctx.device)
    v = [_dlu(m.energy_wh(ctx.now)), _WH, _dlu(m.reactive_varh(ctx.now)), _VARH]
    if twin:
        v.append(_dlu(secondary_meter(ctx.device).energy_wh(ctx.now)))
    return {"type": "structure", "value": v}


def _power_collection(ctx: AccessContext, twin: bool) -> dict:
    w = round(meter(ctx.device).power_w(ctx.now))
    if twin:
        w2 = w + round(secondary_meter(ctx.device).power_w(ctx.now))
    else:
        w2 = w
    unit = {"type": "structure", "value": [{"type": "integer", "value": 0}, {"type": "enum", "value": 27}]}
    return {"type": "structure", "value": [_dlu(w2), unit, _dlu(w)]}


def _secondary_tou(ctx: AccessContext) -> list[int]:
    return [secondary_meter(ctx.device).energy_wh(ctx.now)] + [0] * (N_SECONDARY_TOU - 1)


def _tou_collection(ctx: AccessContext, twin: bool) -> dict:
    v = [{"type": "array", "value": [_dlu(x) for x in tou_registers(ctx.device, ctx.now)]}]
    if twin:
        v.append({"type": "array", "value": [_dlu(x) for x in _secondary_tou(ctx)]})
    return {"type": "structure", "value": v}


def _block_collection(ctx: AccessContext, twin: bool) -> dict:
    return {"type": "structure",
            "value": [{"type": "array", "value": [_dlu(x) for x in block_registers(ctx.device, ctx.now)]}]}


def _prepayment_collection(ctx: AccessContext, twin: bool) -> dict:
    b = prepayment_balances(ctx.device)
    order = ("meter_balance", "emergency_credit_balance", "accumulated_debt", "time_debt_1", "time_debt_2",
             "payment_debt")
    return {"type": "structure", "value": [_dl(b[k]) for k in order]}


COLLECTIONS = {
    "0-0:94.44.34.10": _import_collection,      # ECS17b
    "0-0:94.44.34.20": _power_collection,       # ECS17c
    "0-0:94.44.34.1": _tou_collection,          # ECS17d
    "0-0:94.44.34.2": _block_collection,        # ECS17e
    "0-0:94.44.34.30": _prepayment_collection,  # ECS19
}


class Collection(StoredObject):
    """A GBCS Data (1) object whose value gathers live registers into one structure."""

    def get(self, ctx, class_id, obis, attr, selection):
        if attr == 2:
            return COLLECTIONS[obis](ctx, is_twin(ctx.device))
        return super().get(ctx, class_id, obis, attr, selection)


class Identity(StoredObject):
    """Identity Data objects (ECS26e/26m): the device EUI, and the profile's variant/model/manufacturer when
    given; everything else is the stored / appendix value."""

    PROFILE_KEYS = {"0-0:96.1.2.255": "meter_variant", "0-0:96.1.4.255": "model", "0-0:96.1.6.255": "manufacturer"}

    def get(self, ctx, class_id, obis, attr, selection):
        if attr == 2 and obis == "0-0:96.1.1.255":
            return {"type": "octet-string", "value": ctx.device.state["eui"]}
        if attr == 2 and ctx.cosem.get(attr_key(class_id, obis, attr)) is None:
            v = _profile(ctx.device).get(self.PROFILE_KEYS.get(obis, ""))
            if isinstance(v, str):
                return {"type": "octet-string", "value": v.encode().hex().upper()}
        return super().get(ctx, class_id, obis, attr, selection)


class AuxiliaryOutputState(StoredObject):
    """Disconnect control (70) output_state of the auxiliary load control switches `0-n:96.3.10.255`
    (ECS61a): stored, closed (TRUE) until something opens it."""

    def get(self, ctx, class_id, obis, attr, selection):
        if attr == 2:
            return ctx.cosem.get(attr_key(class_id, obis, attr)) or {"type": "boolean", "value": True}
        return super().get(ctx, class_id, obis, attr, selection)


# ----------------------------------------------------------------------------------------------- profiles

def _hh_rows(fn):
    """Half-hour profile rows: a capture at T holds the half hour ending at T."""
    def rows(ctx, rng, twin, depth):
        for t in capture_times(rng, ctx.now, HALF_HOUR, depth):
            yield fn(ctx, t + GBCS_EPOCH, twin)
    return rows


def _delta(reg, t_end: float, period: int) -> int:
    return max(0, reg(t_end) - reg(t_end - period))


def _hh_import(ctx, t, twin):
    m = meter(ctx.device)
    row = [to_gbcs_seconds(t), _delta(m.energy_wh, t, HALF_HOUR)]
    if twin:
        row.append(_delta(secondary_meter(ctx.device).energy_wh, t, HALF_HOUR))
    return row


def _hh_export(ctx, t, twin):
    m = meter(ctx.device)
    tan_phi = math.tan(math.acos(m.power_factor))
    return [to_gbcs_seconds(t), _delta(m.export_wh, t, HALF_HOUR),
            _delta(lambda x: math.floor(m.export_wh(x) * tan_phi), t, HALF_HOUR)]


def _hh_reactive(ctx, t, twin):
    return [to_gbcs_seconds(t), _delta(meter(ctx.device).reactive_varh, t, HALF_HOUR)]


def _daily(fn, offset: int = 0, period: int = DAY):
    def rows(ctx, rng, twin, depth):
        for t in capture_times(rng, ctx.now, period, depth, offset):
            yield fn(ctx, t + GBCS_EPOCH, twin)
    return rows


def _daily_consumption(ctx, t, twin):
    return [to_gbcs_seconds(t), _delta(meter(ctx.device).energy_wh, t, DAY)]


def _daily_export(ctx, t, twin):
    return [to_gbcs_seconds(t), meter(ctx.device).export_wh(t)]


def _register_read(ctx, t, twin, prepayment=False):
    """A register-read log entry at t: import, [secondary], 48 TOU, [4 secondary TOU], 4 x 8 block values,
    then (change-of-mode/tariff and billing logs) the prepayment balances."""
    m = meter(ctx.device)
    regs = tou_registers(ctx.device, t)
    row = [to_gbcs_seconds(t), m.energy_wh(t)]
    if twin:
        row.append(secondary_meter(ctx.device).energy_wh(t))
    row.append(regs)
    if twin:
        row.append([secondary_meter(ctx.device).energy_wh(t)] + [0] * (N_SECONDARY_TOU - 1))
    blocks = block_registers(ctx.device, t)
    for b in range(N_BLOCKS):
        row.append(blocks[b * BLOCK_MATRIX:b * BLOCK_MATRIX + 8])
    if prepayment:
        row += _prepayment_row(ctx)
    return row


def _prepayment_row(ctx) -> list[int]:
    b = prepayment_balances(ctx.device)
    return [b[k] for k in PREPAYMENT_KEYS]


def _prepayment_read(ctx, t, twin):
    return [to_gbcs_seconds(t)] + _prepayment_row(ctx)


def _monthly(fn):
    """Billing-calendar logs: a capture at 00:00 UTC on the first of each month."""
    def rows(ctx, rng, twin, depth):
        tm = time.gmtime(ctx.now)
        y, mo = tm.tm_year, tm.tm_mon
        out = []
        for _ in range(depth):
            t = calendar.timegm((y, mo, 1, 0, 0, 0))
            g = to_gbcs_seconds(t)
            if rng is None or rng[0] <= g <= rng[1]:
                out.append(fn(ctx, float(t), twin))
            if rng is not None and g < rng[0]:
                break
            y, mo = (y, mo - 1) if mo > 1 else (y - 1, 12)
        return reversed(out)
    return rows


def _voltage(ctx, rng, twin, depth):
    period = _capture_period(ctx, "1-0:32.24.0.255") or HALF_HOUR
    eui = ctx.device.state["eui"]
    for t in capture_times(rng, ctx.now, period, depth):
        h = hashlib.sha256(f"{eui}/voltage/{t}".encode()).digest()
        yield [t, 230 + (h[0] % 13) - 6]


def _capture_period(ctx, obis) -> int:
    v = _stored(ctx, 7, obis, 4)
    return int(v["value"]) if isinstance(v, dict) and isinstance(v.get("value"), int) and v["value"] > 0 else 0


#: Computed buffers: OBIS -> (rows(ctx, range, twin, depth), depth = the appendix's entry count).
PROFILES = {
    "0-0:99.1.0.255": (_hh_rows(_hh_import), 19056),                  # ECS22b active import, half-hourly
    "0-0:99.1.1.255": (_hh_rows(_hh_export), 4464),                   # ECS22a active/reactive export
    "0-0:99.1.2.255": (_hh_rows(_hh_reactive), 4464),                 # ECS22c reactive import
    "0-0:99.1.3.255": (_daily(_daily_consumption), 731),              # ECS66 daily consumption
    "0-0:98.1.9.255": (_daily(_register_read), 31),                   # ECS21a daily read log
    "0-0:98.1.10.255": (_daily(_daily_export), 31),                   # ECS21c daily export read log
    "0-0:98.1.8.255": (_daily(_prepayment_read), 31),                 # ECS21b prepayment daily read log
    "0-0:98.1.0.255": (_monthly(_register_read), 12),                 # ECS20c billing data log
    "0-0:98.1.1.255": (_monthly(_prepayment_read), 12),               # ECS20c prepayment billing log
    "1-0:32.24.0.255": (_voltage, 4320),                              # ECS23 average RMS voltage
}


def _computed(rows, depth):
    return lambda ctx, rng, twin: rows(ctx, rng, twin, depth)


# ----------------------------------------------------------------------------------------------- protection

def _obis_hex(obis: str) -> str:
    a, rest = obis.split("-", 1)
    b, rest = rest.split(":", 1)
    return bytes([int(a), int(b)] + [int(x) for x in rest.split(".")]).hex().upper()


def _obis_name(hex_: str) -> str:
    b = bytes.fromhex(hex_)
    if len(b) != 6:
        raise AccessFailure("type-unmatched", "logical name is not 6 bytes")
    return f"{b[0]}-{b[1]}:{b[2]}.{b[3]}.{b[4]}.{b[5]}"


class DataProtection(CosemObject):
    """Data protection (30) method 1 get_protected_attributes (module docstring)."""

    def __init__(self, server):
        self.server = server

    def get(self, ctx, class_id, obis, attr, selection):
        raise AccessFailure("read-write-denied")

    def action(self, ctx, class_id, obis, method, arg):
        if method != 1:
            raise AccessFailure("object-undefined")
        if ctx.cmd is None:
            raise AccessFailure("temporary-failure", "protected reads answer a command")
        try:
            descriptors, params = arg["value"][0]["value"], arg["value"][1]["value"]
            if type(descriptors) is not list or type(params) is not list:
                raise TypeError("descriptors and parameters are arrays")
        except (KeyError, IndexError, TypeError):
            raise AccessFailure("type-unmatched", "get_protected_attributes wants {descriptors, parameters}") \
                from None
        values = []
        for d in descriptors:
            try:
                cls, ln, attr, _index, access = (x for x in d["value"])
                if (cls.get("type"), ln.get("type"), attr.get("type")) != ("long-unsigned", "octet-string",
                                                                            "integer"):
                    raise TypeError("descriptor fields are {long-unsigned, octet-string, integer, ...}")
                descriptor = {"class_id": cls["value"], "instance_id": _obis_name(ln["value"]),
                              "attribute_id": attr["value"]}
                selector = access["value"][0]["value"] if access.get("type") == "structure" else 0
                selection = {"selector": selector, "parameters": access["value"][1]} if selector else None
            except (KeyError, IndexError, TypeError, ValueError):
                raise AccessFailure("type-unmatched", "bad attribute descriptor") from None
            item = self.server.execute(ctx, "get-with-selection" if selection else "get", descriptor, NULL,
                                       selection)
            values.append(item if item is not None else NULL)
        plaintext = encode_data({"type": "structure", "value": values})
        sealed = self._encrypt(ctx, plaintext)
        device_eui = eui_hex(ctx.device.eui)
        answered = []
        for p in params:
            p = json.loads(json.dumps(p))
            try:
                opts = p["value"][1]["value"]
                opts[1]["value"] = device_eui
                opts[2]["value"] = ctx.cmd.header["originator"]
            except (KeyError, IndexError, TypeError):
                raise AccessFailure("type-unmatched", "bad protection parameters") from None
            answered.append(p)
        return {"type": "structure", "value": [{"type": "array", "value": answered},
                                               {"type": "octet-string",
                                                "value": (ENCRYPTED_HEADER + sealed).hex().upper()}]}

    def _encrypt(self, ctx: AccessContext, plaintext: bytes) -> bytes:
        cmd, device = ctx.cmd, ctx.device
        oi = cmd.other_information
        supp = oi.get("supplementary_remote_party_id")
        peer = as_eui(supp) if supp else as_eui(cmd.header["originator"])
        cert_hex = oi.get("supplementary_remote_party_ka_certificate")
        counter = cmd.header["originator_counter"]
        if cert_hex:                      # unknown remote party: its certificate, the device's own counter
            counter = ctx.scratch.get("supplementary_originator_counter")
            if counter is None:
                counter = ctx.scratch["supplementary_originator_counter"] = device.next_alert_counter()
            out_oi = {k: v for k, v in oi.items() if k not in ("use_case", "supplementary_remote_party_ka_certificate")}
            out_oi["supplementary_originator_counter"] = counter
            ctx.scratch["other_information"] = out_oi
        z = device.keys.secret(peer, bytes.fromhex(cert_hex) if cert_hex else None)
        if z is None:
            raise AccessFailure("hardware-fault", f"no key agreement with {eui_hex(peer)}")
        return encrypt_payload(z, device.eui, peer, counter, plaintext)


# ----------------------------------------------------------------------------------------------- registration

def register(server, catalogue: Catalogue) -> None:
    """Add the metering objects to the ESME's COSEM server."""
    for obis, quantity, unit in (("1-0:1.8.0.255", "import", _WH), ("1-0:2.8.0.255", "export", _WH),
                                 ("1-0:3.8.0.255", "reactive_import", _VARH),
                                 ("1-0:4.8.0.255", "reactive_export", _VARH)):
        server.register(EnergyRegister(catalogue, quantity, unit), 3, obis)
    for obis in ("1-0:1.6.0.255", "1-0:1.6.1.255"):
        server.register(DemandRegister(catalogue, export=False), 4, obis)
    server.register(DemandRegister(catalogue, export=True), 4, "1-0:2.6.0.255")
    server.register(Collection(catalogue), 1, *COLLECTIONS)
    server.register(Identity(catalogue), 1, "0-0:96.1.1.255", *Identity.PROFILE_KEYS)
    server.register(AuxiliaryOutputState(catalogue), 70, *(f"0-{n}:96.3.10.255" for n in range(1, 6)))
    logs.register(server, catalogue)
    for obis, (rows, depth) in PROFILES.items():
        server.register(ProfileObject(catalogue, obis, _computed(rows, depth)), 7, obis)
    protection = DataProtection(server)
    for e in catalogue.entries:
        if e.class_id == 30 and e.kind == "method" and e.index == 1:
            server.register(protection, 30, e.obis)

