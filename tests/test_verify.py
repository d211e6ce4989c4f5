"""hil.verify against RTDS 4.5.0 (read at run time through the `rtds_dir` / `keystore_dir` fixtures): every MAC
and signature verifies, protected payloads decrypt, single-bit flips are caught, missing keys give `unknown`."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from hil.conformance.codec import read_message_file

from protocols.errors import DecodeError, GbcsEmuError
from protocols.gbcs.message import decode, encode
from protocols.security import Keystore
from protocols.security.errors import KeystoreError

from hil.verify import ABSENT, INVALID, UNKNOWN, VALID, make_verifier, message_layout, verify_message

ESME, GSME, GPF, PPMID = "00DB1234567890A0", "00DB1234567890A1", "00DB1234567890A3", "00DB1234567890A4"
VERDICTS = {VALID, INVALID, UNKNOWN, ABSENT}


read_hex = read_message_file  # RTDS .HEX: hex text, whitespace ignored



@pytest.fixture(scope="module")
def verifier(keystore_dir: Path):
    return make_verifier(keystore_dir)


@pytest.fixture(scope="module")
def ks(verifier) -> Keystore:
    return verifier.keystore


def load(rtds: Path, rel: str) -> tuple[bytes, dict]:
    path = rtds / rel
    if not path.is_file():
        pytest.skip(f"{rel} not in this RTDS copy")
    data = read_hex(path)
    return data, decode(data)


def decodes(path: Path) -> bool:
    try:
        decode(read_hex(path))
        return True
    except GbcsEmuError:  # a payload codec still being written
        return False


# ---------------------------------------------------------------------------------------------------------------
# the whole corpus


def test_every_mac_and_signature_in_rtds_is_valid(rtds, verifier):
    counts = {"mac": 0, "signature": 0, "decrypted": 0}
    failures = []
    for path in sorted(rtds.rglob("*.HEX")):
        data = read_hex(path)
        try:
            msg = decode(data)
        except GbcsEmuError:
            continue  # decoding is the codec tests' business
        v = verifier(data, msg)
        assert set(v) == {"mac", "signature", "decryption", "decrypted"}
        assert v["mac"] in VERDICTS and v["signature"] in VERDICTS and v["decryption"] in VERDICTS
        pcs = int(msg["grouping_header"]["other_information"]["message_code"], 16) in (0x009B, 0x0090)
        if "mac_header" in msg:
            expected = UNKNOWN if pcs else VALID  # PCS01/PCS02: PPMID->GSME, keyed between two devices
            if v["mac"] != expected:
                failures.append(f"MAC {v['mac']}: {path.name}")
            counts["mac"] += 1
        elif v["mac"] != ABSENT:
            failures.append(f"MAC {v['mac']} on a DF-only message: {path.name}")
        if msg["signature"]:
            if v["signature"] != VALID:
                failures.append(f"signature {v['signature']}: {path.name}")
            counts["signature"] += 1
        elif v["signature"] != ABSENT:
            failures.append(f"signature {v['signature']} on an unsigned message: {path.name}")
        for item in v["decrypted"]:
            if item["status"] != VALID or "data" not in item:
                failures.append(f"decryption {item['status']} at {item['path']}: {path.name}")
            counts["decrypted"] += 1
    assert not failures, failures[:20]
    assert counts["mac"] > 100 and counts["signature"] > 100 and counts["decrypted"] > 10, counts


def test_pcs01_pcs02_are_unknown_never_invalid(rtds, ks):
    """RTDS's own PCS files when this copy has them, and a PPMID->GSME command built like them."""
    for path in sorted(rtds.rglob("*.HEX")):
        if re.match(r"PCS0[12]_", path.name):
            data = read_hex(path)
            assert verify_message(data, decode(data), ks)["mac"] == UNKNOWN, path.name
    data, msg = load(rtds, "4.1.1_ECS17b/ECS17b_4.1.1_SINGLE_SUCCESS_COMMAND_GBCS.HEX")
    gh = msg["grouping_header"]
    gh.update(originator=PPMID, recipient=GSME)
    gh["other_information"] = {"message_code": "0x009B"}
    han = encode(msg)  # keeps the (now meaningless) MAC: nobody holds a device private key
    v = verify_message(han, decode(han), ks)
    assert v["mac"] == UNKNOWN and v["signature"] == ABSENT


def test_worked_examples(rtds, verifier):
    data, msg = load(rtds, "4.1.1_ECS17b/ECS17b_4.1.1_SINGLE_SUCCESS_COMMAND_GBCS.HEX")
    assert verifier(data, msg) == {"mac": VALID, "signature": ABSENT, "decryption": ABSENT, "decrypted": []}
    data, msg = load(rtds, "7.2_ECS43/ECS43_7.2_SUCCESS_COMMAND_GBCS.HEX")
    assert verifier(data, msg)["mac"] == VALID and verifier(data, msg)["signature"] == VALID
    data, msg = load(rtds, "7.2_ECS43/ECS43_7.2_SUCCESS_RESPONSE_GBCS.HEX")
    v = verifier(data, msg)
    assert (v["mac"], v["signature"]) == (ABSENT, VALID)  # critical response: device-signed, no MAC
    data, msg = load(rtds, "7.2_ECS43/ECS43_7.2_ERROR_PRECOMMAND_GBCS.HEX")
    v = verifier(data, msg)
    assert (v["mac"], v["signature"]) == (ABSENT, ABSENT)


def test_acb_can_be_given_explicitly(rtds, ks):
    data, msg = load(rtds, "4.1.1_ECS17b/ECS17b_4.1.1_SINGLE_SUCCESS_COMMAND_GBCS.HEX")
    assert verify_message(data, msg, ks, acb="90B3D51F30000002")["mac"] == VALID
    # the wrong ACB (here a supplier) computes a key, so the MAC is invalid rather than unknown
    assert verify_message(data, msg, ks, acb="90B3D51F30030000")["mac"] == INVALID


# ---------------------------------------------------------------------------------------------------------------
# decryption


def test_ecs17b_response_protected_attribute_decrypts(rtds, verifier):
    data, msg = load(rtds, "4.1.1_ECS17b/ECS17b_4.1.1_SINGLE_SUCCESS_RESPONSE_GBCS.HEX")
    v = verifier(data, msg)
    assert v["mac"] == VALID and v["decryption"] == VALID
    (item,) = v["decrypted"]
    assert item["path"] == "payload.dlms.access_response.data.0.value.1"
    # brief §2.1: 10 (scaler 0, unit 30 Wh), then 10 (scaler 0, unit 32 varh)
    assert item["plaintext"] == "02010204060000000A02020F00161E060000000A02020F001620"
    (values,) = item["data"]["value"]
    assert [(d["type"], d["value"]) for d in values["value"][0::2]] == [("double-long-unsigned", 10)] * 2
    assert [[x["value"] for x in d["value"]] for d in values["value"][1::2]] == [[0, 30], [0, 32]]
    # the path names the octet-string in the decoded JSON
    node = msg
    for key in item["path"].split("."):
        node = node[int(key)] if isinstance(node, list) else node[key]
    assert node["type"] == "octet-string" and node["value"].startswith("3100000000")


def test_gcs14_gbz_component_decrypts(rtds, verifier):
    pytest.importorskip("protocols.zigbee.gbz")
    path = rtds / "4.3_GCS14" / "GCS14_4.3_SUCCESS_RELIABLE_GPF_RESPONSE_GBCS.HEX"
    if not path.is_file() or not decodes(path):
        pytest.skip("GCS14 not available or the GBZ codec does not decode it yet")
    data = read_hex(path)
    v = verifier(data, decode(data))
    assert v["mac"] == VALID and v["decryption"] == VALID
    (item,) = v["decrypted"]
    assert item["path"].startswith("payload.gbz.") and item["status"] == VALID
    plain = bytes.fromhex(item["plaintext"])
    # Read Attributes Response records: 0x0005, 0x0002, 0x0001 int32 (LE) then 0x0231, 0x0211, 0x0221 uint32
    assert plain[:8] == bytes.fromhex("0500002BA0252600")
    values = [r["value"] for r in item["data"]["records"]]
    assert values == [2_500_000, 500_000, 2_500_000, 5000, 5000, 5000]


def test_urp_and_acb_routed_responses_decrypt(rtds, verifier):
    """26-byte other-info: supplementary originator counter and party; 18-byte: supplementary party."""
    for rel in ("4.14_ECS21b/ECS21b_4.14_URP_SUCCESS_RESPONSE_GBCS.HEX",
                "4.14_GCS16b/GCS16b_4.14_URP_SUCCESS_RESPONSE_GBCS.HEX",
                "4.17_GCS61/GCS61_4.17_SUCCESS_RESPONSE_GBCS.HEX"):
        path = rtds / rel
        if not path.is_file() or not decodes(path):
            continue
        data = read_hex(path)
        v = verifier(data, decode(data))
        assert v["mac"] == VALID and v["decryption"] == VALID and v["decrypted"], rel


def test_missing_keys_give_unknown(rtds, tmp_path):
    empty = Keystore()
    data, msg = load(rtds, "7.2_ECS43/ECS43_7.2_SUCCESS_COMMAND_GBCS.HEX")
    assert verify_message(data, msg, empty) == {"mac": UNKNOWN, "signature": UNKNOWN, "decryption": ABSENT,
                                                "decrypted": []}
    data, msg = load(rtds, "4.1.1_ECS17b/ECS17b_4.1.1_SINGLE_SUCCESS_RESPONSE_GBCS.HEX")
    v = make_verifier(tmp_path)(data, msg)  # an empty keystore directory
    assert v["mac"] == UNKNOWN and v["decryption"] == UNKNOWN
    assert v["decrypted"] == [{"path": "payload.dlms.access_response.data.0.value.1", "status": UNKNOWN}]


def test_make_verifier_needs_a_directory(tmp_path):
    with pytest.raises(KeystoreError):
        make_verifier(tmp_path / "nope")


# ---------------------------------------------------------------------------------------------------------------
# tampering


def _flip(data: bytes, pos: int, bit: int) -> bytes:
    out = bytearray(data)
    out[pos] ^= 1 << bit
    return bytes(out)


SAMPLES = [
    "4.1.1_ECS17b/ECS17b_4.1.1_SINGLE_SUCCESS_COMMAND_GBCS.HEX",    # MAC'd command (ACB key)
    "4.1.1_ECS17b/ECS17b_4.1.1_SINGLE_SUCCESS_RESPONSE_GBCS.HEX",   # MAC'd response, encrypted DLMS attribute
    "7.2_ECS43/ECS43_7.2_SUCCESS_COMMAND_GBCS.HEX",                 # signed and MAC'd command
    "7.2_ECS43/ECS43_7.2_SUCCESS_RESPONSE_GBCS.HEX",                # device-signed response, no MAC
    "8.11_CCS01/CCS01_8.11_SUCCESS_COMMAND_GBCS.HEX",               # ACB-originated, supplementary party
    "11.2_GCS38/GCS38_11.2_SUCCESS_RESPONSE_GBCS.HEX",              # GBZ response
    "4.3_GCS14/GCS14_4.3_SUCCESS_RELIABLE_GPF_RESPONSE_GBCS.HEX",   # GBZ response with an encrypted component
    "NA_ECS68/ECS68_NA_8F0A_SINGLE_ALERT_GBCS.HEX",                 # critical alert with an encrypted log
]


def _positions(layout, data: bytes) -> dict[str, list[int]]:
    """Byte positions (in `data`) of the regions a verdict covers, minus the routing EUIs (a flipped EUI may
    name a party the keystore does not know: `unknown`, tested separately)."""
    gs_start = len(data) - len(layout.general_signing) - (12 if layout.mac else 0)
    content = list(range(layout.content_offset, layout.content_offset + len(layout.content)))
    header = [gs_start + i for i in (2, 3, 10)]  # CRA flag, top and bottom counter bytes
    oi_code = gs_start + 30 + (12 if data[gs_start + 29] else 0) + 1  # message code, after the length byte
    header += [oi_code, oi_code + 1]
    regions = {"payload": content[:3] + content[len(content) // 2:len(content) // 2 + 2] + content[-2:],
               "header": header}
    if layout.signature is not None:
        end = gs_start + len(layout.general_signing)
        regions["signature"] = [end - 64, end - 33, end - 1]
    if layout.mac is not None:
        regions["mac"] = [len(data) - 12, len(data) - 6, len(data) - 1]
        regions["security_header"] = [gs_start - 5, gs_start - 1]
    return regions


def test_single_bit_flips_are_invalid(rtds, verifier):
    checked = 0
    for rel in SAMPLES:
        path = rtds / rel
        if not path.is_file() or not decodes(path):
            continue
        data = read_hex(path)
        layout = message_layout(data)
        assert verifier(data, decode(data))["mac"] in (VALID, ABSENT)
        for region, positions in _positions(layout, data).items():
            for pos in positions:
                for bit in (0, 3, 7):
                    bad = _flip(data, pos, bit)
                    try:
                        msg = decode(bad)
                    except DecodeError:
                        continue  # a flip that breaks the syntax is caught by the decoder: also fine
                    v = verifier(bad, msg)
                    if layout.mac is not None:
                        assert v["mac"] == INVALID, (rel, region, pos, bit, v)
                    elif region in ("payload", "header", "signature"):
                        assert v["signature"] == INVALID, (rel, region, pos, bit, v)
                    checked += 1
    assert checked > 50


def test_flipped_ciphertext_is_an_invalid_decryption(rtds, verifier):
    data, msg = load(rtds, "NA_ECS68/ECS68_NA_8F0A_SINGLE_ALERT_GBCS.HEX")  # signed, not MAC'd
    layout = message_layout(data)
    pos = layout.content_offset + len(layout.content) - 20  # inside the ciphertext/tag of the billing log
    bad = _flip(data, pos, 2)
    v = verifier(bad, decode(bad))
    assert v["signature"] == INVALID and v["decryption"] == INVALID
    assert [i["status"] for i in v["decrypted"]] == [INVALID] and "plaintext" not in v["decrypted"][0]


def test_flipped_routing_eui_is_never_valid(rtds, verifier):
    data, _ = load(rtds, "4.1.1_ECS17b/ECS17b_4.1.1_SINGLE_SUCCESS_COMMAND_GBCS.HEX")
    layout = message_layout(data)
    gs_start = len(data) - len(layout.general_signing) - 12
    for pos in [gs_start + 12, gs_start + 19, gs_start + 21, gs_start + 28]:  # originator and recipient EUIs
        for bit in (0, 7):
            bad = _flip(data, pos, bit)
            assert verifier(bad, decode(bad))["mac"] in (INVALID, UNKNOWN)


def test_verdicts_name_no_key_material(rtds, ks, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    data, msg = load(rtds, "4.1.1_ECS17b/ECS17b_4.1.1_SINGLE_SUCCESS_RESPONSE_GBCS.HEX")
    v = verify_message(data, msg, ks)
    z = ks.shared_secret(ESME, "90B3D51F30010000")
    private = ks.ka_private("90B3D51F30010000").private_numbers().private_value.to_bytes(32, "big")
    for secret in (z, private):
        for text in (caplog.text, repr(v), repr(message_layout(data)), repr(ks)):
            assert secret.hex() not in text.lower()
