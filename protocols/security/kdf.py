"""GBCS key derivation (GBCS 4.3.3.3): NIST SP800-56A single-step KDF over SHA-256 with one round.

Every message gets its own AES-128 key because the originator counter is part of OtherInfo; that is why GBCS
can use a fixed IV (originator EUI || 00000000) without ever reusing a (key, IV) pair.
"""
from __future__ import annotations

import hashlib
from enum import IntEnum

from protocols.security.errors import SecurityError
from protocols.security.eui import EuiLike, as_eui

__all__ = ["KdfMode", "ALGORITHM_ID", "other_info", "derive_key"]

#: AlgorithmID of GBCS OtherInfo: `60 85 74 06 08 03 00` (the GBCS OID arc for "AES-GCM-128 with SHA-256 KDF").
ALGORITHM_ID = bytes.fromhex("60857406080300")
_ROUND_1 = b"\x00\x00\x00\x01"  # SP800-56A counter; one SHA-256 block covers the 16-byte key
_TRANSACTION_ID_LEN = b"\x09"   # PartyVInfo starts with the transaction id *with* its length byte


class KdfMode(IntEnum):
    """The CRA-flag/mode byte of the transaction id used in OtherInfo (GBCS 4.3.3.3)."""

    COMMAND = 0x01     #: MAC of a command
    RESPONSE = 0x02    #: MAC of a response
    ALERT = 0x03       #: MAC of an alert
    ENCRYPTION = 0x04  #: payload encryption (DLMS protected attributes, GBZ encrypted components)


_MODES = frozenset(int(m) for m in KdfMode)


def other_info(originator: EuiLike, mode: int, counter: int, recipient: EuiLike) -> bytes:
    """The 33-byte OtherInfo: AlgorithmID || PartyU (originator) || 09 mode counter || PartyV (recipient)."""
    if mode not in _MODES:
        raise SecurityError(f"KDF mode must be one of 1..4 (command/response/alert/encryption), got {mode!r}")
    if not 0 <= counter < 1 << 64:
        raise SecurityError(f"originator counter out of uint64 range: {counter}")
    return b"".join((ALGORITHM_ID, as_eui(originator), _TRANSACTION_ID_LEN, bytes((mode,)),
                     counter.to_bytes(8, "big"), as_eui(recipient)))


def derive_key(shared_secret: bytes, originator: EuiLike, mode: int, counter: int, recipient: EuiLike) -> bytes:
    """The 16-byte AES key for one message: SHA-256(00000001 || Z || OtherInfo)[:16].

    `originator` is the grouping-header originator (PartyU) even when the ACB's key did the ECDH, and for a
    response `counter` is the command's counter (GBCS pitfall 5)."""
    if len(shared_secret) != 32:
        raise SecurityError(f"shared secret Z must be 32 bytes (P-256 x coordinate), got {len(shared_secret)}")
    return hashlib.sha256(_ROUND_1 + shared_secret + other_info(originator, mode, counter, recipient)).digest()[:16]
