"""Persistent device state: one SQLite row per device, JSON state, durable once `save` returns.

Why SQLite: stdlib, crash-safe, one file for a million devices. WAL mode lets readers (dashboards, a second
fleet process) read while a writer commits; `synchronous=FULL` makes a returned `save` survive power loss
(NORMAL survives kill -9 but not power loss: for benchmarks). Each save is one transaction opened with
BEGIN IMMEDIATE, so the counter check and the write are atomic even against another process.

Security counters never go backwards: a save whose `state["counters"]["alert"]` or any
`state["counters"]["remote"][party]` is lower than the stored value raises `StateRegression`; a replayed
old state would otherwise reopen the replay window. Counters absent from either side are not compared (a
remote party may be removed). `version` counts saves of a device, starting at 1.

Threads: one connection per StateStore, serialised by a lock. Processes: each opens its own StateStore on
the same path (a connection must never cross a fork).
"""
from __future__ import annotations

import json
import sqlite3
import threading
from typing import Iterable

from protocols.errors import GbcsEmuError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    eui TEXT PRIMARY KEY,
    device_type TEXT NOT NULL,
    state TEXT NOT NULL,
    version INTEGER NOT NULL
)
"""
_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


class StateRegression(GbcsEmuError):
    """A save that would move a security counter backwards."""


def _encode(state: dict) -> str:
    return json.dumps(state, separators=(",", ":"), sort_keys=False)


def _counters(state: dict) -> tuple[int | None, dict]:
    counters = state.get("counters") or {}
    return counters.get("alert"), counters.get("remote") or {}


def check_counters(eui: str, old: dict, new: dict) -> None:
    """Raise StateRegression when a counter in `new` is lower than the same counter in `old`."""
    old_alert, old_remote = _counters(old)
    new_alert, new_remote = _counters(new)
    if old_alert is not None and new_alert is not None and new_alert < old_alert:
        raise StateRegression(f"{eui}: alert counter would go back from {old_alert} to {new_alert}")
    for party, value in new_remote.items():
        before = old_remote.get(party)
        if before is not None and value < before:
            raise StateRegression(f"{eui}: remote counter {party} would go back from {before} to {value}")


def open_wal(path: str, *, synchronous: str = "FULL", timeout: float = 30.0, schema=()) -> sqlite3.Connection:
    """A connection to a SQLite file in WAL mode with this durability, its schema created: every store of the
    project opens its file so. `isolation_level=None`: callers issue BEGIN/COMMIT themselves, so a transaction is
    exactly one call. Shared between threads under the caller's lock; one connection per process."""
    synchronous = synchronous.upper()
    if synchronous not in _SYNCHRONOUS:
        raise ValueError(f"synchronous must be one of {_SYNCHRONOUS}, got {synchronous!r}")
    db = sqlite3.connect(str(path), timeout=timeout, isolation_level=None, check_same_thread=False)
    try:
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal" and str(path) != ":memory:":
            raise sqlite3.OperationalError(f"cannot enable WAL on {path} (journal_mode={mode})")
        db.execute(f"PRAGMA synchronous={synchronous}")
        for stmt in schema:
            db.execute(stmt)
    except BaseException:
        db.close()
        raise
    return db


class StateStore:
    """Device states keyed by EUI in one SQLite file (WAL). Thread-safe; one store per process."""

    def __init__(self, path: str, *, synchronous: str = "FULL", timeout: float = 30.0):
        self.path = str(path)
        self._lock = threading.RLock()
        self._db = open_wal(self.path, synchronous=synchronous, timeout=timeout, schema=(_SCHEMA,))

    # -- reading -------------------------------------------------------------------------------------

    def load(self, eui: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT state FROM devices WHERE eui = ?", (eui,)).fetchone()
        return None if row is None else json.loads(row[0])

    def version(self, eui: str) -> int | None:
        """How many times `eui` was saved (None: never)."""
        with self._lock:
            row = self._db.execute("SELECT version FROM devices WHERE eui = ?", (eui,)).fetchone()
        return None if row is None else row[0]

    def euis(self, device_type: str | None = None) -> list[str]:
        with self._lock:
            if device_type is None:
                rows = self._db.execute("SELECT eui FROM devices ORDER BY eui").fetchall()
            else:
                rows = self._db.execute(
                    "SELECT eui FROM devices WHERE device_type = ? ORDER BY eui", (device_type,)).fetchall()
        return [r[0] for r in rows]

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM devices").fetchone()[0]

    def journal_mode(self) -> str:
        with self._lock:
            return self._db.execute("PRAGMA journal_mode").fetchone()[0]

    # -- writing -------------------------------------------------------------------------------------

    def save(self, eui: str, device_type: str, state: dict) -> int:
        """Store `state` durably (committed before return); returns the new version."""
        return self.save_many([(eui, device_type, state)])[0]

    def save_many(self, items: Iterable[tuple[str, str, dict]]) -> list[int]:
        """Store several states in one transaction: all or none (a StateRegression rolls back all)."""
        items = list(items)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                versions = [self._save_one(eui, device_type, state) for eui, device_type, state in items]
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        return versions

    def _save_one(self, eui: str, device_type: str, state: dict) -> int:
        row = self._db.execute("SELECT state, version FROM devices WHERE eui = ?", (eui,)).fetchone()
        if row is None:
            version = 1
        else:
            check_counters(eui, json.loads(row[0]), state)
            version = row[1] + 1
        self._db.execute(
            "INSERT INTO devices (eui, device_type, state, version) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(eui) DO UPDATE SET device_type = excluded.device_type, state = excluded.state, "
            "version = excluded.version",
            (eui, device_type, _encode(state), version))
        return version

    def delete(self, eui: str) -> bool:
        """Forget a device (decommissioned); True when it was there."""
        with self._lock:
            cur = self._db.execute("DELETE FROM devices WHERE eui = ?", (eui,))
            return cur.rowcount > 0

    # -- lifetime ------------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
