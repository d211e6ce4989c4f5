#!/usr/bin/env python3
"""Write configs/examples/*.HEX from the example JSON messages beside them (our own EUIs and values, no RTDS).

The MACs and signatures of these examples are placeholders: they show the codec, not the security layer.
`tests/test_examples.py` checks each HEX is still the encoding of its JSON.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from protocols.gbcs.message import encode  # noqa: E402

EXAMPLES = ROOT / "configs" / "examples"


def main() -> int:
    for src in sorted(EXAMPLES.glob("*.json")):
        raw = encode(json.loads(src.read_text()))
        src.with_suffix(".HEX").write_text(raw.hex().upper() + "\n")
        print(f"{src.with_suffix('.HEX').name}: {len(raw)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
