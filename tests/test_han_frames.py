"""HAN frames (protocols/zigbee/han.py) and install-code keys: literal round trips, properties, malformed input.

Byte literals are made up for these tests from the layouts in the IEEE 802.15.4 / ZigBee / ZSE specs; the
AES-MMO and install-code vectors are the ZigBee specification's published examples (B.6 / C.6.1 and the
install-code example 83FE...D505 C3B5 -> 66B6...02BB).
"""
from __future__ import annotations

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_emu.han.install_code import InstallCodeError, check_install_code, derive_link_key, mmo_hash, with_crc
from protocols.errors import DecodeError, EncodeError
from protocols.zigbee import han

PROPS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def h(s: str) -> bytes:
    return bytes.fromhex(s.replace(" ", ""))


def with_fcs(body: bytes) -> bytes:
    return body + han.mac_fcs(body).to_bytes(2, "little")


# ============================================================================================ literals

# Transfer Data (client -> server, tunnel 1) carrying GBCS "01 GET", from 0x1234 (src IEEE present) to the
# coordinator, on PAN 0x1A62: MAC | NWK | APS | ZCL
GET_ZCL = h("11 03 02 0100 01")
GET_APS = h("40 01 0407 0901 01 05") + GET_ZCL
GET_NWK = h("0810 0000 3412 1E 07 7766554433221100") + GET_APS
GET_MAC = with_fcs(h("6188 01 621A 0000 3412") + GET_NWK)


def test_kermit_fcs_check_value():
    assert han.mac_fcs(b"123456789") == 0x2189  # CRC-16/KERMIT check value


def test_whole_frame_layers():
    d = han.decode_frame(GET_MAC)
    assert d["mac"]["frame_control"]["frame_type"] == "data" and d["mac"]["frame_control"]["ack_request"]
    assert (d["mac"]["dest_pan_id"], d["mac"]["dest_address"], d["mac"]["src_address"]) == (0x1A62, 0, 0x1234)
    assert d["mac"]["src_pan_id"] is None  # PAN id compression
    assert d["nwk"]["src_ieee"] == "0011223344556677" and d["nwk"]["radius"] == 30 and d["nwk"]["sequence"] == 7
    assert d["nwk"]["frame_control"]["protocol_version"] == 2
    assert (d["aps"]["cluster_id"], d["aps"]["profile_id"], d["aps"]["counter"]) == (0x0704, 0x0109, 5)
    assert d["zcl"]["command_name"] == "Transfer Data" and d["zcl"]["payload"] == {"tunnel_id": 1, "data": "01"}
    assert han.decode_gbcs_tunnel(bytes.fromhex(d["zcl"]["payload"]["data"])) == {"kind": "GET"}
    assert han.encode_frame(d) == GET_MAC
    assert han.encode_frame(json.loads(json.dumps(d))) == GET_MAC


def test_layers_separately():
    assert han.encode_mac(han.decode_mac(GET_MAC)) == GET_MAC
    assert han.encode_nwk(han.decode_nwk(GET_NWK)) == GET_NWK
    assert han.encode_aps(han.decode_aps(GET_APS)) == GET_APS
    assert han.encode_tunneling(han.decode_tunneling(GET_ZCL)) == GET_ZCL


def test_mac_ack_and_extended_addresses():
    ack = with_fcs(h("0200 2A"))
    d = han.decode_mac(ack)
    assert d["frame_control"]["frame_type"] == "ack" and d["sequence"] == 0x2A and d["payload"] == ""
    assert han.encode_mac(d) == ack
    # extended destination and source, no PAN compression: both PAN ids present; EUIs shown big-endian
    frame = with_fcs(h("01 CC 09 621A 0807060504030201 621A 1817161514131211") + b"\xAA")
    d = han.decode_mac(frame)
    assert d["dest_address"] == "0102030405060708" and d["src_address"] == "1112131415161718"
    assert d["src_pan_id"] == 0x1A62 and d["payload"] == "AA"
    assert han.encode_mac(d) == frame


def test_gbcs_tunnel_data_forms():
    for d, raw in [({"kind": "GET"}, "01"), ({"kind": "GET_RESPONSE", "remaining": 3, "message": "DF09"}, "0203DF09"),
                   ({"kind": "GET_RESPONSE", "remaining": 0, "message": ""}, "0200"),
                   ({"kind": "PUT", "message": "DD0001"}, "03DD0001")]:
        assert han.encode_gbcs_tunnel(d) == h(raw)
        assert han.decode_gbcs_tunnel(h(raw)) == d


def test_request_tunnel_and_response():
    req = h("11 01 00 C8 FFFF 00 0008")
    d = han.decode_tunneling(req)
    assert d["command_name"] == "Request Tunnel" and d["payload"]["protocol_id"] == 200
    assert d["payload"]["maximum_incoming_transfer_size"] == 0x0800
    resp = h("19 01 00 0100 00 0008")
    d = han.decode_tunneling(resp)
    assert d["command_name"] == "Request Tunnel Response" and d["payload"]["tunnel_id"] == 1
    assert han.encode_tunneling(d) == resp


# ============================================================================================ malformed

@pytest.mark.parametrize("data, field, offset", [
    (GET_MAC[:-1] + bytes([GET_MAC[-1] ^ 1]), "mac.fcs", len(GET_MAC) - 2),
    (with_fcs(h("4988 01 621A 0000 3412")), "mac.frame_control.security_enabled", 0),
    (with_fcs(h("6184 01 621A 0000 3412")), "mac.frame_control.dest_addr_mode", 0),
    (with_fcs(h("6188 01 621A 00")), "mac.dest_address", 6),  # where the data ran out
    (h("0200"), "mac", 2),
])
def test_mac_errors(data, field, offset):
    with pytest.raises(DecodeError) as e:
        han.decode_mac(data)
    assert (e.value.field, e.value.offset) == (field, offset)


def test_nested_errors_point_into_the_whole_frame():
    # NWK security bit set: refused at the NWK frame control (offset 9 in the MAC frame)
    nwk = bytearray(GET_NWK)
    nwk[1] |= 0x02
    with pytest.raises(DecodeError) as e:
        han.decode_frame(with_fcs(h("6188 01 621A 0000 3412") + bytes(nwk)))
    assert (e.value.field, e.value.offset) == ("nwk.frame_control.security", 9)
    # unknown Tunneling command id 0x07 (client to server): names the payload, at the command id byte
    aps = GET_APS[:-6] + h("11 03 07 0100 01")
    frame = with_fcs(h("6188 01 621A 0000 3412") + GET_NWK[:-len(GET_APS)] + aps)
    with pytest.raises(DecodeError) as e:
        han.decode_frame(frame)
    assert e.value.field == "zcl.payload" and e.value.offset == len(frame) - 2 - 4
    # truncated APS header
    with pytest.raises(DecodeError) as e:
        han.decode_aps(h("40 01 04"))
    assert (e.value.field, e.value.offset) == ("aps.cluster_id", 3)  # where the data ran out
    # an APS ack with a payload
    with pytest.raises(DecodeError) as e:
        han.decode_aps(h("12 05 FF"))
    assert (e.value.field, e.value.offset) == ("aps.payload", 2)


def test_gbcs_tunnel_errors():
    with pytest.raises(DecodeError) as e:
        han.decode_gbcs_tunnel(h("04 00"))
    assert e.value.offset == 0 and "01 GET" in e.value.message
    with pytest.raises(DecodeError) as e:
        han.decode_gbcs_tunnel(h("01 00"))
    assert (e.value.field, e.value.offset) == ("gbcs_tunnel.body", 1)
    with pytest.raises(DecodeError) as e:
        han.decode_gbcs_tunnel(h("02"))
    assert e.value.offset == 1


def test_encode_errors_name_the_field():
    with pytest.raises(EncodeError) as e:
        han.encode_nwk({"frame_control": {"frame_type": "data", "multicast": True}, "dest_address": 0,
                        "src_address": 1, "radius": 1, "sequence": 0, "payload": ""})
    assert "multicast" in e.value.field
    with pytest.raises(EncodeError):
        han.encode_mac({"frame_control": {"frame_type": "data", "dest_addr_mode": "short"}, "sequence": 0,
                        "dest_pan_id": 1, "dest_address": "not an address", "payload": ""})
    with pytest.raises(EncodeError):
        han.encode_gbcs_tunnel({"kind": "SEND"})


# ============================================================================================ properties

@PROPS
@given(st.binary(max_size=40))
def test_any_mac_body_decodes_canonically_or_fails_cleanly(body):
    data = with_fcs(body)
    try:
        d = han.decode_mac(data)
    except DecodeError as e:
        assert e.offset is not None and 0 <= e.offset <= len(data)
        return
    assert han.encode_mac(d) == data
    assert han.encode_mac(json.loads(json.dumps(d))) == data


@PROPS
@given(st.binary(max_size=40))
def test_any_nwk_aps_tunnel_bytes_decode_canonically_or_fail_cleanly(data):
    for dec, enc in [(han.decode_nwk, han.encode_nwk), (han.decode_aps, han.encode_aps),
                     (han.decode_tunneling, han.encode_tunneling), (han.decode_gbcs_tunnel, han.encode_gbcs_tunnel)]:
        try:
            d = dec(data)
        except DecodeError as e:
            assert e.offset is not None and 0 <= e.offset <= len(data), (dec, e)
            continue
        assert enc(json.loads(json.dumps(d))) == data, dec


@PROPS
@given(st.integers(0, 2), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 255), st.integers(0, 255),
       st.booleans(), st.booleans(), st.binary(max_size=8), st.binary(min_size=8, max_size=8))
def test_built_nwk_frames_round_trip(route, dst, src, radius, seq, dest_ieee, src_ieee, payload, eui):
    d = {"frame_control": {"frame_type": "data", "protocol_version": 2, "discover_route": route,
                           "dest_ieee_present": dest_ieee, "src_ieee_present": src_ieee},
         "dest_address": dst, "src_address": src, "radius": radius, "sequence": seq,
         "dest_ieee": eui.hex().upper() if dest_ieee else None, "src_ieee": eui.hex().upper() if src_ieee else None,
         "payload": payload.hex().upper()}
    raw = han.encode_nwk(d)
    back = han.decode_nwk(raw)
    assert han.encode_nwk(back) == raw
    assert {k: back[k] for k in ("dest_address", "src_address", "radius", "sequence", "dest_ieee", "src_ieee",
                                 "payload")} == {k: d[k] for k in ("dest_address", "src_address", "radius",
                                                                    "sequence", "dest_ieee", "src_ieee", "payload")}


# ============================================================================================ fragmentation

def test_fragment_layout():
    payload = bytes(range(256)) * 4  # 1 KB
    frames = han.fragment(payload, counter=9)
    assert len(frames) == 17  # ceil(1024 / 61)
    decoded = [han.decode_aps(f) for f in frames]
    assert all(len(d["payload"]) // 2 <= han.MAX_APS_PAYLOAD for d in decoded)
    assert decoded[0]["extended"]["control"]["fragmentation"] == "first"
    assert decoded[0]["extended"]["block_number"] == 17  # the first block carries the NUMBER of blocks
    assert [d["extended"]["block_number"] for d in decoded[1:]] == list(range(1, 17))
    assert {d["counter"] for d in decoded} == {9}
    assert b"".join(bytes.fromhex(d["payload"]) for d in decoded) == payload
    single = han.fragment(b"\x01" * 61, counter=1)
    assert len(single) == 1 and han.decode_aps(single[0])["extended"] is None
    with pytest.raises(EncodeError):
        han.fragment(bytes(61 * 255 + 1), counter=0)


def test_ack_of_a_block():
    block3 = han.decode_aps(han.fragment(bytes(300), counter=4)[3])
    ack = han.decode_aps(han.aps_ack(block3))
    assert ack["frame_control"]["frame_type"] == "ack" and ack["counter"] == 4
    assert ack["extended"]["block_number"] == 3 and ack["extended"]["ack_bitfield"] == 1
    assert ack["cluster_id"] == 0x0704 and ack["profile_id"] == 0x0109


@PROPS
@given(st.binary(min_size=0, max_size=2000), st.randoms(use_true_random=False), st.integers(0, 255))
def test_reassembly_in_any_order_with_duplicates(payload, rnd, counter):
    frames = [han.decode_aps(f) for f in han.fragment(payload, counter=counter)]
    arrivals = frames + [rnd.choice(frames) for _ in range(3)]
    rnd.shuffle(arrivals)
    r = han.Reassembler()
    got = [ev.payload for f in arrivals if (ev := r.feed("A", f, 0.0)).payload is not None]
    assert got == [payload]  # exactly once
    assert r.feed("A", frames[0], 1.0).duplicate  # the sender's retry of a delivered message


def test_reassembler_drops_incomplete_transmissions_and_persists():
    frames = [han.decode_aps(f) for f in han.fragment(bytes(200), counter=1)]
    r = han.Reassembler(timeout=5.0)
    r.feed("A", frames[0], 0.0)
    r = han.Reassembler.from_state(json.loads(json.dumps(r.state)), timeout=5.0)
    r.feed("A", frames[1], 1.0)
    assert r.expire(6.0) == ["A/1"]
    assert r.feed("A", frames[2], 6.0).payload is None and r.feed("A", frames[3], 6.0).payload is None
    # blocks 0 and 1 were dropped: the transmission cannot complete any more
    assert "A/1" in r.partial and r.partial["A/1"]["n"] is None


def test_counter_wrap_is_not_a_duplicate():
    """The 8-bit APS counter wraps: a new message reusing an old counter is delivered, not dropped."""
    r = han.Reassembler()
    for i in range(300):
        f = han.decode_aps(han.fragment(bytes([i & 0xFF]), counter=i & 0xFF)[0])
        assert r.feed("A", f, i * 0.01).payload == bytes([i & 0xFF])


# ============================================================================================ install codes

def test_mmo_hash_spec_vectors():
    # ZigBee spec C.6.1 (AES-MMO over one and two blocks)
    assert mmo_hash(h("76777475727370717E7F7C7D7A7B7879C0")) == h("3C3D537529A7A9A03F669DCD886CB52C")
    assert mmo_hash(h("1C1D1E1F18191A1B14151617101112133C3D537529A7A9A03F669DCD886CB52C")) == \
        h("4512807BF94CB3400F0E2C25FB76E999")


def test_install_code_spec_example():
    code = with_crc(h("83FED3407A939723A5C639B26916D505"))
    assert code[-2:] == h("C3B5")  # CRC-16/X.25, least significant byte first
    assert derive_link_key(code) == h("66B6900981E1EE3CA4206B6B861C02BB")
    assert derive_link_key("83FE D340 7A93 9723 A5C6 39B2 6916 D505 C3B5") == h("66B6900981E1EE3CA4206B6B861C02BB")


def test_install_code_checks():
    with pytest.raises(InstallCodeError):
        check_install_code(h("83FED3407A939723A5C639B26916D505C3B6"))  # CRC off by one bit
    with pytest.raises(InstallCodeError):
        check_install_code(h("83FED3"))
    with pytest.raises(InstallCodeError):
        with_crc(bytes(15))
    rnd = random.Random(5)
    keys = {derive_link_key(with_crc(rnd.randbytes(16))) for _ in range(50)}
    assert len(keys) == 50
