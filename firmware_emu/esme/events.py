"""Alerts the ESME raises by itself: the device lives through an event, updates its logs, and reports it.

Theory of operation
-------------------
`stimulate(device, message_code, alert_code, now, **detail)` is what `Esme.stimulate` calls when a test or a
fleet scenario makes something happen to the meter. Each message code has one `_EVENTS` entry that changes the
device state first (event log, supply state, firmware image held...) and then builds the alert payload
(brief §6: a DLMS Data-Notification `{alert code, date-time, extra fields…}`) from that state:

    stimulus ──▶ live it (state, logs) ──▶ alert enabled? ──no──▶ logged only, nothing sent
                                              └─yes─▶ raise_alert(message code, criticality, recipient)

| code  | use case   | alert      | extra fields                                         | to        |
|-------|------------|------------|------------------------------------------------------|-----------|
| 1000  | GCA        | critical   | —                                                    | supplier  |
| 1001  | GNCA       | non-crit.  | —                                                    | supplier  |
| 00F0  | MIIWA      | 81A0       | octet-string(2) reason                               | supplier  |
| 0067  | ECS80      | 8F35/8F36  | outage start, restoration date-times                 | NO        |
| 0061  | ECS68      | 8F0A       | protection parameters + encrypted billing data log   | supplier  |
| 00CE  | FDRA       | 8F72       | octet-string(32) image hash                          | supplier  |
| 0120  | ECS100     | 8F85       | octet-string(10) message code ‖ originator counter   | supplier / ACB (on behalf) |
| 0121  | ECS101     | 8F86       | APC direction+number, start, end, resulting level    | supplier  |
| 0122  | ECS102     | 8F87       | APC direction+number, resulting level                | supplier  |
| 0123  | ECS200     | 8F88       | utf8-string JSON, other-info names the load controller | supplier |

Criticality follows brief §1.5 (every use-case alert above but GNCA and MIIWA is signed, `DF` only). An outage
that has not ended yet (`end` in the future, or `duration` from `start`) interrupts the supply now and schedules
the restoration; the ECS80 alert goes when the supply comes back. The alert behaviour configuration is
`state["alert_behaviour"]`: `{"0x8F35": false}` disables an alert code (the event is still logged). Future-dated
outcome alerts (00CA/00CB/0124/00CC) are not stimulated: they come from future-dated commands.
"""
from __future__ import annotations

import json
import logging

from protocols.dlms.axdr import encode_data
from protocols.security.eui import as_eui, eui_hex
from protocols.security.keystore import Role
from protocols.security.mac import encrypt_payload

from firmware_emu.core.alerts import AlertCode
from firmware_emu.core.clock import dlms_datetime, to_gbcs_seconds
from firmware_emu.core.cosem import attr_key, dlms_alert_content
from firmware_emu.core.device import Emitted
from firmware_emu.core.modular import on_timer
from firmware_emu.esme.device import Esme

log = logging.getLogger(__name__)

__all__ = ["stimulate", "alert_enabled", "EVENT_LOG_LIMIT", "OUTAGE_TIMER"]

EVENT_LOG_LIMIT = 100
OUTAGE_TIMER = "supply_outage_restored"
#: An outage this long or longer is reported with 8F36 rather than 8F35 (SMETS: "outage ≥ 3 minutes").
LONG_OUTAGE_S = 180
IMPORT_REGISTER = attr_key(3, "1-0:1.8.0.255", 2)


def alert_enabled(device, alert_code: int) -> bool:
    """False when the alert behaviour configuration disables this alert code."""
    return device.state.get("alert_behaviour", {}).get(f"0x{alert_code:04X}", True) is not False


def _log_event(device, t: float, name: str, **detail) -> None:
    entries = device.state.setdefault("event_log", [])
    entries.append({"t": t, "event": name, **detail})
    del entries[:-EVENT_LOG_LIMIT]
    device.event(name, **detail)


def _octets(b: bytes) -> dict:
    return {"type": "octet-string", "value": b.hex().upper()}


def _raise(device, alert_code: int, message_code: int, now: float, extra=None, **kw) -> list[Emitted]:
    if not alert_enabled(device, alert_code):
        _log_event(device, now, "alert_suppressed", alert_code=f"0x{alert_code:04X}")
        return []
    device.now = now
    return [device.raise_alert(alert_code, message_code=message_code, extra=extra, **kw)]


# ------------------------------------------------------------------------------------------------ the events

def _generic(device, message_code, alert_code, now, **detail):
    """GCA / GNCA: any alert code; the generic code decides criticality (0x1000 signed, 0x1001 MAC'd)."""
    if alert_code is None:
        raise ValueError("a generic alert needs an alert code")
    _log_event(device, now, "alert_event", alert_code=f"0x{alert_code:04X}", **_plain(detail))
    return _raise(device, alert_code, message_code, now, critical=message_code == 0x1000)


def _miiwa(device, message_code, alert_code, now, reason: int = 5, **detail):
    """Meter integrity issue warning: the reason code (0 other … 5 unexpected reset …) in two bytes."""
    alert_code = alert_code or AlertCode.SMART_METER_INTEGRITY_WARNING
    _log_event(device, now, "integrity_issue", reason=reason)
    return _raise(device, alert_code, message_code, now, [_octets(int(reason).to_bytes(2, "big"))],
                  critical=False)


def _outage(device, message_code, alert_code, now, start: float | None = None, end: float | None = None,
            duration: float | None = None, **detail):
    """ECS80: supply lost at `start`, back at `end` (or `start + duration`); alert to the network operator."""
    if start is None:
        start = now - (duration if duration is not None else 0) if end is None else end - (duration or 0)
    if end is None:
        end = start + (duration if duration is not None else 0)
    if end < start:
        raise ValueError("an outage cannot end before it starts")
    supply = device.state.setdefault("supply_events", {})
    supply["outage"] = {"start": start, "end": end}
    _log_event(device, start, "supply_interrupted")
    if end > now:        # still off: the restoration (and its alert) comes later
        supply["powered"] = False
        device.schedule(end, OUTAGE_TIMER, {"start": start, "end": end, "alert_code": alert_code})
        return []
    return _restored(device, start, end, alert_code)


def _restored(device, start: float, end: float, alert_code) -> list[Emitted]:
    supply = device.state.setdefault("supply_events", {})
    supply["powered"] = True
    _log_event(device, end, "supply_restored", outage_s=end - start)
    if alert_code is None:
        alert_code = AlertCode.SUPPLY_OUTAGE_RESTORED_3_MINUTES if end - start >= LONG_OUTAGE_S \
            else AlertCode.SUPPLY_OUTAGE_RESTORED
    no = device.anchors.get(Role.NETWORK_OPERATOR)
    return _raise(device, alert_code, 0x0067, end, [_octets(dlms_datetime(start)), _octets(dlms_datetime(end))],
                  critical=True, recipient=no)


@on_timer(Esme, OUTAGE_TIMER)
def _outage_timer(device, data: dict, at: float) -> list[Emitted]:
    return _restored(device, data["start"], data["end"], data.get("alert_code"))


def _billing_log_entry(device, now: float) -> dict:
    """The newest billing data log entry (ECS68 carries only that): time, import register, TOU and blocks."""
    stored = device.state.get("cosem", {}).get(IMPORT_REGISTER)
    total = stored["value"] if isinstance(stored, dict) and isinstance(stored.get("value"), int) else 0
    u32 = "double-long-unsigned"
    log_ = device.state.setdefault("billing_log", [])
    log_.append({"t": now, "import_wh": total})
    del log_[:-12]
    twin = bool(device.profile.get("twin"))
    # single element: time, import, TOU[48], blocks 4 x [8]; a twin element meter adds the secondary element's
    # import register after the primary's and its TOU[4] after the primary TOU registers
    values = [to_gbcs_seconds(now), total & 0xFFFFFFFF] + ([0] if twin else []) + [[0] * 48] + \
        ([[0] * 4] if twin else []) + [[0] * 8 for _ in range(4)]
    td = {"structure": [u32, u32] + ([u32] if twin else []) + [{"array": {"count": 48, "type": u32}}] +
          ([{"array": {"count": 4, "type": u32}}] if twin else []) +
          [{"array": {"count": 8, "type": u32}} for _ in range(4)]}
    return {"type": "structure", "value": [
        {"type": "compact-array", "value": {"type_description": td, "values": [values]}}]}


def _billing(device, message_code, alert_code, now, **detail):
    """ECS68: the billing calendar fired; the newest billing-log entry goes encrypted to the supplier."""
    alert_code = alert_code or AlertCode.BILLING_DATA_LOG_UPDATED
    _log_event(device, now, "billing_data_log_updated")
    if not alert_enabled(device, alert_code):
        return []
    supplier = device.anchors[Role.SUPPLIER]
    counter = device.state["counters"]["alert"] + 1      # the counter raise_alert is about to take
    z = device.keys.secret(supplier)
    if z is None:
        raise RuntimeError(f"no key agreement with {eui_hex(supplier)} to encrypt the billing data log")
    plain = encode_data(_billing_log_entry(device, now))
    cipher = b"\x31\x00\x00\x00\x00" + encrypt_payload(z, device.eui, supplier, counter, plain)
    params = {"type": "array", "value": [{"type": "structure", "value": [
        {"type": "enum", "value": 2},
        {"type": "structure", "value": [
            _octets(b"\x04" + counter.to_bytes(8, "big")), _octets(device.eui), _octets(supplier),
            _octets(b""),
            {"type": "structure", "value": [{"type": "enum", "value": 2},
                                            {"type": "structure", "value": [_octets(b"\x02"), _octets(b"")]}]}]}]}]}
    device.now = now
    content = dlms_alert_content(alert_code, counter, now, [params, _octets(cipher)])
    return [device.raise_alert(alert_code, message_code=message_code, content=content, critical=True,
                               recipient=supplier)]


def _fdra(device, message_code, alert_code, now, image_hash: str | bytes = b"\x00" * 32, **detail):
    """Firmware distribution receipt: the device now holds an image (CS06 may activate it later)."""
    h = image_hash.hex() if isinstance(image_hash, (bytes, bytearray)) else str(image_hash)
    h = h.upper()
    if len(h) != 64:
        raise ValueError("image_hash must be 32 bytes")
    device.state.setdefault("firmware", {})["received_image_hash"] = h
    _log_event(device, now, "firmware_image_received", image_hash=h)
    return _raise(device, alert_code or AlertCode.FIRMWARE_VERIFICATION_SUCCESSFUL, message_code, now,
                  [_octets(bytes.fromhex(h))], critical=True)


def _not_supported(device, message_code, alert_code, now, command_message_code: int = 0,
                   command_counter: int = 0, on_behalf_of=None, supplementary_counter: int | None = None,
                   **detail):
    """ECS100: a command the device does not support arrived; routed by the ACB → the alert goes to the ACB."""
    _log_event(device, now, "command_not_supported", message_code=command_message_code, counter=command_counter)
    extra = [_octets(int(command_message_code).to_bytes(2, "big") + int(command_counter).to_bytes(8, "big"))]
    kw = {}
    if on_behalf_of is not None:
        kw["recipient"] = device.anchors[Role.ACCESS_CONTROL_BROKER]
        kw["other_information"] = {"supplementary_remote_party_id": eui_hex(as_eui(on_behalf_of)),
                                   "supplementary_remote_party_counter": int(supplementary_counter or 0)}
    return _raise(device, alert_code or 0x8F85, message_code, now, extra, critical=True, **kw)


def _apc_number(direction: str, apc: int) -> int:
    if direction not in ("input", "output") or not 1 <= int(apc) <= 5:
        raise ValueError("APC direction is input/output and its number 1..5")
    return (0x20 if direction == "input" else 0x10) | int(apc)


def _apc_processed(device, message_code, alert_code, now, direction: str = "output", apc: int = 1,
                   start: float | None = None, end: float | None = None, level: int = 0, **detail):
    """ECS101: a Limit APC level command was processed (the APC limit period and resulting level)."""
    start = now if start is None else start
    end = start + 86400 if end is None else end
    apcs = device.state.setdefault("apc_limits", {})
    apcs[f"{direction}{apc}"] = {"start": start, "end": end, "level": level}
    _log_event(device, now, "apc_limit_processed", direction=direction, apc=apc, level=level)
    extra = [{"type": "unsigned", "value": _apc_number(direction, apc)}, _octets(dlms_datetime(start)),
             _octets(dlms_datetime(end)), {"type": "unsigned", "value": int(level)}]
    return _raise(device, alert_code or 0x8F86, message_code, now, extra, critical=True)


def _apc_ended(device, message_code, alert_code, now, direction: str = "output", apc: int = 1, level: int = 0,
               **detail):
    """ECS102: a Limit APC level ended or was cancelled."""
    device.state.setdefault("apc_limits", {}).pop(f"{direction}{apc}", None)
    _log_event(device, now, "apc_limit_ended", direction=direction, apc=apc, level=level)
    extra = [{"type": "unsigned", "value": _apc_number(direction, apc)}, {"type": "unsigned", "value": int(level)}]
    return _raise(device, alert_code or 0x8F87, message_code, now, extra, critical=True)


def _operational_update(device, message_code, alert_code, now, output_state: int = 0, input_state: int = 0,
                        other_data: str = "", load_controller=None, **detail):
    """ECS200: the load controller's operational state changed (a JSON text, other-info names the LC)."""
    lc = as_eui(load_controller) if load_controller is not None else device.anchors.get(Role.LOAD_CONTROLLER)
    text = json.dumps({"outputState": str(output_state), "inputState": str(input_state), "other-data": other_data},
                      separators=(",", ":"))
    _log_event(device, now, "operational_update", output_state=output_state, input_state=input_state)
    oi = {"supplementary_remote_party_id": eui_hex(lc)} if lc is not None else None
    return _raise(device, alert_code or 0x8F88, message_code, now, [{"type": "utf8-string", "value": text}],
                  critical=True, other_information=oi)


def _plain(detail: dict) -> dict:
    return {k: v for k, v in detail.items() if isinstance(v, (str, int, float, bool, type(None)))}


_EVENTS = {
    0x1000: _generic, 0x1001: _generic, 0x00F0: _miiwa, 0x0067: _outage, 0x0061: _billing, 0x00CE: _fdra,
    0x0120: _not_supported, 0x0121: _apc_processed, 0x0122: _apc_ended, 0x0123: _operational_update,
}


def stimulate(device, message_code: int, alert_code: int | None, now: float, **detail) -> list[Emitted]:
    """Make the ESME live through the event behind `message_code` (module docstring); the frames it sends."""
    fn = _EVENTS.get(message_code)
    if fn is None:
        raise NotImplementedError(f"the ESME cannot be stimulated to raise 0x{message_code:04X}"
                                  + (" (future-dated outcome alerts come from future-dated commands)"
                                     if message_code in (0x00CA, 0x00CB, 0x0124, 0x00CC) else ""))
    return fn(device, message_code, alert_code, now, **detail)
