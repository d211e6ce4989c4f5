"""Running devices out of persistent storage: load, process, commit, then let the frames go.

Theory of operation
-------------------
A device's state is the only thing that must survive a crash. `DeviceHost.receive(eui, frame, now)` loads the
device (from its cache or the `StateStore`), lets it process the frame, **commits the new state** and only then
returns the frames to send. So a response or alert that left the process always describes a committed state
(nothing acknowledged is lost on `kill -9`), and a restart resumes from the last commit: the replay counters
and the alert counter never go backwards (the store refuses a state whose counters would).

`max_cached` bounds how many device objects stay in memory; the rest live only in the store and are
rebuilt by `factory(eui, device_type, state)` when a frame or a timer needs them (the fleet's scale design).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

from protocols.security.eui import eui_hex

from firmware_emu.core.device import Device, Emitted
from firmware_emu.core.store import StateStore

__all__ = ["DeviceHost"]

Factory = Callable[[str, str, "dict | None"], Device]


class DeviceHost:
    """Devices behind a `StateStore` (module docstring)."""

    def __init__(self, store: StateStore, factory: Factory, *, max_cached: int = 1024):
        self.store, self.factory, self.max_cached = store, factory, max_cached
        self._cache: OrderedDict[str, Device] = OrderedDict()

    def add(self, device: Device) -> None:
        """Register a freshly provisioned device (committed at once)."""
        eui = eui_hex(device.eui)
        self.store.save(eui, device.DEVICE_TYPE, device.state)
        self._remember(eui, device)

    def device(self, eui) -> Device | None:
        eui = eui_hex(eui)
        dev = self._cache.get(eui)
        if dev is not None:
            self._cache.move_to_end(eui)
            return dev
        state = self.store.load(eui)
        if state is None:
            return None
        dev = self.factory(eui, state["device_type"], state)
        self._remember(eui, dev)
        return dev

    def _remember(self, eui: str, dev: Device) -> None:
        self._cache[eui] = dev
        self._cache.move_to_end(eui)
        while len(self._cache) > self.max_cached:
            self._cache.popitem(last=False)

    def _commit(self, dev: Device) -> None:
        self.store.save(eui_hex(dev.eui), dev.DEVICE_TYPE, dev.state)

    def receive(self, eui, frame: bytes, now: float) -> list[Emitted]:
        dev = self.device(eui)
        if dev is None:
            return []
        out = dev.receive(frame, now)
        self._commit(dev)
        return out

    def tick(self, eui, now: float) -> list[Emitted]:
        dev = self.device(eui)
        if dev is None:
            return []
        out = dev.tick(now)
        if out or dev.events:
            self._commit(dev)
        dev.events.clear()
        return out
