"""Frame-path micro-benchmark: warm ESME reads (ECS17a, MAC'd by the ACB) through `FleetHost.handle` with
`host.han = "direct"`, group-committed per batch, in process (no sockets), then every response MAC-verified.

    python bench/frame_path.py [--premises N] [--rounds R] [--batch B] [--json] [--no-stages]

Prints `round_trips_per_s` and `us_per_round_trip` of an uninstrumented run, then (unless `--no-stages`) a
second, instrumented run's inclusive microseconds per round trip for each stage (the wrappers cost a little, so
stages add up to slightly more than the plain figure) and how many times the GBCS envelope was parsed per round
trip. Commands are built in advance by a head end on the fleet's own keys; the premises are materialised and
commissioned before timing (warm), so what is measured is the steady-state frame path: envelope parsing,
routing, the device's checks (KDF + GMAC), the COSEM get, the response build (KDF + GMAC), commit (state
serialisation, compression, SQLite) and response classification.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from firmware_emu.fleet.config import parse_config  # noqa: E402
from firmware_emu.fleet.host import FleetHost  # noqa: E402
from firmware_emu.fleet.keys import FleetKeys, premises_euis  # noqa: E402
from hil.remote_party import CounterStore, RemoteParty  # noqa: E402
from hil.verify import VALID, make_verifier  # noqa: E402
from protocols.dlms.apdu import access_request  # noqa: E402
from protocols.gbcs.message import decode  # noqa: E402
from protocols.security.keystore import Role  # noqa: E402

ECS17A = {"dlms": access_request(("get", 3, "1-0:1.8.0.255", 2, None))}


def make_config(state_dir: Path, premises: int):
    return parse_config({
        "fleet": {"name": "bench", "seed": 7, "premises": premises, "state_dir": str(state_dir)},
        "time": {"start": "2025-01-01T00:00:00Z", "speed": 1.0},
        "mix": [{"name": "electricity_only", "share": 1.0, "devices": ["ESME"]}],
        "host": {"han": "direct", "durability": "normal"},
    })


def build_commands(cfg, rounds: int) -> list[bytes]:
    keys = FleetKeys.from_config(cfg, create=False)
    no = RemoteParty(keys.keystore, keys.organisation(Role.NETWORK_OPERATOR), Role.NETWORK_OPERATOR,
                     counter_store=CounterStore(None, initial_counter=10_000))
    out = []
    for _ in range(rounds):
        for i in range(cfg.premises):
            cmd = {"grouping_header": {"recipient": premises_euis(cfg, i)["ESME"],
                                       "other_information": {"message_code": "0x0026"}},
                   "payload": ECS17A}
            out.append(no.build(cmd))
    return out


def run_frames(host: FleetHost, frames: list[bytes], batch: int, now: float) -> tuple[float, list[bytes]]:
    responses: list[bytes] = []
    c0 = time.process_time()
    t0 = time.perf_counter()
    for k in range(0, len(frames), batch):
        outs = []
        for f in frames[k:k + batch]:
            outs += host.handle(f, now)
        host.commit()
        responses += [o.frame for o in outs if o.kind == "response"]
        now += 1.0
    run_frames.cpu = time.process_time() - c0
    return time.perf_counter() - t0, responses


# -- stage instrumentation -------------------------------------------------------------------------------------

class Stages:
    """Inclusive wall time and call counts per stage, by wrapping functions where they are looked up."""

    def __init__(self):
        self.time: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._undo: list = []

    def wrap(self, owner, attr: str, label: str, *, static: bool = False) -> None:
        if not hasattr(owner, attr):
            return
        raw = owner.__dict__.get(attr) if isinstance(owner, type) else None
        orig = getattr(owner, attr)
        times, calls, clock = self.time, self.calls, time.perf_counter

        def wrapper(*a, **kw):
            t = clock()
            try:
                return orig(*a, **kw)
            finally:
                times[label] += clock() - t
                calls[label] += 1
        new = staticmethod(wrapper) if static or isinstance(raw, staticmethod) else wrapper
        setattr(owner, attr, new)
        self._undo.append((owner, attr, raw if raw is not None else orig))

    def undo(self) -> None:
        for owner, attr, orig in reversed(self._undo):
            setattr(owner, attr, orig)
        self._undo.clear()


def instrument(st: Stages) -> None:
    import firmware_emu.chf.routing as routing
    import firmware_emu.core.device as device
    import firmware_emu.core.security as security
    import firmware_emu.fleet.host as fh
    import firmware_emu.premises as premises
    from firmware_emu.core.cosem import CosemServer
    from firmware_emu.esme.device import Esme
    import protocols.gbcs.message as message
    import protocols.dlms.apdu as apdu

    st.wrap(fh.FleetHost, "handle", "handle (total)")
    st.wrap(fh, "_header", "host: envelope header (in + out)")
    st.wrap(fh.FleetHost, "_outbound", "host: classify responses")
    st.wrap(fh.FleetHost, "_direct", "host: direct path (route + device)")
    st.wrap(premises.Premises, "tick", "premises: tick")
    st.wrap(routing.HanRouter, "route_wan", "hub: route_wan")
    st.wrap(routing.HanRouter, "route_han", "hub: route_han")
    st.wrap(device.Device, "receive", "device: receive (total)")
    st.wrap(security, "check_command", "device: check_command (parse + KDF + GMAC)")
    st.wrap(security, "verify_message_mac", "device: verify MAC (KDF + GMAC)")
    st.wrap(Esme, "handle_dlms", "esme: handle_dlms")
    st.wrap(apdu, "decode_apdu", "esme: decode Access-Request")
    st.wrap(apdu, "encode_apdu", "esme: encode Access-Response")
    st.wrap(CosemServer, "access", "esme: COSEM access")
    st.wrap(security, "build_response", "device: build_response (header + KDF + GMAC)")
    st.wrap(security, "message_mac", "device: response MAC (KDF + GMAC)")
    st.wrap(fh.FleetHost, "commit", "commit (total)")
    st.wrap(premises.Premises, "state", "commit: Premises.state()")
    for name in ("state_json", "snapshot"):
        st.wrap(premises.Premises, name, f"commit: Premises.{name}()")
    st.wrap(fh.PremisesStore, "encode", "commit: encode + compress")
    st.wrap(fh.PremisesStore, "encode_raw", "commit: encode + compress")
    st.wrap(fh.PremisesStore, "save_many", "commit: SQLite save_many")
    st.wrap(fh.FleetHost, "_wake_of", "commit: timer index (_wake_of)")
    st.wrap(fh, "check_counters", "commit: check_counters")
    st.wrap(fh.FleetHost, "_counters_of", "commit: counters snapshot")
    for mod in (message,):
        st.wrap(mod, "split_payload", "envelope parses (split_payload)")
    for mod in (fh, premises, routing, security):
        if "split_payload" in mod.__dict__:
            st.wrap(mod, "split_payload", "envelope parses (split_payload)")
    for name in ("parse_envelope", "parse_header"):
        for mod in (message, fh, premises, routing, security):
            if name in mod.__dict__:
                st.wrap(mod, name, f"envelope parses ({name})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--premises", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=30, help="reads per premises in the timed run")
    ap.add_argument("--batch", type=int, default=64, help="frames per group commit")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    ap.add_argument("--no-stages", action="store_true")
    ap.add_argument("--profile", metavar="FILE", help="also write a cProfile of the timed run")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="gbcs-frame-path-") as tmp:
        cfg = make_config(Path(tmp) / "state", args.premises)
        host = FleetHost(cfg)
        now = host.start_time
        t0 = time.perf_counter()
        warm = build_commands(cfg, 2)
        _, r = run_frames(host, warm, args.batch, now)          # materialise + commission, then one warm read
        warmup_s = time.perf_counter() - t0
        frames = build_commands(cfg, args.rounds * (2 if not args.no_stages else 1) + 2)[len(warm):]
        timed, staged = frames[:args.premises * args.rounds], frames[args.premises * args.rounds:]
        now += 10
        if args.profile:
            import cProfile
            prof = cProfile.Profile()
            prof.enable()
        elapsed, responses = run_frames(host, timed, args.batch, now)
        cpu = run_frames.cpu
        if args.profile:
            prof.disable()
            prof.dump_stats(args.profile)
        n = len(timed)
        stages_out = {}
        parses = None
        if not args.no_stages:
            st = Stages()
            instrument(st)
            try:
                _, more = run_frames(host, staged, args.batch, now + 1000)
            finally:
                st.undo()
            responses += more
            m = len(staged)
            stages_out = {k: round(v / m * 1e6, 1) for k, v in sorted(st.time.items(), key=lambda kv: -kv[1])}
            parses = {k: round(v / m, 2) for k, v in st.calls.items() if k.startswith("envelope parses")}
        verify = make_verifier(FleetKeys.from_config(cfg, create=False).keystore)
        ok = sum(1 for f in responses if verify(f, decode(f)).get("mac") == VALID)
        host.close()
    out = {"premises": args.premises, "round_trips": n, "batch": args.batch,
           "round_trips_per_s": round(n / elapsed), "us_per_round_trip": round(elapsed / n * 1e6, 1),
           "cpu_us_per_round_trip": round(cpu / n * 1e6, 1),
           "responses_mac_valid": ok, "responses": len(responses), "warmup_s": round(warmup_s, 2)}
    if stages_out:
        out["stages_us_per_round_trip"] = stages_out
        out["envelope_parses_per_round_trip"] = parses
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            if isinstance(v, dict):
                print(f"{k}:")
                for kk, vv in v.items():
                    print(f"  {kk:55s} {vv}")
            else:
                print(f"{k:30s} {v}")
    return 0 if ok == len(responses) == len(timed) + (len(staged) if not args.no_stages else 0) else 1


if __name__ == "__main__":
    sys.exit(main())
