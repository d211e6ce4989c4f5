"""Whole GBCS messages: envelope forms, other-information variants, signatures, GBT, errors, properties.

Messages here are our own (own EUIs, made-up MACs): the RTDS round trip lives in test_rtds_codec.py.
"""
from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.errors import DecodeError, EncodeError
from protocols.gbcs.message import decode, encode, mac_aad, split_payload

SUPPLIER = "AA00000000000001"
DEVICE = "BB00000000000001"
ACB = "AA000000000000FF"

DLMS_GET = {"dlms": {"access_request": {
    "long_invoke_id_and_priority": "20000010", "date_time": "",
    "request_specifications": [{"kind": "get", "descriptor": {"class_id": 3, "instance_id": "1-0:1.8.0.255",
                                                              "attribute_id": 2}, "access_selection": None}],
    "data": [{"type": "null-data", "value": None}]}}}


def message(**over):
    msg = {
        "mac_header": {"security_header": {"security_control": 0x11, "invocation_counter": 0},
                       "mac": "00112233445566778899AABB"},
        "grouping_header": {"cra_flag": "command", "originator_counter": 16, "originator": SUPPLIER,
                            "recipient": DEVICE, "date_time": None,
                            "other_information": {"message_code": "0x0026"}},
        "payload": DLMS_GET,
        "signature": "",
    }
    msg.update(over)
    return msg


def test_mac_form_layout_and_round_trip():
    raw = encode(message())
    assert raw[:7] == bytes.fromhex("DD000000000000")
    assert raw[-12:] == bytes.fromhex("00112233445566778899AABB")
    dec = decode(raw)
    assert dec["grouping_header"]["other_information"] == {"message_code": "0x0026", "use_case": "ECS17a"}
    assert dec["payload"]["dlms"]["access_request"]["request_specifications"][0]["descriptor"]["class_name"] \
        == "Register"
    assert encode(dec) == raw
    env, payload, offset = split_payload(raw)
    assert raw[offset:offset + len(payload)] == payload and payload[0] == 0xD9
    # the MAC's additional data is the fixed prefix and the whole General-Signing APDU
    signing = raw[raw.index(b"\xDF"):-12]
    assert mac_aad(signing)[:6] == bytes.fromhex("110000000000") and mac_aad(signing)[6:] == signing


def test_signed_precommand_and_unsigned_forms():
    signed = message(signature="AB" * 64)
    del signed["mac_header"]
    raw = encode(signed)
    assert raw[0] == 0xDF and raw[-65] == 0x40
    assert decode(raw)["signature"] == "AB" * 64
    pre = message(signature=None)
    del pre["mac_header"]
    raw_pre = encode(pre)
    assert raw_pre == raw[:-65]          # a pre-command is the signed command without its signature byte
    assert decode(raw_pre)["signature"] is None
    with pytest.raises(EncodeError):
        bad = copy.deepcopy(signed)
        bad["signature"] = "AB" * 10
        encode(bad)


@pytest.mark.parametrize("extra", [
    {"supplementary_remote_party_id": SUPPLIER},
    {"supplementary_remote_party_id": SUPPLIER, "supplementary_remote_party_counter": 1002},
    {"supplementary_remote_party_id": SUPPLIER, "supplementary_remote_party_counter": 1002,
     "supplementary_originator_counter": 77},
    {"supplementary_remote_party_id": SUPPLIER, "supplementary_remote_party_counter": 1002,
     "supplementary_remote_party_ka_certificate": "30" + "82" + "0190" + "00" * 400},
])
def test_other_information_variants(extra):
    msg = message()
    msg["grouping_header"]["originator"] = ACB
    msg["grouping_header"]["other_information"].update(extra)
    raw = encode(msg)
    oi = decode(raw)["grouping_header"]["other_information"]
    for k, v in extra.items():
        assert oi[k] == v
    assert encode(decode(raw)) == raw


def test_response_date_time_and_alert():
    msg = message()
    msg["grouping_header"]["cra_flag"] = "response"
    msg["grouping_header"]["date_time"] = {"year": 2030, "month": 1, "day_of_month": 15, "day_of_week": 2,
                                           "hour": 9, "minute": 0, "second": 0, "hundredths": 0,
                                           "deviation": -32768, "clock_status": 0xFF}
    msg["payload"] = {"dlms": {"access_response": {
        "long_invoke_id_and_priority": "20000010", "date_time": "", "request_specifications": None,
        "data": [{"type": "double-long-unsigned", "value": 5}], "results": [{"kind": "get", "result": "success"}]}}}
    raw = encode(msg)
    assert bytes.fromhex("0C07EE010F02090000008000FF") in raw
    dec = decode(raw)
    assert dec["grouping_header"]["date_time"]["year"] == 2030
    assert encode(dec) == raw


def test_gbt_block_round_trip():
    msg = {"gbt_block": {
        "transaction_id": "0901" + "00000000000003E8", "originator_system_title": SUPPLIER,
        "recipient_system_title": DEVICE, "other_information": "0026",
        "security_header": {"security_control": 0x11, "invocation_counter": 0},
        "block_control": {"last_block": False, "streaming": False, "window": 1},
        "block_number": 1, "block_number_ack": 0, "block_data": "DF09" + "00" * 40}}
    raw = encode(msg)
    dec = decode(raw)
    assert dec["gbt_block"]["block_number"] == 1 and dec["gbt_block"]["block_control"]["window"] == 1
    assert encode(dec) == raw


@pytest.mark.parametrize("hexstr,field,offset", [
    ("", "", 0),
    ("AB", "tag", 0),
    ("DF08", "grouping_header.transaction_id", 1),
    ("DF0907" + "00" * 8, "grouping_header.transaction_id.cra_flag", 2),
    ("DD00000000000005", "general_ciphering", 7),
    ("DD00000000000081", "general_ciphering", 7),
    ("DD000000000000001100", "general_ciphering.ciphered_content", 8),
])
def test_envelope_errors(hexstr, field, offset):
    with pytest.raises(DecodeError) as e:
        decode(bytes.fromhex(hexstr))
    assert e.value.field.startswith(field)
    assert e.value.offset == offset


def test_payload_error_offsets_are_absolute():
    raw = bytearray(encode(message()))
    env, payload, offset = split_payload(bytes(raw))
    raw[offset + 7] = 0x07            # the first spec's kind: not a DLMS access-request-specification
    with pytest.raises(DecodeError) as e:
        decode(bytes(raw))
    assert e.value.offset == offset + 7
    assert e.value.field.startswith("dlms.access_request.request_specifications")


def test_encode_errors_name_the_field():
    msg = message()
    msg["grouping_header"]["originator"] = "XYZ"
    with pytest.raises(EncodeError) as e:
        encode(msg)
    assert "originator" in e.value.field
    with pytest.raises(EncodeError):
        encode({"grouping_header": message()["grouping_header"], "payload": {"cobol": {}}})


@given(counter=st.integers(0, 2**64 - 1), code=st.integers(0, 0xFFFF), cra=st.sampled_from(
    ["command", "response", "alert"]), signed=st.sampled_from([None, "", "CD" * 64]), mac=st.booleans(),
    payload=st.binary(max_size=300))
@settings(max_examples=200, deadline=None)
def test_generated_messages_round_trip(counter, code, cra, signed, mac, payload):
    msg = message(signature=signed)
    if not mac:
        del msg["mac_header"]
    gh = msg["grouping_header"]
    gh.update(cra_flag=cra, originator_counter=counter, other_information={"message_code": f"0x{code:04X}"})
    msg["payload"] = {"dlms": {"data_notification": {"long_invoke_id_and_priority": "20000000", "date_time": "",
                                                     "notification_body": {"type": "octet-string",
                                                                           "value": payload.hex().upper()}}}}
    raw = encode(msg)
    dec = decode(raw)
    assert dec["grouping_header"]["originator_counter"] == counter
    assert encode(dec) == raw


@given(st.binary(max_size=120))
@settings(max_examples=1500, deadline=None)
def test_any_bytes_decode_or_raise_decode_error(raw):
    try:
        msg = decode(raw)
    except DecodeError as e:
        assert e.offset is None or 0 <= e.offset <= len(raw)
        return
    assert encode(msg) == raw


@given(st.data())
@settings(max_examples=500, deadline=None)
def test_mutated_messages_decode_or_raise_decode_error(data):
    raw = bytearray(encode(message()))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        i = data.draw(st.integers(0, len(raw) - 1))
        if op == "flip":
            raw[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "cut":
            del raw[i:]
            if not raw:
                break
        else:
            raw.insert(i, data.draw(st.integers(0, 255)))
    try:
        msg = decode(bytes(raw))
    except DecodeError:
        return
    assert encode(msg) == bytes(raw)
