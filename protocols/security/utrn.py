"""UTRN: the 20-digit prepayment top-up code (GBCS section 14; brief §4.2), built by a supplier, checked by a meter.

    UTRN = PPTD (19 digits) || check digit
    PPTD = PTUT + 7,394,156,990,786,306,048 (the "K-class 5" offset that keeps UTRNs apart from STS tokens)
    PTUT = 64 bits: 0000000 | counter bits 32..41 (10) | value class (2) | value (13) | last 4 bytes of a GMAC tag

The GMAC uses the supplier's **prepayment** KA key with the device's KA key, KDF mode 01, the UTRN originator
counter (whose low 32 bits are zero), IV = supplier EUI || 00000000, and
AAD = `11 00 00 00 00 00` || supplier EUI || device EUI || 01 || counter (8) || PTUT high 32 bits. The tag is the
full 16 bytes and only its *last* 4 bytes go in the PTUT (GBCS pitfall 6).

The check digit is a Verhoeff-style dihedral check run left to right with the permutation index starting at 4.
GBCS's "inverse" table (14.8c) is not the textbook Verhoeff inverse: it is the digit that makes the *whole*
20-digit UTRN fold to 0, i.e. I[c] = P7^-1(inverse of c in D5) for a 19-digit PPTD. The tables below are
generated from those definitions and checked against the RTDS CS01a top-up in the tests.
"""
from __future__ import annotations

import hmac
from enum import IntEnum
from typing import NamedTuple

from cryptography.hazmat.primitives.asymmetric import ec

from protocols.security import ecc, gcm
from protocols.security.errors import SecurityError, UtrnError
from protocols.security.eui import EuiLike, as_eui
from protocols.security.kdf import KdfMode, derive_key
from protocols.security.mac import MAC_AAD_PREFIX

__all__ = [
    "PPTD_OFFSET", "UTRN_LENGTH", "MAX_VALUE", "ValueClass", "ParsedUtrn", "PERMUTATION_TABLE",
    "MULTIPLICATION_TABLE", "INVERSE_TABLE", "check_digit", "check_digit_valid", "ptut_high", "utrn_tag",
    "utrn_from_secret", "build_utrn", "parse_utrn", "verify_utrn", "verify_utrn_with_secret", "utrn_counter_bits",
]

PPTD_OFFSET = 7_394_156_990_786_306_048
UTRN_LENGTH = 20
MAX_VALUE = (1 << 13) - 1          # 13-bit PTUT value: £81.91 in pennies or £8,191 in pounds
_PTUT_LIMIT = 1 << 57              # the 7 lead bits of the PTUT are zero
_COUNTER_BITS_MASK = (1 << 10) - 1
_START_INDEX = 4                   # GBCS starts the permutation index at 4, not 0 as textbook Verhoeff does


class ValueClass(IntEnum):
    """How the 13-bit PTUT value is read: in 1/100 of the currency unit or in whole units."""

    PENNIES = 0
    POUNDS = 1


class ParsedUtrn(NamedTuple):
    """The clear fields of a UTRN (the tag needs the keys to check)."""

    counter_bits: int        #: bits 32..41 of the UTRN originator counter
    value_class: ValueClass
    value: int
    tag4: bytes              #: last 4 bytes of the 16-byte GMAC tag


# -- check digit tables ------------------------------------------------------------------------------------------

def _d5(j: int, k: int) -> int:
    """Multiplication in the dihedral group D5 (0-4 rotations, 5-9 reflections): GBCS table 14.8b."""
    if j < 5:
        return (j + k) % 5 + (0 if k < 5 else 5)
    return (j - k) % 5 + (5 if k < 5 else 0)


def _permutations() -> tuple[tuple[int, ...], ...]:
    """Rows P0..P7: powers of the base permutation (1 5 8 9 4 2 7)(3 6) of Verhoeff's scheme: table 14.8a."""
    base = (1, 5, 7, 6, 2, 8, 3, 0, 9, 4)
    rows = [tuple(range(10))]
    for _ in range(7):
        rows.append(tuple(base[d] for d in rows[-1]))
    return tuple(rows)


MULTIPLICATION_TABLE = tuple(tuple(_d5(j, k) for k in range(10)) for j in range(10))
PERMUTATION_TABLE = _permutations()


def _inverse_table(length: int) -> tuple[int, ...]:
    """I[c] = the digit that, processed at position `length`, takes the running value c to 0."""
    row = PERMUTATION_TABLE[(_START_INDEX + length) % 8]
    return tuple(next(d for d in range(10) if MULTIPLICATION_TABLE[c][row[d]] == 0) for c in range(10))


#: GBCS table 14.8c for the 19-digit PPTD; differs from the textbook inverse (0 4 3 2 1 5 6 7 8 9).
INVERSE_TABLE = _inverse_table(UTRN_LENGTH - 1)


def _fold(digits: str) -> int:
    if not digits or not digits.isascii() or not digits.isdigit():
        raise UtrnError("check digits are computed over decimal digits only")
    c, k = 0, _START_INDEX
    for ch in digits:
        c = MULTIPLICATION_TABLE[c][PERMUTATION_TABLE[k][ord(ch) - 48]]
        k = (k + 1) % 8
    return c


def check_digit(pptd: str) -> str:
    """The GBCS check digit of a 19-digit PPTD (other lengths use the inverse table for that length)."""
    table = INVERSE_TABLE if len(pptd) == UTRN_LENGTH - 1 else _inverse_table(len(pptd))
    return str(table[_fold(pptd)])


def check_digit_valid(utrn: str) -> bool:
    """True when the whole UTRN (PPTD and check digit) folds to 0."""
    try:
        return _fold(utrn) == 0
    except UtrnError:
        return False


# -- PTUT and tag ------------------------------------------------------------------------------------------------

def utrn_counter_bits(counter: int) -> int:
    """Bits 32..41 of a UTRN originator counter, as carried in the PTUT."""
    return (counter >> 32) & _COUNTER_BITS_MASK


def ptut_high(counter: int, value: int, value_class: int) -> int:
    """High 32 bits of the PTUT: 0000000 | counter bits 32..41 | value class | value."""
    if not 0 <= counter < 1 << 64:
        raise UtrnError(f"UTRN counter out of uint64 range: {counter}")
    if counter & 0xFFFFFFFF:
        raise UtrnError("a UTRN originator counter has its low 32 bits zero")
    if not 0 <= value <= MAX_VALUE:
        raise UtrnError(f"UTRN value must be 0..{MAX_VALUE}, got {value}")
    value_class = ValueClass(value_class)
    return (utrn_counter_bits(counter) << 15) | (int(value_class) << 13) | value


def utrn_tag(shared_secret: bytes, supplier_eui: EuiLike, device_eui: EuiLike, counter: int, high: int) -> bytes:
    """Last 4 bytes of the 16-byte GMAC tag that authenticates a PTUT's high half."""
    supplier, device = as_eui(supplier_eui), as_eui(device_eui)
    key = derive_key(shared_secret, supplier, KdfMode.COMMAND, counter, device)
    aad = b"".join((MAC_AAD_PREFIX, supplier, device, b"\x01", counter.to_bytes(8, "big"), high.to_bytes(4, "big")))
    return gcm.gmac(key, gcm.gcm_iv(supplier), aad, tag_len=16)[-4:]


def utrn_from_secret(shared_secret: bytes, supplier_eui: EuiLike, device_eui: EuiLike, counter: int, value: int,
                     value_class: int = ValueClass.PENNIES) -> str:
    """UTRN from an already agreed secret Z (supplier prepayment KA × device KA)."""
    high = ptut_high(counter, value, value_class)
    ptut = (high << 32) | int.from_bytes(utrn_tag(shared_secret, supplier_eui, device_eui, counter, high), "big")
    pptd = str(PPTD_OFFSET + ptut)
    return pptd + check_digit(pptd)


def build_utrn(pp_ka_private: ec.EllipticCurvePrivateKey, device_ka_public: ecc.PublicKeyLike,
               supplier_eui: EuiLike, device_eui: EuiLike, counter: int, value: int,
               value_class: int = ValueClass.PENNIES) -> str:
    """The supplier's side: a UTRN worth `value` (pennies or pounds) for `device_eui` under `counter`."""
    secret = ecc.ecdh_shared_secret(pp_ka_private, device_ka_public)
    return utrn_from_secret(secret, supplier_eui, device_eui, counter, value, value_class)


def parse_utrn(utrn: str) -> ParsedUtrn:
    """Split a UTRN into its clear fields; raises UtrnError when it is malformed or its check digit is wrong."""
    if not isinstance(utrn, str):
        raise UtrnError(f"a UTRN is a string of digits, got {type(utrn).__name__}")
    text = utrn.strip()
    if len(text) != UTRN_LENGTH or not text.isascii() or not text.isdigit():
        raise UtrnError(f"a UTRN is {UTRN_LENGTH} decimal digits")
    if not check_digit_valid(text):
        raise UtrnError("UTRN check digit is wrong (mistyped digit?)")
    ptut = int(text[:-1]) - PPTD_OFFSET
    if not 0 <= ptut < _PTUT_LIMIT:
        raise UtrnError("UTRN is outside the PPTD range of GBCS top-ups")
    high = ptut >> 32
    value_class = (high >> 13) & 0b11
    if value_class > ValueClass.POUNDS:
        raise UtrnError(f"UTRN value class {value_class:02b} is reserved")
    return ParsedUtrn(counter_bits=(high >> 15) & _COUNTER_BITS_MASK, value_class=ValueClass(value_class),
                      value=high & MAX_VALUE, tag4=(ptut & 0xFFFFFFFF).to_bytes(4, "big"))


def verify_utrn_with_secret(utrn: str, shared_secret: bytes, supplier_eui: EuiLike, device_eui: EuiLike,
                            counter: int) -> bool:
    """True when `utrn` is authentic for this supplier, device and full 64-bit counter."""
    try:
        parsed = parse_utrn(utrn)
        if counter & 0xFFFFFFFF or utrn_counter_bits(counter) != parsed.counter_bits:
            return False
        high = ptut_high(counter, parsed.value, parsed.value_class)
    except UtrnError:
        return False
    return hmac.compare_digest(utrn_tag(shared_secret, supplier_eui, device_eui, counter, high), parsed.tag4)


def verify_utrn(utrn: str, private_key: ec.EllipticCurvePrivateKey, peer_public_key: ecc.PublicKeyLike,
                supplier_eui: EuiLike, device_eui: EuiLike, counter: int) -> bool:
    """True when `utrn` is authentic. Either side's keys work: the device's KA private key with the supplier's
    prepayment KA public key (what a meter does), or the supplier's prepayment KA private key with the device's
    KA public key. `counter` is the full originator counter (see `counters.utrn_counter_from_bits`)."""
    try:
        secret = ecc.ecdh_shared_secret(private_key, peer_public_key)
    except SecurityError:
        return False
    return verify_utrn_with_secret(utrn, secret, supplier_eui, device_eui, counter)
