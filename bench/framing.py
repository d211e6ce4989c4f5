#!/usr/bin/env python3
"""Framing + CRC throughput over a byte stream, MB/s, on both codec backends (issue 8).

For each framing (GFI text, HDLC, length+CRC) a stream of back-to-back frames is fed to the streaming
deframer (`make_deframer`) in fixed-size chunks, as a serial/TCP edge does; the figure is wire bytes consumed
per second, every frame delivered and checked (CRC/HCS/FCS, hex, length). `crc_mb_s` is CRC-16/X.25 alone over
a 1 MiB buffer. Payload sizes: the RTDS mix is ~230 bytes; `--payload` sets it (HDLC caps the information
field at ~2 kB). The pure path runs in a subprocess with GBCS_EMU_PURE_PYTHON=1.

Prints one JSON object: {"payload": n, "chunk": n, "backends": {"python": {...}, "c": {...}}}.
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

from protocols import fast  # noqa: E402
from protocols.framing import make_deframer  # noqa: E402
from protocols.framing.crc import x25  # noqa: E402
from protocols.framing.gfi import encode_gfi  # noqa: E402
from protocols.framing.hdlc import encode_hdlc  # noqa: E402
from protocols.framing.lencrc import encode_lencrc  # noqa: E402


def _stream(kind: str, payload: int, total: int) -> tuple[bytes, int]:
    body = bytes((i * 7 + 3) & 0xFF for i in range(payload))
    if kind == "gfi":
        frame = encode_gfi(body)
    elif kind == "hdlc":
        frame = encode_hdlc(body, dest=0x10, src=0x01, control=0x10)
    else:
        frame = encode_lencrc(body)
    n = max(1, total // len(frame))
    return frame * n, n


def _rate(kind: str, payload: int, chunk: int, seconds: float, repeat: int) -> float:
    stream, frames = _stream(kind, payload, 4 << 20)
    best = 0.0
    for _ in range(repeat):
        done, start = 0, time.perf_counter()
        while True:
            d = make_deframer(kind, timeout=None)
            got = 0
            for i in range(0, len(stream), chunk):
                got += len(d.feed(stream[i:i + chunk], 0.0))
            if got != frames or d.frames != frames:
                raise SystemExit(f"{kind}: {got} frames delivered, {frames} sent")
            done += len(stream)
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
        best = max(best, done / elapsed / 1e6)
    return round(best, 1)


def _crc_rate(seconds: float) -> float:
    buf = bytes(range(256)) * 4096
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        x25(buf)
        n += len(buf)
    return round(n / (time.perf_counter() - start) / 1e6, 1)


def measure(payload: int, chunk: int, seconds: float, repeat: int) -> dict:
    out = {f"{k}_mb_s": _rate(k, payload, chunk, seconds, repeat) for k in ("gfi", "hdlc", "lencrc")}
    out["crc_mb_s"] = _crc_rate(seconds)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--payload", type=int, default=1024, help="message bytes per frame (default 1024)")
    ap.add_argument("--chunk", type=int, default=65536, help="bytes per feed (default 65536)")
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print JSON only (the default output form)")
    ap.add_argument("--this-backend-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.payload > 2000:
        ap.error("--payload at most 2000 (the HDLC frame length field is 11 bits)")
    mine = measure(args.payload, args.chunk, args.seconds, args.repeat)
    if args.this_backend_only:
        print(json.dumps(mine))
        return 0
    backends = {fast.backend(): mine}
    if fast.backend() == "c":
        cmd = [sys.executable, str(Path(__file__).resolve()), "--payload", str(args.payload), "--chunk",
               str(args.chunk), "--seconds", str(args.seconds), "--repeat", str(args.repeat), "--this-backend-only"]
        env = dict(os.environ, GBCS_EMU_PURE_PYTHON="1")
        backends["python"] = json.loads(subprocess.run(cmd, env=env, capture_output=True, text=True,
                                                       check=True).stdout)
    out = {"payload": args.payload, "chunk": args.chunk, "backend": fast.backend(),
           "backends": dict(sorted(backends.items(), key=lambda kv: kv[0] != "python"))}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
