#!/usr/bin/env python3
"""Generate firmware_emu/core/cosem_catalogue.json from the GBCS use-case appendix, so no COSEM table is typed
by hand.

Source: gbcs-use-cases.json (the appendix as data, see ../shared/docs/spec/README.md). Every row of every
target whose content type is "DLMS COSEM" becomes a member of the entry `class_id/obis/kind/index` of its
device type (ESME, CHF). Targets that name no device (the alert use cases ECS68, CS14, DBCH09...) go to the
device types whose other use cases already use the same COSEM object, else to the device of their name's
prefix (ECS -> ESME, CCS/DBCH -> CHF). Rows that name no object (`Not specified`: ECS80, ECS101, ECS102)
cannot be keyed and are left out.

Rows repeated across use cases are merged into one member (path, DLMS type, constant) that lists the use cases
naming it. Members keep the spec's row order, which is the field order of the structures they describe; when
use cases list different subsets of an attribute's rows, the longest list sets the order and the others
insert their extra rows after their predecessor. `derived` / `reason` come from
`firmware_emu.core.catalogue.derive`: whether the spec gives the whole value or the device must supply it.

Usage: python tools/gen_cosem_catalogue.py [--spec DIR] [--check]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from firmware_emu.core.catalogue import DEVICE_TYPES, Entry, Member, derive  # noqa: E402

OUT = ROOT / "firmware_emu" / "core" / "cosem_catalogue.json"
DEFAULT_SPEC = ROOT.parent / "shared" / "docs" / "spec"
PREFIX_DEVICE = {"ECS": "ESME", "PECS": "ESME", "HECS": "ESME", "CCS": "CHF", "DBCH": "CHF"}


def _prefix_device(name: str) -> str | None:
    for prefix in sorted(PREFIX_DEVICE, key=len, reverse=True):
        if name.startswith(prefix):
            return PREFIX_DEVICE[prefix]
    return None


def _merge_order(lists: list[list[tuple]]) -> list[tuple]:
    merged: list[tuple] = []
    for rows in sorted(lists, key=len, reverse=True):   # stable: file order among equals
        prev = None
        for m in rows:
            if m not in merged:
                merged.insert(merged.index(prev) + 1 if prev is not None else 0, m)
            prev = m
    return merged


def _obis_key(obis: str) -> tuple[int, ...]:
    a, rest = obis.split("-", 1)
    b, rest = rest.split(":", 1)
    return (int(a), int(b), *(int(x) for x in rest.split(".")))


def generate(spec: Path) -> dict:
    ucs = json.loads((spec / "gbcs-use-cases.json").read_text())
    # (device, use case, rows) of every DLMS COSEM target
    targets: list[tuple[str | None, str, list[dict]]] = []
    for uc in ucs:
        for t in uc["targets"]:
            if t["content_type"] != "DLMS COSEM":
                continue
            rows = [r for r in (t["command"] or []) + (t["alerts"] or [])
                    if r["class_id"] is not None and r["obis"] is not None and r["index"] is not None]
            if rows:
                targets.append((t["device"], uc["name"], rows))
    objects_of: dict[str, set] = {d: set() for d in DEVICE_TYPES}
    for device, _name, rows in targets:
        if device in objects_of:
            objects_of[device].update((r["class_id"], r["obis"]) for r in rows)

    # device -> key -> {"lists": [[member id...] per use case], "rows": {member id: [rows]}, "ucs": [...]}
    acc: dict[str, dict[tuple, dict]] = {d: {} for d in DEVICE_TYPES}
    for device, name, rows in targets:
        if device is not None:
            devices = [device] if device in acc else []
        else:
            devices = [d for d in DEVICE_TYPES if {(r["class_id"], r["obis"]) for r in rows} & objects_of[d]]
            if not devices and _prefix_device(name):
                devices = [_prefix_device(name)]
        for dev in devices:
            per_key: dict[tuple, list] = {}
            for r in sorted(rows, key=lambda r: r["position"]):
                key = (r["class_id"], r["obis"], r["kind"], r["index"])
                per_key.setdefault(key, []).append(r)
            for key, krows in per_key.items():
                a = acc[dev].setdefault(key, {"lists": [], "rows": {}, "ucs": set(), "names": []})
                ids = []
                for r in krows:
                    const = None if r["constant"] in (None, "-") else r["constant"]
                    mid = (r["member"], r["dlms_type"], const)
                    if mid not in ids:
                        ids.append(mid)
                    a["rows"].setdefault(mid, []).append((name, r))
                    if r["name"] not in a["names"]:
                        a["names"].append(r["name"])
                a["lists"].append(ids)
                a["ucs"].add(name)

    out: dict = {"generated_by": "tools/gen_cosem_catalogue.py", "source": "gbcs-use-cases.json",
                 "devices": {}}
    for dev in DEVICE_TYPES:
        entries = {}
        for key in sorted(acc[dev], key=lambda k: (_obis_key(k[1]), k[0], k[2], k[3])):
            a = acc[dev][key]
            members = []
            for mid in _merge_order(a["lists"]):
                rs = a["rows"][mid]
                names = tuple(dict.fromkeys(r["name"] for _, r in rs))
                notes = tuple(dict.fromkeys(r["notes"] for _, r in rs if r["notes"] not in (None, "-")))
                members.append(Member(mid[0], mid[1], mid[2], names, notes, any(r["sensitive"] for _, r in rs),
                                      tuple(sorted({n for n, _ in rs}))))
            e = Entry(key[0], key[1], key[2], key[3], a["names"][0], tuple(members),
                      any(m.sensitive for m in members), tuple(sorted(a["ucs"])),
                      selective_access=any(m.selection for m in members))
            derived, reason = derive(e)
            e = Entry(e.class_id, e.obis, e.kind, e.index, e.name, e.members, e.sensitive, e.use_cases, derived,
                      reason, e.selective_access)
            entries[e.key] = e.as_dict()
        out["devices"][dev] = entries
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    ap.add_argument("--check", action="store_true", help="exit 1 if cosem_catalogue.json differs from a fresh run")
    args = ap.parse_args(argv)
    text = json.dumps(generate(args.spec), indent=1) + "\n"
    if args.check:
        same = OUT.exists() and OUT.read_text() == text
        print("cosem_catalogue.json is up to date" if same else
              "cosem_catalogue.json is stale: run tools/gen_cosem_catalogue.py")
        return 0 if same else 1
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
