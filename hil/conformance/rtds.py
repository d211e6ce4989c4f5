"""`gbcs-emu conformance rtds DIR --keystore DIR`: replay the RTDS commands against emulated devices and compare
what they send back with the RTDS responses and alerts, by form (`hil.conformance.compare`).

Theory of operation
-------------------
Discovery (`discover_cases`) turns the files below DIR into cases:

* a **command case** per `*_COMMAND_GBCS.HEX` (never PRECOMMAND): its `RESPONSE` file of the same name and the
  `ALERT` files of the same directory whose variant is the command's (`<UC>_<SRV>_<code>_<variant>_ALERT[_x]`);
* an **alert-only case** per ALERT file that no command owns (NA_ECS80, NA_GCA-DLMS...), run by making the device
  live through what raises it (`Device.stimulate`).

Every case runs against a FRESH device (a target) of its recipient's type, so cases never depend on each other:

    discovered ─▶ type known? ──no──▶ SKIPPED ("GSME not emulated")
                     │yes
                     ▼
    provision (keys per EUI, once per run) ─▶ precondition (ERROR variants: inject the fault the expected
    response shows) ─▶ send the command at --start (or stimulate) ─▶ while alerts are still expected and the
    device has a wake-up: tick to it (≤ 64 steps) ─▶ decode what came out ─▶ compare ─▶ PASSED / FAILED

Devices that can have a past (`Device.prepare("lived")`, the GSME) live it before every case but the NOT_FOUND
variants: RTDS reads of logs, snapshots and calendars were answered by a meter with history, and the same
command's NOT_FOUND variant by one without (a type that cannot raises NotImplementedError: skipped).

RTDS ERROR commands are byte-identical to the SUCCESS ones: the failure is the device's state. So the runner
makes it the scenario's precondition: for a DLMS Access-Response whose results fail, the FIRST failing
specification of the command gets `faults.fail(dlms_target(...), <that result>)`; a FUTURE_DATED_ERROR case
that expects an 8F67 alert (and an all-success immediate response) gets the fault `at_execution=True` on the
first specification (ASN.1: on the use-case name, the FaultPlan's ASN.1 target). A GBZ response whose first
failure is a Default Response or a Read Attributes record gets `<cluster>/<command>` / `<cluster>/attr/<id>`
(`firmware_emu.core.zcl` targets) with that ZCL status.

Device type of a recipient: inferred from the use cases addressed to it in DIR (`infer_device_type`),
overridable per EUI. The device under test sits behind `Target`: `send`, `tick`, `next_wakeup`, `inject_fault`,
`stimulate`, `prepare`, `certificates`.

Devices under test outside the process (`target="tcp://..."`, `"serial://..."`: `hil.targets`): one
`RemoteTarget` for the whole run; `begin_case` gives each case its deadline (`timeout` s) and, with a control
channel (`control="HOST:PORT"`, `hil.control`), a fresh device (with the case's profile) at --start, so the
flow above is unchanged: preconditions, faults, stimuli and clock moves go through the control channel, frames
through the line. A case whose expected frames do not all arrive by its deadline fails with `timeout: expected
N frames, got M`. Without control the device is whatever it is: a case needing a precondition (a fault, a
`prepare` other than "lived", a stimulus, a device profile) or a fresh device (its command's originator counter
not above one already sent by that originator: replay protection would refuse it) is SKIPPED (`precondition
needs --control`); the others run in originator-counter order (the report lists them by name), and
future-dated alerts are waited for (the device's own clock) until the deadline. Cases addressed to another EUI
than the device under test's are skipped (`other device`).

Devices have no private keys in the RTDS keystore: each EUI gets a self-issued DS key pair (one seeded PkiIssuer
per run) and does key agreement from the remote party's side. Signatures of emitted frames are checked with
the target's own DS certificate; MACs and decryption with the RTDS keystore (plus the target's KA certificate
when the keystore has none for it). `--save` writes those certificates so others can check the frames too.
"""
from __future__ import annotations

import dataclasses
import re
import time
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Protocol

from protocols.errors import GbcsEmuError, guarded
from protocols.gbcs.message import decode
from protocols.gbcs.registry import REGISTRY
from protocols.security import ecc
from protocols.security.eui import as_eui, eui_hex
from protocols.security.keystore import Keystore, Usage
from protocols.zigbee.clusters import STATUS_NAMES

from hil.conformance import compare as cmp
from hil.conformance.codec import read_message_file

__all__ = ["Case", "CaseResult", "Report", "Target", "InprocTarget", "discover_cases", "infer_device_type",
           "run_rtds_conformance", "device_profile", "write_junit", "DEFAULT_START", "MAX_TICKS", "DEFAULT_TIMEOUT",
           "NEEDS_CONTROL"]

#: RTDS era: every device starts at 2015-01-01T00:00:00Z.
DEFAULT_START = 1420070400.0
#: Bound of the tick loop that waits for future-dated alerts.
MAX_TICKS = 64
#: Per-case deadline of a device under test outside the process (seconds).
DEFAULT_TIMEOUT = 5.0
#: Skip reason of a case a device without a control channel cannot be set up for.
NEEDS_CONTROL = "precondition needs --control"

_COMMAND_RE = re.compile(r"^(?P<uc>[^_]+)_(?P<srv>[^_]+)(?:_(?P<variant>.*?))?_COMMAND_GBCS\.HEX$", re.I)
_ALERT_RE = re.compile(r"^(?P<uc>[^_]+)_(?P<srv>[^_]+)_(?P<code>[0-9A-F]{4}|NA)(?:_(?P<variant>.*?))?_ALERT"
                       r"(?:_(?P<suffix>.*?))?_GBCS\.HEX$", re.I)


# ------------------------------------------------------------------------------------------------- discovery


@dataclass
class Case:
    """One replay: a command (with its expected response and alerts) or an alert-only stimulus."""

    name: str                   #: `4.2_ECS17a/ECS17a_4.2_SUCCESS` (case directory / file stem)
    directory: Path             #: the case directory
    rel_dir: str                #: the case directory relative to DIR
    use_case: str               #: `ECS17a` (from the file name)
    variant: str                #: `SUCCESS`, `FUTURE_DATED_ERROR`, ... ("" when the name has none)
    command: Path | None = None
    response: Path | None = None
    alerts: list[Path] = field(default_factory=list)

    @property
    def alert_only(self) -> bool:
        return self.command is None

    @property
    def source(self) -> Path:
        """The file the case is named after (the command, or the one alert of an alert-only case)."""
        return self.command if self.command is not None else self.alerts[0]


def discover_cases(directory) -> list[Case]:
    """Every command and alert-only case below `directory`, recursively, in a stable order."""
    root = Path(directory)
    cases: list[Case] = []
    by_dir: dict[Path, list[Path]] = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name.upper().endswith("_GBCS.HEX"):
            by_dir.setdefault(p.parent, []).append(p)
    for d, files in sorted(by_dir.items()):
        rel = d.relative_to(root).as_posix()
        rel = "" if rel == "." else rel
        commands: dict[tuple[str, str, str], Case] = {}
        for p in files:
            m = _COMMAND_RE.match(p.name)
            if m is None or p.name.upper().endswith("PRECOMMAND_GBCS.HEX"):
                continue
            stem = p.name[: -len("_COMMAND_GBCS.HEX")]
            response = p.with_name(stem + "_RESPONSE_GBCS.HEX")
            case = Case(_case_name(rel, stem), d, rel, m["uc"], m["variant"] or "", command=p,
                        response=response if response.is_file() else None)
            commands[(m["uc"].upper(), m["srv"].upper(), case.variant.upper())] = case
            cases.append(case)
        for p in files:
            m = _ALERT_RE.match(p.name)
            if m is None:
                continue
            owner = commands.get((m["uc"].upper(), m["srv"].upper(), (m["variant"] or "").upper()))
            if owner is not None:
                owner.alerts.append(p)
            else:
                cases.append(Case(_case_name(rel, p.name[: -len("_GBCS.HEX")]), d, rel, m["uc"],
                                  m["variant"] or "", alerts=[p]))
    cases.sort(key=lambda c: c.name)
    return cases


def _case_name(rel: str, stem: str) -> str:
    return f"{rel}/{stem}" if rel else stem


# ------------------------------------------------------------------------------------------------- device types


def infer_device_type(use_cases) -> str | None:
    """The device type that takes these use cases (names as the registry spells them), or None.

    CCS/DBCH only go to a comms hub; any ECS means an electricity meter (the hub also takes a few ECS reads of
    its own, hence the order); a use case only a GPF takes makes a GPF; GCS/PCS otherwise mean a gas meter;
    what is left takes only CS use cases: CS03C/CS09 a PPMID, CS08 alone an HCALCS."""
    names = [str(n) for n in use_cases]
    up = [n.upper() for n in names]
    if any(n.startswith(("CCS", "DBCH")) for n in up):
        return "CHF"
    if any(n.startswith("ECS") for n in up):
        return "ESME"
    for n in names:
        entry = REGISTRY.by_name(n)
        if entry is not None and tuple(entry.target_devices) == ("GPF",):
            return "GPF"
    if any(n.startswith(("GCS", "PCS")) for n in up):
        return "GSME"
    if any(n.startswith(("CS03C", "CS09")) for n in up):
        return "PPMID"
    if any(n.startswith("CS08") for n in up):
        return "HCALCS"
    return None


def _use_case_name(msg: dict, fallback: str) -> str:
    oi = (msg.get("grouping_header") or {}).get("other_information") or {}
    code = cmp._code(oi.get("message_code"))
    entry = REGISTRY.get(code) if code is not None else None
    return entry.name if entry is not None else (oi.get("use_case") or fallback)


# ------------------------------------------------------------------------------------------------- targets


class Target(Protocol):
    """The device under test, as the runner drives it (frames in, frames out; time is a parameter)."""

    def send(self, frame: bytes, now: float) -> list[bytes]: ...
    def tick(self, now: float) -> list[bytes]: ...
    def next_wakeup(self) -> float | None: ...
    def inject_fault(self, target: str, result: str, *, at_execution: bool = False) -> None: ...
    def stimulate(self, message_code: int, alert_code: int | None, now: float, **detail) -> list[bytes]: ...
    def prepare(self, condition: str, **detail) -> None: ...
    def certificates(self) -> dict[str, bytes]: ...


class InprocTarget:
    """An emulated device in this process (`firmware_emu.devices`)."""

    def __init__(self, device):
        self.device = device

    @classmethod
    def create(cls, device_class, keys, anchors, now: float, profile: dict | None = None) -> "InprocTarget":
        return cls(device_class(keys, anchors=anchors, now=now, profile=profile))

    def send(self, frame: bytes, now: float) -> list[bytes]:
        return [e.frame for e in self.device.receive(frame, now)]

    def tick(self, now: float) -> list[bytes]:
        return [e.frame for e in self.device.tick(now)]

    def next_wakeup(self) -> float | None:
        return self.device.next_wakeup()

    def inject_fault(self, target: str, result: str, *, at_execution: bool = False) -> None:
        self.device.faults.fail(target, result, at_execution=at_execution)

    def stimulate(self, message_code: int, alert_code: int | None, now: float, **detail) -> list[bytes]:
        return [e.frame for e in self.device.stimulate(message_code, alert_code, now, **detail)]

    def prepare(self, condition: str, **detail) -> None:
        self.device.prepare(condition, **detail)

    def certificates(self) -> dict[str, bytes]:
        """The device's own certificates (DER) by usage: what a verifier needs besides the RTDS keystore."""
        keys = self.device.keys
        return {"ds": keys.ds_certificate, "ka": keys.ka_certificate}


class _Provisioner:
    """Keys per EUI, issued once per run (devices are fresh per case, their keys are not: issuing is slow and
    the saved certificates must hold for every frame of the run)."""

    def __init__(self, keystore: Keystore, seed: int):
        from firmware_emu.core.provisioning import default_anchors
        from protocols.security.pki import PkiIssuer
        self.keystore = keystore
        self.issuer = PkiIssuer(seed=seed)
        self.anchors = default_anchors(keystore)
        self._keys: dict[str, object] = {}

    def keys(self, eui: str):
        """A fresh copy of the EUI's keys: a device may change its view of the remote parties (CS02 replaces
        trust anchors in `keys.peers`), and that must not leak into the next case's device."""
        from firmware_emu.core.provisioning import device_keys
        if eui not in self._keys:
            self._keys[eui] = device_keys(self.keystore, eui, issuer=self.issuer)
        return dataclasses.replace(self._keys[eui], _secrets={})


def _inproc_factory(provisioner: _Provisioner) -> Callable[..., Target | None]:
    from firmware_emu.devices import device_class

    def make(device_type: str, eui: str, now: float, profile: dict | None = None) -> Target | None:
        cls = device_class(device_type)
        if cls is None:
            return None
        return InprocTarget.create(cls, provisioner.keys(eui), provisioner.anchors, now, profile)

    return make


# ------------------------------------------------------------------------------------------------- results


@dataclass
class CaseResult:
    case: Case
    status: str                                  #: "passed" | "failed" | "skipped"
    failures: list[str] = field(default_factory=list)
    reason: str = ""                             #: why skipped
    skip_group: str = ""                         #: "GSME", "CHF", "stimulate", ...
    device_type: str | None = None
    eui: str | None = None
    frames: list[bytes] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass
class Report:
    results: list[CaseResult] = field(default_factory=list)

    @property
    def passed(self) -> int:
        return sum(r.status == "passed" for r in self.results)

    @property
    def failed(self) -> int:
        return sum(r.status == "failed" for r in self.results)

    @property
    def skipped(self) -> int:
        return sum(r.status == "skipped" for r in self.results)

    @property
    def skipped_by(self) -> Counter:
        return Counter(r.skip_group for r in self.results if r.status == "skipped")

    def failures_by_field(self) -> Counter:
        """How many failure lines name each field (indices folded: `payload.dlms.data[*]`)."""
        c: Counter = Counter()
        for r in self.results:
            for f in r.failures:
                parts = f.split(": ")
                head = parts[0]
                if head.startswith("alert ") and len(parts) > 1:  # `alert 8F66: <field>: ...` / `: missing`
                    head = f"alert {parts[1]}" if len(parts) > 2 else f"alert ({parts[1].split(' ')[0]})"
                c[re.sub(r"\[\d+\]", "[*]", head)] += 1
        return c

    def summary_lines(self) -> list[str]:
        lines = [f"{self.passed} passed, {self.failed} failed"]
        if self.skipped:
            groups = ", ".join(f"{k}: {n}" for k, n in sorted(self.skipped_by.items(), key=lambda kv: (-kv[1], kv[0])))
            lines.append(f"{self.skipped} skipped ({groups})")
        return lines


# ------------------------------------------------------------------------------------------------- the run


def _decode_file(path: Path) -> dict:
    return guarded(decode, read_message_file(path))


def parse_start(start) -> float:
    if start is None:
        return DEFAULT_START
    if isinstance(start, (int, float)):
        return float(start)
    text = str(start).strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


#: Use cases whose SUCCESS scenario presupposes that the other device named in the command is already in the
#: device log (GBCS pre-condition of an unjoin).
UNJOIN_USE_CASES = ("CS04AC", "CS04B")
#: ZigBee Network Control (class 104) unregister_device: the CHF side of an unjoin (CCS02).
UNREGISTER_DEVICE = (104, 2)


def _asn1_failure(response: dict) -> tuple[str, str | None] | None:
    """The first failure code (`response_code` / `status_code` other than success) of an ASN.1 response, and
    the remote-party role it concerns when the response reports per role (CS02f)."""
    stack = [((response.get("payload") or {}).get("asn1") or {}).get("value")]
    while stack:
        node = stack.pop(0)
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("response_code", "status_code") and isinstance(v, str) and v != "success":
                    return v, node.get("remote_party_role")
                stack.append(v)
        elif isinstance(node, list):
            stack.extend(node)
    return None


def _gbz_failure(command: dict, response: dict, decrypted: list | None) -> tuple[str, str] | None:
    """The fault an ERROR GBZ response shows (`firmware_emu.core.zcl` targets): the first response component
    that fails, in order: a Default Response naming a command with a failure status → "<cluster>/<command>"
    ("#<sequence number>" added when the command repeats that ZCL command);
    a Read Attributes Response record with one (decrypted when the component is encrypted) →
    "<cluster>/attr/<attribute>". NOT_FOUND and the 0xFF FAILURE answers after a failure are consequences."""
    from firmware_emu.core.zcl import DEFAULT_RESPONSE, NO_COMMAND, READ_ATTRIBUTES_RESPONSE, Status, \
        zcl_attr_target, zcl_target
    plain = {d["path"]: d.get("data") for d in decrypted or [] if d.get("status") == "valid"}
    benign = (Status.SUCCESS, Status.NOT_FOUND, Status.UNSUPPORTED_ATTRIBUTE)
    for i, comp in enumerate(((response.get("payload") or {}).get("gbz") or {}).get("components") or []):
        zh = comp.get("zcl") or {}
        payload = zh.get("payload")
        if payload is None:
            payload = plain.get(f"payload.gbz.components.{i}.zcl.ciphered")
        if not isinstance(payload, dict):
            continue
        if zh.get("command_id") == DEFAULT_RESPONSE and payload.get("status") not in benign \
                and payload.get("command_id") != NO_COMMAND:
            name = STATUS_NAMES.get(payload["status"], payload["status"])
            target = zcl_target(comp["cluster"], payload["command_id"])
            seq = zh.get("sequence_number")
            same = [c for c in ((command.get("payload") or {}).get("gbz") or {}).get("components") or []
                    if c.get("cluster") == comp["cluster"]
                    and (c.get("zcl") or {}).get("command_id") == payload["command_id"]]
            return (f"{target}#{seq}" if len(same) > 1 else target), name
        if zh.get("command_id") == READ_ATTRIBUTES_RESPONSE:
            for rec in payload.get("records") or []:
                if rec.get("status") not in benign:
                    return zcl_attr_target(comp["cluster"], rec["attribute_id"]), \
                        STATUS_NAMES.get(rec["status"], rec["status"])
    return None


def _preconditions(target: Target, command: dict, response: dict | None, alerts: list[dict], variant: str,
                   decrypted: list | None = None) -> None:
    """Bring the device into the state the scenario presupposes (module docstring): an unjoin's SUCCESS needs
    the other device joined; an ERROR variant gets the fault its expected output shows (`decrypted`: the
    expected response's decrypted items, where a GBZ failure may hide)."""
    payload = command.get("payload") or {}
    asn1 = (payload.get("asn1") or {}).get("value")
    name = _use_case_name(command, "")
    prepare = getattr(target, "prepare", None)
    if "NOT_FOUND" not in variant.upper() and prepare is not None:
        try:    # RTDS devices answered with a past (logs, snapshots, a tariff): NOT_FOUND ones without it
            prepare("lived")
        except NotImplementedError:
            pass
    if "ERROR" not in variant.upper():
        others = []
        if name.startswith(UNJOIN_USE_CASES) and isinstance(asn1, dict) and asn1.get("other_device"):
            others.append(asn1["other_device"])
        request = (payload.get("dlms") or {}).get("access_request") or {}
        for spec, value in zip(request.get("request_specifications") or [], request.get("data") or []):
            d = spec.get("descriptor") or {}
            if (d.get("class_id"), d.get("method_id")) == UNREGISTER_DEVICE and value.get("type") == "octet-string":
                others.append(value["value"])  # CCS02: removing a device presupposes it is in the device log
        for other in others:
            try:
                target.prepare("device_joined", other_device=other)
            except NotImplementedError:
                pass
        return
    payload = command.get("payload") or {}
    specs = ((payload.get("dlms") or {}).get("access_request") or {}).get("request_specifications") or []
    results = []
    if response is not None:
        results = (((response.get("payload") or {}).get("dlms") or {}).get("access_response") or {}).get("results") or []
    from firmware_emu.core.cosem import dlms_target

    def target_of(spec: dict) -> str:
        d = spec["descriptor"]
        index = d.get("method_id") if spec["kind"] == "action" else d.get("attribute_id")
        return dlms_target(spec["kind"], d["class_id"], d["instance_id"], index)

    if "gbz" in payload and response is not None:
        failure = _gbz_failure(command, response, decrypted)
        if failure is not None:
            target.inject_fault(*failure)
            return
    if "asn1" in payload and response is not None:
        failure = _asn1_failure(response)
        if failure is not None:
            code, role = failure
            target.inject_fault(f"{name}/{role}" if role else name, code)
            return
    failing = next((i for i, r in enumerate(results) if r.get("result") != "success"), None)
    if failing is not None and failing < len(specs):
        target.inject_fault(target_of(specs[failing]), results[failing]["result"])
        return
    if any(cmp.alert_code(a) == 0x8F67 for a in alerts):
        if specs:
            target.inject_fault(target_of(specs[0]), "hardware-fault", at_execution=True)
        elif "asn1" in payload:
            name = _use_case_name(command, "")
            target.inject_fault(name, "hardware-fault", at_execution=True)


def _gpf_preconditions(target: Target, case: Case) -> None:
    """GPF scenarios (`firmware_emu.gpf.device.Gpf.prepare`): a RELIABLE_GPF / RELIABLE_GSME read says where the
    answer comes from ("mirror_fresh": the GPF vouches for fresh data; "mirror_from_gsme": the GSME's data on
    its own clock); a `...Handover` CS02b runs against a hub whose supplier/NO cells still hold the ACB."""
    tokens = set(case.variant.upper().split("_"))
    conditions = ["mirror_fresh" if "GPF" in tokens else "mirror_from_gsme"] if "RELIABLE" in tokens else []
    if case.use_case.upper().endswith("HANDOVER"):
        conditions.append("awaiting_handover")
    for condition in conditions:
        try:
            target.prepare(condition)
        except NotImplementedError:
            pass


def device_profile(case: Case) -> dict | None:
    """The device build a variant names (a precondition, like the ERROR faults): `TWIN` cases run against a
    twin-element ESME, everything else against the factory default."""
    tokens = set(case.variant.upper().split("_"))
    return {"twin": True} if "TWIN" in tokens else None


def _emitted(frames: list[bytes], keystore: Keystore, certificates: dict[str, bytes]):
    """Decode each frame and verify it: (msg | None, verdicts, failures) per frame."""
    from hil.verify import message_layout, verify_message
    out = []
    ds = certificates.get("ds")
    for i, frame in enumerate(frames):
        try:
            msg = guarded(decode, frame)
        except GbcsEmuError as e:
            out.append((None, {}, [f"frame[{i}]: decode: {e}"]))
            continue
        try:
            verdicts = guarded(verify_message, frame, msg, keystore)
            layout = message_layout(frame)
            if ds is not None and layout is not None and layout.signature is not None:
                ok = ecc.verify(ecc.load_public_key(ds), layout.signed, layout.signature)
                verdicts["signature"] = "valid" if ok else "invalid"
        except GbcsEmuError as e:
            out.append((msg, {}, [f"frame[{i}]: security: {e}"]))
            continue
        out.append((msg, verdicts, []))
    return out


def _expected_decrypted(path: Path, msg: dict, keystore: Keystore) -> list:
    from hil.verify import verify_message
    try:
        return guarded(verify_message, read_message_file(path), msg, keystore)["decrypted"]
    except GbcsEmuError:
        return []


def _family(msg: dict) -> str:
    return cmp._family(msg.get("payload") or {})


def _run_case(case: Case, target: Target, start: float, keystore: Keystore, result: CaseResult) -> None:
    fail = result.failures
    expected_response = _decode_file(case.response) if case.response else None
    expected_alerts = [_decode_file(p) for p in case.alerts]
    order = sorted(range(len(expected_alerts)),
                   key=lambda j: ((expected_alerts[j].get("grouping_header") or {}).get("originator_counter") or 0,
                                  case.alerts[j].name))
    alert_files = [case.alerts[j] for j in order]
    expected_alerts = [expected_alerts[j] for j in order]

    if case.command is not None:
        command = _decode_file(case.command)
        decrypted = None
        if case.response is not None and "gbz" in (expected_response or {}).get("payload", {}) \
                and "ERROR" in case.variant.upper():
            decrypted = _expected_decrypted(case.response, expected_response, keystore)
        _preconditions(target, command, expected_response, expected_alerts, case.variant, decrypted)
        _gpf_preconditions(target, case)
        frames = target.send(read_message_file(case.command), start)
    else:
        exp = expected_alerts[0]
        mc = cmp._code(((exp.get("grouping_header") or {}).get("other_information") or {}).get("message_code"))
        oi = (exp.get("grouping_header") or {}).get("other_information") or {}
        detail = {}
        if oi.get("supplementary_remote_party_id"):  # the event: a message on behalf of that party
            detail = {"on_behalf_of": oi["supplementary_remote_party_id"],
                      "supplementary_counter": oi.get("supplementary_remote_party_counter")}
        frames = target.stimulate(mc, cmp.alert_code(exp), start, **detail)

    def n_alerts(fs):
        return sum(1 for f in fs if len(f) > 20 and _cra(f) == 3)

    steps = 0
    while n_alerts(frames) < len(expected_alerts) and steps < MAX_TICKS:
        t = target.next_wakeup()
        if t is None:
            break
        frames += target.tick(max(t, start))
        steps += 1
    n_expected = (1 if expected_response is not None else 0) + len(expected_alerts)
    settle = getattr(target, "settle", None)      # a device outside the process: wait for what is still due
    if settle is not None:
        frames = settle(frames, n_expected)
    result.frames = frames
    if getattr(target, "timed_out", False):
        fail.append(f"timeout: expected {n_expected} frames, got {len(frames)}")

    decoded = _emitted(frames, keystore, target.certificates())
    responses, alerts = [], []
    for i, (msg, verdicts, errs) in enumerate(decoded):
        fail += errs
        if msg is None:
            continue
        cra = msg["grouping_header"]["cra_flag"]
        (responses if cra == "response" else alerts if cra == "alert" else []).append((i, msg, verdicts))
        if cra not in ("response", "alert"):
            fail.append(f"frame[{i}]: grouping_header.cra_flag: {cra} != response/alert")

    n_exp = 1 if expected_response is not None else 0
    if len(responses) != n_exp:
        fail.append(f"responses: {len(responses)} != {n_exp}")
    if responses and expected_response is not None:
        _, msg, verdicts = responses[0]
        fail += cmp.security_failures(msg, verdicts)
        fail += cmp.compare_message(msg, expected_response, got_decrypted=verdicts.get("decrypted", []),
                                    expected_decrypted=_expected_decrypted(case.response, expected_response,
                                                                           keystore))

    if len(alerts) != len(expected_alerts):
        fail.append(f"alerts: {len(alerts)} != {len(expected_alerts)}")
    got_msgs = [m for _, m, _ in alerts]
    fail += cmp.alert_counters(got_msgs)
    pairs, extra, missing = cmp.pair_alerts(got_msgs, expected_alerts)
    for gi, ej in pairs:
        _, msg, verdicts = alerts[gi]
        code = cmp.alert_code(msg)
        label = f"alert {code:04X}" if isinstance(code, int) else "alert"
        diffs = cmp.security_failures(msg, verdicts)
        diffs += cmp.compare_message(msg, expected_alerts[ej], got_decrypted=verdicts.get("decrypted", []),
                                     expected_decrypted=_expected_decrypted(alert_files[ej], expected_alerts[ej],
                                                                            keystore))
        fail += [f"{label}: {d}" for d in diffs]
    for gi in extra:
        code = cmp.alert_code(alerts[gi][1])
        fail.append(f"alert {_hex(code)}: unexpected")
    for ej in missing:
        fail.append(f"alert {_hex(cmp.alert_code(expected_alerts[ej]))}: missing ({alert_files[ej].name})")


def _hex(code) -> str:
    return f"{code:04X}" if isinstance(code, int) else "(no code)"


def _cra(frame: bytes) -> int | None:
    """The CRA flag of a frame without decoding it (DF at 0 or after the DD header)."""
    try:
        if frame[0] == 0xDF:
            return frame[2]
        from protocols.prims import read_ber_length
        _, pos = read_ber_length(frame, 7)
        return frame[pos + 5 + 2]
    except (IndexError, GbcsEmuError, ValueError):
        return None


def _case_device(case: Case, types: dict[str, str]) -> tuple[str | None, str | None]:
    """(EUI, device type) of the device a case runs against."""
    if case.command is not None:
        msg = _decode_file(case.command)
        eui = msg["grouping_header"]["recipient"]
    else:
        msg = _decode_file(case.alerts[0])
        eui = msg["grouping_header"]["originator"]
    eui = eui_hex(as_eui(eui))
    dtype = types.get(eui)
    if dtype is None and case.command is None:
        dtype = infer_device_type([_use_case_name(msg, case.use_case)])
        if dtype is None:
            dtype = {"DLMS": "ESME", "ZIGBEE": "GSME"}.get(case.use_case.rsplit("-", 1)[-1].upper())
    return eui, dtype


def _device_types(cases: list[Case], overrides: dict[str, str]) -> dict[str, str]:
    seen: dict[str, list[str]] = {}
    for case in cases:
        if case.command is None:
            continue
        try:
            msg = _decode_file(case.command)
        except GbcsEmuError:
            continue
        eui = eui_hex(as_eui(msg["grouping_header"]["recipient"]))
        seen.setdefault(eui, []).append(_use_case_name(msg, case.use_case))
    types = {eui: t for eui, names in seen.items() if (t := infer_device_type(names)) is not None}
    types.update({eui_hex(as_eui(k)): v.upper() for k, v in overrides.items()})
    return types


class _Probe:
    """A target that records the preconditions a case would set up ("lived" is best effort: not recorded)."""

    def __init__(self):
        self.calls: list[str] = []

    def inject_fault(self, target: str, result: str, *, at_execution: bool = False) -> None:
        self.calls.append(f"fault {target} {result}")

    def prepare(self, condition: str, **detail) -> None:
        if condition != "lived":
            self.calls.append(f"prepare {condition}")


def _control_needs(case: Case, keystore: Keystore) -> str | None:
    """What a case needs that only a control channel can set up (None: nothing)."""
    if case.alert_only:
        return "a stimulus"
    if device_profile(case):
        return "device profile " + ",".join(sorted(device_profile(case)))
    command = _decode_file(case.command)
    response = _decode_file(case.response) if case.response else None
    alerts = [_decode_file(p) for p in case.alerts]
    decrypted = None
    if response is not None and "gbz" in response.get("payload", {}) and "ERROR" in case.variant.upper():
        decrypted = _expected_decrypted(case.response, response, keystore)
    probe = _Probe()
    _preconditions(probe, command, response, alerts, case.variant, decrypted)
    _gpf_preconditions(probe, case)
    return probe.calls[0] if probe.calls else None


def _counter_order(cases: list[Case], skipped=frozenset()) -> tuple[list[Case], dict[str, str]]:
    """Command cases in originator-counter order (a device that is not reset takes them so), and the cases
    whose counter is not above one already sent by the same originator (→ the reason); cases in `skipped`
    (skipped for another reason) send nothing, so they use no counter."""
    keyed = []
    for i, case in enumerate(cases):
        counter, originator = -1, ""
        if case.command is not None:
            try:
                gh = _decode_file(case.command)["grouping_header"]
                counter, originator = int(gh.get("originator_counter") or 0), str(gh.get("originator"))
            except (GbcsEmuError, KeyError, TypeError, ValueError):
                pass
        keyed.append((counter, i, originator, case))
    keyed.sort(key=lambda k: (k[0], k[1]))
    last: dict[str, int] = {}
    stale: dict[str, str] = {}
    for counter, _, originator, case in keyed:
        if case.command is None or case.name in skipped:
            continue
        if originator in last and counter <= last[originator]:
            stale[case.name] = f"a fresh device (counter {counter} not above {last[originator]})"
        else:
            last[originator] = counter
    return [k[3] for k in keyed], stale


def _certificates_of(keys) -> dict[str, bytes]:
    return {"ds": keys.ds_certificate, "ka": keys.ka_certificate}


def run_rtds_conformance(directory, keystore_dir, *, junit=None, save=None, device_types: dict | None = None,
                         start=None, verbose: bool = False, out: Callable[[str], None] = print, seed: int = 1,
                         target_factory: Callable[..., Target | None] | None = None, target: str | None = None,
                         control: str | None = None, timeout: float = DEFAULT_TIMEOUT, html=None) -> Report:
    """Replay every case below `directory` (module docstring); print a line per failure (and per passing or
    skipped case when `verbose`), then the summary; write JUnit XML to `junit`, an HTML report to `html` and
    the frames and certificates to `save` when given. `target`: `inproc:` (default) or a device under test
    outside the process (`hil.targets.open_target`), with its `control` channel when it offers one."""
    directory = Path(directory)
    keystore = keystore_dir if isinstance(keystore_dir, Keystore) else Keystore(Path(keystore_dir))
    t0 = parse_start(start)
    provisioner = _Provisioner(keystore, seed)
    make = target_factory or _inproc_factory(provisioner)
    cases = discover_cases(directory)
    types = _device_types(cases, device_types or {})
    remote = None
    if target_factory is None and target is not None:
        from hil.targets import open_target
        remote = open_target(target, control=control, timeout=timeout,
                             certificates_for=lambda eui: _certificates_of(provisioner.keys(eui)))
    try:
        report = _run_all(cases, types, remote, make, t0, keystore, out, verbose, save)
    finally:
        if remote is not None:
            remote.close()
    if junit is not None:
        write_junit(report, Path(junit))
    if html is not None:
        from hil.conformance.report_html import write_html
        write_html(report, Path(html), target=target or "inproc:", keystore=keystore)
    for line in report.summary_lines():
        out(line)
    return report


def _run_all(cases, types, remote, make, t0: float, keystore: Keystore, out, verbose: bool, save) -> Report:
    stale: dict[str, str] = {}
    if remote is not None and not remote.controlled:
        needs: dict[str, str] = {}
        for case in cases:
            try:
                need = _control_needs(case, keystore)
            except GbcsEmuError:        # an undecodable file: the case fails when it runs
                continue
            if need:
                needs[case.name] = need
        cases, stale = _counter_order(cases, set(needs))
        stale.update(needs)
    report = Report()
    certs: dict[str, dict[str, bytes]] = {}
    for case in cases:
        began = time.perf_counter()
        result = CaseResult(case, "failed")
        try:
            eui, dtype = _case_device(case, types)
            result.eui, result.device_type = eui, dtype
            profile = device_profile(case)
            skip = None
            if remote is not None and dtype is not None:
                skip = _remote_skip(case, eui, dtype, remote, stale, keystore)
            if skip is not None:
                target = None
            elif remote is not None and dtype is not None:
                remote.begin_case(eui, t0, profile)
                target = remote
            else:
                target = (make(dtype, eui, t0, profile) if profile else make(dtype, eui, t0)) if dtype else None
            if skip is not None:
                result.status, result.skip_group, result.reason = "skipped", *skip
            elif dtype is None:
                result.status, result.skip_group = "skipped", "unknown type"
                result.reason = f"device type of {eui} unknown (use --device-type {eui}=TYPE)"
            elif target is None:
                result.status, result.skip_group, result.reason = "skipped", dtype, f"{dtype} not emulated"
            else:
                certs.setdefault(eui, target.certificates())
                _ensure_ka(keystore, target)
                try:
                    _run_case(case, target, t0, keystore, result)
                except NotImplementedError as e:
                    if not case.alert_only:
                        raise
                    result.status, result.skip_group = "skipped", "stimulate"
                    result.reason = f"cannot stimulate: {e}"
                else:
                    result.status = "failed" if result.failures else "passed"
        except GbcsEmuError as e:
            result.status, result.failures = "failed", result.failures + [f"error: {e}"]
        except Exception as e:  # a crash in a device is a failure of that case, not of the run
            result.status = "failed"
            result.failures = result.failures + [f"error: {type(e).__name__}: {e}{_where(e)}"]
        result.seconds = time.perf_counter() - began
        report.results.append(result)
        _print_result(result, verbose, out)
        if save is not None and result.frames:
            _save_frames(Path(save), result)
    if save is not None:
        _save_certificates(Path(save) / "keystore", certs)
    report.results.sort(key=lambda r: r.case.name)     # run order may follow counters; the report, names
    return report


def _remote_skip(case: Case, eui: str, dtype: str, remote, stale: dict[str, str],
                 keystore: Keystore) -> tuple[str, str] | None:
    """(skip group, reason) of a case the device under test cannot take, or None."""
    if remote.eui is not None and eui != remote.eui:
        return "other device", f"addressed to {eui}; the device under test is {remote.eui}"
    if remote.device_type is not None and dtype != str(remote.device_type).upper():
        return "other device", f"a {dtype} case; the device under test is a {remote.device_type}"
    if remote.controlled:
        return None
    need = stale.get(case.name)        # _run_all: what only control sets up, or a counter already used
    if need is not None:
        return "needs --control", f"{NEEDS_CONTROL} ({need})"
    return None


def _where(e: BaseException) -> str:
    """` (file:line)` of the innermost frame of a crash, so a failure line points at the code to fix."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return ""
    path = Path(tb.tb_frame.f_code.co_filename)
    try:
        path = path.relative_to(Path(__file__).resolve().parents[2])
    except ValueError:
        pass
    return f" ({path.as_posix()}:{tb.tb_lineno})"


def _ensure_ka(keystore: Keystore, target: Target) -> None:
    """A device whose KA certificate the keystore lacks (self-issued) must still have its MACs checked."""
    ka = target.certificates().get("ka")
    if ka is None:
        return
    try:
        from cryptography import x509
        cert = x509.load_der_x509_certificate(ka)
        from protocols.security.keystore import eui_from_certificate
        eui = eui_from_certificate(cert)
        if eui is not None and keystore.entry(eui, Usage.KA) is None:
            keystore.add_certificate(cert, source=f"<emulated {eui.hex()}-ka>")
    except (ValueError, GbcsEmuError):
        pass


def _print_result(result: CaseResult, verbose: bool, out) -> None:
    name = result.case.name
    if result.status == "failed":
        for f in result.failures:
            out(f"FAIL {name}: {f}")
    elif verbose and result.status == "passed":
        out(f"ok   {name}")
    elif verbose:
        out(f"SKIP {name}: {result.reason}")


# ------------------------------------------------------------------------------------------------- outputs


def _emu_names(case: Case, frames: list[bytes]) -> list[str]:
    """File names for the emitted frames: the case's file with COMMAND → RESPONSE_EMU / ALERT_EMU_<n>."""
    src = case.source.name
    if case.command is not None:
        head = src[: -len("_COMMAND_GBCS.HEX")]
        tail = "_GBCS.HEX"
    else:
        i = src.upper().rfind("_ALERT")
        head, tail = src[:i], src[i + len("_ALERT"):]
    names, n_resp, n_alert, n_other = [], 0, 0, 0
    for f in frames:
        cra = _cra(f)
        if cra == 2:
            n_resp += 1
            names.append(f"{head}_RESPONSE_EMU{'' if n_resp == 1 else f'_{n_resp}'}{tail}")
        elif cra == 3:
            n_alert += 1
            names.append(f"{head}_ALERT_EMU_{n_alert}{tail}")
        else:
            n_other += 1
            names.append(f"{head}_FRAME_EMU_{n_other}{tail}")
    return names


def _save_frames(root: Path, result: CaseResult) -> None:
    d = root / result.case.rel_dir if result.case.rel_dir else root
    d.mkdir(parents=True, exist_ok=True)
    for name, frame in zip(_emu_names(result.case, result.frames), result.frames):
        (d / name).write_text(frame.hex().upper() + "\n")


def _save_certificates(directory: Path, certs: dict[str, dict[str, bytes]]) -> None:
    from firmware_emu.core.provisioning import certificate_pem
    directory.mkdir(parents=True, exist_ok=True)
    for eui, by_usage in sorted(certs.items()):
        for usage, der in sorted(by_usage.items()):
            if der:
                (directory / f"{eui.lower()}-{usage}.pem").write_bytes(certificate_pem(der))


def write_junit(report: Report, path: Path) -> None:
    """JUnit XML: one testcase per case (classname = case directory), skipped ones as <skipped>."""
    suite = ET.Element("testsuite", name="rtds", tests=str(len(report.results)), failures=str(report.failed),
                       errors="0", skipped=str(report.skipped),
                       time=f"{sum(r.seconds for r in report.results):.3f}")
    for r in report.results:
        stem = r.case.name.rsplit("/", 1)[-1]
        tc = ET.SubElement(suite, "testcase", classname=r.case.rel_dir or ".", name=stem, time=f"{r.seconds:.3f}")
        if r.status == "failed":
            el = ET.SubElement(tc, "failure", message=r.failures[0] if r.failures else "failed")
            el.text = "\n".join(r.failures)
        elif r.status == "skipped":
            ET.SubElement(tc, "skipped", message=r.reason)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)
