"""ZigBee install codes and the link key derived from them (ZigBee spec B.6 and the SE install-code rule).

An install code is 6, 8, 12 or 16 random bytes followed by their CRC-16/X.25, least significant byte first
(GB devices use 16 + 2). The trust center (the CHF) and the joining device both hash the whole code,
CRC included, with the Matyas-Meyer-Oseas construction over AES-128 to get the device's initial link key; only
a device that holds the same install code can then read the network key the trust center sends it.

MMO (ZigBee B.6): pad M (l bits) with a 1 bit, zeros up to 112 bits mod 128, then l as 16 bits big-endian;
H0 = 0^128, Hj = E(Hj-1, Mj) XOR Mj. AES-128 block encryption comes from `cryptography`; only the chaining
is written here. Messages of 2^16 bits or more use a different padding the HAN never needs: rejected.
"""
from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from protocols.framing.crc import x25

__all__ = ["mmo_hash", "with_crc", "check_install_code", "derive_link_key", "InstallCodeError", "CODE_LENGTHS"]

CODE_LENGTHS = (6, 8, 12, 16)   # bytes before the CRC


class InstallCodeError(ValueError):
    """Not a valid install code (length or CRC)."""


def _aes_block(key: bytes, block: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


def mmo_hash(data: bytes) -> bytes:
    """The 16-byte AES-MMO hash of `data` (ZigBee B.6, messages shorter than 8192 bytes)."""
    data = bytes(data)
    bits = 8 * len(data)
    if bits >= 1 << 16:
        raise ValueError("AES-MMO: messages of 2^16 bits or more are not supported")
    padded = data + b"\x80"
    padded += bytes((14 - len(padded)) % 16) + bits.to_bytes(2, "big")
    h = bytes(16)
    for i in range(0, len(padded), 16):
        block = padded[i:i + 16]
        h = (int.from_bytes(_aes_block(h, block), "big") ^ int.from_bytes(block, "big")).to_bytes(16, "big")
    return h


def with_crc(code: bytes) -> bytes:
    """`code` (6/8/12/16 bytes) followed by its CRC-16/X.25, least significant byte first."""
    code = bytes(code)
    if len(code) not in CODE_LENGTHS:
        raise InstallCodeError(f"an install code has 6, 8, 12 or 16 bytes before its CRC, got {len(code)}")
    return code + x25(code).to_bytes(2, "little")


def check_install_code(code: bytes | str) -> bytes:
    """An install code with its CRC (bytes or hex), checked; returns the bytes."""
    if isinstance(code, str):
        try:
            code = bytes.fromhex(code.replace(" ", ""))
        except ValueError:
            raise InstallCodeError(f"not hex: {code!r}") from None
    code = bytes(code)
    if len(code) - 2 not in CODE_LENGTHS:
        raise InstallCodeError(f"an install code with CRC has 8, 10, 14 or 18 bytes, got {len(code)}")
    crc = int.from_bytes(code[-2:], "little")
    if x25(code[:-2]) != crc:
        raise InstallCodeError(f"install code CRC 0x{crc:04X} does not match 0x{x25(code[:-2]):04X}")
    return code


def derive_link_key(code: bytes | str) -> bytes:
    """The initial trust-center link key of a device: AES-MMO of its install code, CRC included."""
    return mmo_hash(check_install_code(code))
