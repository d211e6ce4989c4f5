"""A short, bounded hypothesis run of every fuzz target (fuzz/targets.py): the same functions atheris drives in
long campaigns (fuzz/README.md). Each target gets random bytes and mutations of its project-made seeds; the
invariant is the project's: only our typed errors from decoders, bounds that hold, devices that never raise.
CI derandomizes through the "ci" profile (tests/conftest.py)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fuzz.seeds import corpus  # noqa: E402
from fuzz.targets import TARGETS, run_one  # noqa: E402

#: Examples per target: devices are ~100x slower per input than the decoders.
FAST, SLOW = 400, 120


def _mutated(seeds: list[bytes]):
    """A seed with a few byte edits (overwrite, insert, delete, truncate), or plain random bytes."""
    @st.composite
    def edit(draw):
        data = bytearray(draw(st.sampled_from(seeds)))
        for _ in range(draw(st.integers(0, 4))):
            op = draw(st.integers(0, 3))
            pos = draw(st.integers(0, len(data)))
            if op == 0 and pos < len(data):
                data[pos] = draw(st.integers(0, 255))
            elif op == 1:
                data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
            elif op == 2:
                del data[pos:pos + draw(st.integers(1, 8))]
            else:
                del data[pos:]
        return bytes(data)
    plain = st.binary(max_size=300)
    return st.one_of(edit(), plain) if seeds else plain


@pytest.mark.parametrize("name", list(TARGETS))
def test_target_holds_its_invariant(name):
    seeds = corpus(name)
    assert seeds or name.startswith("device_"), f"no seeds for {name}"
    examples = SLOW if name.startswith("device_") else FAST

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(_mutated(seeds))
    def check(data):
        run_one(name, data, budget=5.0)

    for s in seeds[:8]:                    # every seed itself runs clean
        run_one(name, s, budget=5.0)
    check()


def test_device_payload_seeds_are_accepted_commands():
    """The payload targets reach the handlers: their templates are commands each device type accepts."""
    from fuzz.seeds import harness
    h = harness()
    for t in ("ESME", "GSME", "CHF", "GPF", "PPMID", "HCALCS"):
        assert len(h.templates(t)) >= 3, t
        tpl = h.templates(t)[-1]
        dev = h.fresh(t)
        out = dev.receive(h.rewrap(t, bytes([len(h.templates(t)) - 1]) + tpl.content), h.now)
        assert [e.kind for e in out if e.kind == "response"] == ["response"] and not dev.state["security_log"], t


def test_time_budget_stops_a_hang():
    from fuzz import targets
    from fuzz.targets import TimeBudgetExceeded

    def hang(data):
        while True:
            pass
    targets.TARGETS["_hang"] = hang
    try:
        with pytest.raises(TimeBudgetExceeded):
            run_one("_hang", b"", budget=0.2)
    finally:
        del targets.TARGETS["_hang"]


#: Inputs fuzzing found, kept as regressions: (target, input, what it did before the fix).
REGRESSIONS = [
    ("dlms_axdr", bytes.fromhex("1302020100fe01f6000000010000c9010000c9f9f9fff9ff"),
     "compact-array of nested arrays of zero-size elements: a hang (protocols/dlms/axdr.py)"),
    ("device_gsme_payload", bytes.fromhex("090109010107050009060004000447424353"),
     "reserved ZCL frame type handed to the Prepayment handler: KeyError (core/zcl.py)"),
    ("device_gpf_payload", bytes.fromhex("0b010901010702000c200008010000f9351c000100"),
     "global Read Reporting Configuration dispatched to Get Sampled Data: KeyError (core/zcl.py)"),
    ("device_esme_payload", bytes.fromhex(
        "0fd9200003f9000103001e00002b0202ff010102020102020512000709060000620100ee010000090800db00000000000109000202"
        "160202020901020900"),
     "ECS get_protected_attributes with a structure where a descriptor's class id belongs: TypeError out of "
     "receive (esme/metering.py now type-checks the descriptor fields: type-unmatched)"),
    ("device_esme_payload", bytes.fromhex("0bd9200003f5000103001e00002b0206ff0101010200020209010209 00".replace(" ", "")),
     "ECS get_protected_attributes whose descriptor list is null-data: TypeError iterating None out of receive "
     "(esme/metering.py: both members must be arrays, else type-unmatched)"),
]


@pytest.mark.parametrize("name,data,why", REGRESSIONS, ids=[r[0] for r in REGRESSIONS])
def test_found_inputs_stay_fixed(name, data, why):
    run_one(name, data, budget=2.0)
