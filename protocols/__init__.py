"""Wire formats and security for GBCS: pure functions over bytes, no I/O."""
from protocols.errors import DecodeError, EncodeError, GbcsEmuError

__all__ = ["DecodeError", "EncodeError", "GbcsEmuError"]
