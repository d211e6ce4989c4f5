"""The electricity meter (ESME): a GBCS device whose remote-party payloads are DLMS/COSEM or ASN.1.

Theory of operation
-------------------
`Esme.handle` sends each accepted command to the family its payload belongs to:

* DLMS Access-Requests go to the ESME's `CosemServer`, whose objects come from the family modules listed in
  `FAMILY_MODULES` (each has `register(server, catalogue)`), with the appendix-typed stored attributes as the
  fallback. Future-dated-capable use cases first pass through `firmware_emu.esme.future`, which decides
  whether the command executes now or is scheduled (then the response only says "accepted" and the outcome is an
  8F66/8F67 alert at the execution time).
* ASN.1 payloads (CS01/CS02/CS03/CS04/CS06/CS07…) go to the handler registered for the use case name in
  `ASN1_HANDLERS` (`@asn1_handler("CS06")`).

A payload that does not decode after the command passed its security checks is answered by the 0x8F1E alert
("integrity check of content or format of command failed") and changes nothing.
"""
from __future__ import annotations

import importlib
import logging
from typing import Callable, ClassVar

from protocols.errors import DecodeError, EncodeError
from protocols.gbcs.message import payload_family

from firmware_emu.core.alerts import AlertCode
from firmware_emu.core.catalogue import Catalogue
from firmware_emu.core.cosem import AccessContext, AccessFailure, CosemServer, StoredObject, dlms_alert_content
from firmware_emu.core.device import Device, Reply
from firmware_emu.core.security import InboundCommand

log = logging.getLogger(__name__)

__all__ = ["Esme", "ASN1_HANDLERS", "asn1_handler", "TIMER_HANDLERS", "timer_handler", "FAMILY_MODULES"]

#: Modules that add COSEM objects to the ESME (each defines `register(server, catalogue)`).
FAMILY_MODULES: tuple[str, ...] = (
    "firmware_emu.esme.metering",
    "firmware_emu.esme.tariff",
    "firmware_emu.esme.prepayment",
    "firmware_emu.esme.supply",
)
#: Modules that register ASN.1 use-case handlers when imported.
ASN1_MODULES: tuple[str, ...] = ("firmware_emu.esme.credentials",)

ASN1_HANDLERS: dict[str, Callable[["Esme", InboundCommand, float], Reply]] = {}
#: Scheduled-work handlers by `Device.schedule` kind: fn(device, data, at) -> list[Emitted].
TIMER_HANDLERS: dict[str, Callable] = {}


def timer_handler(kind: str):
    """Register what runs when scheduled work of `kind` comes due."""
    def deco(fn):
        TIMER_HANDLERS[kind] = fn
        return fn
    return deco


def asn1_handler(*names: str):
    """Register a handler for ASN.1 use cases by name (e.g. "CS06")."""
    def deco(fn):
        for n in names:
            ASN1_HANDLERS[n] = fn
        return fn
    return deco


def _optional_import(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name != name:
            raise
        return None


class Esme(Device):
    DEVICE_TYPE: ClassVar[str] = "ESME"
    ALERT_COUNTER_START: ClassVar[int] = 2000
    _server: ClassVar[CosemServer | None] = None

    @classmethod
    def server(cls) -> CosemServer:
        """The COSEM object model, built once per process from the family modules."""
        if cls.__dict__.get("_server") is None:
            catalogue = Catalogue.for_device(cls.DEVICE_TYPE)
            server = CosemServer(StoredObject(catalogue))
            for name in FAMILY_MODULES:
                module = _optional_import(name)
                if module is not None:
                    module.register(server, catalogue)
            for name in ASN1_MODULES + ("firmware_emu.esme.future", "firmware_emu.esme.events"):
                _optional_import(name)
            cls._server = server
        return cls._server

    def __init__(self, keys, state=None, **kw):
        super().__init__(keys, state, **kw)
        if state is not None:  # a restart: anchors replaced by CS02b and keys from CS02d live in the state
            self.server()
            credentials = _optional_import("firmware_emu.esme.credentials")
            if credentials is not None:
                credentials.install_anchor_certificates(self)

    def prepare(self, condition, **detail):
        if condition == "device_joined":
            self.server()
            from firmware_emu.esme import credentials
            credentials.join_device(self, detail["other_device"], detail.get("device_type", "PPMID"))
            return
        super().prepare(condition, **detail)

    def initial_state(self, anchors, now, profile):
        state = super().initial_state(anchors, now, profile)
        state["cosem"] = {}
        state["esme"] = {"profile": dict(profile), "commissioned": False}
        return state

    def handle(self, cmd: InboundCommand, now: float) -> Reply:
        try:
            family = payload_family(cmd.content, cmd.code)
        except DecodeError:
            family = None
        try:
            if family == "dlms":
                return self.handle_dlms(cmd, now)
            if family == "asn1":
                self.server()  # imports the modules that register the ASN.1 handlers
                handler = ASN1_HANDLERS.get(cmd.entry.name)
                if handler is not None:
                    return handler(self, cmd, now)
        except (DecodeError, EncodeError, AccessFailure) as e:
            self.event("malformed_payload", use_case=cmd.entry.name, detail=str(e))
        return Reply(b"", respond=False,
                     alerts=[self.raise_alert(AlertCode.COMMAND_INTEGRITY_CHECK_FAILED)])

    def handle_dlms(self, cmd: InboundCommand, now: float) -> Reply:
        from protocols.dlms.apdu import decode_apdu, encode_apdu
        apdu = decode_apdu(cmd.content, base=cmd.content_offset, cra_flag="command", message_code=cmd.code)
        request = apdu.get("access_request")
        if request is None:
            raise AccessFailure("object-undefined", "not an Access-Request")
        ctx = AccessContext(self, now, cmd)
        if cmd.entry.future_dated_capable:
            future = _optional_import("firmware_emu.esme.future")
            if future is not None:
                reply = future.plan(self, ctx, request)
                if reply is not None:
                    return reply
        response = self.server().access(ctx, request)
        return Reply(encode_apdu(response, cra_flag="response"), alerts=ctx.scratch.get("alerts", []),
                     other_information=ctx.scratch.get("other_information"))

    def on_timer(self, kind, data, at):
        self.server()  # the family modules register their timer handlers when imported
        handler = TIMER_HANDLERS.get(kind)
        if handler is None and kind == "future_dated":
            future = _optional_import("firmware_emu.esme.future")
            handler = getattr(future, "execute", None)
        if handler is None:
            self.event("unknown_timer", kind=kind)
            return []
        return handler(self, data, at)

    def stimulate(self, message_code, alert_code, now, **detail):
        events = _optional_import("firmware_emu.esme.events")
        if events is None:
            return super().stimulate(message_code, alert_code, now, **detail)
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
        prepayment = _optional_import("firmware_emu.esme.prepayment")
        if prepayment is None:
            return []
        self.server()
        return prepayment.on_consumption(self, now) or []
