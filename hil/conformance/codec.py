"""`gbcs-emu conformance codec DIR`: every `*.HEX` below DIR is decoded, re-encoded and compared byte for byte.

A message passes when it decodes, its JSON form survives a JSON round trip, and encoding that JSON gives the
same bytes. With a keystore, MACs and signatures are also checked, and an `invalid` verdict is a failure
(`unknown`, a key that is not in the keystore, is not).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from protocols.errors import GbcsEmuError, guarded
from protocols.gbcs.message import decode, encode

__all__ = ["CaseResult", "CodecReport", "iter_messages", "run_codec_conformance", "read_message_file"]


@dataclass
class CaseResult:
    path: str
    passed: bool
    reason: str = ""
    verdicts: dict = field(default_factory=dict)


@dataclass
class CodecReport:
    results: list[CaseResult] = field(default_factory=list)

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.results)

    @property
    def failed(self) -> int:
        return sum(not r.passed for r in self.results)

    def summary(self) -> str:
        return f"{self.passed} passed, {self.failed} failed"


def read_message_file(path: Path) -> bytes:
    """A message file: hex text (RTDS `.HEX`, whitespace ignored) or raw bytes."""
    raw = path.read_bytes()
    try:
        text = raw.decode("ascii")
        return bytes.fromhex("".join(text.split()))
    except (UnicodeDecodeError, ValueError):
        return raw


def iter_messages(directory: Path) -> Iterator[Path]:
    yield from sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.upper() == ".HEX")


def check_one(data: bytes, verifier: Callable[[bytes, dict], dict] | None = None) -> tuple[bool, str, dict]:
    """(passed, reason, security verdicts) for one message."""
    try:
        msg = guarded(decode, data)
    except GbcsEmuError as e:
        return False, f"decode: {e}", {}
    try:
        again = guarded(encode, json.loads(json.dumps(msg)))
    except GbcsEmuError as e:
        return False, f"encode: {e}", {}
    if again != data:
        at = next((i for i, (a, b) in enumerate(zip(again, data)) if a != b), min(len(again), len(data)))
        return False, f"re-encoded bytes differ from offset {at} (got {len(again)} bytes, expected {len(data)})", {}
    verdicts: dict = {}
    if verifier is not None:
        try:
            verdicts = guarded(verifier, data, msg)
        except GbcsEmuError as e:
            return False, f"security: {e}", {}
        bad = [k for k, v in verdicts.items() if v == "invalid"]
        if bad:
            return False, "security: " + ", ".join(f"{k} invalid" for k in bad), verdicts
    return True, "", verdicts


def run_codec_conformance(directory: Path, verifier: Callable[[bytes, dict], dict] | None = None,
                          on_result: Callable[[CaseResult], None] | None = None) -> CodecReport:
    report = CodecReport()
    for path in iter_messages(directory):
        rel = str(path.relative_to(directory))
        try:
            data = read_message_file(path)
        except OSError as e:
            res = CaseResult(rel, False, f"read: {e}")
        else:
            ok, reason, verdicts = check_one(data, verifier)
            res = CaseResult(rel, ok, reason, verdicts)
        report.results.append(res)
        if on_result:
            on_result(res)
    return report
