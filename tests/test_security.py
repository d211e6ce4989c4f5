"""Tests of protocols.security against RTDS 4.5.0 bytes and keys (read at run time through the `rtds_dir`
fixture) and against a freshly made test PKI."""
from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from pathlib import Path

import pytest

from hil.conformance.codec import read_message_file
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from firmware_emu.keys_cli import keys
from protocols.errors import GbcsEmuError
from protocols.security import (
    AuthenticationError, CounterCheck, InvalidEuiError, KdfMode, Keystore, ReplayGuard, Role, SecurityError, Usage,
    UtrnCounterCache, UtrnError, ValueClass, as_eui, build_utrn, check_digit, check_digit_valid, decrypt,
    decrypt_payload, derive_key, ecdh_shared_secret, encrypt, encrypt_payload, eui_from_certificate, gmac,
    init_pki, message_mac, other_info, parse_utrn, sign, utrn_counter_from_bits, verify, verify_gmac,
    verify_message_mac, verify_utrn, verify_utrn_with_secret,
)
from protocols.security import ecc
from protocols.security import utrn as utrn_mod
from protocols.security.counters import UTRN_CACHE_SIZE
from protocols.security.keystore import hw_module_name
from protocols.security.pki import DEFAULT_ORGANISATIONS, PkiIssuer, default_device_eui

SUPPLIER = "90B3D51F30010000"
SUPPLIER_2 = "90B3D51F30030000"
NETWORK_OPERATOR = "90B3D51F30020000"
ACB = "90B3D51F30000002"
WAN_PROVIDER = "90B3D51F30000007"
ESME = "00DB1234567890A0"


# ---------------------------------------------------------------------------------------------------------------
# a minimal reader of the GBCS outer layers, enough to find the MAC'd and signed byte ranges


@dataclass
class Message:
    general_signing: bytes        # DF … through the last signature byte
    mac: bytes | None             # 12 bytes when DD-wrapped
    cra: int
    counter: int
    originator: bytes
    recipient: bytes
    signed_bytes: bytes           # from the byte after DF through the last payload byte
    signature: bytes | None       # 64 bytes when signed


def _ber(buf: bytes, pos: int) -> tuple[int, int]:
    first = buf[pos]
    if first < 0x80:
        return first, pos + 1
    n = first & 0x7F
    return int.from_bytes(buf[pos + 1:pos + 1 + n], "big"), pos + 1 + n


def parse_message(data: bytes) -> Message:
    mac = None
    if data[0] == 0xDD:
        assert data[1:7] == bytes(6)
        length, pos = _ber(data, 7)
        assert data[pos:pos + 5] == bytes.fromhex("1100000000")
        assert len(data) == pos + length
        gs, mac = data[pos + 5:-12], data[-12:]
    else:
        gs = data
    assert gs[0] == 0xDF and gs[1] == 0x09 and gs[11] == 8 and gs[20] == 8
    pos = 30 if gs[29] == 0 else 30 + 12
    n, pos = _ber(gs, pos)
    pos += n                      # other-information
    n, pos = _ber(gs, pos)
    pos += n                      # content
    signature = None
    if pos < len(gs) and gs[pos] == 0x40:
        signature = gs[pos + 1:pos + 65]
        assert pos + 65 == len(gs)
    return Message(gs, mac, gs[2], int.from_bytes(gs[3:11], "big"), gs[12:20], gs[21:29], gs[1:pos], signature)


read_hex = read_message_file  # RTDS .HEX: hex text, whitespace ignored



@pytest.fixture(scope="session")
def ks(rtds_dir: Path) -> Keystore:
    return Keystore(rtds_dir / "keystore")


def mac_parties(msg: Message, acb: bytes) -> tuple[bytes, bytes]:
    """Whose KA keys MAC a message: ACB × recipient for commands, originator × recipient otherwise (brief §3.3)."""
    if msg.cra == KdfMode.COMMAND:
        return acb, msg.recipient
    return msg.originator, msg.recipient


# ---------------------------------------------------------------------------------------------------------------
# KDF


def test_kdf_command_vector_from_keystore(ks):
    z = ks.shared_secret(ACB, ESME)
    assert z is not None and len(z) == 32
    assert z.hex().startswith("ed342441") and z.hex().endswith("9f4e5ac0")
    assert other_info(SUPPLIER, KdfMode.COMMAND, 1000, ESME).hex().upper() == (
        "60857406080300" "90B3D51F30010000" "0901" "00000000000003E8" "00DB1234567890A0")
    assert derive_key(z, SUPPLIER, KdfMode.COMMAND, 1000, ESME).hex() == "ec1d51bd8f8bf0cdd2314cf396cc12c0"


def test_kdf_response_vector_from_keystore(ks):
    z = ks.shared_secret(SUPPLIER, ESME)
    assert derive_key(z, ESME, KdfMode.RESPONSE, 1000, SUPPLIER).hex() == "d288091f13f120da8d2649c3aa543058"


def test_kdf_rejects_bad_input():
    z = bytes(32)
    with pytest.raises(SecurityError):
        derive_key(z, SUPPLIER, 5, 1, ESME)
    with pytest.raises(SecurityError):
        derive_key(z[:31], SUPPLIER, 1, 1, ESME)
    with pytest.raises(SecurityError):
        derive_key(z, SUPPLIER, 1, 1 << 64, ESME)
    with pytest.raises(InvalidEuiError):
        derive_key(z, "90B3D51F3001", 1, 1, ESME)
    assert [int(m) for m in KdfMode] == [1, 2, 3, 4]


# ---------------------------------------------------------------------------------------------------------------
# GCM


def test_gcm_known_answer_and_truncation():
    # NIST GCM test cases 1 and 2 (zero key and IV)
    key, iv = bytes(16), bytes(12)
    assert gmac(key, iv, b"", tag_len=16).hex() == "58e2fccefa7e3061367f1d57a4e7455a"
    out = encrypt(key, iv, bytes(16), aad=b"", tag_len=16)
    assert out.hex() == "0388dace60b6a392f328c2b971b2fe78" "ab6e47d42cec13bdf53a67b21257bddf"
    assert encrypt(key, iv, bytes(16), aad=b"") == out[:-4]
    assert decrypt(key, iv, out[:-4], aad=b"") == bytes(16)
    assert verify_gmac(key, iv, b"", bytes.fromhex("58e2fccefa7e3061367f1d57"))
    assert not verify_gmac(key, iv, b"", bytes.fromhex("58e2fccefa7e3061367f1d58"))
    assert not verify_gmac(key, iv, b"", bytes.fromhex("58e2fcce"))  # shorter than 12 bytes is refused


def test_gcm_tamper_raises_authentication_error():
    key, iv = bytes(range(16)), bytes(12)
    ct = encrypt(key, iv, b"protected attribute")
    with pytest.raises(AuthenticationError):
        decrypt(key, iv, bytes([ct[0] ^ 1]) + ct[1:])
    with pytest.raises(AuthenticationError):
        decrypt(key, iv, ct, aad=b"\x11")
    with pytest.raises(SecurityError):
        gmac(bytes(15), iv, b"")
    assert issubclass(AuthenticationError, GbcsEmuError)


# ---------------------------------------------------------------------------------------------------------------
# MAC verification on RTDS


def test_mac_ecs17b_single_success_command_and_response(ks, rtds):
    folder = rtds / "4.1.1_ECS17b"
    cmd = parse_message(read_hex(folder / "ECS17b_4.1.1_SINGLE_SUCCESS_COMMAND_GBCS.HEX"))
    assert cmd.mac.hex().upper() == "F08A88FCB4EEBECA47B71589" and cmd.counter == 1000
    z = ks.shared_secret(ACB, cmd.recipient)
    assert verify_message_mac(z, cmd.originator, cmd.recipient, KdfMode.COMMAND, cmd.counter, cmd.general_signing,
                              cmd.mac)
    assert message_mac(z, cmd.originator, cmd.recipient, cmd.cra, cmd.counter, cmd.general_signing) == cmd.mac

    rsp = parse_message(read_hex(folder / "ECS17b_4.1.1_SINGLE_SUCCESS_RESPONSE_GBCS.HEX"))
    z = ks.shared_secret(rsp.originator, rsp.recipient)
    assert verify_message_mac(z, rsp.originator, rsp.recipient, KdfMode.RESPONSE, rsp.counter, rsp.general_signing,
                              rsp.mac)


def test_mac_every_ecs17b_file(ks, rtds):
    files = sorted((rtds / "4.1.1_ECS17b").glob("*.HEX"))
    assert len(files) == 6
    for path in files:
        msg = parse_message(read_hex(path))
        a, b = mac_parties(msg, as_eui(ACB))
        z = ks.shared_secret(a, b)
        assert z is not None, path.name
        assert verify_message_mac(z, msg.originator, msg.recipient, msg.cra, msg.counter, msg.general_signing,
                                  msg.mac), path.name


def test_mac_flipped_bit_is_invalid(ks, rtds):
    msg = parse_message(read_hex(rtds / "4.1.1_ECS17b" / "ECS17b_4.1.1_SINGLE_SUCCESS_COMMAND_GBCS.HEX"))
    z = ks.shared_secret(ACB, msg.recipient)
    args = (z, msg.originator, msg.recipient, KdfMode.COMMAND, msg.counter)
    for i in (0, 5, len(msg.general_signing) // 2, len(msg.general_signing) - 1):
        tampered = bytearray(msg.general_signing)
        tampered[i] ^= 0x01
        assert not verify_message_mac(*args, bytes(tampered), msg.mac)
    assert not verify_message_mac(*args, msg.general_signing, bytes([msg.mac[0] ^ 0x80]) + msg.mac[1:])
    assert not verify_message_mac(z, msg.originator, msg.recipient, KdfMode.COMMAND, msg.counter + 1,
                                  msg.general_signing, msg.mac)
    assert not verify_message_mac(z, msg.originator, msg.recipient, KdfMode.RESPONSE, msg.counter,
                                  msg.general_signing, msg.mac)


def test_decrypt_ecs17b_protected_attributes(ks, rtds):
    data = read_hex(rtds / "4.1.1_ECS17b" / "ECS17b_4.1.1_SINGLE_SUCCESS_RESPONSE_GBCS.HEX")
    rsp = parse_message(data)
    marker = bytes.fromhex("3100000000")
    start = rsp.general_signing.index(bytes.fromhex("092B") + marker) + 2
    body = rsp.general_signing[start:start + 0x2B]
    assert body[:5] == marker
    z = ks.shared_secret(rsp.originator, rsp.recipient)
    plain = decrypt_payload(z, rsp.originator, rsp.recipient, rsp.counter, body[5:])
    assert plain.hex().upper() == "0201020406000000" "0A02020F00161E06" "0000000A02020F00" "1620"
    assert encrypt_payload(z, rsp.originator, rsp.recipient, rsp.counter, plain) == body[5:]
    with pytest.raises(AuthenticationError):
        decrypt_payload(z, rsp.originator, rsp.recipient, rsp.counter + 1, body[5:])


# ---------------------------------------------------------------------------------------------------------------
# signatures on RTDS


def test_signed_command_signature_and_mac(ks, rtds):
    cmd = parse_message(read_hex(rtds / "7.2_ECS43" / "ECS43_7.2_SUCCESS_COMMAND_GBCS.HEX"))
    assert cmd.signature is not None and cmd.general_signing[len(cmd.signed_bytes) + 1] == 0x40
    assert verify(ks.ds_public(cmd.originator), cmd.signed_bytes, cmd.signature)
    # the pre-command is the signed bytes without the signature byte
    pre = read_hex(rtds / "7.2_ECS43" / "ECS43_7.2_SUCCESS_PRECOMMAND_GBCS.HEX")
    assert pre[1:] == cmd.signed_bytes
    z = ks.shared_secret(ACB, cmd.recipient)
    assert verify_message_mac(z, cmd.originator, cmd.recipient, cmd.cra, cmd.counter, cmd.general_signing, cmd.mac)
    bad = bytearray(cmd.signed_bytes)
    bad[-1] ^= 0x04
    assert not verify(ks.ds_public(cmd.originator), bytes(bad), cmd.signature)
    assert not verify(ks.ds_public(NETWORK_OPERATOR), cmd.signed_bytes, cmd.signature)


def test_device_signed_response(ks, rtds):
    rsp = parse_message(read_hex(rtds / "7.2_ECS43" / "ECS43_7.2_SUCCESS_RESPONSE_GBCS.HEX"))
    assert rsp.mac is None and rsp.originator == as_eui(ESME)
    assert verify(ks.ds_public(ESME), rsp.signed_bytes, rsp.signature)
    assert ks.ds_private(ESME) is None  # RTDS has no device private keys


def test_raw_der_signature_round_trip(ks):
    key = ks.ds_private(SUPPLIER)
    sig = sign(key, b"grouping header and payload")
    assert len(sig) == 64
    assert ecc.der_to_raw(ecc.raw_to_der(sig)) == sig
    assert verify(ks.ds_public(SUPPLIER), b"grouping header and payload", sig)
    assert verify(ks.x509_certificate(SUPPLIER, "ds"), b"grouping header and payload", sig)
    assert not verify(ks.ds_public(SUPPLIER), b"grouping header and payload!", sig)
    assert not verify(ks.ds_public(SUPPLIER), b"grouping header and payload", sig[:63])
    if ecc._HAS_DETERMINISTIC:  # RFC 6979 needs cryptography >= 43
        assert sign(key, b"x", deterministic=True) == sign(key, b"x", deterministic=True)


def test_ecdh_symmetric_and_cached(ks):
    ecc.clear_ecdh_cache()
    supplier_key = ks.ka_private(SUPPLIER)
    acb_key = ks.ka_private(ACB)
    z1 = ecdh_shared_secret(supplier_key, ks.ka_public(ACB))
    z2 = ecdh_shared_secret(acb_key, ks.certificate(SUPPLIER, "ka"))  # DER certificate bytes work as a peer
    assert z1 == z2 and len(z1) == 32
    ecdh_shared_secret(supplier_key, ecc.public_point(ks.ka_public(ACB)))
    info = ecc.ecdh_cache_info()
    assert info["hits"] >= 1 and info["size"] == 2
    assert "entries" in repr(ecc._SECRETS) and z1.hex() not in repr(ecc._SECRETS)


def test_every_rtds_mac_and_signature_verifies(ks, rtds):
    """Whole-corpus check of the keying rules (brief §3.6): only device-to-device HAN messages (PCS01/02) lack keys."""
    macs = signatures = 0
    failures = []
    for path in sorted(rtds.rglob("*.HEX")):
        msg = parse_message(read_hex(path))
        if msg.mac is not None:
            a, b = mac_parties(msg, as_eui(ACB))
            z = ks.shared_secret(a, b)
            if z is None and ks.is_device(a) and ks.is_device(b):
                continue
            if z is None or not verify_message_mac(z, msg.originator, msg.recipient, msg.cra, msg.counter,
                                                   msg.general_signing, msg.mac):
                failures.append(f"MAC {path.name}")
            macs += 1
        if msg.signature is not None:
            if not verify(ks.ds_public(msg.originator), msg.signed_bytes, msg.signature):
                failures.append(f"signature {path.name}")
            signatures += 1
    assert not failures
    assert macs > 100 and signatures > 100


# ---------------------------------------------------------------------------------------------------------------
# keystore


def test_keystore_files_by_certificate_eui(ks):
    # 90b3d51f30000007-ka.* is Supplier 2's KA pair: it must be filed under 90B3D51F30030000
    assert ks.entry(WAN_PROVIDER, "ka") is None
    assert ks.ka_private(WAN_PROVIDER) is None
    assert ks.ds_private(WAN_PROVIDER) is not None
    entry = ks.entry(SUPPLIER_2, Usage.KA)
    assert entry.private_key is not None
    assert "90b3d51f30000007-ka.pem" in entry.sources and "90b3d51f30000007-ka.key" in entry.sources
    assert ks.role(WAN_PROVIDER) is Role.WAN_PROVIDER
    assert ks.role(SUPPLIER_2) is Role.SUPPLIER
    assert ks.role(ACB) is Role.ACCESS_CONTROL_BROKER
    assert ks.role("90b3d51f30010008") is Role.LOAD_CONTROLLER
    assert ks.role(ESME) is None and ks.is_device(ESME) and not ks.is_device(SUPPLIER)
    # private keys are paired with the certificate holding the matching public key
    for e in ks.entries():
        if e.private_key is not None and e.certificate is not None:
            assert ecc.public_point(e.private_key) == ecc.public_point(e.certificate)
            assert eui_from_certificate(e.certificate) == e.eui
    assert ks.problems == []


def test_keystore_lookups_accept_any_eui_form(ks):
    assert ks.ka_public(ESME) is not None
    assert ecc.public_point(ks.ka_public("00db1234567890a0")) == ecc.public_point(ks.ka_public(as_eui(ESME)))
    assert ks.ka_public("00-DB-12-34-56-78-90-A0") is not None
    assert ESME in ks and "00db1234567890a0" in ks and "nonsense" not in ks
    assert ks.pp_ka_private(SUPPLIER) is not None and ks.pp_ka_public(SUPPLIER) is not None
    assert ks.pp_ka_private(ESME) is None and ks.ka_private(ESME) is None
    assert ecc.public_point(ks.pp_ka_public(SUPPLIER)) != ecc.public_point(ks.ka_public(SUPPLIER))
    der = ks.certificate(ESME, "ka")
    cert = x509.load_der_x509_certificate(der)
    assert eui_from_certificate(cert) == as_eui(ESME)
    other_name = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value[0]
    assert hw_module_name(ESME) == other_name.value  # the test PKI writes the same hwModuleName bytes
    assert ks.certificate(ESME, "pp-ka") is None
    assert as_eui("90B3D51F30010000") in ks.euis() and len(ks.euis()) == len(ks)
    # odd files: a bare public key and private keys without certificates are filed by name
    assert ks.ka_public("fffffffffffffffe") is not None and ks.x509_certificate("fffffffffffffffe", "ka") is None
    assert ks.ka_private("abababababababab") is not None
    with pytest.raises(InvalidEuiError):
        ks.ka_public("00DB12")
    with pytest.raises(SecurityError):
        ks.public_key(ESME, "signing")


def test_keystore_shared_secret_rules(ks):
    assert ks.shared_secret(ESME, ACB) == ks.shared_secret(ACB, ESME)      # either side's private key
    assert ks.shared_secret(ESME, "00DB1234567890A1") is None            # two devices: no private key
    assert ks.shared_secret("0000000000000001", ESME) is None            # unknown party
    assert ks.shared_secret(SUPPLIER, ESME, "pp-ka") != ks.shared_secret(SUPPLIER, ESME)
    with pytest.raises(SecurityError):
        ks.shared_secret(SUPPLIER, ESME, "ds")


def test_keystore_save_and_reload(ks, tmp_path):
    out = tmp_path / "copy"
    ks.save_certificate(out, SUPPLIER_2, "ka")
    ks.save_private_key(out, SUPPLIER_2, "ka")
    ks.save_certificate(out, "fffffffffffffffe", "ka")
    assert sorted(p.name for p in out.iterdir()) == [
        "90b3d51f30030000-ka.key", "90b3d51f30030000-ka.pem", "fffffffffffffffe-ka.pem"]
    assert (out / "90b3d51f30030000-ka.key").stat().st_mode & 0o077 == 0
    again = Keystore(out)
    assert again.ka_private(SUPPLIER_2) is not None and again.ka_public("fffffffffffffffe") is not None
    with pytest.raises(SecurityError):
        ks.save_private_key(out, ESME, "ka")


def test_no_key_material_in_repr_or_logs(rtds_dir, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    store = Keystore(rtds_dir / "keystore")
    z = store.shared_secret(ACB, ESME)
    build_utrn(store.pp_ka_private(SUPPLIER), store.ka_public(ESME), SUPPLIER, ESME, 3 << 32, 10, 1)
    init_pki(tmp_path / "pki", 1, seed=5)
    pki_store = Keystore(tmp_path / "pki")
    texts = [caplog.text]
    for s in (store, pki_store):
        texts += [repr(s), str(s)] + [repr(e) + str(e) for e in s.entries()]
    blob = "\n".join(texts)
    secrets = [z.hex(), z.hex().upper()]
    for s in (store, pki_store):
        for e in s.entries():
            if e.private_key is None:
                continue
            value = e.private_key.private_numbers().private_value
            secrets += [f"{value:064x}", f"{value:064X}", str(value)]
            pem = e.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()).decode()
            secrets += [line for line in pem.splitlines() if not line.startswith("-----")]
    assert len(secrets) > 40
    leaked = [s for s in secrets if s in blob]
    assert not leaked
    assert "private_key=present" in repr(next(e for e in store.entries() if e.private_key is not None))


# ---------------------------------------------------------------------------------------------------------------
# UTRN


def _cs01a_utrn(rtds: Path, kind: str) -> tuple[str, int]:
    msg = parse_message(read_hex(rtds / "2.2_CS01a" / f"CS01a_2.2_{kind}_COMMAND_GBCS.HEX"))
    i = msg.general_signing.index(bytes.fromhex("0914"))
    return msg.general_signing[i + 2:i + 22].decode("ascii"), msg.counter


def test_utrn_cs01a_recompute(ks, rtds):
    utrn, counter = _cs01a_utrn(rtds, "SUCCESS")
    assert utrn == "73946144332040217315" and counter == 0x0000000300000000
    parsed = parse_utrn(utrn)
    assert parsed == (3, ValueClass.POUNDS, 10, bytes.fromhex("9CD029E3"))
    built = build_utrn(ks.pp_ka_private(SUPPLIER), ks.ka_public(ESME), SUPPLIER, ESME, counter, 10,
                       ValueClass.POUNDS)
    assert built == utrn
    assert verify_utrn(utrn, ks.pp_ka_private(SUPPLIER), ks.certificate(ESME, "ka"), SUPPLIER, ESME, counter)
    z = ks.shared_secret(SUPPLIER, ESME, "pp-ka")
    assert verify_utrn_with_secret(utrn, z, SUPPLIER, ESME, counter)
    assert not verify_utrn_with_secret(utrn, z, SUPPLIER, ESME, counter + (1 << 32))  # counter bits differ
    assert not verify_utrn_with_secret(utrn, z, SUPPLIER, ESME, counter + (1024 << 32))  # same bits, other counter
    assert not verify_utrn_with_secret(utrn, ks.shared_secret(SUPPLIER, ESME), SUPPLIER, ESME, counter)  # not pp-KA
    # the ERROR variant is a well-formed, authentic UTRN too (its error is not about the token)
    other, other_counter = _cs01a_utrn(rtds, "ERROR")
    assert verify_utrn_with_secret(other, z, SUPPLIER, ESME, other_counter)


def test_utrn_flipped_digit_or_value_is_invalid(ks):
    utrn = "73946144332040217315"
    z = ks.shared_secret(SUPPLIER, ESME, "pp-ka")
    for i in range(20):
        d = (int(utrn[i]) + 1) % 10
        tampered = utrn[:i] + str(d) + utrn[i + 1:]
        assert not check_digit_valid(tampered)
        assert not verify_utrn_with_secret(tampered, z, SUPPLIER, ESME, 3 << 32)
        with pytest.raises(UtrnError):
            parse_utrn(tampered)
    # a forged value with a recomputed check digit passes the check digit but not the tag
    forged_ptut = (int(utrn[:-1]) - utrn_mod.PPTD_OFFSET) + (1 << 32)   # value 10 -> 11
    pptd = str(utrn_mod.PPTD_OFFSET + forged_ptut)
    forged = pptd + check_digit(pptd)
    assert parse_utrn(forged).value == 11
    assert not verify_utrn_with_secret(forged, z, SUPPLIER, ESME, 3 << 32)


def test_utrn_check_digit_tables():
    # GBCS's inverse table (14.8c) is not textbook Verhoeff's (0 4 3 2 1 5 6 7 8 9)
    assert utrn_mod.INVERSE_TABLE == (1, 2, 6, 7, 5, 8, 3, 0, 9, 4)
    assert utrn_mod.PERMUTATION_TABLE[1] == (1, 5, 7, 6, 2, 8, 3, 0, 9, 4)
    assert utrn_mod.MULTIPLICATION_TABLE[5] == (5, 9, 8, 7, 6, 0, 4, 3, 2, 1)
    assert check_digit("7394614433204021731") == "5"
    textbook = (0, 4, 3, 2, 1, 5, 6, 7, 8, 9)
    assert str(textbook[utrn_mod._fold("7394614433204021731")]) != "5"
    utrn = "73946144332040217315"
    for i in range(19):  # every adjacent transposition of distinct digits is caught
        if utrn[i] != utrn[i + 1]:
            assert not check_digit_valid(utrn[:i] + utrn[i + 1] + utrn[i] + utrn[i + 2:])


def test_utrn_build_limits(ks):
    key, pub = ks.pp_ka_private(SUPPLIER), ks.ka_public(ESME)
    for value, counter in ((8192, 1 << 32), (-1, 1 << 32), (5, (1 << 32) + 1)):
        with pytest.raises(UtrnError):
            build_utrn(key, pub, SUPPLIER, ESME, counter, value, ValueClass.PENNIES)
    top = build_utrn(key, pub, SUPPLIER, ESME, 1023 << 32, 8191, ValueClass.POUNDS)
    assert len(top) == 20 and parse_utrn(top)[:3] == (1023, ValueClass.POUNDS, 8191)
    for bad in ("7394614433204021731", "7394614433204021731x", 73946144332040217315, "00000000000000000000"):
        with pytest.raises(UtrnError):
            parse_utrn(bad)


# ---------------------------------------------------------------------------------------------------------------
# counters


def test_replay_guard_strictly_greater():
    guard = ReplayGuard()
    assert guard.check(0) is CounterCheck.ACCEPT
    guard = guard.accept(1000)
    assert guard.check(1000) is CounterCheck.REPLAY and guard.check(999) is CounterCheck.REPLAY
    assert guard.check(1001) and guard.check(-1) is CounterCheck.INVALID
    with pytest.raises(SecurityError):
        guard.accept(1000)
    assert guard.accept(5000).last_accepted == 5000 and guard.last_accepted == 1000  # immutable


def test_utrn_counter_cache_window():
    cache = UtrnCounterCache(size=3)
    for n in (5, 3, 4):
        cache = cache.accept(n << 32)             # out-of-order top-ups are fine while the cache has room
    assert cache.counters == (3 << 32, 4 << 32, 5 << 32)
    assert cache.check(4 << 32) is CounterCheck.REPLAY
    assert cache.check(2 << 32) is CounterCheck.STALE    # below a full cache: may be an evicted replay
    assert cache.check((6 << 32) + 1) is CounterCheck.INVALID
    cache = cache.accept(7 << 32)
    assert cache.counters == (4 << 32, 5 << 32, 7 << 32)
    assert cache.check(6 << 32) is CounterCheck.ACCEPT   # a skipped counter is still usable
    assert UtrnCounterCache().size == UTRN_CACHE_SIZE
    restored = UtrnCounterCache(tuple(reversed(cache.counters)), 3)  # the caller persists plain ints
    assert restored == cache


def test_utrn_counter_from_bits_gbcs_table_27():
    highest = 2_458_896_167 << 32
    assert utrn_counter_from_bits(812, highest) == 10_560_878_642_999_590_912
    assert utrn_counter_from_bits(3, None) == 3 << 32
    assert utrn_counter_from_bits(2, 1025 << 32) == 1026 << 32            # next block
    assert utrn_counter_from_bits(1023, 1025 << 32) == 1023 << 32         # just before the highest
    cache = UtrnCounterCache((1020 << 32,))
    assert cache.counter_from_bits(4) == 1028 << 32                        # wraps the 10-bit field


# ---------------------------------------------------------------------------------------------------------------
# test PKI and `keys init`


def _command(originator: bytes, recipient: bytes, counter: int, payload: bytes) -> bytes:
    """An unsigned-form grouping header (pre-command) for a MAC/signature round trip."""
    return (b"\x09\x01" + counter.to_bytes(8, "big") + b"\x08" + originator + b"\x08" + recipient + b"\x00"
            + b"\x02\x00\x50" + bytes((len(payload),)) + payload)


def test_keys_init_pki_signs_and_macs(tmp_path):
    out = tmp_path / "pki"
    result = CliRunner().invoke(keys, ["init", str(out), "--devices", "2", "--seed", "42"])
    assert result.exit_code == 0, result.output
    store = Keystore(out)
    assert store.problems == []
    supplier = DEFAULT_ORGANISATIONS[Role.SUPPLIER]
    acb = DEFAULT_ORGANISATIONS[Role.ACCESS_CONTROL_BROKER]
    device = default_device_eui(1)
    assert store.euis() == sorted(list(DEFAULT_ORGANISATIONS.values()) + [device, default_device_eui(2)])
    for role, eui in DEFAULT_ORGANISATIONS.items():
        assert store.role(eui) is role and eui.hex().upper() in result.output
        assert store.ds_private(eui) is not None and store.ka_private(eui) is not None
    assert store.pp_ka_private(supplier) is not None
    assert store.role(device) is None and store.is_device(device)
    assert store.x509_certificate(device, "ds").subject == x509.Name([])

    # a critical command: supplier signs, ACB MACs with the device's KA key; both verify from the files
    pre = _command(supplier, device, 4096, bytes.fromhex("D920001000000103000900000A006AFF0101120034"))
    gs = b"\xDF" + pre + b"\x40" + sign(store.ds_private(supplier), pre)
    mac = message_mac(store.shared_secret(acb, device), supplier, device, KdfMode.COMMAND, 4096, gs)
    reloaded = Keystore(out)
    length = 5 + len(gs) + 12
    ber = bytes((length,)) if length < 0x80 else bytes((0x81, length))
    msg = parse_message(b"\xDD" + bytes(6) + ber + bytes.fromhex("1100000000") + gs + mac)
    assert verify(reloaded.ds_public(supplier), msg.signed_bytes, msg.signature)
    assert verify_message_mac(reloaded.shared_secret(device, acb), supplier, device, KdfMode.COMMAND, 4096,
                              msg.general_signing, msg.mac)
    # the device can now sign a critical response, which RTDS keys cannot do
    rsp = _command(device, supplier, 4096, b"\xDA\x20\x00\x10\x00")
    assert verify(reloaded.ds_public(device), rsp, sign(reloaded.ds_private(device), rsp))
    # and a UTRN made with the supplier's prepayment key verifies on the device side
    utrn = build_utrn(reloaded.pp_ka_private(supplier), reloaded.ka_public(device), supplier, device, 7 << 32, 250,
                      ValueClass.PENNIES)
    assert verify_utrn(utrn, reloaded.ka_private(device), reloaded.pp_ka_public(supplier), supplier, device, 7 << 32)


def test_pki_certificates_chain_and_shape(tmp_path):
    summary = init_pki(tmp_path / "p", ["00DB000000000009"], seed=1)
    assert summary.devices == [as_eui("00DB000000000009")]
    issuer = PkiIssuer.load(tmp_path / "p" / "ca")
    root, org_ca, dev_ca = issuer.root_certificate, issuer.organisation_ca_certificate, issuer.device_ca_certificate
    org_ca.verify_directly_issued_by(root)
    dev_ca.verify_directly_issued_by(root)
    store = Keystore(tmp_path / "p")
    for e in store.entries():
        ca = dev_ca if store.is_device(e.eui) else org_ca
        e.certificate.verify_directly_issued_by(ca)
        assert eui_from_certificate(e.certificate) == e.eui
    assert org_ca.subject.rfc4514_string() == "CN=Z1,OU=07"
    assert dev_ca.subject.rfc4514_string() == "CN=E357"
    # RTDS and test-PKI EUIs never collide
    assert all(not e.hex().startswith(("00db1234567890", "90b3d51f300")) for e in store.euis())


def test_pki_seed_is_reproducible(tmp_path):
    if "ecdsa_deterministic" not in inspect.signature(x509.CertificateBuilder.sign).parameters:
        pytest.skip("deterministic certificate signatures need a newer cryptography")
    init_pki(tmp_path / "a", 1, seed=9)
    init_pki(tmp_path / "b", 1, seed=9)
    init_pki(tmp_path / "c", 1, seed=10)
    names = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(names) == 2 * 2 * 7 + 2 + 2 * 2 + 6 + 1  # orgs DS+KA, supplier pp-KA, 1 device, CAs, manifest
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "00db000000000001-ka.pem").read_bytes() != (
        tmp_path / "c" / "00db000000000001-ka.pem").read_bytes()


def test_keys_init_refuses_to_overwrite_and_validates(tmp_path):
    runner = CliRunner()
    assert runner.invoke(keys, ["init", str(tmp_path / "k"), "--device-eui", "00db0000000000ff"]).exit_code == 0
    again = runner.invoke(keys, ["init", str(tmp_path / "k")])
    assert again.exit_code != 0 and "already holds keys" in again.output
    assert runner.invoke(keys, ["init", str(tmp_path / "k"), "--force"]).exit_code == 0
    bad = runner.invoke(keys, ["init", str(tmp_path / "x"), "--device-eui", "00DB"])
    assert bad.exit_code != 0
    clash = runner.invoke(keys, ["init", str(tmp_path / "y"), "--device-eui", "90B3D51FEE010000"])
    assert clash.exit_code != 0 and "clash" in clash.output
    added = runner.invoke(keys, ["add-device", str(tmp_path / "k"), "-n", "2"])
    assert added.exit_code == 0 and "00DB000000000002" in added.output
    assert Keystore(tmp_path / "k").ds_private("00DB000000000003") is not None
