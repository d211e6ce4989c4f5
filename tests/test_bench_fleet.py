"""bench/fleet.py: a small fleet measured end to end (fleet process, load generator process, TCP GFI, MAC
verification) prints the four contract keys first, with sane values."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_fleet_prints_the_contract_keys():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "fleet.py"), "--devices", "200", "--seconds", "2",
                           "--json"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip().splitlines()[-1]
    out = json.loads(line)
    assert list(out)[:4] == ["devices", "rss_bytes", "round_trips_per_s", "p99_ms"]
    assert line.startswith('{"devices": 200, "rss_bytes": ')
    assert 20 * 2**20 < out["rss_bytes"] < 2 * 2**30
    assert out["round_trips_per_s"] > 10 and out["hot_round_trips_per_s"] > 10
    assert 0 < out["p99_ms"] < 10_000
    assert out["mac_failures"] == 0 and out["unanswered"] == 0
    assert out["premises"] == 100 and out["round_trips"]["random"] > 0
