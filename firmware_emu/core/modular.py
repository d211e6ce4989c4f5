"""Device types assembled from modules: one module per family of use cases, registered by name.

Theory of operation
-------------------
A `ModularDevice` subclass names the modules that make it (`MODULES`); they are imported once per process, the
first time the class serves anything (`load`). On import a module registers what it serves on a device class:

* `@handles(DeviceClass, "CS06", ...)`: a handler `fn(device, cmd, now) -> Reply` for use cases by name;
* `@on_timer(DeviceClass, "future_dated")`: what runs when scheduled work of that kind comes due,
  `fn(device, data, at) -> list[Emitted]`;
* a module with a `setup(cls)` function is called once with the class (e.g. to register COSEM objects or ZCL
  clusters on the class's server).

Registrations on a base class serve every subclass: the credential use cases (CS02–CS07) are registered on
`ModularDevice` itself and so work on every device type; a subclass registration overrides for that type.

`handle` looks the use case up by its registry name (e.g. "CS02bSupplierByTransCoS"), then by the names of
its message code (e.g. "CS02b"), then falls back to `handle_family(cmd, family, now)`, which device types
implement for their payload family (the DLMS Access-Request server, the GBZ/ZCL server). A payload that
does not decode, or a use case nobody serves, is answered with the 0x8F1E alert and changes nothing.
"""
from __future__ import annotations

import importlib
from typing import Callable, ClassVar

from protocols.errors import DecodeError, EncodeError
from protocols.gbcs.message import payload_family
from protocols.gbcs.registry import REGISTRY

from firmware_emu.core.alerts import AlertCode
from firmware_emu.core.cosem import AccessFailure
from firmware_emu.core.device import Device, Emitted, Reply
from firmware_emu.core.security import InboundCommand

__all__ = ["ModularDevice", "handles", "on_timer", "optional_import", "COMMON_MODULES"]

#: Modules every device type loads (credential management is the same on every device).
COMMON_MODULES: tuple[str, ...] = ("firmware_emu.core.credentials",)


def optional_import(name: str):
    """Import a module that may not exist yet (a family not written); errors inside it still raise."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name is None or not name.startswith(e.name):  # a missing import inside an existing module
            raise
        return None


def handles(cls: type["ModularDevice"], *names: str):
    """Register a use-case handler on `cls` for these use-case names."""
    def deco(fn):
        for n in names:
            cls.__dict__["_handlers"][n] = fn
        return fn
    return deco


def on_timer(cls: type["ModularDevice"], kind: str):
    """Register what runs on `cls` when scheduled work of `kind` comes due."""
    def deco(fn):
        cls.__dict__["_timers"][kind] = fn
        return fn
    return deco


class ModularDevice(Device):
    """A device type whose behaviour comes from registered modules (module docstring)."""

    MODULES: ClassVar[tuple[str, ...]] = ()
    _handlers: ClassVar[dict[str, Callable]] = {}
    _timers: ClassVar[dict[str, Callable]] = {}

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        cls._handlers, cls._timers = {}, {}
        cls._loaded = False

    def __init__(self, keys, state=None, **kw):
        super().__init__(keys, state, **kw)
        self.load()
        if state is not None:  # a restart: anchors replaced by CS02b and keys from CS02d live in the state
            from firmware_emu.core import credentials
            credentials.install_anchor_certificates(self)

    @classmethod
    def load(cls) -> None:
        """Import the modules that make this device type (once per process and class)."""
        if cls.__dict__.get("_loaded"):
            return
        cls._loaded = True
        for base in reversed(cls.__mro__):
            if issubclass(base, ModularDevice) and base is not cls and not base.__dict__.get("_loaded", True):
                base.load()
        names = COMMON_MODULES + tuple(getattr(cls, "COSEM_MODULES", ())) + cls.MODULES
        for name in dict.fromkeys(names):
            module = optional_import(name)
            setup = getattr(module, "setup", None)
            if setup is not None:
                setup(cls)

    @classmethod
    def handler(cls, names) -> Callable | None:
        cls.load()
        for n in names:  # the exact use-case name first (on any class), then the other names of its code
            for klass in cls.__mro__:
                fn = (klass.__dict__.get("_handlers") or {}).get(n)
                if fn is not None:
                    return fn
        return None

    @classmethod
    def timer(cls, kind: str) -> Callable | None:
        cls.load()
        for klass in cls.__mro__:
            fn = (klass.__dict__.get("_timers") or {}).get(kind)
            if fn is not None:
                return fn
        return None

    def handle(self, cmd: InboundCommand, now: float) -> Reply:
        names = [cmd.entry.name] + [n for n in REGISTRY.names_for(cmd.code) if n != cmd.entry.name]
        try:
            fn = self.handler(names)
            if fn is not None:
                return fn(self, cmd, now)
            family = payload_family(cmd.content, cmd.code)
            reply = self.handle_family(cmd, family, now)
            if reply is not None:
                return reply
        except (DecodeError, EncodeError, AccessFailure) as e:
            self.event("malformed_payload", use_case=cmd.entry.name, detail=str(e))
        else:
            self.event("unsupported_use_case", use_case=cmd.entry.name)
        return Reply(b"", respond=False, alerts=[self.raise_alert(AlertCode.COMMAND_INTEGRITY_CHECK_FAILED)])

    def handle_family(self, cmd: InboundCommand, family: str, now: float) -> Reply | None:
        """Serve a command no named handler took, by payload family; None: not served."""
        return None

    def prepare(self, condition: str, **detail) -> None:
        if condition == "device_joined":  # another device already in this device's HAN device log
            self.load()
            from firmware_emu.core import credentials
            credentials.join_device(self, detail["other_device"], detail.get("device_type", "PPMID"))
            return
        super().prepare(condition, **detail)

    def on_timer(self, kind: str, data: dict, at: float) -> list[Emitted]:
        fn = self.timer(kind)
        if fn is None:
            self.event("unknown_timer", kind=kind)
            return []
        return fn(self, data, at)
