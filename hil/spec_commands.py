"""DLMS commands built from the GBCS use-case appendix alone (`gbcs-use-cases.json`), never from a sample message.

Two levels:

* **Codec level** (`value_for`, `dlms_use_cases`, `specs_from_rows`, `envelope`): one value per declared type and
  one specification per attribute or method, enough to prove every appendix use case encodes and decodes
  (`tests/test_spec_coverage.py`).
* **Device level** (`device_command_cases`, `access_request`, `command`): a command a real head end could send,
  typed as the appendix says, for a device to serve (`tests/test_esme_spec_coverage.py`; the CHF's CCS and
  DBCH use cases in `tests/test_hub_spec_coverage.py`).
* **GBZ level** (`gbz_command_cases`, `gbz_request`, `gbz_command`, `gbz_alternates`): a GBZ command from the
  use case's byte-level GBZ template and the codec's declarations (see the comment above `GbzTemplateComponent`)
  for the GSME and the GPF (`tests/test_gsme_spec_coverage.py`, `tests/test_hub_spec_coverage.py`,
  `tests/test_cs_spec_coverage.py`).

How a device-level command is assembled from one target's COSEM rows:

1. Rows are grouped per attribute or method (`class/OBIS/kind/index`), in appendix order; repeated rows merge.
2. Each group's value is the appendix type tree (`firmware_emu.core.catalogue` derivation over the use case's own
   rows): the `constant` column where it holds a value (a choice such as `0x01 (credit) or 0x02 (prepayment)`
   takes the option the use-case title names), else a sample of the declared type (`sample_constant`): non-zero
   integers, `true`, a valid DLMS date-time for `octet-string(12)` ("now" `00…00 8000 FF` for activation times,
   a validity interval around now, an end an hour after now), dates, times, patterned strings. Arrays hold
   their minimum count, at least one element.
3. Specifications: a **Read** use case gets its attributes (`get-with-selection` with a range descriptor when the
   rows carry `buffer:range_descriptor`); when it holds a Data protection (30) `get_protected_attributes`
   method, the attributes become that method's attribute descriptors instead, with the {from, to} date-time
   range its `octet-string(12)` rows describe for Profile generic buffers. An **Update** use case sets its
   attributes, except the `methodOutput` rows, which it reads back (ECS70). Methods are actions.

Field order is the appendix's row order (GBCS 19.2.1), except where the appendix lists a structure's fields out
of their Blue Book order (`FIELD_ORDER`: ECS70's validity interval lists its end before its start).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

__all__ = ["NULL", "spec_path", "load_use_cases", "value_for", "dlms_use_cases", "specs_from_rows", "envelope",
           "device_command_cases", "row_groups", "entry_from_rows", "sample_constant", "group_value",
           "AccessRequest", "access_request", "command", "protection_parameters", "FIELD_ORDER",
           "GbzTemplateComponent", "gbz_template_components", "gbz_sample", "gbz_component_payload", "GbzRequest",
           "gbz_request", "gbz_command_cases", "gbz_command", "gbz_alternates"]

NULL = {"type": "null-data", "value": None}


def spec_path() -> Path:
    """$GBCS_EMU_SPEC, else `../shared/docs/spec/gbcs-use-cases.json` beside the checkout."""
    env = os.environ.get("GBCS_EMU_SPEC")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "docs" / "spec" / "gbcs-use-cases.json"


@lru_cache(maxsize=4)
def _load(path: str) -> tuple:
    return tuple(json.loads(Path(path).read_text()))


def load_use_cases(path: Path | None = None) -> list[dict]:
    """The appendix's use-case records (a fresh list each time; the records are shared: do not modify)."""
    return list(_load(str(path or spec_path())))


# --------------------------------------------------------------------------------------------- codec level

_SIMPLE = {"double-long-unsigned": 7, "integer": -3, "long-unsigned": 500, "unsigned": 9, "double-long": -70000,
           "enum": 2, "boolean": True, "long": -500, "long64": -1, "long64-unsigned": 1}


def value_for(dlms_type: str | None) -> dict:
    """A Data value of the appendix's declared type (`octet-string(12)[[OPTIONAL]]` style)."""
    t = re.sub(r"\[\[.*?\]\]", "", dlms_type or "").strip()
    m = re.match(r"([a-z0-9-]+)(?:\((\d+)\))?", t)
    name, size = (m.group(1), int(m.group(2)) if m and m.group(2) else None) if m else ("", None)
    if name in _SIMPLE:
        return {"type": name, "value": _SIMPLE[name]}
    if name == "octet-string":
        return {"type": name, "value": "AB" * min(size or 4, 64)}
    if name in ("visible-string", "utf8-string"):
        return {"type": name, "value": "x" * min(size or 4, 64)}
    if name == "bit-string":
        n = min(size or 8, 512)
        return {"type": name, "value": {"length": n, "bits": "00" * ((n + 7) // 8)}}
    if name == "structure":
        return {"type": "structure", "value": []}
    return {"type": "null-data", "value": None}


def dlms_use_cases(ucs: list[dict] | None = None) -> list[tuple[dict, dict]]:
    """(use case, first DLMS COSEM target with command or alert rows) of every use case with a message code."""
    out = []
    for uc in ucs if ucs is not None else load_use_cases():
        for t in uc["targets"]:
            if t["content_type"] == "DLMS COSEM" and uc["message_code"] is not None and (t["command"] or t["alerts"]):
                out.append((uc, t))
                break
    return out


def specs_from_rows(rows, update: bool):
    """One specification per attribute/method of the rows (a flat structure of `value_for` values each)."""
    groups: dict[tuple, list] = {}
    for r in rows:
        if r["class_id"] is None or r["obis"] is None or r["index"] is None:
            continue
        groups.setdefault((r["class_id"], r["obis"], r["kind"], r["index"]), []).append(r)
    specs, data = [], []
    for (class_id, obis, kind, index), rs in groups.items():
        vals = [value_for(r["dlms_type"]) for r in rs]
        value = vals[0] if len(vals) == 1 else {"type": "structure", "value": vals}
        if kind == "method":
            specs.append({"kind": "action", "descriptor": {"class_id": class_id, "instance_id": obis,
                                                           "method_id": index}, "access_selection": None})
            data.append(value)
        else:
            specs.append({"kind": "set" if update else "get", "descriptor": {"class_id": class_id, "instance_id": obis,
                                                                            "attribute_id": index},
                          "access_selection": None})
            data.append(value if update else NULL)
    return specs, data


def envelope(uc, cra, payload, counter=4096):
    """A whole message in JSON form (security fields zeroed) around a DLMS payload."""
    return {"mac_header": {"security_header": {"security_control": 17, "invocation_counter": 0},
                           "mac": "00" * 12},
            "grouping_header": {"cra_flag": cra, "originator_counter": counter, "originator": "AA00000000000001",
                                "recipient": "BB00000000000001", "date_time": None,
                                "other_information": {"message_code": uc["message_code_hex"]}},
            "payload": {"dlms": payload}, "signature": ""}


# --------------------------------------------------------------------------------------------- device level

#: Structures whose appendix rows are out of their Blue Book field order: (class, kind, index) -> field names in
#: the order they go on the wire. ECS70 lists validity_interval_end before validity_interval_start; the Blue
#: Book (Clock method 5 preset_adjusting_time) and the RTDS ECS70Commission command put start first.
FIELD_ORDER: dict[tuple[int, str, int], tuple[str, ...]] = {
    (8, "method", 5): ("preset_time", "validity_interval_start", "validity_interval_end"),
}

_PROTECTED_READ = (30, "method", 1)       # Data protection get_protected_attributes
_SELECTION_PREFIXES = ("buffer:range_descriptor", "see notes column")
_SAMPLE_INTS = {"double-long-unsigned": 7000, "double-long": 7000, "long-unsigned": 500, "long": 500,
                "unsigned": 7, "integer": 3, "enum": 1, "long64": 7000, "long64-unsigned": 7000, "bcd": 1}
_SAMPLE_STRING = "GBCS"


def device_command_cases(device: str = "ESME", prefix: str = "ECS",
                         ucs: list[dict] | None = None) -> list[tuple[dict, dict]]:
    """(use case, target) of every command use case (not an `SME.A.*` alert) whose appendix target is `device`
    with DLMS COSEM content, for use-case names starting with `prefix`."""
    out = []
    for uc in ucs if ucs is not None else load_use_cases():
        if not uc["name"].startswith(prefix) or uc["message_code"] is None:
            continue
        if (uc["message_type"] or "").startswith("SME.A."):
            continue
        for t in uc["targets"]:
            if t["device"] == device and t["content_type"] == "DLMS COSEM" and t["command"]:
                out.append((uc, t))
                break
    return out


def row_groups(rows) -> list[tuple[tuple, list[dict]]]:
    """Rows per (class, OBIS, kind, index), groups and rows in appendix order, repeated rows merged."""
    groups: dict[tuple, list] = {}
    seen: set = set()
    for r in sorted(rows, key=lambda r: r["position"]):
        if r["class_id"] is None or r["obis"] is None or r["index"] is None:
            continue
        key = (r["class_id"], r["obis"], r["kind"], r["index"])
        ident = key + (r["member"], r["dlms_type"], r["constant"])
        if ident in seen:
            continue
        seen.add(ident)
        groups.setdefault(key, []).append(r)
    return list(groups.items())


def _is_selection(row) -> bool:
    return (row["member"] or "").startswith(_SELECTION_PREFIXES)


def _leaf_name(path: str | None) -> str:
    return (path or "").split(":", 1)[-1].split(".")[-1].lower()


def _choose(constant: str | None, title: str) -> str | None:
    """The constant cell, with a choice (`||0x01 (credit) or 0x02 (prepayment)`) narrowed to the option the
    use-case title names; "-" / empty -> None."""
    if constant is None or constant.strip() in ("-", ""):
        return None
    options = re.findall(r"0x([0-9A-Fa-f]+)\s*\(([^)]*)\)", constant)
    if len(options) > 1:
        for hexa, label in options:
            if label.strip().lower() in title.lower():
                return "0x" + hexa
        return "0x" + options[0][0]
    return constant


def sample_constant(path: str | None, dlms_type: str | None, now: float) -> str | None:
    """A value of `dlms_type` written the way the appendix's constant column writes one (`"7"`, `"0x…"`,
    `"0b…"`), so the catalogue derivation places it; None where the derivation's default is the sample (strings,
    null, the Blue Book EXCEPTIONAL types)."""
    from firmware_emu.core.catalogue import parse_dlms_type
    from firmware_emu.core.clock import DLMS_NOW, dlms_datetime
    base, size, _flags = parse_dlms_type(dlms_type)
    name = _leaf_name(path)
    if base in _SAMPLE_INTS:
        return str(_SAMPLE_INTS[base])
    if base == "boolean":
        return "1"
    if base == "bit-string":
        n = size or 8
        return "0b" + "1" + "0" * (n - 1)
    if base == "octet-string":
        n = size if size is not None else 4
        if n == 12:
            if "activat" in name:
                raw = DLMS_NOW
            elif name.endswith("_start"):
                raw = dlms_datetime(now - 3600)
            elif "end" in name:
                raw = dlms_datetime(now + 3600)
            else:
                raw = dlms_datetime(now)
        elif n == 5 and "date" in name:
            raw = dlms_datetime(now)[:5]
        elif n == 4 and "time" in name:
            raw = bytes.fromhex("07000000")       # 07:00:00.00
        else:
            raw = bytes([0xAB]) * n
        return "0x" + raw.hex().upper()
    return None


def entry_from_rows(key: tuple, rows: list[dict], *, title: str = "", now: float = 0.0, sample: bool = True):
    """A catalogue `Entry` of one group of the use case's rows (selection rows left out), constants from the
    appendix, sample constants elsewhere (`sample=False`: the appendix's constants only)."""
    from firmware_emu.core.catalogue import Entry, Member
    class_id, obis, kind, index = key
    rows = [r for r in rows if not _is_selection(r)]
    order = FIELD_ORDER.get((class_id, kind, index))
    if order:
        rank = {n: i for i, n in enumerate(order)}
        rows = sorted(rows, key=lambda r: rank.get(_leaf_name(r["member"]), -1))
    members = []
    for r in rows:
        const = _choose(r["constant"], title)
        if const is None and sample and r["dlms_type"] is not None:
            const = sample_constant(r["member"], r["dlms_type"], now)
        members.append(Member(r["member"], r["dlms_type"], const, (r["name"],)))
    return Entry(class_id, obis, kind, index, rows[0]["name"] if rows else "", tuple(members))


def _at_least_one(d: dict, p: dict) -> dict:
    """`d` (default_value) with every empty array replaced by the prototype's one-element array `p`."""
    if d.get("type") == "array":
        if not d["value"]:
            return p
        return {"type": "array", "value": [_at_least_one(x, p["value"][0]) for x in d["value"]]}
    if d.get("type") == "structure":
        return {"type": "structure", "value": [_at_least_one(x, y) for x, y in zip(d["value"], p["value"])]}
    if d.get("type") in ("visible-string", "utf8-string") and d["value"] == "":
        return {"type": d["type"], "value": _SAMPLE_STRING}
    return d


def group_value(key: tuple, rows: list[dict], *, title: str = "", now: float = 0.0, twin: bool = False) -> dict:
    """The typed value of one attribute/method group (module docstring, step 2)."""
    from firmware_emu.core.catalogue import default_value, prototype
    entry = entry_from_rows(key, rows, title=title, now=now)
    if not any(m.dlms_type for m in entry.members):
        return dict(NULL)
    return _at_least_one(default_value(entry, twin=twin), prototype(entry, twin=twin))


def _obis_hex(obis: str) -> str:
    a, rest = obis.split("-", 1)
    b, rest = rest.split(":", 1)
    return bytes([int(a), int(b)] + [int(x) for x in rest.split(".")]).hex().upper()


def protection_parameters() -> dict:
    """One protection_parameters element of get_protected_attributes (GBCS 8.5): protection type 2 (encryption),
    options {transaction id, originator / recipient system titles (filled by `hil.remote_party`), other
    information, key info {agreed key: KDF parameters 02}}."""
    return {"type": "structure", "value": [{"type": "enum", "value": 2}, {"type": "structure", "value": [
        {"type": "octet-string", "value": "04" + "00" * 8}, {"type": "octet-string", "value": "00" * 8},
        {"type": "octet-string", "value": "00" * 8}, {"type": "octet-string", "value": ""},
        {"type": "structure", "value": [{"type": "enum", "value": 2}, {"type": "structure", "value": [
            {"type": "octet-string", "value": "02"}, {"type": "octet-string", "value": ""}]}]}]}]}


def _range_descriptor(now: float) -> dict:
    """Selective access 1 over the day before `now`: {restricting object (Clock time), from, to, all columns}."""
    from firmware_emu.core.clock import to_gbcs_seconds
    return {"selector": 1, "parameters": {"type": "structure", "value": [
        {"type": "structure", "value": [{"type": "long-unsigned", "value": 8},
                                        {"type": "octet-string", "value": _obis_hex("0-0:1.0.0.255")},
                                        {"type": "integer", "value": 2}, {"type": "long-unsigned", "value": 0}]},
        {"type": "double-long-unsigned", "value": to_gbcs_seconds(now - 86400)},
        {"type": "double-long-unsigned", "value": to_gbcs_seconds(now)},
        {"type": "array", "value": []}]}}


@dataclass
class AccessRequest:
    """What `access_request` built: the specifications and data, and what each read asks for.

    `reads[i]` is the (class, OBIS, attribute) a get specification `i` reads (None for sets and actions);
    `protected` lists the attributes a get_protected_attributes action reads, in the order of the decrypted
    structure (empty when the command has none)."""

    specs: list[dict] = field(default_factory=list)
    data: list[dict] = field(default_factory=list)
    reads: list[tuple | None] = field(default_factory=list)
    protected: list[tuple] = field(default_factory=list)
    sets: list[tuple[tuple, dict]] = field(default_factory=list)   # ((class, OBIS, attr), value) of each set

    def payload(self) -> dict:
        return {"access_request": {"long_invoke_id_and_priority": "20000000", "date_time": "",
                                   "request_specifications": self.specs, "data": self.data}}


def _descriptor(kind: str, class_id: int, obis: str, index: int) -> dict:
    key = "method_id" if kind == "action" else "attribute_id"
    return {"class_id": class_id, "instance_id": obis, key: index}


def access_request(uc: dict, target: dict, *, now: float, twin: bool = False) -> AccessRequest:
    """The Access-Request of one use case's target (module docstring, step 3)."""
    groups = row_groups(target["command"])
    update = uc["read_or_update"] == "Update"
    title = uc["title"] or ""
    req = AccessRequest()
    protect = next(((k, rs) for k, rs in groups if (k[0], k[2], k[3]) == _PROTECTED_READ), None)
    if protect is not None and not update:
        key, rows = protect
        dates = [r for r in rows if (r["dlms_type"] or "").startswith("octet-string(12)")]
        descriptors = []
        for (class_id, obis, kind, index), rs in groups:
            if kind != "attribute":
                continue
            access = {"type": "structure", "value": [{"type": "enum", "value": 0}, NULL]}
            if class_id == 7 and index == 2 and len(dates) == 2:
                from firmware_emu.core.clock import dlms_datetime
                access = {"type": "structure", "value": [{"type": "enum", "value": 1}, {"type": "structure", "value": [
                    {"type": "octet-string", "value": dlms_datetime(now - 86400).hex().upper()},
                    {"type": "octet-string", "value": dlms_datetime(now).hex().upper()}]}]}
            descriptors.append({"type": "structure", "value": [
                {"type": "long-unsigned", "value": class_id}, {"type": "octet-string", "value": _obis_hex(obis)},
                {"type": "integer", "value": index}, {"type": "long-unsigned", "value": 0}, access]})
            req.protected.append((class_id, obis, index))
        arg = {"type": "structure", "value": [{"type": "array", "value": descriptors},
                                              {"type": "array", "value": [protection_parameters()]}]}
        req.specs.append({"kind": "action", "descriptor": _descriptor("action", key[0], key[1], key[3]),
                          "access_selection": None})
        req.data.append(arg)
        req.reads.append(None)
        groups = [(k, rs) for k, rs in groups if k[2] == "method" and k != key]
    for (class_id, obis, kind, index), rs in groups:
        if kind == "method":
            value = group_value((class_id, obis, kind, index), rs, title=title, now=now, twin=twin)
            req.specs.append({"kind": "action", "descriptor": _descriptor("action", class_id, obis, index),
                              "access_selection": None})
            req.data.append(value)
            req.reads.append(None)
            continue
        reads = not update or all("methodOutput" in (r["name"] or "") for r in rs)
        if reads:
            selection = _range_descriptor(now) if any(_is_selection(r) for r in rs) else None
            req.specs.append({"kind": "get-with-selection" if selection else "get",
                              "descriptor": _descriptor("get", class_id, obis, index),
                              "access_selection": selection})
            req.data.append(dict(NULL))
            req.reads.append((class_id, obis, index))
        else:
            value = group_value((class_id, obis, kind, index), rs, title=title, now=now, twin=twin)
            req.specs.append({"kind": "set", "descriptor": _descriptor("set", class_id, obis, index),
                              "access_selection": None})
            req.data.append(value)
            req.reads.append(None)
            req.sets.append(((class_id, obis, index), value))
    return req


def command(message_code: int, originator: str, recipient: str, payload: dict) -> dict:
    """The JSON form of a command for `hil.remote_party.RemoteParty.build` (it fills counter, invoke id,
    protection parameters, signature and MAC)."""
    return {"grouping_header": {"cra_flag": "command", "originator": originator, "recipient": recipient,
                                "date_time": None, "other_information": {"message_code": f"0x{message_code:04X}"}},
            "payload": {"dlms": payload}, "signature": ""}


# --------------------------------------------------------------------------------------------- GBZ (ZCL) level
#
# A GBZ command is built from the use case's byte-level template in the appendix (`gbz_template.command`):
#
#   template ──split per "Extended Header Control Field"──▶ components (cluster, frame control, command id,
#   From Date Time?, instance count from the heading "(12 instances)") ──▶ each ZCL payload field zipped, in
#   order, with the codec's declaration of that command (`protocols.zigbee.clusters`) ──▶ a value per field:
#
#     * the template's constant (`0x0702`, `0b10`, `41`); a choice `0x00 | 0x01` takes the first option, a
#       range `0-11` the instance index (Snapshot Offset), a meaning "Set to 0xFFFFFFFE" that hex;
#     * a `*` cell: a plausible value of the codec field (`gbz_sample`): "now" (0) for activation and start
#       times, the current UTC time for issuer event / message / calendar ids (the template says so), a day back
#       for log windows, 1 for counts and ids, 1000 for amounts, "GBCS" for strings;
#     * a "Refer to ZigBee spec" sub-payload: one entry of the codec's entry declaration, sampled the same way.
#
# The result is the JSON form `hil.remote_party.RemoteParty.build` takes; the codec encodes it, so a value the
# declaration does not accept fails loudly.

_INSTANCES_RE = re.compile(r"\((\d+)(?:-(\d+|n))? instances?\)")
_HEX_CONST_RE = re.compile(r"^(0x[0-9A-Fa-f]+|0b[01]+|\d+)$")
_SET_TO_RE = re.compile(r"[Ss]et (?:to|=) (0x[0-9A-Fa-f]+)\b")
_AMOUNT_WORDS = ("credit", "debt", "charge", "price", "amount", "cap", "level", "threshold", "limit", "value",
                 "percentage")


@dataclass
class GbzTemplateComponent:
    """One command component of a use case's GBZ template."""

    name: str                   #: the template heading ("GetSnapshot (12 instances)")
    cluster: int
    frame_control: int
    command_id: int
    from_date_time: bool
    instances: int              #: how many copies the command carries (the heading's minimum, at least 1)
    fields: list[dict]          #: the template's ZCL payload fields, in order


def gbz_template_components(uc: dict) -> list[GbzTemplateComponent]:
    """The command components of `uc`'s GBZ template, in order."""
    tpl = uc.get("gbz_template") or {}
    out: list[GbzTemplateComponent] = []
    cur: dict | None = None
    for e in tpl.get("command") or ():
        if e.get("kind") != "field":
            continue
        el = e["element"]
        if el == "Extended Header Control Field":
            cur = {"name": e["zcl_command"] or "", "ctl": e["value"], "fields": [], "hdr": {}}
            out.append(cur)  # type: ignore[arg-type]
        elif cur is None:
            continue
        elif e["block"] == "ZCL payload":
            cur["fields"].append(e)
        else:
            cur["hdr"][el] = e["value"]
    comps = []
    for c in out:
        h = c["hdr"]  # type: ignore[index]
        m = _INSTANCES_RE.search(c["name"])  # type: ignore[arg-type]
        comps.append(GbzTemplateComponent(
            name=c["name"], cluster=int(h["Extended Header Cluster ID"], 16),  # type: ignore[index]
            frame_control=int(h["Frame control"], 0), command_id=int(h["Command identifier"], 16),
            from_date_time="From Date Time" in h, instances=max(1, int(m.group(1))) if m else 1,
            fields=c["fields"]))  # type: ignore[index]
    return comps


def _gbcs_now(now: float) -> int:
    from firmware_emu.core.clock import to_gbcs_seconds
    return to_gbcs_seconds(now)


def _declared_fields(con) -> list[tuple[str, object]]:
    import construct as cs
    return [(sc.name, sc.subcon if isinstance(sc, cs.Renamed) else sc) for sc in con.subcons]


def _leaf_bytes(con) -> int | None:
    import construct as cs
    if isinstance(con, (cs.FormatField, cs.BytesInteger)):
        return con.length
    return None


def _signed(con) -> bool:
    import construct as cs
    if isinstance(con, cs.FormatField):
        return con.fmtstr[-1].islower()
    return isinstance(con, cs.BytesInteger) and con.signed


def gbz_sample(name: str, con, now: float, *, meaning: str = "", update: bool = True):
    """A plausible value of the declared field `name` (a construct of `protocols.zigbee`) for a `*` cell."""
    import construct as cs
    from protocols.zigbee import zcl as Z
    g = _gbcs_now(now)
    n = name.lower()
    if isinstance(con, Z.Trailing):
        return None
    if isinstance(con, (Z.Entries, Z.Counted)):
        return [gbz_sample(name, con.subcon, now, meaning=meaning, update=update)]
    if isinstance(con, cs.Struct):
        return {k: gbz_sample(k, sub, now, update=update) for k, sub in _declared_fields(con)}
    if isinstance(con, Z.SwitchOn):
        raise ValueError(f"{name}: a switched field is sampled by its component")
    if isinstance(con, Z._ZclTyped):
        kind = con.ztype.kind
        if kind == "date":
            import time as _t
            tm = _t.gmtime(now)
            return {"year": tm.tm_year, "month": tm.tm_mon, "day": tm.tm_mday, "day_of_week": 0xFF}
        if kind == "tod":
            return {"hours": 7, "minutes": 0, "seconds": 0, "hundredths": 0}
        if kind in ("chars", "long_chars"):
            return _SAMPLE_STRING
        return _SAMPLE_STRING.encode().hex().upper()
    from protocols.zigbee.clusters import BlockThresholdEntry
    if isinstance(con, BlockThresholdEntry):
        return {"tier": 0, "thresholds": [1000]}
    size = _leaf_bytes(con)
    if size is None:
        raise ValueError(f"{name}: no sample for {type(con).__name__}")
    m = _SET_TO_RE.search(meaning or "")
    if m:
        return int(m.group(1), 16)
    if n in ("issuer_event_id", "message_id", "issuer_calendar_id"):
        return g
    if "time" in n:
        if n in ("latest_end_time", "end_time"):
            return g
        if n.startswith("earliest") or (n == "start_time" and not update):
            return g - 86400 if "sample" in n else 0
        if n.startswith(("billing_period", "block_period")):
            return g + 86400
        if "collection_time" in n or size == 2:
            return 0
        return 0
    if "duration" in n:
        return 1
    if n.startswith("number_of_samples"):
        return 1
    if size >= 2 and any(w in n for w in _AMOUNT_WORDS):
        return 1000
    if "period" in n or "interval" in n:
        return 10
    return 1


def _template_value(field: dict, instance: int):
    """The template cell as a number, or None when it is `*` / a free range (module comment above)."""
    text = (field.get("value") or "").strip()
    if text in ("", "*"):
        return None
    first = text.split("|")[0].strip()
    if _HEX_CONST_RE.match(first):
        return int(first, 0)
    m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", text)
    if m:
        return int(m.group(1)) + instance
    return None


@dataclass
class GbzRequest:
    """What `gbz_request` built: the components (JSON form) and, per component, the attributes it reads."""

    components: list[dict] = field(default_factory=list)
    reads: list[list[int]] = field(default_factory=list)   # Read Attributes ids per component ([] otherwise)

    def payload(self) -> dict:
        return {"gbz": {"components": self.components}}


def _fc_json(fc: int) -> dict:
    return {"frame_type": "global" if fc & 3 == 0 else "cluster", "manufacturer_specific": bool(fc & 4),
            "direction": "server_to_client" if fc & 8 else "client_to_server",
            "disable_default_response": bool(fc & 0x10), "reserved": 0}


def gbz_component_payload(tc: GbzTemplateComponent, *, now: float, update: bool, instance: int = 0) -> dict:
    """The ZCL payload (JSON form) of one template component."""
    from protocols.zigbee import zcl as Z
    from protocols.zigbee.clusters import cluster_command
    if tc.frame_control & 3 == 0:
        if tc.command_id != 0x00:
            raise ValueError(f"{tc.name}: global command 0x{tc.command_id:02X} is not built")
        return {"attributes": [{"attribute_id": int(f["value"], 16)} for f in tc.fields]}
    direction = "server_to_client" if tc.frame_control & 8 else "client_to_server"
    cmd = cluster_command(tc.cluster, direction, tc.command_id)
    if cmd is None or cmd.payload is None:
        raise ValueError(f"{tc.name}: no codec declaration for 0x{tc.cluster:04X}/{tc.command_id:02X}")
    declared = _declared_fields(cmd.payload)
    payload: dict = {}
    fields = list(tc.fields)
    for i, (name, con) in enumerate(declared):
        f = fields[i] if i < len(fields) else None
        if isinstance(con, Z.Trailing) and f is None:
            payload[name] = None
            continue
        if f is None:
            raise ValueError(f"{tc.name}: the template has no field for {name}")
        if isinstance(con, Z.SwitchOn):
            key = payload[con.keyfield]
            sub = con.cases.get(key, con.default)
            if isinstance(sub, Z.Entries):
                payload[name] = [gbz_sample(name, sub.subcon, now, update=update)]
            else:
                payload[name] = gbz_sample(name, sub, now, update=update)
            continue
        value = _template_value(f, instance)
        if isinstance(con, Z._ZclTyped) and value == 0 and con.ztype.kind in ("octets", "chars"):
            value = ""                                          # "0-length string"
        elif value is None or _leaf_bytes(con) is None:
            value = gbz_sample(name, con, now, meaning=f.get("meaning") or "", update=update)
        if _leaf_bytes(con) is not None and _signed(con) and value >= 1 << (8 * _leaf_bytes(con) - 1):
            value -= 1 << (8 * _leaf_bytes(con))                # the template writes INT32 cells in hex
        payload[name] = value
    if len(fields) > len(declared):
        raise ValueError(f"{tc.name}: the template has {len(fields)} fields, the codec {len(declared)}")
    return payload


def gbz_request(uc: dict, *, now: float) -> GbzRequest:
    """The GBZ command of `uc` from its template (module comment above): every component, each instance."""
    update = uc["read_or_update"] == "Update"
    req = GbzRequest()
    plan = [(tc, i) for tc in gbz_template_components(uc) for i in range(tc.instances)]
    for seq, (tc, i) in enumerate(plan):
        comp = {"extended_header_control": {"last": seq == len(plan) - 1, "encrypted": False,
                                            "from_date_time": tc.from_date_time, "reserved": 0},
                "cluster": tc.cluster,
                "zcl": {"frame_control": _fc_json(tc.frame_control), "sequence_number": seq,
                        "command_id": tc.command_id,
                        "payload": gbz_component_payload(tc, now=now, update=update, instance=i)}}
        if tc.from_date_time:
            comp["from_date_time"] = 0 if update else _gbcs_now(now) - 31 * 86400
        req.components.append(comp)
        zp = comp["zcl"]["payload"]
        req.reads.append([a["attribute_id"] for a in zp["attributes"]]
                         if tc.frame_control & 3 == 0 and tc.command_id == 0 else [])
    return req


def gbz_command_cases(device: str, prefixes: tuple[str, ...] = ("GCS",),
                      ucs: list[dict] | None = None) -> list[tuple[dict, dict]]:
    """(use case, target) of every command use case (not an `SME.A.*` alert) with a GBZ template whose
    appendix target is `device` (ZCL/ZSE content), for names starting with one of `prefixes`."""
    out = []
    for uc in ucs if ucs is not None else load_use_cases():
        if not uc["name"].startswith(prefixes) or uc["message_code"] is None:
            continue
        if (uc["message_type"] or "").startswith("SME.A.") or not (uc.get("gbz_template") or {}).get("command"):
            continue
        for t in uc["targets"]:
            if t["device"] == device and t["content_type"] == "ZCL/ZSE" and t["command"]:
                out.append((uc, t))
                break
    return out


def gbz_command(message_code: int, originator: str, recipient: str, payload: dict) -> dict:
    """`command` for a GBZ payload ({"gbz": {...}})."""
    return {"grouping_header": {"cra_flag": "command", "originator": originator, "recipient": recipient,
                                "date_time": None, "other_information": {"message_code": f"0x{message_code:04X}"}},
            "payload": payload, "signature": ""}


def gbz_alternates(uc: dict) -> set[tuple[int, int, int]]:
    """(cluster, command id, status) of the Default Responses the use case's template gives as alternate
    responses ("if no instances of the ZCL/ZSE command immediately above are returned": NOT_FOUND)."""
    out: set[tuple[int, int, int]] = set()
    cur: dict = {}
    for e in (uc.get("gbz_template") or {}).get("normal_response") or ():
        if e.get("kind") != "field" or not e.get("alternate"):
            continue
        el, value = e["element"], e.get("value") or ""
        if el == "Extended Header Cluster ID":
            cur = {"cluster": int(value, 16)}
        elif el.startswith("Command identifier (UINT8)") and _HEX_CONST_RE.match(value):
            cur["command_id"] = int(value, 0)
        elif el.startswith("Status (ENUM8)") and _HEX_CONST_RE.match(value) and "command_id" in cur:
            out.add((cur["cluster"], cur["command_id"], int(value, 0)))
    return out
