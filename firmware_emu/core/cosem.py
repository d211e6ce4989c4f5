"""A DLMS/COSEM server for GBCS Access-Requests: the part of the ESME and the CHF that serves objects.

Theory of operation
-------------------
GBCS carries no association and no GET/SET/ACTION-Request: every command is one xDLMS Access-Request (`D9`)
with a list of specifications (get, get-with-selection, set, action) and a parallel list of data, and every
answer is one Access-Response (`DA`) with one data item and one result per specification, in order (brief §2.1).

`CosemServer.access` walks the specifications in order. Each one is resolved to a `CosemObject` (by class and
instance, else by class alone, else the generic stored-attribute object) and executed. The invoke id's
break-on-error bit (0x20 of its first byte, always set in GBCS) means: after the first failure, the rest are not
executed and each answers `other-reason`; work done before the failure stays done. This is exactly what the RTDS
ERROR cases show ("…, hardware-fault, other-reason").

Objects raise `AccessFailure(result)` to fail a specification with a Data-Access-Result / Action-Result name.
Injected faults (`Device.faults`, target `class/obis/a<attr>` or `class/obis/m<method>`) fail a specification
before the object runs: the precondition of a test scenario, e.g. "this register has a hardware fault".

The generic object keeps attribute values in `state["cosem"]` (A-XDR Data JSON, keyed `class/obis/attr`), and
answers gets of attributes never set with the default derived from the GBCS appendix's type for that attribute
(`core.catalogue`); sets are checked against that type (`type-unmatched`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from protocols.dlms.apdu import decode_apdu, encode_apdu

if TYPE_CHECKING:
    from firmware_emu.core.device import Device
    from firmware_emu.core.security import InboundCommand

log = logging.getLogger(__name__)

__all__ = ["NULL", "AccessFailure", "AccessContext", "CosemObject", "StoredObject", "CosemServer", "dlms_target",
           "dlms_alert_content",
           "attr_key"]

NULL = {"type": "null-data", "value": None}
_BREAK_ON_ERROR = 0x20


class AccessFailure(Exception):
    """Fail one specification with a Data-Access-Result (get/set) or Action-Result (action) name."""

    def __init__(self, result: str = "hardware-fault", why: str = ""):
        super().__init__(why or result)
        self.result = result


class ScheduleFull(AccessFailure):
    """A device's capacity for pending future-dated work is used up: the instruction fails (temporary-failure)."""


def dlms_target(kind: str, class_id: int, obis: str, index: int) -> str:
    """The fault-injection / logging name of one attribute or method: `3/1-0:1.8.0.255/a2`, `9/…/m1`."""
    return f"{class_id}/{obis}/{'m' if kind == 'action' else 'a'}{index}"


def attr_key(class_id: int, obis: str, attr: int) -> str:
    return f"{class_id}/{obis}/{attr}"


@dataclass
class AccessContext:
    """What an object may look at while it serves one specification."""

    device: "Device"
    now: float
    cmd: "InboundCommand | None" = None
    executing: bool = False         # a future-dated command running at its time
    scratch: dict = field(default_factory=dict)   # shared by the specifications of one request

    @property
    def cosem(self) -> dict:
        return self.device.state.setdefault("cosem", {})


class CosemObject:
    """Behaviour of one COSEM object (or of every instance of a class). Override what the object supports."""

    def get(self, ctx: AccessContext, class_id: int, obis: str, attr: int, selection: dict | None) -> dict:
        raise AccessFailure("object-undefined")

    def set(self, ctx: AccessContext, class_id: int, obis: str, attr: int, value: dict) -> None:
        raise AccessFailure("read-write-denied")

    def action(self, ctx: AccessContext, class_id: int, obis: str, method: int, arg: dict) -> dict | None:
        raise AccessFailure("object-undefined")


class StoredObject(CosemObject):
    """Attributes kept in the device state, defaulting to the appendix type's default; methods succeed if the
    appendix lists them (device types override the ones with behaviour)."""

    def __init__(self, catalogue):
        self.catalogue = catalogue

    def stored(self, ctx: AccessContext, class_id: int, obis: str, attr: int) -> dict | None:
        value = ctx.cosem.get(attr_key(class_id, obis, attr))
        if value is not None:
            return value
        entry = self.catalogue.attribute(class_id, obis, attr) if self.catalogue is not None else None
        if entry is None:
            return None
        from firmware_emu.core.catalogue import default_value
        return default_value(entry)

    def get(self, ctx, class_id, obis, attr, selection):
        value = self.stored(ctx, class_id, obis, attr)
        if value is None:
            raise AccessFailure("object-undefined")
        return value

    def set(self, ctx, class_id, obis, attr, value):
        entry = self.catalogue.attribute(class_id, obis, attr) if self.catalogue is not None else None
        current = ctx.cosem.get(attr_key(class_id, obis, attr))
        if entry is None and current is None:
            raise AccessFailure("object-undefined")
        if entry is not None and getattr(entry, "derived", True):
            from firmware_emu.core.catalogue import default_value, same_shape
            if same_shape(default_value(entry), value) is not None and (
                    current is None or same_shape(current, value) is not None):
                raise AccessFailure("type-unmatched")
        ctx.cosem[attr_key(class_id, obis, attr)] = value

    def action(self, ctx, class_id, obis, method, arg):
        if self.catalogue is not None and self.catalogue.method(class_id, obis, method) is not None:
            return None
        raise AccessFailure("object-undefined")


class CosemServer:
    """Resolves specifications to objects and runs an Access-Request (module docstring)."""

    def __init__(self, fallback: CosemObject):
        self.fallback = fallback
        self.by_instance: dict[tuple[int, str], CosemObject] = {}
        self.by_class: dict[int, CosemObject] = {}

    def register(self, obj: CosemObject, class_id: int, *instances: str) -> CosemObject:
        """Serve `instances` of `class_id` with `obj` (every instance of the class when none is named)."""
        if instances:
            for obis in instances:
                self.by_instance[(class_id, obis)] = obj
        else:
            self.by_class[class_id] = obj
        return obj

    def resolve(self, class_id: int, obis: str) -> CosemObject:
        return self.by_instance.get((class_id, obis)) or self.by_class.get(class_id) or self.fallback

    def execute(self, ctx: AccessContext, kind: str, descriptor: dict, value: dict,
                selection: dict | None) -> dict | None:
        """Run one specification; returns the data item (None → null-data). Raises AccessFailure."""
        class_id, obis = descriptor["class_id"], descriptor["instance_id"]
        index = descriptor.get("method_id") if kind == "action" else descriptor.get("attribute_id")
        fault = ctx.device.faults.lookup(dlms_target(kind, class_id, obis, index), executing=ctx.executing)
        if fault:
            raise AccessFailure(fault, "injected fault")
        obj = self.resolve(class_id, obis)
        if kind in ("get", "get-with-selection"):
            return obj.get(ctx, class_id, obis, index, selection)
        if kind in ("set", "set-with-selection"):
            obj.set(ctx, class_id, obis, index, value)
            return None
        if kind == "action":
            return obj.action(ctx, class_id, obis, index, value)
        raise AccessFailure("object-undefined", f"unknown specification kind {kind}")

    def access(self, ctx: AccessContext, request: dict) -> dict:
        """Serve one Access-Request (JSON form) and return the Access-Response (JSON form)."""
        invoke = request["long_invoke_id_and_priority"]
        break_on_error = bool(int(invoke[:2], 16) & _BREAK_ON_ERROR)
        specs = request["request_specifications"]
        values = request["data"]
        data, results = [], []
        failed = False
        for i, spec in enumerate(specs):
            kind = spec["kind"]
            result_kind = {"get-with-selection": "get", "set-with-selection": "set"}.get(kind, kind)
            if failed and break_on_error:
                data.append(NULL)
                results.append({"kind": result_kind, "result": "other-reason"})
                continue
            value = values[i] if i < len(values) else NULL
            try:
                item = self.execute(ctx, kind, spec["descriptor"], value, spec.get("access_selection"))
            except AccessFailure as e:
                failed = True
                data.append(NULL)
                results.append({"kind": result_kind, "result": e.result})
                continue
            data.append(item if item is not None else NULL)
            results.append({"kind": result_kind, "result": "success"})
        return {"access_response": {"long_invoke_id_and_priority": invoke, "date_time": "",
                                    "request_specifications": None, "data": data, "results": results}}

    def serve(self, ctx: AccessContext, content: bytes) -> bytes:
        """Bytes in, bytes out: decode the Access-Request, serve it, encode the Access-Response."""
        apdu = decode_apdu(content, cra_flag="command")
        request = apdu.get("access_request")
        if request is None:
            raise AccessFailure("object-undefined", "not an Access-Request")
        return encode_apdu(self.access(ctx, request), cra_flag="response")


def dlms_alert_content(alert_code: int | None, counter: int, now: float, extra: list | None = None) -> bytes:
    """A DLMS Data-Notification alert payload (brief §6): invoke id `20` ‖ low 24 bits of the alert counter,
    body structure {alert code, date-time, extra fields…}."""
    from firmware_emu.core.clock import dlms_datetime
    body = [{"type": "long-unsigned", "value": alert_code},
            {"type": "octet-string", "value": dlms_datetime(now).hex().upper()}]
    body += list(extra or [])
    apdu = {"data_notification": {"long_invoke_id_and_priority": f"20{counter & 0xFFFFFF:06X}", "date_time": "",
                                  "notification_body": {"type": "structure", "value": body}}}
    return encode_apdu(apdu, cra_flag="alert")
