"""Every ECS command use case of the GBCS appendix whose target is the ESME (DLMS COSEM), RTDS sample or not, is
served by a factory-fresh ESME.

Each command is built from the appendix rows alone (`hil.spec_commands`: typed values, constants from the
appendix, activation times "now"), sent by a remote party of a role the registry allows (signed when the use case
is critical) to an ESME provisioned from an own test PKI, and the answer must be: one response, `DF` and signed
by the device for critical use cases, `DD` with a valid MAC otherwise, echoing the command counter; every
specification `success` (unless `EXPECTED_RESULTS` says otherwise, with the GBCS reason); every value read
(plainly or inside an encrypted get_protected_attributes answer) of the type tree the appendix gives that
attribute (`firmware_emu.core.catalogue`). A second test reads back each attribute an Update use case sets and
some Read use case gets: it returns the value set.
"""
from __future__ import annotations

import pytest

from protocols.gbcs.message import decode
from protocols.gbcs.registry import REGISTRY
from hil.remote_party import RemoteParty
from hil.spec_commands import NULL, AccessRequest, access_request, command, device_command_cases, spec_path
from hil.verify import make_verifier

from firmware_emu.core.catalogue import Catalogue, prototype, same_shape
from firmware_emu.core.provisioning import default_anchors, device_keys
from firmware_emu.core.security import ROLE_NAMES
from firmware_emu.esme.device import Esme

T0 = 1420070400.0  # 2015-01-01T00:00:00Z
SPEC = spec_path()
pytestmark = pytest.mark.skipif(not SPEC.exists(), reason="GBCS spec data absent")

CASES = {uc["name"]: (uc, target) for uc, target in device_command_cases("ESME", "ECS")} if SPEC.exists() else {}
CAT = Catalogue.for_device("ESME")

#: Use cases whose own semantics make a factory-fresh ESME refuse part of a well-formed command:
#: name -> (the results, in specification order, and the GBCS reason). None today: e.g. ECS09 (activate emergency
#: credit) succeeds because a fresh meter's balance (0) is at or below its emergency credit threshold (£5.00);
#: ECS70 (set clock) succeeds because the command's validity interval contains the Comms Hub time.
EXPECTED_RESULTS: dict[str, tuple[list[str], str]] = {}

#: Use cases the ESME cannot serve yet (xfail, strict: a fix makes the test fail until the entry goes): name ->
#: why. None today.
NOT_YET: dict[str, str] = {}


@pytest.fixture(scope="module")
def pki(own_pki):
    summary, ks = own_pki
    return summary, ks, make_verifier(ks)


def fresh_esme(pki) -> Esme:
    summary, ks, _ = pki
    return Esme(device_keys(ks, summary.devices[0]), anchors=default_anchors(ks), now=T0)


def party(pki, code: int) -> RemoteParty:
    """A remote party of the first role the registry allows for the message code."""
    summary, ks, _ = pki
    entry = REGISTRY.get(code)
    assert entry is not None and entry.roles, f"0x{code:04X}: no roles in the registry"
    role = next((ROLE_NAMES[r] for r in entry.roles if ROLE_NAMES.get(r) in summary.organisations), None)
    assert role is not None, f"{entry.name}: no organisation in the test PKI for roles {entry.roles}"
    return RemoteParty(ks, summary.organisations[role])


def send(pki, esme: Esme, name: str, payload: dict, now: float = T0) -> tuple[dict, list[str], dict]:
    """Send one command of use case `name`; check the response's security; returns (decoded, results,
    `hil.verify` verdict with the decrypted items)."""
    uc, _ = CASES[name]
    code = uc["message_code"]
    rp = party(pki, code)
    out = esme.receive(rp.build(command(code, rp.eui.hex().upper(), esme.eui.hex().upper(), payload)), now)
    assert [e.kind for e in out] == ["response"], [e.describe() for e in out]
    frame = out[0].frame
    msg = decode(frame)
    verdict = pki[2](frame, msg)
    if REGISTRY.get(code).critical:
        assert frame[0] == 0xDF and verdict["signature"] == "valid" and verdict["mac"] == "absent", verdict
    else:
        assert frame[0] == 0xDD and verdict["mac"] == "valid" and verdict["signature"] == "absent", verdict
    gh = msg["grouping_header"]
    assert gh["originator_counter"] == rp.last_counter == out[0].counter
    assert gh["recipient"] == rp.eui.hex().upper()
    ar = msg["payload"]["dlms"]["access_response"]
    results = [r["result"] for r in ar["results"]]
    assert len(results) == len(ar["data"]) == len(payload["access_request"]["request_specifications"])
    return msg, results, verdict


def check_shape(where: str, target: tuple, value: dict) -> None:
    """`value` read from `target` has the type tree the appendix gives it. Entries the catalogue cannot derive
    whole (variable arrays) are compared too: `same_shape` compares arrays by element types only."""
    entry = CAT.attribute(*target)
    assert entry is not None, f"{where}: {target} is not in the ESME catalogue"
    try:
        expected = prototype(entry)
    except ValueError:
        assert not entry.derived
        return
    diff = same_shape(expected, value)
    assert diff is None, f"{where}: {target} (derived={entry.derived}): {diff}"


def test_the_appendix_lists_esme_command_use_cases():
    assert len(CASES) >= 90
    assert {"ECS01a", "ECS17b", "ECS70", "ECS43"} <= set(CASES)
    assert not any((uc["message_type"] or "").startswith("SME.A.") for uc, _ in CASES.values())
    assert set(EXPECTED_RESULTS) <= set(CASES) and set(NOT_YET) <= set(CASES)


def _marks(name):
    return [pytest.mark.xfail(reason=NOT_YET[name], strict=True)] if name in NOT_YET else []


@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n)) for n in CASES])
def test_esme_serves_the_use_case_as_the_appendix_describes_it(pki, name):
    uc, target = CASES[name]
    req: AccessRequest = access_request(uc, target, now=T0)
    msg, results, verdict = send(pki, fresh_esme(pki), name, req.payload())
    expected, _why = EXPECTED_RESULTS.get(name, (["success"] * len(req.specs), None))
    assert results == expected
    data = msg["payload"]["dlms"]["access_response"]["data"]
    for i, read in enumerate(req.reads):
        if read is not None and results[i] == "success":
            check_shape(name, read, data[i])
    if req.protected and results[0] == "success":
        assert verdict["decryption"] == "valid", verdict
        values = verdict["decrypted"][0]["data"]
        assert values["type"] == "structure" and len(values["value"]) == len(req.protected)
        for read, value in zip(req.protected, values["value"]):
            check_shape(f"{name} (protected)", read, value)


def _read_back_cases() -> list[tuple[str, tuple, str]]:
    """(Update use case, attribute it sets, a Read use case that gets that attribute plainly)."""
    if not CASES:
        return []
    readers: dict[tuple, str] = {}
    requests = {name: access_request(uc, t, now=T0) for name, (uc, t) in CASES.items()}
    for name, req in requests.items():
        if CASES[name][0]["read_or_update"] == "Read":
            for spec, read in zip(req.specs, req.reads):
                if read is not None and spec["kind"] == "get":
                    readers.setdefault(read, name)
    return [(name, target, readers[target]) for name, req in requests.items()
            for target, _ in req.sets if target in readers]


READ_BACK = _read_back_cases()


def test_read_back_covers_the_stored_configuration():
    if SPEC.exists():
        assert len(READ_BACK) >= 50


@pytest.mark.parametrize("setter,target,reader", READ_BACK,
                         ids=[f"{s}-{c}/{o}/{a}-{r}" for s, (c, o, a), r in READ_BACK])
def test_an_attribute_set_reads_back_as_set(pki, setter, target, reader):
    uc, t = CASES[setter]
    req = access_request(uc, t, now=T0)
    value = dict(req.sets)[target]
    esme = fresh_esme(pki)
    _, results, _ = send(pki, esme, setter, req.payload())
    assert results == ["success"] * len(req.specs)
    class_id, obis, attr = target
    get = {"kind": "get", "descriptor": {"class_id": class_id, "instance_id": obis, "attribute_id": attr},
           "access_selection": None}
    msg, results, _ = send(pki, esme, reader, {"access_request": {
        "long_invoke_id_and_priority": "20000000", "date_time": "", "request_specifications": [get],
        "data": [dict(NULL)]}}, now=T0 + 60)
    assert results == ["success"]
    assert msg["payload"]["dlms"]["access_response"]["data"][0] == value
