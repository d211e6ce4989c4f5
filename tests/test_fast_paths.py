"""The hand-written fast paths of the frame path against the declarations they shortcut: the envelope parser and
builders (`protocols.gbcs.message`), the Access-Request parser and Access-Response builder
(`protocols.dlms.apdu`), over every RTDS message and hypothesis-generated and mutated ones (same result, same
key order, same DecodeError/EncodeError message, field and offset); the premises' commit snapshot (exactly the
JSON of `state()`, and a changed value, even 1 → True or 1 → 1.0, is never missed); the zparts storage form;
the device's cached trust anchors."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.c_differential import outcome
from tests.strategies import ENVELOPE_BYTES, mutate
from protocols.dlms import apdu
from protocols.errors import DecodeError
from protocols.gbcs import message as m

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


# -- envelope ---------------------------------------------------------------------------------------------------

def test_split_payload_matches_declaration_on_rtds(rtds_messages):
    fast = 0
    for path, data in rtds_messages:
        assert outcome(m.split_payload, data) == outcome(m.split_payload_declared, data), path.name
        fast += m._split_fast(data) is not None
    assert fast >= len(rtds_messages) * 0.9          # the fast path is the one that runs


@pytest.fixture(scope="module")
def samples(request):
    """A few RTDS messages of every shape (DD/DF, signed, with supplementary fields, GBT), or built ones."""
    try:
        msgs = request.getfixturevalue("rtds_messages")
        return [d for _, d in msgs[::7]]
    except pytest.skip.Exception:
        from tests.test_message import message
        return [m.encode(message()), m.encode(message(signature="CD" * 64))]


@given(data=st.data())
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_split_payload_matches_declaration_on_mutations(samples, data):
    raw = bytearray(data.draw(st.sampled_from(samples)))
    mutated = mutate(data.draw, raw, ENVELOPE_BYTES)
    assert outcome(m.split_payload, mutated) == outcome(m.split_payload_declared, mutated)


@given(st.binary(max_size=80), st.sampled_from([b"\xDF\x09", b"\xDD\x00\x00\x00\x00\x00\x00", b""]))
@settings(max_examples=800, deadline=None)
def test_split_payload_matches_declaration_on_random_bytes(tail, head):
    raw = head + tail
    if not raw:
        return
    assert outcome(m.split_payload, raw) == outcome(m.split_payload_declared, raw)


def test_grouping_header_builder_matches_declaration_on_rtds(rtds_messages):
    for path, data in rtds_messages:
        try:
            env, content, _ = m.split_payload_declared(data)
        except DecodeError:
            continue
        if content is None:
            continue
        gh, sig = env["grouping_header"], env["signature"]
        for s in (sig, None, ""):
            assert m.encode_grouping_header(gh, content, s) == m.encode_grouping_header_declared(gh, content, s)
        signing = m.encode_grouping_header(gh, content, sig)
        if "mac_header" in env:
            mac = bytes.fromhex(env["mac_header"]["mac"])
            assert m.wrap_mac_header(signing, mac) == m.wrap_mac_header_declared(signing, mac)
            if env["mac_header"]["security_header"] == {"security_control": 0x11, "invocation_counter": 0}:
                assert m.wrap_mac_header(signing, mac) == data, path.name


_EUIS = st.one_of(st.sampled_from(["00DB1234567890A4", "90b3d51f30010000", "00 DB 12 34 56 78 90 A4",
                                   "00DB12345678", "XYZ", "00DB1234567890A4FF"]), st.binary(min_size=8, max_size=8),
                  st.none())
_INTS = st.one_of(st.integers(-2, 2**64 + 1), st.booleans(), st.sampled_from(["0x10", "12", "x"]), st.none())
_DT = st.one_of(st.none(), st.fixed_dictionaries({
    "year": st.integers(-1, 70000), "month": st.integers(0, 256), "day_of_month": st.integers(0, 255),
    "day_of_week": st.integers(0, 255), "hour": st.integers(0, 255), "minute": st.integers(0, 255),
    "second": st.integers(0, 255), "hundredths": st.integers(0, 255), "deviation": st.integers(-40000, 40000),
    "clock_status": st.one_of(st.integers(0, 256), st.booleans())}), st.just({"year": 2024}))


@given(cra=st.sampled_from(["command", "response", "alert", "other", 1, 2, None]), counter=_INTS,
       originator=_EUIS, recipient=_EUIS, date_time=_DT,
       code=st.one_of(st.sampled_from(["0x0026", "0x8F1E", "0x10000"]), st.integers(-1, 0x10000), st.booleans()),
       rp_id=st.one_of(st.none(), _EUIS), rp_counter=st.one_of(st.none(), _INTS), o_counter=st.one_of(st.none(), _INTS),
       cert=st.one_of(st.none(), st.sampled_from(["", "3082", "ZZ", "30 82"])),
       content=st.one_of(st.binary(max_size=200), st.sampled_from(["D9", bytearray(b"\x01")])),
       signature=st.one_of(st.none(), st.sampled_from(["", "AB" * 64, "ab" * 64, "A B" * 43, "AB" * 63, "XY" * 64]),
                           st.binary(min_size=64, max_size=64)))
@settings(max_examples=1500, deadline=None)
def test_grouping_header_builder_matches_declaration_on_generated(cra, counter, originator, recipient, date_time,
                                                                  code, rp_id, rp_counter, o_counter, cert,
                                                                  content, signature):
    oi = {"message_code": code}
    for k, v in (("supplementary_remote_party_id", rp_id), ("supplementary_remote_party_counter", rp_counter),
                 ("supplementary_originator_counter", o_counter),
                 ("supplementary_remote_party_ka_certificate", cert)):
        if v is not None:
            oi[k] = v
    gh = {"cra_flag": cra, "originator_counter": counter, "originator": originator, "recipient": recipient,
          "date_time": date_time, "other_information": oi}
    assert outcome(m.encode_grouping_header, gh, content, signature) == \
        outcome(m.encode_grouping_header_declared, gh, content, signature)


@given(signing=st.binary(max_size=300), mac=st.one_of(st.binary(min_size=11, max_size=13), st.just("AB" * 12)),
       header=st.sampled_from([None, {}, {"security_header": {"security_control": 0x31, "invocation_counter": 5}}]))
@settings(max_examples=300, deadline=None)
def test_mac_wrapper_matches_declaration(signing, mac, header):
    assert outcome(m.wrap_mac_header, signing, mac, header) == outcome(m.wrap_mac_header_declared, signing, mac,
                                                                        header)


# -- DLMS APDUs -------------------------------------------------------------------------------------------------

def _dlms_payloads(rtds_messages, tag):
    out = []
    for _, data in rtds_messages:
        try:
            _, content, _ = m.split_payload_declared(data)
        except DecodeError:
            continue
        if content and content[0] == tag:
            out.append(content)
    return out


def test_access_request_parser_matches_declaration_on_rtds(rtds_messages):
    payloads = _dlms_payloads(rtds_messages, apdu.ACCESS_REQUEST)
    assert payloads
    fast = 0
    for p in payloads:
        assert outcome(apdu.decode_apdu, p) == outcome(apdu.decode_apdu_declared, p)
        fast += apdu._decode_access_request_fast(p) is not None
    assert fast == len(payloads)


def test_access_response_builder_matches_declaration_on_rtds(rtds_messages):
    payloads = _dlms_payloads(rtds_messages, apdu.ACCESS_RESPONSE)
    assert payloads
    for p in payloads:
        obj = apdu.decode_apdu_declared(p)
        assert apdu.encode_apdu(obj) == apdu.encode_apdu_declared(obj) == p


@pytest.fixture(scope="module")
def dlms_samples(request):
    try:
        msgs = request.getfixturevalue("rtds_messages")
        return _dlms_payloads(msgs, apdu.ACCESS_REQUEST)[::5]
    except pytest.skip.Exception:
        return [bytes.fromhex("D9200000000001010003010008000FF02010000")]


@given(data=st.data())
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_access_request_parser_matches_declaration_on_mutations(dlms_samples, data):
    raw = mutate(data.draw, bytearray(data.draw(st.sampled_from(dlms_samples))), ENVELOPE_BYTES)
    if not raw or raw[0] != apdu.ACCESS_REQUEST:
        raw = bytes((apdu.ACCESS_REQUEST,)) + raw[1:]
    assert outcome(apdu.decode_apdu, raw) == outcome(apdu.decode_apdu_declared, raw)


_DATA = st.one_of(st.just({"type": "null-data", "value": None}), st.just({"type": "double-long-unsigned", "value": 7}),
                  st.just({"type": "octet-string", "value": "0102"}), st.just({"type": "boolean", "value": 2}),
                  st.just({"type": "long-unsigned", "value": -1}), st.just({"type": "nope"}), st.just("x"),
                  st.just({"type": "structure", "value": [{"type": "unsigned", "value": 1, "class_name": "x"}]}))
_RESULT = st.fixed_dictionaries({"kind": st.sampled_from(["get", "set", "action", "get-with-selection", "x", 1]),
                                 "result": st.sampled_from(["success", "other-reason", "long-get-aborted",
                                                            "long-action-aborted", "nope", 0])})


@given(invoke=st.sampled_from(["20000000", "200000", "ZZ000000", 5]), dt=st.sampled_from(["", "0C", "X"]),
       specs=st.sampled_from([None, [], "missing"]), data=st.lists(_DATA, max_size=3),
       results=st.lists(_RESULT, max_size=3))
@settings(max_examples=800, deadline=None)
def test_access_response_builder_matches_declaration_on_generated(invoke, dt, specs, data, results):
    v = {"long_invoke_id_and_priority": invoke, "date_time": dt, "data": data, "results": results}
    if specs != "missing":
        v["request_specifications"] = specs
    obj = {"access_response": v}
    assert outcome(apdu.encode_apdu, obj) == outcome(apdu.encode_apdu_declared, obj)


# -- commit snapshot and storage --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fleet():
    """A two-premises fleet (direct HAN) with a few ESME reads done."""
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from frame_path import build_commands, make_config, run_frames

    from firmware_emu.fleet.host import FleetHost
    with tempfile.TemporaryDirectory() as tmp:
        cfg = make_config(Path(tmp) / "state", 2)
        host = FleetHost(cfg)
        cmds = build_commands(cfg, 6)
        _, responses = run_frames(host, cmds[:4], 64, host.start_time)
        yield host, cfg, cmds[4:], responses
        host.close()


def _dumps(state):
    return json.dumps(state, separators=(",", ":"))


def test_snapshot_is_the_state_json_and_misses_no_change(fleet):
    host, cfg, _, responses = fleet
    assert len(responses) == 4
    p = host.premises(0, host.start_time)
    for _ in range(2):
        snap = p.snapshot()
        assert snap.text == _dumps(p.state())
    esme = p.device("ESME")
    cosem = esme.state.setdefault("cosem", {})
    cosem["x"] = 1
    assert p.snapshot().text == _dumps(p.state())
    for changed in (True, 1.0, 1, False, 0, 0.0, -0.0, None, [1], (1,), {"a": 1}):
        cosem["x"] = changed
        assert p.snapshot().text == _dumps(p.state()), changed
    del cosem["x"]
    p.net.st["now"] = p.net.st["now"] + 1
    p.st["wake"]["interval"] = float(p.st["wake"]["interval"])
    assert p.snapshot().text == _dumps(p.state())
    before = p.snapshot().text
    p.net.rng.random()                                # the HAN drew: its random state changes
    snap = p.snapshot()
    assert snap.text == _dumps(p.state()) != before
    again = p.snapshot()
    assert again.text == snap.text
    assert again.counters == {e: d.state["counters"] for e, d in p.devices.items()}
    again.counters[esme.state["eui"]]["alert"] = -5  # a copy, not the live counters
    assert esme.state["counters"]["alert"] != -5


def _zparts(pieces: list[str], own: set[int]) -> bytes:
    """The `zparts` layout older versions wrote (host.PremisesStore.decode): piece count, per piece (source,
    length), the shared zlib stream, then each own stream, each behind its 4-byte length."""
    import zlib
    head, shared, streams = bytearray((len(pieces),)), b"", []
    for i, piece in enumerate(pieces):
        raw = piece.encode()
        head += bytes((1 if i in own else 0,)) + len(raw).to_bytes(4, "big")
        if i in own:
            streams.append(zlib.compress(raw))
        else:
            shared += raw
    out = bytes(head)
    for z in [zlib.compress(shared)] + streams:
        out += len(z).to_bytes(4, "big") + z
    return out


def test_stored_forms_decode(fleet):
    host, *_ = fleet
    p = host.premises(1, host.start_time)
    text = p.snapshot().text
    enc, blob = host.store.encode_raw(text.encode())
    assert enc == "zlib" and host.store.decode(enc, blob) == p.state()
    third = len(text) // 3
    pieces = [text[:third], text[third:2 * third], text[2 * third:]]
    assert host.store.decode("zparts", _zparts(pieces, {1})) == p.state()
    assert host.store.decode("json", text.encode()) == p.state()


def test_han_generator_state_is_one_integer_and_old_states_load():
    from firmware_emu.han.network import CompactRandom, HanNetwork
    net = HanNetwork(seed=3, loss=0.5)
    st = net.state
    assert type(st["rng"]) is int and len(json.dumps(st)) < 600
    again = HanNetwork.from_state(st)
    assert [again.rng.random() for _ in range(5)] == [net.rng.random() for _ in range(5)]
    old = dict(st, rng=[3, list(range(625)), None])   # a Mersenne Twister state saved by an older version
    a, b = HanNetwork.from_state(old), HanNetwork.from_state(json.loads(json.dumps(old)))
    assert a.rng.random() == b.rng.random()            # reseeded from it, deterministically
    r = CompactRandom(1)
    draws = [r.random() for _ in range(20000)]
    assert 0.49 < sum(draws) / len(draws) < 0.51 and min(draws) >= 0.0 and max(draws) < 1.0
    assert {r.randrange(6) for _ in range(600)} == set(range(6))
    assert r.getrandbits(0) == 0 and r.getrandbits(130) < 1 << 130 and len(r.randbytes(16)) == 16


def test_fleet_reads_after_restart(fleet, tmp_path):
    host, cfg, more, _ = fleet
    host.commit()
    for idx in (0, 1):
        host.evict(idx)
    out = []
    for f in more:
        out += host.handle(f, host.start_time + 50)
    host.commit()
    assert sum(o.kind == "response" for o in out) == len(more)


def test_device_anchors_follow_the_state(fleet):
    from protocols.security.keystore import Role
    host, *_ = fleet
    esme = host.premises(0, host.start_time).device("ESME")
    before = esme.anchors
    old = esme.state["anchors"]["supplier"]
    esme.set_anchor(Role.SUPPLIER, "00DB000000000099")
    assert esme.anchors[Role.SUPPLIER] == bytes.fromhex("00DB000000000099")
    esme.anchors[Role.SUPPLIER] = b"x"               # callers get their own dict
    assert esme.anchors[Role.SUPPLIER] == bytes.fromhex("00DB000000000099")
    esme.set_anchor(Role.SUPPLIER, old)
    assert esme.anchors == before
