"""The RTDS replay runner (`gbcs-emu conformance rtds`): discovery, device types, preconditions of ERROR
variants, the form comparison, its outputs (summary lines, JUnit, saved frames that verify) and exit codes.

RTDS case directories are copied to tmp_path from the fixture path, never into the repository."""
from __future__ import annotations

import copy
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from firmware_emu.cli import main
from hil.conformance import compare as cmp
from hil.conformance import rtds as runner
from hil.conformance.codec import read_message_file
from protocols.gbcs.message import decode


def _msg(path: Path) -> dict:
    return decode(read_message_file(path))


def _copy(rtds: Path, tmp_path: Path, *dirs: str) -> Path:
    root = tmp_path / "cases"
    for d in dirs:
        src = rtds / d
        if not src.is_dir():
            pytest.skip(f"RTDS case {d} not available")
        shutil.copytree(src, root / d)
    return root


# ------------------------------------------------------------------------------------------------- discovery


def test_discovery_pairs_alerts_with_their_command_by_variant(rtds):
    cases = {c.name: c for c in runner.discover_cases(rtds)
             if c.rel_dir in ("1.1.2_ECS01c", "NA_GCA-DLMS", "NA_ECS101")}
    fd = cases["1.1.2_ECS01c/ECS01c_1.1.2_FUTURE_DATED_SUCCESS"]
    assert fd.command.name == "ECS01c_1.1.2_FUTURE_DATED_SUCCESS_COMMAND_GBCS.HEX"
    assert fd.response.name == "ECS01c_1.1.2_FUTURE_DATED_SUCCESS_RESPONSE_GBCS.HEX"
    assert sorted(p.name for p in fd.alerts) == [
        "ECS01c_1.1.2_8F66_FUTURE_DATED_SUCCESS_ALERT_PRICE_MATRIX_GBCS.HEX",
        "ECS01c_1.1.2_8F66_FUTURE_DATED_SUCCESS_ALERT_SPECIAL_DAYS_GBCS.HEX",
        "ECS01c_1.1.2_8F66_FUTURE_DATED_SUCCESS_ALERT_SWITCHING_TABLE_GBCS.HEX"]
    assert cases["1.1.2_ECS01c/ECS01c_1.1.2_IMMEDIATE_SUCCESS"].alerts == []
    assert not any("PRECOMMAND" in n for n in cases)
    gca = cases["NA_GCA-DLMS/GCA-DLMS_NA_8F30_ALERT"]
    assert gca.alert_only and gca.variant == ""
    # one alert-only case per alert file: the INPUT and OUTPUT variants run on fresh devices
    assert {"NA_ECS101/ECS101_NA_8F86_INPUT_ALERT", "NA_ECS101/ECS101_NA_8F86_OUTPUT_ALERT"} <= set(cases)


def test_device_type_inference():
    assert runner.infer_device_type(["ECS17b", "CS02a"]) == "ESME"
    assert runner.infer_device_type(["CCS01", "ECS26i", "ECS35c"]) == "CHF"     # the hub takes a few ECS reads
    assert runner.infer_device_type(["GCS13a", "GCS61"]) == "GPF"                # GCS61 goes to a GPF only
    assert runner.infer_device_type(["GCS13a", "PCS01"]) == "GSME"
    assert runner.infer_device_type(["CS03C", "CS08"]) == "PPMID"
    assert runner.infer_device_type(["CS08"]) == "HCALCS"
    assert runner.infer_device_type(["CS02a"]) is None


# ------------------------------------------------------------------------------------------------- preconditions


class Recorder:
    """A target that only records the faults it is given."""

    def __init__(self):
        self.faults = []

    def inject_fault(self, target, result, *, at_execution=False):
        self.faults.append((target, result, at_execution))


def test_error_variant_injects_the_first_failing_specification(rtds):
    d = rtds / "1.6_ECS02"
    cmd = _msg(d / "ECS02_1.6_IMMEDIATE_SINGLE_ERROR_COMMAND_GBCS.HEX")
    resp = _msg(d / "ECS02_1.6_IMMEDIATE_SINGLE_ERROR_RESPONSE_GBCS.HEX")
    t = Recorder()
    runner._preconditions(t, cmd, resp, [], "IMMEDIATE_SINGLE_ERROR")
    assert t.faults == [("111/0-1:19.0.0.255/a11", "hardware-fault", False)]
    t = Recorder()
    runner._preconditions(t, cmd, resp, [], "IMMEDIATE_SINGLE_SUCCESS")  # success variants get nothing
    assert t.faults == []


def test_future_dated_error_injects_at_execution(rtds):
    d = rtds / "6.15.1_CS02gLoadControllerBySupplier"
    stem = "CS02gLoadControllerBySupplier_6.15.1_FUTURE_DATED_ERROR"
    cmd, resp = _msg(d / f"{stem}_COMMAND_GBCS.HEX"), _msg(d / f"{stem}_RESPONSE_GBCS.HEX")
    alert = _msg(d / "CS02gLoadControllerBySupplier_6.15.1_8F67_FUTURE_DATED_ERROR_ALERT_GBCS.HEX")
    t = Recorder()
    runner._preconditions(t, cmd, resp, [alert], "FUTURE_DATED_ERROR")
    assert len(t.faults) == 1 and t.faults[0][2] is True


# ------------------------------------------------------------------------------------------------- comparison


def test_compare_names_the_field_of_a_doctored_message(rtds):
    exp = _msg(rtds / "4.2_ECS17a" / "ECS17a_4.2_SUCCESS_RESPONSE_GBCS.HEX")
    assert cmp.compare_message(exp, exp) == []
    got = copy.deepcopy(exp)
    got["payload"]["dlms"]["access_response"]["data"][0] = {"type": "long-unsigned", "value": 1}
    got["grouping_header"]["originator_counter"] += 1
    got["grouping_header"]["other_information"]["message_code"] = "0x0027"
    got["payload"]["dlms"]["access_response"]["results"][1]["result"] = "hardware-fault"
    diffs = cmp.compare_message(got, exp)
    first_type = exp["payload"]["dlms"]["access_response"]["data"][0]["type"]
    assert f"payload.dlms.data[0]: long-unsigned != {first_type}" in diffs
    assert any(d.startswith("grouping_header.originator_counter:") for d in diffs)
    assert any(d.startswith("grouping_header.other_information.message_code: 0x0027 != ") for d in diffs)
    assert "payload.dlms.results[1]: get hardware-fault != get success" in diffs
    del got["mac_header"]
    assert "form: DF != DD" in cmp.compare_message(got, exp)


def test_compare_values_that_are_state_by_type_only(rtds):
    exp = _msg(rtds / "4.2_ECS17a" / "ECS17a_4.2_SUCCESS_RESPONSE_GBCS.HEX")
    got = copy.deepcopy(exp)
    data = got["payload"]["dlms"]["access_response"]["data"]
    for item in data:
        if isinstance(item.get("value"), int):
            item["value"] += 12345
    got["grouping_header"]["date_time"]["minute"] = 42
    assert cmp.compare_message(got, exp) == []
    got["grouping_header"]["date_time"] = None
    assert "grouping_header.date_time: absent != present" in cmp.compare_message(got, exp)


def test_compare_alerts_asn1_and_gbz(rtds):
    alert = _msg(rtds / "NA_GNCA-DLMS" / "GNCA-DLMS_NA_810E_ALERT_GBCS.HEX")
    later = copy.deepcopy(alert)
    later["grouping_header"]["originator_counter"] = 2007            # alerts: the device's own counter
    later["payload"]["dlms"]["data_notification"]["long_invoke_id_and_priority"] = "200007D7"
    assert cmp.compare_message(later, alert) == []
    later["payload"]["dlms"]["data_notification"]["notification_body"]["value"][0]["value"] = 0x8F30
    assert "payload.dlms.alert_code: 8F30 != 810E" in cmp.compare_message(later, alert)
    assert cmp.alert_counters([alert, alert]) != [] and cmp.alert_counters([alert, later]) == []

    asn = _msg(rtds / "8.7.1_CS03A1" / "CS03A1_8.7.1_SUCCESS_RESPONSE_GBCS.HEX")
    bad = copy.deepcopy(asn)
    bad["payload"]["asn1"]["value"]["response_code"] = "failure"
    assert cmp.compare_message(bad, asn) == ["payload.asn1.value.response_code: failure != success"]

    gbz = _msg(rtds / "11.2_GCS38" / "GCS38_11.2_SUCCESS_RESPONSE_GBCS.HEX")
    bad = copy.deepcopy(gbz)
    rec = bad["payload"]["gbz"]["components"][0]["zcl"]["payload"]["records"][0]
    rec["value"] = "FFFFFFFF"                                             # a value: state
    assert cmp.compare_message(bad, gbz) == []
    rec["type"] = "uint32"
    assert any(d.startswith("payload.gbz.components[0].zcl.payload.records[0].type: uint32 != ")
               for d in cmp.compare_message(bad, gbz))


def test_security_failures_follow_the_form():
    dd, df = {"mac_header": {"mac": "00"}}, {}
    assert cmp.security_failures(dd, {"mac": "valid", "signature": "absent"}) == []
    assert cmp.security_failures(dd, {"mac": "invalid", "signature": "absent"}) == ["security.mac: invalid != valid"]
    assert cmp.security_failures(df, {"mac": "absent", "signature": "unknown"}) == \
        ["security.signature: unknown != valid"]


# ------------------------------------------------------------------------------------------------- the runner


CASES = ("4.2_ECS17a", "1.6_ECS02", "11.2_GCS38")


def test_runner_outputs_junit_and_saved_frames_that_verify(rtds, keystore_dir, tmp_path):
    root = _copy(rtds, tmp_path, *CASES)
    lines: list[str] = []
    # the GSME's EUI declared a device type nobody emulates (an IHD): its cases are skipped and counted
    report = runner.run_rtds_conformance(root, keystore_dir, junit=tmp_path / "out.xml", save=tmp_path / "save",
                                       verbose=True, out=lines.append, device_types={"00DB1234567890A1": "IHD"})
    names = {r.case.name: r for r in report.results}
    gcs = names["11.2_GCS38/GCS38_11.2_SUCCESS"]
    assert gcs.status == "skipped" and gcs.reason == "IHD not emulated"
    assert lines[-2] == f"{report.passed} passed, {report.failed} failed"
    assert lines[-1] == f"{report.skipped} skipped (IHD: {report.skipped})"
    for r in report.results:
        if r.status == "failed":
            assert all(f"FAIL {r.case.name}: {f}" in lines for f in r.failures)
        elif r.status == "passed":
            assert f"ok   {r.case.name}" in lines

    suite = ET.parse(tmp_path / "out.xml").getroot()
    assert int(suite.get("tests")) == len(report.results)
    assert len(suite.findall("testcase/skipped")) == report.skipped
    assert len(suite.findall("testcase/failure")) == report.failed

    # every frame the devices sent is saved, and verifies with the RTDS keystore + the saved certificates
    save = tmp_path / "save"
    assert sorted(p.name for p in (save / "keystore").iterdir()) == ["00db1234567890a0-ds.pem",
                                                                       "00db1234567890a0-ka.pem"]
    merged = tmp_path / "ks"
    shutil.copytree(keystore_dir, merged)
    for p in (save / "keystore").iterdir():
        shutil.copy(p, merged / p.name)
    from hil.verify import make_verifier
    verify = make_verifier(merged)
    saved = sorted(save.rglob("*_EMU*_GBCS.HEX"))
    assert len(saved) == sum(len(r.frames) for r in report.results)
    assert (save / "1.6_ECS02" / "ECS02_1.6_IMMEDIATE_SINGLE_SUCCESS_RESPONSE_EMU_GBCS.HEX") in saved
    for p in saved:
        data = read_message_file(p)
        assert p.read_text().strip() == data.hex().upper()
        msg = decode(data)
        v = verify(data, msg)
        assert v["mac" if msg.get("mac_header") else "signature"] == "valid", p.name


def _wrong_type(monkeypatch):
    """Make the ESME answer every get with the wrong type (a boolean): its MAC and signature stay valid."""
    from firmware_emu.core.cosem import CosemServer
    real = CosemServer.access

    def access(self, ctx, request):
        response = real(self, ctx, request)
        body = response["access_response"]
        for i, r in enumerate(body["results"]):
            if r["kind"] == "get":
                body["data"][i] = {"type": "boolean", "value": True}
                r["result"] = "success"
        return response

    monkeypatch.setattr(CosemServer, "access", access)


def test_a_wrong_device_output_is_a_failure_naming_the_field(rtds, keystore_dir, tmp_path, monkeypatch):
    root = _copy(rtds, tmp_path, "4.2_ECS17a")
    _wrong_type(monkeypatch)
    lines: list[str] = []
    report = runner.run_rtds_conformance(root, keystore_dir, out=lines.append)
    exp = _msg(root / "4.2_ECS17a" / "ECS17a_4.2_SUCCESS_RESPONSE_GBCS.HEX")
    first_type = exp["payload"]["dlms"]["access_response"]["data"][0]["type"]
    assert f"FAIL 4.2_ECS17a/ECS17a_4.2_SUCCESS: payload.dlms.data[0]: boolean != {first_type}" in lines
    assert report.failed >= 1 and lines[-1] == f"{report.passed} passed, {report.failed} failed"


class _Mute:
    """A target that cannot be stimulated (and answers nothing)."""

    def send(self, frame, now):
        return []

    def tick(self, now):
        return []

    def next_wakeup(self):
        return None

    def inject_fault(self, *a, **k):
        pass

    def stimulate(self, message_code, alert_code, now):
        raise NotImplementedError(f"cannot raise 0x{message_code:04X}")

    def certificates(self):
        return {}


def test_alert_only_case_not_stimulable_is_skipped_and_silence_fails(rtds, keystore_dir, tmp_path):
    root = _copy(rtds, tmp_path, "NA_GCA-DLMS", "7.2_ECS43")
    lines: list[str] = []
    report = runner.run_rtds_conformance(root, keystore_dir, out=lines.append,
                                       target_factory=lambda dtype, eui, now: _Mute())
    by = {r.case.rel_dir: r for r in report.results}
    assert by["NA_GCA-DLMS"].status == "skipped" and by["NA_GCA-DLMS"].skip_group == "stimulate"
    assert by["7.2_ECS43"].status == "failed" and "responses: 0 != 1" in by["7.2_ECS43"].failures
    assert lines[-1].startswith(f"{report.skipped} skipped (") and "stimulate: 1" in lines[-1]


# ------------------------------------------------------------------------------------------------- CLI


def _cli(*args):
    return CliRunner().invoke(main, ["conformance", "rtds", *map(str, args)], catch_exceptions=False)


def test_cli_exit_codes(rtds, keystore_dir, tmp_path, monkeypatch):
    only_gsme = _copy(rtds, tmp_path, "11.2_GCS38")
    r = _cli(only_gsme, "--keystore", keystore_dir)
    assert r.exit_code == 0, r.output
    n = len(list(only_gsme.rglob("*_COMMAND_GBCS.HEX")))
    assert r.output.splitlines()[-1] == f"{n} passed, 0 failed"
    r = _cli(only_gsme, "--keystore", keystore_dir, "--device-type", "00DB1234567890A1=IHD")
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[-2:] == ["0 passed, 0 failed", f"{n} skipped (IHD: {n})"]
    # the same recipient declared an ESME: the ESME cannot answer a GBZ read, which is a failure
    r = _cli(only_gsme, "--keystore", keystore_dir, "--device-type", "00DB1234567890A1=ESME")
    assert r.exit_code == 1 and r.output.splitlines()[-1] == f"0 passed, {n} failed"

    assert _cli(only_gsme, "--keystore", keystore_dir, "--device-type", "nonsense").exit_code == 2
    assert _cli(only_gsme, "--keystore", keystore_dir, "--start", "yesterday").exit_code == 2
    assert _cli(only_gsme).exit_code == 2                                    # --keystore is required
    assert _cli(tmp_path / "missing", "--keystore", keystore_dir).exit_code == 2

    ecs = tmp_path / "ecs"
    shutil.copytree(rtds / "4.2_ECS17a", ecs / "4.2_ECS17a")
    _wrong_type(monkeypatch)
    r = _cli(ecs, "--keystore", keystore_dir, "--junit", tmp_path / "j.xml")
    assert r.exit_code == 1 and "FAIL 4.2_ECS17a/ECS17a_4.2_SUCCESS: payload.dlms.data[0]: boolean" in r.output
    assert (tmp_path / "j.xml").is_file()


def test_twin_variants_run_on_a_twin_device_and_emitted_frames_are_named_after_the_case(tmp_path):
    twin = runner.Case("d/ECS17b_4.1.1_TWIN_SUCCESS", tmp_path, "d", "ECS17b", "TWIN_SUCCESS",
                       command=tmp_path / "ECS17b_4.1.1_TWIN_SUCCESS_COMMAND_GBCS.HEX")
    assert runner.device_profile(twin) == {"twin": True}
    single = runner.Case("d/x", tmp_path, "d", "ECS17b", "SINGLE_SUCCESS", command=twin.command)
    assert runner.device_profile(single) is None
    response, alert = bytes.fromhex("DF0902") + bytes(30), bytes.fromhex("DF0903") + bytes(30)
    assert runner._emu_names(twin, [response, alert, alert]) == [
        "ECS17b_4.1.1_TWIN_SUCCESS_RESPONSE_EMU_GBCS.HEX", "ECS17b_4.1.1_TWIN_SUCCESS_ALERT_EMU_1_GBCS.HEX",
        "ECS17b_4.1.1_TWIN_SUCCESS_ALERT_EMU_2_GBCS.HEX"]
    only = runner.Case("NA_ECS68/ECS68_NA_8F0A_TWIN_ALERT", tmp_path, "NA_ECS68", "ECS68", "TWIN",
                       alerts=[tmp_path / "ECS68_NA_8F0A_TWIN_ALERT_GBCS.HEX"])
    assert runner._emu_names(only, [alert]) == ["ECS68_NA_8F0A_TWIN_ALERT_EMU_1_GBCS.HEX"]
