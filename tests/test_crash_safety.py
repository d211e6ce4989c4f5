"""Crash safety (issue 9): a fleet (`gbcs-emu fleet run` in a subprocess, TCP GFI) killed with SIGKILL in the
middle of a command mix keeps every acknowledged change, half-applies nothing, and refuses replays of acknowledged
commands after its restart (no counter went backwards). The scenario is `bench/crash.py` (`crash_run`), which
runs the full 10,000 commands 20 times in a row; here it runs with fewer commands so CI can afford it."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load_crash():
    spec = importlib.util.spec_from_file_location("bench_crash", ROOT / "bench" / "crash.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_crash"] = mod
    spec.loader.exec_module(mod)
    return mod


crash = _load_crash()


def _assert_passed(report: dict, commands: int) -> None:
    assert report["violations"] == [], report["violations"][:10]
    assert report["passed"]
    assert report["sent"] >= commands
    assert report["answered_before_kill"] >= report["kill_after_answers"]
    assert report["replays_after_restart_refused"] > 0        # acknowledged commands re-sent after the restart
    assert report["replays_refused"] > report["replays_after_restart_refused"]   # and during the mix
    assert report["verification_failures"] == 0
    assert report["top_ups_credited"] > 0
    assert report["fleet_summary"] is not None and report["fleet_summary"]["errors"].get("handler", 0) == 0


async def test_sigkill_mid_mix_keeps_every_acknowledged_change(tmp_path):
    """Kill -9 at a seeded random point of a 1,500-command mix (durability "normal", the kill -9 safe mode)."""
    # the kill must land with commands outstanding for the check to mean something: a loaded machine may answer
    # everything before it, so up to three seeded kill points are tried, and every one of them must pass
    for seed in (11, 12, 13):
        (tmp_path / f"s{seed}").mkdir()
        report = await crash.crash_run(tmp_path / f"s{seed}", commands=1500, premises=20, seed=seed)
        _assert_passed(report, 1500)
        if report["killed_with_in_flight"] > 0:
            break
    assert report["killed_with_in_flight"] > 0, "no kill landed with commands in flight"


async def test_sigkill_with_the_simulated_han_and_full_durability(tmp_path):
    """The same through the simulated HAN (ESME answers after HAN hops) with `durability = "full"`."""
    report = await crash.crash_run(tmp_path, commands=600, premises=12, seed=5, durability="full",
                                   han="simulated")
    _assert_passed(report, 600)


async def test_the_checks_catch_lost_or_regressed_state(tmp_path):
    """Negative control: the storage checks report an acknowledged top-up missing from storage, a load switch
    in the wrong state and a replay counter below the acknowledged one."""
    seen: dict = {}
    report = await crash.crash_run(tmp_path, commands=300, premises=6, seed=3, inspect=seen)
    assert report["passed"], report["violations"]
    cfg, meters, supplier = seen["cfg"], seen["meters"], seen["supplier"]
    assert crash.check_storage(cfg, meters, supplier, exact=True) == []
    m = next(m for m in meters if m.credit > 0 and m.acked_counter >= 0)
    m.credit += crash.PER_POUND                                 # an "acknowledged" top-up storage lacks
    m.supply = "disabled" if (m.supply or "enabled") == "enabled" else "enabled"
    m.acked_counter = m.sent_counter = m.acked_counter + 1000   # an "acknowledged" counter above storage's
    bad = crash.check_storage(cfg, meters, supplier, exact=True)
    assert any("stored balance" in b for b in bad), bad
    assert any("load switch" in b for b in bad), bad
    assert any("went backwards" in b for b in bad), bad


def test_meter_model_allows_exactly_the_subsets_of_uncertain_top_ups():
    m = crash.Meter(0, "00DBF10000000002", initial=100, credit=50, uncertain_topups=[10, 20])
    assert m.possible_balances() == {150, 160, 170, 180}
    m.supply, m.uncertain_supply = "disabled", ["enabled"]
    assert m.possible_supply() == {"disabled", "enabled"}


def test_soak_smoke_loses_nothing(tmp_path):
    """bench/soak.py in small: GSME reads through sleepy wakes with 2 % HAN loss, clients reconnecting every few
    seconds; every command answered, every answer verified, RSS sampled."""
    import json
    import subprocess
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "soak.py"), "--devices", "60", "--minutes", "0.3",
                           "--rate", "25", "--clients", "3", "--reconnect", "4", "--wake", "120", "--sample", "1",
                           "--esme-deadline", "30", "--state", str(tmp_path / "soak"), "--json"],
                          capture_output=True, text=True, timeout=150, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["lost"] == 0 and out["verification_failures"] == 0
    assert out["sent"] == out["answered"] > 100
    assert out["sent_by_use_case"].get("GCS13a", 0) > 0 and out["sent_by_use_case"].get("CS01a", 0) > 0
    assert out["reconnects"] >= 3
    assert out["rss"]["samples"] >= 5 and out["rss"]["rss_end_bytes"] > 20 * 2**20
