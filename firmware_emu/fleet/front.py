"""The DCC-side front: a built-in remote party that builds commands for users, behind threshold anomaly detection.

Theory of operation
-------------------
A *user* is a remote party (supplier, network operator...) named by its EUI. `DccFront.submit(command, user,
now)` takes the JSON form of a command (as `gbcs-emu decode` prints it) and either sends it or holds it back:

1. **Use case.** The message code (or `use_case` name) in the grouping header's other-information names the
   use case (`ECS43`), through the registry.
2. **Anomaly detection** (the SEC's anomaly detection thresholds). Every configured `Threshold` that matches
   the user and use case keeps a sliding window of the times at which matching commands were sent: a command at
   `now` sees the ones sent in `(now - window, now]`. When a window already holds `limit` commands, the command
   is **quarantined**: not built, not sent (it consumes no originator counter), kept with an `AnomalyReport`
   (user, use case, count including this one, limit, window). `release(id, now)` builds and sends it anyway
   (the user confirmed it; it then counts in the windows), `discard(id)` drops it. A threshold's `user = "*"`
   applies to every user, each counted on its own; `use_case = "*"` counts all of a user's use cases together.
   Each window keeps at most `limit` times, and the quarantine holds at most `max_quarantined` commands
   (`QuarantineFull` beyond), so a flood costs bounded memory.
3. **Routing and security** (`hil.remote_party.RemoteParty`). Commands the DCC's Access Control Broker
   originates on behalf of a user (the CHF use cases, joins and unjoins, ... : `ACB_ROUTED`, when the user's role
   may not send them itself) are built by the ACB with the user as *supplementary remote party* (other-info
   with supplementary remote party id and counter, and for the URP reads the user's KA certificate). Everything
   else is built as the user. Critical commands are signed with the originator's DS key; every command carries
   the MAC keyed by the ACB's KA key and the device's.

Nothing here does I/O: the caller hands the `Sent.frame` to a transport. Counters live in the `CounterStore`
given (in memory by default; pass a path to keep them strictly increasing across restarts).

Thresholds from TOML
--------------------
::

    [anomaly_detection]
    max_quarantined = 10000      # commands held at most (default 10000)
    max_reports = 10000          # undrained reports kept (default 10000; the oldest are dropped)

    [[anomaly_detection.thresholds]]
    user = "90B3D51F30010000"    # remote party EUI (16 hex digits), or "*" for every user (each on its own)
    use_case = "ECS43"           # GBCS use case name, or "*" for all of the user's use cases together
    limit = 100                  # commands allowed per window; the limit+1-th is quarantined
    window = "1h"                # sliding window: seconds as a number, or a string with s / m / h / d

`AnomalyConfig.from_toml(text)` reads it (the section may also be given as a mapping: `from_mapping`).
"""
from __future__ import annotations

import copy
import itertools
import os
import re
import tomllib
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from protocols.errors import EncodeError, GbcsEmuError
from protocols.gbcs.registry import REGISTRY
from protocols.security.eui import EuiLike, as_eui, eui_hex
from protocols.security.keystore import Keystore, Role

from hil.remote_party import CounterStore, RemoteParty

__all__ = ["ACB_ROUTED", "URP_USE_CASES", "FrontError", "FrontConfigError", "QuarantineFull", "UnknownQuarantine",
           "UnknownUser", "Threshold", "AnomalyConfig", "AnomalyReport", "Sent", "Quarantined",
           "QuarantinedCommand", "DccFront", "use_case_of"]

#: Use cases the ACB originates on behalf of a supplementary remote party (GBCS other-information of 18 bytes;
#: brief §1.4), when the user's role may not send them itself.
ACB_ROUTED = frozenset(n.upper() for n in (
    "CCS01", "CCS02", "CCS03", "CCS05", "CCS06", "CCS07", "ECS26i", "ECS26n", "ECS35c", "ECS35d",
    "DBCH01", "DBCH02", "DBCH03", "DBCH04", "DBCH05", "ECS21c", "ECS39b", "ECS50", "ECS61d", "GCS15d", "GCS31",
    "GCS36", "CS03B", "CS03A2", "CS03C", "CS04B", "CS07", "CS08"))
#: "Unknown remote party" reads: ACB-routed and carrying the user's KA certificate.
URP_USE_CASES = frozenset({"ECS21B", "GCS16B", "GCS61"})

_ROLE_TITLES = {r: r.name.replace("_", " ").title() for r in Role}
_WINDOW = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


# ---------------------------------------------------------------------------------------------------------------
# errors


class FrontError(GbcsEmuError):
    """Base of the DCC front's errors."""


class FrontConfigError(FrontError):
    """A threshold configuration that cannot be used."""


class QuarantineFull(FrontError):
    """The quarantine holds `max_quarantined` commands: release or discard some first."""


class UnknownQuarantine(FrontError, KeyError):
    """No quarantined command with that id."""


class UnknownUser(FrontError):
    """A user the front has no keys for."""


# ---------------------------------------------------------------------------------------------------------------
# configuration


def _window_seconds(value) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        m = _WINDOW.match(str(value))
        if not m:
            raise FrontConfigError(f"bad window {value!r}: seconds, or a number with s / m / h / d")
        seconds = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if not seconds > 0:
        raise FrontConfigError(f"a window must be positive, got {value!r}")
    return seconds


@dataclass(frozen=True)
class Threshold:
    """At most `limit` commands per sliding `window` seconds for `user` (EUI hex or "*") and `use_case`
    (spec name as the registry spells it, e.g. `ECS17a`, or "*"); names compare case-insensitively."""

    user: str
    use_case: str
    limit: int
    window: float

    def matches(self, user: str, use_case: str) -> bool:
        return self.user in ("*", user) and (self.use_case == "*" or self.use_case.upper() == use_case.upper())

    def key(self, user: str, use_case: str) -> tuple[str, str]:
        """The window a command counts in: per user always, per use case unless the threshold spans them all."""
        return user, (use_case.upper() if self.use_case != "*" else "*")

    @classmethod
    def from_mapping(cls, data: Mapping) -> "Threshold":
        if not isinstance(data, Mapping):
            raise FrontConfigError(f"a threshold is a table, got {data!r}")
        unknown = set(data) - {"user", "use_case", "limit", "window"}
        if unknown:
            raise FrontConfigError(f"unknown threshold keys: {', '.join(sorted(unknown))}")
        user = str(data.get("user", "*")).strip()
        if user != "*":
            try:
                user = eui_hex(user)
            except (GbcsEmuError, ValueError):
                raise FrontConfigError(f"threshold user {user!r} is not an EUI (16 hex digits) or '*'") from None
        use_case = str(data.get("use_case", "*")).strip()
        if use_case != "*":
            entry = REGISTRY.by_name(use_case)
            if entry is None:
                raise FrontConfigError(f"unknown use case {use_case!r} in a threshold")
            use_case = entry.name
        limit = data.get("limit")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise FrontConfigError(f"threshold limit must be a non-negative integer, got {limit!r}")
        if "window" not in data:
            raise FrontConfigError("threshold window missing")
        return cls(user, use_case, limit, _window_seconds(data["window"]))


@dataclass(frozen=True)
class AnomalyConfig:
    """Thresholds and the quarantine's bounds (module docstring for the TOML form)."""

    thresholds: tuple[Threshold, ...] = ()
    max_quarantined: int = 10000
    max_reports: int = 10000

    @classmethod
    def from_mapping(cls, data: Mapping | None) -> "AnomalyConfig":
        data = dict(data or {})
        unknown = set(data) - {"thresholds", "max_quarantined", "max_reports"}
        if unknown:
            raise FrontConfigError(f"unknown anomaly_detection keys: {', '.join(sorted(unknown))}")
        items = data.get("thresholds", [])
        if not isinstance(items, list):
            raise FrontConfigError("anomaly_detection.thresholds must be an array of tables")
        bounds = {}
        for k in ("max_quarantined", "max_reports"):
            if k in data:
                v = data[k]
                if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                    raise FrontConfigError(f"{k} must be a positive integer, got {v!r}")
                bounds[k] = v
        return cls(tuple(Threshold.from_mapping(t) for t in items), **bounds)

    @classmethod
    def from_toml(cls, text: str | bytes, section: str = "anomaly_detection") -> "AnomalyConfig":
        """Read the `[anomaly_detection]` section of a TOML document (absent section: no thresholds)."""
        try:
            doc = tomllib.loads(text.decode("utf-8") if isinstance(text, bytes) else text)
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise FrontConfigError(f"bad TOML: {e}") from None
        return cls.from_mapping(doc.get(section))

    @classmethod
    def load(cls, path: str | os.PathLike, section: str = "anomaly_detection") -> "AnomalyConfig":
        with open(path, "rb") as f:
            return cls.from_toml(f.read(), section)


# ---------------------------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class AnomalyReport:
    """A command held back: who, which use case, how many in the window (this one included), the threshold."""

    id: int
    user: str
    use_case: str
    count: int
    limit: int
    window: float
    at: float
    threshold: Threshold

    def as_dict(self) -> dict:
        return {"id": self.id, "user": self.user, "use_case": self.use_case, "count": self.count,
                "limit": self.limit, "window": self.window, "at": self.at,
                "threshold": {"user": self.threshold.user, "use_case": self.threshold.use_case}}


@dataclass(frozen=True)
class Sent:
    """A command built and to be sent: the wire bytes and what they are."""

    frame: bytes = field(repr=False)
    user: str
    use_case: str
    message_code: int
    originator: str
    recipient: str
    counter: int
    signed: bool
    via_acb: bool


@dataclass(frozen=True)
class Quarantined:
    """A command held back by anomaly detection."""

    report: AnomalyReport


@dataclass
class QuarantinedCommand:
    id: int
    command: dict = field(repr=False)
    user: str
    use_case: str
    at: float
    report: AnomalyReport
    options: dict = field(default_factory=dict, repr=False)


def use_case_of(command: Mapping) -> tuple[str, int]:
    """(spec name, message code) of a command's JSON form; unknown codes are named `0xNNNN`."""
    gh = command.get("grouping_header") if isinstance(command, Mapping) else None
    if not isinstance(gh, Mapping):
        raise EncodeError("grouping_header missing", "grouping_header")
    oi = gh.get("other_information") or {}
    if oi.get("message_code") not in (None, ""):
        value = oi["message_code"]
        try:
            code = value if isinstance(value, int) and not isinstance(value, bool) else int(str(value), 0)
        except ValueError:
            raise EncodeError(f"bad message code {value!r}", "grouping_header.other_information.message_code") \
                from None
        entry = REGISTRY.get(code)
        return (entry.name if entry else f"0x{code:04X}"), code
    if oi.get("use_case"):
        entry = REGISTRY.by_name(str(oi["use_case"]))
        if entry is None:
            raise EncodeError(f"unknown use case {oi['use_case']!r}", "grouping_header.other_information.use_case")
        return entry.name, entry.code
    raise EncodeError("message_code missing", "grouping_header.other_information")


# ---------------------------------------------------------------------------------------------------------------
# the front


class DccFront:
    """Builds and sends commands for users, with anomaly detection and a quarantine (module docstring)."""

    def __init__(self, keystore: Keystore | str | os.PathLike, users: Iterable[EuiLike] | None = None, *,
                 config: AnomalyConfig | None = None, acb: EuiLike | None = None,
                 counter_store: CounterStore | str | os.PathLike | None = None, initial_counter: int | None = None,
                 deterministic_signatures: bool = False):
        self.keystore = keystore if isinstance(keystore, Keystore) else Keystore(Path(keystore))
        self.config = config or AnomalyConfig()
        self.counters = counter_store if isinstance(counter_store, CounterStore) \
            else CounterStore(counter_store, initial_counter)
        self._kw = {"counter_store": self.counters, "deterministic_signatures": deterministic_signatures}
        self.acb_party = RemoteParty(self.keystore, acb if acb is not None else self._find_acb(), **self._kw)
        self.parties: dict[str, RemoteParty] = {eui_hex(self.acb_party.eui): self.acb_party}
        for u in users or ():
            self.add_user(u)
        self._windows: dict[tuple[int, str, str], deque] = {}
        self._quarantine: OrderedDict[int, QuarantinedCommand] = OrderedDict()
        self.reports: deque[AnomalyReport] = deque(maxlen=self.config.max_reports)
        self._ids = itertools.count(1)
        self.sent_count = 0
        self.quarantined_count = 0

    def __repr__(self) -> str:
        return (f"<DccFront {len(self.parties)} parties, {len(self.config.thresholds)} thresholds, "
                f"{len(self._quarantine)} quarantined>")

    def _find_acb(self) -> bytes:
        from hil.verify import acb_euis
        for eui in acb_euis(self.keystore):
            if self.keystore.ka_private(eui) is not None:
                return eui
        raise FrontError("no Access Control Broker (role 04) with a KA private key in the keystore: pass acb=")

    def add_user(self, user: EuiLike) -> RemoteParty:
        """Act for `user` (its DS key signs its critical commands)."""
        key = eui_hex(user)
        if key not in self.parties:
            self.parties[key] = RemoteParty(self.keystore, as_eui(user), acb=self.acb_party.eui, **self._kw)
        return self.parties[key]

    def party(self, user: EuiLike) -> RemoteParty:
        try:
            return self.parties[eui_hex(user)]
        except KeyError:
            raise UnknownUser(f"the front does not act for {eui_hex(user)} (add_user first)") from None

    # -- anomaly detection -------------------------------------------------------------------------------------

    def _over(self, user: str, use_case: str, now: float) -> AnomalyReport | None:
        """The first threshold this command would break, as a report (None: within every threshold)."""
        for i, t in enumerate(self.config.thresholds):
            if not t.matches(user, use_case):
                continue
            window = self._window(i, t, user, use_case, now)
            if len(window) >= t.limit:
                return AnomalyReport(next(self._ids), user, use_case, len(window) + 1, t.limit, t.window, now, t)
        return None

    def _window(self, i: int, t: Threshold, user: str, use_case: str, now: float) -> deque:
        key = (i, *t.key(user, use_case))
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = deque(maxlen=max(t.limit, 1))
        horizon = now - t.window
        while window and window[0] <= horizon:
            window.popleft()
        return window

    def _count(self, user: str, use_case: str, now: float) -> None:
        for i, t in enumerate(self.config.thresholds):
            if t.matches(user, use_case) and t.limit > 0:
                self._window(i, t, user, use_case, now).append(now)

    def window_count(self, user: EuiLike, use_case: str, now: float) -> dict[Threshold, int]:
        """How many commands each matching threshold sees in its window at `now`."""
        user = eui_hex(user)
        return {t: len(self._window(i, t, user, use_case, now))
                for i, t in enumerate(self.config.thresholds) if t.matches(user, use_case)}

    # -- submitting --------------------------------------------------------------------------------------------

    def submit(self, command: Mapping, user: EuiLike, now: float, *, route: str | None = None,
               urp: bool | None = None, sign: bool | None = None) -> Sent | Quarantined:
        """Send `command` for `user` unless a threshold holds it back (module docstring).

        `route`: "acb" or "direct" overrides the routing rule; `urp` the URP form; `sign` the registry's
        criticality (tests of refusals)."""
        user_hex = eui_hex(user)
        self.party(user_hex)
        use_case, _ = use_case_of(command)
        options = {"route": route, "urp": urp, "sign": sign}
        report = self._over(user_hex, use_case, now)
        if report is None:
            sent = self._build(command, user_hex, use_case, **options)
            self._count(user_hex, use_case, now)
            self.sent_count += 1
            return sent
        if len(self._quarantine) >= self.config.max_quarantined:
            raise QuarantineFull(f"{len(self._quarantine)} commands already quarantined: {use_case} for "
                                 f"{user_hex} refused (release or discard some)")
        self._quarantine[report.id] = QuarantinedCommand(report.id, copy.deepcopy(dict(command)), user_hex,
                                                         use_case, now, report, options)
        self.reports.append(report)
        self.quarantined_count += 1
        return Quarantined(report)

    def quarantined(self) -> list[QuarantinedCommand]:
        """Commands held, oldest first."""
        return list(self._quarantine.values())

    def release(self, qid: int, now: float) -> Sent:
        """Send a quarantined command after all (it then counts in the windows)."""
        q = self._take(qid)
        try:
            sent = self._build(q.command, q.user, q.use_case, **q.options)
        except BaseException:
            self._quarantine[qid] = q
            self._quarantine.move_to_end(qid, last=False)
            raise
        self._count(q.user, q.use_case, now)
        self.sent_count += 1
        return sent

    def discard(self, qid: int) -> QuarantinedCommand:
        """Drop a quarantined command; it is never sent."""
        return self._take(qid)

    def _take(self, qid: int) -> QuarantinedCommand:
        try:
            return self._quarantine.pop(qid)
        except KeyError:
            raise UnknownQuarantine(f"no quarantined command {qid}") from None

    def drain_reports(self) -> list[AnomalyReport]:
        """Reports not yet collected, oldest first (the queue keeps the newest `max_reports`)."""
        out = list(self.reports)
        self.reports.clear()
        return out

    # -- building ----------------------------------------------------------------------------------------------

    def routes_via_acb(self, user: str, use_case: str) -> bool:
        """The ACB originates `use_case` on behalf of `user` (module docstring, step 3)."""
        party = self.party(user)
        if party is self.acb_party:
            return False
        name = use_case.upper()
        if name in URP_USE_CASES:
            return True
        if name not in ACB_ROUTED:
            return False
        entry = REGISTRY.by_name(use_case)
        roles = entry.roles if entry is not None else None
        return not roles or party.role is None or _ROLE_TITLES[party.role] not in roles

    def _build(self, command: Mapping, user: str, use_case: str, *, route: str | None, urp: bool | None,
               sign: bool | None) -> Sent:
        if route not in (None, "acb", "direct"):
            raise FrontError(f"route must be 'acb' or 'direct', got {route!r}")
        via_acb = self.routes_via_acb(user, use_case) if route is None else route == "acb"
        party = self.party(user)
        if via_acb:
            if urp is None:
                urp = use_case.upper() in URP_USE_CASES
            frame = self.acb_party.build(dict(command), on_behalf_of=party.eui, urp=urp or None, sign=sign)
            builder = self.acb_party
        else:
            frame = party.build(dict(command), sign=sign)
            builder = party
        gh = command["grouping_header"]
        _, code = use_case_of(command)
        entry = REGISTRY.get(code)
        if sign is None:  # the same rule as RemoteParty.build
            if entry is not None and entry.critical is not None:
                sign = entry.critical
            else:
                sign = isinstance(command.get("signature"), str) and command.get("signature") != ""
        signed = bool(sign)
        return Sent(frame, user, use_case, code, eui_hex(builder.eui), eui_hex(gh["recipient"]),
                    builder.last_counter, signed, via_acb)
