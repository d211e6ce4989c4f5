"""Devices whose remote-party payloads are DLMS/COSEM (the ESME and the CHF): one COSEM server per class.

Theory of operation
-------------------
A `DlmsDevice` is a `ModularDevice` whose DLMS Access-Requests go to a `CosemServer`, built once per process
and class: the appendix catalogue of the device type types and defaults every attribute (`StoredObject`), and the
modules named in `COSEM_MODULES` register the objects with behaviour (`register(server, catalogue)`). Named
use-case handlers (e.g. the credential use cases) still come first (`ModularDevice.handle`).

    Access-Request ─▶ plan(ctx, request) (a device type may take it: future-dated work) ─▶ server.access ─▶
    Access-Response (+ the alerts and other-information the objects left in ctx.scratch)
"""
from __future__ import annotations

from typing import ClassVar

from protocols.dlms.apdu import decode_apdu, encode_apdu

from firmware_emu.core.catalogue import Catalogue
from firmware_emu.core.cosem import AccessContext, AccessFailure, CosemServer, StoredObject, attr_key
from firmware_emu.core.device import Reply
from firmware_emu.core.modular import ModularDevice, optional_import
from firmware_emu.core.security import InboundCommand

__all__ = ["DlmsDevice", "FIRMWARE_VERSION"]

#: Data object holding the running firmware version (ECS52 / ECS26n read it; CS06 writes it).
FIRMWARE_VERSION = (1, "0-0:0.2.1.255", 2)


class DlmsDevice(ModularDevice):
    """Base of the DLMS device types (module docstring)."""

    #: Modules that add COSEM objects (each defines `register(server, catalogue)`).
    COSEM_MODULES: ClassVar[tuple[str, ...]] = ()
    _server: ClassVar[CosemServer | None] = None

    @classmethod
    def server(cls) -> CosemServer:
        """The COSEM object model, built once per process and class from `COSEM_MODULES`."""
        if cls.__dict__.get("_server") is None:
            catalogue = Catalogue.for_device(cls.DEVICE_TYPE)
            server = CosemServer(StoredObject(catalogue))
            cls._server = server
            for name in cls.COSEM_MODULES:
                module = optional_import(name)
                if module is not None:
                    module.register(server, catalogue)
            cls.load()
        return cls._server

    def __init__(self, keys, state=None, **kw):
        super().__init__(keys, state, **kw)
        self.server()

    def initial_state(self, anchors, now, profile):
        state = super().initial_state(anchors, now, profile)
        state["cosem"] = {}
        return state

    def firmware_activated(self, version: str) -> None:
        self.state["cosem"][attr_key(*FIRMWARE_VERSION)] = {"type": "octet-string", "value": version}

    def handle_family(self, cmd: InboundCommand, family: str, now: float) -> Reply | None:
        return self.handle_dlms(cmd, now) if family == "dlms" else None

    def plan(self, ctx: AccessContext, request: dict) -> Reply | None:
        """A device type's chance to take a request before the server serves it now (future-dated work)."""
        return None

    def handle_dlms(self, cmd: InboundCommand, now: float) -> Reply:
        apdu = decode_apdu(cmd.content, base=cmd.content_offset, cra_flag="command", message_code=cmd.code)
        request = apdu.get("access_request")
        if request is None:
            raise AccessFailure("object-undefined", "not an Access-Request")
        ctx = AccessContext(self, now, cmd)
        reply = self.plan(ctx, request)
        if reply is not None:
            return reply
        response = self.server().access(ctx, request)
        return Reply(encode_apdu(response, cra_flag="response"), alerts=ctx.scratch.get("alerts", []),
                     other_information=ctx.scratch.get("other_information"))
