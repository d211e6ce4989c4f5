"""The Gas Proxy Function (GPF): the half of the comms hub that stands in for the sleepy gas meter (GSME).

Theory of operation
-------------------
A `Gpf` is a `ModularDevice` (core/modular.py) with a GBZ/ZCL server like the GSME's: the SAME cluster
implementations (`firmware_emu.gsme.metering`, and the GSME's tariff/prepayment modules when they exist) are
registered on the GPF's own `MirrorServer` (gpf/mirror.py) over the GPF part of the appendix catalogue, so the
GPF computes what the GSME would from the same seeded gas model and its own state. Mirrored attributes (what the
GSME pushed at its last wake) are answered from the mirror. The GPF's own modules: `gpf.logs` (daily
consumption log GCS61, device log backup GCS62 / restore GCS59). The credential use cases (CS02–CS07) are the
shared handlers of `core.credentials`. State: `state["gpf"]` (clock, mirror: gpf/mirror.py), `state["zcl"]`
(the GPF's own attributes), `state["gsme"]` (what the reused GSME modules keep: prepayment, snapshots...),
`state["credentials"]["device_log"]` (the GPF device log).

    command ─▶ core checks ─▶ named handler (credentials, CS02b handover, GCS59, joins + GCS62 backup)
                              └─ GBZ ─▶ MirrorServer.serve ─▶ Reply; a meter read (GCS13a/b/c, GCS14, GCS60a)
                                        carries the date-time whose clock status says where the answer came
                                        from (mirror.reliability: 00 GPF, 04 GSME's data, 02 unreliable)

Unknown remote party (URP) reads routed by the ACB with the party's KA certificate (GCS16b): the response is
encrypted for that certificate with a counter of the GPF's own (the supplementary originator counter, taken
from the alert counter) which the response's other-information carries (brief §1.4, §3.4).

The GPF and the GSME exchange no remote-party commands: commands for the gas meter are addressed to the GSME
and queued for its next wake by the CHF (`firmware_emu.chf.routing.HanRouter`); the GPF only receives the
GSME's data (`update_mirror`), which the premises delivers when the GSME wakes.

Test preconditions (`prepare`), documented for the conformance scenarios of RTDS:

* "mirror_fresh" (RELIABLE_GPF): the hub clock is synchronised and the GSME has just pushed its data;
* "mirror_from_gsme" (RELIABLE_GSME): the GSME has just pushed its data on its reliable clock, but the hub
  clock is not yet synchronised, so the GPF answers with the GSME's data on the GSME's clock base;
* "awaiting_handover": a hub not yet handed over: its supplier and network operator cells still hold the
  ACB, which authorises their first replacement (CS02b supplierBySupplier / NOByNO "Handover", signed by
  the ACB as the party in the cell the mode names);
* "device_joined" (shared): another device is in the GPF device log.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import ClassVar

from protocols.security.keystore import Role

from firmware_emu.core.device import RESPONSE_DATE_TIME_USE_CASES, Reply
from firmware_emu.core.modular import ModularDevice
from firmware_emu.core.security import InboundCommand
from firmware_emu.core.zcl import ZclCatalogue, ZclContext, gbz_alert_content
from firmware_emu.gpf import mirror

log = logging.getLogger(__name__)

__all__ = ["Gpf"]

#: Trust-anchor cells a comms hub holds for the ACB until the DCC hands it over.
HANDOVER_ROLES = (Role.SUPPLIER, Role.NETWORK_OPERATOR)

#: Use cases only a GPF takes whose registry entry names another target (no target table in the appendix).
class Gpf(ModularDevice):
    DEVICE_TYPE: ClassVar[str] = "GPF"
    ALERT_COUNTER_START: ClassVar[int] = 1000
    MODULES: ClassVar[tuple[str, ...]] = (
        "firmware_emu.gsme.metering",
        "firmware_emu.gsme.tariff",
        "firmware_emu.gsme.prepayment",
        "firmware_emu.gpf.logs",
    )
    _server: ClassVar[mirror.MirrorServer | None] = None

    @classmethod
    def server(cls) -> mirror.MirrorServer:
        """The ZCL object model, built once per process and class; modules fill it in their `setup(cls)`."""
        if cls.__dict__.get("_server") is None:
            cls._server = mirror.MirrorServer(ZclCatalogue.for_device(cls.DEVICE_TYPE))
        return cls._server

    def __init__(self, keys, state=None, **kw):
        self._read: tuple[str | None, int, float] = (None, mirror.NOT_SPECIFIED, 0.0)
        super().__init__(keys, state, **kw)

    def initial_state(self, anchors, now, profile):
        state = super().initial_state(anchors, now, profile)
        state["zcl"] = {"attributes": {}, "commands": {}}
        state["gsme"] = {"clock_offset": 0, "clock_reliable": True}   # what the GSME modules read
        state["gpf"] = mirror.initial_gpf_state(profile)
        return state

    # -- the mirror ----------------------------------------------------------------------------------------------

    def update_mirror(self, attrs: dict, at: float, *, gsme_clock_reliable: bool = True) -> None:
        """The GSME's data arrived over the HAN (gpf/mirror.py)."""
        mirror.update_mirror(self, attrs, at, gsme_clock_reliable=gsme_clock_reliable)

    def prepare(self, condition: str, **detail) -> None:
        """Test preconditions (module docstring)."""
        g = self.state["gpf"]
        if condition in ("mirror_fresh", "mirror_from_gsme"):
            g["clock_reliable"] = condition == "mirror_fresh"
            at = detail.get("at", self.now)
            self.update_mirror(mirror.gsme_report(self, at), at)
            return
        if condition == "awaiting_handover":
            acb = self.anchors.get(Role.ACCESS_CONTROL_BROKER)
            if acb is None:
                raise NotImplementedError("no ACB anchor to hold the supplier and network operator cells")
            for role in HANDOVER_ROLES:
                self.set_anchor(role, acb)
            self.event("awaiting_handover")
            return
        super().prepare(condition, **detail)

    # -- commands ------------------------------------------------------------------------------------------------

    def handle(self, cmd: InboundCommand, now: float) -> Reply:
        self._read = (cmd.entry.name, mirror.NOT_SPECIFIED, now)
        if cmd.entry.name in RESPONSE_DATE_TIME_USE_CASES:
            status, at = mirror.reliability(self, now)
            self._read = (cmd.entry.name, status, at)
        return super().handle(cmd, now)

    def handle_family(self, cmd: InboundCommand, family: str, now: float) -> Reply | None:
        return self.handle_gbz(cmd, now) if family == "gbz" else None

    def handle_gbz(self, cmd: InboundCommand, now: float) -> Reply:
        oi = cmd.other_information
        out_oi = None
        if cmd.role is None and oi.get("supplementary_remote_party_ka_certificate"):
            # URP: the response is keyed with a counter of the GPF's own, carried in the other-information
            counter = self.next_alert_counter()
            out_oi = {k: v for k, v in oi.items()
                      if k not in ("use_case", "supplementary_remote_party_ka_certificate")}
            out_oi["supplementary_originator_counter"] = counter
            cmd = dataclasses.replace(cmd, header={**cmd.header, "other_information": {
                **oi, "supplementary_originator_counter": counter}})
        ctx = ZclContext(self, now, cmd)
        content = self.server().serve(ctx, cmd.content, base=cmd.content_offset)
        return Reply(content, alerts=ctx.scratch.get("alerts", []),
                     other_information=ctx.scratch.get("other_information") or out_oi)

    # -- time ----------------------------------------------------------------------------------------------------

    def device_time(self, now: float) -> float:
        """The hub clock (the GSME modules ask for the device's time)."""
        return now

    def response_date_time(self, now: float) -> dict:
        """Meter reads: the reliability of the answer (mirror.reliability); other responses: FF, as RTDS."""
        from firmware_emu.core.clock import dlms_datetime_json
        name, status, at = self._read
        if name in RESPONSE_DATE_TIME_USE_CASES:
            return dlms_datetime_json(at, clock_status=status)
        return dlms_datetime_json(now, clock_status=mirror.NOT_SPECIFIED)

    # -- alerts --------------------------------------------------------------------------------------------------

    def alert_recipient(self, alert_code, message_code):
        """The device-log backup (GCS62) goes to the ACB (brief §6); the rest as any meter's."""
        from firmware_emu.gpf.logs import GCS62
        if message_code == GCS62:
            acb = self.anchors.get(Role.ACCESS_CONTROL_BROKER)
            if acb is not None:
                return acb
        return super().alert_recipient(alert_code, message_code)

    def alert_content(self, alert_code, counter, now, extra) -> bytes:
        """GBZ alert payload, as the GSME's."""
        if isinstance(extra, dict):
            return gbz_alert_content(alert_code, now, **extra)
        return gbz_alert_content(alert_code, now, *(extra or ()))

    def stimulate(self, message_code, alert_code, now, **detail):
        from firmware_emu.gpf import logs
        self.now = now
        out = self._run_due(now)
        if message_code == logs.GCS62:
            return out + logs.stimulate_backup(self, now, **detail)
        return super().stimulate(message_code, alert_code, now, **detail)

