#!/usr/bin/env python3
"""Codec throughput over a directory of messages (default: the RTDS beside the checkout).

Prints one JSON object: {"messages": n, "decode_per_s": x, "encode_per_s": y, "backend": "python"}.
Single process, single core; each figure is the best of --repeat timed passes after a warm-up pass.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hil.conformance.codec import iter_messages, read_message_file  # noqa: E402
from protocols.errors import GbcsEmuError  # noqa: E402
from protocols.gbcs.message import decode, encode  # noqa: E402

DEFAULT_DIR = ROOT.parent / "shared" / "rtds" / "RTDS-4.5.0"


def rate(func, items, seconds: float, repeat: int) -> float:
    best = 0.0
    for _ in range(repeat):
        n, start = 0, time.perf_counter()
        while True:
            for x in items:
                func(x)
            n += len(items)
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
        best = max(best, n / elapsed)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("directory", nargs="?", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--json", action="store_true", help="print JSON only (the default output form)")
    ap.add_argument("--seconds", type=float, default=2.0, help="time per pass")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    raws, skipped = [], 0
    for p in iter_messages(args.directory):
        raw = read_message_file(p)
        try:
            decode(raw)
            raws.append(raw)
        except GbcsEmuError:
            skipped += 1
    if not raws:
        print(json.dumps({"error": f"no decodable messages under {args.directory}"}))
        return 1
    objs = [decode(r) for r in raws]
    out = {"messages": len(raws), "decode_per_s": round(rate(decode, raws, args.seconds, args.repeat)),
           "encode_per_s": round(rate(encode, objs, args.seconds, args.repeat)), "backend": "python"}
    if skipped:
        out["skipped"] = skipped
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
