"""The PPMID's HAN side: what the customer does at the keypad, the frames it sends the meters, and the display.

Theory of operation
-------------------
A PPMID talks to the meters it was joined to (CS03C, `ppmid.common`). The customer's actions become frames the
caller (a premises simulation) delivers; nothing here does I/O:

* `enter_utrn(utrn)`: the customer keys a 20-digit top-up code. For a GSME that is **PCS01** (0x009B): a GBCS
  command `DD…DF…` from the PPMID, counter = the PPMID's originator counter, carrying the ZSE Prepayment
  "Consumer Top Up" (originating device 0x02 IHD, the UTRN as 20 ASCII digits), MAC'd with the
  device-to-device key (PPMID KA private × the meter's KA certificate from the join; brief §1.5). For an ESME it
  is **PECS01**, a plain ZSE command (the ESME logs its message code).
* `select_emergency_credit()`: PCS02 (0x0090) "Select Available Emergency Credit" to a GSME, PECS02 to an ESME.
* `enable_supply()`: PECS03 "Local Change Supply" (proposed status 0x02, supply ON) to an ESME; a GSME has no
  such HAN command (its supply is enabled at the meter's button), so it is refused.

Outputs are `Emitted` frames: kind `han_command` (a complete GBCS frame for a GSME) or `zse_command` (a ZSE
command to an ESME, carried as a one-component GBZ payload so the cluster travels with the ZCL frame; decode it
with `protocols.zigbee.gbz.decode_gbz`). Both are remembered in `state["han"]["pending"]` by counter / ZCL
sequence number until the meter answers::

    idle ──keypad──▶ pending{counter: use case, meter} ──response (MAC valid, from that meter)──▶ display updated
                         └── no key to MAC with (RTDS keys: neither private KA key) ──▶ HanKeyUnavailable

`receive_response(frame)` takes the GSME's GBCS answer (`Consumer Top Up Response`: result, value, credit
remaining; or a Default Response with the ZCL status), checks its MAC with the same device-to-device key and
updates `state["display"][meter]`. `receive_zse(gbz, meter)` takes the ESME's ZSE answers and what meters push
or answer to `poll` (Read Attributes Responses of the Prepayment cluster: CreditRemaining,
EmergencyCreditRemaining, CreditStatus; Messaging Display Message / Cancel Message).

With RTDS keys neither the PPMID nor the GSME has a KA private key, so PCS01/PCS02 cannot be built or
verified: `HanKeyUnavailable` (unverifiable, not wrong). With an own test PKI both devices hold their keys.
"""
from __future__ import annotations

import logging

from protocols.errors import DecodeError, GbcsEmuError
from protocols.gbcs.message import encode_grouping_header, split_payload, wrap_mac_header
from protocols.prims import read_ber_length
from protocols.security.eui import as_eui, eui_hex
from protocols.security.kdf import KdfMode
from protocols.security.mac import message_mac, verify_message_mac
from protocols.zigbee.gbz import EPOCH_2000, decode_gbz, encode_gbz

from firmware_emu.core.device import Emitted
from firmware_emu.ppmid.common import meter

log = logging.getLogger(__name__)

__all__ = ["HanKeyUnavailable", "HanRefused", "enter_utrn", "select_emergency_credit", "enable_supply", "poll",
           "receive_response", "receive_zse", "display", "HAN_COMMAND", "ZSE_COMMAND", "USE_CASES"]

HAN_COMMAND, ZSE_COMMAND = "han_command", "zse_command"
PREPAYMENT, MESSAGING = 0x0705, 0x0703
ORIGINATING_DEVICE_IHD = 0x02           # ZSE "Originating Device": In-Home Display Device
SUPPLY_ON = 0x02                        # ZSE Local Change Supply proposed status (PECS03)
CONSUMER_TOP_UP, SELECT_EMERGENCY_CREDIT, LOCAL_CHANGE_SUPPLY = 0x04, 0x00, 0x0C
#: (action, meter type) → (use case, message code, cluster, command id).
USE_CASES = {
    ("top_up", "GSME"): ("PCS01", 0x009B, PREPAYMENT, CONSUMER_TOP_UP),
    ("emergency_credit", "GSME"): ("PCS02", 0x0090, PREPAYMENT, SELECT_EMERGENCY_CREDIT),
    ("top_up", "ESME"): ("PECS01", 0x0116, PREPAYMENT, CONSUMER_TOP_UP),
    ("emergency_credit", "ESME"): ("PECS02", 0x0117, PREPAYMENT, SELECT_EMERGENCY_CREDIT),
    ("enable_supply", "ESME"): ("PECS03", 0x0118, 0x0702, LOCAL_CHANGE_SUPPLY),
}
#: ZSE Consumer Top Up Response result types (GBZ template of PCS01).
TOP_UP_RESULTS = {0x00: "accepted", 0x01: "rejected_invalid", 0x02: "rejected_duplicate", 0x03: "rejected_error",
                  0x04: "rejected_max_credit", 0x05: "rejected_keypad_lock", 0x06: "rejected_too_large",
                  0x10: "accepted_supply_enabled", 0x11: "accepted_supply_disabled", 0x12: "accepted_supply_armed"}
#: Prepayment attributes the display shows (Read Attributes Response records).
DISPLAY_ATTRIBUTES = {0x0001: "credit_remaining", 0x0002: "emergency_credit_remaining", 0x0003: "credit_status"}
PENDING_DEPTH = 32


class HanKeyUnavailable(GbcsEmuError):
    """No device-to-device key: neither this PPMID's KA private key nor the meter's is at hand (RTDS keys)."""


class HanRefused(GbcsEmuError):
    """The PPMID refuses the keypad action (not joined to such a meter, malformed UTRN, no such HAN command)."""


def _han(device) -> dict:
    han = device.state.setdefault("han", {})
    han.setdefault("pending", {})
    han.setdefault("zcl_sequence", 0)
    return han


def display(device, meter_eui=None) -> dict:
    """What the PPMID shows for a meter (the first joined one by default)."""
    joined = meter(device, eui=meter_eui) if meter_eui is not None else meter(device)
    if joined is None:
        return {}
    return device.state.setdefault("display", {}).setdefault(joined[0], {})


def _target(device, meter_eui, action: str) -> tuple[str, dict, tuple]:
    joined = meter(device, eui=meter_eui) if meter_eui is not None else meter(device)
    if joined is None:
        raise HanRefused(f"PPMID {eui_hex(device.eui)} is not joined to {'a meter' if meter_eui is None else meter_eui}")
    eui, entry = joined
    spec = USE_CASES.get((action, entry["device_type"]))
    if spec is None:
        raise HanRefused(f"no HAN command to {action} on a {entry['device_type']}")
    return eui, entry, spec


def _next_sequence(device) -> int:
    han = _han(device)
    seq = han["zcl_sequence"]
    han["zcl_sequence"] = (seq + 1) & 0xFF
    return seq


def _component(cluster: int, command_id: int, sequence: int, payload: dict) -> dict:
    return {"extended_header_control": {"last": True, "encrypted": False, "from_date_time": False},
            "cluster": cluster,
            "zcl": {"frame_control": {"frame_type": "cluster", "direction": "client_to_server"},
                    "sequence_number": sequence, "command_id": command_id, "payload": payload}}


def _payload(action: str, now: float, utrn: str | None) -> dict:
    if action == "top_up":
        return {"originating_device": ORIGINATING_DEVICE_IHD, "top_up_code": utrn.encode("ascii").hex().upper()}
    if action == "emergency_credit":     # GBZ template: command issue date/time "set = 0"
        return {"command_issue_date_time": 0, "originating_device": ORIGINATING_DEVICE_IHD}
    return {"proposed_supply_status": SUPPLY_ON}


def _secret(device, eui: str, entry: dict) -> bytes:
    der = bytes.fromhex(entry["ka_certificate"]) if entry.get("ka_certificate") else None
    z = device.keys.secret(as_eui(eui), der)
    if z is None:
        raise HanKeyUnavailable(f"no device-to-device key between {eui_hex(device.eui)} and {eui}: neither KA "
                                "private key is held (RTDS keys); the message is unverifiable, not wrong")
    return z


def _remember(device, key: str, record: dict) -> None:
    pending = _han(device)["pending"]
    pending[key] = record
    for old in sorted(pending, key=lambda k: pending[k]["t"])[:-PENDING_DEPTH]:
        del pending[old]


def _send(device, action: str, now: float, meter_eui, utrn: str | None = None) -> list[Emitted]:
    device.now = now
    eui, entry, (use_case, code, cluster, command_id) = _target(device, meter_eui, action)
    payload = _payload(action, now, utrn)
    if entry["device_type"] == "GSME":      # PCS01/PCS02: a GBCS command, device-to-device MAC
        z = _secret(device, eui, entry)      # before the counter moves: no key, nothing sent, nothing spent
        content = encode_gbz({"components": [_component(cluster, command_id, 0, payload)]})
        counter = device.next_alert_counter()   # the PPMID's one originator counter (alerts and commands)
        gh = {"cra_flag": "command", "originator_counter": counter, "originator": eui_hex(device.eui),
              "recipient": eui, "date_time": None, "other_information": {"message_code": f"0x{code:04X}"}}
        signing = encode_grouping_header(gh, content, "")
        frame = wrap_mac_header(signing, message_mac(z, device.eui, as_eui(eui), KdfMode.COMMAND, counter, signing))
        kind, key = HAN_COMMAND, f"c{counter}"
    else:                                    # PECS01-03: ZSE to the ESME
        counter = _next_sequence(device)
        frame = encode_gbz({"components": [_component(cluster, command_id, counter, payload)]})
        kind, key = ZSE_COMMAND, f"z{eui}/{counter}"
    record = {"use_case": use_case, "meter": eui, "t": now}
    if utrn is not None:
        record["utrn"] = utrn
    _remember(device, key, record)
    shown = display(device, eui)
    shown["status"] = {"top_up": "top up sent", "emergency_credit": "emergency credit requested",
                       "enable_supply": "supply enable requested"}[action]
    device.event("han_command", use_case=use_case, meter=eui, counter=counter)
    return [Emitted(kind, frame, code, counter, eui)]


def enter_utrn(device, utrn: str, now: float, meter_eui=None) -> list[Emitted]:
    """The customer keys a UTRN: PCS01 to a GSME, PECS01 to an ESME. A code that is not 20 digits is refused
    at the keypad (the meter checks authenticity)."""
    utrn = str(utrn).replace(" ", "")
    if len(utrn) != 20 or not utrn.isdigit():
        display(device, meter_eui)["status"] = "invalid top up code"
        raise HanRefused(f"a UTRN is 20 digits, got {utrn!r}")
    return _send(device, "top_up", now, meter_eui, utrn)


def select_emergency_credit(device, now: float, meter_eui=None) -> list[Emitted]:
    """The customer accepts emergency credit: PCS02 to a GSME, PECS02 to an ESME."""
    return _send(device, "emergency_credit", now, meter_eui)


def enable_supply(device, now: float, meter_eui=None) -> list[Emitted]:
    """The customer asks to enable the supply: PECS03 Local Change Supply (supply ON) to an ESME."""
    return _send(device, "enable_supply", now, meter_eui)


def poll(device, now: float) -> list[Emitted]:
    """Read the displayed Prepayment attributes of every joined meter (ZSE Read Attributes)."""
    out = []
    for eui in sorted(device.state.get("meters", {})):
        seq = _next_sequence(device)
        comp = {"extended_header_control": {"last": True}, "cluster": PREPAYMENT,
                "zcl": {"frame_control": {"frame_type": "global", "direction": "client_to_server"},
                        "sequence_number": seq, "command_id": 0x00,
                        "payload": {"attributes": [{"attribute_id": a} for a in sorted(DISPLAY_ATTRIBUTES)]}}}
        out.append(Emitted(ZSE_COMMAND, encode_gbz({"components": [comp]}), 0, seq, eui))
    return out


# --------------------------------------------------------------------------------------------- answers


def _apply(device, eui: str, components: list[dict], now: float, use_case: str | None) -> None:
    shown = display(device, eui)
    shown["updated"] = now
    for comp in components:
        zcl = comp.get("zcl") or {}
        name, payload = zcl.get("command_name"), zcl.get("payload") or {}
        if name == "Consumer Top Up Response":
            result = TOP_UP_RESULTS.get(payload["result_type"], f"0x{payload['result_type']:02X}")
            shown["last_top_up"] = {"result": result, "value": payload["top_up_value"], "t": now}
            if payload["credit_remaining"] not in (-1, 0xFFFFFFFF):
                shown["credit_remaining"] = payload["credit_remaining"]
            shown["status"] = "top up accepted" if result.startswith("accepted") else f"top up {result}"
        elif name == "Default Response":
            ok = payload.get("status") == 0
            shown["status"] = f"{use_case or 'command'} {'accepted' if ok else 'refused'}"
            if ok and use_case in ("PCS02", "PECS02"):
                shown["emergency_credit"] = "activated"
            if ok and use_case == "PECS03":
                shown["supply"] = "enabled"
        elif name == "Read Attributes Response" and comp.get("cluster") == PREPAYMENT:
            for rec in payload.get("records") or []:
                field = DISPLAY_ATTRIBUTES.get(rec.get("attribute_id"))
                if field is not None and rec.get("status") == 0:
                    shown[field] = rec.get("value")
        elif name == "Display Message" and comp.get("cluster") == MESSAGING:
            shown["message"] = {"id": payload.get("message_id"), "text": payload.get("message")}
        elif name in ("Cancel Message", "Cancel All Messages") and comp.get("cluster") == MESSAGING:
            shown.pop("message", None)


def receive_response(device, frame: bytes, now: float) -> list[Emitted]:
    """A GSME's GBCS response to PCS01/PCS02: check it answers a pending command of ours from that meter, with a
    valid device-to-device MAC, then update the display. Anything else is dropped (logged as an event)."""
    device.now = now
    try:
        env, content, _ = split_payload(frame)
    except DecodeError as e:
        device.event("han_dropped", reason="malformed", detail=str(e))
        return []
    gh, mh = env["grouping_header"], env.get("mac_header")
    origin = eui_hex(as_eui(gh["originator"]))
    record = _han(device)["pending"].get(f"c{gh['originator_counter']}")
    joined = meter(device, eui=origin)
    if record is None or record["meter"] != origin or joined is None or mh is None or content is None:
        device.event("han_dropped", reason="not a pending HAN command of this PPMID", meter=origin)
        return []
    _, pos = read_ber_length(frame, 7)
    signing = frame[pos + 5:len(frame) - 12]
    try:
        z = _secret(device, origin, joined[1])
    except HanKeyUnavailable:
        device.event("han_dropped", reason="unverifiable", meter=origin)
        return []
    if not verify_message_mac(z, as_eui(origin), device.eui, KdfMode.RESPONSE, gh["originator_counter"], signing,
                              bytes.fromhex(mh["mac"])):
        device.event("han_dropped", reason="bad_mac", meter=origin)
        return []
    try:
        components = decode_gbz(content, cra_flag="response")["components"]
    except DecodeError as e:
        device.event("han_dropped", reason="malformed", detail=str(e))
        return []
    del _han(device)["pending"][f"c{gh['originator_counter']}"]
    _apply(device, origin, components, now, record["use_case"])
    device.event("han_response", use_case=record["use_case"], meter=origin)
    return []


def receive_zse(device, gbz: bytes, meter_eui, now: float) -> list[Emitted]:
    """ZSE frames from a joined meter (answers to PECS01-03 and `poll`, pushed messages), as a GBZ carrier."""
    device.now = now
    eui = eui_hex(as_eui(meter_eui))
    if meter(device, eui=eui) is None:
        device.event("han_dropped", reason="not joined", meter=eui)
        return []
    try:
        components = decode_gbz(gbz, cra_flag="response")["components"]
    except DecodeError as e:
        device.event("han_dropped", reason="malformed", detail=str(e))
        return []
    pending = _han(device)["pending"]
    use_case = None
    for comp in components:
        record = pending.pop(f"z{eui}/{(comp.get('zcl') or {}).get('sequence_number')}", None)
        use_case = record["use_case"] if record else use_case
    _apply(device, eui, components, now, use_case)
    return []


def utc2000(now: float) -> int:
    """ZCL UTCTime (seconds since 2000) of a simulated time."""
    return max(0, int(now) - EPOCH_2000)
