"""GBCS security: key derivation, GCM MACs and encryption, ECDH/ECDSA, the keystore, a test PKI, UTRNs and
anti-replay counters. Pure functions and sans-IO values over bytes; every primitive comes from `cryptography`.

Modules (each docstring says why it is shaped the way it is):

* `kdf`       – GBCS single-step KDF: `derive_key(Z, originator, mode, counter, recipient)`, `KdfMode`.
* `gcm`       – AES-128-GCM: `gmac`, `verify_gmac`, `encrypt`, `decrypt` (12-byte tags).
* `mac`       – message-level MAC and payload encryption (KDF + GCM with GBCS AAD/IV rules).
* `ecc`       – cached ECDH secret, raw r||s ECDSA `sign`/`verify`.
* `keystore`  – `Keystore` in the RTDS layout, keyed by the EUI inside certificates.
* `pki`       – `init_pki`: a complete test PKI (CAs, organisations, devices).
* `utrn`      – prepayment top-up codes: `build_utrn`, `parse_utrn`, `verify_utrn`, check digit.
* `counters`  – `ReplayGuard` (commands) and `UtrnCounterCache` (top-ups).

Nothing in this package logs or reprs private keys, shared secrets or derived keys.
"""
from protocols.security.counters import CounterCheck, ReplayGuard, UtrnCounterCache, utrn_counter_from_bits
from protocols.security.ecc import (
    clear_ecdh_cache, der_to_raw, ecdh_shared_secret, load_public_key, public_point, raw_to_der, sign, verify,
)
from protocols.security.errors import AuthenticationError, InvalidEuiError, KeystoreError, SecurityError, UtrnError
from protocols.security.eui import as_eui, eui_hex
from protocols.security.gcm import decrypt, encrypt, gcm_iv, gmac, verify_gmac
from protocols.security.kdf import KdfMode, derive_key, other_info
from protocols.security.keystore import (
    KeyEntry, Keystore, Role, Usage, eui_from_certificate, role_from_certificate, usage_from_certificate,
)
from protocols.security.mac import (
    MAC_AAD_PREFIX, decrypt_payload, encrypt_payload, mac_aad, message_mac, verify_message_mac,
)
from protocols.security.pki import DEFAULT_ORGANISATIONS, PkiIssuer, add_devices, default_device_eui, init_pki
from protocols.security.utrn import (
    ParsedUtrn, ValueClass, build_utrn, check_digit, check_digit_valid, parse_utrn, utrn_from_secret, verify_utrn,
    verify_utrn_with_secret,
)

__all__ = [
    # errors
    "SecurityError", "InvalidEuiError", "KeystoreError", "AuthenticationError", "UtrnError",
    # EUIs
    "as_eui", "eui_hex",
    # KDF and GCM
    "KdfMode", "derive_key", "other_info", "gmac", "verify_gmac", "encrypt", "decrypt", "gcm_iv",
    # message MAC / payload encryption
    "MAC_AAD_PREFIX", "mac_aad", "message_mac", "verify_message_mac", "encrypt_payload", "decrypt_payload",
    # ECC
    "ecdh_shared_secret", "clear_ecdh_cache", "sign", "verify", "raw_to_der", "der_to_raw", "load_public_key",
    "public_point",
    # keystore and PKI
    "Keystore", "KeyEntry", "Usage", "Role", "eui_from_certificate", "role_from_certificate",
    "usage_from_certificate", "init_pki", "add_devices", "PkiIssuer", "DEFAULT_ORGANISATIONS", "default_device_eui",
    # UTRN
    "ValueClass", "ParsedUtrn", "build_utrn", "parse_utrn", "verify_utrn", "verify_utrn_with_secret",
    "utrn_from_secret", "check_digit", "check_digit_valid",
    # counters
    "CounterCheck", "ReplayGuard", "UtrnCounterCache", "utrn_counter_from_bits",
]
