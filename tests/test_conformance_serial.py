"""Issue 7, done when: `gbcs-emu hil serve` (a subprocess, `--control`) on one end of a socat pty pair and
`conformance rtds ... --target serial://<other end>?framing=gfi --control ...` pass THE SAME ESME cases as in
process; the same over `tcp://` and pyserial's `socket://` (a socat TCP listener relaying to the pty); without
a control channel the cases that need one are skipped and a case whose frames do not come times out; the JUnit
and HTML reports. RTDS case directories are copied to tmp (never written in the repository); every wait is
bounded (socat and serve are killed at the end whatever happens)."""
from __future__ import annotations

import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from firmware_emu.cli import main
from hil.conformance import rtds as runner

sys.path.insert(0, str(Path(__file__).parent))
import pty_pair as _pty  # noqa: E402

DUT = "00DB1234567890A0"        # the RTDS ESME the served device is
ROOT = Path(__file__).resolve().parents[1]
#: The representative subset that must pass everywhere: reads, a twin read (a profile), a critical command, a
#: future-dated command with its three 8F66 alerts, ERROR variants (immediate and future-dated: faults through
#: the control channel), alert-only cases (stimulated through the control channel).
REPRESENTATIVE = ("4.2_ECS17a/ECS17a_4.2_SUCCESS", "4.1.1_ECS17b/ECS17b_4.1.1_TWIN_SUCCESS",
                  "7.2_ECS43/ECS43_7.2_SUCCESS", "1.1.2_ECS01c/ECS01c_1.1.2_FUTURE_DATED_SUCCESS",
                  "7.2_ECS43/ECS43_7.2_ERROR", "6.14.2_ECS46c/ECS46c_6.14.2_FUTURE_DATED_ALL_OPTIONALS_ERROR",
                  "NA_ECS68/ECS68_NA_8F0A_SINGLE_ALERT", "NA_ECS101/ECS101_NA_8F86_INPUT_ALERT")


def _is_esme_dir(name: str) -> bool:
    return ("ECS" in name and "CCS" not in name) or name.endswith("-DLMS")


@pytest.fixture(scope="module")
def esme_cases(rtds, tmp_path_factory) -> Path:
    """Every ESME case directory of the RTDS, copied."""
    root = tmp_path_factory.mktemp("esme")
    for d in sorted(rtds.iterdir()):
        if d.is_dir() and _is_esme_dir(d.name):
            shutil.copytree(d, root / d.name)
    if not any(root.iterdir()):
        pytest.skip("no ESME cases in the RTDS folder")
    return root


def _read_lines(proc: subprocess.Popen, n: int, timeout: float) -> list[str]:
    """The first n lines of the process's stdout (read from the descriptor: no buffer hides lines from select)."""
    fd = proc.stdout.fileno()
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    buf, deadline = b"", time.monotonic() + timeout
    while buf.count(b"\n") < n:
        left = deadline - time.monotonic()
        if left <= 0 or not sel.select(left):
            raise TimeoutError(f"serve printed {buf!r} only")
        chunk = os.read(fd, 4096)
        if not chunk:
            raise RuntimeError("serve exited early")
        buf += chunk
    return buf.decode().splitlines()[:n]


def _stop(proc: subprocess.Popen, sig=signal.SIGINT) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="module")
def dut(keystore_dir, tmp_path_factory):
    """`gbcs-emu hil serve --control` on end a of a pty pair: (pair, control HOST:PORT)."""
    if _pty.SOCAT is None:
        pytest.skip("socat not installed (.ci/run installs it)")
    d = tmp_path_factory.mktemp("dut")
    pair = _pty.PtyPair(d / "pty").start()
    cmd = [sys.executable, "-m", "firmware_emu.cli", "hil", "serve", "--port", pair.a, "--eui", DUT,
           "--keystore", str(keystore_dir), "--certs", str(d / "certs"), "--start", "2015-01-01T00:00:00Z",
           "--speed", "0", "--control", "127.0.0.1:0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        lines = _read_lines(proc, 4, 30)
        assert lines[0].startswith(f"eui: {DUT}") and lines[3].startswith("control on ")
        yield pair, lines[3].removeprefix("control on ")
    finally:
        _stop(proc)
        pair.stop()


@pytest.fixture(scope="module")
def inproc_passes(esme_cases, keystore_dir) -> set[str]:
    report = runner.run_rtds_conformance(esme_cases, keystore_dir, out=lambda line: None)
    passes = {r.case.name for r in report.results if r.passed and r.eui == DUT}
    assert set(REPRESENTATIVE) <= passes
    return passes


def _junit(path: Path) -> dict[str, str]:
    out = {}
    for tc in ET.parse(path).getroot().iter("testcase"):
        status = "failed" if tc.find("failure") is not None else "skipped" if tc.find("skipped") is not None \
            else "passed"
        out[f"{tc.get('classname')}/{tc.get('name')}"] = status
    return out


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """Until something listens on the port (our own bind fails), without connecting (the relay takes one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return
        finally:
            s.close()
        time.sleep(0.01)
    raise TimeoutError(f"nothing listens on {port}")


def test_serial_target_passes_the_same_esme_cases_as_inproc(dut, esme_cases, keystore_dir, inproc_passes,
                                                             tmp_path):
    pair, control = dut
    began = time.monotonic()
    r = CliRunner().invoke(main, ["conformance", "rtds", str(esme_cases), "--keystore", str(keystore_dir),
                                  "--target", f"serial://{pair.b}?framing=gfi&baud=115200", "--control", control,
                                  "--timeout", "5", "--junit", str(tmp_path / "j.xml"),
                                  "--html", str(tmp_path / "r.html")], catch_exceptions=False)
    elapsed = time.monotonic() - began
    assert r.exit_code == 0, r.output[-3000:]
    statuses = _junit(tmp_path / "j.xml")
    passes = {n for n, s in statuses.items() if s == "passed"}
    assert passes == inproc_passes
    # the rest are the cases of the other ESME (…A6) and of the hub: not this device under test
    out = r.output.splitlines()
    n_skipped = sum(s == "skipped" for s in statuses.values())
    assert out[-2:] == [f"{len(passes)} passed, 0 failed", f"{n_skipped} skipped (other device: {n_skipped})"]
    assert elapsed < 40, elapsed

    # JUnit: one testcase per case, skipped ones with their reason
    suite = ET.parse(tmp_path / "j.xml").getroot()
    assert int(suite.get("tests")) == len(statuses) and int(suite.get("skipped")) == n_skipped
    assert all("the device under test is" in s.get("message") for s in suite.iter("skipped"))
    # HTML: self-contained, every case, a per-type table, expected beside emitted JSON
    page = (tmp_path / "r.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page and "http" not in page.split("<body>")[0]
    assert all(name in page for name in REPRESENTATIVE)
    assert re.search(r"<tr><td>ESME</td><td class=\"passed\">\d+</td>", page)
    assert page.count('<details class="passed"') == len(passes)
    assert "expected (RTDS)" in page and "&quot;cra_flag&quot;: &quot;response&quot;" in page


@pytest.mark.parametrize("scheme", ["tcp", "socket"])
def test_tcp_and_socket_targets_through_a_socat_relay(dut, esme_cases, keystore_dir, inproc_passes, scheme):
    """`tcp://` (TcpWanClient, GFI) and pyserial's `socket://` (SerialTarget) reach the served device through
    `socat TCP-LISTEN ↔ FILE:<pty end>` (one connection, then socat exits)."""
    pair, control = dut
    port = _free_port()
    relay = subprocess.Popen([_pty.SOCAT, f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr",
                              f"FILE:{pair.b},raw,echo=0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_listening(port, relay)
        report = runner.run_rtds_conformance(esme_cases, keystore_dir, out=lambda line: None,
                                             target=f"{scheme}://127.0.0.1:{port}", control=control, timeout=5)
    finally:
        _stop(relay, signal.SIGTERM)
    assert {r.case.name for r in report.results if r.passed} == inproc_passes
    assert report.failed == 0


def test_without_control_cases_needing_one_are_skipped_and_missing_frames_time_out(dut, rtds, keystore_dir,
                                                                                   tmp_path):
    pair, control = dut
    root = tmp_path / "cases"
    for d in ("4.2_ECS17a", "1.1.2_ECS01c", "NA_ECS68", "4.1.1_ECS17b"):
        shutil.copytree(rtds / d, root / d)
    # a factory-fresh device first (the previous runs left it in some state)
    from hil.control import ControlClient, parse_hostport
    import asyncio

    async def reset():
        c = await ControlClient.connect(*parse_hostport(control), timeout=5)
        await c.call("reset", now=runner.DEFAULT_START)
        await c.close()

    asyncio.run(reset())
    lines: list[str] = []
    began = time.monotonic()
    report = runner.run_rtds_conformance(root, keystore_dir, out=lines.append, verbose=True, timeout=0.5,
                                         target=f"serial://{pair.b}?framing=gfi&eui={DUT}")
    by = {r.case.name: r for r in report.results}
    assert time.monotonic() - began < 15
    assert by["4.2_ECS17a/ECS17a_4.2_SUCCESS"].status == "passed"
    err = by["4.2_ECS17a/ECS17a_4.2_ERROR"]                       # the fault is a precondition
    assert err.status == "skipped" and err.reason.startswith(runner.NEEDS_CONTROL + " (fault ")
    assert by["NA_ECS68/ECS68_NA_8F0A_SINGLE_ALERT"].reason == runner.NEEDS_CONTROL + " (a stimulus)"
    assert by["4.1.1_ECS17b/ECS17b_4.1.1_TWIN_SUCCESS"].reason == runner.NEEDS_CONTROL + " (device profile twin)"
    # the future-dated command: the device's clock stands still (--speed 0) and nobody moves it: its alerts
    # never come, the case fails on its deadline
    fd = by["1.1.2_ECS01c/ECS01c_1.1.2_FUTURE_DATED_SUCCESS"]
    if fd.status != "skipped":          # (skipped instead when its counter is not above an earlier one)
        assert fd.status == "failed" and "timeout: expected 4 frames, got 1" in fd.failures
    assert lines[-1].startswith(f"{report.skipped} skipped (needs --control: ")
    assert all(r.status != "failed" or any(f.startswith("timeout:") for f in r.failures) for r in report.results)


def test_html_report_escapes_what_devices_and_files_say(tmp_path):
    from hil.conformance.report_html import render_html
    case = runner.Case("d&x/<b>ECS17a</b>", tmp_path, "d&x", "ECS17a", "SUCCESS")
    bad = runner.CaseResult(case, "failed", failures=["payload: <script>alert(1)</script> != \"x\""],
                            device_type="ESME", eui=DUT, frames=[b"\xdf<not a message>"])
    skipped = runner.CaseResult(runner.Case("e/y", tmp_path, "e", "ECS17a", ""), "skipped",
                                reason="precondition needs --control (a <fault>)", skip_group="needs --control",
                                device_type="GSME")
    page = render_html(runner.Report([bad, skipped]), target="serial:///dev/x?a=1&b=<2>")
    assert "<script" not in page and "<b>ECS17a" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; != &quot;x&quot;" in page
    assert "d&amp;x/&lt;b&gt;ECS17a&lt;/b&gt;" in page and "a=1&amp;b=&lt;2&gt;" in page
    assert "cannot decode" in page and "DF3C6E6F74" in page               # the emitted bytes, as hex
    assert "precondition needs --control (a &lt;fault&gt;)" in page
    assert '<tr><td>ESME</td><td class="passed">0</td><td class="failed">1</td>' in page
    assert '<tr><td>GSME</td><td class="passed">0</td><td class="failed">0</td><td class="skipped">1</td>' in page
    assert '<details class="failed" open>' in page


def test_cli_target_usage_errors(rtds, keystore_dir, tmp_path):
    root = tmp_path / "c"
    shutil.copytree(rtds / "4.2_ECS17a", root / "4.2_ECS17a")

    def cli(*args):
        return CliRunner().invoke(main, ["conformance", "rtds", str(root), "--keystore", str(keystore_dir), *args])

    assert cli("--target", "http://x").exit_code == 2
    assert cli("--control", "127.0.0.1:1").exit_code == 2                     # --control needs a remote target
    assert cli("--target", "tcp://127.0.0.1:1", "--control", "nonsense").exit_code == 2
    r = cli("--target", f"tcp://127.0.0.1:{_free_port()}", "--timeout", "0.5")
    assert r.exit_code == 2 and "cannot connect" in r.output
