"""The ESME's ASN.1 use cases: security credentials (CS02a–g), HAN join/unjoin (CS03, CS04, CS07), firmware (CS06).

Theory of operation
-------------------
Every handler decodes the DER payload with its use-case schema (`protocols.asn1.payloads`; a payload that does
not fit raises DecodeError and the ESME answers 0x8F1E), acts on `device.state` and builds its response from
that state with `encode_asn1`. Nothing is copied from a reference response.

Trust anchors (CS02a/b/f/g). The device holds one *cell* per (remote-party role, key usage[, cell usage]):
supplier DS/KA/prepayment-KA, network operator DS/KA, ACB KA, TransCoS/recovery/WAN provider DS, load controller
DS/KA, root. `state["anchors"]` names the EUI trusted in each role (`Device.set_anchor`); the certificates that a
replacement installs are kept in `state["anchor_certificates"][role] = {"ds"|"ka"|"pp_ka": DER hex}` and
layered over the shared keystore by `install_anchor_certificates` (an `AnchoredPeers` overlay on
`device.keys.peers`), so the new party's signatures verify and its MACs key at once, and the old party's
commands are refused (it is no longer anchored). A replacement (CS02b/CS02g):

    command ──check mode vs originator role, seq number == counter──▶ refused (8F30 / 8F1E alert, no response)
       │ execution time absent / past ─────────────▶ apply now ─▶ response {accepted, execution outcome}
       │ execution time 9999-12-31T23:59:59 ───────▶ cancel pending ones with this message code ─▶ {accepted}
       └ execution time in the future ─────────────▶ schedule ─▶ {accepted}
                                                       └─ at the time: apply ─▶ alert 00CB (CS02b) / 0124 (CS02g)
                                                          8F66 when every cell was replaced, else 8F67

A replacement certificate must come from the CA the device trusts (`issued_by_trusted_ca`: the issuer of the
certificates it anchors now, and its signature when the certification path carries that CA), else the cell
reports `bad_certificate` and keeps its credentials; so does a certificate that is not X.509 at all.
Each replaced cell reports its existing and replacing subject (EUI and key identifier); a failed one keeps the
existing credentials. Injected faults fail cells: target `CS02b` / `CS02g` (every cell) or
`CS02b/<role>/<ds|ka|pp_ka>` (one cell), result a StatusCode name or anything else for `no_trust_anchor`;
`at_execution=True` faults hit future-dated replacements when they run. Floor sequence numbers the command
sets are kept per role in `state["credentials"]["seq"]` (reported by CS02a/f) and raise the replay floor of the
party's EUI (never lower it).

Device credentials (CS02c/d/e). CS02c generates a key pair for the requested usage and answers a PKCS#10
certification request signed with it; the pending private key waits in `state["credentials"]["pending"]` for
the CS02d certificate whose public key matches it (then the device signs/agrees with the new pair). A CS02d
certificate for a key the device is already known by (its current key, or the one its published certificate
carries) is a re-certification and only replaces the certificate. A device that does key agreement from the
remote side (RTDS keys, no KA private key of its own) cannot produce a KA request: `cr_production_failed`.

HAN device log (CS03A1/B, CS04AC/B, CS07): `state["credentials"]["device_log"]`, a list of {device_id,
device_type}. Joining an EUI already logged with another type → `incompatible_with_existing_entry`.

Firmware (CS06): the image hash must be on the CPL (`core.cpl`) for the device's model, else `hash_mismatch`
and nothing changes; success sets the firmware version (COSEM Data 0-0:0.2.1.255 value, `state["firmware"]`)
and answers it. Future-dated: NULL "accepted", then alert 0x00CA with 8F66/8F67 at the execution time.
"""
from __future__ import annotations

import calendar
import hashlib
import logging
import time

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization

from protocols.asn1.payloads import decode_asn1, encode_asn1
from protocols.errors import DecodeError
from protocols.security import ecc
from protocols.security.eui import as_eui, eui_hex
from protocols.security.keystore import (OID_HW_MODULE_NAME, KeyEntry, Keystore, Role, Usage, _usage,
                                         eui_from_certificate, hw_module_name)

from firmware_emu.core.alerts import AlertCode
from firmware_emu.core.cpl import CplError, cpl_for_profile
from firmware_emu.core.device import ROLE_KEYS, Emitted, Reply
from firmware_emu.core.modular import ModularDevice, handles, on_timer

log = logging.getLogger(__name__)

__all__ = ["AnchoredPeers", "install_anchor_certificates", "issued_by_trusted_ca", "join_device", "firmware_version",
           "FUTURE_TIMER", "NEVER"]

#: GeneralizedTime meaning "never": a future-dated command carrying it cancels the pending ones (RTDS).
NEVER = "9999-12-31T23:59:59Z"
FUTURE_TIMER = "asn1_future_dated"

#: Trust-anchor cells per role (GBCS 13): (key usage, cell usage).
_DS, _KA, _PP = ("digital_signature", None), ("key_agreement", None), ("key_agreement", "prepayment_top_up")
CELLS: dict[str, list[tuple[str, str | None]]] = {
    "root": [("key_cert_sign", None)], "recovery": [_DS], "supplier": [_DS, _KA, _PP],
    "network_operator": [_DS, _KA], "access_control_broker": [_KA], "transitional_cos": [_DS],
    "wan_provider": [_DS], "load_controller": [_DS, _KA],
}
_ROLE_BY_NAME = {v: k for k, v in ROLE_KEYS.items()}

#: credentials_replacement_mode → (authorising role, roles whose cells it may replace; None: any).
MODES: dict[str, tuple[Role | None, frozenset | None]] = {
    "supplier_by_supplier": (Role.SUPPLIER, frozenset({"supplier"})),
    "network_operator_by_network_operator": (Role.NETWORK_OPERATOR, frozenset({"network_operator"})),
    "acb_by_acb": (Role.ACCESS_CONTROL_BROKER, frozenset({"access_control_broker"})),
    "wan_provider_by_wan_provider": (Role.WAN_PROVIDER, frozenset({"wan_provider"})),
    "transitional_cos_by_transitional_cos": (Role.TRANSITIONAL_COS, frozenset({"transitional_cos"})),
    "supplier_by_transitional_cos": (Role.TRANSITIONAL_COS, frozenset({"supplier"})),
    "any_except_abnormal_root_by_recovery": (Role.RECOVERY, None),
    "any_by_contingency": (None, None),
    "load_controller_by_load_controller": (Role.LOAD_CONTROLLER, frozenset({"load_controller"})),
    "load_controller_by_supplier": (Role.SUPPLIER, frozenset({"load_controller"})),
}
#: Future-dated outcome alert message code per use-case family.
OUTCOME_ALERTS = {"CS02b": 0x00CB, "CS02g": 0x0124, "CS06": 0x00CA}
_STATUS_NAMES = frozenset({"success", "bad_certificate", "no_trust_anchor", "insufficient_memory",
                           "trust_anchor_not_found", "resources_busy", "other"})


# ------------------------------------------------------------------------------------------------ helpers

def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(t)))


def _from_iso(text: str) -> float:
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))


def _creds(device) -> dict:
    c = device.state.setdefault("credentials", {})
    c.setdefault("seq", {})
    c.setdefault("device_log", [])
    return c


def _decode(cmd) -> dict:
    payload = decode_asn1(cmd.content, base=cmd.content_offset, cra_flag="command", message_code=cmd.code)
    if payload.get("use_case_schema") is None:
        raise DecodeError("payload does not have the shape of its use case", "asn1", cmd.content_offset)
    return payload["value"]


def _encode(schema: str, value, *, long82: bool = False) -> bytes:
    obj = {"use_case_schema": schema, "value": value}
    if long82:      # GBCS devices write lengths 128..255 as 82 00 nn in CS02a/b/f/g (RTDS 4.5.0)
        obj["length_form"] = "82"
    return encode_asn1(obj)


def _usage_of(key_usage: list, cell_usage: str | None) -> Usage | None:
    if key_usage == ["digital_signature"]:
        return Usage.DS
    if key_usage == ["key_agreement"]:
        return Usage.PP_KA if cell_usage == "prepayment_top_up" else Usage.KA
    return None


def _cell_key(usage: Usage | None) -> str:
    return {Usage.DS: "ds", Usage.KA: "ka", Usage.PP_KA: "pp_ka"}.get(usage, "root")


def _ski(cert: x509.Certificate | None) -> str:
    if cert is None:
        return "00" * 8
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex().upper()
    except x509.ExtensionNotFound:
        return hashlib.sha256(ecc.public_point(cert.public_key())).digest()[:8].hex().upper()


def _fault(device, target: str, executing: bool, *aliases: str) -> str | None:
    """An injected fault on `target` (or on an alias: the registry name, e.g. `CS02gBySupplier` for `CS02g`)."""
    for name in (target,) + aliases:
        result = device.faults.lookup(name, executing=executing)
        if result is not None:
            return result
    return None


def _fault_code(device, cmd_name: str, family: str, valid, default: str, executing: bool = False) -> str | None:
    """The response code an injected fault produces: the fault's result when it names one of `valid`."""
    result = _fault(device, family, executing, cmd_name)
    if result is None:
        return None
    return result if result in valid else default


# ------------------------------------------------------------------------------------------------ the key overlay

class AnchoredPeers(Keystore):
    """A device's own view of remote-party keys: certificates installed by trust-anchor replacement, over the
    keystore the device was provisioned with (shared by many devices, so never written to)."""

    def __init__(self, base: Keystore):
        super().__init__()
        self.base = base

    def entry(self, eui, usage):
        own = self._entries.get((as_eui(eui), _usage(usage)))
        return own if own is not None else self.base.entry(eui, usage)

    def euis(self):
        return sorted(set(self._entries_euis()) | set(self.base.euis()))

    def _entries_euis(self):
        return {eui for eui, _ in self._entries}

    def role(self, eui):
        own = Keystore.role(self, eui)
        return own if own is not None else self.base.role(eui)

    def find_public_key(self, key):
        return self._by_point.get(ecc.public_point(key)) or self.base.find_public_key(key)

    def shared_secret(self, eui_a, eui_b, usage=Usage.KA):
        a, b = self.entry(eui_a, usage), self.entry(eui_b, Usage.KA)
        if a is None or b is None:
            return None
        if a.private_key is not None:
            return ecc.ecdh_shared_secret(a.private_key, b.public_key)
        if b.private_key is not None:
            return ecc.ecdh_shared_secret(b.private_key, a.public_key)
        return None

    def install(self, der: bytes, usage: Usage) -> bytes:
        """File `der` as the (EUI in the certificate, usage) key, replacing whatever was there; keeps the
        base keystore's private key when the key pair is the same (a re-issued certificate)."""
        cert = x509.load_der_x509_certificate(der)
        eui = eui_from_certificate(cert)
        if eui is None:
            raise ValueError("certificate carries no EUI")
        public = cert.public_key()
        point = ecc.public_point(public)
        base = self.base.entry(eui, usage)
        private = base.private_key if base is not None and base.point == point else None
        with self._lock:
            self._entries[(eui, usage)] = KeyEntry(eui, usage, public, cert, private, ["<trust anchor>"])
            self._by_point[point] = (eui, usage)
            self._secrets.clear()
        return eui


def install_anchor_certificates(device) -> None:
    """Make `device.keys` match its persisted credentials: the trust-anchor certificates installed by
    CS02b/CS02g and the device key pairs installed by CS02d. Idempotent; call it when a device is built from
    saved state (core change request) — the handlers call it after every change."""
    keys = device.keys
    base = keys.peers.base if isinstance(keys.peers, AnchoredPeers) else keys.peers
    peers = AnchoredPeers(base)
    for cells in device.state.get("anchor_certificates", {}).values():
        for name, der in cells.items():
            if name in ("ds", "ka", "pp_ka"):
                peers.install(bytes.fromhex(der), Usage(name.replace("_", "-")))
    keys.peers = peers
    for usage, item in device.state.get("credentials", {}).get("device_keys", {}).items():
        private = serialization.load_der_private_key(bytes.fromhex(item["private"]), None) \
            if item.get("private") else None
        cert = bytes.fromhex(item["certificate"])
        if usage == "ds":
            keys.ds_certificate = cert
            if private is not None:
                keys.ds_private = private
        else:
            keys.ka_certificate = cert
            keys._ka_public = ecc.load_public_key(cert)
            if private is not None:
                keys.ka_private = private
    keys._secrets.clear()


def _aki(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except (x509.ExtensionNotFound, ValueError):
        return None


def _anchored_certificates(device) -> list[x509.Certificate]:
    """The organisation certificates in the device's trust-anchor cells now."""
    out = []
    for eui in set(device.anchors.values()):
        for usage in (Usage.DS, Usage.KA, Usage.PP_KA):
            cert = device.keys.peers.x509_certificate(eui, usage)
            if cert is not None:
                out.append(cert)
    return out


def _directly_issued(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
        return True
    except (ValueError, TypeError, InvalidSignature):
        return False


def issued_by_trusted_ca(device, cert: x509.Certificate, path: list[str] = ()) -> bool:
    """Whether a replacement certificate was issued by the CA the device trusts (GBCS 13: a replacement must
    chain to the device's trust; a certificate from another PKI is a `bad_certificate`).

    The trusted CA is the issuer of the organisation certificates the device anchors now: the replacement must
    name the same issuer (name and authority key identifier). When the command's certification path carries
    that CA's certificate, and the anchored certificates verify with it (so it *is* the trusted CA's key), the
    replacement's signature must verify with it too; without a path the name and key identifier decide."""
    anchored = _anchored_certificates(device)
    issuers = {(c.issuer.public_bytes(), _aki(c)) for c in anchored}
    if (cert.issuer.public_bytes(), _aki(cert)) not in issuers:
        return False
    for der in path:
        try:
            ca = x509.load_der_x509_certificate(bytes.fromhex(der))
        except ValueError:
            continue
        if ca.subject != cert.issuer or not any(_directly_issued(a, ca) for a in anchored):
            continue
        return _directly_issued(cert, ca)
    return True


def _current_cert(device, role_name: str, usage: Usage | None) -> tuple[str, x509.Certificate | None]:
    """(subject EUI hex, certificate) of the cell now, as the device trusts it."""
    if usage is None:
        der = device.state.get("anchor_certificates", {}).get("root", {}).get("root")
        return "00" * 8, (x509.load_der_x509_certificate(bytes.fromhex(der)) if der else None)
    role = _ROLE_BY_NAME.get(role_name)
    eui = device.anchors.get(role) if role is not None else None
    if eui is None:
        return "00" * 8, None
    return eui_hex(eui), device.keys.peers.x509_certificate(eui, usage)


# ------------------------------------------------------------------------------------------------ CS02a / CS02f

@handles(ModularDevice, "CS02a", "CS02f")
def provide_security_credential_details(device, cmd, now) -> Reply:
    """CS02a/CS02f: the trust-anchor cells and floor sequence number of each asked role."""
    value = _decode(cmd)
    family = "CS02a" if cmd.code == 0x0008 else "CS02f"
    details = []
    for role_name in value["remote_party_roles"]:
        role_name = role_name if isinstance(role_name, str) else str(role_name)
        fault = _fault(device, f"{family}/{role_name}", False, family, cmd.entry.name)
        if fault:
            details.append({"remote_party_role": role_name,
                            "status_code": fault if fault in _STATUS_NAMES - {"success"} else "other"})
            continue
        cells = []
        for key_usage, cell_usage in CELLS.get(role_name, []):
            usage = _usage_of([key_usage], cell_usage)
            eui, cert = _current_cert(device, role_name, usage)
            if cert is None:
                continue
            cell = {"key_usage": [key_usage]}
            if cell_usage:
                cell["cell_usage"] = cell_usage
            cell.update(subject_unique_id=eui, subject_key_identifier=_ski(cert))
            cells.append(cell)
        if not cells:
            details.append({"remote_party_role": role_name, "status_code": "trust_anchor_not_found"})
            continue
        seq = _creds(device)["seq"].get(role_name, {})
        details.append({"remote_party_role": role_name, "status_code": "success",
                        "current_seq_number": seq.get("floor", 0), "trust_anchor_cells": cells})
    content = _encode(f"{family}.response", {"remote_party_details": details}, long82=True)
    return Reply(content, date_time=False, critical=not cmd.mac)


# ------------------------------------------------------------------------------------------------ CS02b / CS02g

def _replacement_family(cmd) -> str:
    return "CS02g" if cmd.code in (0x0124, 0x0125, 0x0126) else "CS02b"


@handles(ModularDevice, "CS02b", "CS02bWPByWP", "CS02bTransCoSByTransCoS", "CS02bAnyExceptAbnormalRootByRecovery",
              "CS02bAnyByContingency", "CS02g", "CS02gByLoadController", "CS02gBySupplier")
def update_security_credentials(device, cmd, now) -> Reply:
    """CS02b/CS02g: replace trust-anchor cells now, later, or cancel a pending replacement."""
    value = _decode(cmd)
    family = _replacement_family(cmd)
    control = value["authorising_remote_party_control"]
    mode = control["credentials_replacement_mode"]
    authorising, targets = MODES.get(mode, (False, frozenset()))
    roles = {r["target_trust_anchor_cell"]["remote_party_role"] for r in value["replacements"]}
    # an EUI may hold several cells (a hub before handover: the ACB also sits in the supplier and NO cells);
    # the originator is authorised when it holds the cell the replacement mode names
    holds = authorising is not None and authorising is not False and \
        device.anchors.get(authorising) == as_eui(cmd.header["originator"])
    if authorising is False or (authorising is not None and cmd.role is not authorising and not holds) or \
            (targets is not None and not roles <= targets):
        device.event("credentials_refused", use_case=family, mode=mode, role=getattr(cmd.role, "name", None))
        return Reply(b"", respond=False, alerts=[device.raise_alert(AlertCode.SOURCE_HAS_NO_AUTHORITY)])
    if control["authorising_remote_party_seq_number"] != cmd.header["originator_counter"]:
        device.event("credentials_refused", use_case=family, reason="seq number is not the counter")
        return Reply(b"", respond=False, alerts=[device.raise_alert(AlertCode.COMMAND_INTEGRITY_CHECK_FAILED)])
    accepted = {"command_accepted": None}
    when = value.get("execution_date_time")
    if when == NEVER:
        removed = _cancel(device, cmd.code)
        device.event("future_dated_cancelled", use_case=family, removed=removed)
        return Reply(_encode(f"{family}.response", accepted), date_time=True, critical=True)
    if when is not None and _from_iso(when) > now:
        _schedule(device, cmd, family, _from_iso(when))
        return Reply(_encode(f"{family}.response", accepted), date_time=True, critical=True)
    outcome = _replace(device, value, family, executing=False, alias=cmd.entry.name)
    return Reply(_encode(f"{family}.response", {**accepted, "execution_outcome": outcome}, long82=True),
                 date_time=True, critical=True)


def _replace(device, value: dict, family: str, *, executing: bool, alias: str = "") -> dict:
    """Apply the replacements of one CS02b/CS02g command; the execution outcome."""
    control = value["authorising_remote_party_control"]
    outcomes, installed = [], {}
    path = [c["der"] for c in value.get("certification_path_certificates") or ()]
    for r in value["replacements"]:
        cell = r["target_trust_anchor_cell"]
        role_name = cell["remote_party_role"]
        usage = _usage_of(cell["key_usage"], cell.get("cell_usage"))
        old_eui, old_cert = _current_cert(device, role_name, usage)
        der = bytes.fromhex(r["replacement_certificate"]["der"])
        try:
            new = x509.load_der_x509_certificate(der)
            new_eui = eui_from_certificate(new)
        except ValueError:                  # DER the schema accepted but X.509 does not: a bad certificate
            new, new_eui = None, None
        fault = _fault(device, f"{family}/{role_name}/{_cell_key(usage)}", executing, family, alias)
        status = "success"
        if fault:
            status = fault if fault in _STATUS_NAMES else "no_trust_anchor"
        elif new is None or role_name not in CELLS or (usage is None and role_name != "root") or \
                (usage is not None and new_eui is None) or \
                (usage is not None and not issued_by_trusted_ca(device, new, path)):
            status = "bad_certificate"
        outcome = {"affected_trust_anchor_cell": cell, "status_code": status,
                   "existing_subject_unique_id": old_eui, "existing_subject_key_id": _ski(old_cert)}
        if status == "success":
            outcome.update(replacing_subject_unique_id=eui_hex(new_eui) if new_eui else "00" * 8,
                           replacing_subject_key_id=_ski(new))
            installed.setdefault(role_name, {})[_cell_key(usage)] = (der.hex().upper(), new_eui)
        else:
            outcome.update(replacing_subject_unique_id=old_eui, replacing_subject_key_id=_ski(old_cert))
        outcomes.append(outcome)

    certs = device.state.setdefault("anchor_certificates", {})
    for role_name, cells in installed.items():
        certs.setdefault(role_name, {}).update({k: der for k, (der, _) in cells.items()})
        role = _ROLE_BY_NAME.get(role_name)
        euis = {eui for _, eui in cells.values() if eui is not None}
        if role is not None and len(euis) == 1:
            device.set_anchor(role, euis.pop())
    if installed:
        install_anchor_certificates(device)

    changes = []
    target = value["replacements"][0]["target_trust_anchor_cell"]["remote_party_role"] if value["replacements"] \
        else None
    if control.get("new_remote_party_floor_seq_number") is not None and target is not None:
        change = {"remote_party_role": target, "floor_seq_number": control["new_remote_party_floor_seq_number"]}
        if control.get("new_remote_party_specialist_floor_seq_numbers") is not None:
            change["specialist_floor_seq_numbers"] = control["new_remote_party_specialist_floor_seq_numbers"]
        changes.append(change)
    changes += list(control.get("other_remote_party_seq_number_changes") or [])
    for change in changes:
        _set_floor(device, change)
    device.event("credentials_replaced", use_case=family, cells=len(outcomes),
                 failed=sum(o["status_code"] != "success" for o in outcomes))
    return {"authorising_remote_party_seq_number": control["authorising_remote_party_seq_number"],
            "credentials_replacement_mode": control["credentials_replacement_mode"],
            "remote_party_seq_number_changes": changes, "replacement_outcomes": outcomes}


def _set_floor(device, change: dict) -> None:
    role_name = change["remote_party_role"]
    entry = {"floor": change["floor_seq_number"]}
    for s in change.get("specialist_floor_seq_numbers") or []:
        entry.setdefault("specialist", {})[str(s["seq_number_usage"])] = s["seq_number"]
    _creds(device)["seq"][role_name] = entry
    role = _ROLE_BY_NAME.get(role_name)
    eui = device.anchors.get(role) if role is not None else None
    if eui is not None:      # the floor never lowers the replay counter already reached
        remote = device.state["counters"]["remote"]
        remote[eui_hex(eui)] = max(remote.get(eui_hex(eui), -1), change["floor_seq_number"])


# ------------------------------------------------------------------------------------------------ future-dated

def _schedule(device, cmd, family: str, at: float) -> None:
    device.schedule(at, FUTURE_TIMER, {
        "use_case": family, "message_code": cmd.code, "originator": eui_hex(cmd.originator),
        "counter": cmd.header["originator_counter"], "payload": cmd.content.hex().upper(),
        "name": cmd.entry.name})
    device.event("future_dated_scheduled", use_case=family, at=at)


def _cancel(device, code: int) -> int:
    return device.unschedule(lambda s: s["kind"] == FUTURE_TIMER and s["data"]["message_code"] == code)


@on_timer(ModularDevice, FUTURE_TIMER)
def run_future_dated(device, data: dict, at: float) -> list[Emitted]:
    """A future-dated CS02b/CS02g/CS06 coming due: do it, and report the outcome by alert (8F66 / 8F67)."""
    family = data["use_case"]
    value = decode_asn1(bytes.fromhex(data["payload"]), cra_flag="command", message_code=data["message_code"])
    value = value["value"]
    if family == "CS06":
        outcome = _activate(device, value["manufacturer_image_hash"], executing=True)
        ok = outcome["response_code"] == "success"
        body = {"alert_code": "0x8F66" if ok else "0x8F67", "date_time": _iso(at),
                "originator_counter": value["originator_counter"], "execution_outcome": outcome}
        long82 = False
    else:
        outcome = _replace(device, value, family, executing=True, alias=data.get("name", ""))
        ok = all(o["status_code"] == "success" for o in outcome["replacement_outcomes"])
        body = {"alert_code": "0x8F66" if ok else "0x8F67", "date_time": _iso(at), "execution_outcome": outcome}
        long82 = True
    code = AlertCode.FUTURE_DATED_COMMAND_SUCCEEDED if ok else AlertCode.FUTURE_DATED_COMMAND_FAILED
    content = _encode(f"{family}.alert", body, long82=long82)
    return [device.raise_alert(code, message_code=OUTCOME_ALERTS[family], content=content, critical=True,
                               recipient=data["originator"])]


# ------------------------------------------------------------------------------------------------ CS02c / d / e

def _device_keys_state(device) -> dict:
    return _creds(device).setdefault("device_keys", {})


@handles(ModularDevice, "CS02c")
def issue_security_credentials(device, cmd, now) -> Reply:
    """CS02c: generate a key pair for one usage and answer a certification request for it."""
    value = _decode(cmd)
    usage = _usage_of(value["key_usage"], None)
    if usage is None:
        return Reply(_encode("CS02c.response", {"response_code": "invalid_key_usage"}))
    failed = _fault_code(device, "CS02c", "CS02c", ("key_pair_generation_failed", "cr_production_failed"),
                         "cr_production_failed")
    if failed is None and usage is Usage.KA and device.keys.ka_private is None:
        failed = "cr_production_failed"
    if failed is not None:
        return Reply(_encode("CS02c.response", {"response_code": failed}))
    private = ecc.generate_private_key()
    san = x509.SubjectAlternativeName([x509.OtherName(OID_HW_MODULE_NAME, hw_module_name(device.eui))])
    ds = usage is Usage.DS
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(san, critical=True)
           .add_extension(x509.KeyUsage(digital_signature=ds, content_commitment=False, key_encipherment=False,
                                        data_encipherment=False, key_agreement=not ds, key_cert_sign=False,
                                        crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
           .sign(private, hashes.SHA256()))
    pending = _creds(device).setdefault("pending", {})
    pending[usage.value] = private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()).hex()
    der = csr.public_bytes(serialization.Encoding.DER)
    device.event("certification_request", usage=usage.value)
    return Reply(_encode("CS02c.response", {"certification_request": {"der": der.hex().upper()}}))


@handles(ModularDevice, "CS02d")
def update_device_certificate(device, cmd, now) -> Reply:
    """CS02d: install a device certificate for a key pair the device holds (pending from CS02c, or current)."""
    value = _decode(cmd)
    der = bytes.fromhex(value["device_certificate"]["der"])

    def answer(code: str) -> Reply:
        device.event("device_certificate", result=code)
        return Reply(_encode("CS02d.response", {"response_code": code}))

    try:
        cert = x509.load_der_x509_certificate(der)
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except (ValueError, x509.ExtensionNotFound):
        return answer("invalid_certificate")
    bits = [ku.digital_signature, ku.content_commitment, ku.key_encipherment, ku.data_encipherment,
            ku.key_agreement, ku.key_cert_sign, ku.crl_sign]
    if sum(bits) != 1 or not (ku.digital_signature or ku.key_agreement):
        return answer("invalid_key_usage")
    usage = Usage.DS if ku.digital_signature else Usage.KA
    if eui_from_certificate(cert) != device.eui:
        return answer("wrong_device_identity")
    failed = _fault_code(device, "CS02d", "CS02d", ("invalid_certificate", "wrong_device_identity",
                         "invalid_key_usage", "no_corresponding_key_pair_generated", "wrong_public_key",
                         "certificate_storage_failed", "private_key_change_failed"), "certificate_storage_failed")
    if failed is not None:
        return answer(failed)
    point = ecc.public_point(cert.public_key())
    pending = _creds(device).get("pending", {}).get(usage.value)
    state = _device_keys_state(device)
    if pending is not None:
        private = serialization.load_der_private_key(bytes.fromhex(pending), None)
        if ecc.public_point(private) == point:
            state[_cell_key(usage)] = {"certificate": der.hex().upper(), "private": pending}
            del _creds(device)["pending"][usage.value]
            install_anchor_certificates(device)
            return answer("success")
    own = device.keys.ds_certificate if usage is Usage.DS else device.keys.ka_certificate
    known = {ecc.public_point(ecc.load_public_key(own))}
    published = device.keys.peers.public_key(device.eui, usage)
    if published is not None:
        known.add(ecc.public_point(published))
    if point in known:          # re-certification of a key the device is known by
        entry = state.setdefault(_cell_key(usage), {})
        if ecc.public_point(ecc.load_public_key(own)) == point:
            entry["certificate"] = der.hex().upper()
            install_anchor_certificates(device)
        return answer("success")
    return answer("wrong_public_key" if pending is not None else "no_corresponding_key_pair_generated")


@handles(ModularDevice, "CS02e")
def provide_device_certificate(device, cmd, now) -> Reply:
    """CS02e: the device's certificate for one key usage."""
    value = _decode(cmd)
    usage = _usage_of(value["key_usage"], None)
    if usage is None:
        return Reply(_encode("CS02e.response", {"response_code": "invalid_key_usage"}))
    failed = _fault_code(device, "CS02e", "CS02e", ("no_certificate_held", "certificate_retrieval_failure"),
                         "certificate_retrieval_failure")
    if failed is not None:
        return Reply(_encode("CS02e.response", {"response_code": failed}))
    der = device.keys.ds_certificate if usage is Usage.DS else device.keys.ka_certificate
    return Reply(_encode("CS02e.response", {"device_certificate": {"der": der.hex().upper()}}))


# ------------------------------------------------------------------------------------------------ CS03 / CS04 / CS07

#: Join methods per use case, and the device types the recipient may join that way. Method A has two sides:
#: CS03A1 "(Meter)" goes to the meter, which initiates (method A initiator) with the PPMID / HCALCS / Type 2
#: device (RTDS: to the ESME); CS03A2 "(non Meter)" goes to that device, the responder, naming its meter.
_JOIN = {"CS03A1": (0, {"PPMID", "HCALCS", "Type 2"}), "CS03A2": (1, {"ESME", "GSME"}),
         "CS03B": (2, {"CHF", "GPF"}), "CS03C": (3, {"PPMID", "HCALCS", "Type 2"})}


_JOIN_CODES = frozenset({"invalid_message_code_for_join_method_and_role", "invalid_join_method_and_role",
                         "incompatible_with_existing_entry", "device_log_full", "write_failure"})


def join_device(device, eui, device_type: str) -> str:
    """Add a device to the HAN device log; the GBCS join response code. Also a test precondition helper."""
    log_ = _creds(device)["device_log"]
    eui = eui_hex(eui)
    for entry in log_:
        if entry["device_id"] == eui:
            return "success" if entry["device_type"] == device_type else "incompatible_with_existing_entry"
    if len(log_) >= 16:
        return "device_log_full"
    log_.append({"device_id": eui, "device_type": device_type})
    return "success"


@handles(ModularDevice, "CS03A1", "CS03A2", "CS03B", "CS03C")
def join(device, cmd, now) -> Reply:
    """CS03: add another device to this device's HAN device log."""
    value = _decode(cmd)
    name = cmd.entry.name
    method, types = _JOIN.get(name, (None, set()))
    if name == "CS03B" and device.DEVICE_TYPE == "GPF":
        types = types | {"GSME"}  # method B both ways: the GPF's side of joining its gas meter
    schema = f"{name}.response"
    if value["method"] != method or value["device_type"] not in types:
        code = "invalid_join_method_and_role"
    elif (fault := _fault_code(device, name, name, _JOIN_CODES, "write_failure")) is not None:
        code = fault
    else:
        code = join_device(device, value["other_device"], value["device_type"])
    device.event("join", other=value["other_device"], result=code)
    return Reply(_encode(schema, {"response_code": code}))


@handles(ModularDevice, "CS04AC", "CS04B")
def unjoin(device, cmd, now) -> Reply:
    """CS04: remove a device from the device log."""
    value = _decode(cmd)
    other = value["other_device"].upper()
    log_ = _creds(device)["device_log"]
    keep = [e for e in log_ if e["device_id"] != other]
    fault = _fault_code(device, cmd.entry.name, cmd.entry.name, ("not_in_device_log", "other_failure"),
                        "other_failure")
    if fault is not None:
        code = fault
    elif len(keep) == len(log_):
        code = "not_in_device_log"
    else:
        log_[:] = keep
        code = "success"
    device.event("unjoin", other=other, result=code)
    return Reply(_encode(f"{cmd.entry.name}.response", {"response_code": code}))


@handles(ModularDevice, "CS07")
def read_device_join_details(device, cmd, now) -> Reply:
    """CS07: the device log."""
    _decode(cmd)
    if _fault(device, "CS07", False):
        return Reply(_encode("CS07.response", {"response_code": "read_failure"}))
    entries = [dict(e) for e in _creds(device)["device_log"]]
    return Reply(_encode("CS07.response", {"response_code": "success", "device_log_entries": entries}))


# ------------------------------------------------------------------------------------------------ CS06

def firmware_version(device) -> str:
    """The running firmware version (hex): the COSEM value once set, else the profile's or the CPL factory one."""
    fw = device.state.get("firmware", {})
    if fw.get("version"):
        return fw["version"]
    profile = device.profile
    if profile.get("firmware_version"):
        return str(profile["firmware_version"]).upper()
    try:
        _, product = cpl_for_profile(profile, device.DEVICE_TYPE)
    except CplError:
        product = None
    return (product.factory_version if product and product.factory_version else "01000000")


def _activate(device, image_hash: str, *, executing: bool) -> dict:
    """Activate the image with this hash if the CPL lists it for the device's model; the execution outcome."""
    current = firmware_version(device)
    profile = device.profile
    try:
        _, product = cpl_for_profile(profile, device.DEVICE_TYPE)
    except CplError as e:
        device.event("cpl_unavailable", detail=str(e))
        product = None
    image = product.image(image_hash) if product is not None else None
    if image is None:
        code = "hash_mismatch"
    elif (fault := _fault_code(device, "CS06", "CS06", ("no_image_held", "hash_mismatch", "activation_failure"),
                               "activation_failure", executing)) is not None:
        code = fault
    else:
        code = "success"
        device.state["firmware"] = {"version": image.version, "image_hash": image.image_hash}
        device.firmware_activated(image.version)
        current = image.version
    device.event("firmware_activation", image_hash=str(image_hash).upper(), result=code, version=current)
    return {"response_code": code, "firmware_version": current}


@handles(ModularDevice, "CS06")
def activate_firmware(device, cmd, now) -> Reply:
    """CS06: activate a firmware image now, at a future time (alert 00CA), or cancel a pending activation."""
    value = _decode(cmd)
    if value["originator_counter"] != cmd.header["originator_counter"]:
        return Reply(b"", respond=False, alerts=[device.raise_alert(AlertCode.COMMAND_INTEGRITY_CHECK_FAILED)])
    when = value.get("execution_date_time")
    if when == NEVER:
        _cancel(device, cmd.code)
        return Reply(_encode("CS06.response", {"command_accepted": None}), date_time=True)
    if when is not None and _from_iso(when) > now:
        _schedule(device, cmd, "CS06", _from_iso(when))
        return Reply(_encode("CS06.response", {"command_accepted": None}), date_time=True)
    outcome = _activate(device, value["manufacturer_image_hash"], executing=False)
    return Reply(_encode("CS06.response", {"execution_outcome": outcome}), date_time=True)

