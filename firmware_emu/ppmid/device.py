"""The PPMID: the in-home display and keypad of a prepayment customer, a HAN device joined to the meters.

Theory of operation
-------------------
A `Ppmid` is a `ModularDevice` (core/modular.py). Remote parties reach it only through the comms hub with ASN.1
use cases: the credential ones of `core.credentials` (CS02*, CS06), and those of `ppmid.common` (CS03C join to
a meter, CS08 read firmware version). By itself it raises CS09 (0x012B, alert 0x8F8B) when it activates a
firmware image (`stimulate(0x012B, ...)` / `activate_image`), and GBZ-form alerts for security rejections.

Its own life is on the HAN (`ppmid.han`): the customer's keypad actions become PCS01/PCS02 GBCS commands to a
GSME (device-to-device MAC) or PECS01–03 ZSE commands to an ESME; the meters' answers update the display::

    factory ──CS03C (meter + its KA certificate)──▶ joined ──keypad──▶ command pending ──answer──▶ display
                                                      ▲                                            │
                                                      └────────────────────────────────────────────┘

`receive(frame)` takes GBCS commands (the security checks of `core.security`) and, besides, the GBCS responses
of the GSME to the PPMID's own PCS commands (`han.receive_response`). State: the base device state plus
`meters` (joined meters), `han` (pending HAN commands, ZCL sequence), `display` (what the screen shows, per
meter). The PPMID's alert counter is also the originator counter of its PCS commands (one counter per device).
"""
from __future__ import annotations

from typing import ClassVar

from protocols.errors import DecodeError
from protocols.gbcs.message import split_payload

from firmware_emu.core.device import Emitted
from firmware_emu.core.modular import ModularDevice
from firmware_emu.ppmid import common, han

__all__ = ["Ppmid"]


class Ppmid(ModularDevice):
    DEVICE_TYPE: ClassVar[str] = "PPMID"
    ALERT_COUNTER_START: ClassVar[int] = 5000
    MODULES: ClassVar[tuple[str, ...]] = ("firmware_emu.ppmid.common",)

    def initial_state(self, anchors, now, profile):
        state = super().initial_state(anchors, now, profile)
        state.update(meters={}, han={"pending": {}, "zcl_sequence": 0}, display={})
        return state

    def receive(self, frame: bytes, now: float) -> list[Emitted]:
        """GBCS commands (base class), or a meter's GBCS response to one of the PPMID's PCS commands."""
        try:
            env, _, _ = split_payload(frame)
            is_response = env["grouping_header"]["cra_flag"] == "response"
        except (DecodeError, KeyError):
            is_response = False
        if is_response:
            self.now = now
            return self._run_due(now) + han.receive_response(self, frame, now)
        return super().receive(frame, now)

    # -- the customer at the keypad (frames for the premises to deliver) -----------------------------------------

    def enter_utrn(self, utrn: str, now: float, meter=None) -> list[Emitted]:
        return han.enter_utrn(self, utrn, now, meter)

    def select_emergency_credit(self, now: float, meter=None) -> list[Emitted]:
        return han.select_emergency_credit(self, now, meter)

    def enable_supply(self, now: float, meter=None) -> list[Emitted]:
        return han.enable_supply(self, now, meter)

    def poll(self, now: float) -> list[Emitted]:
        return han.poll(self, now)

    def receive_zse(self, gbz: bytes, meter, now: float) -> list[Emitted]:
        return han.receive_zse(self, gbz, meter, now)

    def display(self, meter=None) -> dict:
        return han.display(self, meter)

    # -- alerts ------------------------------------------------------------------------------------------------------

    def activate_image(self, now: float, **detail) -> list[Emitted]:
        """A firmware image distributed by the comms hub is activated: the CS09 alert."""
        return self._run_due(now) + common.activate_image(self, now, **detail)

    def prepare(self, condition: str, **detail) -> None:
        if not common.prepare(self, condition, detail):
            super().prepare(condition, **detail)

    def stimulate(self, message_code, alert_code, now, **detail):
        if message_code == common.CS09_MESSAGE_CODE:
            keep = {k: v for k, v in detail.items() if k in ("image_hash", "version")}
            return self.activate_image(now, **keep)
        return super().stimulate(message_code, alert_code, now, **detail)

    def alert_content(self, alert_code, counter, now, extra) -> bytes:
        return common.gbz_alert_content(alert_code, now)
