"""Provisioning a device: its keys and trust anchors from a keystore.

Two situations:

* **Own PKI** (`gbcs-emu keys init`): the keystore holds the device's DS and KA private keys; the device uses them.
* **A keystore without device private keys** (RTDS): the device keeps the keystore's KA certificate (commands are
  MAC'd to it) and does every KA computation from the remote party's side (ECDH is symmetric, brief §3.8); it
  signs with a DS key pair of its own, issued by a local test CA (`self_issued_ds`), whose certificate the
  conformance runner saves so others can check the signatures.
"""
from __future__ import annotations

from cryptography.hazmat.primitives import serialization

from protocols.errors import GbcsEmuError
from protocols.security.eui import as_eui, eui_hex
from protocols.security.keystore import Keystore, Role, Usage
from protocols.security.pki import PkiIssuer

from firmware_emu.core.security import DeviceKeys

__all__ = ["ProvisioningError", "device_keys", "default_anchors", "ANCHOR_ROLES"]

#: Roles a device holds trust anchors for.
ANCHOR_ROLES = (Role.RECOVERY, Role.SUPPLIER, Role.NETWORK_OPERATOR, Role.ACCESS_CONTROL_BROKER,
                Role.TRANSITIONAL_COS, Role.WAN_PROVIDER, Role.LOAD_CONTROLLER)


class ProvisioningError(GbcsEmuError):
    pass


def default_anchors(keystore: Keystore) -> dict[Role, bytes]:
    """One anchor per role: the lowest organisation EUI of that role that has a DS or KA certificate."""
    anchors: dict[Role, bytes] = {}
    for eui in sorted(keystore.euis()):
        role = keystore.role(eui)
        if role in ANCHOR_ROLES and role not in anchors:
            anchors[role] = eui
    return anchors


def device_keys(keystore: Keystore, eui, *, issuer: PkiIssuer | None = None) -> DeviceKeys:
    """The `DeviceKeys` of device `eui`: its own private keys when the keystore has them, else (when an
    `issuer` is given) a self-issued DS key pair and remote-side key agreement."""
    eui = as_eui(eui)
    ka_cert = keystore.certificate(eui, Usage.KA)
    ds_private = keystore.ds_private(eui)
    ds_cert = keystore.certificate(eui, Usage.DS)
    if ds_private is None:
        if issuer is None:
            raise ProvisioningError(f"no DS private key for {eui_hex(eui)} and no CA to issue one")
        own = Keystore()
        issuer.issue_device(own, eui)
        ds_private, ds_cert = own.ds_private(eui), own.certificate(eui, Usage.DS)
        if ka_cert is None:
            ka_cert = own.certificate(eui, Usage.KA)
            keys = DeviceKeys(eui, ds_private, ds_cert, ka_cert, keystore, own.ka_private(eui))
            return keys
    if ka_cert is None:
        raise ProvisioningError(f"no KA certificate for {eui_hex(eui)}")
    return DeviceKeys(eui, ds_private, ds_cert, ka_cert, keystore, keystore.ka_private(eui))


def certificate_pem(der: bytes) -> bytes:
    from cryptography import x509
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
