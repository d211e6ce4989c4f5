"""Write the seed corpora of every fuzz target (or the named ones) to `fuzz/corpus/<target>/<sha1>`.

    python fuzz/make_corpus.py [--out DIR] [TARGET ...]

The seeds come from the project itself (`fuzz.seeds`: appendix-built commands, the devices' own responses and
alerts, configs/examples); RTDS files are never read. The corpus is reproducible (a seeded test PKI).
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def write_corpus(out: Path, names: list[str] | None = None) -> dict[str, int]:
    from fuzz.seeds import corpus
    from fuzz.targets import TARGETS
    counts = {}
    for name in names or list(TARGETS):
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        seeds = corpus(name)
        for s in seeds:
            (d / hashlib.sha1(s).hexdigest()).write_bytes(s)
        counts[name] = len(seeds)
    return counts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "fuzz" / "corpus")
    ap.add_argument("targets", nargs="*")
    a = ap.parse_args(argv)
    for name, n in write_corpus(a.out, a.targets or None).items():
        print(f"{name}: {n} seeds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
