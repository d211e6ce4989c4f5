#!/usr/bin/env python3
"""Generate firmware_emu/core/zcl_catalogue.json from the GBCS use-case appendix, so no ZCL table is typed by hand.

Source: gbcs-use-cases.json (the appendix as data, see ../shared/docs/spec/README.md), ZCL/ZSE targets only.

* `attributes[device][cluster][attribute]`: every attribute a ZCL use case reads from that device type, with
  its ZCL type name (`protocols.zigbee.zcl.TYPE_BY_ID` naming) and whether the appendix marks it sensitive.
  The type comes from the GBZ template's "Attribute Data Type" byte of the Read Attributes Response (exact),
  else from the content row's "data type" text (UINT48, BITMAP8 (NIBBLES), ...).
* `use_cases[name]`: the devices it targets, its command components (cluster, command id, frame control) and
  the shape of the normal response from the template, one
  entry per response component kind, in template order: cluster, command id, frame control byte, whether the
  component is encrypted (extended header control bit 1) and whether it is an "alternate" response (Default
  Response instead of the command's own one). The ZCL server encrypts exactly the components the template
  marks encrypted.

Usage: python tools/gen_zcl_catalogue.py [--spec DIR] [--check]
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from protocols.zigbee.zcl import TYPE_BY_ID, TYPE_BY_NAME  # noqa: E402

OUT = ROOT / "firmware_emu" / "core" / "zcl_catalogue.json"
DEFAULT_SPEC = ROOT.parent / "shared" / "docs" / "spec"
ZCL_DEVICES = ("GSME", "GPF")

#: Row "data type" texts that are not a ZCL type name once lower-cased and stripped of their qualifier.
_TYPE_TEXT = {"octet string": "octet_string", "octet_string": "octet_string", "char string": "char_string",
              "utc time": "utc_time", "utctime": "utc_time", "boolean": "bool"}


def _hex(text: str | None) -> int | None:
    if not text:
        return None
    m = re.match(r"\s*0x([0-9A-Fa-f]+)", text)
    return int(m.group(1), 16) if m else None


def _ids(text: str) -> list[int]:
    """Attribute ids of a row: `0x0700`, a range `0x0700-0x0703` or a list `0x0100, 0x0102`."""
    out: list[int] = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*0x([0-9A-Fa-f]+)\s*(?:-\s*0x([0-9A-Fa-f]+))?\s*", part)
        if m is None:
            continue
        lo = int(m.group(1), 16)
        hi = int(m.group(2), 16) if m.group(2) else lo
        out += range(lo, hi + 1)
    return out


def _row_type(text: str | None) -> str | None:
    if not text or text.strip() in ("-", "--"):
        return None
    t = re.sub(r"\s*\(.*\)$", "", text.strip()).lower()
    t = _TYPE_TEXT.get(t, t)
    return t if t in TYPE_BY_NAME else None


def _template_components(entries: list[dict]) -> tuple[list[dict], dict[tuple[int, int], tuple[str, bool]]]:
    """(response component kinds, {(cluster, attribute): (type, sensitive)} of Read Attributes Responses)."""
    comps: list[dict] = []
    types: dict[tuple[int, int], tuple[str, bool]] = {}
    cur: dict | None = None
    attr: int | None = None
    for e in entries:
        if e.get("kind") != "field":
            continue
        el = e.get("element") or ""
        if el == "Extended Header Control Field":
            ctl = _hex(e.get("value"))
            cur = {"cluster": None, "command_id": None, "frame_control": None,
                   "encrypted": bool((ctl or 0) & 0x02), "alternate": e.get("alternate") is not None,
                   "command": e.get("zcl_command")}
            comps.append(cur)
        elif cur is not None and el == "Extended Header Cluster ID":
            cur["cluster"] = _hex(e.get("value"))
        elif cur is not None and el == "Frame control":
            v = (e.get("value") or "").strip()
            cur["frame_control"] = int(v[2:], 2) if v.startswith("0b") else _hex(v)
        elif cur is not None and el == "Command identifier":
            cur["command_id"] = _hex(e.get("value"))
        elif el.startswith("Attribute Identifier"):
            attr = _hex(e.get("value"))
        elif el.startswith("Attribute Data Type") and attr is not None and cur is not None:
            tid = _hex(e.get("value"))
            if tid in TYPE_BY_ID and cur["cluster"] is not None:
                types[(cur["cluster"], attr)] = (TYPE_BY_ID[tid].name, bool(e.get("sensitive")))
            attr = None
    return [c for c in comps if c["cluster"] is not None and c["command_id"] is not None], types


def generate(spec: Path) -> dict:
    ucs = json.loads((spec / "gbcs-use-cases.json").read_text())
    attributes: dict[str, dict[str, dict[str, dict]]] = {d: {} for d in ZCL_DEVICES}
    use_cases: dict[str, dict] = {}
    for uc in ucs:
        targets = [t for t in uc["targets"] if t.get("content_type") == "ZCL/ZSE"]
        if not targets:
            continue
        devices = sorted({t["device"] for t in targets if t["device"] in ZCL_DEVICES})
        tpl = uc.get("gbz_template") or {}
        responses, tpl_types = _template_components(tpl.get("normal_response") or [])
        commands, _ = _template_components(tpl.get("command") or [])
        use_cases[uc["name"]] = {"devices": devices, "commands": [
            {k: c[k] for k in ("cluster", "command_id", "frame_control")} for c in commands],
            "responses": responses}
        for t in targets:
            if t["device"] not in ZCL_DEVICES:
                continue
            for row in (t.get("command") or []) + (t.get("response") or []):
                if row.get("command_name") != "Read Attributes" or not row.get("attribute_id"):
                    continue
                cluster = row["cluster_id"]
                for attr in _ids(row["attribute_id"]):
                    _add(attributes[t["device"]], uc["name"], cluster, attr, row, tpl_types)
    for dev in attributes.values():
        for c in list(dev):
            dev[c] = dict(sorted(dev[c].items()))
        attributes_sorted = dict(sorted(dev.items()))
        dev.clear()
        dev.update(attributes_sorted)
    return {"source": "gbcs-use-cases.json (GBCS use-case appendix), ZCL/ZSE targets",
            "attributes": attributes, "use_cases": dict(sorted(use_cases.items()))}


def _add(dev: dict, uc_name: str, cluster: int, attr: int, row: dict, tpl_types: dict) -> None:
    typ, sensitive = tpl_types.get((cluster, attr), (_row_type(row.get("zcl_type")), False))
    sensitive = sensitive or bool(row.get("sensitive"))
    per = dev.setdefault(f"0x{cluster:04X}", {})
    key = f"0x{attr:04X}"
    old = per.get(key)
    use_cases = [uc_name]
    if old is not None:
        typ = old["type"] or typ
        sensitive = sensitive or old["sensitive"]
        use_cases = sorted(set(old["use_cases"]) | {uc_name})
    per[key] = {"name": row.get("attribute_name"), "type": typ, "sensitive": sensitive, "use_cases": use_cases}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    ap.add_argument("--check", action="store_true", help="fail when the committed JSON is stale")
    args = ap.parse_args(argv)
    text = json.dumps(generate(args.spec), indent=1) + "\n"
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is stale: run tools/gen_zcl_catalogue.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
