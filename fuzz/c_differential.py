#!/usr/bin/env python3
"""Differential fuzz of the C codec (`protocols._fast`) against the pure-Python paths: no crash, no leak, no
disagreement (issue 8).

Each input goes through the whole message decode, A-XDR Data, the DLMS and GBZ payload decoders, the GFI and
HDLC deframers and CRC-16/X.25 twice, with the C backend and inside `fast.pure_python()`, and the outcomes
(JSON text with key order, or DecodeError message/field/offset) must be equal. A crash of the C code kills the
process (atheris and the loop report it). Leaks: RSS and tracemalloc are sampled every --sample inputs after a
warm-up; growth past --max-growth-mb fails the run.

    python fuzz/c_differential.py --iterations 200000            # seeded mutation loop over the RTDS + seeds
    python fuzz/c_differential.py --atheris -atheris_runs=200000 fuzz/corpus/gbcs_message   # coverage-guided
                                                                  # (pip install atheris; corpus dirs optional)

Exit status 0 and a JSON summary on success; 1 with the first disagreeing input (hex) otherwise.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from protocols import fast  # noqa: E402
from protocols.dlms import apdu, axdr  # noqa: E402
from protocols.errors import DecodeError, EncodeError  # noqa: E402
from protocols.framing import crc, gfi, hdlc  # noqa: E402
from protocols.gbcs import message  # noqa: E402
from protocols.zigbee import gbz  # noqa: E402

DEFAULT_RTDS = ROOT.parent / "shared" / "rtds" / "RTDS-4.5.0"


class Disagreement(AssertionError):
    pass


def outcome(fn, *a, **kw):
    """A comparable outcome of a decoder call: the JSON text of the result (key order included), bytes as hex, or
    the error's parts (message, field, offset). tests/test_c_backend.py compares the backends with it too."""
    try:
        got = fn(*a, **kw)
    except DecodeError as e:
        return ("DecodeError", e.message, e.field, e.offset)
    except EncodeError as e:
        return ("EncodeError", e.message, e.field)
    if isinstance(got, tuple):
        return json.dumps([x.hex() if isinstance(x, bytes) else x for x in got])
    if isinstance(got, bytes):
        return got.hex()
    return json.dumps(got)


def _axdr(data: bytes):
    return axdr.decode_data(data)


def _frames(kind: str, data: bytes):
    cls = gfi.GfiDeframer if kind == "gfi" else hdlc.HdlcDeframer
    d = cls(max_frame=4200, timeout=1.0)
    ev = d.feed(data[: len(data) // 2], 0.0) + d.feed(data[len(data) // 2:], 0.5) + d.poll(9.0)
    return [repr(e) for e in ev], d.counters()


def _targets(data: bytes):
    yield "decode", message.decode, (data,), {}
    yield "split", message.split_payload, (data,), {}
    yield "axdr", _axdr, (data,), {}
    yield "dlms", apdu.decode_apdu, (b"\xD9" + data,), {"base": 3}
    yield "dlms-da", apdu.decode_apdu, (b"\xDA" + data,), {}
    yield "gbz", gbz.decode_gbz, (b"\x01\x09" + data,), {}
    yield "gbz-alert", gbz.decode_gbz, (b"\x01\x09" + data,), {"cra_flag": "alert"}
    yield "gfi", _frames, ("gfi", b"GBCS:DATA#0:" + data), {}
    yield "hdlc", _frames, ("hdlc", b"\x7e\xa0" + data), {}


def check_one(data: bytes) -> None:
    """Raise Disagreement when the backends disagree on `data` (a C crash never returns)."""
    for name, fn, a, kw in _targets(data):
        c = outcome(fn, *a, **kw)
        with fast.pure_python():
            p = outcome(fn, *a, **kw)
        if c != p:
            raise Disagreement(f"{name}: C {c!r} != Python {p!r}")
    if fast.C is not None and fast.C.crc16_x25(data) != _PY_X25(data):
        raise Disagreement("crc16_x25")


def _seeds(directory: Path) -> list[bytes]:
    seeds = []
    if directory.is_dir():
        for p in sorted(directory.rglob("*.HEX")):
            try:
                seeds.append(bytes.fromhex(p.read_text().strip()))
            except ValueError:
                continue
    # payload-level seeds, so the payload decoders see more than the envelope
    for raw in list(seeds):
        try:
            _, content, _ = message.split_payload(raw)
        except DecodeError:
            continue
        if content:
            seeds.append(content[1:] if content[0] in (0xD9, 0xDA) else content[2:] if content[:2] == b"\x01\x09"
                         else content)
    seeds += [bytes.fromhex(h) for h in ("0203090412345678110506000000FF", "01020F01100002", "00", "13020211"
                                         "0206000812", "")]
    return seeds


def _mutate(rng: random.Random, raw: bytes) -> bytes:
    b = bytearray(raw)
    for _ in range(rng.randint(1, 6)):
        op = rng.random()
        if not b or op < 0.1:
            b += bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op < 0.45:
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        elif op < 0.6:
            b[rng.randrange(len(b))] = rng.choice((0, 0x7F, 0x80, 0x81, 0x82, 0xFF, rng.randrange(256)))
        elif op < 0.75:
            del b[rng.randrange(len(b)):]
        elif op < 0.9:
            b.insert(rng.randrange(len(b) + 1), rng.randrange(256))
        else:
            i = rng.randrange(len(b))
            b[i:i] = b[i:i + rng.randint(1, 16)]
    return bytes(b)


def _rss_kb() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4
    except OSError:                                   # pragma: no cover - not Linux
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_loop(iterations: int, seed: int, directory: Path, sample: int, max_growth_mb: float) -> dict:
    rng = random.Random(seed)
    seeds = _seeds(directory)
    warm = min(iterations // 5, 20000)
    base_rss = base_traced = None
    samples = []
    tracemalloc.start()
    for i in range(iterations):
        data = _mutate(rng, rng.choice(seeds)) if seeds and rng.random() < 0.9 else rng.randbytes(rng.randint(0, 64))
        try:
            check_one(data)
        except Disagreement as e:
            return {"ok": False, "iteration": i, "input": data.hex(), "error": str(e)}
        if i == warm:
            base_rss, base_traced = _rss_kb(), tracemalloc.get_traced_memory()[0]
        elif i > warm and i % sample == 0:
            samples.append((_rss_kb() - base_rss, tracemalloc.get_traced_memory()[0] - base_traced))
    tracemalloc.stop()
    rss_growth = max((s[0] for s in samples), default=0) / 1024
    traced_growth = max((s[1] for s in samples), default=0) / 2**20
    ok = rss_growth <= max_growth_mb
    return {"ok": ok, "iterations": iterations, "seeds": len(seeds), "backend": fast.backend(),
            "rss_growth_mb": round(rss_growth, 2), "traced_growth_mb": round(traced_growth, 2),
            "max_growth_mb": max_growth_mb}


def run_atheris(argv: list[str]) -> None:  # pragma: no cover - needs atheris
    import atheris

    def one(data: bytes) -> None:
        check_one(data)

    atheris.instrument_all()            # coverage feedback from the Python paths both backends run through
    atheris.Setup([sys.argv[0]] + argv, one)
    atheris.Fuzz()


_PY_X25 = None


def main(argv=None) -> int:
    global _PY_X25
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rtds", type=Path, default=DEFAULT_RTDS)
    ap.add_argument("--sample", type=int, default=1000, help="leak sample interval (inputs)")
    ap.add_argument("--max-growth-mb", type=float, default=8.0, help="RSS growth allowed after warm-up")
    ap.add_argument("--atheris", action="store_true", help="coverage-guided run; other args go to libFuzzer")
    args, rest = ap.parse_known_args(argv)
    if fast.C is None:
        print(json.dumps({"ok": False, "error": "C codec backend not active (built? GBCS_EMU_PURE_PYTHON?)"}))
        return 1
    import crcmod.predefined
    _PY_X25 = crcmod.predefined.mkPredefinedCrcFun("x-25")
    assert crc.x25 is fast.C.crc16_x25
    if args.atheris:
        run_atheris(rest)
        return 0
    out = run_loop(args.iterations, args.seed, args.rtds, args.sample, args.max_growth_mb)
    print(json.dumps(out))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
