"""The CLI contracts: `decode [--jsonl]`, `encode`, `conformance codec` with its `N passed, M failed` line."""
from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

from firmware_emu.cli import main
from protocols.gbcs.message import encode

MSG = {
    "mac_header": {"security_header": {"security_control": 17, "invocation_counter": 0},
                   "mac": "00112233445566778899AABB"},
    "grouping_header": {"cra_flag": "command", "originator_counter": 1, "originator": "AA00000000000001",
                        "recipient": "BB00000000000001", "date_time": None,
                        "other_information": {"message_code": "0x0050"}},
    "payload": {"dlms": {"access_request": {
        "long_invoke_id_and_priority": "20000001", "date_time": "",
        "request_specifications": [{"kind": "action", "descriptor": {"class_id": 9, "instance_id": "0-0:10.0.106.255",
                                                                     "method_id": 1}, "access_selection": None}],
        "data": [{"type": "long-unsigned", "value": 52}]}}},
    "signature": "",
}


def run(*args, input=None):
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


def test_decode_hex_argument_and_file(tmp_path):
    raw = encode(MSG)
    f = tmp_path / "m.HEX"
    f.write_text(raw.hex().upper())
    for arg in (raw.hex(), str(f)):
        r = run("decode", arg)
        assert r.exit_code == 0
        assert json.loads(r.output)["grouping_header"]["other_information"]["use_case"] == "ECS43"


def test_decode_jsonl_mixed_inputs_exit_2(tmp_path):
    good = tmp_path / "good.HEX"
    good.write_text(encode(MSG).hex())
    bad = tmp_path / "bad.HEX"
    bad.write_text(encode(MSG).hex()[:-40])
    r = run("decode", "--jsonl", str(good), str(bad), "DF09")
    lines = [json.loads(x) for x in r.output.splitlines()]
    assert r.exit_code == 2 and len(lines) == 3
    assert lines[0]["file"] == str(good) and "grouping_header" in lines[0]
    for rec in lines[1:]:
        assert set(rec) == {"file", "error"}
        assert set(rec["error"]) == {"type", "field", "offset", "message"}
        assert rec["error"]["type"] == "DecodeError"


def test_decode_jsonl_all_good_exit_0_and_stdin():
    r = run("decode", "--jsonl", "-", input=encode(MSG).hex() + "\n\n" + encode(MSG).hex() + "\n")
    assert r.exit_code == 0 and len(r.output.splitlines()) == 2


def test_encode_is_the_inverse_of_decode(tmp_path):
    raw = encode(MSG)
    decoded = run("decode", raw.hex()).output
    f = tmp_path / "m.json"
    f.write_text(decoded)
    r = run("encode", str(f))
    assert r.exit_code == 0 and r.output.strip() == raw.hex().upper()
    # JSON lines from decode --jsonl encode too
    lines = run("decode", "--jsonl", raw.hex(), raw.hex()).output
    f.write_text(lines)
    r = run("encode", str(f))
    assert r.output.split() == [raw.hex().upper()] * 2


def test_encode_bad_json_is_a_line_not_a_traceback(tmp_path):
    f = tmp_path / "bad.json"
    f.write_text('{"grouping_header": {"cra_flag": "command"}}')
    r = run("encode", str(f))
    assert r.exit_code == 2 and "EncodeError" in r.output


def test_conformance_codec_counts(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "ONE_COMMAND_GBCS.HEX").write_text(encode(MSG).hex().upper())
    (tmp_path / "a" / "TWO_COMMAND_GBCS.HEX").write_text(encode(MSG).hex().upper()[:-10])
    r = CliRunner().invoke(main, ["conformance", "codec", str(tmp_path)])
    lines = r.output.splitlines()
    assert lines[-1] == "1 passed, 1 failed" and r.exit_code != 0
    assert lines[0].startswith("FAIL a/TWO_COMMAND_GBCS.HEX")


def test_console_script_never_prints_a_traceback(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(range(256)))
    r = subprocess.run([sys.executable, "-m", "firmware_emu.cli", "decode", "--jsonl", str(junk), "zz", "DD"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr + r.stdout
    assert len(r.stdout.splitlines()) == 3


def test_rtds_conformance_codec_all_pass(rtds_dir):
    r = CliRunner().invoke(main, ["conformance", "codec", str(rtds_dir / "RTDS-4.5.0")])
    last = r.output.splitlines()[-1]
    n = len(list((rtds_dir / "RTDS-4.5.0").rglob("*.HEX")))
    assert last == f"{n} passed, 0 failed", r.output[-2000:]
    assert r.exit_code == 0
