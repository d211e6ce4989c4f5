"""The comms hub serves every use case the GBCS appendix targets at it, RTDS sample or not:

* the CHF (DLMS COSEM): every CCS and DBCH command use case, built from the appendix rows alone
  (`hil.spec_commands.access_request`), sent by the ACB on behalf of the supplier (GBCS: hub use cases are
  ACB-originated with a supplementary remote party, brief §1.4): one response (DBCH04 also raises the DBCH09
  alert GBCS prescribes), `DD` with a valid MAC to the ACB, counter echoed, every result `success`, every value
  read of the type tree the appendix gives it (`firmware_emu.core.catalogue`);
* the GPF (GBZ): every GCS use case whose target names the GPF (its CS ones are in test_cs_spec_coverage.py),
  built from the GBZ template (`hil.spec_commands.gbz_request`) and checked as test_gsme_spec_coverage.py checks
  the GSME's; reads go to a GPF whose mirror the GSME has just refreshed (`prepare("mirror_fresh")`).
"""
from __future__ import annotations

import pytest

from protocols.gbcs.message import decode
from protocols.security.keystore import Role
from hil.remote_party import RemoteParty
from hil.spec_commands import access_request, command, device_command_cases, gbz_command_cases, gbz_request
from hil.verify import make_verifier

from firmware_emu.core.alerts import AlertCode
from firmware_emu.core.catalogue import Catalogue, prototype, same_shape

from test_gsme_spec_coverage import SPEC, T0, check_gbz, fresh, send_gbz

pytestmark = pytest.mark.skipif(not SPEC.exists(), reason="GBCS spec data absent")

CHF_CASES = {uc["name"]: (uc, t) for prefix in ("CCS", "DBCH")
             for uc, t in device_command_cases("CHF", prefix)} if SPEC.exists() else {}
GPF_CASES = {uc["name"]: (uc, t) for uc, t in gbz_command_cases("GPF", ("GCS",))} if SPEC.exists() else {}
CHF_CAT = Catalogue.for_device("CHF")

#: Alerts a CHF command raises besides its response, by GBCS: name -> (alert codes, why).
CHF_ALERTS: dict[str, tuple[list[int], str]] = {
    "DBCH04": ([AlertCode.SUB_GHZ_CONFIGURATION_CHANGED],
               "a changed Sub GHz configuration is reported to the ACB by the DBCH09 alert"),
}

#: Use cases the hub cannot serve yet (xfail, strict): name -> why. None today.
NOT_YET: dict[str, str] = {}


@pytest.fixture(scope="module")
def pki(own_pki):
    summary, ks = own_pki
    return summary, ks, make_verifier(ks)


def test_the_appendix_lists_the_hub_use_cases():
    assert {"CCS01", "CCS02", "CCS03", "CCS06", "CCS07"} <= set(CHF_CASES)
    assert {"DBCH01", "DBCH02", "DBCH03", "DBCH04", "DBCH05"} <= set(CHF_CASES)
    assert {"GCS09", "GCS61", "GCS13a", "GCS21f"} <= set(GPF_CASES) and len(GPF_CASES) >= 21
    assert set(CHF_ALERTS) <= set(CHF_CASES) and set(NOT_YET) <= set(CHF_CASES) | set(GPF_CASES)


def _marks(name):
    return [pytest.mark.xfail(reason=NOT_YET[name], strict=True)] if name in NOT_YET else []


def check_shape(where: str, target: tuple, value: dict) -> None:
    entry = CHF_CAT.attribute(*target)
    assert entry is not None, f"{where}: {target} is not in the CHF catalogue"
    try:
        expected = prototype(entry)
    except ValueError:
        assert not entry.derived
        return
    diff = same_shape(expected, value)
    assert diff is None, f"{where}: {target}: {diff}"


@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n)) for n in CHF_CASES])
def test_chf_serves_the_use_case_as_the_appendix_describes_it(pki, name):
    uc, target = CHF_CASES[name]
    summary, ks, verifier = pki
    chf = fresh(pki, "CHF")
    acb = RemoteParty(ks, summary.organisations[Role.ACCESS_CONTROL_BROKER])
    supplier = summary.organisations[Role.SUPPLIER]
    req = access_request(uc, target, now=T0)
    frame = acb.build(command(uc["message_code"], acb.eui.hex().upper(), chf.eui.hex().upper(), req.payload()),
                      on_behalf_of=supplier)
    out = chf.receive(frame, T0)
    assert [e.kind for e in out if e.kind == "response"] == ["response"], [e.describe() for e in out]
    alerts, _why = CHF_ALERTS.get(name, ([], None))
    assert [e.alert_code for e in out if e.kind != "response"] == alerts
    r = next(e for e in out if e.kind == "response")
    msg = decode(r.frame)
    verdict = verifier(r.frame, msg)
    assert r.frame[0] == 0xDD and verdict["mac"] == "valid" and verdict["signature"] == "absent", verdict
    gh = msg["grouping_header"]
    assert gh["originator_counter"] == acb.last_counter and gh["recipient"] == acb.eui.hex().upper()
    assert gh["other_information"]["supplementary_remote_party_id"] == supplier.hex().upper()
    ar = msg["payload"]["dlms"]["access_response"]
    assert [x["result"] for x in ar["results"]] == ["success"] * len(req.specs)
    for i, read in enumerate(req.reads):
        if read is not None:
            check_shape(name, read, ar["data"][i])


@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n)) for n in GPF_CASES])
def test_gpf_serves_the_use_case_as_the_appendix_describes_it(pki, name):
    uc, _target = GPF_CASES[name]
    gpf = fresh(pki, "GPF")
    if uc["read_or_update"] == "Read":
        gpf.prepare("mirror_fresh")
    req = gbz_request(uc, now=T0)
    msg, verdict, _ = send_gbz(pki, gpf, uc, req.payload())
    check_gbz(uc, "GPF", req, msg, verdict)


def test_chf_device_log_reads_back_what_ccs01_added(pki):
    """CCS01 then CCS07 (Read CHF Device Logs): the device the appendix's CCS01 rows register is logged."""
    summary, ks, verifier = pki
    chf = fresh(pki, "CHF")
    acb = RemoteParty(ks, summary.organisations[Role.ACCESS_CONTROL_BROKER])
    replies = []
    for name in ("CCS01", "CCS07"):
        uc, target = CHF_CASES[name]
        req = access_request(uc, target, now=T0)
        frame = acb.build(command(uc["message_code"], acb.eui.hex().upper(), chf.eui.hex().upper(),
                                  req.payload()), on_behalf_of=summary.organisations[Role.SUPPLIER])
        replies.append((req, decode(next(e for e in chf.receive(frame, T0) if e.kind == "response").frame)))
    (add, _), (read, msg) = replies
    eui = next(v for s, v in zip(add.specs, add.data) if s["kind"] == "action")["value"][0]["value"]
    data = msg["payload"]["dlms"]["access_response"]["data"]
    assert any(eui in repr(d) for d in data), (eui, data)
