#!/usr/bin/env python3
"""Codec throughput over a directory of messages (default: the RTDS beside the checkout).

Prints one JSON object: {"messages": n, "decode_per_s": x, "encode_per_s": y, "backend": "c"|"python",
"backends": {"python": {...}, "c": {...}}}. The top-level figures are the active backend's; "backends" has
both, the pure path measured in a subprocess with GBCS_EMU_PURE_PYTHON=1 (and "c" is absent when the C codec
is not built). Single process per backend, single core; each figure is the best of --repeat timed passes.
"Full decode" is `message.decode(bytes)` -> the JSON dict, the same dict on both backends.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hil.conformance.codec import iter_messages, read_message_file  # noqa: E402
from protocols import fast  # noqa: E402
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
    ap.add_argument("--this-backend-only", action="store_true", help=argparse.SUPPRESS)
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
           "encode_per_s": round(rate(encode, objs, args.seconds, args.repeat)), "backend": fast.backend()}
    if skipped:
        out["skipped"] = skipped
    if not args.this_backend_only:
        backends = {fast.backend(): {k: out[k] for k in ("messages", "decode_per_s", "encode_per_s")}}
        if fast.backend() == "c":
            env = dict(os.environ, GBCS_EMU_PURE_PYTHON="1")
            cmd = [sys.executable, str(Path(__file__).resolve()), str(args.directory), "--seconds", str(args.seconds),
                   "--repeat", str(args.repeat), "--this-backend-only"]
            pure = json.loads(subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout)
            backends["python"] = {k: pure[k] for k in ("messages", "decode_per_s", "encode_per_s")}
            backends["c"]["decode_speedup"] = round(out["decode_per_s"] / max(pure["decode_per_s"], 1), 2)
        out["backends"] = dict(sorted(backends.items(), key=lambda kv: kv[0] != "python"))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
