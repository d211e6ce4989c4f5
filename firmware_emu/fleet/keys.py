"""Fleet identities and keys: deterministic EUIs from the premises index, device keys derived lazily from the seed.

Theory of operation
-------------------
**EUIs.** Device `type` of premises `i` is ``<eui_prefix 3 bytes> <i: 4 bytes BE> <slot: 1 byte>`` with the slot
of `config.DEVICE_SLOTS` (CHF 0, GPF 1, ESME 2, GSME 3, PPMID 4, HCALCS 5). The default prefix `00DBF1` is
disjoint from the test PKI's devices (`00DB00000000nnnn`) and RTDS's (`00DB1234567890xx`), and organisations
are `90B3D51F…`. So a frame's recipient EUI names its premises without any lookup table (`parse_eui`).

**Keys.** A million devices cannot each get an X.509 certificate at start-up. `FleetKeystore` is a `Keystore`
holding the organisations (from a test PKI directory) that answers for fleet device EUIs on demand: the DS and
KA private keys are derived from (seed, EUI) with the test PKI's deterministic scheme (`PkiIssuer` with the
fleet seed: the same keys `PkiIssuer(seed).issue_device` would make), and the certificates (signed by the PKI's
device CA, deterministic signatures) are built only when someone asks for one. Derived entries live in a
bounded LRU, each usage derived on its own first use; ECDH secrets of device pairs in another. A device runs
with `FleetDeviceKeys` (`FleetKeystore.device_keys`, which `Premises` prefers): nothing is derived until the
device MACs (KA) or signs (DS), no certificate is built until a use case reads one. The head end (tests, demo, benchmark) builds the same
`FleetKeystore` from the same configuration (`FleetKeys.from_config`) and computes the same keys.

**Organisations.** `keys.pki = "DIR"`: a keystore made by `gbcs-emu keys init` (its `ca/` issues the device
certificates). Without it the fleet makes one from the seed in `<state_dir>/pki` on first run (atomically, so
shards starting together agree) and reuses it afterwards.
"""
from __future__ import annotations

import os
import shutil
import threading
from collections import OrderedDict
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from protocols.errors import GbcsEmuError
from protocols.security.errors import KeystoreError, SecurityError
from protocols.security.eui import as_eui, eui_hex
from protocols.security.keystore import KeyEntry, Keystore, Role, Usage, _usage, _write_private
from protocols.security.pki import PkiIssuer, init_pki

from firmware_emu.core.security import DeviceKeys

from firmware_emu.fleet.config import DEVICE_SLOTS, ConfigError, FleetConfig

__all__ = ["FleetKeysError", "FleetKeystore", "FleetDeviceKeys", "FleetKeys", "device_eui", "parse_eui", "premises_euis",
           "SLOT_TYPES"]

SLOT_TYPES = {v: k for k, v in DEVICE_SLOTS.items()}


class FleetKeysError(GbcsEmuError):
    """Fleet keys that cannot be made or loaded."""


# ------------------------------------------------------------------------------------------------ identities

def device_eui(prefix: bytes, index: int, device_type: str) -> str:
    """The EUI (16 hex digits) of `device_type` in premises `index`."""
    return eui_hex(prefix + index.to_bytes(4, "big") + bytes((DEVICE_SLOTS[device_type],)))


def parse_eui(prefix: bytes, eui) -> tuple[int, str] | None:
    """(premises index, device type) of a fleet EUI, or None when the EUI is not of this fleet's form."""
    try:
        b = as_eui(eui)
    except SecurityError:
        return None
    if b[:3] != prefix:
        return None
    dtype = SLOT_TYPES.get(b[7])
    if dtype is None:
        return None
    return int.from_bytes(b[3:7], "big"), dtype


def premises_euis(config: FleetConfig, index: int) -> dict[str, str]:
    """{device type: EUI} of premises `index`, hub first."""
    return {t: device_eui(config.eui_prefix, index, t) for t in config.devices_of(index)}


# ------------------------------------------------------------------------------------------------ keystore

class _LazyEntry(KeyEntry):
    """A derived device key pair whose certificate is built on first use."""

    def __init__(self, eui: bytes, usage: Usage, private_key, build):
        self._cert = None
        self._build = build
        super().__init__(eui=eui, usage=usage, public_key=private_key.public_key(), certificate=None,
                         private_key=private_key, sources=["<fleet seed>"])

    @property
    def certificate(self):
        if self._cert is None and self._build is not None:
            self._build()
        return self._cert

    @certificate.setter
    def certificate(self, value):
        self._cert = value

    def __repr__(self) -> str:
        return f"KeyEntry(eui={eui_hex(self.eui)}, usage={self.usage.value}, derived, private_key=present)"


class FleetKeystore(Keystore):
    """The organisations of a PKI directory plus every fleet device, derived on demand (module docstring).

    `is_fleet_device(eui bytes) -> bool` says which EUIs are derived; `euis()` lists the organisations only."""

    def __init__(self, directory, issuer: PkiIssuer, is_fleet_device, *, cache: int = 16_384):
        super().__init__(directory)
        if issuer.seed is None:
            raise FleetKeysError("the fleet's device keys need a seeded PkiIssuer")
        self.issuer = issuer
        self._is_fleet = is_fleet_device
        self._cache_size = max(16, int(cache))
        self._devices: OrderedDict[bytes, dict[Usage, _LazyEntry]] = OrderedDict()
        self._pair_secrets: OrderedDict[tuple, bytes | None] = OrderedDict()
        self._dlock = threading.RLock()
        self.derived = 0              # key pairs derived (metrics, tests)
        self.certificates_built = 0

    def _fleet(self, eui: bytes) -> bool:
        return self._is_fleet(eui)

    def private_key_of(self, eui, usage: Usage):
        """The derived private key of a fleet device (the test PKI's scheme for `<eui>-<usage>`)."""
        eui = as_eui(eui)
        return self.issuer.device_private_key(eui, usage)

    def _device(self, eui: bytes) -> dict[Usage, _LazyEntry]:
        """Both key pairs of a fleet device (derived now when not cached)."""
        for usage in (Usage.DS, Usage.KA):
            self._usage_entry(eui, usage)
        with self._dlock:
            return self._devices[eui]

    def _usage_entry(self, eui: bytes, usage: Usage) -> _LazyEntry:
        """One key pair of a fleet device, derived on first use (a KA-only user never pays for the DS key: a
        device that only MACs derives one scalar, not two)."""
        with self._dlock:
            pair = self._devices.get(eui)
            if pair is not None:
                self._devices.move_to_end(eui)
                got = pair.get(usage)
                if got is not None:
                    return got
            else:
                pair = self._devices[eui] = {}
                while len(self._devices) > self._cache_size:
                    self._devices.popitem(last=False)

            def build(pair=pair, eui=eui):
                ks = Keystore()
                self.issuer.issue_device(ks, eui)
                self.certificates_built += 2
                for u in (Usage.DS, Usage.KA):
                    cert_entry = ks.entry(eui, u)
                    if cert_entry is None:                                        # pragma: no cover
                        raise FleetKeysError(f"{eui_hex(eui)}: the PKI issued no {u.value} certificate")
                    entry = pair.get(u)
                    if entry is None:
                        entry = pair[u] = _LazyEntry(eui, u, cert_entry.private_key, None)
                        self.derived += 1
                    if cert_entry.point != entry.point:                          # pragma: no cover - scheme drift
                        raise FleetKeysError(f"{eui_hex(eui)}: derived {u.value} key differs from the PKI's")
                    entry.certificate = cert_entry.certificate
                    entry._build = None

            entry = pair[usage] = _LazyEntry(eui, usage, self.private_key_of(eui, usage), build)
            self.derived += 1
            return entry

    def device_keys(self, eui) -> "FleetDeviceKeys | None":
        """The `DeviceKeys` a fleet device runs with: private keys derived and certificates built only when
        used (`Premises` asks the keystore for this when it has it); None for an EUI that is no fleet device."""
        eui = as_eui(eui)
        return FleetDeviceKeys(self, eui) if self._fleet(eui) else None

    def entry(self, eui, usage) -> KeyEntry | None:
        e = super().entry(eui, usage)
        if e is not None:
            return e
        eui = as_eui(eui)
        return self._usage_entry(eui, _usage(usage)) if self._fleet(eui) else None

    def shared_secret(self, eui_a, eui_b, usage=Usage.KA) -> bytes | None:
        a, b = as_eui(eui_a), as_eui(eui_b)
        if not (self._fleet(a) or self._fleet(b)):
            return super().shared_secret(a, b, usage)
        usage = _usage(usage)
        if usage is Usage.DS:
            raise SecurityError("ECDH needs KA keys; DS keys only sign")
        key = (a, usage, b)
        with self._dlock:
            if key in self._pair_secrets:
                self._pair_secrets.move_to_end(key)
                return self._pair_secrets[key]
        from protocols.security import ecc
        ea, eb = self.entry(a, usage), self.entry(b, Usage.KA)
        secret = None
        if ea is not None and eb is not None:
            if ea.private_key is not None:
                secret = ecc.ecdh_shared_secret(ea.private_key, eb.public_key)
            elif eb.private_key is not None:
                secret = ecc.ecdh_shared_secret(eb.private_key, ea.public_key)
        with self._dlock:
            self._pair_secrets[key] = secret
            while len(self._pair_secrets) > 4 * self._cache_size:
                self._pair_secrets.popitem(last=False)
        return secret

    def is_device(self, eui) -> bool:
        eui = as_eui(eui)
        return self._fleet(eui) or super().is_device(eui)

    def __contains__(self, eui) -> bool:
        try:
            b = as_eui(eui)
        except SecurityError:
            return False
        return self._fleet(b) or super().__contains__(b)

    @property
    def cached_devices(self) -> int:
        return len(self._devices)

    def __repr__(self) -> str:
        return f"<FleetKeystore {len(self.euis())} organisations, {len(self._devices)} devices derived in cache>"

    __str__ = __repr__

    def export_device(self, directory, eui) -> list[Path]:
        """Write a fleet device's certificates and private keys in the keystore layout (`fleet export-keys`)."""
        eui = as_eui(eui)
        out = []
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for usage in (Usage.DS, Usage.KA):
            e = self.entry(eui, usage)
            if e is None:
                raise FleetKeysError(f"{eui_hex(eui)} is not a device of this fleet")
            stem = f"{eui.hex()}-{usage.value}"
            pem = d / f"{stem}.pem"
            pem.write_bytes(e.certificate.public_bytes(serialization.Encoding.PEM))
            key = d / f"{stem}.key"
            _write_private(key, e.private_key)
            out += [pem, key]
        return out


def _lazy(name: str):
    """A `DeviceKeys` field computed on first read (`FleetDeviceKeys._compute`) and settable as before."""
    def get(self):
        v = self._v
        if name not in v:
            v[name] = self._compute(name)
        return v[name]

    def put(self, value):
        self._v[name] = value
    return property(get, put)


class FleetDeviceKeys(DeviceKeys):
    """`DeviceKeys` of a fleet device whose key material is made on first use: the KA private key when the
    device first MACs, the DS key when it first signs, the X.509 certificates (DER) only when a use case reads
    them (CS02/credentials, CS03 certificates). A frame that needs none of them (the hub routing to its ESME)
    costs no key derivation at all, and no certificate is built on the frame path. Every field can still be
    replaced (credential use cases do), exactly as on `DeviceKeys`."""

    ds_private = _lazy("ds_private")
    ds_certificate = _lazy("ds_certificate")
    ka_certificate = _lazy("ka_certificate")
    ka_private = _lazy("ka_private")
    _ka_public = _lazy("_ka_public")

    def __init__(self, keystore: "FleetKeystore", eui: bytes):        # no dataclass __init__: nothing eager
        self._v = {}
        self._ks = keystore
        self.eui = eui
        self.peers = keystore
        self._secrets = {}

    def _compute(self, name: str):
        ks, eui = self._ks, self.eui
        if name == "ds_private":
            return ks._usage_entry(eui, Usage.DS).private_key
        if name == "ka_private":
            return ks._usage_entry(eui, Usage.KA).private_key
        if name == "_ka_public":
            return ks._usage_entry(eui, Usage.KA).public_key
        usage = Usage.DS if name == "ds_certificate" else Usage.KA
        cert = ks._usage_entry(eui, usage).certificate
        return cert.public_bytes(serialization.Encoding.DER)

    def __repr__(self) -> str:
        return f"FleetDeviceKeys({eui_hex(self.eui)}, derived: {sorted(self._v)})"

    __eq__ = object.__eq__
    __hash__ = object.__hash__


# ------------------------------------------------------------------------------------------------ the fleet's keys

class FleetKeys:
    """Organisations + lazily derived devices for one fleet configuration (module docstring)."""

    def __init__(self, config: FleetConfig, keystore: FleetKeystore):
        self.config, self.keystore = config, keystore

    @classmethod
    def from_config(cls, config: FleetConfig, *, create: bool = True, cache: int | None = None) -> "FleetKeys":
        """The fleet's keys. `create`: make `<state_dir>/pki` from the seed when absent (no `keys.pki`)."""
        d = config.pki_dir
        if config.pki is None and not (d / "ca").is_dir():
            if not create:
                raise FleetKeysError(f"no PKI in {d} yet (run the fleet once, or set keys.pki)")
            _init_pki_atomically(d, config.seed)
        if not (d / "ca").is_dir():
            raise ConfigError("keys.pki", f"{d} has no ca/ folder (make the keystore with `gbcs-emu keys init`): "
                                          "the fleet issues its device certificates with that CA")
        try:
            issuer = PkiIssuer.load(d / "ca", seed=config.seed)
        except KeystoreError as e:
            raise ConfigError("keys.pki", str(e)) from None
        prefix = config.eui_prefix
        size = cache if cache is not None else (config.host.key_cache or 4 * config.host.cache * 6)
        n = config.premises

        def is_fleet(eui: bytes, prefix=prefix, n=n) -> bool:
            return eui[:3] == prefix and eui[7] in SLOT_TYPES and int.from_bytes(eui[3:7], "big") < n

        ks = FleetKeystore(d, issuer, is_fleet, cache=size)
        missing = [r.name.lower() for r in (Role.SUPPLIER, Role.NETWORK_OPERATOR, Role.ACCESS_CONTROL_BROKER)
                   if not any(ks.role(e) is r for e in ks.euis())]
        if missing:
            raise ConfigError("keys.pki", f"{d} lacks organisation keys for {', '.join(missing)}")
        return cls(config, ks)

    def organisation(self, role: Role) -> str:
        """The EUI of the (lowest) organisation of `role`: the fleet's devices trust it."""
        for e in sorted(self.keystore.euis()):
            if self.keystore.role(e) is role:
                return eui_hex(e)
        raise FleetKeysError(f"no {role.name.lower()} in the fleet's PKI")

    def export(self, directory, indices) -> list[Path]:
        """Certificates and private keys of the organisations and of every device of premises `indices`."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        written = []
        src = self.config.pki_dir
        for child in sorted(src.iterdir()):
            if child.is_file() and child.suffix in (".pem", ".key"):
                shutil.copy2(child, d / child.name)
                written.append(d / child.name)
        for i in indices:
            for eui in premises_euis(self.config, i).values():
                written += self.keystore.export_device(d, eui)
        return written


def _init_pki_atomically(d: Path, seed: int) -> None:
    """init_pki into a temporary sibling, then rename: concurrent shards never see half a PKI."""
    d.parent.mkdir(parents=True, exist_ok=True)
    tmp = d.parent / f".{d.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    init_pki(tmp, devices=0, seed=seed)
    try:
        os.rename(tmp, d)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)       # another shard made it first: same seed, same files
        if not (d / "ca").is_dir():
            raise FleetKeysError(f"cannot create the fleet PKI in {d}") from None
