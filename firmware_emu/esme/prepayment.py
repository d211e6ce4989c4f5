"""ESME prepayment: UTRN top-ups (CS01a), meter balance and emergency credit (ECS04a/b, ECS09, ECS82), and the
credit side of consumption (`on_consumption`).

Theory of operation
-------------------
The prepayment state lives in `state["esme"]["prepayment"]` (JSON only). Amounts are in the unit of the Credit
objects' `current_credit_amount`: 1/100000 of the currency unit ("millipence", appendix note of ECS04a).

    meter_balance        Credit 0-0:19.10.0.255 attr 2 (below zero only by ECS04a/b or friendly-hours use)
    emergency_credit_balance, ec_active
                         Credit 0-0:19.10.1.255 (emergency credit; preset amount = attr 9, available at or
                         below the credit_available_threshold attr 10)
    accumulated_debt     Credit 0-0:19.10.2.255 (accumulated debt register)
    (the key names are the ones `metering.prepayment_balances` reads for ECS19 and the prepayment logs)
    utrn_counters        the UTRN Counter Cache (protocols.security.counters.UtrnCounterCache)
    credit_state         "ok" | "low" | "exhausted": what the last threshold crossing was, so alerts fire once

Credit state machine (prepayment mode only, driven by `on_consumption` and by credit being added):

    ok ──(credit < low_credit_threshold: 0x810D)──▶ low ──(meter balance + EC ≤ disablement threshold:
    0x8F0F; supply disabled unless in a friendly period)──▶ exhausted
    low/exhausted ──(credit added: top-up, ECS04a, ECS09)──▶ ok / low (an exhausted meter's supply is *armed*,
    the consumer restores it with `supply.press_button`)

While the meter balance is at or below the emergency credit threshold and EC is not active, 0x8119 "emergency
credit available" is raised once. ECS09 (`invoke_credit`) activates EC; consumption then draws the EC balance and
0x81AA fires when it runs out. A top-up first repays emergency credit used, then raises the meter balance.

UTRN checks (CS01a, GBCS 14), in order, each failing with `other-reason` and one alert:
  malformed / check digit → 0x8F63; counter bits resolved against the cache (GBCS Table 27); tag not authentic
  for this device → 0x8F64 when it verifies for another device this meter's keystore knows (an emulator aid: a
  real meter only sees "not authentic"), else 0x8F63; counter already in the cache or below a full cache →
  0x8F51; value above the maximum credit per UTRN → 0x8F5B; balance would exceed the maximum meter balance →
  0x8F47. The UTRN secret is the supplier's prepayment KA key with the device KA key (whichever private key is
  at hand: the device's own, or with RTDS keys the supplier's).

Non-critical alerts pass `supply.alert_enabled` (ECS25a alert behaviours); critical ones always go.
"""
from __future__ import annotations

import logging

from protocols.security.eui import eui_hex

from firmware_emu.core import utrn_guard
from firmware_emu.core.alerts import AlertCode
from firmware_emu.core.utrn_guard import PER_PENNY
from firmware_emu.core.cosem import AccessFailure, StoredObject, attr_key

log = logging.getLogger(__name__)

__all__ = ["register", "prepayment_state", "payment_mode", "set_payment_mode", "credit_remaining",
           "apply_utrn", "add_credit", "on_consumption", "DEFAULTS", "CREDIT", "EMERGENCY", "DEBT",
           "TOKEN_GATEWAY", "ACCOUNT", "PER_PENNY"]

ACCOUNT = "0-0:19.0.0.255"
CREDIT = "0-0:19.10.0.255"
EMERGENCY = "0-0:19.10.1.255"
DEBT = "0-0:19.10.2.255"
TOKEN_GATEWAY = "0-0:19.40.0.255"

PREPAYMENT_MODE = 2   # DLMS Account payment_mode: 1 credit, 2 prepayment
CREDIT_MODE = 1

#: Profile defaults (override in the device profile under "prepayment").
DEFAULTS = {
    "meter_balance": 0,
    "low_credit_threshold": 200_000,          # £2.00
    "disablement_threshold": 0,
    "emergency_credit_amount": 1_000_000,     # £10.00 (used when preset_credit_amount was never set)
    "emergency_credit_threshold": 500_000,    # EC may be activated at or below £5.00
    "max_credit_per_utrn": 10_000_000,        # £100.00 (0x8F5B above)
    "max_meter_balance": 50_000_000,          # £500.00 (0x8F47 above)
    "unit_price_per_kwh": 15_000,             # 15p/kWh when no tariff module tells
    "friendly_hours": None,                   # [start_hour, end_hour) UTC, e.g. [16, 8]: no disablement then
}


# --------------------------------------------------------------------------------------------- state helpers

def prepayment_state(device) -> dict:
    """The persisted prepayment record, created from the profile on first use."""
    esme = device.state.setdefault("esme", {})
    pp = esme.get("prepayment")
    if pp is None:
        profile = dict(DEFAULTS)
        profile.update(device.profile.get("prepayment") or {})
        pp = {"meter_balance": int(profile["meter_balance"]), "emergency_credit_balance": 0, "ec_active": False, "accumulated_debt": 0,
              "utrn_counters": [], "credit_state": "ok", "ec_offered": False, "last_t": None,
              "last_register_wh": None, "params": {k: profile[k] for k in DEFAULTS if k != "meter_balance"}}
        esme["prepayment"] = pp
    return pp


def _param(device, name: str):
    return prepayment_state(device)["params"].get(name, DEFAULTS[name])


def _cosem_int(device, class_id: int, obis: str, attr: int, default: int) -> int:
    """A threshold a command may have set (ECS26a reads them), else the profile default."""
    value = device.state.get("cosem", {}).get(attr_key(class_id, obis, attr))
    if isinstance(value, dict) and isinstance(value.get("value"), int) and value["value"] != 0:
        return value["value"]
    return default


def low_credit_threshold(device) -> int:
    return _cosem_int(device, 111, ACCOUNT, 16, _param(device, "low_credit_threshold"))


def emergency_credit_amount(device) -> int:
    return _cosem_int(device, 112, EMERGENCY, 9, _param(device, "emergency_credit_amount"))


def emergency_credit_threshold(device) -> int:
    return _cosem_int(device, 112, EMERGENCY, 10, _param(device, "emergency_credit_threshold"))


def payment_mode(device) -> int:
    """The active Account's payment_mode (1 credit, 2 prepayment); never set means credit mode."""
    value = device.state.get("cosem", {}).get(attr_key(111, ACCOUNT, 2))
    try:
        return int(value["value"][0]["value"]) or CREDIT_MODE
    except (TypeError, KeyError, IndexError, ValueError):
        return CREDIT_MODE


def set_payment_mode(device, mode: int) -> None:
    """Put the active Account in credit (1) or prepayment (2) mode, account status 1 (new/active)."""
    device.state.setdefault("cosem", {})[attr_key(111, ACCOUNT, 2)] = {
        "type": "structure", "value": [{"type": "enum", "value": int(mode)}, {"type": "enum", "value": 1}]}


def credit_remaining(device) -> int:
    """Meter balance plus the emergency credit still available."""
    pp = prepayment_state(device)
    return pp["meter_balance"] + (pp["emergency_credit_balance"] if pp["ec_active"] else 0)


def _supply():
    from firmware_emu.esme import supply
    return supply


def _alert(device, code: int, out: list) -> None:
    """Raise `code` unless the alert behaviours (ECS25a) switched it off."""
    if _supply().alert_enabled(device.state, code):
        out.append(device.raise_alert(code))


# --------------------------------------------------------------------------------------------- credit changes

def add_credit(device, amount: int, now: float) -> list:
    """Credit arrives (top-up, ECS04a adjustment): repay emergency credit used, raise the meter balance, re-arm
    a supply that credit exhaustion disabled. Returns alerts."""
    pp = prepayment_state(device)
    if pp["ec_active"] and amount > 0:
        used = max(0, emergency_credit_amount(device) - pp["emergency_credit_balance"])
        repay = min(amount, used)
        amount -= repay
        pp["emergency_credit_balance"] += repay
        if pp["emergency_credit_balance"] >= emergency_credit_amount(device) or amount > 0:
            pp["ec_active"], pp["emergency_credit_balance"] = False, 0
    pp["meter_balance"] += amount
    return _credit_recovered(device, now)


def _credit_recovered(device, now: float) -> list:
    pp = prepayment_state(device)
    remaining = credit_remaining(device)
    if remaining > _param(device, "disablement_threshold"):
        if pp["credit_state"] == "exhausted":
            _supply().arm_after_credit(device, now)
        pp["credit_state"] = "low" if pp["meter_balance"] < low_credit_threshold(device) else "ok"
    if pp["meter_balance"] > emergency_credit_threshold(device):
        pp["ec_offered"] = False
    return []


def apply_utrn(device, utrn: str, now: float) -> tuple[bool, list]:
    """Check and apply one UTRN (module docstring; the checks are `core.utrn_guard`'s). Returns (accepted,
    alerts); changes nothing on refusal."""
    pp = prepayment_state(device)
    v = utrn_guard.check_utrn(device, utrn, pp["utrn_counters"],
                              max_credit_per_utrn=_param(device, "max_credit_per_utrn"),
                              balance=pp["meter_balance"], max_meter_balance=_param(device, "max_meter_balance"))
    if not v.accepted:
        detail = {"detail": v.detail} if v.reason == "malformed" else \
            {"counter": v.counter} if v.alert_code == AlertCode.DUPLICATE_UTRN else \
            {"amount": v.amount} if v.reason.startswith("exceeds") else {}
        device.event("utrn_rejected", reason=v.reason, **detail)
        return False, [device.raise_alert(v.alert_code)]
    pp["utrn_counters"] = utrn_guard.accept_counter(pp["utrn_counters"], v.counter)
    device.event("utrn_accepted", counter=v.counter, amount=v.amount,
                 supplier=eui_hex(utrn_guard.supplier_of(device)))
    return True, add_credit(device, v.amount, now)


# --------------------------------------------------------------------------------------------- consumption

def unit_price(device, now: float) -> int:
    """Price per kWh in millipence: the tariff module's when it offers `unit_price(device, now)`, else the
    profile's flat price."""
    try:
        from firmware_emu.esme import tariff
        price = getattr(tariff, "unit_price", None)
        if price is not None:
            value = price(device, now)
            if value is not None:
                return int(value)
    except ImportError:
        pass
    return int(_param(device, "unit_price_per_kwh"))


def _register_wh(device, now: float) -> float | None:
    """The import energy register (Wh) at `now`: the metering module's consumption model."""
    try:
        from firmware_emu.esme import metering
    except ImportError:
        return None
    meter = getattr(metering, "meter", None)
    return None if meter is None else float(meter(device).energy_wh(now))


def _friendly(device, now: float) -> bool:
    hours = _param(device, "friendly_hours")
    if not hours:
        return False
    start, end = hours
    h = int(now // 3600) % 24
    return start <= h < end if start <= end else (h >= start or h < end)


def on_consumption(device, now: float, energy_wh: float | None = None) -> list:
    """Charge consumption since the last call (or `energy_wh` if given) against credit, in prepayment mode.

    Crossings raise 0x810D (below low credit), 0x8119 (EC available), 0x81AA (EC exhausted) and 0x8F0F (below
    the disablement threshold, which disables the supply outside friendly hours). Returns the alerts."""
    pp = prepayment_state(device)
    if energy_wh is None:
        register = _register_wh(device, now)
        if register is None:
            return []
        last = pp["last_register_wh"]
        pp["last_register_wh"], pp["last_t"] = register, now
        if last is None:
            return []
        energy_wh = max(0.0, register - last)
    else:
        pp["last_t"] = now
    if payment_mode(device) != PREPAYMENT_MODE or energy_wh <= 0:
        return []
    cost = int(round(energy_wh * unit_price(device, now) / 1000.0))
    out: list = []
    draw = min(cost, max(0, pp["meter_balance"]))
    pp["meter_balance"] -= draw
    cost -= draw
    if cost and pp["ec_active"]:
        take = min(cost, pp["emergency_credit_balance"])
        pp["emergency_credit_balance"] -= take
        cost -= take
        if pp["emergency_credit_balance"] <= 0:
            _alert(device, AlertCode.EMERGENCY_CREDIT_EXHAUSTED, out)
    if cost:
        pp["meter_balance"] -= cost    # consumed while disconnection was held off (friendly hours)
    if pp["credit_state"] == "ok" and pp["meter_balance"] < low_credit_threshold(device):
        pp["credit_state"] = "low"
        _alert(device, AlertCode.CREDIT_BELOW_LOW_CREDIT_THRESHOLD, out)
    if not pp["ec_active"] and not pp["ec_offered"] and pp["meter_balance"] <= emergency_credit_threshold(device):
        pp["ec_offered"] = True
        _alert(device, AlertCode.EMERGENCY_CREDIT_AVAILABLE, out)
    if pp["credit_state"] != "exhausted" and credit_remaining(device) <= _param(device, "disablement_threshold") \
            and not _friendly(device, now):
        pp["credit_state"] = "exhausted"
        out.append(device.raise_alert(AlertCode.CREDIT_BELOW_DISABLEMENT_THRESHOLD))
        _supply().disable(device, now, reason="credit")
    return out


# --------------------------------------------------------------------------------------------- COSEM objects

class CreditObject(StoredObject):
    """Credit (class 112): attribute 2 from the prepayment state; update_amount (ECS04a), set_amount_to_value
    (ECS04b), invoke_credit (ECS09, emergency credit only)."""

    FIELD = {CREDIT: "meter_balance", EMERGENCY: "emergency_credit_balance", DEBT: "accumulated_debt"}

    def get(self, ctx, class_id, obis, attr, selection):
        if attr == 2 and obis in self.FIELD:
            return {"type": "double-long", "value": int(prepayment_state(ctx.device)[self.FIELD[obis]])}
        return super().get(ctx, class_id, obis, attr, selection)

    def action(self, ctx, class_id, obis, method, arg):
        device, pp = ctx.device, prepayment_state(ctx.device)
        field = self.FIELD.get(obis)
        if method in (1, 2) and field is not None:
            if not isinstance(arg, dict) or arg.get("type") != "double-long":
                raise AccessFailure("type-unmatched")
            amount = int(arg["value"])
            if method == 1:
                if field == "meter_balance":
                    ctx.scratch.setdefault("alerts", []).extend(add_credit(device, amount, ctx.now))
                else:
                    pp[field] += amount
            else:
                pp[field] = amount
                if field == "emergency_credit_balance" and amount == 0:
                    pp["ec_active"] = False
                if field == "meter_balance":
                    _credit_recovered(device, ctx.now)
            return None
        if method == 3 and obis == EMERGENCY:
            if not pp["ec_active"]:
                if pp["meter_balance"] > emergency_credit_threshold(device):
                    raise AccessFailure("other-reason", "emergency credit is not available above its threshold")
                pp["ec_active"], pp["emergency_credit_balance"] = True, emergency_credit_amount(device)
                ctx.scratch.setdefault("alerts", []).extend(_credit_recovered(device, ctx.now))
            return None
        return super().action(ctx, class_id, obis, method, arg)


class TokenGateway(StoredObject):
    """Token gateway (class 115) `enter` (CS01a): the UTRN as an octet-string of 20 ASCII digits."""

    def action(self, ctx, class_id, obis, method, arg):
        if method != 1:
            return super().action(ctx, class_id, obis, method, arg)
        if not isinstance(arg, dict) or arg.get("type") != "octet-string":
            raise AccessFailure("type-unmatched")
        try:
            utrn = bytes.fromhex(arg["value"]).decode("ascii")
        except (ValueError, UnicodeDecodeError):
            utrn = ""
        accepted, alerts = apply_utrn(ctx.device, utrn, ctx.now)
        ctx.scratch.setdefault("alerts", []).extend(alerts)
        if not accepted:
            raise AccessFailure("other-reason", "UTRN refused")
        return None


def register(server, catalogue) -> None:
    server.register(CreditObject(catalogue), 112, CREDIT, EMERGENCY, DEBT)
    server.register(TokenGateway(catalogue), 115, TOKEN_GATEWAY)
