"""A complete *test* SMKI-like PKI: root CA, issuing CAs, organisation and device certificates in GBCS form.

Why: RTDS ships no device private keys, so an emulated device cannot sign critical responses or alerts with
RTDS keys. This module makes a PKI where every party (organisations *and* devices) has its private keys, in the
same keystore layout `Keystore` reads.

What it makes (mirroring the RTDS certificates' shape):

* root CA `CN=GBCS-EMU Test Root`; organisation issuing CA `OU=07, CN=Z1`; device CA `CN=E357`;
* organisation certificates for recovery, supplier, network operator, ACB, transitional CoS, WAN provider and
  load controller: subject `[CN,] OU=<role as 2 hex digits>, x500UniqueIdentifier=<EUI>`, issued by Z1, each
  with a DS and a KA key pair; the supplier also gets a prepayment KA pair (`-pp-ka`);
* device certificates with an **empty subject** and the EUI in a critical SubjectAltName otherName
  hwModuleName (1.3.6.1.5.5.7.8.4), issued by E357, each with DS and KA key pairs.

EUIs never collide with RTDS ones: organisations use `90B3D51FEE......` (the RTDS pattern with `30` → `EE`:
supplier 90B3D51FEE010000, NO 90B3D51FEE020000, ACB 90B3D51FEE000002, recovery …0001, TransCoS …0004,
WAN provider …0007, load controller 90B3D51FEE010008) and devices `00DB00000000nnnn` (n = 1, 2, …), against
RTDS's 00DB1234567890xx. EUIs are always deterministic. With a `seed`, the key pairs, serial numbers and
signatures (RFC 6979) are too, so the same seed rebuilds byte-identical files; without one, keys are random.

Layout written by `init_pki(directory, ...)`::

    <eui>-ds.pem/.key, <eui>-ka.pem/.key, <supplier>-pp-ka.pem/.key   (the keystore, see keystore.py)
    ca/root.pem ca/root.key ca/org-ca.pem ca/org-ca.key ca/device-ca.pem ca/device-ca.key
    pki.json                                                          (EUIs and roles; no key material)

Private keys are unencrypted PKCS8 PEM with mode 0600: this is a test PKI, never use it for real meters.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier

from protocols.security import ecc
from protocols.security.errors import KeystoreError
from protocols.security.eui import EuiLike, as_eui, eui_hex
from protocols.security.keystore import (
    OID_HW_MODULE_NAME, OID_X500_UNIQUE_IDENTIFIER, Keystore, Role, Usage, _write_private, hw_module_name,
)

try:
    from cryptography.x509.name import _ASN1Type
    _BIT_STRING = {"_type": _ASN1Type.BitString}
except ImportError:  # pragma: no cover - cryptography always had it so far
    _BIT_STRING = {}

__all__ = [
    "DEFAULT_ORGANISATIONS", "DEVICE_EUI_PREFIX", "ORG_POLICY", "DEVICE_POLICY", "default_device_eui",
    "device_euis", "PkiIssuer", "PkiSummary", "init_pki", "add_devices",
]

log = logging.getLogger(__name__)

#: Organisation EUIs of the test PKI, by role (distinct from every RTDS EUI).
DEFAULT_ORGANISATIONS: dict[Role, bytes] = {
    Role.RECOVERY: as_eui("90B3D51FEE000001"),
    Role.ACCESS_CONTROL_BROKER: as_eui("90B3D51FEE000002"),
    Role.TRANSITIONAL_COS: as_eui("90B3D51FEE000004"),
    Role.WAN_PROVIDER: as_eui("90B3D51FEE000007"),
    Role.SUPPLIER: as_eui("90B3D51FEE010000"),
    Role.NETWORK_OPERATOR: as_eui("90B3D51FEE020000"),
    Role.LOAD_CONTROLLER: as_eui("90B3D51FEE010008"),
}
_ORG_NAMES = {
    Role.RECOVERY: "GBCS-EMU TEST RECOVERY", Role.ACCESS_CONTROL_BROKER: "GBCS-EMU TEST ACB",
    Role.TRANSITIONAL_COS: "GBCS-EMU TEST TRANSCOS", Role.WAN_PROVIDER: "GBCS-EMU TEST WAN PROVIDER",
    Role.SUPPLIER: "GBCS-EMU TEST SUPPLIER", Role.NETWORK_OPERATOR: "GBCS-EMU TEST NETWORK OPERATOR",
    Role.LOAD_CONTROLLER: "GBCS-EMU TEST LOAD CONTROLLER",
}
DEVICE_EUI_PREFIX = bytes.fromhex("00DB00000000")
#: Certificate policies as in the RTDS certificates (organisation and device SMKI policies).
ORG_POLICY = ObjectIdentifier("1.2.826.0.1.8641679.1.2.1.4")
DEVICE_POLICY = ObjectIdentifier("1.2.826.0.1.1800000.1.2.1.4")

_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_NOT_BEFORE = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
_NOT_AFTER = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.timezone.utc)
_CA_FILES = {"root": "root", "org": "org-ca", "device": "device-ca"}
_KEYSTORE_FILE = re.compile(r"^[0-9a-fA-F]{16}-(ds|ka|pp-ka)\.(pem|key)$")


def default_device_eui(index: int) -> bytes:
    """The n-th default device EUI, 00DB00000000nnnn (n from 1)."""
    if not 1 <= index <= 0xFFFF:
        raise KeystoreError(f"default device index must be 1..65535, got {index}")
    return DEVICE_EUI_PREFIX + index.to_bytes(2, "big")


def device_euis(devices: int | Iterable[EuiLike]) -> list[bytes]:
    """Device EUIs from a count (default EUIs 1..n) or an explicit list (normalised, duplicates dropped)."""
    if isinstance(devices, int):
        if devices < 0:
            raise KeystoreError(f"device count must be >= 0, got {devices}")
        return [default_device_eui(i) for i in range(1, devices + 1)]
    out: list[bytes] = []
    for d in devices:
        eui = as_eui(d)
        if eui not in out:
            out.append(eui)
    return out


class _Randomness:
    """Where keys and serials come from: a seed (reproducible test fixtures) or the OS."""

    def __init__(self, seed: int | None):
        self.seed = seed

    def _digest(self, purpose: str, label: str) -> bytes:
        return hashlib.sha256(f"gbcs-emu test pki|seed={self.seed}|{purpose}|{label}".encode()).digest()

    def private_key(self, label: str) -> ec.EllipticCurvePrivateKey:
        if self.seed is None:
            return ecc.generate_private_key()
        scalar = int.from_bytes(self._digest("key", label), "big") % (_P256_ORDER - 1) + 1
        return ecc.generate_private_key(scalar)

    def serial(self, label: str) -> int:
        if self.seed is None:
            return x509.random_serial_number()
        return (int.from_bytes(self._digest("serial", label)[:16], "big") >> 1) | 1

    @property
    def deterministic(self) -> bool:
        return self.seed is not None


def _ski(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """8-byte key identifier like the RTDS certificates (leading bytes of SHA-256 of the public point)."""
    return hashlib.sha256(ecc.public_point(public_key)).digest()[:8]


@dataclass(repr=False)
class _Ca:
    name: x509.Name
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    def __repr__(self) -> str:
        return f"<CA {self.name.rfc4514_string()}>"


class PkiIssuer:
    """The three test CAs and the operations that issue organisation and device key pairs into a Keystore."""

    def __init__(self, seed: int | None = None, *, _cas: dict[str, _Ca] | None = None):
        self._rng = _Randomness(seed)
        self.seed = seed
        if _cas is not None:
            self._cas = _cas
            return
        root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "GBCS-EMU Test Root")])
        root_key = self._rng.private_key("ca:root")
        root = _Ca(root_name, root_key, self._ca_cert(root_name, root_key, root_name, root_key, "ca:root", None))
        org_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, Role.ISSUING_CA.ou),
                              x509.NameAttribute(NameOID.COMMON_NAME, "Z1")])
        dev_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "E357")])
        self._cas = {"root": root}
        for kind, name in (("org", org_name), ("device", dev_name)):
            key = self._rng.private_key(f"ca:{kind}")
            self._cas[kind] = _Ca(name, key, self._ca_cert(name, key, root_name, root_key, f"ca:{kind}", 0))

    def __repr__(self) -> str:
        return f"<PkiIssuer seed={'set' if self.seed is not None else 'none'}>"

    # -- certificates -------------------------------------------------------------------------------------------

    def _sign(self, builder: x509.CertificateBuilder, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
        if self._rng.deterministic:
            try:
                return builder.sign(key, hashes.SHA256(), ecdsa_deterministic=True)
            except TypeError:  # pragma: no cover - cryptography < 44
                pass
        return builder.sign(key, hashes.SHA256())

    def _ca_cert(self, subject: x509.Name, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
                 issuer_key: ec.EllipticCurvePrivateKey, label: str, path_length: int | None) -> x509.Certificate:
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
             .serial_number(self._rng.serial(label)).not_valid_before(_NOT_BEFORE).not_valid_after(_NOT_AFTER)
             .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
             .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                          data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                          crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
             .add_extension(x509.SubjectKeyIdentifier(_ski(key.public_key())), critical=False))
        if issuer_key is not key:
            b = b.add_extension(x509.AuthorityKeyIdentifier(_ski(issuer_key.public_key()), None, None), critical=False)
        return self._sign(b, issuer_key)

    def _end_entity(self, ca: _Ca, subject: x509.Name, public_key: ec.EllipticCurvePublicKey, usage: Usage,
                    policy: ObjectIdentifier, label: str, san: x509.SubjectAlternativeName | None) -> x509.Certificate:
        ds = usage is Usage.DS
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca.name).public_key(public_key)
             .serial_number(self._rng.serial(label)).not_valid_before(_NOT_BEFORE).not_valid_after(_NOT_AFTER)
             .add_extension(x509.KeyUsage(digital_signature=ds, content_commitment=False, key_encipherment=False,
                                          data_encipherment=False, key_agreement=not ds, key_cert_sign=False,
                                          crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
             .add_extension(x509.SubjectKeyIdentifier(_ski(public_key)), critical=False))
        if san is not None:
            b = b.add_extension(san, critical=True)
        b = (b.add_extension(x509.CertificatePolicies([x509.PolicyInformation(policy, None)]), critical=True)
             .add_extension(x509.AuthorityKeyIdentifier(_ski(ca.key.public_key()), None, None), critical=False))
        return self._sign(b, ca.key)

    @property
    def root_certificate(self) -> x509.Certificate:
        return self._cas["root"].cert

    @property
    def organisation_ca_certificate(self) -> x509.Certificate:
        return self._cas["org"].cert

    @property
    def device_ca_certificate(self) -> x509.Certificate:
        return self._cas["device"].cert

    def issue_organisation(self, keystore: Keystore, role: Role, eui: EuiLike, *, name: str | None = None,
                           prepayment: bool | None = None) -> None:
        """DS and KA key pairs (and, for suppliers by default, a prepayment KA pair) for one remote party."""
        role, eui = Role(role), as_eui(eui)
        if role is Role.ISSUING_CA:
            raise KeystoreError("role 07 is the issuing CA itself, not a remote party")
        usages = [Usage.DS, Usage.KA]
        if prepayment if prepayment is not None else role is Role.SUPPLIER:
            usages.append(Usage.PP_KA)
        for usage in usages:
            attrs = []
            cn = name if name is not None else _ORG_NAMES.get(role)
            if usage is Usage.DS and cn:  # RTDS puts the organisation name only in the DS certificate
                attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role.ou))
            attrs.append(x509.NameAttribute(OID_X500_UNIQUE_IDENTIFIER, b"\x00" + eui, **_BIT_STRING))
            label = f"{eui.hex()}-{usage.value}"
            key = self._rng.private_key(label)
            cert = self._end_entity(self._cas["org"], x509.Name(attrs), key.public_key(), usage, ORG_POLICY, label,
                                    None)
            keystore.add_certificate(cert, prepayment=usage is Usage.PP_KA, source=f"<test pki {label}>")
            keystore.add_private_key(key, eui, usage)

    def device_private_key(self, eui: EuiLike, usage: Usage | str) -> ec.EllipticCurvePrivateKey:
        """The private key `issue_device` gives this device for `usage` (deterministic with a seed): for hosts that
        derive a million devices' keys lazily and make certificates only when asked."""
        return self._rng.private_key(f"{as_eui(eui).hex()}-{Usage(usage).value}")

    def issue_device(self, keystore: Keystore, eui: EuiLike) -> None:
        """DS and KA key pairs for one device: empty subject, EUI in the hwModuleName SubjectAltName."""
        eui = as_eui(eui)
        san = x509.SubjectAlternativeName([x509.OtherName(OID_HW_MODULE_NAME, hw_module_name(eui))])
        for usage in (Usage.DS, Usage.KA):
            label = f"{eui.hex()}-{usage.value}"
            key = self.device_private_key(eui, usage)
            cert = self._end_entity(self._cas["device"], x509.Name([]), key.public_key(), usage, DEVICE_POLICY,
                                    label, san)
            keystore.add_certificate(cert, source=f"<test pki {label}>")
            keystore.add_private_key(key, eui, usage)

    # -- persistence --------------------------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike) -> list[Path]:
        """Write the CA certificates and keys (`ca/` of a test PKI)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        written = []
        for kind, stem in _CA_FILES.items():
            ca = self._cas[kind]
            cert_path = d / f"{stem}.pem"
            cert_path.write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
            key_path = d / f"{stem}.key"
            _write_private(key_path, ca.key)
            written += [cert_path, key_path]
        return written

    @classmethod
    def load(cls, directory: str | os.PathLike, seed: int | None = None) -> "PkiIssuer":
        """The CAs saved by `save` (to issue more devices into an existing test PKI)."""
        d = Path(directory)
        cas = {}
        for kind, stem in _CA_FILES.items():
            try:
                cert = x509.load_pem_x509_certificate((d / f"{stem}.pem").read_bytes())
                key = serialization.load_pem_private_key((d / f"{stem}.key").read_bytes(), password=None)
            except FileNotFoundError:
                raise KeystoreError(f"test PKI CA files missing in {d} ({stem}.pem/.key)") from None
            except ValueError:
                raise KeystoreError(f"test PKI CA {stem} in {d} is unreadable") from None
            if not isinstance(key, ec.EllipticCurvePrivateKey) or ecc.public_point(key) != ecc.public_point(cert):
                raise KeystoreError(f"test PKI CA {stem}: key and certificate do not match")
            cas[kind] = _Ca(cert.subject, key, cert)
        return cls(seed, _cas=cas)


@dataclass
class PkiSummary:
    """What `init_pki` made (EUIs and paths only)."""

    directory: Path
    organisations: dict[Role, bytes]
    devices: list[bytes]
    files: list[Path] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict:
        return {
            "organisations": {r.name.lower(): eui_hex(e) for r, e in self.organisations.items()},
            "devices": [eui_hex(e) for e in self.devices],
        }


def _manifest_path(directory: Path) -> Path:
    return directory / "pki.json"


def _write_manifest(directory: Path, summary: PkiSummary, seed: int | None) -> Path:
    path = _manifest_path(directory)
    data = {"format": "gbcs-emu test pki 1", "seed": seed, **summary.as_dict(),
            "ca": {k: f"ca/{v}.pem" for k, v in _CA_FILES.items()}}
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def _remove_pki_files(d: Path) -> None:
    """Delete what a previous `init_pki` wrote (keystore files, CA files, manifest) and nothing else, so an
    overwritten directory never mixes certificates from two PKIs."""
    for child in d.iterdir():
        if child.is_file() and (_KEYSTORE_FILE.match(child.name) or child.name == "pki.json"):
            child.unlink()
    ca = d / "ca"
    if ca.is_dir():
        for stem in _CA_FILES.values():
            for suffix in (".pem", ".key"):
                (ca / f"{stem}{suffix}").unlink(missing_ok=True)


def init_pki(directory: str | os.PathLike, devices: list[str] | list[bytes] | int = 1, seed: int | None = None, *,
             organisations: Mapping[Role, EuiLike] | None = None, overwrite: bool = False) -> PkiSummary:
    """Create a test PKI in `directory`: CAs, every organisation role, and `devices` (a count or EUIs).

    Refuses to write into a directory that already holds keys unless `overwrite`, which first removes the
    keystore files, CA files and manifest found there (other files are left alone)."""
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise KeystoreError(f"{d} exists and is not a directory")
    if d.is_dir() and not overwrite and (any(d.glob("*.pem")) or any(d.glob("*.key")) or (d / "ca").exists()):
        raise KeystoreError(f"{d} already holds keys; pass overwrite=True (--force) to replace them")
    orgs = {Role(r): as_eui(e) for r, e in (organisations or DEFAULT_ORGANISATIONS).items()}
    devs = device_euis(devices)
    clash = set(orgs.values()) & set(devs)
    if clash:
        raise KeystoreError(f"device EUIs clash with organisation EUIs: {', '.join(map(eui_hex, sorted(clash)))}")
    if len(set(orgs.values())) != len(orgs):
        raise KeystoreError("two organisation roles share one EUI")
    issuer = PkiIssuer(seed)
    ks = Keystore()
    if overwrite and d.is_dir():
        _remove_pki_files(d)
    for role, eui in orgs.items():
        issuer.issue_organisation(ks, role, eui)
    for eui in devs:
        issuer.issue_device(ks, eui)
    d.mkdir(parents=True, exist_ok=True)
    summary = PkiSummary(d, orgs, devs)
    summary.files = ks.save(d) + issuer.save(d / "ca")
    summary.files.append(_write_manifest(d, summary, seed))
    log.info("test PKI: wrote %d files to %s (%d organisations, %d devices)", len(summary.files), d, len(orgs),
             len(devs))
    return summary


def add_devices(directory: str | os.PathLike, devices: list[str] | list[bytes] | int,
                seed: int | None = None) -> list[bytes]:
    """Issue more devices into an existing test PKI (a count continues after the highest default device)."""
    d = Path(directory)
    issuer = PkiIssuer.load(d / "ca", seed)
    existing = Keystore(d)
    if isinstance(devices, int):
        used = [int.from_bytes(e[6:], "big") for e in existing.euis() if e[:6] == DEVICE_EUI_PREFIX]
        start = max(used, default=0) + 1
        new = [default_device_eui(i) for i in range(start, start + devices)]
    else:
        new = [e for e in device_euis(devices) if e not in existing]
    ks = Keystore()
    for eui in new:
        issuer.issue_device(ks, eui)
    ks.save(d)
    manifest = _manifest_path(d)
    if manifest.exists():
        data = json.loads(manifest.read_text())
        data["devices"] = data.get("devices", []) + [eui_hex(e) for e in new]
        manifest.write_text(json.dumps(data, indent=2) + "\n")
    return new
