"""The gas meter (GSME): a GBCS device whose remote-party payloads are GBZ (ZigBee SE ZCL) or ASN.1.

Theory of operation
-------------------
A `Gsme` is a `ModularDevice` (core/modular.py): named use-case handlers first (the credential use cases of
`core.credentials`, shared by every device type), then the payload family. GBZ commands go to the GSME's
`ZclServer` (core/zcl.py), whose getters and cluster-command handlers come from the modules in `MODULES`: each
module's `setup(cls)` registers on `cls.server()`. Attributes nobody registered are stored values typed and
defaulted from the appendix (`core/zcl_catalogue.json`).

    command ──▶ security checks ──▶ named handler? ──▶ GBZ: ZclServer.serve ──▶ Reply (date-time per §1.3)
                                                         └─ undecodable / not served ──▶ 0x8F1E alert

State (`state["gsme"]`): `clock_offset` (device time = now + offset, set by clock use cases in phase 2) and
`clock_reliable`: whether the GSME's clock has been synchronised (GCS28). GSME reads that carry the device
date-time (GCS13a/b/c, GCS14, GCS60a) encode that reliability in the DLMS clock status (brief §1.3, pitfall 12):
00 reliable, 02 "doubtful" (the GSME answering from an unsynchronised clock); every other response that carries
a date-time (future-dated-capable commands, CS01b) has status FF, as RTDS does. ZCL attributes live in
`state["zcl"]`.

Phase-2 modules (`tariff`, `prepayment`, `supply`, `events`) may not exist yet: `optional_import` makes a
missing one harmless; they register handlers on the same server, and future-dated execution plugs into
`ZclServer.plan_future`.
"""
from __future__ import annotations

import logging
from typing import ClassVar

from firmware_emu.core.device import RESPONSE_DATE_TIME_USE_CASES, Reply
from firmware_emu.core.modular import ModularDevice
from firmware_emu.core.security import InboundCommand
from firmware_emu.core.zcl import ZclCatalogue, ZclContext, ZclServer, gbz_alert_content

log = logging.getLogger(__name__)

__all__ = ["Gsme", "CLOCK_RELIABLE", "CLOCK_DOUBTFUL", "CLOCK_NOT_SPECIFIED"]

#: DLMS clock status bytes of the response date-time (brief §1.3).
CLOCK_RELIABLE, CLOCK_DOUBTFUL, CLOCK_NOT_SPECIFIED = 0x00, 0x02, 0xFF


class Gsme(ModularDevice):
    DEVICE_TYPE: ClassVar[str] = "GSME"
    ALERT_COUNTER_START: ClassVar[int] = 3000
    MODULES: ClassVar[tuple[str, ...]] = (
        "firmware_emu.gsme.metering",
        "firmware_emu.gsme.tariff",
        "firmware_emu.gsme.prepayment",
        "firmware_emu.gsme.supply",
        "firmware_emu.gsme.events",
    )
    _server: ClassVar[ZclServer | None] = None

    @classmethod
    def server(cls) -> ZclServer:
        """The ZCL object model, built once per process and class; modules fill it in their `setup(cls)`."""
        if cls.__dict__.get("_server") is None:
            cls._server = ZclServer(ZclCatalogue.for_device(cls.DEVICE_TYPE))
        return cls._server

    def __init__(self, keys, state=None, **kw):
        self._use_case: str | None = None
        super().__init__(keys, state, **kw)

    def initial_state(self, anchors, now, profile):
        state = super().initial_state(anchors, now, profile)
        state["zcl"] = {"attributes": {}, "commands": {}}
        state["gsme"] = {"clock_offset": 0, "clock_reliable": False}
        return state

    # -- commands ------------------------------------------------------------------------------------------------

    def handle(self, cmd: InboundCommand, now: float) -> Reply:
        self._use_case = cmd.entry.name
        return super().handle(cmd, now)

    def handle_family(self, cmd: InboundCommand, family: str, now: float) -> Reply | None:
        return self.handle_gbz(cmd, now) if family == "gbz" else None

    def handle_gbz(self, cmd: InboundCommand, now: float) -> Reply:
        ctx = ZclContext(self, now, cmd)
        content = self.server().serve(ctx, cmd.content, base=cmd.content_offset)
        return Reply(content, alerts=ctx.scratch.get("alerts", []),
                     other_information=ctx.scratch.get("other_information"))

    # -- time ----------------------------------------------------------------------------------------------------

    def device_time(self, now: float) -> float:
        """The meter's own clock: simulated time plus the offset clock use cases leave."""
        return now + self.state["gsme"].get("clock_offset", 0)

    def clock_status(self) -> int:
        """The clock status a response date-time carries for the use case being answered (module docstring)."""
        if self._use_case in RESPONSE_DATE_TIME_USE_CASES:
            return CLOCK_RELIABLE if self.state["gsme"].get("clock_reliable") else CLOCK_DOUBTFUL
        return CLOCK_NOT_SPECIFIED

    def response_date_time(self, now: float) -> dict:
        from firmware_emu.core.clock import dlms_datetime_json
        return dlms_datetime_json(self.device_time(now), clock_status=self.clock_status())

    # -- alerts --------------------------------------------------------------------------------------------------

    def alert_content(self, alert_code, counter, now, extra) -> bytes:
        """GBZ alert payload: `extra` is a list of components, or a dict holding one special body form."""
        t = self.device_time(now)
        if isinstance(extra, dict):
            return gbz_alert_content(alert_code, t, **extra)
        return gbz_alert_content(alert_code, t, *(extra or ()))
