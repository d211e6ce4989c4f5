"""The Certified Products List (CPL): which firmware images each device model may run.

Theory of operation
-------------------
In GB smart metering a device may only activate a firmware image whose hash the DCC's Certified Products List
holds for that device model (GBCS CS06 "Activate Firmware" checks the manufacturer image hash of the image the
device holds). The emulator keeps the CPL as a small file, TOML or JSON with the same shape:

    [[product]]
    manufacturer = "GBCS-EMU"
    model = "EMU-ESME-1"
    device_type = "ESME"
    factory_version = "01000000"          # the version a factory-fresh device runs (optional)

      [[product.firmware]]
      version = "01000001"                # 4-byte firmware version, hex (what ECS52/CS06 report)
      image_hash = "…64 hex digits…"      # SHA-256 manufacturer image hash

A device profile names its CPL (`profile["cpl"]`, a path; default `configs/cpl.toml` of the checkout) and its
model (`profile["model"]`; default: the CPL's first product of the device type). The file is read once per path
and cached; a device never writes it. State machine of one lookup: hash → (model's entry → version) or None.
"""
from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from protocols.errors import GbcsEmuError

__all__ = ["CplError", "FirmwareImage", "Product", "Cpl", "DEFAULT_CPL_PATH", "load_cpl", "cpl_for_profile"]

#: The CPL shipped with the emulator.
DEFAULT_CPL_PATH = Path(__file__).resolve().parents[2] / "configs" / "cpl.toml"

_HASH_RE = re.compile(r"^[0-9A-Fa-f]{64}$")
_VERSION_RE = re.compile(r"^[0-9A-Fa-f]{2,64}$")


class CplError(GbcsEmuError):
    """A CPL file that cannot be read or does not have the documented shape."""


@dataclass(frozen=True)
class FirmwareImage:
    version: str       # upper-case hex
    image_hash: str    # upper-case hex, 32 bytes


@dataclass
class Product:
    manufacturer: str
    model: str
    device_type: str
    factory_version: str | None = None
    firmware: list[FirmwareImage] = field(default_factory=list)

    def image(self, image_hash: str | bytes) -> FirmwareImage | None:
        """The certified image with this manufacturer image hash, or None when it is not on the CPL."""
        h = image_hash.hex() if isinstance(image_hash, (bytes, bytearray)) else str(image_hash)
        h = h.upper()
        return next((f for f in self.firmware if f.image_hash == h), None)


@dataclass
class Cpl:
    products: list[Product]
    source: str = "<memory>"

    def product(self, model: str | None = None, device_type: str | None = None) -> Product | None:
        """The product of `model`, or (no model given) the first product of `device_type`."""
        for p in self.products:
            if model is not None and p.model == model:
                return p
            if model is None and device_type is not None and p.device_type == device_type:
                return p
        return None

    @classmethod
    def from_dict(cls, data: dict, source: str = "<memory>") -> "Cpl":
        if not isinstance(data, dict) or not isinstance(data.get("product"), list):
            raise CplError(f"{source}: a CPL needs a list of [[product]] tables")
        products = []
        for i, p in enumerate(data["product"]):
            where = f"{source}: product[{i}]"
            if not isinstance(p, dict) or not all(isinstance(p.get(k), str) for k in ("model", "device_type")):
                raise CplError(f"{where}: needs text 'model' and 'device_type'")
            images = []
            for j, f in enumerate(p.get("firmware") or []):
                version, image_hash = str(f.get("version", "")), str(f.get("image_hash", ""))
                if not _VERSION_RE.match(version) or len(version) % 2:
                    raise CplError(f"{where}.firmware[{j}]: version must be hex bytes, got {version!r}")
                if not _HASH_RE.match(image_hash):
                    raise CplError(f"{where}.firmware[{j}]: image_hash must be 64 hex digits")
                images.append(FirmwareImage(version.upper(), image_hash.upper()))
            factory = p.get("factory_version")
            if factory is not None and (not isinstance(factory, str) or not _VERSION_RE.match(factory)):
                raise CplError(f"{where}: factory_version must be hex bytes")
            products.append(Product(str(p.get("manufacturer", "")), p["model"], p["device_type"],
                                    factory.upper() if factory else None, images))
        return cls(products, source)


@lru_cache(maxsize=32)
def _load_cached(path: str, mtime: float) -> Cpl:
    p = Path(path)
    try:
        text = p.read_bytes()
    except OSError as e:
        raise CplError(f"cannot read CPL {p}: {e.strerror}") from None
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else tomllib.loads(text.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise CplError(f"CPL {p} is not valid {'JSON' if p.suffix.lower() == '.json' else 'TOML'}: {e}") from None
    return Cpl.from_dict(data, str(p))


def load_cpl(path: str | Path | None = None) -> Cpl:
    """The CPL at `path` (default: the shipped `configs/cpl.toml`); re-read when the file changes."""
    p = Path(path) if path is not None else DEFAULT_CPL_PATH
    try:
        mtime = p.stat().st_mtime
    except OSError:
        raise CplError(f"CPL not found: {p}") from None
    return _load_cached(str(p.resolve()), mtime)


def cpl_for_profile(profile: dict, device_type: str) -> tuple[Cpl, Product | None]:
    """The CPL a device profile names and the device's product entry on it (None: model not listed)."""
    cpl = load_cpl(profile.get("cpl"))
    return cpl, cpl.product(profile.get("model"), device_type)
