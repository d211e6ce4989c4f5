#!/usr/bin/env python3
"""Compare the type trees of the catalogue's default values with the get results of the RTDS ESME responses.

For every `*RESPONSE*.HEX` below DIR sent by an ESME (originator 00DB1234567890A0 or ...A6) whose COMMAND
(same file name, RESPONSE -> COMMAND) is a DLMS Access-Request with get / get-with-selection specifications,
each successful get result is compared, by type tree (types recursively; arrays by element types, not by
count), with `prototype(entry)`: the catalogue's `default_value` with one element in every array, so that
element types are compared too. Twin-element members (`[[TWIN_ELEMENT_ESME_ONLY]]`) are tried both ways.
Mismatches are printed, then `N attributes match, M differ, K missing` (an attribute counts once, by
class/OBIS/attribute; missing = not in the ESME catalogue or no type tree derivable).

This is a developer script: it reads the RTDS, it never copies anything from it.

Usage: python tools/check_cosem_defaults.py [DIR] [--verbose]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from firmware_emu.core.catalogue import Catalogue, prototype, same_shape  # noqa: E402
from hil.conformance.codec import read_message_file  # noqa: E402
from protocols.errors import GbcsEmuError  # noqa: E402
from protocols.gbcs.message import decode  # noqa: E402

DEFAULT_DIR = ROOT.parent / "shared" / "rtds" / "RTDS-4.5.0"
ESME_IDS = {"00DB1234567890A0", "00DB1234567890A6"}


def get_results(directory: Path):
    """(file name, class_id, obis, attribute_id, result Data) of every successful ESME get result."""
    for resp in sorted(directory.rglob("*.HEX")):
        if "RESPONSE" not in resp.name:
            continue
        cmd = resp.with_name(resp.name.replace("RESPONSE", "COMMAND"))
        if not cmd.exists():
            continue
        try:
            r = decode(read_message_file(resp))
        except GbcsEmuError:
            continue
        gh = r.get("grouping_header") or {}
        ar = ((r.get("payload") or {}).get("dlms") or {}).get("access_response")
        if gh.get("originator") not in ESME_IDS or ar is None:
            continue
        try:
            c = decode(read_message_file(cmd))
        except GbcsEmuError:
            continue
        rq = ((c.get("payload") or {}).get("dlms") or {}).get("access_request")
        if rq is None:
            continue
        for spec, data, res in zip(rq["request_specifications"], ar["data"], ar["results"]):
            if spec["kind"] not in ("get", "get-with-selection") or res.get("result") != "success":
                continue
            d = spec["descriptor"]
            yield resp.name, d["class_id"], d["instance_id"], d["attribute_id"], data


def compare(entry, data) -> str | None:
    """None when `data` has the type tree of the entry's default (either twin variant), else the difference."""
    first = None
    for twin in (False, True):
        diff = same_shape(data, prototype(entry, twin=twin))
        if diff is None:
            return None
        first = first or diff
    return first


def check(directory: Path, out=print, verbose: bool = False) -> tuple[int, int, int]:
    cat = Catalogue.for_device("ESME")
    verdicts: dict[tuple, str] = {}     # attribute -> "match" | "differ" | "missing" (worst wins)
    rank = {"match": 0, "missing": 1, "differ": 2}
    for name, class_id, obis, attr, data in get_results(directory):
        key = (class_id, obis, attr)
        entry = cat.attribute(class_id, obis, attr)
        if entry is None:
            verdict, why = "missing", "not in the ESME catalogue"
        else:
            try:
                diff = compare(entry, data)
                verdict, why = ("match", "") if diff is None else ("differ", diff)
            except ValueError as e:
                verdict, why = "missing", f"no derivable type tree: {e}"
        if verdict != "match" and (verbose or key not in verdicts or rank[verdict] > rank[verdicts[key]]):
            out(f"{verdict:7} {class_id}/{obis}/{attr}  {name}: {why}")
        if key not in verdicts or rank[verdict] > rank[verdicts[key]]:
            verdicts[key] = verdict
    counts = [sum(v == k for v in verdicts.values()) for k in ("match", "differ", "missing")]
    out(f"{counts[0]} attributes match, {counts[1]} differ, {counts[2]} missing")
    return counts[0], counts[1], counts[2]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("directory", type=Path, nargs="?", default=DEFAULT_DIR)
    ap.add_argument("--verbose", action="store_true", help="print every mismatching file, not one per attribute")
    args = ap.parse_args(argv)
    if not args.directory.is_dir():
        print(f"no such directory: {args.directory}", file=sys.stderr)
        return 2
    _match, differ, _missing = check(args.directory, verbose=args.verbose)
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
