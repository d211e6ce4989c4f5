"""GBCS message MAC and payload encryption at the byte level (GBCS 4.3.3.4, 6.2.3; brief §3.3-3.4).

These helpers take the shared secret Z and the routing fields and do KDF + GCM; finding Z (which two parties'
KA keys) and slicing the grouping header out of a message are the caller's job:

* MAC: key = KDF(Z, grouping-header originator, CRA mode, counter, recipient); IV = originator || 00000000;
  AAD = `11 00 00 00 00 00` || the General-Signing APDU from `DF` through the last signature byte; tag 12 bytes.
* Encryption: key = KDF(..., mode 04, ...); AAD = `31`; ciphertext || 12-byte tag.
"""
from __future__ import annotations

import hmac

from protocols import fast as _fast_backend
from protocols.security import gcm
from protocols.security.eui import EuiLike, as_eui
from protocols.security.kdf import KdfMode, derive_key

__all__ = [
    "MAC_AAD_PREFIX", "mac_aad", "message_mac", "verify_message_mac", "encrypt_payload", "decrypt_payload",
]

#: Security control 0x11 (authenticated, suite 1) and the five empty General-Ciphering fields: a constant.
MAC_AAD_PREFIX = bytes.fromhex("110000000000")


def mac_aad(general_signing: bytes) -> bytes:
    """AAD of a message MAC: the fixed prefix and the whole `DF…signature` General-Signing APDU."""
    return MAC_AAD_PREFIX + bytes(general_signing)


def message_mac(shared_secret: bytes, originator: EuiLike, recipient: EuiLike, mode: int, counter: int,
                general_signing: bytes) -> bytes:
    """The 12-byte MAC to append after the General-Signing APDU inside a `DD` General-Ciphering wrapper."""
    originator = as_eui(originator)
    if _C_CRYPTO and _c_args_ok(shared_secret, mode, counter, general_signing):
        return _C.message_mac(shared_secret, originator, as_eui(recipient), mode, counter, general_signing)
    key = derive_key(shared_secret, originator, mode, counter, recipient)
    return gcm.gmac(key, originator + b"\x00\x00\x00\x00", MAC_AAD_PREFIX + bytes(general_signing))


def verify_message_mac(shared_secret: bytes, originator: EuiLike, recipient: EuiLike, mode: int, counter: int,
                       general_signing: bytes, mac: bytes) -> bool:
    """True when `mac` (12 bytes) authenticates `general_signing` for these routing fields."""
    originator = as_eui(originator)
    if (_C_CRYPTO and type(mac) is bytes and len(mac) == 12
            and _c_args_ok(shared_secret, mode, counter, general_signing)):
        return hmac.compare_digest(
            _C.message_mac(shared_secret, originator, as_eui(recipient), mode, counter, general_signing), mac)
    key = derive_key(shared_secret, originator, mode, counter, recipient)
    return gcm.verify_gmac(key, originator + b"\x00\x00\x00\x00", MAC_AAD_PREFIX + bytes(general_signing), mac)


def encrypt_payload(shared_secret: bytes, originator: EuiLike, recipient: EuiLike, counter: int,
                    plaintext: bytes) -> bytes:
    """Ciphertext || 12-byte tag of a protected payload (the `31 00000000` header in front is the caller's).

    With a supplementary originator counter (26-byte other-info), pass that counter and the supplementary
    remote party as `recipient` (GBCS pitfall 8)."""
    key = derive_key(shared_secret, originator, KdfMode.ENCRYPTION, counter, recipient)
    return gcm.encrypt(key, gcm.gcm_iv(originator), plaintext)


def decrypt_payload(shared_secret: bytes, originator: EuiLike, recipient: EuiLike, counter: int,
                    ciphertext_and_tag: bytes) -> bytes:
    """Plaintext of a protected payload; raises AuthenticationError when the tag does not verify."""
    key = derive_key(shared_secret, originator, KdfMode.ENCRYPTION, counter, recipient)
    return gcm.decrypt(key, gcm.gcm_iv(originator), ciphertext_and_tag)


# KDF + GMAC in one call through libcrypto (protocols/fast.py; csrc/_gbcs_fast.c `message_mac`) when the C
# codec was built with OpenSSL. Only arguments the Python path accepts go there, so its errors stay the same.
_C = _fast_backend.C
_C_CRYPTO = _fast_backend.CRYPTO
_MODES = frozenset((1, 2, 3, 4))


def _c_args_ok(shared_secret, mode, counter, general_signing) -> bool:
    return (type(shared_secret) is bytes and len(shared_secret) == 32 and type(mode) in (int, KdfMode)
            and mode in _MODES and type(counter) is int and 0 <= counter < 1 << 64
            and type(general_signing) in (bytes, bytearray, memoryview))
