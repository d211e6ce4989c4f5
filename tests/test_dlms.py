"""A-XDR Data and the DLMS APDUs: byte literals, canonical decoding, and hypothesis round trips."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.dlms.apdu import decode_apdu, encode_apdu
from protocols.dlms.axdr import DATA_TYPES, decode_data, encode_data
from protocols.dlms.obis import obis_from_str, obis_to_str
from protocols.errors import DecodeError, EncodeError


def h(s: str) -> bytes:
    return bytes.fromhex(s.replace(" ", ""))


@pytest.mark.parametrize("hexstr,expected", [
    ("00", {"type": "null-data", "value": None}),
    ("03 01", {"type": "boolean", "value": True}),
    ("06 0000000A", {"type": "double-long-unsigned", "value": 10}),
    ("05 FFFFFFFF", {"type": "double-long", "value": -1}),
    ("0F FE", {"type": "integer", "value": -2}),
    ("10 8000", {"type": "long", "value": -32768}),
    ("12 0102", {"type": "long-unsigned", "value": 258}),
    ("16 1E", {"type": "enum", "value": 30}),
    ("09 03 010203", {"type": "octet-string", "value": "010203"}),
    ("0A 02 4142", {"type": "visible-string", "value": "AB"}),
    ("0C 03 E282AC", {"type": "utf8-string", "value": "\u20ac"}),
    ("04 0A C040", {"type": "bit-string", "value": {"length": 10, "bits": "C040"}}),
    ("14 FFFFFFFFFFFFFFFF", {"type": "long64", "value": -1}),
    ("15 0000000000000100", {"type": "long64-unsigned", "value": 256}),
    ("17 3FC00000", {"type": "float32", "value": 1.5}),
    ("18 3FF8000000000000", {"type": "float64", "value": 1.5}),
    ("19 07DF0101FF000000008000FF", {"type": "date-time", "value": "07DF0101FF000000008000FF"}),
    ("02 02 0F 00 16 1E", {"type": "structure", "value": [{"type": "integer", "value": 0},
                                                          {"type": "enum", "value": 30}]}),
    ("01 01 11 05", {"type": "array", "value": [{"type": "unsigned", "value": 5}]}),
])
def test_data_literals(hexstr, expected):
    raw = h(hexstr)
    assert decode_data(raw) == expected
    assert encode_data(expected) == raw


def test_compact_array_of_structures():
    # compact-array: type description {structure: [double-long-unsigned, long-unsigned]}, 2 elements packed
    raw = h("13 02 02 06 12 0C 00000001 0002 00000003 0004")
    d = decode_data(raw)
    assert d["value"]["type_description"] == {"structure": ["double-long-unsigned", "long-unsigned"]}
    assert d["value"]["values"] == [[1, 2], [3, 4]]
    assert encode_data(d) == raw


def test_compact_array_of_arrays_and_strings():
    raw = h("13 01 0002 09 05 01AA 02BBCC")
    d = decode_data(raw)
    assert d["value"]["type_description"] == {"array": {"count": 2, "type": "octet-string"}}
    assert d["value"]["values"] == [["AA", "BBCC"]]
    assert encode_data(d) == raw


@pytest.mark.parametrize("hexstr,offset,msg", [
    ("", 0, "end of data"),
    ("07", 0, "unknown A-XDR data tag"),
    ("06 0000", 1, "needs 4 bytes"),
    ("09 05 0102", 1, "past the end"),
    ("09 81 05 0102030405", 1, "non-minimal"),
    ("09 85 0000000001", 1, "invalid length form"),
    ("02 03 11 01 11 02", 6, "ends after 2"),
    ("0C 02 FFFF", 2, "UTF-8"),
    ("13 02 02 06 12 03 000000", 6, "needs 4 bytes"),
])
def test_data_errors_name_offset(hexstr, offset, msg):
    with pytest.raises(DecodeError) as e:
        decode_data(h(hexstr))
    assert e.value.offset == offset
    assert msg in e.value.message


def test_claimed_length_does_not_allocate():
    # an array claiming 2^31 elements with 3 real bytes fails fast, without building a huge list
    with pytest.raises(DecodeError):
        decode_data(h("01 84 7FFFFFFF 11 01"))


def test_deep_nesting_is_a_decode_error():
    with pytest.raises(DecodeError) as e:
        decode_data(b"\x02\x01" * 5000 + b"\x00")
    assert "nested too deeply" in e.value.message


def test_obis_text_form():
    assert obis_to_str(h("0100010800FF")) == "1-0:1.8.0.255"
    assert obis_from_str("1-0:1.8.0.255") == h("0100010800FF")
    with pytest.raises(ValueError):
        obis_from_str("1-0:1.8.0")


def test_access_request_and_response_literals():
    # Script Table (9) 0-0:10.0.106.255 method 1 with script id 52: remote disconnect (ECS43 shape)
    req = h("D9 200003E8 00 01 03 0009 00000A006AFF 01 01 12 0034")
    d = decode_apdu(req)["access_request"]
    spec = d["request_specifications"][0]
    assert spec["kind"] == "action"
    assert spec["descriptor"] == {"class_id": 9, "instance_id": "0-0:10.0.106.255", "method_id": 1,
                                  "class_name": "Script table", "method_name": "execute"}
    assert d["data"] == [{"type": "long-unsigned", "value": 52}]
    assert encode_apdu({"access_request": d}) == req
    resp = h("DA 200003E8 00 00 01 00 01 03 00")
    r = decode_apdu(resp)["access_response"]
    assert r["request_specifications"] is None
    assert r["results"] == [{"kind": "action", "result": "success"}]
    assert encode_apdu({"access_response": r}) == resp


def test_get_with_selection_and_failure_results():
    # get-with-selection on Profile generic 0-0:99.98.0.255 attr 2 with a range selector (ECS35a shape)
    req = h("D9 20000001 00 01 04 0007 0000636200FF 02 01 02 04 02 04 12 0008 09 06 0000010000FF"
            " 0F 02 12 0000 06 00000000 06 00000010 01 00 01 00")
    d = decode_apdu(req)["access_request"]
    spec = d["request_specifications"][0]
    assert spec["kind"] == "get-with-selection" and spec["access_selection"]["selector"] == 1
    assert encode_apdu({"access_request": d}) == req
    resp = h("DA 20000001 00 00 01 00 01 01 0B")
    r = decode_apdu(resp)["access_response"]
    assert r["results"] == [{"kind": "get", "result": "object-unavailable"}]
    assert encode_apdu({"access_response": r}) == resp


def test_data_notification_alert_body():
    raw = h("0F 200007D0 00 02 02 12 810E 09 0C 07DF0101FF000000008000FF")
    d = decode_apdu(raw)["data_notification"]
    body = d["notification_body"]["value"]
    assert body[0] == {"type": "long-unsigned", "value": 0x810E}
    assert encode_apdu({"data_notification": d}) == raw


def test_apdu_errors():
    with pytest.raises(DecodeError) as e:
        decode_apdu(h("D9 200003E8 00 01 07 0009 00000A006AFF 01 01 12 0034"), base=100)
    assert e.value.offset >= 100 and "request_specifications" in e.value.field
    with pytest.raises(DecodeError) as e:
        decode_apdu(h("DA 200003E8 00 00 01 00 01 03 00 FF"))
    assert "trailing" in e.value.message or e.value.offset == 12
    with pytest.raises(EncodeError):
        encode_apdu({"access_request": {"long_invoke_id_and_priority": "XYZ"}})


# ------------------------------------------------------------------------------------------- hypothesis

def _fixed(name, lo, hi):
    return st.builds(lambda v: {"type": name, "value": v}, st.integers(lo, hi))


SCALARS = st.one_of(
    st.just({"type": "null-data", "value": None}),
    st.builds(lambda v: {"type": "boolean", "value": v}, st.booleans()),
    _fixed("integer", -128, 127), _fixed("long", -2**15, 2**15 - 1), _fixed("unsigned", 0, 255),
    _fixed("long-unsigned", 0, 2**16 - 1), _fixed("double-long", -2**31, 2**31 - 1),
    _fixed("double-long-unsigned", 0, 2**32 - 1), _fixed("long64", -2**63, 2**63 - 1),
    _fixed("long64-unsigned", 0, 2**64 - 1), _fixed("enum", 0, 255),
    st.builds(lambda b: {"type": "octet-string", "value": b.hex().upper()}, st.binary(max_size=300)),
    st.builds(lambda s: {"type": "visible-string", "value": s}, st.text(st.characters(max_codepoint=255),
                                                                        max_size=40)),
    st.builds(lambda s: {"type": "utf8-string", "value": s}, st.text(max_size=20)),
    st.builds(lambda b: {"type": "date-time", "value": b.hex().upper()}, st.binary(min_size=12, max_size=12)),
    st.builds(lambda n, data: {"type": "bit-string", "value": {"length": n, "bits": data.draw(
        st.binary(min_size=(n + 7) // 8, max_size=(n + 7) // 8)).hex().upper()}},
        st.integers(0, 40), st.data()),
)
DATA = st.recursive(SCALARS, lambda inner: st.one_of(
    st.builds(lambda xs: {"type": "structure", "value": xs}, st.lists(inner, max_size=6)),
    st.builds(lambda xs: {"type": "array", "value": xs}, st.lists(inner, max_size=6)),
), max_leaves=30)


@given(DATA)
@settings(max_examples=300, deadline=None)
def test_generated_data_round_trips(d):
    raw = encode_data(d)
    assert decode_data(raw) == d
    assert encode_data(decode_data(raw)) == raw


@given(st.binary(max_size=200))
@settings(max_examples=1000, deadline=None)
def test_any_bytes_decode_canonically_or_raise_decode_error(raw):
    for decoder in (decode_data, lambda b: decode_apdu(b)):
        try:
            d = decoder(raw)
        except DecodeError as e:
            assert e.offset is None or 0 <= e.offset <= len(raw)
            continue
        # decoding is injective: whatever decodes encodes back to the same bytes
        if decoder is decode_data:
            assert encode_data(d) == raw
        else:
            assert encode_apdu(d) == raw


def test_every_declared_type_has_a_literal_or_strategy():
    covered = {"null-data", "boolean", "integer", "long", "unsigned", "long-unsigned", "double-long",
               "double-long-unsigned", "long64", "long64-unsigned", "enum", "octet-string", "visible-string",
               "utf8-string", "date-time", "bit-string", "structure", "array", "compact-array", "float32",
               "float64", "bcd", "date", "time", "delta-integer", "delta-long", "delta-double-long",
               "delta-unsigned", "delta-long-unsigned", "delta-double-long-unsigned"}
    assert {t.name for t in DATA_TYPES} <= covered
    for name, raw in (("bcd", "0D 12"), ("date", "1A 07DF0101FF"), ("time", "1B 0C000000"),
                      ("delta-integer", "1C FF"), ("delta-long", "1D FFFF"), ("delta-double-long", "1E FFFFFFFF"),
                      ("delta-unsigned", "1F 01"), ("delta-long-unsigned", "20 0001"),
                      ("delta-double-long-unsigned", "21 00000001")):
        d = decode_data(h(raw))
        assert d["type"] == name and encode_data(d) == h(raw)
