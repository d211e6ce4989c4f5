"""`gbcs-emu demo`: a small embedded fleet driven for a few seconds answers every command with a valid MAC or
signature, quarantines some commands by anomaly detection, sees alerts and reports the inventory."""
from __future__ import annotations

import json

from click.testing import CliRunner

from firmware_emu.cli import main
from firmware_emu.fleet.demo import percentile


def test_demo_json_summary(tmp_path):
    result = CliRunner().invoke(main, ["demo", "--premises", "30", "--seconds", "5", "--json",
                                       "--state", str(tmp_path / "state")])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    c = summary["commands"]
    assert summary["ok"] is True
    assert c["sent"] > 0 and c["answered"] > 0 and c["succeeded"] > 0
    assert summary["verification"]["failures"] == 0 and summary["verification"]["checked"] >= c["answered"]
    assert c["quarantined"] > 0 and summary["quarantined"]["by_use_case"]
    # every kind of traffic went out: reads, top-ups, tariffs, supply switching, ESME and GSME
    assert {"ECS17a", "ECS17b", "CS01a", "ECS01b", "ECS42"} <= set(c["by_use_case"])
    assert any(uc.startswith("GCS") or uc == "CS01b" for uc in c["by_use_case"])
    # GSME commands are answered at the wake the demo fast-forwards to
    assert summary["latency_ms"]["GSME"]["count"] > 0 and summary["latency_ms"]["ESME"]["p50"] is not None
    assert summary["alerts"] and all(code.startswith("0x") for code in summary["alerts"])
    inv = summary["inventory"]
    assert inv["by_state"]["commissioned"] == summary["fleet"]["devices"]
    assert {"CHF", "ESME"} <= set(inv["by_type"])
    assert summary["fleet"]["materialised"] == 30 and not summary["fleet"]["errors"].get("handler")


def test_percentile():
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile(list(range(1, 101)), 99) == 99


def test_carried_payloads_match_the_appendix():
    """The demo carries its payloads (a fresh clone has no appendix); they are what the appendix gives."""
    import pytest
    from firmware_emu.fleet import demo
    from hil import spec_commands as sc
    if not sc.spec_path().is_file():
        pytest.skip(f"GBCS appendix not found at {sc.spec_path()}")
    ucs = {u["name"]: u for u in sc.load_use_cases()}
    now = 1735689600.0
    for name, payload in demo._TEMPLATES.items():
        uc = ucs[name]
        if "access_request" in payload:
            target = next(t for t in uc["targets"] if t["device"] == "ESME")
            assert sc.access_request(uc, target, now=now).payload() == payload, name
        else:
            assert sc.gbz_request(uc, now=now).payload() == payload, name
