"""hil.remote_party and `command build`: commands rebuilt from their JSON form match RTDS byte for byte (when
unsigned), commands built with a fresh test PKI verify, counters persist and only go up, no key material leaks."""
from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import pytest

from hil.conformance.codec import read_message_file
from click.testing import CliRunner

from firmware_emu.command_cli import command
from protocols.errors import EncodeError, GbcsEmuError
from protocols.gbcs.message import decode, split_payload
from protocols.security import Keystore, Role, derive_key, init_pki
from protocols.security.errors import KeystoreError
from protocols.security.pki import DEFAULT_ORGANISATIONS, default_device_eui

from hil.remote_party import CounterError, CounterStore, RemoteParty, parse_role
from hil.verify import ABSENT, VALID, message_layout, verify_message

SUPPLIER = "90B3D51F30010000"
ACB = "90B3D51F30000002"
ESME = "00DB1234567890A0"
DEVICE = default_device_eui(1).hex().upper()
T_SUPPLIER = DEFAULT_ORGANISATIONS[Role.SUPPLIER].hex().upper()
T_ACB = DEFAULT_ORGANISATIONS[Role.ACCESS_CONTROL_BROKER].hex().upper()
T_NO = DEFAULT_ORGANISATIONS[Role.NETWORK_OPERATOR].hex().upper()


read_hex = read_message_file  # RTDS .HEX: hex text, whitespace ignored



@pytest.fixture(scope="module")
def rtds_ks(keystore_dir: Path) -> Keystore:
    return Keystore(keystore_dir)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    init_pki(d, 2, seed=7)
    return d


@pytest.fixture(scope="module")
def pki_ks(pki) -> Keystore:
    return Keystore(pki)


def rtds_json(rtds: Path, rel: str) -> dict:
    path = rtds / rel
    if not path.is_file():
        pytest.skip(f"{rel} not in this RTDS copy")
    return decode(read_hex(path))


def retarget(msg: dict, recipient: str = DEVICE) -> dict:
    """An RTDS command's JSON aimed at a test-PKI device, security fields dropped (what a user would write)."""
    msg = json.loads(json.dumps(msg))
    msg.pop("mac_header", None)
    msg.pop("signature", None)
    msg["grouping_header"]["recipient"] = recipient
    return msg


# ---------------------------------------------------------------------------------------------------------------
# RTDS: the JSON form rebuilds the same bytes


def test_rtds_commands_rebuild_from_json(rtds, rtds_ks):
    """Unsigned commands (their MAC is deterministic) come out byte for byte; signed ones match up to the
    (randomised) signature and MAC, and verify."""
    same = signed = 0
    for path in sorted(rtds.rglob("*_COMMAND_GBCS.HEX")):
        data = read_hex(path)
        try:
            msg = decode(data)
        except GbcsEmuError:
            continue  # a payload codec still being written
        gh = msg["grouping_header"]
        party = RemoteParty(rtds_ks, gh["originator"], counter_store=None, initial_counter=0)
        is_signed = bool(msg["signature"])
        out = party.build(msg, counter=gh["originator_counter"], sign=is_signed, mac="mac_header" in msg)
        if is_signed:
            tail = 64 + (12 if "mac_header" in msg else 0)
            assert out[:-tail] == data[:-tail], path.name
            v = verify_message(out, decode(out), rtds_ks)
            assert v["signature"] == VALID and v["mac"] in (VALID if "mac_header" in msg else ABSENT), path.name
            signed += 1
        else:
            assert out == data, path.name
            same += 1
    assert same > 50 and signed > 10


def test_invoke_id_and_protection_parameters_follow_the_counter(rtds, rtds_ks):
    msg = rtds_json(rtds, "4.1.1_ECS17b/ECS17b_4.1.1_SINGLE_SUCCESS_COMMAND_GBCS.HEX")
    party = RemoteParty(rtds_ks, SUPPLIER, "supplier", initial_counter=0x12ABCDEF01)
    out = decode(party.build(retarget(msg, ESME)))
    assert out["grouping_header"]["originator_counter"] == 0x12ABCDEF01 == party.last_counter
    req = out["payload"]["dlms"]["access_request"]
    assert req["long_invoke_id_and_priority"] == "20CDEF01"
    options = req["data"][0]["value"][1]["value"][0]["value"][1]["value"]
    assert [o["value"] for o in options[:3]] == ["0400000012ABCDEF01", SUPPLIER, ESME]
    assert verify_message(party.build(retarget(msg, ESME)), out, rtds_ks)["mac"] == VALID


# ---------------------------------------------------------------------------------------------------------------
# a fresh test PKI


def test_built_commands_verify_with_a_test_pki(rtds, pki_ks, tmp_path):
    store = tmp_path / "counters.json"
    party = RemoteParty(pki_ks, T_SUPPLIER, "supplier", store)
    noncritical = rtds_json(rtds, "4.1.1_ECS17b/ECS17b_4.1.1_SINGLE_SUCCESS_COMMAND_GBCS.HEX")
    critical = rtds_json(rtds, "7.2_ECS43/ECS43_7.2_SUCCESS_COMMAND_GBCS.HEX")
    data = party.build(retarget(noncritical))
    v = party.verify_response(data)
    assert (v["mac"], v["signature"]) == (VALID, ABSENT)
    data = party.build(retarget(critical))  # ECS43 is critical in the registry: signed by the supplier
    v = party.verify_response(data)
    assert (v["mac"], v["signature"]) == (VALID, VALID)
    assert decode(data)["grouping_header"]["originator_counter"] == party.last_counter
    assert json.loads(store.read_text())["counters"] == {T_SUPPLIER: party.last_counter}


def test_precommand_and_complete(rtds, pki_ks):
    critical = rtds_json(rtds, "7.2_ECS43/ECS43_7.2_SUCCESS_COMMAND_GBCS.HEX")
    party = RemoteParty(pki_ks, T_SUPPLIER, initial_counter=5000)
    pre = party.build(retarget(critical), precommand=True)
    header, content, _ = split_payload(pre)
    assert pre[0] == 0xDF and header["signature"] is None and "mac_header" not in header
    full = party.complete(pre)
    layout = message_layout(full)
    assert layout.signed == pre[1:] and layout.general_signing[:len(pre)] == pre
    v = verify_message(full, decode(full), pki_ks)
    assert (v["mac"], v["signature"]) == (VALID, VALID)
    with pytest.raises(EncodeError):
        party.complete(full)  # already signed and MAC'd
    with pytest.raises(EncodeError):
        RemoteParty(pki_ks, T_NO).complete(pre)  # someone else's pre-command


def test_acb_originated_urp_command(rtds, pki_ks):
    msg = rtds_json(rtds, "4.14_ECS21b/ECS21b_4.14_URP_SUCCESS_COMMAND_GBCS.HEX")
    msg = retarget(msg)
    oi = msg["grouping_header"]["other_information"]
    for k in ("supplementary_remote_party_id", "supplementary_remote_party_counter",
              "supplementary_remote_party_ka_certificate"):
        oi.pop(k)
    acb = RemoteParty(pki_ks, T_ACB, "acb", initial_counter=100)
    data = acb.build(msg, on_behalf_of=T_SUPPLIER, remote_party_counter=77, urp=True)
    out = decode(data)
    oi = out["grouping_header"]["other_information"]
    assert out["grouping_header"]["originator"] == T_ACB
    assert oi["supplementary_remote_party_id"] == T_SUPPLIER and oi["supplementary_remote_party_counter"] == 77
    assert bytes.fromhex(oi["supplementary_remote_party_ka_certificate"]) == pki_ks.certificate(T_SUPPLIER, "ka")
    options = out["payload"]["dlms"]["access_request"]["data"][0]["value"][1]["value"][0]["value"][1]["value"]
    assert [o["value"] for o in options[1:3]] == [T_SUPPLIER, DEVICE]  # as in RTDS: the URP is the originator
    assert verify_message(data, out, pki_ks)["mac"] == VALID
    # without an explicit counter, the supplementary party's next counter comes from the same store
    again = decode(acb.build(msg, on_behalf_of=T_SUPPLIER))
    assert again["grouping_header"]["other_information"]["supplementary_remote_party_counter"] >= 100


def test_gbz_component_marked_encrypted_is_encrypted(rtds, pki_ks):
    pytest.importorskip("protocols.zigbee.gbz")
    path = rtds / "11.2_GCS38" / "GCS38_11.2_SUCCESS_COMMAND_GBCS.HEX"
    if not path.is_file():
        pytest.skip("GCS38 not in this RTDS copy")
    try:
        msg = retarget(decode(read_hex(path)))
    except GbcsEmuError:
        pytest.skip("the GBZ codec does not decode GCS38 yet")
    comp = msg["payload"]["gbz"]["components"][0]
    comp["extended_header_control"]["encrypted"] = True
    plain_json = comp["zcl"]["payload"]
    party = RemoteParty(pki_ks, T_SUPPLIER, initial_counter=9000)
    data = party.build(msg)
    out = decode(data)
    zcl = out["payload"]["gbz"]["components"][0]["zcl"]
    assert "payload" not in zcl and zcl["ciphered"]["security_header"] == {"security_control": 0x31,
                                                                           "invocation_counter": 0}
    v = verify_message(data, out, pki_ks)  # the test PKI holds the device's private key: it can decrypt
    assert v["mac"] == VALID and v["decryption"] == VALID
    assert v["decrypted"][0]["data"] == {k: plain_json[k] for k in v["decrypted"][0]["data"]}


# ---------------------------------------------------------------------------------------------------------------
# counters


def test_counters_persist_and_only_go_up(rtds, pki_ks, tmp_path):
    store = tmp_path / "state" / "counters.json"
    msg = retarget(rtds_json(rtds, "4.1.1_ECS17b/ECS17b_4.1.1_SINGLE_SUCCESS_COMMAND_GBCS.HEX"))
    seen = []
    for _ in range(3):  # three "restarts"
        party = RemoteParty(pki_ks, T_SUPPLIER, "supplier", store, initial_counter=1000)
        for _ in range(2):
            seen.append(decode(party.build(msg))["grouping_header"]["originator_counter"])
    assert seen == list(range(1000, 1006))
    saved = json.loads(store.read_text())
    assert saved["counters"] == {T_SUPPLIER: 1005}
    assert sorted(p.name for p in store.parent.iterdir()) == ["counters.json", "counters.json.lock"]  # no temp left
    # a later floor (e.g. the clock) moves counters up, a lower one never moves them down
    assert CounterStore(store, initial_counter=10).next(T_SUPPLIER) == 1006
    assert CounterStore(store, initial_counter=5000).next(T_SUPPLIER) == 5000
    party = RemoteParty(pki_ks, T_SUPPLIER, counter_store=store)
    with pytest.raises(CounterError):
        party.build(msg, counter=4999)
    assert decode(party.build(msg, counter=6000))["grouping_header"]["originator_counter"] == 6000
    assert CounterStore(store).last(T_SUPPLIER) == 6000
    # default floor: the clock (ms since 2000), far above RTDS-style counters
    assert CounterStore(tmp_path / "other.json").next(T_SUPPLIER) > 10**11


def test_counters_unique_across_threads_and_instances(tmp_path):
    path = tmp_path / "c.json"
    got: list[int] = []
    lock = threading.Lock()

    def worker():
        store = CounterStore(path, initial_counter=1)
        for _ in range(20):
            n = store.next(SUPPLIER)
            with lock:
                got.append(n)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1, 81))


def test_bad_counter_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("not json")
    with pytest.raises(CounterError):
        CounterStore(path).next(SUPPLIER)


# ---------------------------------------------------------------------------------------------------------------
# roles and errors


def test_roles(pki_ks):
    assert parse_role("network-operator") is Role.NETWORK_OPERATOR and parse_role("ACB") is Role.ACCESS_CONTROL_BROKER
    assert parse_role("02") is Role.SUPPLIER and parse_role(8) is Role.LOAD_CONTROLLER
    with pytest.raises(GbcsEmuError):
        parse_role("plumber")
    with pytest.raises(KeystoreError):
        RemoteParty(pki_ks, T_SUPPLIER, "network-operator")
    assert RemoteParty(pki_ks, T_ACB).acb == as_bytes(T_ACB)
    assert RemoteParty(pki_ks, T_SUPPLIER).acb == as_bytes(T_ACB)


def as_bytes(eui: str) -> bytes:
    return bytes.fromhex(eui)


def test_missing_keys_are_reported(rtds, pki_ks):
    msg = retarget(rtds_json(rtds, "7.2_ECS43/ECS43_7.2_SUCCESS_COMMAND_GBCS.HEX"), recipient="00DB00000000FFFF")
    with pytest.raises(KeystoreError):  # no KA certificate for that device: no MAC
        RemoteParty(pki_ks, T_SUPPLIER, initial_counter=1).build(msg, sign=False)
    unknown = RemoteParty(pki_ks, "90B3D51FEEEEEEEE", initial_counter=1)
    with pytest.raises(KeystoreError):  # critical: needs a DS private key
        unknown.build(retarget(msg))
    bad = retarget(msg)
    del bad["grouping_header"]["recipient"]
    with pytest.raises(EncodeError):
        unknown.build(bad)


# ---------------------------------------------------------------------------------------------------------------
# the CLI


def run(*args, input=None):
    return CliRunner().invoke(command, list(args), input=input, catch_exceptions=False)


def test_cli_build_verifies_with_the_test_pki(rtds, pki, pki_ks, tmp_path):
    f = tmp_path / "ecs43.json"
    f.write_text(json.dumps(retarget(rtds_json(rtds, "7.2_ECS43/ECS43_7.2_SUCCESS_COMMAND_GBCS.HEX"))))
    counters = tmp_path / "counters.json"
    common = ["--keystore", str(pki), "--counter-file", str(counters)]
    r = run("build", "--as", "supplier", *common, str(f))
    assert r.exit_code == 0, r.output
    data = bytes.fromhex(r.output.strip())
    v = verify_message(data, decode(data), pki_ks)
    assert (v["mac"], v["signature"]) == (VALID, VALID)
    r = run("build", "--as", "supplier", *common, "--json", str(f))
    out = json.loads(r.output)
    assert out["security"]["mac"] == VALID and out["security"]["signature"] == VALID
    assert out["grouping_header"]["originator_counter"] > decode(data)["grouping_header"]["originator_counter"]
    r = run("build", "--as", "supplier", *common, "--precommand", str(f))
    assert r.output.startswith("DF") and decode(bytes.fromhex(r.output.strip()))["signature"] is None
    r = run("build", "--as", "network-operator", *common, "--no-sign", "--counter", str(2**40), str(f))
    out = decode(bytes.fromhex(r.output.strip()))
    assert out["grouping_header"]["originator"] == T_NO and out["signature"] == ""
    assert out["grouping_header"]["originator_counter"] == 2**40


def test_cli_errors(rtds, pki, tmp_path):
    f = tmp_path / "x.json"
    f.write_text("{not json")
    r = run("build", "--as", "supplier", "--keystore", str(pki), "--counter-file", str(tmp_path / "c"), str(f))
    assert r.exit_code == 2 and "not JSON" in r.output
    f.write_text(json.dumps({"grouping_header": {"recipient": DEVICE}}))
    r = run("build", "--as", "supplier", "--keystore", str(pki), "--counter-file", str(tmp_path / "c"), str(f))
    assert r.exit_code == 2 and "EncodeError" in r.output
    r = run("build", "--as", "plumber", "--keystore", str(pki), str(f))
    assert r.exit_code == 2 and "unknown role" in r.output
    r = run("build", "--keystore", str(pki), str(f))
    assert r.exit_code == 2  # neither --as nor --originator


# ---------------------------------------------------------------------------------------------------------------
# secrets


def test_no_key_material_in_logs_or_reprs(rtds, pki, pki_ks, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    f = tmp_path / "ecs43.json"
    f.write_text(json.dumps(retarget(rtds_json(rtds, "7.2_ECS43/ECS43_7.2_SUCCESS_COMMAND_GBCS.HEX"))))
    party = RemoteParty(pki, T_SUPPLIER, "supplier", tmp_path / "c.json", initial_counter=42)
    data = party.build(json.loads(f.read_text()))
    v = party.verify_response(data)
    r = run("build", "--as", "supplier", "--keystore", str(pki), "--counter-file", str(tmp_path / "c.json"),
            "--json", str(f))
    z = pki_ks.shared_secret(T_ACB, DEVICE)
    secrets = [z, derive_key(z, T_SUPPLIER, 1, 42, DEVICE)]
    for eui, usage in ((T_SUPPLIER, "ds"), (T_SUPPLIER, "ka"), (T_ACB, "ka"), (DEVICE, "ka")):
        secrets.append(pki_ks.private_key(eui, usage).private_numbers().private_value.to_bytes(32, "big"))
    texts = [caplog.text, repr(party), repr(party.counters), repr(v), r.output, (tmp_path / "c.json").read_text()]
    assert "remote party" in caplog.text  # something was logged
    for secret in secrets:
        for text in texts:
            assert secret.hex() not in text.lower()
            assert secret.hex().upper() not in text
