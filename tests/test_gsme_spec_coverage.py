"""Every GCS command use case of the GBCS appendix whose target is the GSME (GBZ/ZCL), RTDS sample or not, is
served by a freshly provisioned GSME.

Each command is built from the use case's byte-level GBZ template alone (`hil.spec_commands.gbz_request`:
constants from the template, `*` cells sampled from the codec's declaration, activation times "now", every
instance a heading asks for), sent by a remote party of the first role the registry allows (the ACB on behalf
of the supplier when the ACB is the only role: GBCS routes those through it, brief §1.4; signed when the use
case is critical) to a GSME provisioned from an own test PKI. Reads go to a meter that has lived two months
(`prepare("lived")`), as a read of logs and snapshots presupposes. The answer must be: one response (plus the
alerts `EXPECTED_ALERTS` documents), `DF` and signed by the device for critical use cases, `DD` with a valid MAC
otherwise, echoing the command counter; for every command component (by ZCL sequence number) a response that
is the command's own response in the template, or a Default Response SUCCESS, or the template's alternate
response (NOT_FOUND: "no instances"); every attribute read (plain or in an encrypted component) SUCCESS and of
the ZCL type the appendix gives it (`firmware_emu/core/zcl_catalogue.json`).
"""
from __future__ import annotations

import pytest

from protocols.gbcs.message import decode
from protocols.gbcs.registry import REGISTRY
from protocols.security.keystore import Keystore, Role
from protocols.security.pki import init_pki
from protocols.zigbee.clusters import STATUS_NAMES
from hil.remote_party import RemoteParty
from hil.spec_commands import gbz_alternates, gbz_command, gbz_command_cases, gbz_request, spec_path
from hil.verify import make_verifier

from firmware_emu.core.provisioning import default_anchors, device_keys
from firmware_emu.core.security import ROLE_NAMES
from firmware_emu.core.zcl import ZclCatalogue
from firmware_emu.devices import device_class

T0 = 1420070400.0  # 2015-01-01T00:00:00Z
SPEC = spec_path()
pytestmark = pytest.mark.skipif(not SPEC.exists(), reason="GBCS spec data absent")

CASES = {uc["name"]: (uc, t) for uc, t in gbz_command_cases("GSME", ("GCS",))} if SPEC.exists() else {}

#: Alerts a command raises besides its response, by GBCS: name -> (alert codes, why). None today.
EXPECTED_ALERTS: dict[str, tuple[list[int], str]] = {}

#: Component outcomes other than success that GBCS prescribes for a well-formed command on this meter:
#: name -> ({(cluster, command id): ZCL status}, the GBCS reason).
EXPECTED_STATUS: dict[str, tuple[dict[tuple[int, int], int], str]] = {}

#: Use cases the GSME cannot serve yet (xfail, strict): name -> why. None today.
NOT_YET: dict[str, str] = {}

DEFAULT_RESPONSE, READ_ATTRIBUTES, SUCCESS, NOT_FOUND = 0x0B, 0x00, 0x00, 0x8B


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("gsme-spec-pki")
    summary = init_pki(d, devices=1, seed=43)
    ks = Keystore(d)
    return summary, ks, make_verifier(ks)


def fresh(pki, device_type: str, *, lived: bool = False):
    summary, ks, _ = pki
    dev = device_class(device_type)(device_keys(ks, summary.devices[0]), anchors=default_anchors(ks), now=T0)
    if lived:
        dev.prepare("lived")
    return dev


def sender(pki, code: int) -> tuple[RemoteParty, bytes | None]:
    """(party, supplementary remote party) of the first role the registry allows for the message code; the ACB
    sends on behalf of the supplier when it is the only role (GBCS: ACB-originated use cases, brief §1.4)."""
    summary, ks, _ = pki
    entry = REGISTRY.get(code)
    assert entry is not None, f"0x{code:04X}: not in the registry"
    # CS01b has no role table (the appendix's access table is for SME.C messages): GBCS 14.3, the supplier's UTRN
    roles = entry.roles or (("Supplier",) if entry.name == "CS01b" else ())
    assert roles, f"0x{code:04X}: no roles in the registry"
    role = next(ROLE_NAMES[r] for r in roles if ROLE_NAMES.get(r) in summary.organisations)
    party = RemoteParty(ks, summary.organisations[role])
    supp = summary.organisations[Role.SUPPLIER] if role is Role.ACCESS_CONTROL_BROKER else None
    return party, supp


def send_gbz(pki, dev, uc: dict, payload: dict, now: float = T0) -> tuple[dict, dict, list]:
    """Send the command; check one response (+ expected alerts) and its security. Returns (decoded response,
    `hil.verify` verdict, the other frames emitted)."""
    code = uc["message_code"]
    party, supp = sender(pki, code)
    frame = party.build(gbz_command(code, party.eui.hex().upper(), dev.eui.hex().upper(), payload),
                        on_behalf_of=supp)
    out = dev.receive(frame, now)
    responses = [e for e in out if e.kind == "response"]
    others = [e for e in out if e.kind != "response"]
    assert len(responses) == 1, [e.describe() for e in out]
    alerts, _why = EXPECTED_ALERTS.get(uc["name"], ([], None))
    assert [e.alert_code for e in others] == alerts, [e.describe() for e in others]
    r = responses[0]
    msg = decode(r.frame)
    verdict = pki[2](r.frame, msg)
    if REGISTRY.get(code).critical:
        assert r.frame[0] == 0xDF and verdict["signature"] == "valid" and verdict["mac"] == "absent", verdict
    else:
        assert r.frame[0] == 0xDD and verdict["mac"] == "valid" and verdict["signature"] == "absent", verdict
    gh = msg["grouping_header"]
    assert gh["originator_counter"] == party.last_counter == r.counter
    assert gh["recipient"] == party.eui.hex().upper()
    assert verdict["decryption"] in ("valid", "absent"), verdict
    return msg, verdict, others


def check_gbz(uc: dict, device_type: str, request, msg: dict, verdict: dict,
              expected: dict[tuple[int, int], int] | None = None) -> None:
    """Every command component answered as the module docstring says."""
    cat = ZclCatalogue.for_device(device_type)
    alternates = gbz_alternates(uc)
    expected = expected or {}
    plain = {int(i["path"].split(".")[3]): i["data"] for i in verdict["decrypted"]}
    comps = msg["payload"]["gbz"]["components"]
    answered: dict[int, list[tuple[int, dict, dict]]] = {}
    for i, c in enumerate(comps):
        payload = c["zcl"].get("payload", plain.get(i))
        assert payload is not None, f"{uc['name']}: component {i} not decrypted"
        answered.setdefault(c["zcl"]["sequence_number"], []).append((i, c, payload))
    for seq, (cmd, reads) in enumerate(zip(request.components, request.reads)):
        cluster, cid = cmd["cluster"], cmd["zcl"]["command_id"]
        got = answered.get(seq)
        assert got, f"{uc['name']}: command component {seq} (0x{cluster:04X}/{cid:02X}) not answered"
        for _i, c, payload in got:
            rid = c["zcl"]["command_id"]
            where = f"{uc['name']} component {seq} (0x{cluster:04X}/{cid:02X})"
            global_ = c["zcl"]["frame_control"]["frame_type"] == "global"
            if global_ and rid == DEFAULT_RESPONSE:
                status = payload["status"]
                want = expected.get((cluster, cid), SUCCESS)
                ok = status == want or (status == NOT_FOUND and (cluster, cid, NOT_FOUND) in alternates)
                assert ok and payload["command_id"] == cid, \
                    f"{where}: Default Response {STATUS_NAMES.get(status, status)}"
            elif global_ and cid == READ_ATTRIBUTES:
                assert rid == 0x01, f"{where}: answered 0x{rid:02X}"
                assert [r["attribute_id"] for r in payload["records"]] == reads
                for rec in payload["records"]:
                    assert rec["status"] == SUCCESS, f"{where}: attribute 0x{rec['attribute_id']:04X} " \
                                                     f"{STATUS_NAMES.get(rec['status'])}"
                    entry = cat.attribute(cluster, rec["attribute_id"])
                    assert entry is not None and rec["type"] == entry["type"], \
                        f"{where}: attribute 0x{rec['attribute_id']:04X} is {rec['type']}, the appendix says " \
                        f"{entry and entry['type']}"
            else:
                kind = cat.response_kind(uc["name"], c["cluster"], rid)
                assert kind is not None, f"{where}: 0x{rid:02X} is not a response of the template"


def test_the_appendix_lists_gsme_gbz_use_cases():
    assert len(CASES) >= 45
    assert {"GCS01a", "GCS13a", "GCS21b", "GCS36", "GCS44"} <= set(CASES)
    assert set(EXPECTED_STATUS) | set(EXPECTED_ALERTS) | set(NOT_YET) <= set(CASES)


def _marks(name):
    return [pytest.mark.xfail(reason=NOT_YET[name], strict=True)] if name in NOT_YET else []


@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n)) for n in CASES])
def test_gsme_serves_the_use_case_as_the_appendix_describes_it(pki, name):
    uc, _target = CASES[name]
    dev = fresh(pki, "GSME", lived=uc["read_or_update"] == "Read")
    req = gbz_request(uc, now=dev.now)
    msg, verdict, _ = send_gbz(pki, dev, uc, req.payload(), now=dev.now)
    check_gbz(uc, "GSME", req, msg, verdict, EXPECTED_STATUS.get(name, ({}, None))[0])


def test_the_checks_catch_a_refused_component(pki):
    """The component check is not vacuous: a meter whose register read fails is caught."""
    uc, _ = CASES["GCS13a"]
    dev = fresh(pki, "GSME")
    dev.faults.fail("0702/00", "HARDWARE_FAILURE")
    req = gbz_request(uc, now=T0)
    msg, verdict, _ = send_gbz(pki, dev, uc, req.payload())
    with pytest.raises(AssertionError, match="HARDWARE_FAILURE"):
        check_gbz(uc, "GSME", req, msg, verdict)


#: Update use case -> (a Read use case, {(cluster, attribute): the command field that sets it}).
READ_BACK = {
    "GCS41": ("GCS46", {(0x0702, 0x0307): "site_id"}),
    "GCS05": ("GCS21b", {(0x0705, 0x0031): "low_credit_warning_level", (0x0705, 0x0006): "overall_debt_cap",
                         (0x0705, 0x0021): "maximum_credit_level", (0x0705, 0x0022): "maximum_credit_per_top_up",
                         (0x0705, 0x0010): "emergency_credit_limit", (0x0705, 0x0011): "emergency_credit_threshold"}),
}


@pytest.mark.parametrize("setter", list(READ_BACK))
def test_a_value_set_reads_back_as_set(pki, setter):
    reader, fields = READ_BACK[setter]
    dev = fresh(pki, "GSME")
    req = gbz_request(CASES[setter][0], now=T0)
    sent = {k: v for c in req.components for k, v in c["zcl"]["payload"].items()}
    send_gbz(pki, dev, CASES[setter][0], req.payload())
    rreq = gbz_request(CASES[reader][0], now=T0 + 60)
    msg, verdict, _ = send_gbz(pki, dev, CASES[reader][0], rreq.payload(), now=T0 + 60)
    plain = {int(i["path"].split(".")[3]): i["data"] for i in verdict["decrypted"]}
    got = {(c["cluster"], r["attribute_id"]): r["value"]
           for i, c in enumerate(msg["payload"]["gbz"]["components"])
           for r in (c["zcl"].get("payload") or plain.get(i) or {}).get("records", [])}
    for key, name in fields.items():
        assert got[key] == sent[name], (key, name, got[key], sent[name])
