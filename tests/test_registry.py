"""The message-code registry: generated from the spec files, never typed by hand, and complete."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from protocols.gbcs.registry import REGISTRY

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT.parent / "shared" / "docs" / "spec"
BRIEF = ROOT.parent / "shared" / "docs" / "gbcs-brief.md"
needs_spec = pytest.mark.skipif(not (SPEC / "gbcs-use-cases.json").exists(), reason="GBCS spec files absent")


def test_registry_is_loaded_and_named_after_the_spec():
    e = REGISTRY.get(0x0027)
    assert e.name == "ECS17b" and e.critical is False and "ESME" in e.target_devices
    assert e.payload_families == ("dlms",)
    assert REGISTRY.by_name("ecs17b") is e
    assert REGISTRY.get(0x0075).name == "GCS14" and "gbz" in REGISTRY.get(0x0075).payload_families
    assert REGISTRY.by_name("CS03B").payload_families == ("asn1",)
    assert REGISTRY.get(0x1001).name == "GNCA" and REGISTRY.get(0x1001).critical is False


@needs_spec
def test_registry_json_matches_a_fresh_generation():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_registry.py"), "--check", "--spec", str(SPEC),
                        "--brief", str(BRIEF)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@needs_spec
def test_every_use_case_code_of_the_spec_is_in_the_registry():
    ucs = json.loads((SPEC / "gbcs-use-cases.json").read_text())
    for uc in ucs:
        if uc["message_code"] is not None:
            names = REGISTRY.names_for(uc["message_code"])
            assert uc["name"] in names, uc["name"]
            entry = REGISTRY.by_name(uc["name"])
            assert entry.critical == uc["critical"] and entry.title == uc["title"]


@needs_spec
def test_every_mapping_table_use_case_has_a_code():
    rows = json.loads((SPEC / "gbcs-mapping-table.json").read_text())
    missing = [r["Use Case Title"].split()[0] for r in rows if REGISTRY.by_name(r["Use Case Title"].split()[0])
               is None]
    # the mapping table names CS05a/b/c (not carried in GBCS messages on their own): nothing else may be missing
    assert set(missing) <= {"CS05a", "CS05b", "CS05c"}, missing


@needs_spec
def test_every_code_of_the_brief_list_is_in_the_registry():
    text = BRIEF.read_text()
    section = re.search(r"### 1\.9.*?\n(.*?)\nCriticality", text, re.S).group(1)
    codes = {int(c, 16) for c in re.findall(r"=([0-9A-F]{4})", section)}
    codes |= {int(c, 16) for c in re.findall(r"\b(?:0x)?(1000|1001|00C[A-F]|00D5|00F0|00F2)\b", section)}
    assert codes and not [hex(c) for c in codes if c not in REGISTRY]


def test_registry_cli_lists_codes():
    from click.testing import CliRunner

    from firmware_emu.cli import main
    r = CliRunner().invoke(main, ["registry", "ECS17b", "0x0075"])
    assert r.exit_code == 0 and "0x0027" in r.output and "GCS14" in r.output
