"""Crash safety: a fleet killed with SIGKILL in the middle of a command mix keeps every acknowledged change.

    python bench/crash.py [--runs R] [--commands N] [--premises P] [--seed S] [--durability normal|full]
                          [--han direct|simulated] [--json]

Theory of operation
-------------------
A fleet runs as `gbcs-emu fleet run` in a subprocess (TCP listener, GFI text framing), electricity-only premises
(hub + ESME, credit mode, so the meter balance moves only by top-ups). A head end in this process drives it over
one TCP connection, **one command outstanding per ESME** and all ESMEs in parallel, with a seeded mix:

* reads: ECS17a (energy registers), ECS82 (meter balance), ECS45 (load switch state);
* state changes: CS01a top-ups (each UTRN unique, £1), ECS43 / ECS42 (open / close the load switch),
  ECS01b (price update);
* replays: an already acknowledged replay-protected command re-sent as it was (must be refused: the alert
  0x8F53 and no response).

A head-end model per ESME tracks what was acknowledged (a response arrived: the fleet committed it first) and what
is *uncertain* (sent, never answered: applied or not). While running, every ECS82 / ECS45 answer must equal the
model. At a seeded random point (after `kill_at` answers, somewhere in the middle, with commands in flight) the
fleet gets SIGKILL. Then:

1. **Storage** (the fleet is dead): the state file is opened with the fleet's store API and, for every ESME,
   balance - (initial + acknowledged top-ups) must be the sum of a subset of the uncertain top-ups; the load
   switch must be in the last acknowledged state or in the state of an uncertain command sent after it; the
   supplier's replay counter must be at least the last acknowledged one and at most the last sent one.
2. **Restart** from the same state directory; through the protocol, ECS82 and ECS45 must agree with storage,
   and re-sending each ESME's last acknowledged replay-protected command must be refused with the balance
   unchanged (so no counter went backwards).
3. The rest of the mix runs (the fleet carries on: new top-ups accepted), the fleet stops cleanly (SIGTERM), and
   storage is checked once more, now with nothing uncertain: balance and load switch exactly as acknowledged.

Output (`--json`): one object: `{"runs": R, "passed": n, "commands": N, "runs_detail": [...]}`, each run with its
kill point, commands sent / acknowledged / uncertain, replays refused, throughput and the violations (empty when
it passed). Exit status 0 when every run passed. `tests/test_crash_safety.py` runs `crash_run` with fewer
commands.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import signal
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

START = "2025-01-01T00:00:00Z"
SUPPLY_REPLAY_ALERT = 0x8F53          # Failed Authentication or Authorisation (a replayed counter)
TOP_UP_POUNDS = 1
PER_POUND = 100 * 1000                # millipence
CREDIT = "0-0:19.10.0.255"
TOKEN_GATEWAY = "0-0:19.40.0.255"
DISCONNECT_CONTROL = "0-0:96.3.10.255"
SUPPLY_SCRIPTS = "0-0:10.0.106.255"
CONTROL_STATE = {0: "disabled", 1: "enabled", 2: "armed"}
#: (kind, weight): the mix. "replay" re-sends an acknowledged replay-protected command.
MIX = (("ECS17a", 18), ("ECS82", 10), ("ECS45", 10), ("CS01a", 30), ("ECS43", 8), ("ECS42", 8), ("ECS01b", 6),
       ("replay", 10))
REPLAY_PROTECTED = ("CS01a", "ECS43", "ECS42", "ECS01b")
_READY = re.compile(r"ready in [0-9.]+ s; TCP \[(\d+)")


def fleet_toml(name: str, premises: int, state_dir: Path, *, seed: int = 7, durability: str = "normal",
               han: str = "direct", extra: str = "") -> str:
    """An electricity-only fleet (hub + ESME per premises) on a free TCP port, GFI framing."""
    return f"""
[fleet]
name = "{name}"
seed = {seed}
premises = {premises}
state_dir = "{state_dir}"

[time]
start = "{START}"
speed = 1.0

[[mix]]
name = "electricity_only"
share = 1.0
devices = ["ESME"]

[han]
loss = 0.0
latency = 0.005

[commissioning]
mode = "lazy"

[[wan.tcp]]
listen = "127.0.0.1:0"
framing = "gfi"

[host]
durability = "{durability}"
han = "{han}"
{extra}
"""


# ------------------------------------------------------------------------------------------------ the fleet process

class FleetProcess:
    """`gbcs-emu fleet run CONFIG` as a subprocess: started (ready line parsed for the TCP port), killed or stopped.
    Its stderr is drained into a bounded tail (a chatty fleet never blocks on a full pipe)."""

    def __init__(self, config: Path, *, extra_args: tuple[str, ...] = (), stderr_log: Path | None = None):
        self.config = Path(config)
        self.extra_args = extra_args
        self.stderr_log = Path(stderr_log) if stderr_log else None
        self.proc: asyncio.subprocess.Process | None = None
        self.port: int | None = None
        self.stderr_tail: deque[str] = deque(maxlen=200)
        self._drain: asyncio.Task | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def start(self, timeout: float = 60.0) -> int:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "firmware_emu.cli", "fleet", "run", str(self.config), *self.extra_args,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            cwd=str(ROOT), env=env)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                await self.kill()
                raise RuntimeError(f"fleet not ready in {timeout:g} s: {list(self.stderr_tail)[-5:]}")
            try:
                line = await asyncio.wait_for(self.proc.stderr.readline(), left)
            except asyncio.TimeoutError:
                continue
            if not line:
                await self.kill()
                raise RuntimeError(f"fleet exited before it was ready: {list(self.stderr_tail)[-10:]}")
            text = line.decode(errors="replace").rstrip()
            self._keep(text)
            m = _READY.search(text)
            if m:
                self.port = int(m.group(1))
                break
        self._drain = asyncio.create_task(self._drain_stderr())
        return self.port

    async def _drain_stderr(self) -> None:
        while self.proc is not None:
            line = await self.proc.stderr.readline()
            if not line:
                return
            self._keep(line.decode(errors="replace").rstrip())

    def _keep(self, text: str) -> None:
        self.stderr_tail.append(text)
        if self.stderr_log is not None:
            with open(self.stderr_log, "a") as f:
                f.write(text + "\n")

    def kill_now(self) -> None:
        """SIGKILL, synchronously (from a callback: the kill lands between two frames of the traffic)."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)

    async def kill(self) -> None:
        self.kill_now()
        await self._reap(10.0)

    async def stop(self, timeout: float = 30.0) -> dict | None:
        """SIGTERM and wait; the fleet's JSON summary line (None if it had to be killed)."""
        if self.proc is None or self.proc.returncode is not None:
            return None
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            out = await asyncio.wait_for(self.proc.stdout.read(), timeout)
        except asyncio.TimeoutError:
            await self.kill()
            return None
        await self._reap(timeout)
        lines = [ln for ln in out.decode(errors="replace").splitlines() if ln.startswith("{")]
        return json.loads(lines[-1]) if lines else None

    async def _reap(self, timeout: float) -> None:
        if self.proc is None:
            return
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        if self._drain is not None:
            self._drain.cancel()
            await asyncio.gather(self._drain, return_exceptions=True)
            self._drain = None


def vm_rss(pid: int) -> int:
    """Resident set size of a process in bytes (VmRSS), 0 when unknown."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# ------------------------------------------------------------------------------------------------ commands

def _dlms(code: int, recipient: str, specs: list[tuple]) -> dict:
    """Command JSON: specs are (kind, class_id, obis, index, data or None)."""
    from protocols.dlms.apdu import access_request
    return {"grouping_header": {"recipient": recipient, "other_information": {"message_code": f"0x{code:04X}"}},
            "payload": {"dlms": access_request(*specs)}}


def _ecs01b(recipient: str, price: int) -> dict:
    """ECS01b (Set Price on ESME) as the appendix shapes it, with a price of our choosing."""
    charge = [{"type": "structure", "value": [
        {"type": "structure", "value": [{"type": "integer", "value": 0}, {"type": "integer", "value": 3}]},
        {"type": "structure", "value": [{"type": "long-unsigned", "value": 0},
                                        {"type": "octet-string", "value": "000000000000"},
                                        {"type": "integer", "value": 0}]},
        {"type": "array", "value": [{"type": "structure", "value": [{"type": "octet-string", "value": ""},
                                                                   {"type": "long", "value": price}]}]}]},
        {"type": "structure", "value": [
            {"type": "structure", "value": [{"type": "integer", "value": 3}, {"type": "integer", "value": 3}]},
            {"type": "structure", "value": [{"type": "long-unsigned", "value": 3},
                                            {"type": "octet-string", "value": "0100010800FF"},
                                            {"type": "integer", "value": 2}]},
            {"type": "array", "value": [{"type": "structure", "value": [{"type": "octet-string", "value": "AB"},
                                                                       {"type": "long", "value": price}]}]}]},
        {"type": "octet-string", "value": "0000000000000000008000FF"},
        {"type": "octet-string", "value": "0000000000000000008000FF"}]
    return _dlms(0x00A2, recipient, [("set", 113, "0-0:19.20.4.255", 6, charge[0]),
                                     ("set", 113, "0-0:19.20.0.255", 6, charge[1]),
                                     ("set", 113, "0-0:19.20.4.255", 7, charge[2]),
                                     ("set", 113, "0-0:19.20.0.255", 7, charge[3])])


class HeadEnd:
    """Builds the mix's commands as the fleet's supplier and network operator (keys derived from the fleet
    configuration, `FleetKeys`), verifies the MAC of every answer, matches answers to commands."""

    def __init__(self, cfg, *, initial_counter: int = 1_000_000):
        from firmware_emu.fleet.keys import FleetKeys
        from hil.remote_party import CounterStore, RemoteParty
        from hil.verify import make_verifier
        from protocols.security.keystore import Role
        self.cfg = cfg
        keys = FleetKeys.from_config(cfg, create=True)
        self.ks = keys.keystore
        self.supplier_eui = keys.organisation(Role.SUPPLIER)
        self.supplier = RemoteParty(self.ks, self.supplier_eui, Role.SUPPLIER,
                                    counter_store=CounterStore(None, initial_counter=initial_counter))
        self.operator = RemoteParty(self.ks, keys.organisation(Role.NETWORK_OPERATOR), Role.NETWORK_OPERATOR,
                                    counter_store=CounterStore(None, initial_counter=initial_counter))
        self.verify = make_verifier(self.ks)
        self._utrn_blocks: dict[str, int] = {}

    def utrn(self, eui: str) -> str:
        from protocols.security.eui import as_eui
        from protocols.security.utrn import ValueClass, build_utrn
        n = self._utrn_blocks[eui] = self._utrn_blocks.get(eui, 0) + 1
        return build_utrn(self.ks.pp_ka_private(as_eui(self.supplier_eui)), self.ks.ka_public(as_eui(eui)),
                          as_eui(self.supplier_eui), as_eui(eui), n << 32, TOP_UP_POUNDS, ValueClass.POUNDS)

    def build(self, kind: str, eui: str, rng: random.Random) -> tuple[int, bytes]:
        """(originator counter, frame) of one command of the mix."""
        party = self.supplier
        if kind == "ECS17a":
            party = self.operator
            cmd = _dlms(0x0026, eui, [("get", 3, "1-0:1.8.0.255", 2, None)])
        elif kind == "ECS82":
            cmd = _dlms(0x0069, eui, [("get", 112, CREDIT, 2, None)])
        elif kind == "ECS45":
            cmd = _dlms(0x0052, eui, [("get", 70, DISCONNECT_CONTROL, 3, None)])
        elif kind == "CS01a":
            value = {"type": "octet-string", "value": self.utrn(eui).encode().hex().upper()}
            cmd = _dlms(0x0007, eui, [("action", 115, TOKEN_GATEWAY, 1, value)])
        elif kind in ("ECS42", "ECS43"):
            script = 51 if kind == "ECS42" else 52
            cmd = _dlms(0x004F if kind == "ECS42" else 0x0050, eui,
                        [("action", 9, SUPPLY_SCRIPTS, 1, {"type": "long-unsigned", "value": script})])
        elif kind == "ECS01b":
            cmd = _ecs01b(eui, rng.randrange(100, 2000))
        else:
            raise ValueError(kind)
        frame = party.build(cmd)
        return party.last_counter, frame


def dlms_results(msg: dict) -> tuple[list[str], list[dict]]:
    ar = ((msg.get("payload") or {}).get("dlms") or {}).get("access_response") or {}
    return [r.get("result") for r in ar.get("results") or []], ar.get("data") or []


# ------------------------------------------------------------------------------------------------ the model

@dataclass
class Meter:
    """What the head end knows about one ESME."""

    idx: int
    eui: str
    initial: int | None = None                    # balance at the first ECS82 answer
    credit: int = 0                               # acknowledged top-ups since then (+ resolved uncertain ones)
    uncertain_topups: list[int] = field(default_factory=list)
    supply: str | None = None                     # last acknowledged (or read) load switch state
    uncertain_supply: list[str] = field(default_factory=list)   # states of unanswered commands after it
    acked_counter: int = -1                       # highest acknowledged replay-protected counter
    sent_counter: int = -1                        # highest replay-protected counter sent
    acked_frames: deque = field(default_factory=lambda: deque(maxlen=8))   # (counter, kind, frame) to replay

    def expected_balance(self) -> int | None:
        return None if self.initial is None else self.initial + self.credit

    def possible_balances(self) -> set[int]:
        base = self.expected_balance()
        if base is None:
            return set()
        sums = {0}
        for a in self.uncertain_topups:
            sums |= {s + a for s in sums}
        return {base + s for s in sums}

    def possible_supply(self) -> set[str]:
        return {self.supply or "enabled", *self.uncertain_supply}


class Violation(AssertionError):
    """A crash-safety property that does not hold."""


class Traffic:
    """The head end's traffic over one TCP connection: one command outstanding per ESME (module docstring)."""

    def __init__(self, head: HeadEnd, meters: list[Meter], rng: random.Random, *, answer_timeout: float = 30.0,
                 replay_timeout: float = 10.0):
        self.head = head
        self.meters = meters
        self.rng = rng
        self.answer_timeout = answer_timeout
        self.replay_timeout = replay_timeout
        self.link = None
        self.waiting: dict[tuple[str, int], asyncio.Future] = {}
        self.alert_waiters: dict[str, asyncio.Future] = {}
        self.violations: list[str] = []
        self.stats = {"sent": 0, "acknowledged": 0, "uncertain": 0, "replays_refused": 0, "verification_failures": 0,
                      "unmatched": 0, "alerts": 0, "by_kind": {}}
        self.answered = 0
        self.on_answer = None                      # callback(answered count)
        self._reader: asyncio.Task | None = None

    def violation(self, text: str) -> None:
        if len(self.violations) < 100:
            self.violations.append(text)

    async def connect(self, port: int) -> None:
        from firmware_emu.fleet.wan import TcpWanClient
        self.link = await TcpWanClient.connect("127.0.0.1", port, framing="gfi", queue=65536)
        self._reader = asyncio.create_task(self._read(self.link))

    async def close(self) -> None:
        if self.link is not None:
            await self.link.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        self._fail_waiters()

    def _fail_waiters(self) -> None:
        for fut in list(self.waiting.values()) + list(self.alert_waiters.values()):
            if not fut.done():
                fut.set_exception(ConnectionError("link closed"))
        self.waiting.clear()
        self.alert_waiters.clear()

    async def _read(self, link) -> None:
        from firmware_emu.fleet.wan import WanClosed
        from hil.verify import INVALID, VALID
        from protocols.errors import DecodeError
        from protocols.gbcs.message import alert_code, decode
        try:
            while True:
                try:
                    frame = await link.recv(None)
                except WanClosed:
                    return
                try:
                    msg = decode(frame)
                except DecodeError:
                    self.violation("undecodable frame from the fleet")
                    continue
                gh = msg["grouping_header"]
                cra = gh.get("cra_flag")
                if cra == "alert":
                    self.stats["alerts"] += 1
                    fut = self.alert_waiters.get(str(gh.get("originator", "")).upper())
                    if fut is not None and not fut.done():
                        fut.set_result(alert_code(msg))
                    continue
                if cra != "response":
                    continue
                verdict = self.head.verify(frame, msg)
                if VALID not in (verdict.get("mac"), verdict.get("signature")) or \
                        INVALID in (verdict.get("mac"), verdict.get("signature")):
                    self.stats["verification_failures"] += 1
                    self.violation(f"response MAC {verdict.get('mac')} / signature {verdict.get('signature')} "
                                   f"from {gh.get('originator')} "
                                   f"(message code {(gh.get('other_information') or {}).get('message_code')})")
                key = (str(gh.get("originator", "")).upper(), gh.get("originator_counter"))
                fut = self.waiting.pop(key, None)
                if fut is None:
                    self.stats["unmatched"] += 1
                    self.violation(f"response to no outstanding command {key} (a replay accepted?)")
                    continue
                if not fut.done():
                    fut.set_result(msg)
        finally:
            self._fail_waiters()

    async def command(self, m: Meter, kind: str) -> bool:
        """Send one command of `kind` to meter m and update the model with its answer. False when the link
        went down before the answer (the command is then uncertain)."""
        from protocols.errors import GbcsEmuError
        loop = asyncio.get_running_loop()
        if kind == "replay":
            return await self.replay(m)
        counter, frame = self.head.build(kind, m.eui, self.rng)
        fut = loop.create_future()
        self.waiting[(m.eui, counter)] = fut
        protected = kind in REPLAY_PROTECTED
        if protected:
            m.sent_counter = max(m.sent_counter, counter)
        self.stats["sent"] += 1
        self.stats["by_kind"][kind] = self.stats["by_kind"].get(kind, 0) + 1
        try:
            await self.link.send(frame)
            msg = await asyncio.wait_for(fut, self.answer_timeout)
        except (GbcsEmuError, ConnectionError, OSError, asyncio.TimeoutError) as e:   # the link went down
            self.waiting.pop((m.eui, counter), None)
            if isinstance(e, asyncio.TimeoutError):
                self.violation(f"{kind} to {m.eui} unanswered for {self.answer_timeout:g} s on a live link")
            self.stats["uncertain"] += 1
            if kind == "CS01a":
                m.uncertain_topups.append(TOP_UP_POUNDS * PER_POUND)
            elif kind in ("ECS42", "ECS43"):
                m.uncertain_supply.append("enabled" if kind == "ECS42" else "disabled")
            return False
        self.stats["acknowledged"] += 1
        self.answered += 1
        results, data = dlms_results(msg)
        ok = bool(results) and all(r == "success" for r in results)
        if protected:
            m.acked_counter = max(m.acked_counter, counter)
            m.acked_frames.append((counter, kind, frame))
        if kind == "CS01a":
            if ok:
                m.credit += TOP_UP_POUNDS * PER_POUND
        elif kind in ("ECS42", "ECS43") and ok:
            m.supply = "enabled" if kind == "ECS42" else "disabled"
            m.uncertain_supply.clear()
        elif kind == "ECS82":
            if not ok or not data:
                self.violation(f"ECS82 to {m.eui} failed: {results}")
            else:
                self._check_balance(m, int(data[0]["value"]), "ECS82")
        elif kind == "ECS45":
            if not ok or not data:
                self.violation(f"ECS45 to {m.eui} failed: {results}")
            else:
                self._check_supply(m, CONTROL_STATE.get(int(data[0]["value"]), "?"), "ECS45")
        elif not ok and kind != "CS01a":
            self.violation(f"{kind} to {m.eui} failed: {results}")
        if self.on_answer is not None:
            self.on_answer(self.answered)
        return True

    def _check_balance(self, m: Meter, value: int, where: str) -> None:
        if m.initial is None:
            m.initial, m.credit = value, 0
            m.uncertain_topups.clear()
            return
        possible = m.possible_balances()
        if value not in possible:
            self.violation(f"{where}: {m.eui} balance {value}, expected one of {sorted(possible)[:5]} "
                           f"(initial {m.initial} + acknowledged {m.credit}, uncertain {m.uncertain_topups})")
        m.credit = value - m.initial                 # uncertain top-ups resolved: applied or not
        m.uncertain_topups.clear()

    def _check_supply(self, m: Meter, state: str, where: str) -> None:
        possible = m.possible_supply()
        if state not in possible:
            self.violation(f"{where}: {m.eui} load switch {state}, expected one of {sorted(possible)} "
                           f"(last acknowledged {m.supply})")
        m.supply = state
        m.uncertain_supply.clear()

    async def replay(self, m: Meter) -> bool:
        """Re-send m's last acknowledged replay-protected command as it was: must be refused (alert 0x8F53,
        no response). Nothing acknowledged yet: a read instead."""
        if not m.acked_frames:
            return await self.command(m, "ECS82")
        from protocols.errors import GbcsEmuError
        counter, kind, frame = m.acked_frames[-1]
        loop = asyncio.get_running_loop()
        alert = loop.create_future()
        self.alert_waiters[m.eui] = alert
        resp = loop.create_future()
        self.waiting[(m.eui, counter)] = resp                 # a response would mean the replay was accepted
        self.stats["sent"] += 1
        self.stats["by_kind"]["replay"] = self.stats["by_kind"].get("replay", 0) + 1
        try:
            await self.link.send(frame)
            done, _ = await asyncio.wait({alert, resp}, timeout=self.replay_timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        except (GbcsEmuError, ConnectionError, OSError):    # the link went down
            return False
        finally:
            self.alert_waiters.pop(m.eui, None)
            self.waiting.pop((m.eui, counter), None)
        if resp in done and not resp.exception():
            self.violation(f"replay of acknowledged {kind} #{counter} to {m.eui} was answered (accepted)")
            return True
        if alert in done and not alert.exception():
            code = alert.result()
            if code != SUPPLY_REPLAY_ALERT:
                self.violation(f"replay of {kind} #{counter} to {m.eui}: alert 0x{code or 0:04X}, expected 0x8F53")
            self.stats["replays_refused"] += 1
            self.answered += 1
            if self.on_answer is not None:
                self.on_answer(self.answered)
            return True
        if (alert in done and alert.exception()) or (resp in done and resp.exception()):
            return False                                    # the link went down meanwhile
        self.violation(f"replay of {kind} #{counter} to {m.eui}: neither refused (alert) nor answered in "
                       f"{self.replay_timeout:g} s")
        return True

    async def run(self, budget: list[int], stop: asyncio.Event) -> None:
        """Every meter sends commands of the mix, one at a time, while budget[0] > 0 and the link is up."""
        kinds = [k for k, _ in MIX]
        weights = [w for _, w in MIX]

        async def worker(m: Meter):
            while budget[0] > 0 and not stop.is_set():
                budget[0] -= 1
                kind = "ECS82" if m.initial is None else self.rng.choices(kinds, weights)[0]
                if not await self.command(m, kind):
                    return

        await asyncio.gather(*(worker(m) for m in self.meters))


# ------------------------------------------------------------------------------------------------ storage checks

def stored_meters(cfg, meters: list[Meter], supplier: str) -> dict[str, dict]:
    """{ESME EUI: {"balance", "supply", "counter"}} from the state file, through the fleet's store API
    (the fleet must not be running)."""
    from firmware_emu.fleet.host import PremisesStore, state_files
    out: dict[str, dict] = {}
    files = state_files(cfg)
    if len(files) != 1:
        raise Violation(f"expected one state file, found {files}")
    store = PremisesStore(files[0], durability="normal")
    try:
        for m in meters:
            row = store.load(m.idx)
            if row is None:
                out[m.eui] = {"balance": None, "supply": None, "counter": None}
                continue
            _kind, state, _version = row
            devices = state.get("devices") or {}
            dev = next((d for e, d in devices.items() if e.upper() == m.eui.upper()), None)
            if dev is None:
                raise Violation(f"premises {m.idx} stored without its ESME {m.eui}")
            dstate = dev.get("state", dev)
            esme = dstate.get("esme") or {}
            pp = esme.get("prepayment") or {}
            remote = ((dstate.get("counters") or {}).get("remote") or {})
            counter = next((v for k, v in remote.items() if k.upper() == supplier.upper()), None)
            out[m.eui] = {"balance": pp.get("meter_balance", 0), "supply": (esme.get("supply") or {}).get("state",
                                                                                                          "enabled"),
                          "counter": counter}
    finally:
        store.close()
    return out


def check_storage(cfg, meters: list[Meter], supplier: str, *, exact: bool) -> list[str]:
    """Every acknowledged change is in storage; what is beyond it is a subset of the uncertain commands."""
    bad = []
    stored = stored_meters(cfg, meters, supplier)
    for m in meters:
        s = stored[m.eui]
        if m.initial is None and m.acked_counter < 0:
            continue
        if s["balance"] is None:
            bad.append(f"{m.eui}: acknowledged commands but nothing stored")
            continue
        possible = {m.expected_balance()} if exact else m.possible_balances()
        if m.initial is not None and s["balance"] not in possible:
            bad.append(f"{m.eui}: stored balance {s['balance']} not in {sorted(possible)[:5]} (initial {m.initial}, "
                       f"acknowledged top-ups {m.credit}, uncertain {m.uncertain_topups})")
        supplies = {m.supply or "enabled"} if exact else m.possible_supply()
        if s["supply"] not in supplies:
            bad.append(f"{m.eui}: stored load switch {s['supply']} not in {sorted(supplies)}")
        if m.acked_counter >= 0:
            if s["counter"] is None or s["counter"] < m.acked_counter:
                bad.append(f"{m.eui}: stored replay counter {s['counter']} below the acknowledged {m.acked_counter} "
                           f"(a counter went backwards)")
            elif s["counter"] > m.sent_counter:
                bad.append(f"{m.eui}: stored replay counter {s['counter']} above any sent ({m.sent_counter})")
    return bad


# ------------------------------------------------------------------------------------------------ one run

async def crash_run(workdir: Path, *, commands: int = 10_000, premises: int = 30, seed: int = 1,
                    durability: str = "normal", han: str = "direct", kill_range=(0.3, 0.7),
                    log=None, inspect: dict | None = None) -> dict:
    """One crash-safety run (module docstring) in `workdir`; returns its report (`violations` empty: passed).
    `inspect`, when given, receives the configuration, the head end's meter models and the supplier's EUI (tests
    check the checker with them)."""
    from firmware_emu.fleet.config import load_config
    from firmware_emu.fleet.keys import premises_euis
    say = log or (lambda *_: None)
    rng = random.Random(seed)
    workdir = Path(workdir)
    state = workdir / "state"
    config = workdir / "fleet.toml"
    config.write_text(fleet_toml("crash", premises, state, seed=seed, durability=durability, han=han))
    cfg = load_config(config)
    head = HeadEnd(cfg)
    meters = [Meter(i, premises_euis(cfg, i)["ESME"]) for i in range(premises)]
    kill_at = int(commands * rng.uniform(*kill_range))
    if inspect is not None:
        inspect.update(cfg=cfg, meters=meters, supplier=head.supplier_eui)
    traffic = Traffic(head, meters, rng)
    report = {"seed": seed, "commands": commands, "premises": premises, "durability": durability, "han": han,
              "kill_after_answers": kill_at}
    fleet = FleetProcess(config)
    t0 = time.perf_counter()
    try:
        # 1. traffic until SIGKILL
        port = await fleet.start()
        await traffic.connect(port)
        stop = asyncio.Event()
        killed = {}

        delay = rng.choice((0.0, rng.uniform(0.0, 0.01)))     # at an answer, or a few ms later

        def kill() -> None:
            killed["in_flight"] = len(traffic.waiting)
            killed["rss"] = vm_rss(fleet.pid)
            fleet.kill_now()                                      # mid-traffic: other commands are in flight

        def on_answer(n: int) -> None:
            if n >= kill_at and not stop.is_set():
                stop.set()
                if delay:
                    asyncio.get_running_loop().call_later(delay, kill)
                else:
                    kill()

        traffic.on_answer = on_answer
        budget = [commands]
        t1 = time.perf_counter()
        await asyncio.wait_for(traffic.run(budget, stop), timeout=max(120.0, commands * 0.1))
        phase1_s = time.perf_counter() - t1
        await asyncio.sleep(delay + 0.05)
        await fleet.kill()
        await traffic.close()
        if not stop.is_set():
            traffic.violation(f"the mix ended ({traffic.answered} answers) before the kill point {kill_at}")
        report["killed_with_in_flight"] = killed.get("in_flight")
        report["answered_before_kill"] = traffic.answered
        report["uncertain"] = traffic.stats["uncertain"]
        say(f"killed after {traffic.answered} answers, {killed.get('in_flight')} in flight, {phase1_s:.1f} s")
        # 2. storage after the crash
        for v in check_storage(cfg, meters, head.supplier_eui, exact=False):
            traffic.violation("after SIGKILL, storage: " + v)
        stored = stored_meters(cfg, meters, head.supplier_eui)
        report["uncertain_top_ups"] = sum(len(m.uncertain_topups) for m in meters)
        report["uncertain_top_ups_applied"] = sum(
            (stored[m.eui]["balance"] - m.expected_balance()) // PER_POUND for m in meters
            if m.initial is not None and stored[m.eui]["balance"] is not None)
        # 3. restart: the protocol agrees with storage; replays of acknowledged commands are refused
        port = await fleet.start()
        await traffic.connect(port)
        traffic.on_answer = None
        refused0 = traffic.stats["replays_refused"]
        for m in meters:
            if m.initial is None:
                continue
            s = stored[m.eui]
            await traffic.command(m, "ECS82")
            await traffic.command(m, "ECS45")
            if m.expected_balance() != s["balance"] or (m.supply or "enabled") != s["supply"]:
                traffic.violation(f"after restart, {m.eui}: the protocol reads balance {m.expected_balance()} / "
                                  f"{m.supply}, storage had {s['balance']} / {s['supply']}")
            if m.acked_frames:
                before = m.expected_balance()
                await traffic.replay(m)
                await traffic.command(m, "ECS82")
                if m.expected_balance() != before:
                    traffic.violation(f"after restart, {m.eui}: a replay changed the balance")
        report["replays_after_restart_refused"] = traffic.stats["replays_refused"] - refused0
        # 4. the rest of the mix, then a clean stop and storage exactly as acknowledged
        t2 = time.perf_counter()
        never = asyncio.Event()
        await asyncio.wait_for(traffic.run(budget, never), timeout=max(120.0, commands * 0.1))
        phase2_s = time.perf_counter() - t2
        for m in meters:                                  # resolve nothing: no command may be uncertain now
            if m.uncertain_topups or m.uncertain_supply:
                traffic.violation(f"{m.eui}: commands unanswered on a live link")
        report["end_rss_bytes"] = vm_rss(fleet.pid)
        summary = await fleet.stop()
        await traffic.close()
        report["fleet_summary"] = summary
        for v in check_storage(cfg, meters, head.supplier_eui, exact=True):
            traffic.violation("after a clean stop, storage: " + v)
        elapsed = time.perf_counter() - t0
        st = traffic.stats
        report.update({
            "sent": st["sent"], "acknowledged": st["acknowledged"], "replays_refused": st["replays_refused"],
            "by_kind": st["by_kind"], "verification_failures": st["verification_failures"], "alerts": st["alerts"],
            "top_ups_credited": sum(m.credit for m in meters) // PER_POUND,
            "rss_at_kill_bytes": killed.get("rss"),
            "commands_per_s": round(st["sent"] / max(phase1_s + phase2_s, 1e-9), 1),
            "elapsed_s": round(elapsed, 2), "violations": traffic.violations, "passed": not traffic.violations})
        return report
    finally:
        await traffic.close()
        await fleet.kill()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=1, help="independent runs (fresh state each)")
    ap.add_argument("--commands", type=int, default=10_000, help="commands per run (kill point in the middle)")
    ap.add_argument("--premises", type=int, default=30, help="premises (hub + ESME each)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the first run (run k uses seed + k)")
    ap.add_argument("--durability", choices=("normal", "full"), default="normal", help="host.durability")
    ap.add_argument("--han", choices=("direct", "simulated"), default="direct", help="host.han")
    ap.add_argument("--keep", default=None, help="keep each run's state under this directory")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    runs = []
    t0 = time.perf_counter()
    for k in range(args.runs):
        seed = args.seed + k
        with tempfile.TemporaryDirectory(prefix="gbcs-emu-crash-") as tmp:
            work = Path(args.keep) / f"run-{seed}" if args.keep else Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            log = (lambda s, _k=k: print(f"run {_k + 1}: {s}", file=sys.stderr)) if not args.json else None
            r = asyncio.run(crash_run(work, commands=args.commands, premises=args.premises, seed=seed,
                                      durability=args.durability, han=args.han, log=log))
        runs.append(r)
        print(f"run {k + 1}/{args.runs} seed {seed}: {'passed' if r['passed'] else 'FAILED'}; killed after "
              f"{r['answered_before_kill']} answers with {r['killed_with_in_flight']} in flight, "
              f"{r['uncertain']} uncertain, {r['sent']} sent, {r['commands_per_s']}/s, {r['elapsed_s']} s"
              + ("" if r["passed"] else f"; {r['violations'][:3]}"), file=sys.stderr)
    out = {"runs": args.runs, "passed": sum(r["passed"] for r in runs), "commands": args.commands,
           "premises": args.premises, "durability": args.durability, "han": args.han,
           "consecutive_passes": next((i for i, r in enumerate(runs) if not r["passed"]), len(runs)),
           "elapsed_s": round(time.perf_counter() - t0, 1), "runs_detail": runs}
    if args.json:
        print(json.dumps(out))
    else:
        print(json.dumps({k: v for k, v in out.items() if k != "runs_detail"}, indent=1))
    return 0 if out["passed"] == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
