"""GBCS security refusals on every device type (ESME, GSME, CHF, GPF, PPMID, HCALCS).

Each refusal must yield the alert GBCS prescribes (core/security.py docstring; core/alerts.py) or nothing, and
leave the device as it was apart from its security log, alert log and alert counter (as tests/test_device_core.py
checks for the ESME). Commands are built here byte by byte (grouping header, payload, signature, MAC) so every
field can be made wrong on purpose; the accepted baseline commands come from the fuzz harness (fuzz/seeds.py),
which proves each is accepted by a fresh device."""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fuzz.seeds import harness  # noqa: E402
from protocols.asn1.payloads import decode_asn1, encode_asn1  # noqa: E402
from protocols.gbcs.message import decode, encode_grouping_header, wrap_mac_header  # noqa: E402
from protocols.gbcs.registry import REGISTRY  # noqa: E402
from protocols.security import ecc  # noqa: E402
from protocols.security.eui import eui_hex  # noqa: E402
from protocols.security.keystore import Keystore, Role, Usage  # noqa: E402
from protocols.security.pki import PkiIssuer, init_pki  # noqa: E402

from firmware_emu.core.alerts import AlertCode  # noqa: E402
from firmware_emu.core.provisioning import default_anchors, device_keys  # noqa: E402
from firmware_emu.core.security import _targets  # noqa: E402
from firmware_emu.devices import device_class  # noqa: E402

TYPES = ("ESME", "GSME", "CHF", "GPF", "PPMID", "HCALCS")
AUTH = AlertCode.FAILED_AUTHENTICATION_OR_AUTHORISATION
CS02A, CS02B = 0x0008, 0x0102
CELL_DS = {"remote_party_role": "supplier", "key_usage": ["digital_signature"]}


@pytest.fixture(scope="module")
def h():
    return harness()


def org(h, role: Role) -> bytes:
    return h.summary.organisations[role]


def frame(h, originator: bytes, recipient: bytes, code: int, content: bytes, counter: int, *, sign: bool,
          mac: bool = True, signer: bytes | None = None, forge: bool = False) -> bytes:
    """One command: grouping header, payload, [signature], [ACB MAC]."""
    gh = {"cra_flag": "command", "originator_counter": counter, "originator": eui_hex(originator),
          "recipient": eui_hex(recipient), "date_time": None,
          "other_information": {"message_code": f"0x{code:04X}"}}
    pre = encode_grouping_header(gh, content, None)
    key = ecc.generate_private_key() if forge else h.ks.ds_private(signer or originator)
    signing = pre + (b"\x40" + ecc.sign(key, pre[1:]) if sign else b"\x00")
    if not mac:
        return signing
    acb = h.party(Role.ACCESS_CONTROL_BROKER)
    return wrap_mac_header(signing, acb.command_mac(signing, originator, recipient, counter))


def cs02a(h, recipient: bytes, counter: int, *, originator: Role = Role.SUPPLIER, content: bytes | None = None,
          **kw) -> bytes:
    """CS02a Provide Security Credential Details: non-critical, MAC only, any device type."""
    if content is None:
        content = encode_asn1({"use_case_schema": "CS02a.command", "value": {
            "authorising_remote_party_ta_cell": CELL_DS, "remote_party_roles": ["supplier"]}})
    return frame(h, org(h, originator), recipient, CS02A, content, counter, sign=False, **kw)


def cs02b_value(counter: int, certs: dict) -> dict:
    """CS02b supplier-by-supplier replacing the supplier's DS and KA cells with `certs` {Usage: DER}."""
    cells = {Usage.DS: CELL_DS, Usage.KA: {"remote_party_role": "supplier", "key_usage": ["key_agreement"]}}
    return {"authorising_remote_party_control": {
        "credentials_replacement_mode": "supplier_by_supplier", "authorising_remote_party_ta_cell": CELL_DS,
        "authorising_remote_party_seq_number": counter, "new_remote_party_floor_seq_number": 0},
        "replacements": [{"replacement_certificate": {"der": der.hex().upper()}, "target_trust_anchor_cell": cells[u]}
                         for u, der in certs.items()],
        "certification_path_certificates": []}


def cs02b(h, recipient: bytes, counter: int, certs: dict | None = None, *, originator: Role = Role.SUPPLIER,
          **kw) -> bytes:
    """CS02b (critical, replay protected, signed by the supplier); by default re-installs the supplier's own
    certificates (accepted, nothing really changes)."""
    sup = org(h, Role.SUPPLIER)
    if certs is None:
        certs = {u: h.ks.certificate(sup, u) for u in (Usage.DS, Usage.KA)}
    content = encode_asn1({"use_case_schema": "CS02b.command", "value": cs02b_value(counter, certs)})
    return frame(h, org(h, originator), recipient, CS02B, content, counter, sign=True, **kw)


def alert_codes(out) -> list:
    return [e.alert_code for e in out if e.kind == "alert"]


def refused(dev, data: bytes, alert: int | None, reason: str | None = None) -> list:
    """Send `data`; assert it was refused with `alert` (None: silently) and changed nothing else."""
    before = copy.deepcopy(dev.state)
    out = dev.receive(data, dev.now)
    assert all(e.kind == "alert" for e in out), [e.describe() for e in out]
    assert alert_codes(out) == ([alert] if alert is not None else [])
    after = copy.deepcopy(dev.state)
    for s in (before, after):
        s.pop("security_log")
        s.pop("alert_log", None)
        s["counters"].pop("alert")
        # the gas meter's battery pays for every frame its radio receives, refused or not: physics, not state
        s.get("gsme", {}).pop("battery", None)
    assert after == before, "a refused command changed the device"
    if reason is not None:
        assert dev.state["security_log"][-1]["reason"] == reason
    return out


def responses(out) -> list[dict]:
    return [decode(e.frame) for e in out if e.kind == "response"]


@pytest.fixture(params=TYPES)
def dev(request, h):
    return h.fresh(request.param)


# ------------------------------------------------------------------------------------------------ the baselines

def test_baseline_commands_are_accepted(h, dev):
    """The commands the refusals below are variations of are accepted when nothing is wrong."""
    assert responses(dev.receive(cs02a(h, dev.eui, 5000), dev.now))
    (resp,) = responses(dev.receive(cs02b(h, dev.eui, 5001), dev.now))
    outcome = resp["payload"]["asn1"]["value"]["execution_outcome"]
    assert {o["status_code"] for o in outcome["replacement_outcomes"]} == {"success"}
    assert not dev.state["security_log"]


# ------------------------------------------------------------------------------------------------ counters

def test_replayed_counter_is_refused(h, dev):
    data = cs02b(h, dev.eui, 6000)
    assert responses(dev.receive(data, dev.now))
    refused(dev, data, AUTH, "replayed_counter")


def test_stale_counter_is_refused(h, dev):
    older, newer = cs02b(h, dev.eui, 6100), cs02b(h, dev.eui, 6101)
    assert responses(dev.receive(newer, dev.now))
    refused(dev, older, AUTH, "replayed_counter")


# ------------------------------------------------------------------------------------------------ MAC, signature

def test_bad_mac_is_refused(h, dev):
    data = bytearray(cs02a(h, dev.eui, 7000))
    data[-1] ^= 0x01
    refused(dev, bytes(data), AUTH, "bad_mac")


def test_missing_mac_is_refused(h, dev):
    """CS08 (not one of the signature-only CS02 variants) without the ACB's MAC header."""
    data = frame(h, org(h, Role.SUPPLIER), dev.eui, 0x0129, b"\x05\x00", 7001, sign=True, mac=False)
    refused(dev, data, AUTH, "missing_mac")


def test_bad_signature_is_refused(h, dev):
    refused(dev, cs02b(h, dev.eui, 7100, forge=True), AUTH, "bad_signature")


def test_signature_of_another_party_is_refused(h, dev):
    refused(dev, cs02b(h, dev.eui, 7101, signer=org(h, Role.NETWORK_OPERATOR)), AUTH, "bad_signature")


def test_missing_signature_is_refused(h, dev):
    sup = org(h, Role.SUPPLIER)
    content = encode_asn1({"use_case_schema": "CS02b.command", "value": cs02b_value(
        7102, {u: h.ks.certificate(sup, u) for u in (Usage.DS, Usage.KA)})})
    refused(dev, frame(h, sup, dev.eui, CS02B, content, 7102, sign=False), AUTH, "missing_signature")


# ------------------------------------------------------------------------------------------------ who and what

def test_wrong_recipient_is_discarded_silently(h, dev):
    other = next(e for e in h.summary.devices if e != dev.eui)
    refused(dev, cs02a(h, other, 8000), None, "wrong_recipient")


def test_unknown_remote_party_is_refused(h, dev):
    anchors = {r: e for r, e in default_anchors(h.ks).items() if r is not Role.NETWORK_OPERATOR}
    stranger = device_class(dev.DEVICE_TYPE)(device_keys(h.ks, dev.eui), anchors=anchors, now=dev.now)
    refused(stranger, cs02a(h, dev.eui, 8100, originator=Role.NETWORK_OPERATOR), AUTH, "unknown_remote_party")


def _restricted_use_case(device_type: str):
    """A use case this type serves whose roles leave out a role the device anchors; (entry, role)."""
    from firmware_emu.core.security import ROLE_NAMES
    for e in REGISTRY:
        if not e.roles or (e.message_type or "").startswith("SME.A") or not _targets(e, device_type) \
                or not e.target_devices:
            continue
        allowed = {ROLE_NAMES[r] for r in e.roles if r in ROLE_NAMES}
        for role in (Role.NETWORK_OPERATOR, Role.SUPPLIER, Role.WAN_PROVIDER, Role.TRANSITIONAL_COS):
            if role not in allowed:
                return e, role
    return None, None


def test_role_not_allowed_for_the_use_case_is_refused(h, dev):
    entry, role = _restricted_use_case(dev.DEVICE_TYPE)
    assert entry is not None, dev.DEVICE_TYPE
    data = frame(h, org(h, role), dev.eui, entry.code, b"\x05\x00", 8200, sign=bool(entry.critical))
    refused(dev, data, AlertCode.SOURCE_HAS_NO_AUTHORITY, "role_not_allowed")


def test_use_case_of_another_device_type_is_refused(h, dev):
    code = 0x0050 if dev.DEVICE_TYPE != "ESME" else 0x006B      # ECS43 / GCS01a
    refused(dev, frame(h, org(h, Role.SUPPLIER), dev.eui, code, b"\x05\x00", 8300, sign=True),
            AlertCode.COMMAND_INTEGRITY_CHECK_FAILED, "unsupported_use_case")


@pytest.mark.parametrize("garbage", [b"", b"\xdd", b"\xdf\x09", bytes(range(256))])
def test_garbage_is_discarded(dev, garbage):
    refused(dev, garbage, None)


# ------------------------------------------------------------------------------------------------ payload

def test_malformed_payload_inside_a_valid_mac(h, dev):
    """It passes every security check, so the use case handles it: 0x8F1E, no response, nothing changed."""
    for content in (b"\x30\x03\x02\x01", b"\x05\x00", b"\x30\x00"):
        refused(dev, cs02a(h, dev.eui, 9000 + len(content) + content[1], content=content),
                AlertCode.COMMAND_INTEGRITY_CHECK_FAILED)


# ------------------------------------------------------------------------------------------------ certificates

@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    """Another PKI (its own root and organisation CA) and a supplier certificate pair it issued."""
    d = tmp_path_factory.mktemp("foreign-pki")
    init_pki(d, devices=1, seed=4242)
    ks = Keystore(d)
    eui = bytes.fromhex("90B3D51FEE03AAAA")
    PkiIssuer.load(d / "ca").issue_organisation(ks, Role.SUPPLIER, eui)
    return ks, eui


def _replacement_outcome(dev, out) -> list[str]:
    (resp,) = responses(out)
    return [o["status_code"] for o in resp["payload"]["asn1"]["value"]["execution_outcome"]["replacement_outcomes"]]


def test_certificate_from_the_wrong_issuer_is_refused(h, dev, foreign):
    fks, feui = foreign
    anchors = copy.deepcopy(dev.state["anchors"])
    certs = copy.deepcopy(dev.state.get("anchor_certificates") or {})
    data = cs02b(h, dev.eui, 9500, {u: fks.certificate(feui, u) for u in (Usage.DS, Usage.KA)})
    out = dev.receive(data, dev.now)
    assert _replacement_outcome(dev, out) == ["bad_certificate", "bad_certificate"]
    assert dev.state["anchors"] == anchors and (dev.state.get("anchor_certificates") or {}) == certs
    assert dev.anchors[Role.SUPPLIER] == org(h, Role.SUPPLIER)


def test_certificate_from_the_trusted_issuer_is_installed(h, dev, tmp_path):
    """The positive twin: the same replacement from the device's own CA moves the supplier anchor."""
    eui = bytes.fromhex("90B3D51FEE03BBBB")
    ks = Keystore(h._dir)
    PkiIssuer.load(h._dir / "ca").issue_organisation(ks, Role.SUPPLIER, eui)
    out = dev.receive(cs02b(h, dev.eui, 9600, {u: ks.certificate(eui, u) for u in (Usage.DS, Usage.KA)}), dev.now)
    assert _replacement_outcome(dev, out) == ["success", "success"]
    assert dev.anchors[Role.SUPPLIER] == eui


def test_a_forged_certificate_with_the_trusted_issuer_name_is_refused_when_the_path_is_given(h, dev, foreign):
    """Same issuer name and key identifier as the trusted CA, signed by another key: the certification path
    (the trusted CA's certificate) exposes it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    sup = org(h, Role.SUPPLIER)
    real = h.ks.x509_certificate(sup, Usage.DS)
    impostor = ecc.generate_private_key()
    b = x509.CertificateBuilder().subject_name(real.subject).issuer_name(real.issuer) \
        .public_key(impostor.public_key()).serial_number(x509.random_serial_number()) \
        .not_valid_before(real.not_valid_before_utc).not_valid_after(real.not_valid_after_utc)
    for ext in real.extensions:
        b = b.add_extension(ext.value, ext.critical)
    forged = b.sign(impostor, hashes.SHA256())
    from cryptography.hazmat.primitives import serialization
    org_ca = x509.load_pem_x509_certificate((h._dir / "ca" / "org-ca.pem").read_bytes())
    value = cs02b_value(9700, {Usage.DS: forged.public_bytes(serialization.Encoding.DER)})
    value["certification_path_certificates"] = [
        {"der": org_ca.public_bytes(serialization.Encoding.DER).hex().upper()}]
    content = encode_asn1({"use_case_schema": "CS02b.command", "value": value})
    out = dev.receive(frame(h, sup, dev.eui, CS02B, content, 9700, sign=True), dev.now)
    assert _replacement_outcome(dev, out) == ["bad_certificate"]
    assert dev.anchors[Role.SUPPLIER] == sup
    assert decode_asn1  # the schema round-trips (imported for symmetry with the encoder)
