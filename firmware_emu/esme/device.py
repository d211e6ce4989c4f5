"""The electricity meter (ESME): a GBCS device whose remote-party payloads are DLMS/COSEM or ASN.1.

Theory of operation
-------------------
An `Esme` is a `DlmsDevice` (core/dlms_device.py, a `ModularDevice`): named use-case handlers first (the credential use cases of
`core.credentials`, shared by every device type), then the payload family:

* DLMS Access-Requests go to the ESME's `CosemServer`, whose objects come from the family modules listed in
  `FAMILY_MODULES` (each has `register(server, catalogue)`), with the appendix-typed stored attributes as the
  fallback. Future-dated-capable use cases first pass through `firmware_emu.esme.future`, which decides
  whether the command executes now or is scheduled (then the response only says "accepted" and the outcome is an
  8F66/8F67 alert at the execution time).
* ASN.1 payloads (CS02/CS03/CS04/CS06/CS07…) are served by the handlers registered for their use-case names
  (`@handles(ModularDevice, "CS06")` in `core.credentials`).

A payload that does not decode after the command passed its security checks is answered by the 0x8F1E alert
("integrity check of content or format of command failed") and changes nothing.
"""
from __future__ import annotations

import logging
from typing import ClassVar

from firmware_emu.core.cosem import dlms_alert_content
from firmware_emu.core.dlms_device import FIRMWARE_VERSION, DlmsDevice

log = logging.getLogger(__name__)

__all__ = ["Esme", "FAMILY_MODULES", "FIRMWARE_VERSION"]

#: Modules that add COSEM objects to the ESME (each defines `register(server, catalogue)`).
FAMILY_MODULES: tuple[str, ...] = (
    "firmware_emu.esme.metering",
    "firmware_emu.esme.tariff",
    "firmware_emu.esme.prepayment",
    "firmware_emu.esme.supply",
)


class Esme(DlmsDevice):
    DEVICE_TYPE: ClassVar[str] = "ESME"
    ALERT_COUNTER_START: ClassVar[int] = 2000
    COSEM_MODULES: ClassVar[tuple[str, ...]] = FAMILY_MODULES
    MODULES: ClassVar[tuple[str, ...]] = ("firmware_emu.esme.future", "firmware_emu.esme.events")

    def initial_state(self, anchors, now, profile):
        state = super().initial_state(anchors, now, profile)
        state["esme"] = {"commissioned": False}
        return state

    def plan(self, ctx, request):
        """Future-dated-capable use cases may schedule their instructions (`esme.future`)."""
        if ctx.cmd is not None and ctx.cmd.entry.future_dated_capable:
            from firmware_emu.esme import future
            return future.plan(self, ctx, request)
        return None

    def stimulate(self, message_code, alert_code, now, **detail):
        from firmware_emu.esme import events
        self.now = now
        return self._run_due(now) + events.stimulate(self, message_code, alert_code, now, **detail)

    def device_time(self, now: float) -> float:
        """The meter's own clock: simulated time plus the offset ECS70 and clock adjustments leave."""
        return now + self.state["esme"].get("clock_offset", 0)

    def response_date_time(self, now: float) -> dict:
        return super().response_date_time(self.device_time(now))

    def alert_content(self, alert_code, counter, now, extra) -> bytes:
        return dlms_alert_content(alert_code, counter, self.device_time(now), extra)

    def on_tick(self, now: float):
        """Consumption drains prepayment credit (thresholds, alerts, disablement)."""
        from firmware_emu.esme import prepayment
        return prepayment.on_consumption(self, now) or []
