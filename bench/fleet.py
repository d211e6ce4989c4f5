"""Fleet benchmark: MAC-verified command/response round trips over TCP (GFI framing) against N hosted devices.

    python bench/fleet.py --devices N [--json] [--seconds S] [--clients C] [--in-flight K] [--shards K]
                          [--cache P] [--hot P] [--state DIR] [--profile FILE]

What runs where (docs/scale-out.md, "Benchmark"):

* **Fleet**: K processes (`--shards`, default 1), each a `FleetHost` + `FleetRunner` serving shard k/K of one
  configuration on its own TCP port (GFI text framing). The mix is electricity only: a premises is a comms hub
  (CHF) and an ESME, so N devices are N/2 premises. `host.han = "direct"` (the ESME skips the simulated HAN:
  same bytes, no HAN latency), `durability = "normal"` (group commit without an fsync per batch), LRU of
  `--cache` premises (default min(N/2, 10,000)). Provisioning is lazy: "provisioned" means the meta rows exist.
  First touch stamps a premises from its kind's template (`commissioning.method = "installer"`,
  fleet/template.py) unless `--commissioning protocol` (CCS01/HAN join through the use cases per premises).
* **Load generators**: C other processes (`--clients`), each with one TCP connection per shard and a partition
  of the premises (idx % C), so every device sees its commands in counter order. Each pre-builds ECS17a reads
  (`RemoteParty` as the network operator, keys derived from the fleet configuration, `FleetKeys`) before it
  measures, keeps K commands in flight and verifies the MAC of every response (`hil.verify`).
* **Phases**: (1) warm-up: one command to each premises of the hot set (`--hot`, default min(N/2, 2,000, cache/2)):
  they are materialised (created and commissioned), the `first_touch_per_s` figure; (2) hot set: round trips to
  random devices of the hot set, all in the LRU (`hot_round_trips_per_s`, `hot_p99_ms`); (3) random: round trips
  to random devices of all N (`round_trips_per_s`, `p99_ms`): mostly premises never touched, materialised on the
  spot, or evicted from the LRU and loaded from SQLite.

Output (`--json`): `{"devices": N, "rss_bytes": ..., "round_trips_per_s": ..., "p99_ms": ..., ...}`: rss_bytes is
the sum over the fleet processes of their peak RSS (VmHWM of /proc/<pid>/status). `fleet_cpu_us_per_round_trip`
is the fleet processes' CPU (/proc/<pid>/stat) per round trip of each phase, `round_trips_per_core_s` the
round trips per second of fleet CPU (the per-core figure, independent of what else runs on the machine).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing as mp
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

START = "2025-01-01T00:00:00Z"


def vm_hwm(pid: int | str = "self") -> int:
    """Peak resident set size of a process in bytes (VmHWM), 0 when unknown."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (/proc/<pid>/stat), 0.0 when unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def fleet_config(devices: int, state_dir: str, cache: int | None = None, commissioning: str = "installer") -> dict:
    premises = max(1, math.ceil(devices / 2))
    return {"fleet": {"name": "bench", "seed": 99, "premises": premises, "state_dir": state_dir},
            "time": {"start": START, "speed": 1.0},
            "mix": [{"name": "electricity_only", "share": 1.0, "devices": ["ESME"]}],
            "han": {"loss": 0.0, "latency": 0.005},
            "commissioning": {"mode": "lazy", "method": commissioning},
            "wan": {"tcp": [{"listen": "127.0.0.1:0", "framing": "gfi"}]},
            "host": {"cache": cache or min(premises, 10_000), "durability": "normal", "han": "direct",
                     "batch": 256, "timers": "needed", "gc": "tuned"}}   # a short benchmark: see docs/fleet.md


# ------------------------------------------------------------------------------------------------ fleet process

def _fleet_main(cfg_dict: dict, shard: str, conn, profile: str | None) -> None:
    from firmware_emu.fleet.config import parse_config, parse_shard
    from firmware_emu.fleet.host import FleetHost, FleetRunner

    async def main():
        cfg = parse_config(cfg_dict).with_overrides(shard=parse_shard(shard))
        t0 = time.perf_counter()
        host = FleetHost(cfg)
        runner = FleetRunner(host, metrics_server=False)
        await runner.start()
        conn.send(("ready", runner.tcp_ports[0], time.perf_counter() - t0, vm_hwm()))
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, conn.recv)          # "stop"
        c = host.counters
        counters = {"frames_in": c.frames_in, "responses": c.responses, "materialised": c.materialised,
                    "stamped": c.stamped,
                    "loads": c.loads, "evictions": c.evictions, "commits": c.commits, "errors": dict(c.errors)}
        await runner.stop()
        conn.send(("stopped", vm_hwm(), counters))

    if profile:
        import cProfile
        cProfile.runctx("asyncio.run(main())", globals(), {"asyncio": asyncio, "main": main}, profile)
    else:
        asyncio.run(main())


# ------------------------------------------------------------------------------------------------ load generator

def _load_main(cfg_dict: dict, index: int, clients: int, ports: list[int], plan: dict, conn) -> None:
    from firmware_emu.fleet.config import parse_config
    from firmware_emu.fleet.keys import FleetKeys, premises_euis
    from firmware_emu.fleet.wan import TcpWanClient
    from hil.remote_party import CounterStore, RemoteParty
    from hil.verify import VALID, make_verifier
    from protocols.dlms.apdu import access_request
    from protocols.gbcs.message import decode
    from protocols.security.keystore import Role

    cfg = parse_config(cfg_dict)
    keys = FleetKeys.from_config(cfg, create=False, cache=200_000)
    ks = keys.keystore
    party = RemoteParty(ks, keys.organisation(Role.NETWORK_OPERATOR), Role.NETWORK_OPERATOR,
                        counter_store=CounterStore(None, initial_counter=10_000 + index * 10 ** 12))
    verify = make_verifier(ks)
    rng = random.Random(1000 + index)
    shards = len(ports)
    ecs17a = {"dlms": access_request(("get", 3, "1-0:1.8.0.255", 2, None))}

    def build(idx: int) -> tuple[int, str, int, bytes]:
        eui = premises_euis(cfg, idx)["ESME"]
        cmd = {"grouping_header": {"recipient": eui, "other_information": {"message_code": "0x0026"}},
               "payload": ecs17a}
        frame = party.build(cmd)
        return idx % shards, eui, party.last_counter, frame

    mine = [i for i in plan["hot"] if i % clients == index]
    premises = cfg.premises

    def random_idx() -> int:
        while True:
            i = rng.randrange(premises)
            if i % clients == index:
                return i

    t = time.perf_counter()
    warm = [build(i) for i in mine]
    hot = [build(rng.choice(mine)) for _ in range(plan["hot_commands"])] if mine else []
    cold = [build(random_idx()) for _ in range(plan["random_commands"])]
    build_s = time.perf_counter() - t

    async def phase(cmds, seconds, in_flight):
        """Send `cmds` in order keeping `in_flight` outstanding; (round trips, elapsed, latencies, bad)."""
        links = [await TcpWanClient.connect("127.0.0.1", p, framing="gfi", queue=65536) for p in ports]
        sem = asyncio.Semaphore(in_flight)
        pending: dict[tuple[str, int], float] = {}
        lat: list[float] = []
        bad = [0]
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + seconds if seconds else None
        sent = [0]
        finished = [False]                                   # every command of the phase is sent

        async def reader(link):
            while True:
                try:
                    frame = await link.recv(None)
                except Exception:                           # noqa: BLE001 - closed
                    return
                msg = decode(frame)
                gh = msg["grouping_header"]
                if gh.get("cra_flag") != "response":
                    continue
                t0 = pending.pop((gh["originator"].upper(), gh["originator_counter"]), None)
                if t0 is None:
                    continue
                if verify(frame, msg).get("mac") != VALID:
                    bad[0] += 1
                lat.append(loop.time() - t0)
                sem.release()
                if not pending and finished[0]:
                    done.set()

        readers = [asyncio.create_task(reader(lk)) for lk in links]
        for shard, eui, counter, frame in cmds:
            if deadline and loop.time() >= deadline:
                break
            await sem.acquire()
            pending[(eui, counter)] = loop.time()
            await links[shard].send(frame)
            sent[0] += 1
        end_send = loop.time()
        finished[0] = True
        if pending:
            try:
                await asyncio.wait_for(done.wait(), 30.0)
            except asyncio.TimeoutError:
                pass
        elapsed = max(loop.time() - start, 1e-9) if not deadline else max(min(loop.time(), max(end_send, deadline))
                                                                          - start, 1e-9)
        for r in readers:
            r.cancel()
        for lk in links:
            await lk.close()
        return {"round_trips": len(lat), "elapsed": elapsed, "latencies": lat, "bad_mac": bad[0],
                "lost": len(pending)}

    async def main():
        conn.send(("built", build_s, len(warm) + len(hot) + len(cold)))
        conn.recv()                                          # go
        out = {"warm": await phase(warm, None, plan["in_flight"])}
        conn.send(("warm", None))
        conn.recv()
        out["hot"] = await phase(hot, plan["seconds"], plan["in_flight"])
        conn.send(("hot", None))
        conn.recv()
        out["random"] = await phase(cold, plan["seconds"], plan["in_flight"])
        conn.send(("done", out))

    asyncio.run(main())


# ------------------------------------------------------------------------------------------------ coordinator

def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[max(0, min(len(s) - 1, math.ceil(q / 100.0 * len(s)) - 1))]


def run(args) -> dict:
    ctx = mp.get_context("spawn")
    tmp = None
    state = args.state
    if state is None:
        tmp = tempfile.mkdtemp(prefix="gbcs-emu-bench-")
        state = os.path.join(tmp, "state")
    cfg = fleet_config(args.devices, state, args.cache, args.commissioning)
    premises = cfg["fleet"]["premises"]
    cache = cfg["host"]["cache"]
    hot_n = args.hot or max(1, min(premises, 2000, max(1, cache // 2)))
    fleets, gens = [], []
    try:
        # the PKI first (shards agree on it anyway; the generators need it before they build)
        from firmware_emu.fleet.config import parse_config
        from firmware_emu.fleet.keys import FleetKeys
        FleetKeys.from_config(parse_config(cfg), create=True)
        t0 = time.perf_counter()
        for k in range(args.shards):
            a, b = ctx.Pipe()
            prof = f"{args.profile}.{k}" if args.profile else None
            p = ctx.Process(target=_fleet_main, args=(cfg, f"{k}/{args.shards}", b, prof), daemon=True)
            p.start()
            fleets.append((p, a))
        ready = [a.recv() for _, a in fleets]
        ports = [r[1] for r in ready]
        provision_s = time.perf_counter() - t0
        rng = random.Random(7)
        hot = rng.sample(range(premises), hot_n) if hot_n < premises else list(range(premises))
        plan = {"hot": hot, "seconds": args.seconds, "in_flight": args.in_flight,
                "hot_commands": max(200, int(args.seconds * 4000 / args.clients)),
                "random_commands": max(100, int(args.seconds * 3000 / args.clients))}
        for i in range(args.clients):
            a, b = ctx.Pipe()
            p = ctx.Process(target=_load_main, args=(cfg, i, args.clients, ports, plan, b), daemon=True)
            p.start()
            gens.append((p, a))
        built = [a.recv() for _, a in gens]
        for _, a in gens:
            a.send("go")
        cpu = {}
        fleet_cpu = lambda: sum(cpu_seconds(p.pid) for p, _ in fleets)      # noqa: E731
        gen_cpu = lambda: sum(cpu_seconds(p.pid) for p, _ in gens)          # noqa: E731
        c0, g0 = fleet_cpu(), gen_cpu()
        for _, a in gens:
            a.recv()                                          # warm-up done
        c1, g1 = fleet_cpu(), gen_cpu()
        for _, a in gens:
            a.send("go")
        for _, a in gens:
            a.recv()                                          # hot phase done
        c2, g2 = fleet_cpu(), gen_cpu()
        for _, a in gens:
            a.send("go")
        results = [a.recv()[1] for _, a in gens]
        c3, g3 = fleet_cpu(), gen_cpu()
        cpu = {"warm": c1 - c0, "hot": c2 - c1, "random": c3 - c2}
        gcpu = {"warm": g1 - g0, "hot": g2 - g1, "random": g3 - g2}
        for _, a in fleets:
            a.send("stop")
        stopped = [a.recv() for _, a in fleets]
        for p, _ in fleets + gens:
            p.join(10)
    finally:
        for p, _ in fleets + gens:
            if p.is_alive():
                p.kill()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    def agg(name):
        lat = [x for r in results for x in r[name]["latencies"]]
        n = sum(r[name]["round_trips"] for r in results)
        el = max(r[name]["elapsed"] for r in results)
        return n / el if el else 0.0, _pct(lat, 99), _pct(lat, 50), sum(r[name]["bad_mac"] for r in results), \
            sum(r[name]["lost"] for r in results), n

    rnd, hot_r, warm = agg("random"), agg("hot"), agg("warm")

    def per_core(phase, n):
        """Round trips per second of fleet CPU (what one fully busy fleet core would do)."""
        return round(n / cpu[phase], 1) if cpu.get(phase) else None

    def us(phase, n, table=None):
        table = cpu if table is None else table
        return round(table[phase] / n * 1e6, 1) if n and table.get(phase) else None
    rss = sum(s[1] for s in stopped)
    out = {"devices": args.devices, "rss_bytes": rss, "round_trips_per_s": round(rnd[0], 1),
           "p99_ms": None if rnd[1] is None else round(rnd[1] * 1000, 2),
           "p50_ms": None if rnd[2] is None else round(rnd[2] * 1000, 2),
           "hot_round_trips_per_s": round(hot_r[0], 1),
           "hot_p99_ms": None if hot_r[1] is None else round(hot_r[1] * 1000, 2),
           "hot_p50_ms": None if hot_r[2] is None else round(hot_r[2] * 1000, 2),
           "first_touch_per_s": round(warm[0], 1),
           "round_trips_per_core_s": per_core("random", rnd[5]), "hot_round_trips_per_core_s": per_core("hot", hot_r[5]),
           "fleet_cpu_us_per_round_trip": {"warm": us("warm", warm[5]), "hot": us("hot", hot_r[5]),
                                           "random": us("random", rnd[5])},
           "generator_cpu_us_per_round_trip": {"hot": us("hot", hot_r[5], gcpu), "random": us("random", rnd[5], gcpu)},
           "premises": premises, "shards": args.shards, "clients": args.clients, "in_flight": args.in_flight,
           "cache": cache, "hot_set": hot_n, "seconds": args.seconds, "commissioning": args.commissioning,
           "round_trips": {"warm": warm[5], "hot": hot_r[5], "random": rnd[5]},
           "mac_failures": rnd[3] + hot_r[3] + warm[3], "unanswered": rnd[4] + hot_r[4] + warm[4],
           "provision_s": round(provision_s, 2), "ready_rss_bytes": sum(r[3] for r in ready),
           "build_s": round(max(b[1] for b in built), 2),
           "fleet": [s[2] for s in stopped], "cpus": os.cpu_count()}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, required=True, help="devices hosted (hub + ESME per premises)")
    ap.add_argument("--seconds", type=float, default=10.0, help="measured seconds per phase (hot, random)")
    ap.add_argument("--clients", type=int, default=1, help="load generator processes")
    ap.add_argument("--in-flight", type=int, default=64, help="outstanding commands per generator")
    ap.add_argument("--shards", type=int, default=1, help="fleet processes (shard k/K each)")
    ap.add_argument("--cache", type=int, default=None, help="premises kept in memory per shard")
    ap.add_argument("--hot", type=int, default=None, help="premises in the hot set")
    ap.add_argument("--commissioning", choices=("installer", "protocol"), default="installer",
                    help="how a premises is first commissioned: stamped from its kind's template (installer) or "
                         "through the use cases (protocol)")
    ap.add_argument("--state", default=None, help="state directory (default: a temporary one, removed)")
    ap.add_argument("--profile", default=None, help="cProfile the fleet into FILE.<shard>")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    if args.devices < 2 or args.shards < 1 or args.clients < 1 or args.in_flight < 1:
        ap.error("need --devices >= 2 and positive --shards, --clients, --in-flight")
    out = run(args)
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:>24}: {v}")
    return 0 if out["mac_failures"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
