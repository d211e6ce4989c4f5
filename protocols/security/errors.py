"""Typed errors of the security layer.

Every error here derives from `SecurityError`, itself a `GbcsEmuError`, so callers can catch one base for
"the crypto said no" without also swallowing programming errors. Messages name EUIs and file names only:
never key material, shared secrets or derived keys.
"""
from __future__ import annotations

from protocols.errors import GbcsEmuError

__all__ = ["SecurityError", "InvalidEuiError", "KeystoreError", "AuthenticationError", "UtrnError"]


class SecurityError(GbcsEmuError):
    """Base of every error raised on purpose by `protocols.security`."""


class InvalidEuiError(SecurityError, ValueError):
    """A value that is not an 8-byte EUI-64 (bytes or 16 hex digits)."""


class KeystoreError(SecurityError):
    """A keystore file or entry that cannot be used (unreadable, wrong curve, conflicting keys, missing CA)."""


class AuthenticationError(SecurityError):
    """A GCM tag that does not verify when decrypting: the ciphertext or its AAD was altered, or the key is wrong."""


class UtrnError(SecurityError, ValueError):
    """A UTRN that is malformed (not 20 digits, bad check digit, out of the PPTD range) or a top-up out of range."""
