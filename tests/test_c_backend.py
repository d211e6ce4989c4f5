"""The optional C codec (`protocols._fast`, issue 8) against the Python paths it shortcuts: the whole message
decode over every RTDS file and over hypothesis-mutated and -generated messages (same JSON, same key order, or
the same DecodeError message, field and offset), A-XDR Data, DLMS APDUs, GBZ component splitting, the envelope,
CRC-16/X.25, the GFI/HDLC deframers and KDF + GMAC. Skipped when the C backend is not active (a pure-Python
install or GBCS_EMU_PURE_PYTHON=1); the backend selector itself is tested either way."""
from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.c_differential import outcome
from tests.strategies import mutate
from protocols import fast
from protocols.dlms import apdu, axdr
from protocols.errors import DecodeError
from protocols.framing import crc as crc_mod
from protocols.framing import gfi, hdlc
from protocols.gbcs import message as m
from protocols.security import mac as mac_mod
from protocols.zigbee import gbz

ROOT = Path(__file__).resolve().parents[1]
needs_c = pytest.mark.skipif(fast.backend() != "c", reason="C codec backend not active")
_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))

pure = fast.pure_python     # the pure-Python paths in this process: the reference


def both(fn, *a, **kw):
    c = outcome(fn, *a, **kw)
    with pure():
        p = outcome(fn, *a, **kw)
    return c, p


# -- the selector -------------------------------------------------------------------------------------------------

def _run(code: str, **env) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith("GBCS_EMU_")}
    e.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env=e)


def test_pure_python_env_selects_python_backend():
    r = _run("from protocols import fast; print(fast.backend())", GBCS_EMU_PURE_PYTHON="1")
    assert r.stdout.strip() == "python" and "RuntimeWarning" not in r.stderr


def test_version_line_names_the_backend():
    r = _run("import sys; sys.argv=['gbcs-emu','--version']; from firmware_emu.cli import main; main()",
             GBCS_EMU_PURE_PYTHON="1")
    assert "(codec backend: python)" in r.stdout and r.stdout.startswith("gbcs-emu ")
    same = {k: v for k, v in os.environ.items() if k == "GBCS_EMU_PURE_PYTHON"}
    r = _run("import sys; sys.argv=['gbcs-emu','--version']; from firmware_emu.cli import main; main()", **same)
    assert f"(codec backend: {fast.backend()})" in r.stdout


def test_missing_extension_warns_when_expected_and_is_silent_otherwise(monkeypatch):
    monkeypatch.delenv("GBCS_EMU_PURE_PYTHON", raising=False)
    import protocols
    monkeypatch.setitem(sys.modules, "protocols._fast", None)      # import fails as if never built
    monkeypatch.delattr(protocols, "_fast", raising=False)
    monkeypatch.setattr(fast, "expected", lambda: True)
    with pytest.warns(RuntimeWarning, match="expected but cannot be imported"):
        assert fast._load() is None
    monkeypatch.setattr(fast, "expected", lambda: False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fast._load() is None
    monkeypatch.setenv("GBCS_EMU_REQUIRE_C", "1")
    monkeypatch.setattr(fast, "expected", _real_expected)
    with pytest.warns(RuntimeWarning):
        assert fast._load() is None


_real_expected = fast.expected


def test_require_c_env_warns_in_a_fresh_interpreter():
    code = ("import sys, warnings; sys.modules['protocols._fast'] = None\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always'); from protocols import fast\n"
            "print(fast.backend(), sum(issubclass(x.category, RuntimeWarning) for x in w))")
    assert _run(code, GBCS_EMU_REQUIRE_C="1").stdout.split() == ["python", "1"]


# -- whole messages -----------------------------------------------------------------------------------------------

@needs_c
def test_decode_same_on_every_rtds_message(rtds_messages):
    c_split = 0
    for path, data in rtds_messages:
        c, p = both(m.decode, data)
        assert c == p, path.name
        assert outcome(m.split_payload, data) == outcome(m.split_payload_declared, data), path.name
        c_split += fast.C.split_envelope(data) is not None
    assert c_split >= len(rtds_messages) * 0.9


@pytest.fixture(scope="module")
def samples(request):
    try:
        msgs = request.getfixturevalue("rtds_messages")
        return [d for _, d in msgs][::3]
    except pytest.skip.Exception:
        return [bytes.fromhex("DF09010000000000000001080000000000000001080000000000000002000202000B"
                              "11D900000000000101000800000000" + "0000")]


@needs_c
def test_decode_same_on_mutated_messages(samples):
    @_SETTINGS
    @given(st.data())
    def check(data):
        raw = mutate(data.draw, bytearray(data.draw(st.sampled_from(samples))))
        c, p = both(m.decode, raw)
        assert c == p
        assert outcome(m.split_payload, raw) == outcome(m.split_payload_declared, raw)
    check()


@needs_c
@_SETTINGS
@given(st.binary(max_size=300))
def test_decode_same_on_random_bytes(raw):
    for prefix in (b"", b"\xDF\x09", b"\xDD\x00\x00\x00\x00\x00\x00"):
        c, p = both(m.decode, prefix + raw)
        assert c == p


# -- A-XDR, DLMS, GBZ ----------------------------------------------------------------------------------------------

def _data_strategy():
    leaf = st.one_of(
        st.just({"type": "null-data", "value": None}),
        st.booleans().map(lambda v: {"type": "boolean", "value": v}),
        st.integers(-2**31, 2**31 - 1).map(lambda v: {"type": "double-long", "value": v}),
        st.integers(0, 2**32 - 1).map(lambda v: {"type": "double-long-unsigned", "value": v}),
        st.integers(-2**63, 2**63 - 1).map(lambda v: {"type": "long64", "value": v}),
        st.integers(0, 2**64 - 1).map(lambda v: {"type": "long64-unsigned", "value": v}),
        st.integers(-128, 127).map(lambda v: {"type": "integer", "value": v}),
        st.integers(0, 65535).map(lambda v: {"type": "long-unsigned", "value": v}),
        st.integers(-32768, 32767).map(lambda v: {"type": "delta-long", "value": v}),
        st.integers(0, 255).map(lambda v: {"type": "enum", "value": v}),
        st.binary(max_size=300).map(lambda v: {"type": "octet-string", "value": v.hex().upper()}),
        st.text(max_size=20).map(lambda v: {"type": "utf8-string", "value": v}),
        st.binary(max_size=20).map(lambda v: {"type": "visible-string", "value": v.decode("latin-1")}),
        st.floats(width=32).map(lambda v: {"type": "float32", "value": v}),
        st.floats().map(lambda v: {"type": "float64", "value": v}),
        st.binary(min_size=12, max_size=12).map(lambda v: {"type": "date-time", "value": v.hex().upper()}),
        st.integers(0, 40).flatmap(lambda n: st.binary(min_size=(n + 7) // 8, max_size=(n + 7) // 8).map(
            lambda b: {"type": "bit-string", "value": {"length": n, "bits": b.hex().upper()}})),
    )
    return st.recursive(leaf, lambda kids: st.one_of(
        st.lists(kids, max_size=5).map(lambda v: {"type": "structure", "value": v}),
        st.lists(kids, max_size=5).map(lambda v: {"type": "array", "value": v})), max_leaves=25)


@needs_c
@_SETTINGS
@given(_data_strategy(), st.data())
def test_axdr_same_on_generated_and_mutated_data(value, data):
    raw = axdr.build_data(value)
    for buf in (raw, mutate(data.draw, bytearray(raw)), raw + b"\x00"):
        c, p = both(axdr.decode_data, buf)
        assert c == p
        c, p = both(_parse_data_outcome, buf)
        assert c == p


def _parse_data_outcome(buf):
    try:
        return axdr.parse_data(memoryview(buf), 0)
    except axdr.FieldError as e:
        raise DecodeError(e.raw_message, e.path or "", e.offset) from None


_LEAVES = {"unsigned": st.integers(0, 255), "long": st.integers(-32768, 32767), "boolean": st.booleans(),
           "double-long-unsigned": st.integers(0, 2**32 - 1), "null-data": st.none(),
           "octet-string": st.binary(max_size=6).map(lambda b: b.hex().upper()),
           "date": st.binary(min_size=5, max_size=5).map(lambda b: b.hex().upper())}


@st.composite
def _compact(draw):
    """A compact-array Data: a type description (leaf, structure of leaves, array of a leaf) and values."""
    shape = draw(st.sampled_from(["leaf", "structure", "array"]))
    if shape == "leaf":
        name = draw(st.sampled_from(sorted(_LEAVES)))
        td, value = name, _LEAVES[name]
    elif shape == "structure":
        names = draw(st.lists(st.sampled_from(sorted(_LEAVES)), min_size=1, max_size=4))
        td, value = {"structure": names}, st.tuples(*[_LEAVES[n] for n in names]).map(list)
    else:
        name = draw(st.sampled_from(sorted(n for n in _LEAVES if n != "null-data")))
        count = draw(st.integers(0, 4))
        td = {"array": {"count": count, "type": name}}
        value = st.lists(_LEAVES[name], min_size=count, max_size=count)
    values = draw(st.lists(value, max_size=5))
    return {"type": "compact-array", "value": {"type_description": td, "values": values}}


@needs_c
@_SETTINGS
@given(_compact(), st.data())
def test_axdr_compact_arrays_same(value, data):
    try:
        raw = axdr.build_data(value)
    except Exception:                                   # noqa: BLE001 - e.g. zero-size elements: not buildable
        return
    for buf in (raw, mutate(data.draw, bytearray(raw)), b"\x02\x02" + raw + raw):
        c, p = both(axdr.decode_data, buf)
        assert c == p


@needs_c
def test_axdr_floats_and_booleans_keep_their_python_forms():
    for raw in (b"\x17\x7f\xc0\x00\x00", b"\x18" + b"\xff" * 8, b"\x17\x80\x00\x00\x00", b"\x03\x02", b"\x03\x01"):
        c, p = both(axdr.decode_data, raw)
        assert c == p
    assert fast.C.axdr_parse(b"\x03\x01")[0]["value"] is True


@needs_c
def test_dlms_same_on_mutated_payloads(samples):
    payloads = []
    for raw in samples:
        try:
            _, content, _ = m.split_payload(raw)
        except DecodeError:
            continue
        if content and content[0] in (0xD9, 0xDA, 0x0F):
            payloads.append(content)
    assert payloads or not samples

    @_SETTINGS
    @given(st.data())
    def check(data):
        raw = mutate(data.draw, bytearray(data.draw(st.sampled_from(payloads))))
        assert outcome(apdu.decode_apdu, raw, base=7) == outcome(apdu.decode_apdu_declared, raw, base=7)
    if payloads:
        check()


@needs_c
def test_gbz_same_on_mutated_payloads(samples):
    payloads = []
    for raw in samples:
        try:
            env, content, _ = m.split_payload(raw)
        except DecodeError:
            continue
        if content and content[:2] == b"\x01\x09":
            payloads.append((content, env["grouping_header"]["cra_flag"]))

    @_SETTINGS
    @given(st.data())
    def check(data):
        content, cra = data.draw(st.sampled_from(payloads))
        raw = mutate(data.draw, bytearray(content))
        c, p = both(gbz.decode_gbz, raw, base=3, cra_flag=cra)
        assert c == p
    if payloads:
        check()


# -- CRC, framing, crypto ------------------------------------------------------------------------------------------

@needs_c
@_SETTINGS
@given(st.binary(max_size=2000), st.binary(max_size=50))
def test_crc16_x25_matches_crcmod(a, b):
    import crcmod.predefined
    ref = crcmod.predefined.mkPredefinedCrcFun("x-25")
    assert fast.C.crc16_x25(a) == ref(a)
    assert fast.C.crc16_x25(b, fast.C.crc16_x25(a)) == ref(a + b) == ref(b, ref(a))
    assert fast.C.crc16_x25(b"123456789") == 0x906E
    assert crc_mod.x25 is fast.C.crc16_x25


def _events(deframer_cls, chunks):
    d = deframer_cls(max_frame=600, timeout=1.0)
    out = []
    t = 0.0
    for chunk in chunks:
        t += 0.1
        out += d.feed(chunk, t)
    out += d.poll(t + 5)
    return [repr(e) for e in out], d.counters()


@st.composite
def _stream(draw, kind):
    parts = []
    for _ in range(draw(st.integers(1, 5))):
        payload = draw(st.binary(max_size=120))
        if kind == "gfi":
            frame = bytearray(gfi.encode_gfi(payload, draw(st.integers(0, 999))))
        else:
            frame = bytearray(hdlc.encode_hdlc(payload, dest=draw(st.integers(0, 0x3FFF)), src=1,
                                               control=draw(st.integers(0, 255))))
        if draw(st.booleans()):
            frame = bytearray(mutate(draw, frame))
        parts.append(bytes(frame))
        parts.append(draw(st.binary(max_size=8)))
    blob = b"".join(parts)
    cuts = sorted(draw(st.lists(st.integers(0, len(blob)), max_size=6)))
    return [blob[i:j] for i, j in zip([0] + cuts, cuts + [len(blob)])]


@needs_c
@_SETTINGS
@given(st.sampled_from(["gfi", "hdlc"]).flatmap(lambda k: st.tuples(st.just(k), _stream(k))))
def test_deframers_same_events(case):
    kind, chunks = case
    cls = gfi.GfiDeframer if kind == "gfi" else hdlc.HdlcDeframer
    c = _events(cls, chunks)
    with pure():
        p = _events(cls, chunks)
    assert c == p


@needs_c
@pytest.mark.skipif(not fast.CRYPTO, reason="C codec built without OpenSSL")
@_SETTINGS
@given(st.binary(min_size=32, max_size=32), st.binary(min_size=8, max_size=8), st.binary(min_size=8, max_size=8),
       st.sampled_from([1, 2, 3, 4]), st.integers(0, 2**64 - 1), st.binary(max_size=400))
def test_kdf_gmac_matches_python(z, orig, recip, mode, counter, signing):
    c = mac_mod.message_mac(z, orig, recip, mode, counter, signing)
    with pure():
        p = mac_mod.message_mac(z, orig, recip, mode, counter, signing)
        assert mac_mod.verify_message_mac(z, orig, recip, mode, counter, signing, c)
    assert c == p and len(c) == 12
    assert mac_mod.verify_message_mac(z, orig, recip, mode, counter, signing, c)
    assert not mac_mod.verify_message_mac(z, orig, recip, mode, counter, signing, bytes(12))


@needs_c
def test_kdf_gmac_errors_stay_python():
    from protocols.security.errors import SecurityError
    for args in ((bytes(31), bytes(8), bytes(8), 1, 0), (bytes(32), bytes(8), bytes(8), 5, 0),
                 (bytes(32), bytes(8), bytes(8), 1, 1 << 64), (bytes(32), bytes(8), bytes(7), 1, 0)):
        with pytest.raises(SecurityError) as c_err:
            mac_mod.message_mac(*args, b"\xDF")
        with pure(), pytest.raises(SecurityError) as p_err:
            mac_mod.message_mac(*args, b"\xDF")
        assert str(c_err.value) == str(p_err.value)
