"""Conformance runners: `codec` (decode/re-encode every message byte for byte, optionally verifying security)."""
