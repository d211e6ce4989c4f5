"""Which emulated device class serves which GBCS device type."""
from __future__ import annotations

from firmware_emu.core.device import Device
from firmware_emu.core.modular import optional_import

__all__ = ["DEVICE_MODULES", "device_class", "emulated_types"]

#: Device type → (module, class). A type whose module does not exist yet is "not emulated".
DEVICE_MODULES: dict[str, tuple[str, str]] = {
    "ESME": ("firmware_emu.esme.device", "Esme"),
    "GSME": ("firmware_emu.gsme.device", "Gsme"),
    "GPF": ("firmware_emu.gpf.device", "Gpf"),
    "CHF": ("firmware_emu.chf.device", "Chf"),
    "PPMID": ("firmware_emu.ppmid.device", "Ppmid"),
    "HCALCS": ("firmware_emu.hcalcs.device", "Hcalcs"),
}


def device_class(device_type: str) -> type[Device] | None:
    """The class emulating `device_type` ("ESME", "GSME", "CHF", "GPF", "PPMID", "HCALCS"), or None."""
    where = DEVICE_MODULES.get(device_type.upper())
    if where is None:
        return None
    module = optional_import(where[0])
    return getattr(module, where[1], None) if module is not None else None


def emulated_types() -> list[str]:
    return sorted(t for t in DEVICE_MODULES if device_class(t) is not None)
