"""Soak: a fleet under a steady traffic mix with HAN loss and reconnecting clients loses nothing and stays flat.

    python bench/soak.py --devices N --minutes M [--json] [--rate R] [--clients C] [--reconnect S]
                         [--han-loss P] [--cache P] [--wake S] [--speed X] [--sample S]

Theory of operation
-------------------
* **Fleet**: `gbcs-emu fleet run` in a subprocess (TCP, GFI text framing), half the premises dual fuel (hub +
  GPF + ESME + GSME), half electricity only (hub + ESME), so N devices are about N/3 premises; simulated HAN with
  `--han-loss` frame loss, sleepy GSMEs waking every `--wake` simulated seconds at `--speed`, background
  commissioning (the soak waits for it before the traffic starts), an LRU of `--cache` premises (smaller than the
  fleet by default, so eviction and reloading from SQLite run all the time), durability "normal".
* **Head end**: C clients (`--clients`), each a TCP connection owning the premises `i % C == k`, together
  sending `--rate` commands/s: ESME reads (ECS17a, ECS82, ECS45), CS01a top-ups, ECS43/ECS42 supply switching,
  and GSME reads (GCS13a, answered at the meter's next wake through the hub). One command outstanding per device
  (GBCS counters need per-device order). Every `--reconnect` seconds (± 50 %, staggered) a client stops sending,
  half-closes its connection (the fleet answers what it has, then closes), and reconnects: answers of commands it
  left behind come back on the other connections, as the fleet sends a response whose connection has gone.
* **Answers**: a response (any connection, first copy) answers its command; every response's MAC or signature is
  verified. **Lost** = a command with no response within its deadline: ESME `--esme-deadline` seconds (default 60),
  GSME two wake intervals of wall time + 60 s. A command the device refuses still has a response (counted under
  `refused`, by reason); a command the fleet drops (queue, unroutable) has none and is lost.
* **Memory**: the fleet's VmRSS (/proc/<pid>/status) every `--sample` seconds; `rss_5min_bytes` is the level at
  5 minutes of traffic (mean of the samples in 4.5-5.5 min; for a shorter run, around the middle), `rss_end_bytes`
  the mean of the last minute, `rss_growth` = end / 5-min level - 1 (the issue's bound: within 5 %).
* **Robust**: deadlines everywhere (fleet start, commissioning, each command, reconnects, the final drain); the
  fleet is killed on any exit path.

Output (`--json`): `{"devices", "premises", "minutes", "sent", "answered", "lost", "refused", ..., "rss": {...}}`.
Exit status 0 when nothing was lost, no answer failed verification and (runs of 30 min or more) the RSS growth is
within 5 %.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crash import ROOT, START, FleetProcess, HeadEnd, dlms_results, vm_rss  # noqa: E402

#: (use case, device type, weight)
MIX = (("ECS17a", "ESME", 30), ("ECS82", "ESME", 8), ("ECS45", "ESME", 7), ("CS01a", "ESME", 12),
       ("ECS43", "ESME", 5), ("ECS42", "ESME", 5), ("GCS13a", "GSME", 20))
GCS13A = {"gbz": {"components": [{
    "extended_header_control": {"last": True, "encrypted": False, "from_date_time": False, "reserved": 0},
    "cluster": 1794, "zcl": {"frame_control": {"frame_type": "global", "manufacturer_specific": False,
                                               "direction": "client_to_server", "disable_default_response": False,
                                               "reserved": 0},
                             "sequence_number": 0, "command_id": 0,
                             "payload": {"attributes": [{"attribute_id": 770}, {"attribute_id": 769},
                                                        {"attribute_id": 768}, {"attribute_id": 0}]}}}]}}


def soak_toml(premises: int, state_dir: Path, *, han_loss: float, cache: int, wake: float, speed: float,
              seed: int = 2026) -> str:
    return f"""
[fleet]
name = "soak"
seed = {seed}
premises = {premises}
state_dir = "{state_dir}"

[time]
start = "{START}"
speed = {speed}

[[mix]]
name = "dual_fuel"
share = 0.5
devices = ["ESME", "GSME"]

[[mix]]
name = "electricity_only"
share = 0.5
devices = ["ESME"]

[profiles.default.ESME]
mean_kw = 0.45

[profiles.default.GSME]
mean_kw = 1.5
wake_interval = {wake}

[han]
loss = {han_loss}
latency = 0.005

[commissioning]
mode = "background"
method = "installer"
rate = 500

[[wan.tcp]]
listen = "127.0.0.1:0"
framing = "gfi"

[host]
cache = {cache}
durability = "normal"
"""


class Link:
    """One head-end TCP connection that can close cleanly: half-close (the fleet sees EOF, answers what it has
    and closes), then read to the end. Framing through the project's GFI encoder and streaming deframer."""

    def __init__(self, reader, writer, on_frame):
        from firmware_emu.fleet.wan import wire_max_frame
        from protocols.framing import make_deframer
        from protocols.framing.lencrc import MAX_PAYLOAD
        self.reader, self.writer = reader, writer
        self.on_frame = on_frame
        self.max_payload = MAX_PAYLOAD
        self.deframer = make_deframer("gfi", max_frame=wire_max_frame("gfi", MAX_PAYLOAD), timeout=5.0)
        self.framing_errors = 0
        self.task = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, port: int, on_frame, timeout: float = 10.0) -> "Link":
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, limit=1 << 20), timeout)
        return cls(reader, writer, on_frame)

    async def _read(self) -> None:
        from protocols.framing import FrameError
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                data = await self.reader.read(1 << 16)
                if not data:
                    return
                for ev in self.deframer.feed(data, loop.time()):
                    if isinstance(ev, FrameError):
                        self.framing_errors += 1
                    else:
                        self.on_frame(ev.payload)

    @property
    def closed(self) -> bool:
        return self.task.done() or self.writer.is_closing()

    async def send(self, frame: bytes) -> None:
        from firmware_emu.fleet.wan import encode_frame
        self.writer.write(encode_frame("gfi", frame, self.max_payload))
        await asyncio.wait_for(self.writer.drain(), 30.0)

    async def close(self, timeout: float = 10.0) -> bool:
        """Half-close, read until the fleet closes (at most `timeout` s), close. True when it closed cleanly."""
        clean = False
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            if self.writer.can_write_eof():
                self.writer.write_eof()
            try:
                await asyncio.wait_for(asyncio.shield(self.task), timeout)
                clean = True
            except asyncio.TimeoutError:
                pass
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError, asyncio.TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), 5.0)
        return clean


def _gbz_failure(msg: dict) -> str | None:
    for c in ((msg.get("payload") or {}).get("gbz") or {}).get("components") or []:
        zcl = c.get("zcl") or {}
        p = zcl.get("payload") or {}
        if zcl.get("command_id") == 0x0B and isinstance(p, dict) and p.get("status", 0) not in (0, None):
            return f"ZCL status 0x{p['status']:02X}"
    return None


class Soak:
    def __init__(self, args, cfg, port: int, fleet: FleetProcess):
        from firmware_emu.fleet.keys import premises_euis
        from protocols.gbcs.registry import REGISTRY
        self.args, self.cfg, self.port, self.fleet = args, cfg, port, fleet
        self.head = HeadEnd(cfg)
        self.rng = random.Random(args.seed)
        self.gcs13a = REGISTRY.by_name("GCS13a").code
        self.devices = {}                    # (premises, type) -> EUI
        for i in range(cfg.premises):
            for t, e in premises_euis(cfg, i).items():
                if t in ("ESME", "GSME"):
                    self.devices[(i, t)] = e
        self.busy: set[str] = set()          # EUIs with a command outstanding
        self.pending: dict[tuple[str, int], tuple[str, str, float, float]] = {}   # -> (kind, eui, sent, deadline)
        self.answer_times: deque[float] = deque(maxlen=100_000)
        self.stats = Counter()
        self.refused = Counter()
        self.lost_by_kind = Counter()
        self.lost_samples: deque = deque(maxlen=20)
        self.alerts = Counter()
        self.latency = {"ESME": deque(maxlen=50_000), "GSME": deque(maxlen=50_000)}
        self.links: list[Link | None] = [None] * args.clients
        self.reconnects = 0
        self.unclean_closes = 0
        self.sending = True
        self.rss: list[tuple[float, int]] = []
        self.t0 = 0.0
        self.wake_wall = args.wake / args.speed

    # -- answers ----------------------------------------------------------------------------------------------------
    def on_frame(self, frame: bytes) -> None:
        from hil.verify import INVALID, VALID
        from protocols.errors import DecodeError, GbcsEmuError
        from protocols.gbcs.message import alert_code, decode
        try:
            msg = decode(frame)
        except DecodeError:
            self.stats["undecodable"] += 1
            return
        gh = msg["grouping_header"]
        cra = gh.get("cra_flag")
        if cra == "alert":
            code = alert_code(msg)
            self.alerts[f"0x{code:04X}" if isinstance(code, int) else "unknown"] += 1
            return
        if cra != "response":
            return
        key = (str(gh.get("originator", "")).upper(), gh.get("originator_counter"))
        p = self.pending.pop(key, None)
        if p is None:
            self.stats["duplicate_or_late"] += 1        # a second copy (sent to every connection), or after expiry
            return
        kind, eui, sent, _deadline = p
        self.busy.discard(eui)
        now = time.monotonic()
        self.stats["answered"] += 1
        self.answer_times.append(now)
        self.latency["GSME" if kind == "GCS13a" else "ESME"].append(now - sent)
        try:
            verdict = self.head.verify(frame, msg)
        except GbcsEmuError:
            verdict = {"mac": INVALID}
        if VALID not in (verdict.get("mac"), verdict.get("signature")) or \
                INVALID in (verdict.get("mac"), verdict.get("signature")):
            self.stats["verification_failures"] += 1
        if "dlms" in (msg.get("payload") or {}):
            results, _ = dlms_results(msg)
            bad = [r for r in results if r != "success"]
            if bad or not results:
                self.refused[f"{kind}: {bad[0] if bad else 'no result'}"] += 1
        else:
            reason = _gbz_failure(msg)
            if reason:
                self.refused[f"{kind}: {reason}"] += 1

    def expire(self, final: bool = False) -> None:
        now = time.monotonic()
        for key, (kind, eui, sent, deadline) in list(self.pending.items()):
            if now >= deadline or final:
                del self.pending[key]
                self.busy.discard(eui)
                self.stats["lost"] += 1
                self.lost_by_kind[kind] += 1
                self.lost_samples.append({"kind": kind, "eui": eui, "counter": key[1],
                                          "sent_at_s": round(sent - self.t0, 1)})

    # -- sending ----------------------------------------------------------------------------------------------------
    def _pick(self, k: int):
        kinds = [m[0] for m in MIX]
        weights = [m[2] for m in MIX]
        for _ in range(50):
            kind = self.rng.choices(kinds, weights)[0]
            dtype = next(m[1] for m in MIX if m[0] == kind)
            idx = self.rng.randrange(k, self.cfg.premises, self.args.clients) if k < self.cfg.premises else None
            if idx is None:
                return None
            eui = self.devices.get((idx, dtype))
            if eui is not None and eui not in self.busy:
                return kind, dtype, eui
        return None

    def _build(self, kind: str, eui: str) -> tuple[int, bytes]:
        if kind == "GCS13a":
            party = self.head.supplier
            cmd = {"grouping_header": {"recipient": eui,
                                       "other_information": {"message_code": f"0x{self.gcs13a:04X}"}},
                   "payload": json.loads(json.dumps(GCS13A))}
            frame = party.build(cmd)
            return party.last_counter, frame
        return self.head.build(kind, eui, self.rng)

    async def client(self, k: int, until: float) -> None:
        loop = asyncio.get_running_loop()
        interval = self.args.clients / self.args.rate
        next_reconnect = loop.time() + self.args.reconnect * (0.5 + self.rng.random()) * (k + 1) / self.args.clients
        link = await Link.connect(self.port, self.on_frame)
        self.links[k] = link
        next_send = loop.time()
        try:
            while self.sending and loop.time() < until:
                now = loop.time()
                if now >= next_reconnect:
                    self.links[k] = None
                    if not await link.close():
                        self.unclean_closes += 1
                    link = await Link.connect(self.port, self.on_frame)
                    self.links[k] = link
                    self.reconnects += 1
                    next_reconnect = loop.time() + self.args.reconnect * (0.5 + self.rng.random())
                    continue
                if link.closed:
                    self.stats["link_dropped_by_fleet"] += 1
                    link = await Link.connect(self.port, self.on_frame)
                    self.links[k] = link
                    continue
                if now < next_send:
                    await asyncio.sleep(min(next_send - now, 0.5))
                    continue
                next_send = max(next_send + interval, now - 1.0)          # no burst after a stall
                picked = self._pick(k)
                if picked is None:
                    self.stats["nothing_free"] += 1
                    continue
                kind, dtype, eui = picked
                counter, frame = self._build(kind, eui)
                sent = time.monotonic()
                deadline = sent + (self.args.esme_deadline if dtype == "ESME" else 2 * self.wake_wall + 60.0)
                self.pending[(eui.upper(), counter)] = (kind, eui.upper(), sent, deadline)
                self.busy.add(eui.upper())
                self.stats["sent"] += 1
                self.stats[f"sent_{kind}"] += 1
                try:
                    await link.send(frame)
                except (ConnectionError, OSError, asyncio.TimeoutError):
                    self.stats["send_failed"] += 1            # stays pending: lost unless the fleet answers it
        finally:
            self.links[k] = None
            await link.close()

    # -- monitoring -------------------------------------------------------------------------------------------------
    async def monitor(self, until: float, on_progress=None) -> None:
        loop = asyncio.get_running_loop()
        last_report = 0.0
        while loop.time() < until:
            self.rss.append((round(loop.time() - self.t0, 1), vm_rss(self.fleet.pid)))
            self.expire()
            if self.fleet.proc.returncode is not None:
                raise RuntimeError(f"the fleet exited (code {self.fleet.proc.returncode}): "
                                   f"{list(self.fleet.stderr_tail)[-5:]}")
            if on_progress and loop.time() - last_report >= 60:
                last_report = loop.time()
                on_progress(self)
            await asyncio.sleep(self.args.sample)

    def rss_summary(self) -> dict:
        samples = [(t, r) for t, r in self.rss if r > 0]
        if not samples:
            return {}
        end_t = samples[-1][0]
        five = 300.0 if end_t >= 330.0 else end_t / 2
        window = [r for t, r in samples if five - 30 <= t <= five + 30] or [samples[0][1]]
        tail = [r for t, r in samples if t >= end_t - 60] or [samples[-1][1]]
        level5, end = sum(window) / len(window), sum(tail) / len(tail)
        every = max(1, len(samples) // 60)
        return {"rss_5min_bytes": int(level5), "rss_end_bytes": int(end), "rss_growth": round(end / level5 - 1, 4),
                "rss_max_bytes": max(r for _, r in samples), "rss_min_bytes": min(r for _, r in samples),
                "level_at_s": five, "samples": len(samples),
                "series": [[t, r] for t, r in samples[::every]]}


def _pct(values, q: float):
    if not values:
        return None
    s = sorted(values)
    return round(s[max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))] * 1000, 1)


def wait_commissioned(config: Path, premises: int, timeout: float, fleet: FleetProcess) -> float:
    """Poll `gbcs-emu fleet status --json` until every premises is materialised; seconds it took."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if fleet.proc.returncode is not None:
            raise RuntimeError("the fleet exited while commissioning")
        try:
            out = subprocess.run([sys.executable, "-m", "firmware_emu.cli", "fleet", "status", str(config), "--json"],
                                 capture_output=True, text=True, timeout=60, cwd=str(ROOT))
            if out.returncode == 0 and json.loads(out.stdout)["premises_materialised"] >= premises:
                return time.monotonic() - t0
        except (subprocess.TimeoutExpired, ValueError, KeyError):
            pass
        time.sleep(2.0)
    raise RuntimeError(f"commissioning of {premises} premises did not finish in {timeout:g} s")


async def soak(args, log=print) -> dict:
    from firmware_emu.fleet.config import load_config
    from firmware_emu.fleet.keys import premises_euis
    tmp = tempfile.TemporaryDirectory(prefix="gbcs-emu-soak-")
    work = Path(args.state) if args.state else Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    premises = max(1, math.ceil(args.devices / 3))
    config = work / "soak.toml"
    cache = args.cache if args.cache is not None else max(50, premises // 3)
    config.write_text(soak_toml(premises, work / "state", han_loss=args.han_loss, cache=cache, wake=args.wake,
                                speed=args.speed))
    cfg = load_config(config)
    devices = sum(len(premises_euis(cfg, i)) for i in range(premises))
    HeadEnd(cfg)                                              # the PKI, before the fleet starts
    fleet = FleetProcess(config, stderr_log=Path(args.fleet_log) if args.fleet_log else None)
    loop = asyncio.get_running_loop()
    try:
        t = time.monotonic()
        port = await fleet.start(timeout=120)
        ready_s = time.monotonic() - t
        commissioning_s = await loop.run_in_executor(None, wait_commissioned, config, premises,
                                                     args.commissioning_timeout, fleet)
        log(f"soak: {devices} devices in {premises} premises ready in {ready_s:.1f} s, commissioned in "
            f"{commissioning_s:.0f} s; traffic for {args.minutes:g} min")
        s = Soak(args, cfg, port, fleet)
        s.t0 = loop.time()
        until = s.t0 + args.minutes * 60.0

        def progress(x: Soak) -> None:
            rss = x.rss[-1][1] if x.rss else 0
            log(f"soak: {(loop.time() - x.t0) / 60:.0f} min: sent {x.stats['sent']}, answered {x.stats['answered']}, "
                f"pending {len(x.pending)}, lost {x.stats['lost']}, reconnects {x.reconnects}, RSS {rss / 2**20:.0f} MiB")

        clients = [asyncio.create_task(s.client(k, until)) for k in range(args.clients)]
        monitor = asyncio.create_task(s.monitor(until + 1e9, progress))
        error = None
        try:
            await asyncio.wait_for(asyncio.gather(*clients), args.minutes * 60.0 + 120.0)
            s.sending = False
            # drain: a permanent connection collects the answers still due (GSMEs at their wake)
            drain = await Link.connect(port, s.on_frame)
            deadline = max((p[3] for p in s.pending.values()), default=time.monotonic())
            while s.pending and time.monotonic() < deadline + 1.0:
                await asyncio.sleep(0.5)
                s.expire()
            s.expire(final=True)
            await drain.close()
        except (RuntimeError, OSError, asyncio.TimeoutError) as e:     # the fleet died or hung: report what we saw
            error = f"{type(e).__name__}: {e}"
            s.expire(final=True)
        finally:
            monitor.cancel()
            await asyncio.gather(monitor, return_exceptions=True)
            for c in clients:
                c.cancel()
            await asyncio.gather(*clients, return_exceptions=True)
        summary = await fleet.stop(timeout=60)
        traffic_s = max(1e-9, min(args.minutes * 60.0, loop.time() - s.t0))
        st = s.stats
        out = {"devices": devices, "premises": premises, "minutes": args.minutes, "error": error, "sent": st["sent"],
               "answered": st["answered"], "lost": st["lost"], "refused": sum(s.refused.values()),
               "refused_by_reason": dict(s.refused.most_common()),
               "lost_by_kind": dict(s.lost_by_kind), "lost_samples": list(s.lost_samples),
               "verification_failures": st["verification_failures"], "duplicate_or_late": st["duplicate_or_late"],
               "sent_by_use_case": {k[5:]: v for k, v in st.items() if k.startswith("sent_") and k != "send_failed"},
               "send_failed": st["send_failed"], "link_dropped_by_fleet": st["link_dropped_by_fleet"],
               "reconnects": s.reconnects, "unclean_closes": s.unclean_closes,
               "rate_per_s": round(st["sent"] / traffic_s, 1),
               "latency_ms": {"ESME": {"p50": _pct(s.latency["ESME"], 50), "p99": _pct(s.latency["ESME"], 99)},
                              "GSME": {"p50": _pct(s.latency["GSME"], 50), "p99": _pct(s.latency["GSME"], 99)}},
               "alerts": dict(s.alerts.most_common()),
               "rss": s.rss_summary(),
               "config": {"clients": args.clients, "rate": args.rate, "reconnect_s": args.reconnect,
                          "han_loss": args.han_loss, "cache": cache, "wake_s": args.wake, "speed": args.speed,
                          "esme_deadline_s": args.esme_deadline, "gsme_deadline_s": 2 * s.wake_wall + 60.0},
               "ready_s": round(ready_s, 2), "commissioning_s": round(commissioning_s, 1),
               "fleet_summary": summary}
        return out
    finally:
        await fleet.kill()
        if not args.state:
            tmp.cleanup()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=10_000, help="devices (hubs, GPFs, ESMEs, GSMEs): about N/3 premises")
    ap.add_argument("--minutes", type=float, default=30.0, help="minutes of traffic")
    ap.add_argument("--rate", type=float, default=100.0, help="commands per second, all clients together")
    ap.add_argument("--clients", type=int, default=4, help="TCP connections (each owns a share of the premises)")
    ap.add_argument("--reconnect", type=float, default=60.0, help="seconds between a client's reconnects (± 50 %%)")
    ap.add_argument("--han-loss", type=float, default=0.02, help="HAN frame loss probability")
    ap.add_argument("--cache", type=int, default=None, help="premises in memory (default: a third of them)")
    ap.add_argument("--wake", type=float, default=600.0, help="GSME wake interval, simulated seconds")
    ap.add_argument("--speed", type=float, default=60.0, help="simulated seconds per wall second")
    ap.add_argument("--esme-deadline", type=float, default=60.0, help="seconds an ESME command may take")
    ap.add_argument("--sample", type=float, default=5.0, help="seconds between RSS samples")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--commissioning-timeout", type=float, default=1800.0)
    ap.add_argument("--state", default=None, help="keep the fleet's state here (default: a temporary directory)")
    ap.add_argument("--fleet-log", default=None, help="append the fleet's stderr to this file")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    if args.devices < 3 or args.clients < 1 or args.rate <= 0 or args.minutes <= 0:
        ap.error("need --devices >= 3, --clients >= 1, --rate > 0, --minutes > 0")
    out = asyncio.run(soak(args, log=lambda m: print(m, file=sys.stderr, flush=True)))
    print(json.dumps(out) if args.json else json.dumps(out, indent=1))
    flat = args.minutes < 30 or abs(out["rss"].get("rss_growth", 0.0)) <= 0.05
    return 0 if out["lost"] == 0 and out["verification_failures"] == 0 and flat and not out["error"] else 1


if __name__ == "__main__":
    sys.exit(main())
