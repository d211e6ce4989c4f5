"""The Smart Metering Inventory (SMI): each device's SMI status, moved by use cases, fleet commands and time.

Theory of operation
-------------------
The SEC's inventory enrolment and withdrawal procedures give every device (other than Type 2 devices) an SMI
status with a date and a history. Here a status is a `SmiState`, and the only way to change it is an `SmiEvent`
named after what causes it:

* **use cases** the DCC sends or sees: CCS01 (add to the CHF device log: whitelisted), CCS02 (remove from it),
  CS03 (the device joined the HAN: installed not commissioned), ECS70 / GCS28 (the supplier set the meter's
  clock during commissioning: commissioned), CS04 (unjoin);
* **fleet commands** of the operator: `commission` (Commission Device for device types without a clock
  use case), `decommission`, `withdraw`, `suspend` / `resume` (the device model left the CPL / is back on it),
  `recover` / `recovery_complete` (compromise recovery), `reenrol` (a withdrawn device back to pending);
* **time**: `expire`, a pending device not whitelisted within the policy's `pending_ttl` is withdrawn.

`TRANSITIONS` is the one table of what is allowed (h11-style): `(state, event) -> next state`. A pair that is
not in it raises `IllegalTransition` naming the state and the event, and changes nothing. `resume` returns to
the state the device was suspended from (`RESUME_PREVIOUS` in the table), so a record remembers it.

`DeviceRecord` is the sans-IO state machine of one device (JSON-serialisable: `as_dict` / `from_dict`).
`InventoryStore` keeps the records in SQLite (WAL), one row per device plus an append-only audit table; a
transition and its audit row commit together, status counts are SQL `GROUP BY`s (nothing is loaded to count),
and exports stream page by page, so a million devices never sit in memory.
"""
from __future__ import annotations

import csv
import io
import json
import sqlite3
import threading
from dataclasses import dataclass
from enum import Enum
from typing import IO, Iterable, Iterator, Mapping

from protocols.errors import GbcsEmuError

from firmware_emu.core.store import open_wal

__all__ = [
    "SmiState", "SmiEvent", "TRANSITIONS", "RESUME_PREVIOUS", "USE_CASE_EVENTS", "InventoryError",
    "IllegalTransition", "UnknownDevice", "DuplicateDevice", "InventoryPolicy", "DeviceRecord", "Transition",
    "InventoryStatus", "InventoryStore", "event_for_use_case", "allowed_events", "subjects",
]


class SmiState(str, Enum):
    """SMI statuses (SEC inventory enrolment and withdrawal procedures)."""

    PENDING = "pending"
    WHITELISTED = "whitelisted"
    INSTALLED_NOT_COMMISSIONED = "installed_not_commissioned"
    COMMISSIONED = "commissioned"
    DECOMMISSIONED = "decommissioned"
    WITHDRAWN = "withdrawn"
    SUSPENDED = "suspended"
    RECOVERY = "recovery"
    RECOVERED = "recovered"

    def __str__(self) -> str:
        return self.value


class SmiEvent(str, Enum):
    """What moves a device between SMI statuses, named after its cause."""

    # use cases
    CCS01 = "ccs01"                    # Add Device to CHF device log
    CCS02 = "ccs02"                    # Remove device from CHF device log
    CS03 = "cs03"                      # joined the HAN (CS03A1/A2/B/C)
    CS04 = "cs04"                      # unjoined (CS04AC/B)
    ECS70 = "ecs70"                    # Set Clock on ESME (commissioning)
    GCS28 = "gcs28"                    # Set Clock on GSME (commissioning)
    # fleet commands
    COMMISSION = "commission"
    DECOMMISSION = "decommission"
    WITHDRAW = "withdraw"
    SUSPEND = "suspend"
    RESUME = "resume"
    RECOVER = "recover"
    RECOVERY_COMPLETE = "recovery_complete"
    REENROL = "reenrol"
    # time
    EXPIRE = "expire"

    def __str__(self) -> str:
        return self.value


class _Previous:
    """Table marker: go back to the state the device was suspended from."""

    def __repr__(self) -> str:
        return "RESUME_PREVIOUS"


RESUME_PREVIOUS = _Previous()

S, E = SmiState, SmiEvent
_COMMISSIONING = (E.ECS70, E.GCS28, E.COMMISSION)
_REMOVAL = (E.CS04, E.CCS02, E.DECOMMISSION)

#: The one table of allowed transitions: (state, event) -> next state (or RESUME_PREVIOUS).
TRANSITIONS: dict[tuple[SmiState, SmiEvent], "SmiState | _Previous"] = {
    (S.PENDING, E.CCS01): S.WHITELISTED,
    (S.PENDING, E.WITHDRAW): S.WITHDRAWN,
    (S.PENDING, E.EXPIRE): S.WITHDRAWN,

    (S.WHITELISTED, E.CS03): S.INSTALLED_NOT_COMMISSIONED,
    (S.WHITELISTED, E.CCS02): S.PENDING,           # taken off the whitelist before it joined
    (S.WHITELISTED, E.WITHDRAW): S.WITHDRAWN,

    **{(S.INSTALLED_NOT_COMMISSIONED, e): S.COMMISSIONED for e in _COMMISSIONING},
    **{(S.INSTALLED_NOT_COMMISSIONED, e): S.DECOMMISSIONED for e in _REMOVAL},
    (S.INSTALLED_NOT_COMMISSIONED, E.WITHDRAW): S.WITHDRAWN,
    (S.INSTALLED_NOT_COMMISSIONED, E.SUSPEND): S.SUSPENDED,
    (S.INSTALLED_NOT_COMMISSIONED, E.RECOVER): S.RECOVERY,

    **{(S.COMMISSIONED, e): S.DECOMMISSIONED for e in _REMOVAL},
    (S.COMMISSIONED, E.WITHDRAW): S.WITHDRAWN,
    (S.COMMISSIONED, E.SUSPEND): S.SUSPENDED,
    (S.COMMISSIONED, E.RECOVER): S.RECOVERY,

    (S.SUSPENDED, E.RESUME): RESUME_PREVIOUS,
    **{(S.SUSPENDED, e): S.DECOMMISSIONED for e in _REMOVAL},
    (S.SUSPENDED, E.WITHDRAW): S.WITHDRAWN,
    (S.SUSPENDED, E.RECOVER): S.RECOVERY,

    (S.RECOVERY, E.RECOVERY_COMPLETE): S.RECOVERED,
    **{(S.RECOVERY, e): S.DECOMMISSIONED for e in _REMOVAL},   # recovery failed: the device is abandoned

    **{(S.RECOVERED, e): S.COMMISSIONED for e in _COMMISSIONING},
    **{(S.RECOVERED, e): S.DECOMMISSIONED for e in _REMOVAL},
    (S.RECOVERED, E.WITHDRAW): S.WITHDRAWN,

    (S.WITHDRAWN, E.REENROL): S.PENDING,
    (S.WITHDRAWN, E.DECOMMISSION): S.DECOMMISSIONED,
    # DECOMMISSIONED is final.
}
del S, E

#: Use cases (spec names, upper case) that move the inventory of the device they concern.
USE_CASE_EVENTS: dict[str, SmiEvent] = {
    "CCS01": SmiEvent.CCS01, "CCS02": SmiEvent.CCS02,
    "CS03A1": SmiEvent.CS03, "CS03A2": SmiEvent.CS03, "CS03B": SmiEvent.CS03, "CS03C": SmiEvent.CS03,
    "CS04AC": SmiEvent.CS04, "CS04B": SmiEvent.CS04,
    "ECS70": SmiEvent.ECS70, "GCS28": SmiEvent.GCS28,
}


def event_for_use_case(use_case: str | int) -> SmiEvent | None:
    """The inventory event a use case (spec name such as `CS03B`, or message code) causes, or None."""
    if isinstance(use_case, int) and not isinstance(use_case, bool):
        from protocols.gbcs.registry import REGISTRY
        names = REGISTRY.names_for(use_case)
    else:
        names = [str(use_case)]
    for name in names:
        event = USE_CASE_EVENTS.get(name.upper())
        if event is not None:
            return event
    return None


def _use_case_name(msg: Mapping) -> str | None:
    oi = ((msg.get("grouping_header") or {}).get("other_information") or {})
    if oi.get("use_case"):
        return str(oi["use_case"])
    code = oi.get("message_code")
    if code in (None, ""):
        return None
    try:
        code = code if isinstance(code, int) else int(str(code), 0)
    except ValueError:
        return None
    from protocols.gbcs.registry import REGISTRY
    for name in REGISTRY.names_for(code):
        if name.upper() in USE_CASE_EVENTS:
            return name
    return None


def subjects(msg: Mapping) -> tuple[SmiEvent | None, list[str]]:
    """The inventory event of a decoded command (its JSON form) and the devices it may concern, most likely
    first: CCS01/CCS02 the device added to / removed from the CHF device log (from the payload), CS03/CS04 the
    `other_device` and the recipient, ECS70/GCS28 the recipient."""
    name = _use_case_name(msg)
    event = USE_CASE_EVENTS.get(name.upper()) if name else None
    if event is None:
        return None, []
    recipient = (msg.get("grouping_header") or {}).get("recipient")
    payload = msg.get("payload") or {}
    found: list = []
    if event in (SmiEvent.CCS01, SmiEvent.CCS02):
        data = (((payload.get("dlms") or {}).get("access_request") or {}).get("data") or [None])[0] or {}
        value = data.get("value")
        if event is SmiEvent.CCS01 and isinstance(value, list) and value:
            value = (value[0] or {}).get("value")
        found.append(value)
    elif event in (SmiEvent.CS03, SmiEvent.CS04):
        found += [((payload.get("asn1") or {}).get("value") or {}).get("other_device"), recipient]
    else:
        found.append(recipient)
    out: list[str] = []
    for eui in found:
        if isinstance(eui, str) and len(eui) == 16 and eui.upper() not in out:
            out.append(eui.upper())
    return event, out


def allowed_events(state: SmiState | str) -> list[SmiEvent]:
    """The events legal in `state`, in table order."""
    state = SmiState(state)
    return [e for (s, e) in TRANSITIONS if s is state]


# ---------------------------------------------------------------------------------------------------------------
# errors


class InventoryError(GbcsEmuError):
    """Base of inventory errors."""


class IllegalTransition(InventoryError):
    """An event the device's SMI status does not allow; nothing changed."""

    def __init__(self, state: SmiState, event: SmiEvent, eui: str | None = None):
        self.state, self.event, self.eui = state, event, eui
        who = f"{eui}: " if eui else ""
        allowed = ", ".join(e.value for e in allowed_events(state)) or "none (final)"
        super().__init__(f"{who}event {event.value!r} is not allowed in SMI state {state.value!r} "
                         f"(allowed: {allowed})")


class UnknownDevice(InventoryError):
    """A device that is not in the inventory."""


class DuplicateDevice(InventoryError):
    """Enrolling a device that is already in the inventory."""


def _state(value) -> SmiState:
    try:
        return SmiState(value)
    except ValueError:
        raise InventoryError(f"unknown SMI state {value!r} (one of {', '.join(s.value for s in SmiState)})") \
            from None


def _event(value) -> SmiEvent:
    try:
        return SmiEvent(value.lower() if isinstance(value, str) else value)
    except ValueError:
        raise InventoryError(f"unknown inventory event {value!r} (one of {', '.join(e.value for e in SmiEvent)})") \
            from None


# ---------------------------------------------------------------------------------------------------------------
# one device


@dataclass(frozen=True)
class InventoryPolicy:
    """Time rules. `pending_ttl`: seconds a device may stay pending before `expire` withdraws it (None: never)."""

    pending_ttl: float | None = None

    def deadline(self, state: SmiState, now: float) -> float | None:
        if state is SmiState.PENDING and self.pending_ttl is not None:
            return now + self.pending_ttl
        return None


@dataclass(frozen=True)
class Transition:
    """One applied event: what the audit trail records."""

    eui: str
    device_type: str
    event: SmiEvent | None       # None: enrolment
    source: SmiState | None      # None: enrolment
    target: SmiState
    at: float
    actor: str | None = None
    detail: str | None = None

    def as_dict(self) -> dict:
        return {"eui": self.eui, "device_type": self.device_type,
                "event": None if self.event is None else self.event.value,
                "source": None if self.source is None else self.source.value, "target": self.target.value,
                "at": self.at, "actor": self.actor, "detail": self.detail}


@dataclass
class DeviceRecord:
    """One device's SMI entry and its state machine (module docstring)."""

    eui: str
    device_type: str
    state: SmiState = SmiState.PENDING
    since: float = 0.0
    previous: SmiState | None = None       # the state a suspension returns to
    expires_at: float | None = None        # when `expire` falls due

    def can(self, event: SmiEvent | str) -> bool:
        return (self.state, _event(event)) in TRANSITIONS

    def apply(self, event: SmiEvent | str, now: float, *, policy: InventoryPolicy | None = None,
              actor: str | None = None, detail: str | None = None) -> Transition:
        """Move by `event` at `now`; IllegalTransition (and no change) when the table does not allow it."""
        event = _event(event)
        target = TRANSITIONS.get((self.state, event))
        if target is None:
            raise IllegalTransition(self.state, event, self.eui)
        if target is RESUME_PREVIOUS:
            if self.previous is None:  # only a corrupt record gets here: a suspension always records it
                raise InventoryError(f"{self.eui}: suspended without a state to resume to")
            target = self.previous
        source = self.state
        self.previous = source if target is SmiState.SUSPENDED else None
        self.state = target
        self.since = now
        self.expires_at = (policy or InventoryPolicy()).deadline(target, now)
        return Transition(self.eui, self.device_type, event, source, target, now, actor, detail)

    def due(self, now: float) -> bool:
        """A time event is due."""
        return self.expires_at is not None and self.expires_at <= now

    def as_dict(self) -> dict:
        return {"eui": self.eui, "device_type": self.device_type, "state": self.state.value, "since": self.since,
                "previous": None if self.previous is None else self.previous.value, "expires_at": self.expires_at}

    @classmethod
    def from_dict(cls, data: Mapping) -> "DeviceRecord":
        try:
            eui, device_type = str(data["eui"]).upper(), str(data["device_type"])
            since = float(data.get("since") or 0.0)
            expires = data.get("expires_at")
            expires = None if expires in (None, "") else float(expires)
        except (KeyError, TypeError, ValueError) as e:
            raise InventoryError(f"not an inventory record: {e}") from None
        previous = data.get("previous")
        state = _state(data.get("state", "pending"))
        previous = None if previous in (None, "") else _state(previous)
        if state is SmiState.SUSPENDED and previous is None:
            raise InventoryError(f"{eui}: a suspended record needs the state it was suspended from (previous)")
        return cls(eui, device_type, state, since, previous, expires)


# ---------------------------------------------------------------------------------------------------------------
# status


@dataclass(frozen=True)
class InventoryStatus:
    """Counts per SMI state and per device type (what `gbcs-emu fleet status` prints)."""

    total: int
    by_state: dict[str, int]                  # every state, zero included
    by_type: dict[str, dict[str, int]]        # device type -> state -> count (non-zero only)

    def as_dict(self) -> dict:
        return {"total": self.total, "by_state": dict(self.by_state),
                "by_type": {k: dict(v) for k, v in self.by_type.items()}}


# ---------------------------------------------------------------------------------------------------------------
# the store

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS inventory (
        eui TEXT PRIMARY KEY,
        device_type TEXT NOT NULL,
        state TEXT NOT NULL,
        since REAL NOT NULL,
        previous TEXT,
        expires_at REAL
    )""",
    "CREATE INDEX IF NOT EXISTS inventory_by_state ON inventory (state, device_type)",
    "CREATE INDEX IF NOT EXISTS inventory_due ON inventory (expires_at) WHERE expires_at IS NOT NULL",
    """CREATE TABLE IF NOT EXISTS inventory_audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        eui TEXT NOT NULL,
        device_type TEXT NOT NULL,
        event TEXT,
        source TEXT,
        target TEXT NOT NULL,
        at REAL NOT NULL,
        actor TEXT,
        detail TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS inventory_audit_by_eui ON inventory_audit (eui, seq)",
)
_COLUMNS = ("eui", "device_type", "state", "since", "previous", "expires_at")
_FORMAT = "gbcs-emu inventory 1"


def _row_record(row) -> DeviceRecord:
    eui, device_type, state, since, previous, expires = row
    return DeviceRecord(eui, device_type, SmiState(state), since, None if previous is None else SmiState(previous),
                        expires)


def _record_row(r: DeviceRecord) -> tuple:
    return (r.eui, r.device_type, r.state.value, r.since, None if r.previous is None else r.previous.value,
            r.expires_at)


_AUDIT_SQL = ("INSERT INTO inventory_audit (eui, device_type, event, source, target, at, actor, detail) "
              "VALUES (?, ?, ?, ?, ?, ?, ?, ?)")


def _audit_row(t: Transition) -> tuple:
    return (t.eui, t.device_type, None if t.event is None else t.event.value,
            None if t.source is None else t.source.value, t.target.value, t.at, t.actor, t.detail)


class InventoryStore:
    """SMI records in SQLite (WAL), with an audit trail. May share the device `StateStore`'s file (own tables,
    own connection). Thread-safe; one store per process (a connection never crosses a fork)."""

    def __init__(self, path: str = ":memory:", *, policy: InventoryPolicy | None = None,
                 synchronous: str = "NORMAL", timeout: float = 30.0):
        self.path, self.policy = str(path), policy or InventoryPolicy()
        self._lock = threading.RLock()
        self._db = open_wal(self.path, synchronous=synchronous, timeout=timeout, schema=_SCHEMA)

    def __repr__(self) -> str:
        return f"<InventoryStore {self.path}>"

    # -- transactions ------------------------------------------------------------------------------------------

    def _transaction(self, work):
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                out = work()
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        return out

    def _audit(self, t: Transition) -> None:
        self._db.execute(_AUDIT_SQL, _audit_row(t))

    def _load(self, eui: str) -> DeviceRecord | None:
        row = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM inventory WHERE eui = ?", (eui,)).fetchone()
        return None if row is None else _row_record(row)

    def _write(self, r: DeviceRecord) -> None:
        self._db.execute(
            "UPDATE inventory SET device_type = ?, state = ?, since = ?, previous = ?, expires_at = ? WHERE eui = ?",
            _record_row(r)[1:] + (r.eui,))

    # -- enrolment ---------------------------------------------------------------------------------------------

    def enrol(self, eui: str, device_type: str, now: float, *, actor: str | None = None) -> DeviceRecord:
        """Add a device as pending (DuplicateDevice when it is already there)."""
        return self.enrol_many([(eui, device_type)], now, actor=actor)[0]

    def enrol_many(self, items: Iterable[tuple[str, str]], now: float, *,
                   actor: str | None = None) -> list[DeviceRecord]:
        """Add several pending devices in one transaction: all or none."""
        records = [DeviceRecord(str(eui).upper(), str(dt), SmiState.PENDING, now, None,
                                self.policy.deadline(SmiState.PENDING, now)) for eui, dt in items]

        def work():
            for r in records:
                try:
                    self._db.execute("INSERT INTO inventory VALUES (?, ?, ?, ?, ?, ?)", _record_row(r))
                except sqlite3.IntegrityError:
                    raise DuplicateDevice(f"{r.eui} is already in the inventory") from None
                self._audit(Transition(r.eui, r.device_type, None, None, r.state, now, actor, "enrol"))
            return records
        return self._transaction(work)

    def put(self, records: Iterable[DeviceRecord | Mapping], *, actor: str | None = "import") -> int:
        """Insert or replace whole records (an import); each is audited as `import`. Returns how many."""
        recs = [r if isinstance(r, DeviceRecord) else DeviceRecord.from_dict(r) for r in records]

        def work():                     # two statements per call, not two per record (a fleet stamps in batches)
            self._db.executemany("INSERT OR REPLACE INTO inventory VALUES (?, ?, ?, ?, ?, ?)",
                                 [_record_row(r) for r in recs])
            self._db.executemany(_AUDIT_SQL, [_audit_row(Transition(r.eui, r.device_type, None, None, r.state,
                                                                    r.since, actor, "import")) for r in recs])
            return len(recs)
        return self._transaction(work)

    # -- transitions -------------------------------------------------------------------------------------------

    def apply(self, eui: str, event: SmiEvent | str, now: float, *, actor: str | None = None,
              detail: str | None = None) -> Transition:
        """Apply one event to one device and audit it, atomically."""
        return self.apply_many([(eui, event)], now, actor=actor, detail=detail)[0]

    def apply_many(self, items: Iterable[tuple[str, SmiEvent | str]], now: float, *, actor: str | None = None,
                   detail: str | None = None) -> list[Transition]:
        """Apply several events in one transaction: all or none (the first illegal one rolls all back)."""
        items = [(str(eui).upper(), _event(ev)) for eui, ev in items]

        def work():
            out = []
            for eui, ev in items:
                r = self._load(eui)
                if r is None:
                    raise UnknownDevice(f"{eui} is not in the inventory")
                t = r.apply(ev, now, policy=self.policy, actor=actor, detail=detail)
                self._write(r)
                self._audit(t)
                out.append(t)
            return out
        return self._transaction(work)

    def apply_use_case(self, eui: str, use_case: str | int, now: float, *, actor: str | None = None) \
            -> Transition | None:
        """Apply what a use case (name or message code) means for `eui`'s SMI status; None when it means nothing."""
        event = event_for_use_case(use_case)
        if event is None:
            return None
        name = use_case if isinstance(use_case, str) else f"0x{use_case:04X}"
        return self.apply(eui, event, now, actor=actor, detail=name)

    def observe(self, msg: Mapping, now: float, *, actor: str | None = None) -> list[Transition]:
        """Apply what an accepted command (decoded JSON form) means for the inventory, where the table allows
        it: a device in the inventory whose state does not take the event (e.g. ECS70 setting the clock of an
        already commissioned ESME) is left alone. Call it when the device answered the command with success."""
        event, euis = subjects(msg)
        if event is None:
            return []
        detail = _use_case_name(msg)

        def work():
            out = []
            for eui in euis:
                r = self._load(eui)
                if r is None or (r.state, event) not in TRANSITIONS:
                    continue
                t = r.apply(event, now, policy=self.policy, actor=actor, detail=detail)
                self._write(r)
                self._audit(t)
                out.append(t)
            return out
        return self._transaction(work)

    def due(self, now: float, limit: int = 1000) -> list[str]:
        """EUIs whose time event has fallen due (at most `limit`)."""
        with self._lock:
            rows = self._db.execute("SELECT eui FROM inventory WHERE expires_at IS NOT NULL AND expires_at <= ? "
                                    "ORDER BY expires_at, eui LIMIT ?", (now, limit)).fetchall()
        return [r[0] for r in rows]

    def expire_due(self, now: float, limit: int = 1000) -> list[Transition]:
        """Apply `expire` to up to `limit` devices whose deadline passed (call it from the fleet's timer)."""
        def work():
            out = []
            rows = self._db.execute("SELECT eui FROM inventory WHERE expires_at IS NOT NULL AND expires_at <= ? "
                                    "ORDER BY expires_at, eui LIMIT ?", (now, limit)).fetchall()
            for (eui,) in rows:
                r = self._load(eui)
                t = r.apply(SmiEvent.EXPIRE, now, policy=self.policy, actor="time")
                self._write(r)
                self._audit(t)
                out.append(t)
            return out
        return self._transaction(work)

    # -- reading -----------------------------------------------------------------------------------------------

    def get(self, eui: str) -> DeviceRecord | None:
        with self._lock:
            return self._load(str(eui).upper())

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM inventory").fetchone()[0]

    def journal_mode(self) -> str:
        with self._lock:
            return self._db.execute("PRAGMA journal_mode").fetchone()[0]

    def count(self, state: SmiState | str | None = None, device_type: str | None = None) -> int:
        sql, args = "SELECT COUNT(*) FROM inventory WHERE 1", []
        if state is not None:
            sql += " AND state = ?"
            args.append(_state(state).value)
        if device_type is not None:
            sql += " AND device_type = ?"
            args.append(device_type)
        with self._lock:
            return self._db.execute(sql, args).fetchone()[0]

    def status(self) -> InventoryStatus:
        """Counts per state and per device type, computed by SQL."""
        with self._lock:
            rows = self._db.execute(
                "SELECT device_type, state, COUNT(*) FROM inventory GROUP BY device_type, state "
                "ORDER BY device_type, state").fetchall()
        by_state = {s.value: 0 for s in SmiState}
        by_type: dict[str, dict[str, int]] = {}
        total = 0
        for device_type, state, n in rows:
            by_state[state] = by_state.get(state, 0) + n
            by_type.setdefault(device_type, {})[state] = n
            total += n
        return InventoryStatus(total, by_state, by_type)

    def records(self, *, state: SmiState | str | None = None, device_type: str | None = None,
                page: int = 1000) -> Iterator[DeviceRecord]:
        """Every record in EUI order, fetched `page` rows at a time (keyset pagination: bounded memory)."""
        where, args = "", []
        if state is not None:
            where += " AND state = ?"
            args.append(_state(state).value)
        if device_type is not None:
            where += " AND device_type = ?"
            args.append(device_type)
        last = ""
        while True:
            with self._lock:
                rows = self._db.execute(
                    f"SELECT {', '.join(_COLUMNS)} FROM inventory WHERE eui > ?{where} ORDER BY eui LIMIT ?",
                    [last, *args, page]).fetchall()
            if not rows:
                return
            for row in rows:
                yield _row_record(row)
            last = rows[-1][0]

    def history(self, eui: str, limit: int | None = None) -> list[Transition]:
        """The audit trail of one device, oldest first (the last `limit` entries when given)."""
        sql = ("SELECT eui, device_type, event, source, target, at, actor, detail FROM inventory_audit "
               "WHERE eui = ? ORDER BY seq DESC")
        args: list = [str(eui).upper()]
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [Transition(e, dt, None if ev is None else SmiEvent(ev), None if src is None else SmiState(src),
                           SmiState(tgt), at, actor, detail)
                for e, dt, ev, src, tgt, at, actor, detail in reversed(rows)]

    # -- export / import ---------------------------------------------------------------------------------------

    def export_csv(self, fp: IO[str]) -> int:
        """Write every record as CSV (header row first); returns how many."""
        w = csv.writer(fp, lineterminator="\n")
        w.writerow(_COLUMNS)
        n = 0
        for r in self.records():
            d = r.as_dict()
            w.writerow(["" if d[c] is None else (repr(d[c]) if isinstance(d[c], float) else d[c])
                        for c in _COLUMNS])
            n += 1
        return n

    def export_json(self, fp: IO[str]) -> int:
        """Write `{"format": ..., "devices": [...]}`, streamed record by record; returns how many."""
        fp.write('{"format": %s, "devices": [' % json.dumps(_FORMAT))
        n = 0
        for r in self.records():
            fp.write(("\n " if n == 0 else ",\n ") + json.dumps(r.as_dict(), separators=(",", ":")))
            n += 1
        fp.write("\n]}\n")
        return n

    def import_csv(self, fp: IO[str], *, batch: int = 1000) -> int:
        """Load records written by `export_csv` (insert or replace), `batch` per transaction."""
        return self._import(csv.DictReader(fp), batch)

    def import_json(self, fp: IO[str], *, batch: int = 1000) -> int:
        """Load a document written by `export_json` (insert or replace)."""
        try:
            data = json.load(fp)
        except ValueError as e:
            raise InventoryError(f"not an inventory JSON document: {e}") from None
        if not isinstance(data, dict) or data.get("format") != _FORMAT or not isinstance(data.get("devices"), list):
            raise InventoryError(f"not a {_FORMAT!r} JSON document")
        return self._import(data["devices"], batch)

    def _import(self, rows: Iterable[Mapping], batch: int) -> int:
        n, chunk = 0, []
        for row in rows:
            chunk.append(DeviceRecord.from_dict(row))
            if len(chunk) >= batch:
                n += self.put(chunk)
                chunk = []
        if chunk:
            n += self.put(chunk)
        return n

    def export_text(self, kind: str) -> str:
        """The CSV or JSON export as a string (small inventories, tests)."""
        buf = io.StringIO()
        {"csv": self.export_csv, "json": self.export_json}[kind](buf)
        return buf.getvalue()

    # -- lifetime ----------------------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "InventoryStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
