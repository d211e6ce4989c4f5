"""The CS (common security / join / firmware) use cases work on every device type GBCS targets them at, built
from the specification alone:

* the **ASN.1** ones (CS02a–g, CS03A1/A2/B/C, CS04AC/B, CS06, CS07, CS08, and GCS28 / GCS59, the two GCS use
  cases with an ASN.1 payload): a valid value of each command schema of `protocols.asn1.payloads` (trust-anchor
  cells, new certificates from the own test PKI, device EUIs and types, a firmware hash from the device's CPL,
  a validity interval around now), sent by the party the use case's mode or GBCS names (the registry has no
  roles for them), to every device type of `TARGETS`; the response's `response_code` / status codes are
  success, its value fits the response schema (it decodes with the schema's name);
* the **GBZ** ones (CS01b, CS10a, CS10b, CS11) from their GBZ templates (`hil.spec_commands.gbz_request`) on
  the GSME and the GPF (the appendix's "ZigBee Device"), checked as test_gsme_spec_coverage.py does; CS01b's
  UTRN is a real one for the meter (`core.utrn_guard.make_utrn`, the supplier's side of GBCS 14.3);
* the **DLMS** one (CS01a) from its appendix rows on the ESME, with a real UTRN.

Every response: exactly one, `DF` and signed by the device when the use case is critical, else `DD` with a
valid MAC; the command counter echoed.
"""
from __future__ import annotations

import pytest

from protocols.asn1.payloads import schema_name_for
from protocols.gbcs.message import decode
from protocols.gbcs.registry import REGISTRY
from protocols.security import ecc
from protocols.security.eui import eui_hex
from protocols.security.keystore import Keystore, Role, Usage
from protocols.security.pki import PkiIssuer, init_pki
from hil.remote_party import RemoteParty
from hil.spec_commands import access_request, gbz_command_cases, gbz_request, load_use_cases, spec_path
from hil.verify import make_verifier

from firmware_emu.core import utrn_guard
from firmware_emu.core.cpl import load_cpl
from firmware_emu.core.provisioning import default_anchors, device_keys
from firmware_emu.devices import device_class

from test_gsme_spec_coverage import check_gbz, send_gbz

T0 = 1420070400.0  # 2015-01-01T00:00:00Z
ALL = ("ESME", "GSME", "CHF", "GPF", "PPMID", "HCALCS")
METERS, HUB, HAN = ("ESME", "GSME"), ("CHF", "GPF"), ("PPMID", "HCALCS")
OTHER_DEVICE = "00DB000000000099"

#: Use case -> (message code, device types GBCS targets it at, sending role, why those types).
TARGETS: dict[str, tuple[int, tuple[str, ...], Role, str]] = {
    "CS02a": (0x0008, ALL, Role.SUPPLIER, "every device holds remote-party trust anchors (GBCS 13.3)"),
    "CS02f": (0x011B, ALL, Role.SUPPLIER, "CS02a's signature-only variant"),
    "CS02c": (0x000A, ALL, Role.SUPPLIER, "every device has its own key pairs (GBCS 13.4)"),
    "CS02e": (0x000C, ALL, Role.SUPPLIER, "every device holds its certificates"),
    "CS03A1": (0x000D, METERS, Role.SUPPLIER, "method A: the meter joins a PPMID / HCALCS (RTDS: to the ESME)"),
    "CS03A2": (0x00AB, HAN, Role.SUPPLIER, "method A, the non-meter's side (RTDS cast: the HCALCS takes it)"),
    "CS03B": (0x000E, ("GSME", "GPF"), Role.SUPPLIER, "method B: the gas meter and its GPF (RTDS: to the GSME)"),
    "CS03C": (0x00AF, METERS + HAN, Role.SUPPLIER, "method C: the meter (critical, supplier) and the PPMID / "
                                                   "HCALCS (non-critical, ACB for the supplier): RTDS"),
    "CS04AC": (0x000F, METERS + HAN, Role.SUPPLIER, "unjoin what method A or C joined"),
    "CS04B": (0x0010, ("GSME", "GPF"), Role.SUPPLIER, "unjoin what method B joined"),
    "CS06": (0x0012, ("ESME", "GSME", "CHF"), Role.SUPPLIER, "remote firmware activation (GBCS 11)"),
    "CS07": (0x0013, ALL, Role.SUPPLIER, "every device with a device log"),
    "CS08": (0x0129, HAN, Role.SUPPLIER, "PPMID / HCALCS firmware version"),
    "GCS28": (0x007F, ("GSME",), Role.SUPPLIER, "set clock on the GSME (ASN.1)"),
    "GCS59": (0x008C, ("GPF",), Role.ACCESS_CONTROL_BROKER, "restore the GPF device log (ACB)"),
}
#: (use case, device type) sent by the ACB on behalf of the supplier (the "NonCritical" DUIS variants of RTDS:
#: CS03C to the PPMID, signed by the ACB itself); the rest by the role of `TARGETS`.
ACB_ROUTED = {("CS03C", "PPMID"), ("CS03C", "HCALCS"), ("CS03A2", "PPMID"), ("CS03A2", "HCALCS")}
#: What each device type joins (the other device of a join command).
JOIN_PEER = {"ESME": "PPMID", "GSME": "PPMID", "PPMID": "GSME", "HCALCS": "ESME", "GPF": "GSME", "CHF": "GSME"}

#: CS02b variants: message code -> (credentials replacement mode, authorising role, role whose cells change).
CS02B: dict[int, tuple[str, Role, Role]] = {
    0x0102: ("supplier_by_supplier", Role.SUPPLIER, Role.SUPPLIER),
    0x0103: ("network_operator_by_network_operator", Role.NETWORK_OPERATOR, Role.NETWORK_OPERATOR),
    0x0104: ("acb_by_acb", Role.ACCESS_CONTROL_BROKER, Role.ACCESS_CONTROL_BROKER),
    0x0105: ("wan_provider_by_wan_provider", Role.WAN_PROVIDER, Role.WAN_PROVIDER),
    0x0106: ("transitional_cos_by_transitional_cos", Role.TRANSITIONAL_COS, Role.TRANSITIONAL_COS),
    0x0107: ("supplier_by_transitional_cos", Role.TRANSITIONAL_COS, Role.SUPPLIER),
    0x0108: ("any_except_abnormal_root_by_recovery", Role.RECOVERY, Role.SUPPLIER),
}
#: CS02g: message code -> (mode, authorising role). The load controller cells exist on the ESME only.
CS02G: dict[int, tuple[str, Role]] = {
    0x0125: ("load_controller_by_load_controller", Role.LOAD_CONTROLLER),
    0x0126: ("load_controller_by_supplier", Role.SUPPLIER),
}
_ROLE_NAME = {Role.SUPPLIER: "supplier", Role.NETWORK_OPERATOR: "network_operator",
              Role.ACCESS_CONTROL_BROKER: "access_control_broker", Role.WAN_PROVIDER: "wan_provider",
              Role.TRANSITIONAL_COS: "transitional_cos", Role.RECOVERY: "recovery",
              Role.LOAD_CONTROLLER: "load_controller"}
_CELLS = {Role.SUPPLIER: (Usage.DS, Usage.KA, Usage.PP_KA), Role.NETWORK_OPERATOR: (Usage.DS, Usage.KA),
          Role.ACCESS_CONTROL_BROKER: (Usage.KA,), Role.WAN_PROVIDER: (Usage.DS,), Role.TRANSITIONAL_COS: (Usage.DS,),
          Role.LOAD_CONTROLLER: (Usage.DS, Usage.KA)}
#: New parties the replacements install (one per role), issued by the own test PKI's CA.
NEW_EUI = {r: bytes.fromhex(f"90B3D51FEE0A00{int(r):02X}") for r in _CELLS}

PEER_KA = b""        # the KA certificate of the joined meter (the fixture sets it)
PKI_DIR = None       # the own test PKI's folder (the fixture sets it)

#: (use case, device type) pairs a device cannot serve yet (xfail, strict): -> why. None today.
NOT_YET: dict[tuple[str, str], str] = {}

SPEC = spec_path()
GBZ_CASES = {(uc["name"], dev): uc for dev in ("GSME", "GPF")
             for uc, _ in gbz_command_cases(dev, ("CS",)) + gbz_command_cases("ZigBee Device", ("CS",))
             if dev == "GSME" or uc["name"] != "CS01b"} if SPEC.exists() else {}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    global PKI_DIR
    d = PKI_DIR = tmp_path_factory.mktemp("cs-spec-pki")
    summary = init_pki(d, devices=2, seed=47)          # the second device: the meter a HAN device joins
    ks = Keystore(d)
    global PEER_KA
    PEER_KA = ks.certificate(summary.devices[1], Usage.KA)
    anchors = default_anchors(ks)                  # before the new parties exist
    issuer = PkiIssuer.load(d / "ca")
    for role, eui in NEW_EUI.items():
        issuer.issue_organisation(ks, role, eui)
    return summary, ks, make_verifier(ks), anchors


def fresh(pki, device_type: str):
    summary, ks, _, anchors = pki
    model = load_cpl().product(device_type=device_type)
    return device_class(device_type)(device_keys(ks, summary.devices[0]), anchors=dict(anchors), now=T0,
                                     profile={"model": model.model} if model else {})


def party(pki, role: Role) -> RemoteParty:
    summary, ks, _, _ = pki
    return RemoteParty(ks, summary.organisations[role])


def send(pki, dev, rp: RemoteParty, code: int, payload: dict, **kw) -> dict:
    """One command; exactly one response, secured as the registry's criticality (or `sign`) says. Returns it
    decoded."""
    msg = {"grouping_header": {"recipient": eui_hex(dev.eui), "other_information": {"message_code": f"0x{code:04X}"}},
           "payload": payload}
    out = dev.receive(rp.build(msg, **kw), T0)
    responses = [e for e in out if e.kind == "response"]
    assert len(responses) == 1, [e.describe() for e in out]
    r = responses[0]
    decoded = decode(r.frame)
    verdict = pki[2](r.frame, decoded)
    if kw.get("sign", REGISTRY.get(code).critical):
        assert r.frame[0] == 0xDF and verdict["signature"] == "valid", verdict
    else:
        assert r.frame[0] == 0xDD and verdict["mac"] == "valid" and verdict["signature"] == "absent", verdict
    assert decoded["grouping_header"]["originator_counter"] == rp.last_counter
    return decoded


def asn1(decoded: dict, code: int) -> dict:
    body = decoded["payload"]["asn1"]
    assert body.get("use_case_schema") == schema_name_for(code, "response"), body
    return body["value"]


def _value(name: str, dev) -> dict:
    """A valid command value of the use case's ASN.1 schema (module docstring)."""
    other = JOIN_PEER[dev.DEVICE_TYPE]
    if name == "CS03B" and dev.DEVICE_TYPE == "GSME":
        other = "GPF"
    if name in ("CS02a", "CS02f"):
        return {"authorising_remote_party_ta_cell": {"remote_party_role": "supplier",
                                                     "key_usage": ["digital_signature"]},
                "remote_party_roles": ["supplier", "network_operator"]}
    if name in ("CS02c", "CS02e"):
        return {"key_usage": ["digital_signature"]}
    if name.startswith("CS03"):
        method = {"CS03A1": 0, "CS03A2": 1, "CS03B": 2, "CS03C": 3}[name]
        value = {"method": method, "other_device": OTHER_DEVICE, "device_type": other}
        if name == "CS03C" or (name == "CS03A2" and dev.DEVICE_TYPE in HAN):     # the meter's KA certificate
            value["other_device_certificate"] = {"der": PEER_KA.hex().upper()}
        return value
    if name.startswith("CS04"):
        return {"other_device": OTHER_DEVICE}
    if name == "CS06":
        product = load_cpl().product(device_type=dev.DEVICE_TYPE)
        return {"manufacturer_image_hash": product.firmware[-1].image_hash, "originator_counter": 0}
    if name in ("CS07", "CS08"):
        return None
    if name == "GCS28":
        import time
        iso = lambda t: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))  # noqa: E731
        return {"validity_interval_start": iso(T0 - 3600), "validity_interval_end": iso(T0 + 3600)}
    if name == "GCS59":
        return {"device_log_entries": [{"device_id": OTHER_DEVICE, "device_type": "GSME"}]}
    raise KeyError(name)


def _ok(name: str, value) -> None:
    """The response value reports success (each use case's own success form)."""
    if name in ("CS02a", "CS02f"):
        details = value["remote_party_details"]
        assert details and all(d["status_code"] == "success" for d in details), value
    elif name == "CS02c":
        assert "certification_request" in value, value
    elif name == "CS02e":
        assert "device_certificate" in value, value
    elif name == "CS06":
        assert value["execution_outcome"]["response_code"] == "success", value
    elif name == "CS08":
        assert value["response_code"] == "success" and value["firmware_version"], value
    elif name == "GCS28":
        assert value["device_time_status"] == "reliable", value
    elif name == "GCS59":
        assert [o["join_response_code"] for o in value["restore_outcomes"]] == ["success"], value
    else:
        assert value["response_code"] == "success", value


ASN1_CASES = [(n, d) for n, (_c, types, _r, _w) in TARGETS.items() for d in types]


def _marks(key):
    return [pytest.mark.xfail(reason=NOT_YET[key], strict=True)] if key in NOT_YET else []


def test_the_tables_cover_the_cs_use_cases():
    names = {uc["name"] for uc in load_use_cases() if uc["name"].startswith("CS")} if SPEC.exists() else set()
    covered = set(TARGETS) | {"CS02b", "CS02g", "CS02d", "CS01a"} | {n for n, _ in GBZ_CASES}
    assert names - covered <= {"CS05a", "CS05b", "CS14"}, names - covered   # firmware distribution; an alert
    for name, (code, *_rest) in TARGETS.items():
        assert schema_name_for(code, "command") == f"{name}.command"


@pytest.mark.parametrize("name,device_type", [pytest.param(n, d, marks=_marks((n, d))) for n, d in ASN1_CASES])
def test_asn1_use_case_succeeds_from_its_schema(pki, name, device_type):
    code, _types, role, _why = TARGETS[name]
    dev = fresh(pki, device_type)
    kw = {}
    if role is Role.ACCESS_CONTROL_BROKER or (name, device_type) in ACB_ROUTED:
        role = Role.ACCESS_CONTROL_BROKER
        kw["on_behalf_of"] = pki[0].organisations[Role.SUPPLIER]
    if name in ("CS04AC", "CS04B"):               # unjoin what a join put in the device log first
        join = "CS03B" if name == "CS04B" else "CS03A1" if device_type in METERS else "CS03C"
        jrole = Role.ACCESS_CONTROL_BROKER if (join, device_type) in ACB_ROUTED else Role.SUPPLIER
        jkw = {"on_behalf_of": pki[0].organisations[Role.SUPPLIER]} if jrole is Role.ACCESS_CONTROL_BROKER else {}
        jcode = TARGETS[join][0]
        _ok(join, asn1(send(pki, dev, party(pki, jrole), jcode, {"asn1": {
            "use_case_schema": f"{join}.command", "value": _value(join, dev)}}, **jkw), jcode))
    payload = {"asn1": {"use_case_schema": f"{name}.command", "value": _value(name, dev)}}
    _ok(name, asn1(send(pki, dev, party(pki, role), code, payload, **kw), code))


def _replacement(code: int, modes: dict, authoriser: RemoteParty, target: Role, ks: Keystore) -> tuple[dict, int]:
    counter = (authoriser.counters.last(authoriser.eui) or 0) + 1000
    mode = modes[code][0]
    cells = []
    for usage in _CELLS[target]:
        cell = {"remote_party_role": _ROLE_NAME[target],
                "key_usage": ["digital_signature" if usage is Usage.DS else "key_agreement"]}
        if usage is Usage.PP_KA:
            cell["cell_usage"] = "prepayment_top_up"
        der = ks.certificate(NEW_EUI[target], usage)
        cells.append({"replacement_certificate": {"der": der.hex().upper()}, "target_trust_anchor_cell": cell})
    auth_role = modes[code][1]
    auth_cell = {"remote_party_role": _ROLE_NAME[auth_role],
                 "key_usage": ["key_agreement" if auth_role is Role.ACCESS_CONTROL_BROKER else "digital_signature"]}
    return {"authorising_remote_party_control": {
        "credentials_replacement_mode": mode, "authorising_remote_party_ta_cell": auth_cell,
        "authorising_remote_party_seq_number": counter, "new_remote_party_floor_seq_number": 0},
        "replacements": cells, "certification_path_certificates": []}, counter


CS02B_CASES = [(c, d) for c in CS02B for d in ALL]


@pytest.mark.parametrize("code,device_type", [pytest.param(c, d, marks=_marks((f"0x{c:04X}", d)))
                                              for c, d in CS02B_CASES],
                         ids=[f"{CS02B[c][0]}-{d}" for c, d in CS02B_CASES])
def test_cs02b_replaces_the_trust_anchors(pki, code, device_type):
    summary, ks, _, _ = pki
    dev = fresh(pki, device_type)
    mode, auth_role, target = CS02B[code]
    rp = party(pki, auth_role)
    value, counter = _replacement(code, {k: (v[0], v[1]) for k, v in CS02B.items()}, rp, target, ks)
    decoded = send(pki, dev, rp, code, {"asn1": {"use_case_schema": "CS02b.command", "value": value}},
                   counter=counter, sign=True)
    outcome = asn1(decoded, code)["execution_outcome"]
    assert outcome["credentials_replacement_mode"] == mode
    assert [o["status_code"] for o in outcome["replacement_outcomes"]] == ["success"] * len(_CELLS[target])
    replacing = {o["replacing_subject_unique_id"] for o in outcome["replacement_outcomes"]}
    assert replacing == {NEW_EUI[target].hex().upper()}
    assert dev.anchors[target] == NEW_EUI[target]


@pytest.mark.parametrize("code", list(CS02G), ids=[m for m, _ in CS02G.values()])
def test_cs02g_replaces_the_load_controller_on_the_esme(pki, code):
    summary, ks, _, _ = pki
    dev = fresh(pki, "ESME")
    rp = party(pki, CS02G[code][1])
    value, counter = _replacement(code, CS02G, rp, Role.LOAD_CONTROLLER, ks)
    decoded = send(pki, dev, rp, code, {"asn1": {"use_case_schema": "CS02g.command", "value": value}},
                   counter=counter, sign=True)
    outcome = asn1(decoded, code)["execution_outcome"]
    assert [o["status_code"] for o in outcome["replacement_outcomes"]] == ["success", "success"]
    assert dev.anchors[Role.LOAD_CONTROLLER] == NEW_EUI[Role.LOAD_CONTROLLER]


@pytest.mark.parametrize("device_type", ALL)
def test_cs02c_request_certified_then_installed_by_cs02d(pki, device_type):
    """CS02c (a key pair and its certification request) then CS02d (the certificate the CA issued for it)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from protocols.security.pki import DEVICE_POLICY
    summary, ks, _, _ = pki
    dev = fresh(pki, device_type)
    rp = party(pki, Role.SUPPLIER)
    value = asn1(send(pki, dev, rp, 0x000A, {"asn1": {"use_case_schema": "CS02c.command",
                                                      "value": {"key_usage": ["digital_signature"]}}}), 0x000A)
    csr = x509.load_der_x509_csr(bytes.fromhex(value["certification_request"]["der"]))
    assert csr.is_signature_valid
    issuer = PkiIssuer.load(PKI_DIR / "ca")
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    cert = issuer._end_entity(issuer._cas["device"], x509.Name([]), csr.public_key(), Usage.DS, DEVICE_POLICY,
                              "cs02d", san)
    der = cert.public_bytes(serialization.Encoding.DER).hex().upper()
    msg = {"grouping_header": {"recipient": eui_hex(dev.eui), "other_information": {"message_code": "0x000B"}},
           "payload": {"asn1": {"use_case_schema": "CS02d.command", "value": {"device_certificate": {"der": der}}}}}
    out = dev.receive(rp.build(msg), T0)
    assert [e.kind for e in out] == ["response"], [e.describe() for e in out]
    frame = out[0].frame                 # critical: DF, signed with the key the new certificate certifies
    assert frame[0] == 0xDF and frame[-65] == 0x40
    assert ecc.verify(cert.public_key(), frame[1:-65], frame[-64:])
    assert asn1(decode(frame), 0x000B) == {"response_code": "success"}


@pytest.mark.parametrize("name,device_type", [pytest.param(n, d, marks=_marks((n, d))) for n, d in GBZ_CASES])
def test_gbz_cs_use_case_from_its_template(pki, name, device_type):
    uc = GBZ_CASES[(name, device_type)]
    dev = fresh(pki, device_type)
    if uc["read_or_update"] == "Read":            # logs to read: a meter with a past, a fresh mirror
        dev.prepare("lived" if device_type == "GSME" else "mirror_fresh")
    req = gbz_request(uc, now=T0)
    if name == "CS01b":                             # a real UTRN for this meter, not the template's sample
        utrn = utrn_guard.make_utrn(dev, 1 << 32, 20)
        req.components[0]["zcl"]["payload"]["top_up_code"] = utrn.encode().hex().upper()
    summary, ks, verifier, _ = pki
    msg, verdict, _ = send_gbz((summary, ks, verifier), dev, uc, req.payload())
    check_gbz(uc, device_type, req, msg, verdict)
    if name == "CS01b":
        assert msg["payload"]["gbz"]["components"][0]["zcl"]["payload"]["result_type"] == 0   # accepted


def test_cs01a_top_up_on_the_esme_from_its_rows(pki):
    uc = next(u for u in load_use_cases() if u["name"] == "CS01a")
    target = next(t for t in uc["targets"] if t["device"] == "ESME")
    dev = fresh(pki, "ESME")
    req = access_request(uc, target, now=T0)
    utrn = utrn_guard.make_utrn(dev, 1 << 32, 20)
    i = next(i for i, s in enumerate(req.specs) if s["kind"] == "action")
    req.data[i] = {"type": "octet-string", "value": utrn.encode().hex().upper()}
    rp = party(pki, Role.SUPPLIER)
    decoded = send(pki, dev, rp, uc["message_code"], {"dlms": req.payload()})
    assert [r["result"] for r in decoded["payload"]["dlms"]["access_response"]["results"]] == \
        ["success"] * len(req.specs)
