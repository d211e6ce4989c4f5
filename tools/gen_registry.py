#!/usr/bin/env python3
"""Generate protocols/gbcs/registry.json from the GBCS spec files, so no table is typed by hand.

Sources, in order of authority:
  1. gbcs-use-cases.json (the GBCS use-case appendix as data): name, code, title, message type, criticality,
     future dating, replay protection, roles, target devices, content type (DLMS COSEM / ZCL/ZSE);
  2. service-request-use-cases.htm: the DCC service-request list (codes of use cases that the appendix only
     points to, e.g. CS06 0x0012);
  3. gbcs-mapping-table.json: message types and titles by use-case name;
  4. gbcs-brief.md §1.9: codes seen on the wire (CS02b variants, ECS46d, alerts 0x1000...).
The only knowledge added here is the payload family of use cases the appendix has no content table for:
GBCS carries CS02-CS09, CCS08, GCS28, GCS59, GCS62 and their alerts in ASN.1 DER (brief §2.3, §6).

Usage: python tools/gen_registry.py [--spec DIR] [--brief FILE] [--check]
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "protocols" / "gbcs" / "registry.json"
DEFAULT_SPEC = ROOT.parent / "shared" / "docs" / "spec"
DEFAULT_BRIEF = ROOT.parent / "shared" / "docs" / "gbcs-brief.md"

CONTENT_FAMILY = {"DLMS COSEM": "dlms", "ZCL/ZSE": "gbz"}
ASN1_NAMES = re.compile(r"^(CS0[2-9]|CCS08|GCS28|GCS59|GCS62)")
PREFIX_DEVICES = {"ECS": ("ESME",), "GCS": ("GSME",), "CCS": ("CHF",), "DBCH": ("CHF",), "PCS": ("GSME",),
                  "PECS": ("ESME",), "HECS": ("ESME",)}
# Alert message codes (GBCS 7, 9.2.2.6, 10, 11, 16): name, title, families, devices. The codes and titles are
# the brief's (§1.9, §6); the families follow from who raises them.
ALERT_FAMILIES = {
    0x1000: ("dlms", "gbz"), 0x1001: ("dlms", "gbz"), 0x00CA: ("asn1",), 0x00CB: ("asn1",), 0x00CC: ("dlms",),
    0x00CD: ("gbz",), 0x00CE: ("dlms",), 0x00CF: ("gbz",), 0x00D5: ("dlms",), 0x00F0: ("dlms",), 0x00F2: ("gbz",),
    0x0124: ("asn1",), 0x0128: ("asn1",), 0x012B: ("asn1",), 0x00B2: ("asn1",),
}

# Names the DCC test data uses for alert-only message codes (RTDS directory names NA_GCA, NA_FDRA-DLMS...).
ALERT_NAMES = {0x1000: "GCA", 0x1001: "GNCA", 0x00CE: "FDRA-DLMS", 0x00CF: "FDRA-ZigBee", 0x00F0: "MIIWA-DLMS",
               0x00F2: "MIIWA-ZigBee", 0x00CC: "FDA-DLMS", 0x00CD: "FDA-ZigBee", 0x00CA: "FDA-Firmware",
               0x00CB: "FDA-CS02b", 0x00D5: "FTDA"}

# Criticality of alert-only codes (brief §1.5: which alerts travel signed, which MAC'd) and who raises them.
ALERT_CLASS = {0x1000: (True, ("ESME", "GSME")), 0x1001: (False, ("ESME", "GSME")), 0x00CA: (True, ("ESME", "GSME")),
               0x00CB: (True, ("ESME", "GSME")), 0x00CC: (True, ("ESME",)), 0x00CD: (True, ("GSME",)),
               0x00CE: (True, ("ESME",)), 0x00CF: (True, ("GSME",)), 0x00D5: (True, ("CHF",)),
               0x00F0: (False, ("ESME",)), 0x00F2: (False, ("GSME",))}


class _Rows(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows: list[list[str]] = []
        self._row: list[str] | None = None
        self._cell: str | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self._row = []
        elif tag == "td":
            self._cell = ""

    def handle_endtag(self, tag):
        if tag == "td" and self._row is not None and self._cell is not None:
            self._row.append(" ".join(self._cell.split()))
            self._cell = None
        elif tag == "tr" and self._row:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def service_requests(path: Path) -> list[tuple[int, str, str, str]]:
    """(code, name, title, service reference) rows of the DCC service-request list."""
    p = _Rows()
    p.feed(path.read_text(encoding="cp1252"))
    out = []
    for row in p.rows:
        if len(row) >= 4 and re.fullmatch(r"0x[0-9A-Fa-f]{4}", row[0]):
            name, _, title = row[3].partition(" ")
            out.append((int(row[0], 16), name, title.strip(), row[1] or None))
    return out


def brief_codes(path: Path) -> list[tuple[str, int, str]]:
    """(name, code, note) pairs of the brief's §1.9 list."""
    text = path.read_text()
    m = re.search(r"### 1\.9.*?\n(.*?)\nCriticality", text, re.S)
    if not m:
        return []
    out: list[tuple[str, int, str]] = []
    for bullet in re.split(r"\n\* |\. (?=\*\*Alerts\*\*)", m.group(1)):
        head = re.match(r"\*\*(\w+)\*\*:\s*(.*)", bullet.strip(), re.S)
        if not head:
            continue
        prefix, body = head.group(1), " ".join(head.group(2).split())
        if prefix == "Alerts":
            # "00CE/00CF firmware distribution receipt (ESME/GSME)" names two codes
            for a, b, note, da, db in re.findall(r"([0-9A-F]{4})/([0-9A-F]{4}) ([^,(]+)\((\w+)/(\w+)\)", body):
                out.append(("", int(a, 16), f"{note.strip()} ({da})"))
                out.append(("", int(b, 16), f"{note.strip()} ({db})"))
            body = re.sub(r"[0-9A-F]{4}/[0-9A-F]{4} [^,(]+\(\w+/\w+\)", "", body)
            for code, note in re.findall(r"(?:0x)?([0-9A-F]{4})\s+([^,]+?)(?=,|$)", body.replace("(", "").replace(")", "")):
                out.append(("", int(code, 16), note.strip()))
            continue
        # CS02b variants: "02b: supplierBySupplier=0102 NOByNO=0103 ..."; CS02g: "BySupplier command=0126*"
        for group in re.finditer(r"(\w+):\s*((?:[\w ]+=[0-9A-F]{4}\*?,?\s*)+)", body):
            base = group.group(1)
            for variant, code in re.findall(r"([\w ]+?)=([0-9A-F]{4})", group.group(2)):
                variant = variant.strip()
                name = f"{prefix}{base}" + ("" if variant.startswith(("both", "command")) else
                                             variant[0].upper() + variant.split()[0][1:])
                out.append((name, int(code, 16), variant))
            body = body.replace(group.group(0), " ")
        for item, code in re.findall(r"(\S+?)=([0-9A-F]{4})\*?", body):
            core = re.match(r"([0-9A-Za-z/]+)(?:\(([^)]*)\))?", item)
            ids, note = core.group(1), core.group(2) or ""
            for ident in ids.split("/"):
                out.append((f"{prefix}{ident}", int(code, 16), note))
    return out


#: Use cases the v4.0 appendix has no row for (newer GBCS versions) and the credential-replacement variants it
#: leaves to GBCS section 13: their classification as GBCS and DUIS define it. Every value here is a GBCS fact,
#: written down because no machine-readable source in ../shared carries it; `source` records "gbcs-override".
_C = {"message_type": "SME.C.C", "critical": True, "replay_protection": True}
_NC = {"message_type": "SME.C.NC", "critical": False, "replay_protection": False}
_SUP, _SUP_NO = ["Supplier"], ["Supplier", "Network Operator"]
OVERRIDES: dict[str, dict] = {
    "ECS08": {**_C, "future_dated_capable": True, "roles": _SUP},
    "ECS26d": {**_NC, "roles": _SUP_NO}, "ECS26e": {**_NC, "roles": _SUP_NO},
    "ECS26i": {**_NC, "roles": _SUP_NO, "target_devices": ["CHF"]},  # "CHF identity": the hub answers "ECS35f": {**_NC, "roles": _SUP_NO}, "ECS61a": {**_NC, "roles": _SUP},
    "ECS30": {**_C, "future_dated_capable": False, "roles": _SUP},
    "ECS46c": {**_C, "future_dated_capable": True, "roles": _SUP},
    "ECS47": {**_C, "future_dated_capable": False, "roles": _SUP},
    "GCS21d": {**_NC, "roles": _SUP_NO}, "GCS21e": {**_NC, "roles": _SUP_NO},
    "GCS24": {**_C, "future_dated_capable": False, "roles": _SUP},
    # CS02a and the MAC variant of CS02f are MAC-only; the CS02b/CS02g replacements are critical (the device
    # signs its response), authorised by the signature of the party whose anchor changes (ACB by ACB: its MAC).
    "CS02a": {**_NC, "roles": []}, "CS02f": {**_NC, "roles": []},
    **{n: {**_C, "roles": []} for n in (
        "CS02bSupplierBySupplier", "CS02bNOByNO", "CS02bACBByACB", "CS02bWPByWP", "CS02bTransCoSByTransCoS",
        "CS02bSupplierByTransCoS", "CS02bAnyExceptAbnormalRootByRecovery", "CS02bAnyByContingency")},
    "CS02b": {**_C, "roles": []}, "CS02g": {**_C, "future_dated_capable": True, "roles": []},
    "CCS08": {"message_type": "SME.A.C", "critical": True},
    # ECS100 is the ESME's alert 8F85 ("unsupported command on behalf of a remote party"), signed (brief §1.5).
    "ECS100": {"message_type": "SME.A.C", "critical": True, "replay_protection": None, "roles": None},
    "CS02gBySupplier": {**_C, "future_dated_capable": True, "roles": ["Supplier"]},
    "CS02gByLoadController": {**_C, "future_dated_capable": True, "roles": ["Load Controller"]},
    "CS08": {**_NC, "roles": []},
    # the GPF's device log backup (GCS62 alert) and restore (GCS59), though named "GCS"
    "GCS59": {"target_devices": ["GPF"]}, "GCS62": {"target_devices": ["GPF"]},
}


def generate(spec: Path, brief: Path) -> dict:
    ucs = json.loads((spec / "gbcs-use-cases.json").read_text())
    mapping = json.loads((spec / "gbcs-mapping-table.json").read_text())
    by_title = {row["Use Case Title"].split()[0]: row for row in mapping}
    entries: dict[tuple[str, int], dict] = {}

    def entry(name: str, code: int, source: str, title: str = "") -> dict:
        e = entries.get((name, code))
        if e is None:
            e = entries[(name, code)] = {"code": f"0x{code:04X}", "name": name, "title": title, "message_type": None,
                                 "critical": None, "future_dated_capable": None, "replay_protection": None,
                                 "target_devices": [], "payload_families": [], "roles": None,
                                 "service_reference": None, "sources": []}
        if source not in e["sources"]:
            e["sources"].append(source)
        if title and not e["title"]:
            e["title"] = title
        return e

    for uc in ucs:
        if uc.get("message_code") is None:
            continue
        e = entry(uc["name"], uc["message_code"], "gbcs-use-cases", uc["title"])
        e.update(message_type=uc["message_type"], critical=uc["critical"],
                 future_dated_capable=uc["future_dated_capable"], replay_protection=uc["replay_protection"],
                 roles=uc["roles"], service_reference=uc["service_reference"])
        for t in uc["targets"]:
            if t["device"] and t["device"] not in e["target_devices"]:
                e["target_devices"].append(t["device"])
            fam = CONTENT_FAMILY.get(t["content_type"])
            if fam and fam not in e["payload_families"]:
                e["payload_families"].append(fam)
    for code, name, title, sr in service_requests(spec / "service-request-use-cases.htm"):
        e = entry(name, code, "service-requests", title)
        e["service_reference"] = e["service_reference"] or sr
    for name, code, note in brief_codes(brief):
        if name:
            entry(name, code, "gbcs-brief")
            continue
        e = entry(ALERT_NAMES.get(code, f"ALERT_{code:04X}"), code, "gbcs-brief", note.rstrip("."))
        critical, devices = ALERT_CLASS.get(code, (None, ()))
        e.update(critical=critical, message_type=None if critical is None else "SME.A.C" if critical else "SME.A.NC",
                 target_devices=list(devices))
    # Variants the brief names (CS02bSupplierBySupplier, GCS60a) inherit from their base use case.
    named = {e["name"]: e for e in entries.values() if e["sources"] != ["gbcs-brief"]}
    for e in entries.values():
        if e["sources"] == ["gbcs-brief"] and not e["title"]:
            base = max((n for n in named if e["name"].startswith(n) and n != e["name"]), key=len, default=None)
            if base:
                b = named[base]
                for k in ("title", "message_type", "critical", "future_dated_capable", "replay_protection",
                          "roles", "service_reference", "target_devices", "payload_families"):
                    e[k] = b[k] if not isinstance(b[k], list) else list(b[k])
                e["title"] = f"{b['title']} ({e['name'][len(base):]})" if b["title"] else ""
    for e in entries.values():
        row = by_title.get(e["name"])
        if row is not None:
            e["sources"].append("mapping-table")
            e["title"] = e["title"] or " ".join(row["Use Case Title"].split()[1:])
            if e["message_type"] is None:
                e["message_type"] = row["Message Type"]
                mt = row["Message Type"]
                e["critical"] = True if mt.startswith(("SME.C.C", "SME.A.C")) else \
                    False if mt.startswith(("SME.C.NC", "SME.A.NC")) else None
        code = int(e["code"], 16)
        if not e["payload_families"]:
            if code in ALERT_FAMILIES:
                e["payload_families"] = list(ALERT_FAMILIES[code])
            elif ASN1_NAMES.match(e["name"]):
                e["payload_families"] = ["asn1"]
            elif e["name"].startswith(("ECS", "CCS", "DBCH")):
                e["payload_families"] = ["dlms"]
            elif e["name"].startswith("GCS"):
                e["payload_families"] = ["gbz"]
        if not e["target_devices"]:
            prefix = re.match(r"[A-Z]+", e["name"]).group(0)
            e["target_devices"] = list(PREFIX_DEVICES.get(prefix, ()))
    for e in entries.values():
        override = OVERRIDES.get(e["name"])
        if override is not None:
            for k, v in override.items():
                e[k] = list(v) if isinstance(v, list) else v
            e["sources"].append("gbcs-override")
    # One primary name per code: the appendix's name first, then the service list, then the brief.
    rank = {"gbcs-use-cases": 0, "service-requests": 1, "mapping-table": 2, "gbcs-brief": 3, "gbcs-override": 4}
    ordered = sorted(entries.values(), key=lambda e: (int(e["code"], 16), min(rank[s] for s in e["sources"]),
                                                      e["name"]))
    aliases = {}
    return {"generated_by": "tools/gen_registry.py", "entries": ordered, "aliases": aliases}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    ap.add_argument("--brief", type=Path, default=DEFAULT_BRIEF)
    ap.add_argument("--check", action="store_true", help="exit 1 if registry.json differs from a fresh run")
    args = ap.parse_args(argv)
    text = json.dumps(generate(args.spec, args.brief), indent=1) + "\n"
    if args.check:
        same = OUT.exists() and OUT.read_text() == text
        print("registry.json is up to date" if same else "registry.json is stale: run tools/gen_registry.py")
        return 0 if same else 1
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
