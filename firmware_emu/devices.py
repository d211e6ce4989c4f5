"""Which emulated device class serves which GBCS device type."""
from __future__ import annotations

from firmware_emu.core.device import Device

__all__ = ["DEVICE_CLASSES", "device_class", "emulated_types"]


def _classes() -> dict[str, type[Device]]:
    from firmware_emu.esme.device import Esme
    return {"ESME": Esme}


DEVICE_CLASSES: dict[str, type[Device]] = {}


def device_class(device_type: str) -> type[Device] | None:
    """The class emulating `device_type` ("ESME", "GSME", "CHF", "GPF", "PPMID", "HCALCS"), or None."""
    if not DEVICE_CLASSES:
        DEVICE_CLASSES.update(_classes())
    return DEVICE_CLASSES.get(device_type.upper())


def emulated_types() -> list[str]:
    if not DEVICE_CLASSES:
        DEVICE_CLASSES.update(_classes())
    return sorted(DEVICE_CLASSES)
