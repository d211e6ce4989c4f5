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

The family modules register on the same server: `metering` (reads, snapshots, sampling), `tariff` (calendars,
price), `prepayment` (top-ups, payment mode, credit settings, and the PPMID's HAN commands), `supply` (the
valve), `events` (logs, alerts it raises by itself, clock GCS28, battery and wakes, a lived past). Future-dated
GBZ instructions plug into `ZclServer.plan_future` (`core.zcl.plan_future_dated`, 8F66/8F67 on 00CD).

    receive ──▶ PCS01/PCS02 from a PPMID in the device log? ──yes──▶ prepayment.receive_han (device-to-device MAC)
               └─no──▶ the core's checks ──▶ handle (above)
    tick ──▶ due future-dated work ──▶ gas drawing prepayment credit ──▶ battery paying for the wakes

`prepare("lived", since=…, days=…)` gives a fresh device an ordinary past up to now (`events.live`): what RTDS
reads of logs, snapshots and calendars presuppose. The sleepy end device: `wake_interval` (profile, default
30 min), `next_wake(now)`, `battery()`.
"""
from __future__ import annotations

import logging
from typing import ClassVar

from firmware_emu.core.device import RESPONSE_DATE_TIME_USE_CASES, Emitted, Reply
from firmware_emu.core.modular import ModularDevice, on_timer
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

    @classmethod
    def load(cls) -> None:
        super().load()
        server = cls.server()
        if server.plan_future is None:       # future-dated GBZ instructions (GCS01a/b, GCS02/03/05)
            from firmware_emu.core import zcl
            server.plan_future = zcl.plan_future_dated
            on_timer(cls, zcl.FUTURE_DATED_KIND)(zcl.execute_future_dated)

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

    def receive(self, frame: bytes, now: float) -> list[Emitted]:
        """Remote-party commands as every device; PCS01/PCS02 from a joined PPMID through `han` (HAN-only
        commands MAC'd with the device-to-device key, which the core's remote-party checks do not know)."""
        from firmware_emu.gsme import events, prepayment
        events.radio_used(self)
        if prepayment.is_han_command(self, frame):
            self.now = now
            return self._run_due(now) + prepayment.receive_han(self, frame, now)
        return super().receive(frame, now)

    def on_tick(self, now: float) -> list[Emitted]:
        """Gas drawing prepayment credit, the battery paying for the wakes."""
        from firmware_emu.gsme import events, prepayment
        return prepayment.on_consumption(self, now) + events.battery_tick(self, now)

    def stimulate(self, message_code, alert_code, now, **detail):
        from firmware_emu.gsme import events
        self.now = now
        return self._run_due(now) + events.stimulate(self, message_code, alert_code, now, **detail)

    def prepare(self, condition: str, **detail) -> None:
        """"lived": the device has lived its ordinary life since `since` (default `days`=62 days before now)
        up to now (`events.live`); other conditions as every device."""
        if condition == "lived":
            from firmware_emu.gsme import events
            until = float(detail.get("until", self.now))
            since = float(detail.get("since", until - float(detail.get("days", 62)) * 86400))
            events.live(self, since, until)
            return
        super().prepare(condition, **detail)

    # -- the sleepy end device ---------------------------------------------------------------------------------

    @property
    def wake_interval(self) -> float:
        """Seconds between wakes (profile "wake_interval", default 30 min): when the GSME polls the hub."""
        from firmware_emu.gsme import events
        return events.wake_interval(self)

    def next_wake(self, now: float) -> float:
        from firmware_emu.gsme import events
        return events.next_wake(self, now)

    def battery(self) -> dict:
        from firmware_emu.gsme import events
        return events.battery(self)

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
        if isinstance(extra, dict) and "encrypted_components" in extra:   # GCS53: keyed with this alert's counter
            from firmware_emu.core.zcl import encrypt_component
            to = extra.get("recipient") or self.alert_recipient(alert_code, 0)
            comps = [encrypt_component(self.keys, c, to, counter) for c in extra["encrypted_components"]]
            return gbz_alert_content(alert_code, t, *comps)
        if isinstance(extra, dict):
            return gbz_alert_content(alert_code, t, **extra)
        return gbz_alert_content(alert_code, t, *(extra or ()))
