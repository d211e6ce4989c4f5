"""The bundled examples (the demo's input) are the encodings of their JSON and decode back to it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from protocols.gbcs.message import decode, encode

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "configs" / "examples").glob("*.json"))


@pytest.mark.parametrize("src", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_hex_is_the_encoding_of_its_json(src):
    obj = json.loads(src.read_text())
    raw = bytes.fromhex(src.with_suffix(".HEX").read_text().strip())
    assert encode(obj) == raw
    dec = decode(raw)
    assert encode(dec) == raw
    assert dec["grouping_header"]["other_information"]["use_case"] == src.stem.split("_")[0]


def test_there_are_examples_of_each_payload_family():
    fams = {next(iter(json.loads(p.read_text())["payload"])) for p in EXAMPLES}
    assert {"dlms", "gbz", "asn1"} <= fams
