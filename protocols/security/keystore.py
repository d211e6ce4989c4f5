"""The GBCS keystore: certificates and key pairs of remote parties and devices, looked up by EUI.

Directory layout (as in the RTDS `keystore/` folder, and as `save` writes it)::

    <eui>-ds.pem     DS (signing) certificate          <eui>-ds.key     its private key (PEM, PKCS8)
    <eui>-ka.pem     KA (key agreement) certificate    <eui>-ka.key     its private key
    <eui>-pp-ka.pem  supplier prepayment KA cert       <eui>-pp-ka.key  its private key

Keys are filed under the EUI **inside the certificate** (organisations: subject x500UniqueIdentifier, OID
2.5.4.45; devices: SubjectAltName otherName hwModuleName, OID 1.3.6.1.5.5.7.8.4, whose hwSerialNum is the EUI),
not under the file name: RTDS's `90b3d51f30000007-ka.*` is really Supplier 2's (90B3D51F30030000) key pair.
A private key is paired with the certificate whose public key matches it. Only files without a certificate
(a bare public key such as `fffffffffffffffe-ka.pem`, or a private key whose public key appears in no
certificate) fall back to the EUI and usage in the file name. DS vs KA comes from the certificate's KeyUsage;
"prepayment" KA can only come from the file name (the certificates are otherwise identical).

Nothing here ever logs, formats or reprs private keys or shared secrets.
"""
from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from pathlib import Path
from typing import Iterator

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier

from protocols.security import ecc
from protocols.security.errors import KeystoreError, SecurityError
from protocols.security.eui import EuiLike, as_eui, eui_hex

__all__ = [
    "Usage", "Role", "KeyEntry", "Keystore", "OID_HW_MODULE_NAME", "OID_X500_UNIQUE_IDENTIFIER",
    "eui_from_certificate", "role_from_certificate", "usage_from_certificate", "hw_module_name",
]

log = logging.getLogger(__name__)

OID_X500_UNIQUE_IDENTIFIER = NameOID.X500_UNIQUE_IDENTIFIER  # 2.5.4.45
OID_HW_MODULE_NAME = ObjectIdentifier("1.3.6.1.5.5.7.8.4")
#: hwType of GBCS device certificates (RTDS value).
OID_GBCS_HW_TYPE = ObjectIdentifier("1.2.826.0.1.8641679.1.2.2.1")

_FILE_RE = re.compile(r"^(?P<eui>[0-9a-fA-F]{16})-(?P<usage>ds|ka|pp-ka)\.(?P<ext>pem|key)$", re.IGNORECASE)


class Usage(str, Enum):
    """Which of a party's key pairs: signing, key agreement, or the supplier's prepayment (UTRN) key agreement."""

    DS = "ds"
    KA = "ka"
    PP_KA = "pp-ka"

    def __str__(self) -> str:
        return self.value


_USAGES: dict[object, Usage] = {}
for _u in Usage:
    _USAGES[_u.value] = _u
    _USAGES[_u.value.upper()] = _u
    _USAGES[_u.value.replace("-", "_")] = _u
    _USAGES[_u.value.replace("-", "_").upper()] = _u


def _usage(value: Usage | str) -> Usage:
    try:
        return _USAGES[value]
    except (KeyError, TypeError):
        raise SecurityError(f"key usage must be one of ds, ka, pp-ka; got {value!r}") from None


class Role(IntEnum):
    """Remote-party role: the 2-hex-digit subject OU of organisation certificates (GBCS 4.3.2)."""

    RECOVERY = 0x01
    SUPPLIER = 0x02
    NETWORK_OPERATOR = 0x03
    ACCESS_CONTROL_BROKER = 0x04
    TRANSITIONAL_COS = 0x05
    WAN_PROVIDER = 0x06
    ISSUING_CA = 0x07
    LOAD_CONTROLLER = 0x08

    @property
    def ou(self) -> str:
        """The OU text used in certificates, e.g. '02'."""
        return f"{self.value:02X}"


# ---------------------------------------------------------------------------------------------------------------
# certificate inspection


def _der_tlv(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """One DER TLV at `pos`: (tag, value, next position). Only what hwModuleName needs (lengths up to 2 bytes)."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER")
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 2 or pos + n > len(data):
            raise ValueError("unsupported DER length")
        length = int.from_bytes(data[pos:pos + n], "big")
        pos += n
    if pos + length > len(data):
        raise ValueError("truncated DER")
    return tag, data[pos:pos + length], pos + length


def _hw_serial_from_other_name(value: bytes) -> bytes | None:
    """hwSerialNum of a HardwareModuleName ::= SEQUENCE { hwType OID, hwSerialNum OCTET STRING } (RFC 4108)."""
    try:
        tag, body, _ = _der_tlv(value, 0)
        if tag == 0xA0:  # tolerate an explicit [0] wrapper
            tag, body, _ = _der_tlv(body, 0)
        if tag != 0x30:
            return None
        tag, _, pos = _der_tlv(body, 0)
        if tag != 0x06:
            return None
        tag, serial, _ = _der_tlv(body, pos)
        return serial if tag == 0x04 else None
    except ValueError:
        return None


def hw_module_name(eui: EuiLike, hw_type: ObjectIdentifier = OID_GBCS_HW_TYPE) -> bytes:
    """DER HardwareModuleName {hwType, hwSerialNum = EUI}, the value of a device certificate's otherName."""
    oid = hw_type.dotted_string.split(".")
    arcs = [int(a) for a in oid]
    body = bytearray((40 * arcs[0] + arcs[1],))
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    oid_tlv = bytes((0x06, len(body))) + bytes(body)
    serial = bytes((0x04, 8)) + as_eui(eui)
    inner = oid_tlv + serial
    return bytes((0x30, len(inner))) + inner


def eui_from_certificate(cert: x509.Certificate) -> bytes | None:
    """The EUI a GBCS certificate is about: subject x500UniqueIdentifier (organisations) or hwModuleName (devices)."""
    for attr in cert.subject.get_attributes_for_oid(OID_X500_UNIQUE_IDENTIFIER):
        value = attr.value
        if isinstance(value, str):
            try:
                value = bytes.fromhex(value)
            except ValueError:
                continue
        if len(value) == 9 and value[0] == 0:  # BIT STRING content: unused-bits byte, then the 8 bytes
            return bytes(value[1:])
        if len(value) == 8:
            return bytes(value)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for name in san:
        if isinstance(name, x509.OtherName) and name.type_id == OID_HW_MODULE_NAME:
            serial = _hw_serial_from_other_name(name.value)
            if serial is not None and len(serial) == 8:
                return serial
    return None


def role_from_certificate(cert: x509.Certificate) -> Role | None:
    """Role from the subject OU of an organisation certificate; None for device certificates or unknown OUs."""
    for attr in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME):
        try:
            return Role(int(str(attr.value), 16))
        except ValueError:
            continue
    return None


def usage_from_certificate(cert: x509.Certificate) -> Usage | None:
    """DS when KeyUsage says digitalSignature only, KA when keyAgreement only; None when it cannot tell."""
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if ku.digital_signature and not ku.key_agreement:
        return Usage.DS
    if ku.key_agreement and not ku.digital_signature:
        return Usage.KA
    return None


def _is_device_certificate(cert: x509.Certificate) -> bool:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return any(isinstance(n, x509.OtherName) and n.type_id == OID_HW_MODULE_NAME for n in san)


# ---------------------------------------------------------------------------------------------------------------
# entries


@dataclass(eq=False)
class KeyEntry:
    """One key pair of one party: public key (always), certificate and private key when known."""

    eui: bytes
    usage: Usage
    public_key: ec.EllipticCurvePublicKey = field(repr=False)
    certificate: x509.Certificate | None = field(default=None, repr=False)
    private_key: ec.EllipticCurvePrivateKey | None = field(default=None, repr=False)
    sources: list[str] = field(default_factory=list, repr=False)

    @property
    def point(self) -> bytes:
        """Uncompressed public point: the key pair's identity."""
        return ecc.public_point(self.public_key)

    def __repr__(self) -> str:
        return (f"KeyEntry(eui={eui_hex(self.eui)}, usage={self.usage.value}, "
                f"certificate={'yes' if self.certificate is not None else 'no'}, "
                f"private_key={'present' if self.private_key is not None else 'absent'})")

    __str__ = __repr__


_PEM_RE = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")


class Keystore:
    """Certificates and keys by (EUI, usage), loaded from one or more directories in the RTDS layout.

    Lookups accept an EUI as bytes or hex text. Private-key getters return None when the key is absent (for
    instance every RTDS device). `shared_secret` caches ECDH per pair of parties, which is what makes MAC checks
    cheap."""

    def __init__(self, directory: str | os.PathLike | None = None):
        self._entries: dict[tuple[bytes, Usage], KeyEntry] = {}
        self._by_point: dict[bytes, tuple[bytes, Usage]] = {}
        self._secrets: dict[tuple[bytes, Usage, bytes], bytes | None] = {}
        self._lock = threading.RLock()
        self.directories: list[Path] = []
        self.problems: list[str] = []  # files that could not be used, with the reason (no key material)
        if directory is not None:
            self.load(directory)

    # -- loading --------------------------------------------------------------------------------------------

    def load(self, directory: str | os.PathLike) -> None:
        """Add every `<eui>-<usage>.pem|.key` file of `directory` (certificates and public keys first)."""
        path = Path(directory)
        if not path.is_dir():
            raise KeystoreError(f"keystore directory not found: {path}")
        files = []
        for child in sorted(path.iterdir()):
            m = _FILE_RE.match(child.name)
            if m is None or not child.is_file():
                if child.is_file():
                    log.debug("keystore: ignoring %s (not <eui>-<usage>.pem|.key)", child.name)
                continue
            try:
                data = child.read_bytes()
            except OSError as e:
                self._problem(child.name, f"unreadable: {e.strerror}")
                continue
            kinds = {k.decode() for k in _PEM_RE.findall(data)}
            files.append((child.name, as_eui(m["eui"]), _usage(m["usage"].lower()), data, kinds))
        with self._lock:
            self.directories.append(path)
            for name, eui, usage, data, kinds in files:
                if "CERTIFICATE" in kinds:
                    self._load_certificate(name, eui, usage, data)
                elif "PUBLIC KEY" in kinds:
                    self._load_public_key(name, eui, usage, data)
            for name, eui, usage, data, kinds in files:
                if any(k.endswith("PRIVATE KEY") for k in kinds):
                    self._load_private_key(name, eui, usage, data)
                elif not kinds & {"CERTIFICATE", "PUBLIC KEY"}:
                    self._problem(name, "no PEM certificate or key")
            self._secrets.clear()
        log.info("keystore: loaded %s: %d EUIs, %d key pairs, %d with private keys", path, len(self.euis()),
                 len(self._entries), sum(1 for e in self._entries.values() if e.private_key is not None))

    def _problem(self, name: str, reason: str) -> None:
        self.problems.append(f"{name}: {reason}")
        log.warning("keystore: %s: %s", name, reason)

    def _load_certificate(self, name: str, file_eui: bytes, file_usage: Usage, data: bytes) -> None:
        try:
            cert = x509.load_pem_x509_certificate(data)
            self.add_certificate(cert, prepayment=file_usage is Usage.PP_KA, source=name,
                                 fallback_eui=file_eui, fallback_usage=file_usage)
        except (ValueError, SecurityError) as e:
            self._problem(name, f"unusable certificate ({e})")

    def _load_public_key(self, name: str, eui: bytes, usage: Usage, data: bytes) -> None:
        try:
            self.add_public_key(eui, usage, ecc.load_public_key(data), source=name)
        except (ValueError, SecurityError) as e:
            self._problem(name, f"unusable public key ({type(e).__name__})")

    def _load_private_key(self, name: str, eui: bytes, usage: Usage, data: bytes) -> None:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            # never echo the exception text: it could quote the file's contents
            self._problem(name, "unreadable private key (encrypted or malformed)")
            return
        try:
            self.add_private_key(key, eui=eui, usage=usage, source=name)
        except SecurityError as e:
            self._problem(name, str(e))

    # -- adding -----------------------------------------------------------------------------------------------

    def add_certificate(self, cert: x509.Certificate | bytes, *, prepayment: bool = False, source: str | None = None,
                        fallback_eui: EuiLike | None = None, fallback_usage: Usage | str | None = None) -> KeyEntry:
        """File a certificate (object, PEM or DER) under the EUI and usage it states.

        `prepayment` marks a KA certificate as the supplier's prepayment key (nothing in the certificate says so).
        The fallbacks are used only when the certificate lacks an EUI or a decisive KeyUsage."""
        if isinstance(cert, (bytes, bytearray)):
            data = bytes(cert)
            cert = (x509.load_pem_x509_certificate(data) if data.lstrip().startswith(b"-----")
                    else x509.load_der_x509_certificate(data))
        public = ecc.load_public_key(cert)
        eui = eui_from_certificate(cert)
        if eui is None:
            if fallback_eui is None:
                raise KeystoreError("certificate carries no EUI (no x500UniqueIdentifier or hwModuleName)")
            eui = as_eui(fallback_eui)
        usage = usage_from_certificate(cert)
        if usage is None:
            if fallback_usage is None:
                raise KeystoreError(f"certificate for {eui_hex(eui)} has no decisive KeyUsage")
            usage = _usage(fallback_usage)
        if usage is Usage.KA and (prepayment or (fallback_usage is not None and _usage(fallback_usage) is Usage.PP_KA)):
            usage = Usage.PP_KA
        source = source or f"<certificate {eui_hex(eui)}-{usage.value}>"
        if fallback_eui is not None and as_eui(fallback_eui) != eui:
            log.info("keystore: %s holds the %s certificate of %s (filed under the certificate's EUI)",
                     source, usage.value, eui_hex(eui))
        with self._lock:
            entry = self._put(eui, usage, public, source, cert=cert)
            self._secrets.clear()
        return entry

    def add_public_key(self, eui: EuiLike, usage: Usage | str, public_key: ecc.PublicKeyLike,
                       source: str | None = None) -> KeyEntry:
        """File a bare public key (no certificate) under the given EUI and usage."""
        eui, usage = as_eui(eui), _usage(usage)
        public = ecc.load_public_key(public_key)
        with self._lock:
            entry = self._put(eui, usage, public, source or f"<public key {eui_hex(eui)}-{usage.value}>")
            self._secrets.clear()
        return entry

    def add_private_key(self, private_key: ec.EllipticCurvePrivateKey, eui: EuiLike | None = None,
                        usage: Usage | str | None = None, source: str | None = None) -> KeyEntry:
        """Pair a private key with the certificate/public key that matches it; `eui`/`usage` only file a key no
        certificate matches (they are ignored, with a log line, when a certificate says otherwise)."""
        if not isinstance(private_key, ec.EllipticCurvePrivateKey) or not isinstance(private_key.curve,
                                                                                     ec.SECP256R1):
            raise KeystoreError("not a P-256 private key")
        point = ecc.public_point(private_key)
        with self._lock:
            where = self._by_point.get(point)
            if where is not None:
                entry = self._entries[where]
                if eui is not None and (as_eui(eui), _usage(usage or entry.usage)) != where:
                    log.info("keystore: %s is the private key of %s %s (matched by public key)",
                             source or "private key", eui_hex(where[0]), where[1].value)
                if source:
                    entry.sources.append(source)
            else:
                if eui is None or usage is None:
                    raise KeystoreError("private key matches no known public key; give its EUI and usage")
                eui, usage = as_eui(eui), _usage(usage)
                existing = self._entries.get((eui, usage))
                if existing is not None and existing.point != point:
                    raise KeystoreError(f"private key does not match the known {usage.value} public key of "
                                        f"{eui_hex(eui)}")
                entry = self._put(eui, usage, private_key.public_key(),
                                  source or f"<private key {eui_hex(eui)}-{usage.value}>")
            entry.private_key = private_key
            self._secrets.clear()
        return entry

    def _put(self, eui: bytes, usage: Usage, public: ec.EllipticCurvePublicKey, source: str,
             cert: x509.Certificate | None = None) -> KeyEntry:
        point = ecc.public_point(public)
        existing = self._entries.get((eui, usage))
        if existing is not None:
            if existing.point == point:
                if cert is not None and existing.certificate is None:
                    existing.certificate = cert
                existing.sources.append(source)
                return existing
            # Two different keys claim (eui, usage): keep the one whose file name agrees with its contents.
            name_agrees = source.lower().startswith(eui.hex())
            old_agrees = any(s.lower().startswith(eui.hex()) for s in existing.sources)
            if not (name_agrees and not old_agrees):
                self._problem(source, f"a different {usage.value} key of {eui_hex(eui)} is already loaded; kept "
                                      f"the one from {existing.sources[0]}")
                return existing
            self._by_point.pop(existing.point, None)
        entry = KeyEntry(eui=eui, usage=usage, public_key=public, certificate=cert, sources=[source])
        self._entries[(eui, usage)] = entry
        self._by_point[point] = (eui, usage)
        return entry

    # -- lookups ----------------------------------------------------------------------------------------------

    def entry(self, eui: EuiLike, usage: Usage | str) -> KeyEntry | None:
        """The entry for (EUI, usage), or None."""
        return self._entries.get((as_eui(eui), _usage(usage)))

    def entries(self) -> Iterator[KeyEntry]:
        """Every entry, sorted by EUI then usage."""
        return iter(sorted(self._entries.values(), key=lambda e: (e.eui, e.usage.value)))

    def euis(self) -> list[bytes]:
        """Every EUI with at least one key, sorted."""
        return sorted({eui for eui, _ in self._entries})

    # Getters return None rather than raising: "no key" is a normal answer (RTDS has no device private keys).

    def public_key(self, eui: EuiLike, usage: Usage | str) -> ec.EllipticCurvePublicKey | None:
        e = self.entry(eui, usage)
        return e.public_key if e is not None else None

    def private_key(self, eui: EuiLike, usage: Usage | str) -> ec.EllipticCurvePrivateKey | None:
        e = self.entry(eui, usage)
        return e.private_key if e is not None else None

    def x509_certificate(self, eui: EuiLike, usage: Usage | str) -> x509.Certificate | None:
        e = self.entry(eui, usage)
        return e.certificate if e is not None else None

    def certificate(self, eui: EuiLike, usage: Usage | str) -> bytes | None:
        """DER bytes of the (EUI, usage) certificate (what URP commands carry in other-info), or None."""
        cert = self.x509_certificate(eui, usage)
        return cert.public_bytes(serialization.Encoding.DER) if cert is not None else None

    def ka_public(self, eui: EuiLike) -> ec.EllipticCurvePublicKey | None:
        return self.public_key(eui, Usage.KA)

    def ds_public(self, eui: EuiLike) -> ec.EllipticCurvePublicKey | None:
        return self.public_key(eui, Usage.DS)

    def pp_ka_public(self, eui: EuiLike) -> ec.EllipticCurvePublicKey | None:
        return self.public_key(eui, Usage.PP_KA)

    def ka_private(self, eui: EuiLike) -> ec.EllipticCurvePrivateKey | None:
        return self.private_key(eui, Usage.KA)

    def ds_private(self, eui: EuiLike) -> ec.EllipticCurvePrivateKey | None:
        return self.private_key(eui, Usage.DS)

    def pp_ka_private(self, eui: EuiLike) -> ec.EllipticCurvePrivateKey | None:
        return self.private_key(eui, Usage.PP_KA)

    def role(self, eui: EuiLike) -> Role | None:
        """Role from the OU of any of the party's organisation certificates; None for devices and unknown EUIs."""
        eui = as_eui(eui)
        for usage in Usage:
            e = self._entries.get((eui, usage))
            if e is not None and e.certificate is not None:
                role = role_from_certificate(e.certificate)
                if role is not None:
                    return role
        return None

    def is_device(self, eui: EuiLike) -> bool:
        """True when a certificate of this EUI is a device certificate (hwModuleName SAN)."""
        eui = as_eui(eui)
        return any(e.certificate is not None and _is_device_certificate(e.certificate)
                   for (x, _), e in self._entries.items() if x == eui)

    def find_public_key(self, key: ecc.PublicKeyLike) -> tuple[bytes, Usage] | None:
        """(EUI, usage) of the entry holding this public key, or None."""
        return self._by_point.get(ecc.public_point(key))

    def shared_secret(self, eui_a: EuiLike, eui_b: EuiLike, usage: Usage | str = Usage.KA) -> bytes | None:
        """ECDH secret Z between party A's `usage` key ("ka", or "pp-ka" for UTRNs) and party B's KA key.

        Uses whichever side has a private key (ECDH is symmetric) and caches the result per pair; None when
        neither side's private key, or either public key, is known."""
        eui_a, eui_b, usage = as_eui(eui_a), as_eui(eui_b), _usage(usage)
        cache_key = (eui_a, usage, eui_b)
        try:
            return self._secrets[cache_key]
        except KeyError:
            pass
        if usage is Usage.DS:
            raise SecurityError("ECDH needs KA keys; DS keys only sign")
        a = self._entries.get((eui_a, usage))
        b = self._entries.get((eui_b, Usage.KA))
        secret = None
        if a is not None and b is not None:
            if a.private_key is not None:
                secret = ecc.ecdh_shared_secret(a.private_key, b.public_key)
            elif b.private_key is not None:
                secret = ecc.ecdh_shared_secret(b.private_key, a.public_key)
        with self._lock:
            self._secrets[cache_key] = secret
        return secret

    # -- saving -----------------------------------------------------------------------------------------------

    @staticmethod
    def _stem(eui: bytes, usage: Usage) -> str:
        return f"{eui.hex()}-{usage.value}"

    def save_certificate(self, directory: str | os.PathLike, eui: EuiLike, usage: Usage | str) -> Path:
        """Write `<eui>-<usage>.pem`: the certificate, or the bare public key when there is none."""
        e = self._require(eui, usage)
        path = Path(directory) / f"{self._stem(e.eui, e.usage)}.pem"
        path.parent.mkdir(parents=True, exist_ok=True)
        if e.certificate is not None:
            path.write_bytes(e.certificate.public_bytes(serialization.Encoding.PEM))
        else:
            path.write_bytes(e.public_key.public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo))
        return path

    def save_private_key(self, directory: str | os.PathLike, eui: EuiLike, usage: Usage | str) -> Path:
        """Write `<eui>-<usage>.key` (unencrypted PKCS8 PEM, mode 0600): a test keystore, not an HSM."""
        e = self._require(eui, usage)
        if e.private_key is None:
            raise KeystoreError(f"no {e.usage.value} private key for {eui_hex(e.eui)}")
        path = Path(directory) / f"{self._stem(e.eui, e.usage)}.key"
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_private(path, e.private_key)
        return path

    def save(self, directory: str | os.PathLike, *, private_keys: bool = True) -> list[Path]:
        """Write every entry in the keystore layout; returns the files written."""
        written = []
        for e in self.entries():
            written.append(self.save_certificate(directory, e.eui, e.usage))
            if private_keys and e.private_key is not None:
                written.append(self.save_private_key(directory, e.eui, e.usage))
        return written

    def _require(self, eui: EuiLike, usage: Usage | str) -> KeyEntry:
        e = self.entry(eui, usage)
        if e is None:
            raise KeystoreError(f"no {_usage(usage).value} key for {eui_hex(eui)}")
        return e

    # -- dunder -----------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.euis())

    def __contains__(self, eui: object) -> bool:
        try:
            key = as_eui(eui)  # type: ignore[arg-type]
        except SecurityError:
            return False
        return any(x == key for x, _ in self._entries)

    def __repr__(self) -> str:
        dirs = ", ".join(str(d) for d in self.directories) or "in memory"
        n_priv = sum(1 for e in self._entries.values() if e.private_key is not None)
        return f"<Keystore {dirs}: {len(self.euis())} EUIs, {len(self._entries)} key pairs, {n_priv} private keys>"

    __str__ = __repr__

    def __getstate__(self):
        raise TypeError("Keystore objects hold private keys and are not picklable")


def _write_private(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """Write a private key PEM with owner-only permissions from the first byte."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.chmod(path, 0o600)
