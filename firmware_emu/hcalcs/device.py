"""The HCALCS: a HAN-connected auxiliary load control switch (storage heaters, immersion...) driven by the ESME.

Theory of operation
-------------------
Remote parties reach it through the comms hub with the credential use cases (`core.credentials`) and those of
`ppmid.common` (CS03C join to its ESME, CS08 firmware version); it raises CS09 when it activates an image.

On the HAN the ESME controls it with the ZSE Demand Response and Load Control cluster (0x0701), which the GBZ
codec does not declare (it is not a GBCS remote-party payload), so the three fixed layouts are read here:

* Load Control Event (server→client 0x00, 23 bytes): issuer event id u32, device class u16, enrolment group u8,
  start time UTCTime (0 = now), duration u16 minutes, criticality u8, cooling/heating offsets u8, set points
  i16, average load adjustment i8, duty cycle u8 (0xFF: not used), event control u8;
* Cancel Load Control Event (0x01): issuer event id u32, device class u16, group u8, cancel control u8,
  effective time UTCTime (0 = now); Cancel All Load Control Events (0x02): cancel control u8.

The switch (`state["hcalcs"]["switch"]`) is simple: an event's duty cycle 0–49 % (or 0xFF, plain curtailment)
turns the load off for its duration, 50–100 % turns it on; at the end it returns to its default (on)::

    on ──event starts (duty < 50 or 0xFF)──▶ off ──event ends / cancelled──▶ on
    off ─event starts (duty ≥ 50)──────────▶ on ──event ends / cancelled──▶ off (when the default is off)

Every switching is logged (`state["hcalcs"]["log"]`) and reported to the ESME with Report Event Status
(client→server 0x00: 0x01 received, 0x02 started, 0x03 completed, 0x06 cancelled), returned as `zse_command`
frames (one-component GBZ payloads). `request_control` sends Get Scheduled Events (0x01), the message whose
receipt the ESME logs as HECS01. Start and end are scheduled work (`Device.schedule`), run by `tick`.
"""
from __future__ import annotations

import struct
from typing import ClassVar

from protocols.errors import DecodeError
from protocols.security.eui import as_eui, eui_hex
from protocols.zigbee.gbz import EPOCH_2000, decode_gbz, encode_gbz

from firmware_emu.core.device import Emitted
from firmware_emu.core.modular import ModularDevice, on_timer
from firmware_emu.ppmid import common

__all__ = ["Hcalcs", "DRLC", "LOAD_CONTROL_EVENT", "EVENT_STATUS"]

DRLC = 0x0701
LOAD_CONTROL_EVENT, CANCEL_EVENT, CANCEL_ALL = 0x00, 0x01, 0x02
REPORT_EVENT_STATUS, GET_SCHEDULED_EVENTS = 0x00, 0x01
EVENT_STATUS = {"received": 0x01, "started": 0x02, "completed": 0x03, "cancelled": 0x06}
_EVENT = struct.Struct("<IHBIHBBBhhbBB")          # Load Control Event, 23 bytes
_CANCEL = struct.Struct("<IHBBI")                 # Cancel Load Control Event, 12 bytes
SWITCH_TIMER = "hcalcs_event"
LOG_DEPTH = 100


def _utc2000(now: float) -> int:
    return max(0, int(now) - EPOCH_2000)


class Hcalcs(ModularDevice):
    DEVICE_TYPE: ClassVar[str] = "HCALCS"
    ALERT_COUNTER_START: ClassVar[int] = 6000
    MODULES: ClassVar[tuple[str, ...]] = ("firmware_emu.ppmid.common",)

    def initial_state(self, anchors, now, profile):
        state = super().initial_state(anchors, now, profile)
        default = "off" if profile.get("default_load") == "off" else "on"
        state["meters"] = {}
        state["hcalcs"] = {"default": default, "switch": {"state": default, "since": now, "event": None},
                           "events": {}, "log": [], "zcl_sequence": 0}
        return state

    # -- the switch ------------------------------------------------------------------------------------------------

    @property
    def load_state(self) -> str:
        """"on" or "off": the auxiliary load's relay."""
        return self.state["hcalcs"]["switch"]["state"]

    def switch(self, to: str, now: float, source: str, event: int | None = None) -> None:
        h = self.state["hcalcs"]
        if h["switch"]["state"] != to:
            h["switch"] = {"state": to, "since": now, "event": event}
            h["log"].append({"t": now, "state": to, "source": source, "event": event})
            del h["log"][:-LOG_DEPTH]
            self.event("switch", to=to, source=source, issuer_event_id=event)

    # -- HAN -----------------------------------------------------------------------------------------------------

    def _esme(self) -> str | None:
        joined = common.meter(self, "ESME")
        return joined[0] if joined else None

    def _zse(self, command_id: int, raw: bytes, to: str) -> Emitted:
        h = self.state["hcalcs"]
        seq = h["zcl_sequence"]
        h["zcl_sequence"] = (seq + 1) & 0xFF
        comp = {"extended_header_control": {"last": True}, "cluster": DRLC,
                "zcl": {"frame_control": {"frame_type": "cluster", "direction": "client_to_server"},
                        "sequence_number": seq, "command_id": command_id, "payload": {"raw": raw.hex().upper()}}}
        return Emitted("zse_command", encode_gbz({"components": [comp]}), 0, seq, to)

    def _report(self, event_id: int, status: str, now: float, duty: int = 0xFF, to: str | None = None) -> list:
        to = to or self._esme()
        if to is None:
            return []
        raw = struct.pack("<IBIBHHbBBB", event_id, EVENT_STATUS[status], _utc2000(now), 0, 0x8000, 0x8000, -128,
                          duty, 0, 0) + bytes(42)     # no signature (type 0): 42 zero octets
        return [self._zse(REPORT_EVENT_STATUS, raw, to)]

    def request_control(self, now: float) -> list[Emitted]:
        """Get Scheduled Events to the ESME (logged there as HECS01): all events from now on."""
        self.now = now
        to = self._esme()
        if to is None:
            return []
        return [self._zse(GET_SCHEDULED_EVENTS, struct.pack("<IBI", _utc2000(now), 0, 0), to)]

    def receive_zse(self, gbz: bytes, meter, now: float) -> list[Emitted]:
        """DRLC commands from the joined ESME (module docstring); anything else is ignored."""
        out = self._run_due(now)
        self.now = now
        sender = eui_hex(as_eui(meter))
        if common.meter(self, eui=sender) is None:
            self.event("han_dropped", reason="not joined", meter=sender)
            return out
        try:
            components = decode_gbz(gbz, cra_flag="command")["components"]
        except DecodeError as e:
            self.event("han_dropped", reason="malformed", detail=str(e))
            return out
        for comp in components:
            zcl = comp.get("zcl") or {}
            raw = bytes.fromhex((zcl.get("payload") or {}).get("raw", ""))
            if comp.get("cluster") != DRLC or zcl.get("frame_control", {}).get("frame_type") != "cluster":
                continue
            cid = zcl.get("command_id")
            if cid == LOAD_CONTROL_EVENT and len(raw) >= _EVENT.size:
                out += self._load_control_event(_EVENT.unpack_from(raw), now, sender)
            elif cid == CANCEL_EVENT and len(raw) >= _CANCEL.size:
                event_id, _, _, _, effective = _CANCEL.unpack_from(raw)
                out += self._cancel([event_id], effective, now, sender)
            elif cid == CANCEL_ALL:
                out += self._cancel(list(map(int, self.state["hcalcs"]["events"])), 0, now, sender)
        return out

    def _load_control_event(self, fields: tuple, now: float, sender: str) -> list[Emitted]:
        event_id, _, _, start, minutes, _, _, _, _, _, _, duty, _ = fields
        begin = now if start == 0 else float(start + EPOCH_2000)
        end = begin + 60 * minutes
        target = "on" if duty != 0xFF and duty >= 50 else "off"
        self.state["hcalcs"]["events"][str(event_id)] = {"start": begin, "end": end, "load": target, "duty": duty,
                                                         "from": sender}
        self.unschedule(lambda s: s["kind"] == SWITCH_TIMER and s["data"]["event"] == event_id)
        self.schedule(begin, SWITCH_TIMER, {"event": event_id, "phase": "start"})
        self.schedule(end, SWITCH_TIMER, {"event": event_id, "phase": "end"})
        return self._report(event_id, "received", now, duty, sender) + self._run_due(now)

    def _cancel(self, event_ids: list[int], effective: int, now: float, sender: str) -> list[Emitted]:
        at = now if effective == 0 else float(effective + EPOCH_2000)
        out = []
        for event_id in event_ids:
            if str(event_id) not in self.state["hcalcs"]["events"]:
                continue
            self.unschedule(lambda s, e=event_id: s["kind"] == SWITCH_TIMER and s["data"]["event"] == e)
            self.schedule(at, SWITCH_TIMER, {"event": event_id, "phase": "cancel"})
        return out + self._run_due(now)

    def prepare(self, condition: str, **detail) -> None:
        if not common.prepare(self, condition, detail):
            super().prepare(condition, **detail)

    def stimulate(self, message_code, alert_code, now, **detail):
        if message_code == common.CS09_MESSAGE_CODE:
            keep = {k: v for k, v in detail.items() if k in ("image_hash", "version")}
            return self._run_due(now) + common.activate_image(self, now, **keep)
        return super().stimulate(message_code, alert_code, now, **detail)

    def alert_content(self, alert_code, counter, now, extra) -> bytes:
        return common.gbz_alert_content(alert_code, now)


@on_timer(Hcalcs, SWITCH_TIMER)
def _event_phase(device: Hcalcs, data: dict, at: float) -> list[Emitted]:
    """A load control event starts (switch to its state), ends or is cancelled (back to the default)."""
    h = device.state["hcalcs"]
    event_id = data["event"]
    event = h["events"].get(str(event_id))
    if event is None:
        return []
    if data["phase"] == "start":
        device.switch(event["load"], at, "load_control_event", event_id)
        return device._report(event_id, "started", at, event["duty"], event["from"])
    del h["events"][str(event_id)]
    if h["switch"]["event"] == event_id:
        device.switch(h["default"], at, "event_" + ("completed" if data["phase"] == "end" else "cancelled"))
    device.unschedule(lambda s: s["kind"] == SWITCH_TIMER and s["data"]["event"] == event_id)
    status = "completed" if data["phase"] == "end" else "cancelled"
    return device._report(event_id, status, at, event["duty"], event["from"])
