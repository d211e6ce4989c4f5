"""AES-128-GCM as GBCS uses it: GMAC (empty plaintext) for message MACs and UTRNs, and authenticated encryption
with AAD `31` for protected payloads. Tags are truncated to 12 bytes on the wire (GBCS 4.3.3.4).

All primitives come from `cryptography`. `AESGCM` objects are cached per key because building one costs more than
a GMAC over a typical message; GMAC verification computes the full 16-byte tag and compares the truncated
prefix in constant time, which keeps a MAC check near 1 µs of crypto.
"""
from __future__ import annotations

import hmac
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from protocols.security.errors import AuthenticationError, SecurityError
from protocols.security.eui import EuiLike, as_eui

__all__ = ["TAG_LEN", "ENCRYPTION_AAD", "gcm_iv", "gmac", "verify_gmac", "encrypt", "decrypt", "clear_cipher_cache"]

TAG_LEN = 12
#: AAD of payload encryption: the security control byte 0x31 (authenticated + encrypted, suite 1) alone.
ENCRYPTION_AAD = b"\x31"
_IV_SUFFIX = b"\x00\x00\x00\x00"


@lru_cache(maxsize=512)
def _aesgcm(key: bytes) -> AESGCM:
    return AESGCM(key)


def clear_cipher_cache() -> None:
    """Drop the cached cipher objects (and so the keys they hold), e.g. at the end of a test."""
    _aesgcm.cache_clear()


def _check(key: bytes, iv: bytes) -> None:
    if len(key) != 16:
        raise SecurityError(f"GBCS uses AES-128: key must be 16 bytes, got {len(key)}")
    if len(iv) != 12:
        raise SecurityError(f"GBCS IV is 12 bytes (EUI || 00000000), got {len(iv)}")


def gcm_iv(originator: EuiLike) -> bytes:
    """IV = originator system title || 00000000 (never the recipient's: GBCS pitfall 6)."""
    return as_eui(originator) + _IV_SUFFIX


def gmac(key: bytes, iv: bytes, aad: bytes, tag_len: int = TAG_LEN) -> bytes:
    """GMAC tag (GCM over empty plaintext) truncated to its first `tag_len` bytes (12 for messages, 16 for UTRN)."""
    _check(key, iv)
    if not 1 <= tag_len <= 16:
        raise SecurityError(f"tag length must be 1..16, got {tag_len}")
    return _aesgcm(bytes(key)).encrypt(iv, b"", aad)[:tag_len]


def verify_gmac(key: bytes, iv: bytes, aad: bytes, tag: bytes, min_tag_len: int = TAG_LEN) -> bool:
    """True when `tag` is the (possibly truncated) GMAC of `aad`; constant-time compare, no exception on mismatch."""
    _check(key, iv)
    if not min_tag_len <= len(tag) <= 16:
        return False
    full = _aesgcm(bytes(key)).encrypt(iv, b"", aad)
    return hmac.compare_digest(full[:len(tag)], tag)


def encrypt(key: bytes, iv: bytes, plaintext: bytes, aad: bytes = ENCRYPTION_AAD, tag_len: int = TAG_LEN) -> bytes:
    """AES-GCM encryption returning ciphertext || tag truncated to `tag_len` bytes."""
    _check(key, iv)
    if not 12 <= tag_len <= 16:
        raise SecurityError(f"encryption tag length must be 12..16, got {tag_len}")
    out = _aesgcm(bytes(key)).encrypt(iv, plaintext, aad)
    return out if tag_len == 16 else out[:len(out) - 16 + tag_len]


def decrypt(key: bytes, iv: bytes, ciphertext_and_tag: bytes, aad: bytes = ENCRYPTION_AAD,
            tag_len: int = TAG_LEN) -> bytes:
    """Inverse of `encrypt`; raises AuthenticationError when the tag does not verify."""
    _check(key, iv)
    if not 12 <= tag_len <= 16:
        raise SecurityError(f"decryption tag length must be 12..16, got {tag_len}")
    if len(ciphertext_and_tag) < tag_len:
        raise AuthenticationError(f"ciphertext shorter than its {tag_len}-byte tag")
    ciphertext, tag = ciphertext_and_tag[:-tag_len], ciphertext_and_tag[-tag_len:]
    try:
        if tag_len == 16:
            return _aesgcm(bytes(key)).decrypt(iv, ciphertext, aad)
        decryptor = Cipher(algorithms.AES(key), modes.GCM(iv, tag, min_tag_length=tag_len)).decryptor()
        decryptor.authenticate_additional_data(aad)
        return decryptor.update(ciphertext) + decryptor.finalize()
    except InvalidTag:
        raise AuthenticationError("GCM tag does not verify") from None
