"""The fleet host: many premises behind SQLite, a bounded LRU in memory, timers, WAN adapters and metrics.

Theory of operation
-------------------
Two layers, as everywhere in this project:

* `FleetHost` is synchronous and does no network I/O: `handle(frame, now)` routes a WAN frame to its premises
  and returns the `Outbound` frames it caused; `tick_due(now)` runs the premises whose timers fell due;
  `commission_some(now, n)` brings untouched premises into service; `commit()` makes all of it durable. Time is
  a parameter (simulated UTC seconds).
* `FleetRunner` owns asyncio: the WAN adapters (`fleet.wan`, `fleet.mqtt`), the simulated clock, the metrics
  endpoint and signals. One worker task takes inbound frames from a bounded queue, handles a batch of them
  (plus due timers and background commissioning), **commits once, then sends** every frame of the batch (group
  commit: nothing leaves the process that a `kill -9` could lose).

Scale design (docs/fleet.md):

* **Lazy provisioning.** Starting a fleet writes a few meta rows. A premises (a hub and its HAN devices,
  `firmware_emu.premises.Premises`) exists in storage only once a frame, a timer or background commissioning
  first needs it; it is then created factory-fresh and commissioned through the real use cases by the premises'
  built-in head end (CCS01, HAN joins, CS03), or (`commissioning.method = "installer"`) stamped from its kind's
  commissioned template (`fleet.template`: the use cases run once per kind, a probe checks the stamp). Its
  devices are enrolled in the SMI inventory at that moment (installer: written in their commissioned state);
  untouched premises are counted as `pending` (nothing stored for them). Device keys are derived when a device
  first MACs or signs, certificates built only when a use case reads them (`fleet.keys.FleetDeviceKeys`).
* **Storage.** One SQLite file per shard (`<state_dir>/shard-k-of-K.sqlite`, WAL): a row per premises (its whole
  JSON state, zlib-compressed, with a version), the timer index (`wake`: when the premises next has work; an
  index, so sleeping premises cost no memory) and the inventory tables (`fleet.inventory`). A save checks, per
  device, that no security counter went backwards (`core.store.check_counters`, against the counters the
  premises had when loaded) and that nobody else wrote the row since it was loaded (its version).
* **Memory.** At most `host.cache` premises are loaded (LRU). An evicted premises is written back first if it
  changed. Device keys are derived on demand (`fleet.keys`), in their own LRU.
* **Routing.** A frame's recipient EUI names its premises and device (`keys.parse_eui`), so no lookup table.
* **Timers.** `wake` is the earliest time the premises has work that must run on time: HAN frames in flight,
  device schedules, and a sleepy GSME's wake *when something waits for it* (commands queued at the hub, its own
  outbox). Idle GSME wakes are caught up the next time the premises is loaded (`host.timers = "all"` runs
  every wake on time instead, at a cost per premises and wake).
* **Eager HAN.** After a WAN frame, a premises' HAN traffic within `han_horizon` simulated seconds is run at
  once, so an ESME answers in one handling; that premises' clock runs ahead of the fleet clock by as much.
* **Late answers.** A command answered later (a GSME at its wake) is remembered (bounded, `host.pending`) with
  where it came from; its answer goes back there, otherwise (and for alerts) to every WAN adapter (TCP by its
  alert policy, MQTT on the hub's `/up` topic).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import signal
import sqlite3
import threading
import time
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from protocols.errors import DecodeError, GbcsEmuError
from protocols.gbcs.message import alert_code, decode, split_payload
from protocols.gbcs.registry import REGISTRY

from firmware_emu.core import jsonio
from firmware_emu.core.clock import SimClock
from firmware_emu.core.store import StateRegression, check_counters, open_wal
from firmware_emu.fleet.config import ConfigError, FleetConfig, MixEntry, wall_start
from firmware_emu.fleet.inventory import (DeviceRecord, DuplicateDevice, IllegalTransition, InventoryStore, SmiEvent,
                                          SmiState, event_for_use_case)
from firmware_emu.fleet.keys import FleetKeys, device_eui, parse_eui, premises_euis

log = logging.getLogger(__name__)

__all__ = ["FleetError", "Unroutable", "ConcurrentWrite", "Outbound", "PremisesStore", "FleetHost", "FleetRunner",
           "fleet_status", "export_inventory", "state_files", "tune_gc"]

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS premises (
        idx INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        enc TEXT NOT NULL,
        state BLOB NOT NULL,
        version INTEGER NOT NULL,
        wake REAL
    )""",
    "CREATE INDEX IF NOT EXISTS premises_wake ON premises (wake) WHERE wake IS NOT NULL",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
_FORMAT = "gbcs-emu fleet 1"
def _zlib(raw: bytes) -> bytes:
    """zlib level 1 with an 8 KiB window and memLevel 6: the compressor's buffers (about 64 KiB) stay below
    malloc's mmap threshold, which makes a state of a few KiB 5x cheaper to compress than with the defaults
    (256 KiB mapped and unmapped per call), for the same size. Any zlib.decompress reads it."""
    c = zlib.compressobj(1, zlib.DEFLATED, 13, 6)
    return c.compress(raw) + c.flush()


#: HAN device types that are always on (the direct path applies to them; the GSME sleeps).
_ALWAYS_ON = ("ESME", "PPMID", "HCALCS")


class FleetError(GbcsEmuError):
    """A fleet that cannot run as asked."""


class Unroutable(FleetError):
    """A frame whose recipient is no device this host serves; `reason` is the metrics label."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(message)


class ConcurrentWrite(FleetError):
    """A premises row changed under us (another process on the same shard file)."""


@lru_cache(maxsize=4096)
def use_case_name(code: int) -> str:
    names = REGISTRY.names_for(code)
    return names[0] if names else f"0x{code:04X}"


@lru_cache(maxsize=4096)
def _moves_inventory(code: int) -> bool:
    return event_for_use_case(code) is not None


# ------------------------------------------------------------------------------------------------ storage

class PremisesStore:
    """Premises states, their timer index and fleet meta data in one SQLite file (WAL). One per process."""

    def __init__(self, path: str | Path, *, durability: str = "full", compress: bool = True):
        self.path = str(path)
        self.compress = compress
        self._lock = threading.RLock()
        self._db = open_wal(self.path, synchronous=durability, timeout=30.0, schema=_SCHEMA)

    # -- meta ---------------------------------------------------------------------------------------------------
    def meta(self, key: str, default=None):
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_meta(self, items: dict) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._put_meta(items)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _put_meta(self, items: dict) -> None:
        self._db.executemany("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                             "value = excluded.value", [(k, json.dumps(v)) for k, v in items.items()])

    # -- premises -----------------------------------------------------------------------------------------------
    def encode(self, state: dict) -> tuple[str, bytes]:
        raw = jsonio.dumps(state)
        return ("zlib", _zlib(raw)) if self.compress else ("json", raw)

    def encode_raw(self, raw: bytes) -> tuple[str, bytes]:
        """`encode` of a state already JSON (`Premises.snapshot`)."""
        return ("zlib", _zlib(raw)) if self.compress else ("json", raw)

    @staticmethod
    def decode(enc: str, blob: bytes) -> dict:
        """A stored state. `zparts` (pieces with their own zlib streams) was written by versions whose HAN kept a
        Mersenne Twister state worth compressing apart; it is still read."""
        if enc == "zparts":
            n = blob[0]
            layout = [(blob[1 + 5 * k], int.from_bytes(blob[2 + 5 * k:6 + 5 * k], "big")) for k in range(n)]
            pos, streams = 1 + 5 * n, []
            while pos < len(blob):
                size = int.from_bytes(blob[pos:pos + 4], "big")
                streams.append(zlib.decompress(blob[pos + 4:pos + 4 + size]))
                pos += 4 + size
            shared, at, own, parts = streams[0], 0, iter(streams[1:]), []
            for src, size in layout:
                if src == 0:
                    parts.append(shared[at:at + size])
                    at += size
                else:
                    parts.append(next(own))
            return jsonio.loads(b"".join(parts))
        return jsonio.loads(zlib.decompress(blob) if enc == "zlib" else blob)

    def load(self, idx: int) -> tuple[str, dict, int] | None:
        """(kind, state, version) of premises idx, or None when it was never materialised."""
        with self._lock:
            row = self._db.execute("SELECT kind, enc, state, version FROM premises WHERE idx = ?", (idx,)).fetchone()
        if row is None:
            return None
        return row[0], self.decode(row[1], row[2]), row[3]

    def save_many(self, rows: list[tuple[int, str, str, bytes, float | None, int]], meta: dict | None = None) \
            -> None:
        """(idx, kind, enc, blob, wake, expected version) in one transaction; version 0 means a new row.
        ConcurrentWrite (and nothing written) when a row's version is not the expected one."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                new = [(idx, kind, enc, blob, wake) for idx, kind, enc, blob, wake, version in rows if version == 0]
                old = [(enc, blob, wake, idx, version) for idx, kind, enc, blob, wake, version in rows if version]
                if new:
                    try:
                        self._db.executemany("INSERT INTO premises (idx, kind, enc, state, version, wake) "
                                             "VALUES (?, ?, ?, ?, 1, ?)", new)
                    except sqlite3.IntegrityError:
                        raise ConcurrentWrite(f"one of premises {[r[0] for r in new][:8]} was created by someone "
                                              "else") from None
                if old:
                    cur = self._db.executemany("UPDATE premises SET enc = ?, state = ?, version = version + 1, "
                                               "wake = ? WHERE idx = ? AND version = ?", old)
                    if cur.rowcount != len(old):    # one row each, or another process wrote one of them
                        raise ConcurrentWrite(f"{len(old) - cur.rowcount} of premises {[r[3] for r in old][:8]} "
                                              "changed since they were loaded")
                if meta:
                    self._put_meta(meta)
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def due(self, now: float, limit: int) -> list[int]:
        with self._lock:
            return [r[0] for r in self._db.execute(
                "SELECT idx FROM premises WHERE wake IS NOT NULL AND wake <= ? ORDER BY wake LIMIT ?",
                (now, limit)).fetchall()]

    def next_wake(self) -> float | None:
        with self._lock:
            return self._db.execute("SELECT MIN(wake) FROM premises WHERE wake IS NOT NULL").fetchone()[0]

    def exists(self, idx: int) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM premises WHERE idx = ?", (idx,)).fetchone() is not None

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM premises").fetchone()[0]

    def kind_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._db.execute("SELECT kind, COUNT(*) FROM premises GROUP BY kind").fetchall())

    def indices(self) -> Iterator[int]:
        last = -1
        while True:
            with self._lock:
                rows = self._db.execute("SELECT idx FROM premises WHERE idx > ? ORDER BY idx LIMIT 10000",
                                        (last,)).fetchall()
            if not rows:
                return
            for (i,) in rows:
                yield i
            last = rows[-1][0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


# ------------------------------------------------------------------------------------------------ the host

@dataclass
class Outbound:
    """A frame to send: a response (back to `origin` when known) or an alert (to every adapter)."""

    frame: bytes
    premises: int
    hub: str
    kind: str                          # "response" | "alert" | "other"
    origin: object | None = None
    received_at: float | None = None   # wall clock the command arrived (latency)
    use_case: str | None = None
    alert_code: str | None = None


@dataclass
class _Pending:
    origin: object | None
    received_at: float | None
    use_case: str
    code: int
    premises: int
    command: bytes | None = None       # kept only for use cases that move the inventory


@dataclass
class _Loaded:
    premises: object                   # firmware_emu.premises.Premises
    kind: MixEntry
    version: int                       # 0: not stored yet
    counters: dict                     # device EUI -> counters when loaded / last committed
    dirty: bool = False


@dataclass
class HostCounters:
    frames_in: int = 0
    frames_out: int = 0
    responses: int = 0
    alerts: int = 0
    unroutable: int = 0
    materialised: int = 0
    commissioned: int = 0
    stamped: int = 0                   # of the materialised: from a template (installer commissioning)
    loads: int = 0
    evictions: int = 0
    commits: int = 0
    timer_runs: int = 0
    pending_dropped: int = 0
    errors: dict = field(default_factory=dict)


def _premises_seed(seed: int, idx: int) -> int:
    return int.from_bytes(hashlib.sha256(f"fleet:{seed}:{idx}".encode()).digest()[:4], "big")


def _signature(cfg: FleetConfig) -> dict:
    """What must not change under an existing state directory."""
    return {"seed": cfg.seed, "premises": cfg.premises, "eui_prefix": cfg.eui_prefix.hex().upper(),
            "mix": [[m.name, m.share, list(m.devices), m.gpf, m.profile] for m in cfg.mix],
            "shards": cfg.shard.count}


def _header(frame: bytes) -> tuple[dict, bool]:
    """(routing fields, is a GBT block): recipient, originator, counter, cra, code, last."""
    env, content, _ = split_payload(frame)
    if content is None:
        b = env["gbt_block"]
        tid = b.get("transaction_id", "")
        code = b.get("other_information", "")
        cra = {0x01: "command", 0x02: "response", 0x03: "alert"}.get(int(tid[:2], 16) if tid else 0, "other")
        return {"recipient": b.get("recipient_system_title", "").upper(),
                "originator": b.get("originator_system_title", "").upper(),
                "counter": int(tid[2:], 16) if len(tid) == 18 else None, "cra": cra,
                "code": int(code, 16) if code else None,
                "last": b.get("block_control", {}).get("last_block", True)}, True
    gh = env["grouping_header"]
    code = (gh.get("other_information") or {}).get("message_code")
    return {"recipient": gh["recipient"].upper(), "originator": gh["originator"].upper(),
            "counter": gh.get("originator_counter"), "cra": gh.get("cra_flag", "other"),
            "code": int(code, 16) if isinstance(code, str) and code else code, "last": True}, False


def _success(frame: bytes) -> bool:
    """Whether a response reports success (ASN.1 response code, DLMS results, GBZ: answered)."""
    try:
        payload = decode(frame)["payload"]
    except DecodeError:
        return False
    if "asn1" in payload:
        rc = payload["asn1"]["value"].get("response_code", "success")
        return rc in ("success", 0)
    if "dlms" in payload:
        results = payload["dlms"].get("access_response", {}).get("results", [])
        return all(r.get("result") == "success" for r in results)
    return True


class FleetHost:
    """The synchronous fleet core for one shard (module docstring)."""

    def __init__(self, config: FleetConfig, keys: FleetKeys | None = None, *, metrics=None):
        self.config = config
        self.tuning = config.host
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self.keys = keys or FleetKeys.from_config(config)
        self.keystore = self.keys.keystore
        self.metrics = metrics
        self.store = PremisesStore(config.state_file, durability=self.tuning.durability,
                                   compress=self.tuning.compress)
        self.inventory = InventoryStore(str(config.state_file), synchronous=self.tuning.durability)
        self.counters = HostCounters()
        self._lru: OrderedDict[int, _Loaded] = OrderedDict()
        self._dirty: set[int] = set()
        self._pending: OrderedDict[tuple[str, int], _Pending] = OrderedDict()
        self._inventory_ops: list[tuple[str, object]] = []
        self._devices_in_memory = 0
        self._closed = False
        self._templates: dict = {}                   # kind name -> fleet.template.PremisesTemplate
        self._template_off: set[str] = set()         # kinds whose stamp did not match (protocol instead)
        self._template_count = 0
        self._provision()

    # -- provisioning ---------------------------------------------------------------------------------------------
    def _provision(self) -> None:
        """First run: record the configuration's signature and the start time; later runs: check them."""
        sig = _signature(self.config)
        old = self.store.meta("signature")
        if old is None:
            start = self.config.start if self.config.start is not None else wall_start()
            self.store.set_meta({"format": _FORMAT, "signature": sig, "name": self.config.name,
                                 "shard": str(self.config.shard), "provisioned_at": start, "sim_now": start,
                                 "commission_cursor": 0})
            log.info("fleet %s shard %s: provisioned %d premises (lazily) at %s", self.config.name,
                     self.config.shard, self.config.shard.size(self.config.premises), start)
        elif old != sig:
            changed = sorted(k for k in sig if sig[k] != old.get(k))
            raise ConfigError("fleet", f"{self.config.state_file} was made by a different configuration "
                                       f"({', '.join(changed)} changed): use another state_dir")
        elif self.store.meta("shard") != str(self.config.shard):
            raise ConfigError("fleet.shard", f"{self.config.state_file} belongs to shard {self.store.meta('shard')}")
        self.provisioned_at = float(self.store.meta("provisioned_at"))
        self.sim_now = float(self.store.meta("sim_now"))

    @property
    def start_time(self) -> float:
        """Where the simulated clock starts: where the last run stopped, or the configured start."""
        return self.sim_now

    # -- routing --------------------------------------------------------------------------------------------------
    def route(self, eui) -> tuple[int, str]:
        """(premises index, device type) this host serves for `eui`; Unroutable otherwise."""
        got = parse_eui(self.config.eui_prefix, eui)
        if got is None:
            raise Unroutable("unknown_recipient", f"{eui} is not a device EUI of fleet {self.config.name}")
        idx, dtype = got
        if idx >= self.config.premises:
            raise Unroutable("unknown_recipient", f"{eui}: premises {idx} beyond the fleet's {self.config.premises}")
        if not self.config.shard.owns(idx):
            raise Unroutable("other_shard", f"{eui}: premises {idx} belongs to another shard than {self.config.shard}")
        if dtype not in self.config.kind_of(idx).device_types:
            raise Unroutable("unknown_recipient", f"{eui}: premises {idx} has no {dtype}")
        return idx, dtype

    def serves_hub(self, hub) -> bool:
        try:
            idx, dtype = self.route(hub)
        except Unroutable:
            return False
        return dtype == "CHF"

    def hub_of(self, idx: int) -> str:
        return device_eui(self.config.eui_prefix, idx, "CHF")

    # -- premises in memory -----------------------------------------------------------------------------------
    def loaded(self, idx: int) -> bool:
        return idx in self._lru

    @property
    def devices_in_memory(self) -> int:
        return self._devices_in_memory

    def premises(self, idx: int, now: float):
        """The loaded premises idx (created and commissioned on first use)."""
        return self._get(idx, now).premises

    def _get(self, idx: int, now: float) -> _Loaded:
        l = self._lru.get(idx)
        if l is not None:
            self._lru.move_to_end(idx)
            return l
        from firmware_emu.premises import Premises
        row = self.store.load(idx)
        if row is None:
            l = self._materialise(idx, now)
        else:
            kind_name, state, version = row
            kind = next((m for m in self.config.mix if m.name == kind_name), None)
            if kind is None:
                raise FleetError(f"premises {idx} is of kind {kind_name!r}, which the configuration lacks")
            counters = self._counters_of(state)
            p = Premises.restore(state, self.keystore, copy=False)     # the decoded row is ours alone
            l = _Loaded(p, kind, version, counters)
            self.counters.loads += 1
        self._lru[idx] = l
        self._devices_in_memory += len(l.premises.devices)
        while len(self._lru) > self.tuning.cache:
            old_idx, old = next(iter(self._lru.items()))
            if old.dirty:
                self.commit()                       # write back before forgetting (outputs still held)
            self._lru.popitem(last=False)
            self._devices_in_memory -= len(old.premises.devices)
            self.counters.evictions += 1
        return l

    def evict(self, idx: int) -> None:
        """Forget a loaded premises (written back first when it changed)."""
        l = self._lru.get(idx)
        if l is None:
            return
        if l.dirty:
            self.commit()
        del self._lru[idx]
        self._devices_in_memory -= len(l.premises.devices)
        self.counters.evictions += 1

    @staticmethod
    def _counters_of(state: dict) -> dict:
        from firmware_emu.premises import _copy_plain
        return {e: _copy_plain(d.get("counters") or {}) for e, d in state.get("devices", {}).items()}

    def _materialise(self, idx: int, now: float) -> _Loaded:
        """A premises first needed: enrolled, then commissioned through the use cases by its built-in head end
        (`commissioning.method = "protocol"`) or stamped from its kind's template (`"installer"`,
        fleet/template.py; the first premises of a kind makes the template)."""
        kind = self.config.kind_of(idx)
        if self.config.commissioning_method == "installer" and kind.name not in self._template_off:
            tpl = self._templates.get(kind.name)
            if tpl is not None and now - tpl.made_at > self.config.template_max_age:
                tpl = None                                  # too old: its premises would catch up too long
            if tpl is not None:
                return self._stamp(idx, kind, tpl, now)
            return self._make_template(idx, kind, now)
        l, _ = self._commission(idx, kind, now)
        return l

    def _new_premises(self, idx: int, kind: MixEntry, now: float):
        from firmware_emu.premises import Premises
        profiles = self.config.profiles_for(kind)
        wake = float((profiles.get("GSME") or {}).get("wake_interval", 1800.0))
        return Premises(list(premises_euis(self.config, idx).items()), self.keystore, now=now,
                        han_loss=self.config.han_loss, han_latency=self.config.han_latency,
                        seed=_premises_seed(self.config.seed, idx), wake_interval=wake, profiles=profiles,
                        head_end_counter=1)

    def _commission(self, idx: int, kind: MixEntry, now: float, settle_until: float | None = None) \
            -> tuple[_Loaded, list]:
        """Factory-fresh, enrolled, commissioned through the use cases (CCS01, HAN joins, CS03) by the built-in
        head end. Returns the premises and its inventory moves as (device type, event, detail)."""
        euis = premises_euis(self.config, idx)
        p = self._new_premises(idx, kind, now)
        self._inventory_ops.append(("enrol", [(e, t) for t, e in euis.items()], now))
        report = p.commission(now)
        if settle_until is not None:
            from firmware_emu.fleet.template import settle
            settle(p, settle_until)
        types = {e: t for t, e in euis.items()}
        moves: list[tuple[str, SmiEvent, str]] = []
        for t in kind.hub:
            moves += [(t, SmiEvent.CCS01, "hub installed"), (t, SmiEvent.CS03, "hub on the WAN")]
        for label, outcome in report["results"].items():
            parts = label.split()
            if parts[0] == "CCS01" and outcome == "success" and parts[2] in types:
                moves.append((types[parts[2]], SmiEvent.CCS01, "CCS01"))
        for e in p.han_devices():
            if p.net.is_joined(e):
                moves.append((types[e], SmiEvent.CS03, "HAN join (install code)"))
        failed = {lbl: o for lbl, o in report["results"].items() if o != "success"}
        for t in euis:
            moves.append((t, SmiEvent.COMMISSION, "fleet commissioning"))
        self._inventory_ops.append(("moves", [(euis[t], ev, d) for t, ev, d in moves], report["now"]))
        if failed:
            log.warning("premises %d: commissioning incomplete: %s", idx, failed)
            self._error("commissioning_failed")
        self.counters.materialised += 1
        self.counters.commissioned += not failed
        l = _Loaded(p, kind, 0, p.snapshot().counters, dirty=True)
        self._dirty.add(idx)
        return l, ([] if failed else moves)

    def _make_template(self, idx: int, kind: MixEntry, now: float) -> _Loaded:
        """Premises idx commissioned through the use cases (installed `INSTALL_LEAD` s ago, settled) becomes its
        kind's template once a probe premises commissioned the same way equals its stamp."""
        from firmware_emu.fleet.template import (INSTALL_LEAD, SETTLE, PremisesTemplate, TemplateMismatch,
                                                 compare_states, random_phase, settle)
        from firmware_emu.premises import _install_code
        at = now - INSTALL_LEAD
        l, moves = self._commission(idx, kind, at, settle_until=at + SETTLE)
        p = l.premises
        if not moves:
            return l                                    # failed commissioning makes no template
        prefix = self.config.eui_prefix.hex().upper()
        joins = {e["eui"]: e["t"] for e in p.events if e.get("event") == "han_joined" and p.is_sleepy(e["eui"])}
        self._template_count += 1
        try:
            tpl = PremisesTemplate(f"{kind.name}@{self._template_count}", kind.name, idx, p.state(),
                                   stem=lambda i: f"{prefix}{i:08X}", install_code=_install_code,
                                   wake_phase=random_phase, installed_at=at, joins=joins)
            probe = self._probe_index(idx, kind)
            if probe is None:                           # nothing to check it with (nor much to stamp)
                self._template_off.add(kind.name)
                return l
            q = self._new_premises(probe, kind, at)
            q.commission(at)
            settle(q, at + SETTLE)
            diff = compare_states(self._stamped(probe, tpl).state(), q.state())
            if diff:
                raise TemplateMismatch(diff)
        except TemplateMismatch as e:
            log.warning("fleet: no installer template for kind %s (commissioned through the use cases instead): "
                        "a stamp differs at %s", kind.name, e)
            self._template_off.add(kind.name)
            self._error("template_mismatch")
            return l
        tpl.moves = moves
        self._templates[kind.name] = tpl
        return l

    def _probe_index(self, idx: int, kind: MixEntry) -> int | None:
        """Another premises of the same kind (any shard: it is never stored) to check a template with."""
        n = self.config.premises
        for k in range(1, min(n, 4096)):
            j = (idx + k) % n
            if self.config.kind_of(j) is kind or self.config.kind_of(j).name == kind.name:
                return j
        return None

    def _stamped(self, idx: int, tpl):
        """The `Premises` stamped from `tpl` for premises idx (not enrolled, not stored)."""
        from firmware_emu.premises import Premises
        p = Premises(None, self.keystore, _state=tpl.stamp(idx, _premises_seed(self.config.seed, idx)))
        tpl.finish(p)
        return p

    def _stamp(self, idx: int, kind: MixEntry, tpl, now: float) -> _Loaded:
        """Premises idx stamped from its kind's template (installer commissioning), enrolled and moved through
        the inventory as the template's devices were."""
        p = self._stamped(idx, tpl)
        euis = premises_euis(self.config, idx)
        self._inventory_ops.append(("install", [(euis[t], t, ev) for t, ev, _ in tpl.moves],
                                    (tpl.installed_at, tpl.made_at)))
        self.counters.materialised += 1
        self.counters.commissioned += 1
        self.counters.stamped += 1
        l = _Loaded(p, kind, 0, p._device_counters(), dirty=True)
        self._dirty.add(idx)
        return l

    # -- frames -------------------------------------------------------------------------------------------------
    def handle(self, frame: bytes, now: float, *, origin=None, received_at: float | None = None,
               hint: str | None = None) -> list[Outbound]:
        """A WAN frame at simulated time `now`: the frames it causes by then (Unroutable / DecodeError raised)."""
        self.counters.frames_in += 1
        try:
            h, _ = _header(frame)
        except DecodeError:
            self._error("undecodable")
            raise
        try:
            idx, dtype = self.route(h["recipient"])
        except Unroutable as e:
            self.counters.unroutable += 1
            self._error(e.reason)
            raise
        if hint is not None and hint.upper() != self.hub_of(idx):
            self._error("wrong_hub_topic")
            raise Unroutable("wrong_hub_topic", f"{h['recipient']} is not behind hub {hint}")
        code = h["code"] if isinstance(h["code"], int) else 0
        if h["counter"] is not None:
            moves_inventory = _moves_inventory(code)
            self._remember(h["recipient"], h["counter"], _Pending(origin, received_at, use_case_name(code), code,
                                                                  idx, bytes(frame) if moves_inventory else None))
        l = self._get(idx, now)
        p = l.premises
        t = max(now, p.now)
        if self.tuning.han == "direct" and dtype in _ALWAYS_ON:
            frames = self._direct(p, bytes(frame), t)
        else:
            frames = p.wan_in(bytes(frame), t)
        if self.tuning.eager_han:
            frames += self._drain(p, t)
        self._touch(idx, l)
        return self._outbound(idx, frames)

    def _direct(self, p, frame: bytes, t: float) -> list[bytes]:
        """`host.han = "direct"`: the hub routes the frame (Device Log, joined, GBT reassembly) but an always-on
        device gets it without crossing the simulated HAN, and its answers go through the hub's HAN → WAN
        routing at once. Same bytes as the simulated HAN, minus its latency, losses and cost."""
        frames = p.tick(t)
        for d in p.router.route_wan(frame, t):
            dev = p.devices.get(d.to)
            if d.how == "now" and dev is not None:
                for e in dev.receive(d.frame, t):
                    frames += p.router.route_han(e.frame, d.to, t)
            else:
                self._error(f"undeliverable_{d.how}")
        return frames

    def _drain(self, p, t: float) -> list[bytes]:
        out: list[bytes] = []
        limit = t + self.tuning.han_horizon
        for _ in range(10_000):
            nd = p.net.next_due()
            if nd is None or nd > limit:
                break
            out += p.tick(max(nd, p.now))
        return out

    def _touch(self, idx: int, l: _Loaded) -> None:
        l.dirty = True
        self._dirty.add(idx)

    def _remember(self, eui: str, counter: int, pending: _Pending) -> None:
        self._pending[(eui, counter)] = pending
        while len(self._pending) > self.tuning.pending:
            self._pending.popitem(last=False)
            self.counters.pending_dropped += 1
            self._error("unanswered_forgotten")

    def _outbound(self, idx: int, frames: list[bytes]) -> list[Outbound]:
        out = []
        hub = self.hub_of(idx)
        for f in frames:
            try:
                h, gbt = _header(f)
            except DecodeError:                       # pragma: no cover - our devices build valid frames
                out.append(Outbound(f, idx, hub, "other"))
                continue
            if h["cra"] == "response":
                key = (h["originator"], h["counter"])
                pend = self._pending.pop(key, None) if h["last"] else self._pending.get(key)
                o = Outbound(f, idx, hub, "response", use_case=use_case_name(h["code"] or 0) if h["code"] else None)
                if pend is not None:
                    o.origin, o.received_at, o.use_case = pend.origin, pend.received_at, pend.use_case
                    if pend.command is not None and h["last"] and not gbt and _success(f):
                        self._inventory_ops.append(("observe", pend.command, self.sim_now))
                self.counters.responses += 1
                out.append(o)
            elif h["cra"] == "alert":
                try:
                    code = alert_code(decode(f))
                except DecodeError:
                    code = None
                if code is None:
                    code = h["code"] if isinstance(h["code"], int) else None
                o = Outbound(f, idx, hub, "alert", alert_code=f"0x{code:04X}" if code is not None else "unknown")
                self.counters.alerts += 1
                out.append(o)
            else:
                out.append(Outbound(f, idx, hub, "other"))
        self.counters.frames_out += len(out)
        return out

    # -- time -----------------------------------------------------------------------------------------------------
    def tick_due(self, now: float, limit: int | None = None) -> list[Outbound]:
        """Run every premises whose timer fell due by `now` (at most `limit`)."""
        out: list[Outbound] = []
        self.sim_now = max(self.sim_now, now)
        for idx in self.store.due(now, limit or self.tuning.timer_batch):
            l = self._get(idx, now)
            p = l.premises
            if p.now < now:
                frames = p.tick(now)
            else:
                frames = []
            if self.tuning.eager_han:
                frames += self._drain(p, max(now, p.now))
            self._touch(idx, l)
            self.counters.timer_runs += 1
            out += self._outbound(idx, frames)
        return out

    def _wake_of(self, p) -> float | None:
        if self.tuning.timers == "all":
            return p.next_wakeup()
        times = [p.net.next_due()] + [d.next_wakeup() for d in p.devices.values()]
        for e in p.han_devices():
            if p.is_sleepy(e) and (p.router.queued(e) or p.st["outbox"].get(e)):
                times.append(p.next_wake(e))
        times = [t for t in times if t is not None]
        return min(times) if times else None

    def next_wake(self) -> float | None:
        """The earliest timer of this shard (committed premises)."""
        return self.store.next_wake()

    def commission_some(self, now: float, n: int) -> int:
        """Background commissioning: materialise up to `n` untouched premises of this shard, in index order."""
        cursor = int(self.store.meta("commission_cursor", 0))
        shard, total = self.config.shard, self.config.premises
        done = 0
        i = shard.index + cursor * shard.count
        while done < n and i < total:
            if not self.store.exists(i) and i not in self._lru:
                self._get(i, now)
                done += 1
            cursor += 1
            i += shard.count
        self._cursor = cursor
        self._cursor_dirty = True
        return done

    @property
    def fully_commissioned(self) -> bool:
        cursor = getattr(self, "_cursor", None)
        if cursor is None:
            cursor = int(self.store.meta("commission_cursor", 0))
        return self.config.shard.index + cursor * self.config.shard.count >= self.config.premises

    # -- durability -----------------------------------------------------------------------------------------------
    def commit(self) -> int:
        """Write every changed premises (and the inventory moves they caused) durably; returns how many.
        StateRegression / ConcurrentWrite: nothing was written and the premises concerned are dropped from
        memory (reloaded from storage when next needed)."""
        if not self._dirty and not self._inventory_ops and not getattr(self, "_cursor_dirty", False):
            return 0
        rows, done = [], []
        try:
            for idx in sorted(self._dirty):
                l = self._lru.get(idx)
                if l is None:
                    continue
                snap = l.premises.snapshot()
                for eui, counters in snap.counters.items():
                    check_counters(eui, {"counters": l.counters.get(eui) or {}}, {"counters": counters})
                enc, blob = self.store.encode_raw(snap.raw)
                rows.append((idx, l.kind.name, enc, blob, self._wake_of(l.premises), l.version))
                done.append((idx, l, snap))
            meta = {"sim_now": self.sim_now}
            if getattr(self, "_cursor_dirty", False):
                meta["commission_cursor"] = self._cursor
            self.store.save_many(rows, meta)
        except (StateRegression, ConcurrentWrite) as e:
            self._error("state_regression" if isinstance(e, StateRegression) else "concurrent_write")
            log.error("fleet commit refused: %s", e)
            for idx in list(self._dirty):
                l = self._lru.pop(idx, None)
                if l is not None:
                    self._devices_in_memory -= len(l.premises.devices)
            self._dirty.clear()
            self._inventory_ops.clear()
            raise
        self._cursor_dirty = False
        for idx, l, snap in done:
            l.version += 1
            l.dirty = False
            l.counters = snap.counters
        self._dirty.clear()
        self.counters.commits += 1
        self._apply_inventory()
        return len(rows)

    def _apply_inventory(self) -> None:
        """The inventory moves of the committed batch. Enrolments and moves of freshly materialised premises
        are merged across the batch (one `enrol_many` per time, one `apply_many` per event, detail and time, in
        the order the moves were made, so each device's own order holds): a few transactions per batch instead
        of several per premises. A merged group the inventory refuses is replayed move by move."""
        ops, self._inventory_ops = self._inventory_ops, []
        inv = self.inventory
        enrols: dict[float, list] = {}
        groups: dict[tuple, list] = {}
        installs: list[DeviceRecord] = []
        rest = []
        for op, arg, at in ops:
            if op == "enrol":
                enrols.setdefault(at, []).extend(arg)
            elif op == "moves":
                for eui, event, detail in arg:
                    groups.setdefault((event, detail, at), []).append(eui)
            elif op == "install":               # installer commissioning: records written in their end state
                enrolled_at, done_at = at
                recs: dict[str, DeviceRecord] = {}
                for eui, dtype, event in arg:
                    r = recs.get(eui)
                    if r is None:
                        r = recs[eui] = DeviceRecord(eui, dtype, SmiState.PENDING, enrolled_at, None,
                                                     inv.policy.deadline(SmiState.PENDING, enrolled_at))
                    if r.can(event):
                        r.apply(event, done_at, policy=inv.policy)
                installs.extend(recs.values())
            else:
                rest.append((op, arg, at))
        try:
            for at, items in enrols.items():
                try:
                    inv.enrol_many(items, at, actor="fleet")
                except DuplicateDevice:
                    for eui, dtype in items:
                        if inv.get(eui) is None:
                            inv.enrol(eui, dtype, at, actor="fleet")
            if installs:
                inv.put(installs, actor="installer")
            for (event, detail, at), euis in groups.items():
                try:
                    inv.apply_many([(e, event) for e in euis], at, actor="fleet", detail=detail)
                except (IllegalTransition, GbcsEmuError):
                    for eui in euis:
                        rec = inv.get(eui)
                        if rec is not None and rec.can(event):
                            inv.apply(eui, event, at, actor="fleet", detail=detail)
        except (IllegalTransition, GbcsEmuError, DecodeError) as e:   # the inventory is advisory
            log.warning("fleet inventory: %s", e)
            self._error("inventory")
        for op, arg, at in rest:
            try:
                if op == "observe":
                    inv.observe(decode(arg), at, actor="head end")
            except (IllegalTransition, GbcsEmuError, DecodeError) as e:   # the inventory is advisory
                log.warning("fleet inventory: %s", e)
                self._error("inventory")

    # -- reporting ------------------------------------------------------------------------------------------------
    def _error(self, reason: str) -> None:
        self.counters.errors[reason] = self.counters.errors.get(reason, 0) + 1
        if self.metrics is not None:
            self.metrics.record_error(reason)

    def status(self) -> dict:
        """Counts per SMI state and per device type for this shard (untouched premises count as pending)."""
        return _merge_status([self.inventory.status().as_dict()], self.config,
                             self.store.kind_counts(), self.config.shard.premises(self.config.premises))

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.commit()
        finally:
            self._closed = True
            self.store.close()
            self.inventory.close()


# ------------------------------------------------------------------------------------------------ status / export

def _merge_status(stored: list[dict], cfg: FleetConfig, materialised: dict[str, int], indices: range) -> dict:
    by_state = {s.value: 0 for s in SmiState}
    by_type: dict[str, dict[str, int]] = {}
    total = 0
    for st in stored:
        total += st["total"]
        for k, v in st["by_state"].items():
            by_state[k] = by_state.get(k, 0) + v
        for t, per in st["by_type"].items():
            for k, v in per.items():
                by_type.setdefault(t, {})
                by_type[t][k] = by_type[t].get(k, 0) + v
    counts = cfg.kind_counts(indices)
    untouched = 0
    for m in cfg.mix:
        n = counts.get(m.name, 0) - materialised.get(m.name, 0)
        untouched += max(0, n)
        for t in m.device_types:
            by_type.setdefault(t, {})
            by_type[t]["pending"] = by_type[t].get("pending", 0) + max(0, n)
            by_state["pending"] += max(0, n)
            total += max(0, n)
    premises_total = len(indices)
    return {"fleet": cfg.name, "premises": premises_total, "premises_materialised": premises_total - untouched,
            "devices": total, "by_state": by_state,
            "by_type": {t: dict(sorted(v.items())) for t, v in sorted(by_type.items())}}


def state_files(cfg: FleetConfig) -> list[Path]:
    """Every shard file in the state directory (all of one shard count)."""
    files = sorted(cfg.state_dir.glob("shard-*-of-*.sqlite"))
    counts = {f.stem.rsplit("-of-", 1)[1] for f in files}
    if len(counts) > 1:
        raise ConfigError("fleet.shard", f"{cfg.state_dir} mixes shard counts {sorted(counts)}")
    return files


def fleet_status(cfg: FleetConfig) -> dict:
    """`gbcs-emu fleet status`: counts over every shard file (whole fleet), without running anything."""
    stored, materialised = [], {}
    for f in state_files(cfg):
        store = PremisesStore(f)
        inv = InventoryStore(str(f))
        try:
            stored.append(inv.status().as_dict())
            for k, v in store.kind_counts().items():
                materialised[k] = materialised.get(k, 0) + v
        finally:
            inv.close()
            store.close()
    out = _merge_status(stored, cfg, materialised, range(cfg.premises))
    out["shards"] = len(state_files(cfg))
    return out


_COLUMNS = ("eui", "device_type", "state", "since", "previous", "expires_at")


def _records(cfg: FleetConfig) -> Iterator[dict]:
    """Stored inventory records of every shard, then untouched premises' devices as pending."""
    materialised: set[int] = set()
    provisioned = cfg.start or 0.0
    for f in state_files(cfg):
        store = PremisesStore(f)
        inv = InventoryStore(str(f))
        try:
            provisioned = float(store.meta("provisioned_at", provisioned))
            materialised.update(store.indices())
            for r in inv.records():
                yield r.as_dict()
        finally:
            inv.close()
            store.close()
    for i in range(cfg.premises):
        if i in materialised:
            continue
        for t, e in premises_euis(cfg, i).items():
            yield {"eui": e, "device_type": t, "state": "pending", "since": provisioned, "previous": None,
                   "expires_at": None}


def export_inventory(cfg: FleetConfig, fp, fmt: str = "csv") -> int:
    """The whole fleet's inventory as CSV or as the InventoryStore JSON document (streamed)."""
    import csv
    n = 0
    if fmt == "csv":
        w = csv.writer(fp, lineterminator="\n")
        w.writerow(_COLUMNS)
        for d in _records(cfg):
            w.writerow(["" if d[c] is None else (repr(d[c]) if isinstance(d[c], float) else d[c]) for c in _COLUMNS])
            n += 1
        return n
    if fmt != "json":
        raise FleetError(f"unknown export format {fmt!r} (csv or json)")
    fp.write('{"format": "gbcs-emu inventory 1", "devices": [')
    for d in _records(cfg):
        fp.write(("\n " if n == 0 else ",\n ") + json.dumps(d, separators=(",", ":")))
        n += 1
    fp.write("\n]}\n")
    return n


# ------------------------------------------------------------------------------------------------ the async edge

#: Young-generation threshold of `tune_gc` (CPython's default is 700 allocations).
GC_THRESHOLD = (20_000, 50, 100)
_GC_TUNED = False


def tune_gc() -> None:
    """Process-wide: move what exists now (imports, the device classes' object models) to the permanent
    generation and collect the young generation every `GC_THRESHOLD[0]` allocations instead of 700. A loaded
    premises is thousands of objects; with the defaults the collector walks them over and over (about a quarter
    of the CPU of a cache miss, measured). Reference counting frees almost everything anyway."""
    import gc
    global _GC_TUNED
    if _GC_TUNED:                   # once per process (a test suite starts many runners)
        return
    _GC_TUNED = True
    gc.collect()
    gc.freeze()
    if gc.get_threshold()[0] < GC_THRESHOLD[0]:
        gc.set_threshold(*GC_THRESHOLD)


class FleetRunner:
    """A `FleetHost` on the network: WAN adapters, simulated clock, group commit, metrics, signals.

    `await runner.start()`, then `await runner.run(duration)` (or `await runner.stop()` from elsewhere)."""

    def __init__(self, host: FleetHost, *, clock: SimClock | None = None, metrics=None,
                 metrics_server: bool = True):
        self.host = host
        cfg = host.config
        self.config = cfg
        self.clock = clock or SimClock(host.start_time, cfg.speed)
        self.metrics = metrics
        if self.metrics is None:
            from firmware_emu.fleet.metrics import FleetMetrics
            self.metrics = FleetMetrics(const_labels={"fleet": cfg.name, "shard": str(cfg.shard)})
        host.metrics = self.metrics
        self._want_metrics_server = metrics_server and cfg.metrics_port is not None
        self._metrics_server = None
        self.adapters: list = []
        self.tcp: list = []
        self.mqtt: list = []
        self._queue: asyncio.Queue | None = None
        self._tasks: list[asyncio.Task] = []
        self._stopping = False
        self._busy = False
        self.refused = 0

    @property
    def tcp_ports(self) -> list[int]:
        return [a.port for a in self.tcp]

    async def start(self) -> None:
        from firmware_emu.fleet.wan import TcpWanServer
        if self.config.host.gc == "tuned":
            tune_gc()
        self._queue = asyncio.Queue(self.config.host.queue)
        for t in self.config.tcp:
            port = t.port + self.config.shard.index if t.port else 0     # shard k listens on port + k
            a = TcpWanServer(self.on_frame, host=t.host, port=port, framing=t.framing)
            await a.start()
            self.tcp.append(a)
            self.adapters.append(a)
        for m in self.config.mqtt:
            from firmware_emu.fleet.mqtt import MqttWan
            hubs = [self.host.hub_of(i) for i in self.config.shard.premises(self.config.premises)] \
                if self.config.shard.size(self.config.premises) <= 10_000 else None
            kw = {"hubs": hubs} if hubs is not None else {"filters": [f"{m.prefix}/+/down"],
                                                         "serves": self.host.serves_hub}
            a = MqttWan(self.on_frame, m.host, m.port, prefix=m.prefix,
                        identifier=f"gbcs-emu-{self.config.name}-{self.config.shard.index}of"
                                   f"{self.config.shard.count}", **kw)
            await a.start()
            self.mqtt.append(a)
            self.adapters.append(a)
        if self._want_metrics_server:
            from firmware_emu.fleet.metrics import start_http_server
            port = self.config.metrics_port + self.config.shard.index if self.config.metrics_port else 0
            self._metrics_server = start_http_server(port, self.metrics,
                                                     self.config.metrics_listen)
        self._tasks = [asyncio.create_task(self._worker(), name="fleet-worker"),
                       asyncio.create_task(self._gauges(), name="fleet-gauges")]
        log.info("fleet %s shard %s running: TCP %s, MQTT %d, speed %gx from %s", self.config.name,
                 self.config.shard, self.tcp_ports, len(self.mqtt), self.clock.speed, self.clock.now())

    async def on_frame(self, frame: bytes, origin) -> None:
        """What the adapters call: queue the frame (waiting when the queue is full: the WAN is held back)."""
        if self._stopping:
            self.refused += 1
            self.host._error("shutting_down")
            return
        await self._queue.put((bytes(frame), origin))

    async def _worker(self) -> None:
        q, tuning = self._queue, self.config.host
        next_timer = 0.0
        rate = self.config.commissioning_rate
        background = self.config.commissioning == "background"
        budget, last = 0.0, time.monotonic()
        loop = asyncio.get_running_loop()
        while True:
            batch = []
            try:
                batch.append(await asyncio.wait_for(q.get(), timeout=tuning.timer_interval))
            except asyncio.TimeoutError:
                pass
            if batch and tuning.batch_window_ms > 0:
                await asyncio.sleep(tuning.batch_window_ms / 1000.0)
            while len(batch) < tuning.batch and not q.empty():
                batch.append(q.get_nowait())
            self._busy = True
            now = self.clock.now()
            self.host.sim_now = max(self.host.sim_now, now)
            out: list[Outbound] = []
            for frame, origin in batch:
                try:
                    out += self.host.handle(frame, now, origin=origin, received_at=getattr(origin, "received_at", None),
                                            hint=getattr(origin, "hint", None))
                except (Unroutable, DecodeError) as e:
                    log.info("fleet: frame refused: %s", e)
                except Exception:                                  # noqa: BLE001 - one frame, not the fleet
                    log.exception("fleet: frame handling failed")
                    self.host._error("handler")
            wall = loop.time()
            if wall >= next_timer:
                next_timer = wall + tuning.timer_interval
                try:
                    out += self.host.tick_due(now)
                except Exception:                                  # noqa: BLE001
                    log.exception("fleet: timers failed")
                    self.host._error("timer")
            if background and q.empty() and not self.host.fully_commissioned:
                t = time.monotonic()
                budget = min(budget + (t - last) * rate, max(1.0, rate))
                last = t
                if budget >= 1:
                    try:
                        done = self.host.commission_some(now, int(budget))
                        budget -= max(done, 1)
                    except Exception:                              # noqa: BLE001
                        log.exception("fleet: background commissioning failed")
                        self.host._error("commissioning")
            try:
                self.host.commit()
            except (StateRegression, ConcurrentWrite):
                out = []                                   # nothing of this batch leaves the process
            for o in out:
                await self._send(o)
            self._busy = False

    async def _send(self, o: Outbound) -> None:
        m = self.metrics
        sent = False
        if o.kind == "response" and o.origin is not None:
            try:
                sent = await o.origin(o.frame)
            except Exception:                              # noqa: BLE001 - a closed connection
                sent = False
            if o.received_at is not None:
                m.record_command(o.use_case or "unknown", "response", time.time() - o.received_at)
            else:
                m.record_command(o.use_case or "unknown", "response")
        elif o.kind == "response":
            m.record_command(o.use_case or "unknown", "late_response")
        if o.kind == "alert":
            m.record_alert(o.alert_code or "unknown")
        if not sent:
            for a in self.adapters:
                try:
                    if a in self.mqtt:
                        await a.send(o.frame, to=o.hub)
                    else:
                        await a.send(o.frame)
                except GbcsEmuError as e:
                    log.warning("fleet: could not send a %s: %s", o.kind, e)

    async def _gauges(self) -> None:
        n = 0
        while True:
            self.metrics.set_devices_in_memory(self.host.devices_in_memory)
            if n % 10 == 0:
                try:
                    self.metrics.set_devices_by_state(self.host.status()["by_state"])
                except Exception:                          # noqa: BLE001 - reporting only
                    log.exception("fleet: inventory status failed")
            n += 1
            await asyncio.sleep(0.5)

    async def run(self, duration: float | None = None, *, handle_signals: bool = False) -> None:
        """Serve until `duration` wall seconds passed, `stop()` was called or (with `handle_signals`) SIGINT or
        SIGTERM arrived; then shut down cleanly."""
        stop = asyncio.Event()
        self._stop_request = stop
        loop = asyncio.get_running_loop()
        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    loop.add_signal_handler(sig, stop.set)
                except (NotImplementedError, RuntimeError):   # pragma: no cover - not the main thread
                    pass
        try:
            await asyncio.wait_for(stop.wait(), duration)
        except asyncio.TimeoutError:
            pass
        finally:
            if handle_signals:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    try:
                        loop.remove_signal_handler(sig)
                    except (NotImplementedError, RuntimeError):  # pragma: no cover
                        pass
        await self.stop()

    def request_stop(self) -> None:
        stop = getattr(self, "_stop_request", None)
        if stop is not None:
            stop.set()

    async def stop(self, grace: float = 3.0) -> None:
        """Stop taking frames, finish the queued ones (up to `grace` s), commit, close the adapters."""
        if self._stopping:
            return
        self._stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self._queue is not None and (self._busy or not self._queue.empty()) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        if self._queue is not None and not self._queue.empty():
            log.warning("fleet: %d frames still queued at shutdown", self._queue.qsize())
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for a in self.adapters:
            await a.close(grace)
        if self._metrics_server is not None:
            server, _thread = self._metrics_server
            server.shutdown()
        self.host.sim_now = max(self.host.sim_now, self.clock.now())
        self.host.close()
        log.info("fleet %s shard %s stopped at simulated %s", self.config.name, self.config.shard, self.host.sim_now)
