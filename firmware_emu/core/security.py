"""A device's side of GBCS security: its keys, the checks on every inbound command, the wrapping of outputs.

Theory of operation
-------------------
`check_command(frame, ctx)` runs the GBCS command checks in a fixed order and either returns an
`InboundCommand` or raises `Rejection` naming the failed check and the GBCS alert that reports it:

1. the envelope parses (else: discarded; the device cannot even say who sent it);
2. it is a command (CRA 01) addressed to this device (else: discarded, `wrong_recipient`);
3. the message code is a use case this device type serves (else 0x8F1E, integrity of content or format);
4. the business originator (the supplementary remote party when the ACB routes a command on someone's behalf)
   holds a role this device trusts, by its trust anchors (else 0x8F53 `unknown_remote_party`), and that role
   may run the use case (else 0x8F30, source does not have authority);
5. the MAC: every command arrives in a `DD` MAC header keyed between the ACB and the device, except the few
   signature-only use cases, which arrive as bare `DF` and must be signed (else 0x8F53 `bad_mac`);
6. the signature: critical commands carry the originator's ECDSA signature, checked with that party's
   anchored DS key (else 0x8F53 `bad_signature` / `missing_signature`);
7. replay: for replay-protected use cases the originator counter must be greater than the last one accepted
   from that remote party (else 0x8F53 `replayed_counter`).

Nothing in the device changes before all checks pass; the caller records the counter only after the
handler ran. Outputs: `build_response` echoes the command counter; critical responses and all critical alerts are
`DF` only and signed with the device DS key, everything else is wrapped in `DD` with a MAC keyed device ↔
recipient. Keys are symmetric: `DeviceKeys.secret` uses the device's own KA private key when it has one, else
the peer's (RTDS ships no device private keys, brief §3.8), so an emulated device can MAC with RTDS keys.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from protocols.errors import DecodeError, GbcsEmuError
from protocols.gbcs.message import encode_grouping_header, split_payload, wrap_mac_header
from protocols.gbcs.registry import REGISTRY, UseCaseEntry
from protocols.security import ecc
from protocols.security.eui import as_eui, eui_hex
from protocols.security.kdf import KdfMode
from protocols.security.keystore import Keystore, Role
from protocols.security.mac import message_mac, verify_message_mac

from firmware_emu.core.alerts import AlertCode

log = logging.getLogger(__name__)

__all__ = [
    "ROLE_NAMES", "SIGNATURE_ONLY_USE_CASES", "DeviceKeys", "InboundCommand", "Rejection", "check_command",
    "build_response", "build_alert", "signed_part",
]

#: Registry role names (the appendix's "Remote Party Roles") → certificate roles.
ROLE_NAMES: dict[str, Role] = {
    "Supplier": Role.SUPPLIER, "Network Operator": Role.NETWORK_OPERATOR,
    "Access Control Broker": Role.ACCESS_CONTROL_BROKER, "Load Controller": Role.LOAD_CONTROLLER,
    "Recovery": Role.RECOVERY, "Transitional CoS": Role.TRANSITIONAL_COS, "WAN Provider": Role.WAN_PROVIDER,
}

#: Use cases that may arrive as a bare, signed `DF` (no ACB MAC): credential replacement signed by the party
#: whose anchor changes (brief §1.5: CS02a/CS02f signature variants, CS02b by recovery/TransCoS...).
SIGNATURE_ONLY_USE_CASES = frozenset({"CS02a", "CS02b", "CS02f", "CS02g"})

#: Who may run the credential-replacement use cases, which the appendix leaves to GBCS section 13.
#: Critical use cases whose command the ACB authorises with its MAC alone (the ACB replacing its own anchor,
#: CS02b ACB-by-ACB, 0x0104): no originator signature; the device still signs its response.
MAC_AUTHORISED_CODES = frozenset({0x0104})

#: Reads an unknown remote party may make through the ACB, carrying its KA certificate in other-information.
URP_USE_CASES = frozenset({"ECS21b", "GCS16b", "GCS61"})

_CREDENTIAL_ROLES = frozenset({Role.SUPPLIER, Role.NETWORK_OPERATOR, Role.ACCESS_CONTROL_BROKER, Role.RECOVERY,
                               Role.TRANSITIONAL_COS, Role.WAN_PROVIDER, Role.LOAD_CONTROLLER})

_MODES = {"command": KdfMode.COMMAND, "response": KdfMode.RESPONSE, "alert": KdfMode.ALERT}


class Rejection(GbcsEmuError):
    """A command failed a GBCS check: `reason` names it, `alert_code` is the alert the device raises (None:
    silently discarded), `header` is the parsed grouping header when there was one."""

    def __init__(self, reason: str, alert_code: int | None, message: str = "", header: dict | None = None,
                 entry: UseCaseEntry | None = None):
        super().__init__(message or reason)
        self.reason, self.alert_code, self.header, self.entry = reason, alert_code, header, entry


def _der(cert) -> bytes:
    if isinstance(cert, x509.Certificate):
        return cert.public_bytes(serialization.Encoding.DER)
    return bytes(cert)


@dataclass
class DeviceKeys:
    """A device's own key material and its view of the remote parties' keys.

    `peers` is a keystore of remote-party certificates (and, when the device has no KA private key of its own,
    their KA private keys: ECDH is symmetric). The device's DS private key is always its own."""

    eui: bytes
    ds_private: ec.EllipticCurvePrivateKey
    ds_certificate: bytes
    ka_certificate: bytes
    peers: Keystore
    ka_private: ec.EllipticCurvePrivateKey | None = None
    _secrets: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.eui = as_eui(self.eui)
        self.ds_certificate, self.ka_certificate = _der(self.ds_certificate), _der(self.ka_certificate)
        self._ka_public = ecc.load_public_key(self.ka_certificate)

    def secret(self, peer: bytes, peer_certificate: bytes | None = None) -> bytes | None:
        """ECDH Z between this device's KA key and the peer's; None when neither private key is at hand."""
        peer = as_eui(peer)
        z = self._secrets.get(peer)
        if z is not None:
            return z
        if self.ka_private is not None:
            public = self.peers.ka_public(peer)
            if public is None and peer_certificate is not None:
                public = ecc.load_public_key(peer_certificate)
            if public is None:
                return None
            z = ecc.ecdh_shared_secret(self.ka_private, public)
        else:
            private = self.peers.ka_private(peer)
            if private is None:
                return None
            z = ecc.ecdh_shared_secret(private, self._ka_public)
        if peer_certificate is None:
            self._secrets[peer] = z
        return z

    def sign(self, data: bytes) -> bytes:
        return ecc.sign(self.ds_private, data)


@dataclass
class InboundCommand:
    """A command that passed every check, with what the handlers need to know about it."""

    frame: bytes
    header: dict               # grouping header JSON (codec form)
    content: bytes             # the payload bytes
    content_offset: int
    entry: UseCaseEntry
    remote_party: bytes        # the business originator (supplementary remote party when routed by the ACB)
    role: Role | None          # None: an unknown remote party (URP) read routed by the ACB
    counter: int               # the counter replay protection applies to
    signed: bool
    mac: bool

    @property
    def code(self) -> int:
        return self.entry.code

    @property
    def originator(self) -> bytes:
        return as_eui(self.header["originator"])

    @property
    def other_information(self) -> dict:
        return self.header["other_information"]


def signed_part(signing: bytes) -> bytes:
    """The bytes an ECDSA signature covers: after the `DF` tag through the last payload byte (brief §3.5)."""
    return signing[1:]


def check_command(frame: bytes, *, eui: bytes, device_type: str, keys: DeviceKeys, anchors: dict[Role, bytes],
                  last_counters: dict[str, int], acb: bytes | None) -> InboundCommand:
    """Run the GBCS command checks (module docstring) and return the accepted command, or raise `Rejection`."""
    try:
        env, content, offset = split_payload(frame)
    except DecodeError as e:
        raise Rejection("malformed", None, str(e)) from None
    if content is None:
        raise Rejection("gbt_block", None, "a GBT block must be reassembled before it reaches a device")
    gh = env["grouping_header"]
    if gh["cra_flag"] != "command":
        raise Rejection("not_a_command", None, f"CRA flag {gh['cra_flag']}", gh)
    if as_eui(gh["recipient"]) != eui:
        raise Rejection("wrong_recipient", None, f"addressed to {gh['recipient']}", gh)
    oi = gh["other_information"]
    code = int(oi["message_code"], 16)
    entry = REGISTRY.get(code)
    if entry is None or (entry.message_type or "").startswith("SME.A") or not _targets(entry, device_type):
        raise Rejection("unsupported_use_case", AlertCode.COMMAND_INTEGRITY_CHECK_FAILED,
                        f"message code 0x{code:04X} is not a command this {device_type} serves", gh, entry)

    originator = as_eui(gh["originator"])
    supplementary = oi.get("supplementary_remote_party_id")
    certificate = oi.get("supplementary_remote_party_ka_certificate")
    via_acb = supplementary is not None and anchors.get(Role.ACCESS_CONTROL_BROKER) == originator
    remote = as_eui(supplementary) if via_acb else originator
    role = next((r for r, e in anchors.items() if e == remote), None)
    urp = role is None and via_acb and certificate is not None and entry.name in URP_USE_CASES
    if role is None and not urp:
        raise Rejection("unknown_remote_party", AlertCode.FAILED_AUTHENTICATION_OR_AUTHORISATION,
                        f"{eui_hex(remote)} is not a trusted remote party", gh, entry)
    if not urp and not _role_allowed(entry, role, via_acb):
        raise Rejection("role_not_allowed", AlertCode.SOURCE_HAS_NO_AUTHORITY,
                        f"role {role.name} may not run {entry.name}", gh, entry)

    mh = env.get("mac_header")
    signing = frame if mh is None else frame[len(frame) - 12 - _signing_length(frame, mh):len(frame) - 12]
    if mh is not None:
        acb_eui = acb or anchors.get(Role.ACCESS_CONTROL_BROKER)
        z = keys.secret(acb_eui) if acb_eui is not None else None
        if z is None or mh.get("security_header") != {"security_control": 0x11, "invocation_counter": 0} or \
                not verify_message_mac(z, originator, eui, KdfMode.COMMAND, gh["originator_counter"], signing,
                                       bytes.fromhex(mh["mac"])):
            raise Rejection("bad_mac", AlertCode.FAILED_AUTHENTICATION_OR_AUTHORISATION, "MAC does not verify",
                            gh, entry)
    elif not entry.name.startswith(tuple(SIGNATURE_ONLY_USE_CASES)):
        raise Rejection("missing_mac", AlertCode.FAILED_AUTHENTICATION_OR_AUTHORISATION,
                        "a command without the ACB's MAC header", gh, entry)

    signature = env.get("signature")
    signed = bool(signature)
    if (entry.critical and code not in MAC_AUTHORISED_CODES) or mh is None:
        if not signed:
            raise Rejection("missing_signature", AlertCode.FAILED_AUTHENTICATION_OR_AUTHORISATION,
                            f"{entry.name} is critical and must be signed", gh, entry)
        # the business originator signs; an ACB routing on someone's behalf may sign itself (RTDS CS03C)
        signers = [remote] + ([originator] if via_acb else [])
        data, sig = signed_part(signing[:len(signing) - 65]), bytes.fromhex(signature)
        if not any((public := keys.peers.ds_public(s)) is not None and ecc.verify(public, data, sig)
                   for s in signers):
            raise Rejection("bad_signature", AlertCode.FAILED_AUTHENTICATION_OR_AUTHORISATION,
                            "signature does not verify with the originator's DS key", gh, entry)

    counter = oi.get("supplementary_remote_party_counter") if via_acb else None
    if counter is None:
        counter = gh["originator_counter"]
    if entry.replay_protection and counter <= last_counters.get(eui_hex(remote), -1):
        raise Rejection("replayed_counter", AlertCode.FAILED_AUTHENTICATION_OR_AUTHORISATION,
                        f"counter {counter} is not above the last one accepted", gh, entry)
    return InboundCommand(bytes(frame), gh, content, offset, entry, remote, role, counter, signed, mh is not None)


#: The appendix's "ZigBee Device" target: any device on the HAN (not the hub function itself).
_ZIGBEE_DEVICES = frozenset({"ESME", "GSME", "GPF", "PPMID", "HCALCS"})


def _targets(entry: UseCaseEntry, device_type: str) -> bool:
    """Whether a use case may be addressed to this device type (no listed target: any)."""
    targets = entry.target_devices
    return not targets or device_type in targets or ("ZigBee Device" in targets and device_type in _ZIGBEE_DEVICES)


def _signing_length(frame: bytes, mh: dict) -> int:
    """Length of the General-Signing APDU inside a `DD` frame: the ciphered content minus the 5-byte security
    header and the 12-byte MAC; the General-Signing APDU ends right before the MAC."""
    i = 7
    first = frame[i]
    if first < 0x80:
        length, i = first, i + 1
    else:
        n = first & 0x7F
        length, i = int.from_bytes(frame[i + 1:i + 1 + n], "big"), i + 1 + n
    return length - 5 - 12


def _role_allowed(entry: UseCaseEntry, role: Role, via_acb: bool) -> bool:
    if entry.roles is None or not entry.roles:
        return role in _CREDENTIAL_ROLES
    allowed = {ROLE_NAMES[r] for r in entry.roles if r in ROLE_NAMES}
    return role in allowed or (via_acb and Role.ACCESS_CONTROL_BROKER in allowed)


def _wrap(keys: DeviceKeys, gh: dict, content: bytes, critical: bool, mode: int) -> bytes:
    if critical:
        unsigned = encode_grouping_header(gh, content, None)
        return unsigned + b"\x40" + keys.sign(signed_part(unsigned))
    signing = encode_grouping_header(gh, content, "")
    recipient = as_eui(gh["recipient"])
    z = keys.secret(recipient)
    if z is None:
        raise GbcsEmuError(f"no KA key pair to MAC a message to {eui_hex(recipient)}")
    mac = message_mac(z, keys.eui, recipient, mode, gh["originator_counter"], signing)
    return wrap_mac_header(signing, mac)


def build_response(keys: DeviceKeys, cmd: InboundCommand, content: bytes, *, date_time: dict | None,
                   critical: bool | None = None, other_information: dict | None = None) -> bytes:
    """A response to `cmd`: same counter, routed back to the command's originator, other-information echoed."""
    oi = dict(other_information if other_information is not None else cmd.other_information)
    oi.pop("use_case", None)
    oi.pop("supplementary_remote_party_ka_certificate", None)
    gh = {"cra_flag": "response", "originator_counter": cmd.header["originator_counter"],
          "originator": eui_hex(keys.eui), "recipient": cmd.header["originator"], "date_time": date_time,
          "other_information": oi}
    return _wrap(keys, gh, content, cmd.entry.critical if critical is None else critical, _MODES["response"])


def build_alert(keys: DeviceKeys, *, counter: int, recipient: bytes, message_code: int, content: bytes,
                critical: bool, other_information: dict | None = None) -> bytes:
    """A device-originated alert with the device's own counter."""
    oi = {"message_code": f"0x{message_code:04X}"}
    oi.update(other_information or {})
    gh = {"cra_flag": "alert", "originator_counter": counter, "originator": eui_hex(keys.eui),
          "recipient": eui_hex(recipient), "date_time": None, "other_information": oi}
    return _wrap(keys, gh, content, critical, _MODES["alert"])
