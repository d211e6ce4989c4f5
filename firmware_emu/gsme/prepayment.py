"""GSME prepayment: ZSE Prepayment cluster (0x0705) behaviour: UTRN top-ups (CS01b from the WAN, PCS01 from a
joined PPMID), emergency credit (PCS02), payment mode (GCS03), credit settings (GCS05: Emergency Credit Setup,
Set Overall Debt Cap, Set Low Credit Warning Level, Set Maximum Credit Limit) and credit drawn by consumption.

Theory of operation
-------------------
Settings are the cluster's ZCL attributes (`state["zcl"]`, typed by the appendix), so GCS21b reads exactly what
GCS05 wrote; money lives in `state["gsme"]["prepayment"]` (millipence, 1/100000 of the currency unit, as the
ESME): `credit` (CreditRemaining), `ec_active`/`ec_remaining` (EmergencyCreditRemaining), `debt`
(AccumulatedDebt), `utrn_counters` (the UTRN Counter Cache), `credit_state`, `last_volume` (dm3 charged up to).

UTRNs are checked by `core.utrn_guard` (shared with the ESME). A top-up is answered by Consumer Top Up Response
(result, value, source, credit remaining); a refusal is reported there and logged in the security log (RTDS
CS01b ERROR: no alert), and changes nothing else. An accepted one is logged in the top-up log (GCS15e), raises
0x810E "credit added locally" when it came from the HAN (PCS01), and re-arms a valve credit exhaustion closed.

Credit state machine (prepayment mode only, `on_consumption` from `Gsme.on_tick`):

    ok ──(credit < LowCreditWarning: 0x810D)──▶ low ──(credit + EC ≤ CutOffValue: 0x8F0F, valve closed)──▶
    exhausted ──(top-up / emergency credit)──▶ ok | low   (the valve is then armed; the consumer opens it)

Payment mode: PaymentControlConfiguration (0x0000) bit 1 = prepayment. A change takes a snapshot (cause bit 14
"change of meter mode"). Future-dated GCS03/GCS05 instructions run through `core.zcl.plan_future_dated`;
handlers change nothing while `ctx.scratch["plan_only"]` (they only build the response).
"""
from __future__ import annotations

import logging

from firmware_emu.core import utrn_guard
from firmware_emu.core.alerts import AlertCode
from firmware_emu.core.clock import to_gbcs_seconds
from firmware_emu.core.zcl import Status, ZclContext, ZclFailure, get_stored, set_attribute

log = logging.getLogger(__name__)

__all__ = ["PREPAYMENT", "prepayment_state", "attr", "set_attr", "in_prepayment_mode", "top_up",
           "on_consumption", "balances", "record_snapshot", "setup", "RESULT", "ORIGIN_HES", "ORIGIN_IHD"]

PREPAYMENT = 0x0705
PREPAYMENT_BIT = 0x0002          # PaymentControlConfiguration: prepayment enabled
CAUSE_MODE_CHANGE = 0x00004000   # snapshot cause bit 14
ORIGIN_HES, ORIGIN_IHD = 0x00, 0x02
#: ZSE Consumer Top Up Response result types.
RESULT = {"accepted": 0x00, "invalid": 0x01, "duplicate": 0x02, "error": 0x03, "max_credit": 0x04,
          "too_large": 0x06, "accepted_supply_armed": 0x12}
_REFUSAL = {"malformed": "invalid", "not_authentic": "invalid", "other_device": "invalid",
            "exceeds_max_credit": "too_large", "exceeds_max_meter_balance": "max_credit"}
LOW_CREDIT_ALERT = 0x810D

#: Factory settings (attribute id → value) until a GCS05 / GCS03 writes them; profile key "prepayment"
#: {"credit": millipence, "attributes": {"0x0031": ...}} overrides.
FACTORY = {
    0x0000: 0x0000,               # PaymentControlConfiguration: credit mode
    0x0006: 0,                    # OverallDebtCap
    0x0010: 1_000_000,            # EmergencyCreditLimit (£10)
    0x0011: 500_000,              # EmergencyCreditThreshold (£5)
    0x0021: 50_000_000,           # MaxCreditLimit (£500)
    0x0022: 10_000_000,           # MaxCreditPerTopUp (£100)
    0x0031: 200_000,              # LowCreditWarning (£2)
    0x0040: 0,                    # CutOffValue
}


def _catalogue_type(device, attribute_id: int) -> str:
    entry = type(device).server().catalogue.attribute(PREPAYMENT, attribute_id)
    return entry["type"] if entry else "int32"


def attr(device, attribute_id: int) -> int:
    """A Prepayment setting: stored value, else the profile's, else the factory one."""
    stored = get_stored(device.state, PREPAYMENT, attribute_id)
    if stored is not None:
        return int(stored["value"])
    prof = (device.profile.get("prepayment") or {}).get("attributes") or {}
    return int(prof.get(f"0x{attribute_id:04X}", FACTORY.get(attribute_id, 0)))


def set_attr(device, attribute_id: int, value: int) -> None:
    set_attribute(device.state, PREPAYMENT, attribute_id, int(value), _catalogue_type(device, attribute_id))


def prepayment_state(device) -> dict:
    gsme = device.state.setdefault("gsme", {})
    pp = gsme.get("prepayment")
    if pp is None:
        credit = int((device.profile.get("prepayment") or {}).get("credit", 0))
        pp = {"credit": credit, "ec_active": False, "ec_remaining": 0, "debt": 0, "utrn_counters": [],
              "credit_state": "ok", "last_volume": None}
        gsme["prepayment"] = pp
    return pp


def in_prepayment_mode(device) -> bool:
    return bool(attr(device, 0x0000) & PREPAYMENT_BIT)


def credit_remaining(device) -> int:
    pp = prepayment_state(device)
    return pp["credit"] + (pp["ec_remaining"] if pp["ec_active"] else 0)


def balances(device) -> dict:
    """The Debt/Credit Status of a prepayment snapshot (payload type 0), `metering.prepayment_balances`."""
    pp = prepayment_state(device)
    return {"accumulated_debt": pp["debt"], "type1_debt_remaining": 0, "type2_debt_remaining": 0,
            "type3_debt_remaining": 0, "emergency_credit_remaining": pp["ec_remaining"] if pp["ec_active"] else 0,
            "credit_remaining": pp["credit"]}


def record_snapshot(device, t: float, cause: int) -> None:
    """An event-driven snapshot (tariff change, change of mode, CoS...): `metering.snapshot_times` serves it.
    Two causes at the same instant are one snapshot."""
    snaps = device.state.setdefault("gsme", {}).setdefault("snapshots", [])
    for s in snaps:
        if s["t"] == t:
            s["cause"] |= cause
            return
    snaps.append({"t": t, "cause": cause})
    del snaps[:-200]


def _events():
    from firmware_emu.gsme import events
    return events


def _supply():
    from firmware_emu.gsme import supply
    return supply


# --------------------------------------------------------------------------------------------- top-ups

def top_up(device, utrn: str, now: float, origin: int = ORIGIN_HES) -> tuple[str, int, list]:
    """Check and apply one UTRN. Returns (result name, amount, alerts)."""
    pp = prepayment_state(device)
    v = utrn_guard.check_utrn(device, utrn, pp["utrn_counters"], max_credit_per_utrn=attr(device, 0x0022),
                              balance=pp["credit"], max_meter_balance=attr(device, 0x0021))
    if not v.accepted:
        device.event("utrn_rejected", reason=v.reason, counter=v.counter)
        _events().log_event(device, now, v.alert_code)
        return ("duplicate" if v.alert_code == AlertCode.DUPLICATE_UTRN else _REFUSAL.get(v.reason, "error")), 0, []
    pp["utrn_counters"] = utrn_guard.accept_counter(pp["utrn_counters"], v.counter)
    was = _supply().status(device)
    alerts = _add_credit(device, v.amount, now)
    entries = device.state["gsme"].setdefault("top_up_log", [])
    entries.append({"top_up_code": utrn.encode("ascii").hex().upper(), "top_up_amount": v.amount,
                    "top_up_time": to_gbcs_seconds(device.device_time(now))})
    del entries[:-30]
    device.event("utrn_accepted", counter=v.counter, amount=v.amount, origin=origin)
    if origin != ORIGIN_HES:
        alerts.append(device.raise_alert(AlertCode.CREDIT_ADDED_LOCALLY))
    armed = was != _supply().ARMED and _supply().status(device) == _supply().ARMED
    return ("accepted_supply_armed" if armed else "accepted"), v.amount, alerts


def _add_credit(device, amount: int, now: float) -> list:
    """Repay emergency credit used, then raise the credit; a valve closed by exhaustion is armed."""
    pp = prepayment_state(device)
    if pp["ec_active"]:
        used = max(0, attr(device, 0x0010) - pp["ec_remaining"])
        repay = min(amount, used)
        amount -= repay
        pp["ec_active"], pp["ec_remaining"] = False, 0
    pp["credit"] += amount
    return _recovered(device, now)


def _recovered(device, now: float) -> list:
    pp = prepayment_state(device)
    if credit_remaining(device) > attr(device, 0x0040):
        if pp["credit_state"] == "exhausted":
            _supply().arm(device, now, reason="credit")
        pp["credit_state"] = "low" if pp["credit"] < attr(device, 0x0031) else "ok"
    return []


def on_consumption(device, now: float) -> list:
    """Charge the gas used since the last call at the tariff's price (prepayment mode only)."""
    from firmware_emu.gsme import metering, tariff
    pp = prepayment_state(device)
    vol = metering.volume(device, device.device_time(now))
    last, pp["last_volume"] = pp["last_volume"], vol
    if last is None or vol <= last or not in_prepayment_mode(device):
        return []
    cost = (vol - last) * tariff.unit_price(device, device.device_time(now)) // 1000
    out: list = []
    draw = min(cost, max(0, pp["credit"]))
    pp["credit"] -= draw
    cost -= draw
    if cost and pp["ec_active"]:
        take = min(cost, pp["ec_remaining"])
        pp["ec_remaining"] -= take
        cost -= take
    pp["credit"] -= cost
    if pp["credit_state"] == "ok" and pp["credit"] < attr(device, 0x0031):
        pp["credit_state"] = "low"
        out.append(device.raise_alert(LOW_CREDIT_ALERT))
    if pp["credit_state"] != "exhausted" and credit_remaining(device) <= attr(device, 0x0040):
        pp["credit_state"] = "exhausted"
        out.append(device.raise_alert(AlertCode.CREDIT_BELOW_DISABLEMENT_THRESHOLD))
        out += _supply().close(device, now, reason="credit")
    return out


# --------------------------------------------------------------------------------------------- ZCL commands

def _consumer_top_up(ctx: ZclContext, comp: dict):
    """CS01b / PCS01: Consumer Top Up → Consumer Top Up Response."""
    p = comp["zcl"]["payload"]
    try:
        utrn = bytes.fromhex(p["top_up_code"]).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        utrn = ""
    result, amount, alerts = top_up(ctx.device, utrn, ctx.now, p.get("originating_device", ORIGIN_HES))
    ctx.scratch.setdefault("alerts", []).extend(alerts)
    ok = result.startswith("accepted")
    return {"command_id": 0x03, "payload": {
        "result_type": RESULT[result], "top_up_value": amount if ok else -1,
        "source_of_top_up": p.get("originating_device", ORIGIN_HES),
        "credit_remaining": credit_remaining(ctx.device) if ok else -1}}


def _change_payment_mode(ctx: ZclContext, comp: dict):
    """GCS03: Change Payment Mode → Change Payment Mode Response (friendly credit, EC limit/threshold)."""
    device = ctx.device
    p = comp["zcl"]["payload"]
    if not ctx.scratch.get("plan_only"):
        before = in_prepayment_mode(device)
        set_attr(device, 0x0000, p["proposed_payment_control_configuration"] & 0xFFFF)
        if p.get("cut_off_value") not in (None, -1):     # 0xFFFFFFFF: "do not change" (GCS02/GCS03 templates)
            set_attr(device, 0x0040, p["cut_off_value"])
        if in_prepayment_mode(device) != before:
            record_snapshot(device, device.device_time(ctx.now), CAUSE_MODE_CHANGE)
            prepayment_state(device)["last_volume"] = None
        device.event("payment_mode", prepayment=in_prepayment_mode(device))
    from firmware_emu.gsme import tariff
    friendly = tariff.calendar(device, tariff.FRIENDLY_CREDIT)
    return {"command_id": 0x02, "payload": {
        "friendly_credit": 1 if friendly else 0,
        "friendly_credit_calendar_id": friendly["issuer_calendar_id"] if friendly else 0,
        "emergency_credit_limit": attr(device, 0x0010), "emergency_credit_threshold": attr(device, 0x0011)}}


def _setter(*fields: tuple[str, int]):
    """A Set … command that writes payload fields into settings attributes (Default Response)."""
    def handler(ctx: ZclContext, comp: dict):
        if ctx.scratch.get("plan_only"):
            return None
        p = comp["zcl"]["payload"]
        for name, attribute_id in fields:
            set_attr(ctx.device, attribute_id, p[name])
        return None
    return handler


def _select_emergency_credit(ctx: ZclContext, comp: dict):
    """GCS06 / PCS02: emergency credit, available at or below EmergencyCreditThreshold (the Default Response
    tells; RTDS GCS06 raises no alert)."""
    device = ctx.device
    pp = prepayment_state(device)
    if pp["ec_active"]:
        return None
    if pp["credit"] > attr(device, 0x0011):
        raise ZclFailure(Status.FAILURE, "emergency credit is not available above its threshold")
    pp["ec_active"], pp["ec_remaining"] = True, attr(device, 0x0010)
    ctx.scratch.setdefault("alerts", []).extend(_recovered(device, ctx.now))
    device.event("emergency_credit_activated")
    return None


def setup(cls) -> None:
    server = cls.server()
    server.command(PREPAYMENT, 0x04)(_consumer_top_up)
    server.command(PREPAYMENT, 0x06)(_change_payment_mode)
    server.command(PREPAYMENT, 0x00)(_select_emergency_credit)
    server.command(PREPAYMENT, 0x03)(_setter(("emergency_credit_limit", 0x0010),
                                              ("emergency_credit_threshold", 0x0011)))
    server.command(PREPAYMENT, 0x0C)(_setter(("overall_debt_cap", 0x0006)))
    server.command(PREPAYMENT, 0x09)(_setter(("low_credit_warning_level", 0x0031)))
    server.command(PREPAYMENT, 0x0B)(_setter(("maximum_credit_level", 0x0021), ("maximum_credit_per_top_up", 0x0022)))
    server.attribute(PREPAYMENT, 0x0001)(lambda ctx, c, a: prepayment_state(ctx.device)["credit"])
    server.attribute(PREPAYMENT, 0x0002)(lambda ctx, c, a: balances(ctx.device)["emergency_credit_remaining"])
    server.attribute(PREPAYMENT, 0x0005)(lambda ctx, c, a: prepayment_state(ctx.device)["debt"])
    for a in FACTORY:
        server.attribute(PREPAYMENT, a)(lambda ctx, c, a_: attr(ctx.device, a_))
    cls.prepayment_balances = balances


# --------------------------------------------------------------------------------------------- the PPMID (HAN)

#: HAN-only commands a joined PPMID sends the GSME (brief §1.5: DD…DF…, unsigned, device-to-device MAC).
HAN_USE_CASES = {0x009B: "PCS01", 0x0090: "PCS02"}


def _han_parts(device, frame: bytes):
    """(envelope, content, offset, device-log entry) when `frame` is a PCS01/PCS02 command from a PPMID in this
    GSME's device log; None otherwise (the core's remote-party checks take it)."""
    from protocols.errors import DecodeError
    from protocols.gbcs.message import split_payload
    from protocols.security.eui import as_eui, eui_hex
    try:
        env, content, offset = split_payload(frame)
        gh = env["grouping_header"]
        code = int(gh["other_information"]["message_code"], 16)
        origin = eui_hex(as_eui(gh["originator"]))
    except (DecodeError, KeyError, TypeError, ValueError):
        return None
    if gh["cra_flag"] != "command" or code not in HAN_USE_CASES or content is None:
        return None
    joined = next((e for e in device.state.get("credentials", {}).get("device_log", [])
                   if e["device_id"] == origin and e["device_type"] == "PPMID"), None)
    return (env, content, offset, joined) if joined is not None else None


def is_han_command(device, frame: bytes) -> bool:
    return _han_parts(device, frame) is not None


def receive_han(device, frame: bytes, now: float) -> list:
    """Serve PCS01/PCS02 from a joined PPMID: the MAC (command mode) with the GSME–PPMID key, the PPMID's
    counter above the last one accepted, then the ordinary GBZ server; the response is MAC'd in response mode
    with the same key. A frame that fails is logged in the security log and answered with nothing."""
    from protocols.gbcs.message import encode_grouping_header, wrap_mac_header
    from protocols.gbcs.registry import REGISTRY
    from protocols.prims import read_ber_length
    from protocols.security.eui import as_eui, eui_hex
    from protocols.security.kdf import KdfMode
    from protocols.security.mac import message_mac, verify_message_mac
    from firmware_emu.core.device import Emitted
    from firmware_emu.core.security import InboundCommand, Rejection
    env, content, offset, joined = _han_parts(device, frame)
    gh, mh = env["grouping_header"], env.get("mac_header")
    ppmid, counter = as_eui(gh["originator"]), gh["originator_counter"]
    cert = bytes.fromhex(joined["ka_certificate"]) if joined.get("ka_certificate") else None
    z = device.keys.secret(ppmid, cert)
    entry = REGISTRY.get(int(gh["other_information"]["message_code"], 16))
    if mh is None or z is None:
        return device._rejected(Rejection("bad_mac", None, "no device-to-device MAC", gh, entry))
    _, pos = read_ber_length(frame, 7)
    signing = frame[pos + 5:len(frame) - 12]
    if not verify_message_mac(z, ppmid, device.eui, KdfMode.COMMAND, counter, signing, bytes.fromhex(mh["mac"])):
        return device._rejected(Rejection("bad_mac", None, "device-to-device MAC does not verify", gh, entry))
    remote = device.state["counters"]["remote"]
    if counter <= remote.get(eui_hex(ppmid), -1):
        return device._rejected(Rejection("replayed_counter", None, "PPMID counter not above the last", gh, entry))
    cmd = InboundCommand(bytes(frame), gh, content, offset, entry, ppmid, None, counter, False, True)
    device.event("command", use_case=entry.name, counter=counter, remote=eui_hex(ppmid))
    reply = device.handle(cmd, now)
    remote[eui_hex(ppmid)] = counter
    out = []
    if reply.respond:
        rgh = {"cra_flag": "response", "originator_counter": counter, "originator": eui_hex(device.eui),
               "recipient": eui_hex(ppmid), "date_time": None,
               "other_information": {"message_code": gh["other_information"]["message_code"]}}
        body = encode_grouping_header(rgh, reply.content, "")
        resp = wrap_mac_header(body, message_mac(z, device.eui, ppmid, KdfMode.RESPONSE, counter, body))
        out.append(Emitted("response", resp, entry.code, counter, eui_hex(ppmid)))
    return out + reply.alerts
