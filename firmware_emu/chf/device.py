"""The Communications Hub Function (CHF): the WAN-facing half of a comms hub, a DLMS/COSEM device.

Theory of operation
-------------------
A `Chf` is a `DlmsDevice` (core/dlms_device.py, a `ModularDevice`), built like the ESME:

* DLMS Access-Requests (CCS01–CCS07, ECS26i/n, ECS35c/d, DBCH01–05) go to the CHF's `CosemServer`, whose
  objects come from `FAMILY_MODULES` (`firmware_emu.chf.network`: ZigBee network control and the CHF Device
  Log, identity, sub-GHz radio, event/security/channel logs) over the CHF part of the appendix catalogue;
* ASN.1 credential use cases (CS02/CS03/CS04/CS06/CS07) are the shared handlers of `core.credentials`.

Almost every CHF command comes from the ACB on behalf of a supplementary remote party (18-byte
other-information); the core routes and answers them (response to the ACB, other-information echoed).
The CHF's own alerts (CS14, DBCH06–11, CCS08) go to the ACB (brief §6): `alert_recipient`.

    command ─▶ core checks ─▶ handler (credentials) | COSEM server (network, identity, sub-GHz, logs)
                                                        └─ device-log change ─▶ schedule CS14 ─▶ tick ─▶ 8F12
    stimulate(code) ─▶ network.stimulate ─▶ CS14 / DBCHxx / CCS08 alert

The WAN ↔ HAN routing role is `firmware_emu.chf.routing.HanRouter`, which a premises object drives; it only
reads and updates this device's log (`network.logged`, `han_join`, `han_activity`).
"""
from __future__ import annotations

import logging
from typing import ClassVar

from protocols.errors import DecodeError
from protocols.gbcs.message import split_payload
from protocols.security.keystore import Role

from firmware_emu.core.dlms_device import FIRMWARE_VERSION, DlmsDevice

log = logging.getLogger(__name__)

__all__ = ["Chf", "FAMILY_MODULES", "FIRMWARE_VERSION"]

#: Modules that add COSEM objects to the CHF (each defines `register(server, catalogue)`).
FAMILY_MODULES: tuple[str, ...] = ("firmware_emu.chf.network",)


class Chf(DlmsDevice):
    DEVICE_TYPE: ClassVar[str] = "CHF"
    ALERT_COUNTER_START: ClassVar[int] = 4000
    COSEM_MODULES: ClassVar[tuple[str, ...]] = FAMILY_MODULES

    def initial_state(self, anchors, now, profile):
        state = super().initial_state(anchors, now, profile)
        from firmware_emu.chf import network
        state["chf"] = network.initial_chf_state(state["eui"])
        return state

    def alert_recipient(self, alert_code, message_code):
        """Hub alerts go to the ACB (brief §6)."""
        anchors = self.anchors
        return anchors.get(Role.ACCESS_CONTROL_BROKER) or super().alert_recipient(alert_code, message_code)

    def stimulate(self, message_code, alert_code, now, **detail):
        from firmware_emu.chf import network
        self.now = now
        return self._run_due(now) + network.stimulate(self, message_code, alert_code, now, **detail)

    def alert_content(self, alert_code, counter, now, extra) -> bytes:
        from firmware_emu.chf import network
        return network.alert_content(self, alert_code, counter, now, extra)

    def prepare(self, condition: str, **detail) -> None:
        """`device_joined`: the other device is in the CHF Device Log and on the HAN."""
        if condition == "device_joined":
            from firmware_emu.chf import network
            from protocols.security.eui import eui_hex, as_eui
            s = network.chf_state(self)
            eui = eui_hex(as_eui(detail["other_device"]))
            if network.logged(self, eui) is None:
                s["device_log"].append({"eui": eui, "device_type": detail.get("register_type"),
                                        "install_code": "00" * 16, "hashed_link_key": "", "joined": False,
                                        "last_communication": None, "successes": 0, "failures": 0})
            s["join"].update(enabled_at=self.now, timeout=max(s["join"]["timeout"], 60))
            network.han_join(self, eui, self.now)
            self.unschedule(lambda x: x["kind"] == "chf_cs14")
        super().prepare(condition, **detail)


def _message_code(frame: bytes) -> int | None:
    try:
        env, _, _ = split_payload(frame)
        return int(env["grouping_header"]["other_information"]["message_code"], 16)
    except (DecodeError, KeyError, TypeError, ValueError):
        return None
