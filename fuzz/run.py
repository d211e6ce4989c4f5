"""Run one fuzz target under atheris (libFuzzer), seeded from the project's own corpus.

    python -m fuzz.run gbcs_message -atheris_runs=1000000 -timeout=5 -rss_limit_mb=2048 [corpus dirs...]
    python -m fuzz.run --list
    python -m fuzz.run gbcs_message --replay crash-1234     # re-run one input, with its traceback

Extra arguments go to libFuzzer. Without corpus directories the seeds of `fuzz.seeds.corpus` are written to
`fuzz/corpus/<target>/` (made on first use by `fuzz/make_corpus.py`) and that folder is used and grown.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv: list[str]) -> int:
    from fuzz.targets import TARGETS, run_one
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 2
    if argv[0] == "--list":
        print("\n".join(TARGETS))
        return 0
    name, rest = argv[0], argv[1:]
    if name not in TARGETS:
        print(f"unknown target {name!r}; --list shows them", file=sys.stderr)
        return 2
    if rest[:1] == ["--replay"]:
        for p in rest[1:]:
            run_one(name, Path(p).read_bytes(), budget=0)
            print(f"{p}: clean")
        return 0
    import atheris
    from fuzz.make_corpus import write_corpus
    if not any(not a.startswith("-") for a in rest):
        d = ROOT / "fuzz" / "corpus" / name
        if not d.is_dir() or not any(d.iterdir()):
            write_corpus(ROOT / "fuzz" / "corpus", [name])
        rest = rest + [str(d)]
    target = TARGETS[name]
    from protocols.errors import GbcsEmuError
    # build the harness and warm the imports before libFuzzer starts counting
    for seed in (b"", b"\x00" * 8):
        try:
            target(seed)
        except GbcsEmuError:
            pass

    def one(data: bytes) -> None:
        try:
            target(data)
        except GbcsEmuError:
            pass

    atheris.instrument_all()          # every module the warm-up loaded (protocols, firmware_emu, ...)
    atheris.Setup([sys.argv[0] + " " + name] + rest, one)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
