"""ESME tariffs, calendars, payment mode and debt: the passive/active COSEM objects behind ECS01a-d, ECS02/03,
ECS05, ECS07, ECS08/08a, ECS46a/c/d and ECS47/47a/47e.

Theory of operation
-------------------
GBCS tariff commands never touch the tariff in force directly. Each writes *passive* values (the SMETS "next"
values) and an *activation date-time*; the meter copies passive → active when that time comes. One activation
attribute and the passive attributes it copies form one **instruction** (`instruction(target)`); the
future-dated outcome alerts (8F66/8F67) name the activation attribute, one alert per instruction.

| activation attribute                         | copies (passive → active)                                   |
|----------------------------------------------|-------------------------------------------------------------|
| Activity calendar (20) attr 10               | attrs 6/7/8/9 → 2/3/4/5 of the same calendar                 |
| Charge (113) attr 7 unit_charge_activation_time | attr 6 unit_charge_passive → 5 unit_charge_active        |
| Account (111) 0-1:19.0.0.255 attr 13         | attrs 2/11 → 2/11 of the Account 0-0:19.0.0.255 (payment mode)|
| GBCS 9000 attr 6 activate_passive_value_time | attr 4 value_passive → 2 value_active, plus the linked table: |
|   0-0:94.44.128.29/.30/.31/.35               | Special days 0-1:11.0.{0,1,2,3}.255 → 0-0:11.0.{0,1,2,3}.255   |
|   0-0:94.44.128.28/.26                       | Schedule 0-1:12.0.{1,2}.255 → 0-0:12.0.{1,2}.255             |
|   0-0:63.1.1.255                             | Register monitors 0-0:16.1.1x.255 → 0-0:16.0.1x.255 (thresholds)|

State machine of one instruction (held by `firmware_emu.esme.future`, which owns the timing):

    idle ──set activation "now" / time ≤ now──▶ active (copied at once, no alert)
    idle ──set activation time > now──▶ pending ──time reached, no fault──▶ active  + 8F66
                                          │      └─time reached, fault─────▶ idle    + 8F67
                                          └─set "never" / any new activation of the same attribute─▶ idle/…

Passive and active values are ordinary stored attributes (`state["cosem"]`, appendix-typed, see
`core.cosem.StoredObject`); this module only adds the copying, the methods and the derived tariff state:

`state["esme"]["tariff"]` = {"block_counters": 4×8 list (Wh per [block][TOU rate]) since "block_period_start"
(UTC s), "payment_mode": "credit" | "prepayment", "activations": {target: UTC s of the last activation},
"scripts": {script table OBIS: {"id": last script executed, "t": when}}, "debts": {Charge OBIS: total_amount_remaining}
(ECS07; also kept as Charge attr 12)}. `active_rate(state, t)` derives the
TOU rate in force from the active calendar and special days; `accumulate(state, t, wh)` advances the tariff
block counters, which ECS05 (script 99 of 0-0:10.0.100.255) resets.
"""
from __future__ import annotations

import calendar
import logging
import time

from firmware_emu.core.cosem import AccessFailure, CosemObject, attr_key

log = logging.getLogger(__name__)

__all__ = ["register", "instruction", "is_activation", "activate", "active_rate", "active_block", "accumulate",
           "tariff_state", "TOU_RATES", "BLOCKS", "RESET_BLOCK_COUNTERS_SCRIPT"]

TOU_RATES = 8
BLOCKS = 4
#: ECS05: script_identifier 99 of the TOU script table resets the tariff block counter matrix.
RESET_BLOCK_COUNTERS_SCRIPT = 99

PRIMARY_CALENDAR = "0-0:13.0.0.255"
SECONDARY_CALENDAR = "0-0:13.0.1.255"
PRIMARY_SPECIAL_DAYS = "0-0:11.0.0.255"
SECONDARY_SPECIAL_DAYS = "0-0:11.0.1.255"
TOU_SCRIPT_TABLE = "0-0:10.0.100.255"
ALCS_SCRIPT_TABLE = "0-0:10.0.103.255"
APC_SCRIPT_TABLE = "0-0:10.0.107.255"
ACCOUNT_PASSIVE = "0-1:19.0.0.255"
ACCOUNT_ACTIVE = "0-0:19.0.0.255"
#: Charges: 0 TOU/block price matrix, 1-2 time debts, 3 payment debt, 4 standing charge, 5 secondary TOU prices.
CHARGES = tuple(f"0-0:19.20.{i}.255" for i in range(6))
THRESHOLD_ACTIVATION = "0-0:63.1.1.255"

#: 9000 activation objects whose passive value lives in a separate table (class, passive OBIS, active OBIS, attr).
_LINKED: dict[str, list[tuple[int, str, str, int]]] = {
    "0-0:94.44.128.29": [(11, "0-1:11.0.0.255", "0-0:11.0.0.255", 2)],
    "0-0:94.44.128.30": [(11, "0-1:11.0.1.255", "0-0:11.0.1.255", 2)],
    "0-0:94.44.128.31": [(11, "0-1:11.0.2.255", "0-0:11.0.2.255", 2)],
    "0-0:94.44.128.35": [(11, "0-1:11.0.3.255", "0-0:11.0.3.255", 2)],
    "0-0:94.44.128.28": [(10, "0-1:12.0.1.255", "0-0:12.0.1.255", 2)],
    "0-0:94.44.128.26": [(10, "0-1:12.0.2.255", "0-0:12.0.2.255", 2)],
    THRESHOLD_ACTIVATION: [(21, f"0-0:16.1.{10 + r}.255", f"0-0:16.0.{10 + r}.255", 2) for r in range(1, 9)],
}

Target = tuple[int, str, int]


# ------------------------------------------------------------------------------------------ instructions

def is_activation(class_id: int, obis: str, attr: int) -> bool:
    """Is this attribute the activation date-time of a passive → active instruction?"""
    return ((class_id == 20 and attr == 10) or (class_id == 113 and attr == 7) or (class_id == 9000 and attr == 6)
            or (class_id == 111 and obis == ACCOUNT_PASSIVE and attr == 13))


def instruction(target: Target) -> list[tuple[Target, Target]]:
    """The (passive source, active destination) copies one activation attribute performs."""
    class_id, obis, attr = target
    if class_id == 20 and attr == 10:
        return [((20, obis, p), (20, obis, p - 4)) for p in (6, 7, 8, 9)]
    if class_id == 113 and attr == 7:
        return [((113, obis, 6), (113, obis, 5))]
    if class_id == 111 and attr == 13:
        return [((111, ACCOUNT_PASSIVE, a), (111, ACCOUNT_ACTIVE, a)) for a in (2, 11)]
    if class_id == 9000 and attr == 6:
        copies = [((9000, obis, 4), (9000, obis, 2))]
        copies += [((c, src, a), (c, dst, a)) for c, src, dst, a in _LINKED.get(obis, [])]
        return copies
    return []


def tariff_state(state: dict) -> dict:
    """`state["esme"]["tariff"]`, created on first use (module docstring)."""
    esme = state.setdefault("esme", {})
    t = esme.get("tariff")
    if t is None:
        t = esme["tariff"] = {"block_counters": [[0] * TOU_RATES for _ in range(BLOCKS)], "block_period_start": None,
                              "payment_mode": "credit", "activations": {}, "scripts": {}}
    return t


def activate(device, target: Target, now: float) -> list[Target]:
    """Copy the instruction's passive values to the active ones (those never written stay as they are);
    returns the active attributes written."""
    cosem = device.state.setdefault("cosem", {})
    written = []
    for src, dst in instruction(tuple(target)):
        value = cosem.get(attr_key(*src))
        if value is None:
            continue
        cosem[attr_key(*dst)] = value
        written.append(dst)
    ts = tariff_state(device.state)
    ts["activations"][attr_key(*target)] = now
    if target[0] == 111:
        mode = _payment_mode(cosem.get(attr_key(111, ACCOUNT_ACTIVE, 2)))
        if mode is not None:
            ts["payment_mode"] = mode
    device.event("tariff_activated", target=attr_key(*target), written=[attr_key(*w) for w in written])
    return written


def _payment_mode(value: dict | None) -> str | None:
    """Account attr 2 {account_mode enum (1 credit, 2 prepayment), account_status enum}."""
    try:
        mode = value["value"][0]["value"]
    except (TypeError, KeyError, IndexError):
        return None
    return {1: "credit", 2: "prepayment"}.get(mode)


# ------------------------------------------------------------------------------------------ the TOU rate

def _octets(value: dict | None) -> bytes:
    return bytes.fromhex(value["value"]) if value and value.get("type") == "octet-string" else b""


def _fields(value: dict | None) -> list:
    return list(value.get("value") or []) if isinstance(value, dict) else []


def _season_start(b: bytes, year: int) -> float | None:
    """UTC seconds of a season_start date-time in `year` when its year is a wildcard."""
    if len(b) < 7:
        return None
    y = int.from_bytes(b[0:2], "big")
    month, day, hour, minute = b[2], b[3], b[5] if b[5] != 0xFF else 0, b[6] if b[6] != 0xFF else 0
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    y = year if y == 0xFFFF else y
    day = min(day, calendar.monthrange(y, month)[1])
    return float(calendar.timegm((y, month, day, hour, minute, 0, 0, 0, 0)))


def _date_matches(b: bytes, tm: time.struct_time) -> bool:
    """A special-day date (octet-string(5): year, month, day, day of week; 0xFF(FF) wildcards)."""
    if len(b) != 5:
        return False
    y = int.from_bytes(b[0:2], "big")
    return ((y == 0xFFFF or y == tm.tm_year) and (b[2] == 0xFF or b[2] == tm.tm_mon)
            and (b[3] == 0xFF or b[3] == tm.tm_mday) and (b[4] == 0xFF or b[4] == tm.tm_wday + 1))


def selector_to_rate(selector: int) -> int:
    """A day-profile script_selector as a TOU rate number 1..8. Assumption (GBCS 7.3.7 is not in our sources):
    the rate is the selector's last two decimal digits, as the RTDS secondary element uses 201..204."""
    rate = selector % 100
    return rate if 1 <= rate <= 48 else 1


def active_rate(state: dict, t: float, *, element: str = "primary") -> int:
    """The TOU rate (1-based) in force at UTC time `t` by the *active* calendar (Activity calendar
    0-0:13.0.0.255, or 0-0:13.0.1.255 for the secondary element) and its special days; 1 when no calendar has
    been activated. Pure: reads the COSEM state only."""
    cal, days = (PRIMARY_CALENDAR, PRIMARY_SPECIAL_DAYS) if element == "primary" else \
        (SECONDARY_CALENDAR, SECONDARY_SPECIAL_DAYS)
    cosem = state.get("cosem", {})
    seasons = _fields(cosem.get(attr_key(20, cal, 3)))
    weeks = _fields(cosem.get(attr_key(20, cal, 4)))
    day_profiles = _fields(cosem.get(attr_key(20, cal, 5)))
    if not day_profiles:
        return 1
    tm = time.gmtime(int(t))
    day_id = None
    for entry in _fields(cosem.get(attr_key(11, days, 2))):
        f = _fields(entry)
        if len(f) == 3 and _date_matches(_octets(f[1]), tm):
            day_id = f[2]["value"]
            break
    if day_id is None:
        season, best = None, None
        for s in seasons:
            f = _fields(s)
            if len(f) != 3:
                continue
            b = _octets(f[1])
            start = _season_start(b, tm.tm_year)
            if start is not None and start > t and int.from_bytes(b[0:2], "big") == 0xFFFF:
                start = _season_start(b, tm.tm_year - 1)
            if start is not None and start <= t and (best is None or start > best):
                season, best = f, start
        if season is None and seasons:
            season = _fields(seasons[-1])
        week_name = _octets(season[2]) if season else None
        for w in weeks:
            f = _fields(w)
            if len(f) == 8 and (week_name is None or _octets(f[0]) == week_name):
                day_id = f[1 + tm.tm_wday]["value"]
                break
    schedule = None
    for d in day_profiles:
        f = _fields(d)
        if len(f) == 2 and (day_id is None or f[0]["value"] == day_id):
            schedule = _fields(f[1])
            break
    if not schedule:
        return 1
    seconds = tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec
    chosen, chosen_start = None, -1
    for action in schedule:
        f = _fields(action)
        if len(f) != 3:
            continue
        b = _octets(f[0])
        start = (b[0] % 24) * 3600 + (b[1] % 60) * 60 + (b[2] % 60) if len(b) >= 3 else 0
        if chosen_start < start <= seconds or (start == 0 and chosen_start < 0):
            chosen, chosen_start = f, start
    if chosen is None:  # before the first switch of the day: the last rate of the day before runs on
        chosen = _fields(schedule[-1])
    return selector_to_rate(chosen[2]["value"])


def _thresholds(state: dict, rate: int) -> list[int]:
    value = state.get("cosem", {}).get(attr_key(21, f"0-0:16.0.{10 + rate}.255", 2))
    return [x["value"] for x in _fields(value) if isinstance(x.get("value"), int)]


def active_block(state: dict, rate: int) -> int:
    """The price block (1..4) the block counter of TOU `rate` has reached, by the active block thresholds
    (Register monitor 0-0:16.0.1x.255 attribute 2, zero thresholds ignored)."""
    counters = tariff_state(state)["block_counters"]
    used = sum(counters[b][rate - 1] for b in range(BLOCKS))
    block = 1
    for th in _thresholds(state, rate):
        if th and used >= th:
            block += 1
    return min(block, BLOCKS)


def accumulate(state: dict, t: float, wh: int) -> tuple[int, int]:
    """Book `wh` consumed at time `t` into the tariff block counter matrix; returns (rate, block) charged.
    For the metering module (its TOU/block registers), which owns the consumption model."""
    ts = tariff_state(state)
    if ts["block_period_start"] is None:
        ts["block_period_start"] = t
    rate = min(active_rate(state, t), TOU_RATES)
    block = active_block(state, rate)
    ts["block_counters"][block - 1][rate - 1] += int(wh)
    return rate, block


# ------------------------------------------------------------------------------------------ objects

def _when(value: dict):
    """An activation date-time value → UTC seconds, "now" or "never" (AccessFailure when not a moment)."""
    from firmware_emu.core.clock import parse_dlms_datetime
    if not isinstance(value, dict) or value.get("type") != "octet-string":
        raise AccessFailure("type-unmatched", "activation time must be an octet-string(12)")
    try:
        when = parse_dlms_datetime(bytes.fromhex(value["value"]))
    except ValueError as e:
        raise AccessFailure("type-unmatched", str(e)) from e
    if when is None:
        raise AccessFailure("type-unmatched", "empty activation time")
    return when


class PassiveActive(CosemObject):
    """Objects holding an activation attribute: stored attributes, plus the activation's arming.

    An activation set is recorded in `ctx.scratch["activations"]`; inside a plan (`future.plan`, which arms
    them after the whole request, so passive values set later in the request still count) it waits, else it
    is armed at once (use cases the registry does not mark future-dated capable)."""

    def __init__(self, fallback: CosemObject):
        self.fallback = fallback

    def get(self, ctx, class_id, obis, attr, selection):
        return self.fallback.get(ctx, class_id, obis, attr, selection)

    def set(self, ctx, class_id, obis, attr, value):
        if not is_activation(class_id, obis, attr):
            return self.fallback.set(ctx, class_id, obis, attr, value)
        when = _when(value)
        self.fallback.set(ctx, class_id, obis, attr, value)
        item = {"target": [class_id, obis, attr], "when": when}
        ctx.scratch.setdefault("activations", []).append(item)
        if not ctx.scratch.get("future_plan"):
            from firmware_emu.esme import future
            future.arm(ctx, item)

    def action(self, ctx, class_id, obis, method, arg):
        if class_id == 20 and method == 1:      # activate_passive_calendar (Blue Book): at once
            activate(ctx.device, (20, obis, 10), ctx.now)
            return None
        return self.fallback.action(ctx, class_id, obis, method, arg)


class Charge(PassiveActive):
    """Charge (113): prices and standing charge (ECS01a-d) and the debts of ECS07.

    Methods: 2 activate_passive_unit_charge (copy attr 6 → 5 now), 4 update_total_amount_remaining (adds the
    signed amount to attr 12 total_amount_remaining, the debt register)."""

    def action(self, ctx, class_id, obis, method, arg):
        if method == 2:
            activate(ctx.device, (113, obis, 7), ctx.now)
            return None
        if method == 4:
            amount = arg.get("value") if isinstance(arg, dict) else None
            if not isinstance(amount, int) or isinstance(amount, bool):
                raise AccessFailure("type-unmatched", "update_total_amount_remaining takes an integer")
            key = attr_key(113, obis, 12)
            current = ctx.cosem.get(key, {"type": "double-long", "value": 0})
            total = max(-2**31, min(2**31 - 1, int(current.get("value") or 0) + amount))
            ctx.cosem[key] = {"type": "double-long", "value": total}
            debts = tariff_state(ctx.device.state).setdefault("debts", {})
            debts[obis] = total
            return None
        return super().action(ctx, class_id, obis, method, arg)


class ScriptTable(CosemObject):
    """Script tables (9): the TOU scripts (ECS05 resets the block counter matrix with script 99) and the
    auxiliary load control / APC switching scripts of ECS47 / ECS47a / ECS47e, whose identifiers encode the
    controller and the commanded state (GBCS 7.3.6); the emulator records the last one run per table."""

    def action(self, ctx, class_id, obis, method, arg):
        if method != 1:
            raise AccessFailure("object-undefined")
        script = arg.get("value") if isinstance(arg, dict) else None
        if not isinstance(script, int) or isinstance(script, bool) or arg.get("type") != "long-unsigned":
            raise AccessFailure("type-unmatched", "execute takes a long-unsigned script identifier")
        ts = tariff_state(ctx.device.state)
        if obis == TOU_SCRIPT_TABLE and script == RESET_BLOCK_COUNTERS_SCRIPT:
            ts["block_counters"] = [[0] * TOU_RATES for _ in range(BLOCKS)]
            ts["block_period_start"] = ctx.now
        ts["scripts"][obis] = {"id": script, "t": ctx.now}
        ctx.device.event("script_executed", table=obis, script=script)
        return None


class AuxiliaryControllerPeriod(CosemObject):
    """Data 0-0:94.44.{117..121}.{1..4}: auxiliary controller [n] setting / APC limit period start and end.

    ECS47a/ECS47e write DLMS date-times (octet-string(12)); the older ECS47 (Activate/Deactivate/Reset, still
    in RTDS) writes a long-unsigned duration in minutes to the same objects. Both are accepted and stored."""

    def __init__(self, fallback: CosemObject):
        self.fallback = fallback

    def get(self, ctx, class_id, obis, attr, selection):
        return self.fallback.get(ctx, class_id, obis, attr, selection)

    def set(self, ctx, class_id, obis, attr, value):
        if attr != 2:
            return self.fallback.set(ctx, class_id, obis, attr, value)
        kind = value.get("type") if isinstance(value, dict) else None
        if kind == "octet-string":
            from firmware_emu.core.clock import parse_dlms_datetime
            try:
                parse_dlms_datetime(bytes.fromhex(value["value"]))
            except ValueError as e:
                raise AccessFailure("type-unmatched", str(e)) from e
        elif kind != "long-unsigned":
            raise AccessFailure("type-unmatched", "a date-time or a duration in minutes")
        ctx.cosem[attr_key(class_id, obis, attr)] = value


def register(server, catalogue) -> None:
    """Add the tariff objects to the ESME's COSEM server."""
    fallback = server.fallback
    calendars = PassiveActive(fallback)
    server.register(calendars, 20, PRIMARY_CALENDAR, SECONDARY_CALENDAR)
    server.register(Charge(fallback), 113, *CHARGES)
    server.register(PassiveActive(fallback), 111, ACCOUNT_PASSIVE)
    extended = PassiveActive(fallback)
    server.register(extended, 9000, THRESHOLD_ACTIVATION)
    for class_id, obis in catalogue.objects():
        if class_id == 9000 and catalogue.attribute(9000, obis, 6) is not None:
            server.register(extended, 9000, obis)
    server.register(AuxiliaryControllerPeriod(fallback), 1,
                    *(f"0-0:94.44.{n}.{e}" for n in range(117, 122) for e in range(1, 5)))
    server.register(ScriptTable(), 9, TOU_SCRIPT_TABLE, ALCS_SCRIPT_TABLE, APC_SCRIPT_TABLE)
