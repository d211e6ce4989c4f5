"""Every RTDS message decodes and re-encodes byte for byte (read through --rtds, never copied), and mutated
RTDS messages give only decoded messages or typed errors."""
from __future__ import annotations

import json
import random

import pytest

from protocols.errors import DecodeError
from protocols.gbcs.message import decode, encode, split_payload
from protocols.gbcs.registry import REGISTRY


def test_every_rtds_message_round_trips(rtds_messages):
    failures = []
    for path, raw in rtds_messages:
        try:
            msg = decode(raw)
            again = encode(json.loads(json.dumps(msg)))
        except Exception as e:  # noqa: BLE001 - collect every failure, then report them together
            failures.append(f"{path.name}: {type(e).__name__}: {e}")
            continue
        if again != raw:
            failures.append(f"{path.name}: re-encoded bytes differ")
    assert not failures, "\n".join(failures[:30])


def test_rtds_message_codes_are_all_in_the_registry(rtds_messages):
    missing = set()
    for path, raw in rtds_messages:
        env, _, _ = split_payload(raw)
        code = int(env["grouping_header"]["other_information"]["message_code"], 16)
        if code not in REGISTRY:
            missing.add((path.parent.name, hex(code)))
    assert not missing


def test_rtds_payload_family_matches_registry(rtds_messages):
    """The family told from the bytes is one the registry allows for the code (nothing keyed by file)."""
    wrong = []
    for path, raw in rtds_messages:
        msg = decode(raw)
        if "payload" not in msg:
            continue
        family = next(iter(msg["payload"]))
        entry = REGISTRY.get(int(msg["grouping_header"]["other_information"]["message_code"], 16))
        if entry and entry.payload_families and family not in entry.payload_families:
            wrong.append((path.name, family, entry.name, entry.payload_families))
    assert not wrong, wrong[:10]


def _mutate(rng: random.Random, raw: bytes) -> bytes:
    b = bytearray(raw)
    for _ in range(rng.randint(1, 3)):
        op = rng.choice(("flip", "truncate", "insert", "delete", "length"))
        i = rng.randrange(len(b)) if b else 0
        if not b:
            break
        if op == "flip":
            b[i] ^= 1 << rng.randrange(8)
        elif op == "truncate":
            del b[i:]
        elif op == "insert":
            b.insert(i, rng.randrange(256))
        elif op == "delete":
            del b[i]
        else:  # claim a huge length where a length byte may be
            b[i:i + 1] = bytes((0x82, 0xFF, 0xFF))
    return bytes(b)


def test_5000_mutated_rtds_messages_give_messages_or_typed_errors(rtds_messages):
    rng = random.Random(20261129)
    decoded = errors = 0
    for n in range(5000):
        _, raw = rtds_messages[n % len(rtds_messages)]
        bad = _mutate(rng, raw)
        try:
            msg = decode(bad)
        except DecodeError as e:
            errors += 1
            assert e.offset is None or 0 <= e.offset <= len(bad)
            continue
        decoded += 1
        assert encode(msg) == bad        # whatever decodes is canonical
    assert errors > 1000 and decoded + errors == 5000


@pytest.mark.parametrize("kind", ["COMMAND", "RESPONSE", "ALERT", "PRECOMMAND"])
def test_each_message_kind_is_present_and_decodes(rtds_messages, kind):
    picked = [(p, raw) for p, raw in rtds_messages if p.name.endswith(f"_{kind}_GBCS.HEX")]
    if not picked:
        pytest.skip(f"no {kind} files in this RTDS copy")
    for path, raw in picked:
        msg = decode(raw)
        if kind == "PRECOMMAND":
            assert msg["signature"] is None and "mac_header" not in msg
        if kind == "ALERT":
            assert msg["grouping_header"]["cra_flag"] == "alert"


def test_5000_mutated_rtds_messages_through_decode_jsonl(rtds_messages, tmp_path):
    """The CLI contract: one JSON object per input line, a decoded message or a typed DecodeError record,
    exit 2 because some failed, never a traceback."""
    import subprocess
    import sys

    rng = random.Random(5000)
    lines = [_mutate(rng, rtds_messages[n % len(rtds_messages)][1]).hex() or "00" for n in range(5000)]
    f = tmp_path / "mutated.txt"
    f.write_text("\n".join(lines) + "\n")
    r = subprocess.run([sys.executable, "-m", "firmware_emu.cli", "decode", "--jsonl", str(f)],
                       capture_output=True, text=True, timeout=600)
    assert "Traceback" not in r.stderr
    out = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(out) == 5000 and r.returncode == 2
    kinds = {"decoded": 0, "error": 0}
    for rec in out:
        if "error" in rec:
            assert rec["error"]["type"] == "DecodeError", rec
            kinds["error"] += 1
        else:
            assert "grouping_header" in rec or "gbt_block" in rec
            kinds["decoded"] += 1
    assert kinds["error"] > 1000
