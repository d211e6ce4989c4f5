"""Security hot-path benchmark: MAC-only verification with a cached ECDH secret (keystore lookup + KDF + GMAC)
and ECDSA P-256 signature verification, on keys of an in-memory seeded test PKI (no files, no RTDS needed).

    python bench/security.py [--json] [--seconds S]

The message is shaped like the RTDS ECS17b command (a 144-byte General-Signing APDU); the counter changes on
every iteration, as on the wire, so every check derives a fresh key.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocols.security import (  # noqa: E402
    KdfMode, Keystore, PkiIssuer, Role, message_mac, sign, verify, verify_message_mac,
)
from protocols.security.pki import DEFAULT_ORGANISATIONS, default_device_eui  # noqa: E402


def _general_signing(originator: bytes, recipient: bytes, counter: int, payload_len: int = 97) -> bytes:
    return (b"\xDF\x09\x01" + counter.to_bytes(8, "big") + b"\x08" + originator + b"\x08" + recipient + b"\x00"
            + b"\x02\x00\x27" + bytes((payload_len,)) + bytes(range(payload_len)) + b"\x00")


def _rate(fn, seconds: float) -> tuple[float, float]:
    """(operations per second, microseconds per operation) over about `seconds` of wall time."""
    n, batch, start = 0, 64, time.perf_counter()
    while True:
        for _ in range(batch):
            fn()
        n += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n / elapsed, elapsed / n * 1e6
        batch = min(batch * 2, 65536)


def run(seconds: float) -> dict:
    ks = Keystore()
    issuer = PkiIssuer(seed=1)
    supplier, acb = DEFAULT_ORGANISATIONS[Role.SUPPLIER], DEFAULT_ORGANISATIONS[Role.ACCESS_CONTROL_BROKER]
    device = default_device_eui(1)
    issuer.issue_organisation(ks, Role.SUPPLIER, supplier)
    issuer.issue_organisation(ks, Role.ACCESS_CONTROL_BROKER, acb)
    issuer.issue_device(ks, device)

    # 256 distinct messages (distinct counters) with their MACs, verified round robin
    msgs = []
    for counter in range(1000, 1256):
        gs = _general_signing(supplier, device, counter)
        msgs.append((counter, gs, message_mac(ks.shared_secret(acb, device), supplier, device, KdfMode.COMMAND,
                                              counter, gs)))
    state = {"i": 0}

    def mac_verify():
        counter, gs, mac = msgs[state["i"] & 255]
        state["i"] += 1
        z = ks.shared_secret(acb, device)  # cached after the first call
        if not verify_message_mac(z, supplier, device, KdfMode.COMMAND, counter, gs, mac):
            raise AssertionError("MAC did not verify")

    signed = msgs[0][1][1:]
    signature = sign(ks.ds_private(supplier), signed)
    public = ks.ds_public(supplier)

    def signed_verify():
        if not verify(public, signed, signature):
            raise AssertionError("signature did not verify")

    mac_rate, mac_us = _rate(mac_verify, seconds)
    sig_rate, sig_us = _rate(signed_verify, seconds)
    return {"mac_verify_per_s": round(mac_rate), "mac_verify_us": round(mac_us, 2),
            "signed_verify_per_s": round(sig_rate), "signed_verify_us": round(sig_us, 1),
            "backend": "cryptography"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--seconds", type=float, default=1.0, help="time spent on each measurement")
    args = parser.parse_args(argv)
    result = run(args.seconds)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"MAC verify (cached secret, KDF + GMAC): {result['mac_verify_per_s']:>9,}/s  "
              f"{result['mac_verify_us']} us")
        print(f"ECDSA P-256 verify:                     {result['signed_verify_per_s']:>9,}/s  "
              f"{result['signed_verify_us']} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
