"""The device state machine every emulated device type shares.

Theory of operation
-------------------
A device is bytes-in, bytes-out and time-in: `receive(frame, now)` returns the frames a real device would send
back (its response, and any alerts the command causes); `tick(now)` returns what time alone causes (future-dated
commands coming due, scheduled alerts). Neither reads a clock or touches I/O.

`receive` runs the GBCS checks of `core.security.check_command`. A command that fails them changes nothing in
the device except its security log and alert counter, and yields the alert GBCS prescribes (or nothing, for
frames the device cannot attribute). A command that passes goes to `handle(cmd, now)`, which the device type
implements (per use case, by message code) and which returns a `Reply`: the response payload, whether the
response carries the device's date-time, and alerts. Only then is the command's counter recorded, so a replay of
an accepted command is refused and a refused one never moves the counter.

All that must survive a restart lives in `self.state`, a JSON-serialisable dict: identity, trust anchors,
counters (`state["counters"]["alert"]`, `state["counters"]["remote"][EUI]`), the schedule of future-dated work
and the device type's own object model. A host saves it after every `receive`/`tick` and before it sends what
they returned (`core.store.StateStore` refuses counters that go backwards). `faults` (test preconditions such as
"this register has a hardware fault") and `events` (for logs and metrics) are not persisted.
"""
from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass, field
from typing import ClassVar

from protocols.gbcs.registry import REGISTRY
from protocols.security.eui import as_eui, eui_hex
from protocols.security.keystore import Role

from firmware_emu.core import security
from firmware_emu.core.alerts import alert_name, generic_message_code, CRITICAL_ALERT_CODES
from firmware_emu.core.security import DeviceKeys, InboundCommand, Rejection

log = logging.getLogger(__name__)

__all__ = ["Emitted", "Reply", "FaultPlan", "Device", "RESPONSE_DATE_TIME_USE_CASES", "ROLE_KEYS"]

#: Reads whose responses carry the device's date-time (brief §1.3), besides every future-dated-capable use case.
RESPONSE_DATE_TIME_USE_CASES = frozenset({
    "CS01a", "CS01b", "ECS17a", "ECS17b", "ECS17c", "ECS17d", "ECS17e", "ECS18a", "ECS18b", "ECS19", "ECS23",
    "ECS23b", "GCS13a", "GCS13b", "GCS13c", "GCS14", "GCS60a",
})

#: How much future-dated work a device holds at once (GBCS devices have a fixed capacity for it).
MAX_SCHEDULED = 256

#: How many raised alerts the persisted `state["alert_log"]` keeps (the event logs read it).
ALERT_LOG_DEPTH = 100

#: How trust anchors are keyed in the persisted state.
ROLE_KEYS = {r: r.name.lower() for r in Role}
_ROLE_BY_KEY = {v: k for k, v in ROLE_KEYS.items()}


@dataclass
class Emitted:
    """One frame a device sends: a response or an alert."""

    kind: str                    # "response" | "alert"
    frame: bytes
    message_code: int
    counter: int
    recipient: str
    alert_code: int | None = None

    def describe(self) -> str:
        what = f"alert {alert_name(self.alert_code)}" if self.alert_code is not None else self.kind
        return f"{what} 0x{self.message_code:04X} #{self.counter} → {self.recipient} ({len(self.frame)} B)"


@dataclass
class Reply:
    """What a use-case handler returns: the response payload bytes and what goes with it."""

    content: bytes
    date_time: bool | None = None          # None: the use case decides (RESPONSE_DATE_TIME_USE_CASES)
    alerts: list[Emitted] = field(default_factory=list)
    critical: bool | None = None           # None: the use case's criticality
    other_information: dict | None = None  # None: echo the command's
    respond: bool = True


class FaultPlan:
    """Injected faults: the preconditions of a test scenario ("this object has a hardware fault").

    Targets are strings the device type defines (DLMS: `class/obis/a<attr>` or `class/obis/m<method>`; GBZ:
    `cluster/command`; ASN.1: the use-case name). `at_execution` faults hit future-dated work when it runs."""

    def __init__(self):
        self._now: dict[str, str] = {}
        self._later: dict[str, str] = {}

    def fail(self, target: str, result: str = "hardware-fault", *, at_execution: bool = False) -> None:
        (self._later if at_execution else self._now)[target] = result

    def lookup(self, target: str, *, executing: bool = False) -> str | None:
        return (self._later if executing else self._now).get(target)

    def clear(self) -> None:
        self._now.clear()
        self._later.clear()

    def __bool__(self) -> bool:
        return bool(self._now or self._later)


class Device:
    """Base of every emulated device type (module docstring)."""

    DEVICE_TYPE: ClassVar[str] = ""
    #: The first alert counter (RTDS devices start at 2000 for ESME, 3000 GSME, 4000 CHF, 5000 PPMID).
    ALERT_COUNTER_START: ClassVar[int] = 1

    def __init__(self, keys: DeviceKeys, state: dict | None = None, *, anchors: dict[Role, bytes] | None = None,
                 now: float = 0.0, profile: dict | None = None):
        self.keys = keys
        self.eui = keys.eui
        self.faults = FaultPlan()
        self.events: list[dict] = []
        self.now = now
        if state is None:
            state = self.initial_state(anchors or {}, now, profile or {})
        self.state = state

    # -- state ---------------------------------------------------------------------------------------------------

    def initial_state(self, anchors: dict[Role, bytes], now: float, profile: dict) -> dict:
        """A factory-fresh device; device types extend it with their object model."""
        return {
            "device_type": self.DEVICE_TYPE,
            "eui": eui_hex(self.eui),
            "anchors": {ROLE_KEYS[Role(r)]: eui_hex(e) for r, e in anchors.items()},
            "counters": {"alert": self.ALERT_COUNTER_START - 1, "remote": {}},
            "schedule": [],
            "security_log": [],
            "profile": dict(profile),
        }

    @property
    def profile(self) -> dict:
        """The device profile it was built from (model, seed, CPL, twin element...): a fleet configuration."""
        return self.state.get("profile", {})

    def firmware_activated(self, version: str) -> None:
        """A new firmware image runs (CS06); device types mirror the version into their object model."""

    @property
    def anchors(self) -> dict[Role, bytes]:
        """{role: EUI} from `state["anchors"]` (a fresh dict; the conversion is cached while the persisted
        anchors are equal, string for string, to those it was made from)."""
        items = tuple(self.state["anchors"].items())
        cached = self.__dict__.get("_anchors_cache")
        if cached is None or cached[0] != items:
            cached = (items, {_ROLE_BY_KEY[k]: as_eui(v) for k, v in items})
            self._anchors_cache = cached
        return dict(cached[1])

    def set_anchor(self, role: Role, eui) -> None:
        self.state["anchors"][ROLE_KEYS[Role(role)]] = eui_hex(eui)

    def event(self, name: str, **detail) -> None:
        self.events.append({"event": name, "t": self.now, **detail})

    # -- inbound -------------------------------------------------------------------------------------------------

    def receive(self, frame: bytes, now: float) -> list[Emitted]:
        """Process one inbound frame; returns the frames to send (see module docstring)."""
        self.now = now
        out = self._run_due(now)
        anchors = self.anchors
        try:
            cmd = security.check_command(
                frame, eui=self.eui, device_type=self.DEVICE_TYPE, keys=self.keys, anchors=anchors,
                last_counters=self.state["counters"]["remote"], acb=anchors.get(Role.ACCESS_CONTROL_BROKER))
        except Rejection as r:
            return out + self._rejected(r)
        self.event("command", use_case=cmd.entry.name, counter=cmd.counter, remote=eui_hex(cmd.remote_party))
        reply = self.handle(cmd, now)
        if cmd.entry.replay_protection:
            remote = self.state["counters"]["remote"]
            key = eui_hex(cmd.remote_party)
            remote[key] = max(remote.get(key, -1), cmd.counter)
        if reply.respond:
            out.append(self._response(cmd, reply, now))
        return out + reply.alerts

    def _rejected(self, r: Rejection) -> list[Emitted]:
        self.event("rejected", reason=r.reason, detail=str(r))
        entry = {"t": self.now, "reason": r.reason}
        if r.header is not None:
            entry.update(originator=r.header["originator"], counter=r.header["originator_counter"],
                         message_code=r.header["other_information"]["message_code"])
        log_ = self.state["security_log"]
        log_.append(entry)
        del log_[:-100]
        if r.alert_code is None:
            return []
        return [self.raise_alert(r.alert_code)]

    def _response(self, cmd: InboundCommand, reply: Reply, now: float) -> Emitted:
        with_time = reply.date_time
        if with_time is None:
            with_time = cmd.entry.future_dated_capable is True or cmd.entry.name in RESPONSE_DATE_TIME_USE_CASES
        frame = security.build_response(
            self.keys, cmd, reply.content, date_time=self.response_date_time(now) if with_time else None,
            critical=reply.critical, other_information=reply.other_information)
        return Emitted("response", frame, cmd.code, cmd.header["originator_counter"], cmd.header["originator"])

    # -- outbound alerts -----------------------------------------------------------------------------------------

    def next_alert_counter(self) -> int:
        counters = self.state["counters"]
        counters["alert"] += 1
        return counters["alert"]

    def alert_recipient(self, alert_code: int | None, message_code: int) -> bytes:
        """Alerts go to the supplier (device types override: the NO for ECS80, the ACB for hub alerts)."""
        anchors = self.anchors
        return anchors.get(Role.SUPPLIER) or anchors.get(Role.NETWORK_OPERATOR) or next(iter(anchors.values()))

    def raise_alert(self, alert_code: int | None, *, message_code: int | None = None, content: bytes | None = None,
                    critical: bool | None = None, recipient=None, other_information: dict | None = None,
                    extra=None) -> Emitted:
        """Build one alert frame with the next alert counter. `content` defaults to the device type's alert
        payload for `alert_code` (`alert_content`); `message_code` to the generic 0x1000/0x1001."""
        if message_code is None:
            message_code = generic_message_code(alert_code)
        if critical is None:
            entry = REGISTRY.get(message_code)
            critical = entry.critical if entry is not None and entry.critical is not None else \
                alert_code in CRITICAL_ALERT_CODES
        counter = self.next_alert_counter()
        if content is None:
            content = self.alert_content(alert_code, counter, self.now, extra)
        to = as_eui(recipient) if recipient is not None else self.alert_recipient(alert_code, message_code)
        frame = security.build_alert(self.keys, counter=counter, recipient=to, message_code=message_code,
                                     content=content, critical=critical, other_information=other_information)
        self.event("alert", alert_code=alert_code, message_code=message_code, counter=counter)
        alert_log = self.state.setdefault("alert_log", [])
        alert_log.append({"t": self.now, "alert_code": alert_code, "message_code": message_code, "counter": counter})
        del alert_log[:-ALERT_LOG_DEPTH]
        return Emitted("alert", frame, message_code, counter, eui_hex(to), alert_code)

    # -- time ------------------------------------------------------------------------------------------------------

    def schedule(self, at: float, kind: str, data: dict) -> None:
        """Remember work to do at simulated time `at` (persisted, ordered by time). A device holds at most
        `MAX_SCHEDULED` pieces of pending work: beyond that the command that asks for more fails
        (`ScheduleFull`, temporary-failure) instead of growing the state without bound."""
        sched = self.state["schedule"]
        if len(sched) >= MAX_SCHEDULED:
            from firmware_emu.core.cosem import ScheduleFull
            self.event("schedule_full", kind=kind)
            raise ScheduleFull("temporary-failure", f"{MAX_SCHEDULED} pieces of future-dated work already pending")
        item = {"at": at, "kind": kind, "data": data}
        keys = [s["at"] for s in sched]
        sched.insert(bisect.bisect_right(keys, at), item)

    def unschedule(self, predicate) -> int:
        sched = self.state["schedule"]
        keep = [s for s in sched if not predicate(s)]
        removed = len(sched) - len(keep)
        sched[:] = keep
        return removed

    def next_wakeup(self) -> float | None:
        sched = self.state["schedule"]
        return sched[0]["at"] if sched else None

    def tick(self, now: float) -> list[Emitted]:
        """What time alone causes up to `now`."""
        self.now = now
        return self._run_due(now) + self.on_tick(now)

    def _run_due(self, now: float) -> list[Emitted]:
        out: list[Emitted] = []
        sched = self.state["schedule"]
        while sched and sched[0]["at"] <= now:
            item = sched.pop(0)
            self.now = max(self.now, item["at"])
            out += self.on_timer(item["kind"], item["data"], item["at"])
        self.now = now
        return out

    # -- what device types implement -------------------------------------------------------------------------------

    def handle(self, cmd: InboundCommand, now: float) -> Reply:
        raise NotImplementedError

    def on_timer(self, kind: str, data: dict, at: float) -> list[Emitted]:
        """Scheduled work coming due (future-dated commands...)."""
        return []

    def on_tick(self, now: float) -> list[Emitted]:
        """Time-driven behaviour besides the schedule (consumption thresholds, outages...)."""
        return []

    def alert_content(self, alert_code: int | None, counter: int, now: float, extra) -> bytes:
        raise NotImplementedError

    def stimulate(self, message_code: int, alert_code: int | None, now: float, **detail) -> list[Emitted]:
        """Make the device live through what raises this alert by itself (an outage, a tamper, a credit event,
        a billing-log update...), as a test or a fleet scenario asks. Device types implement what they can;
        NotImplementedError means "this device cannot be made to raise that"."""
        raise NotImplementedError(f"{self.DEVICE_TYPE} cannot be stimulated to raise 0x{message_code:04X}")

    def prepare(self, condition: str, **detail) -> None:
        """Bring the device into a state a test scenario presupposes (e.g. "device_joined": another device is
        already in its device log), the way an installer would. NotImplementedError when it cannot."""
        raise NotImplementedError(f"{self.DEVICE_TYPE} cannot be prepared for {condition!r}")

    def response_date_time(self, now: float) -> dict:
        from firmware_emu.core.clock import dlms_datetime_json
        return dlms_datetime_json(now)
