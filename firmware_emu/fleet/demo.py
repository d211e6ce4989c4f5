"""`gbcs-emu demo`: an embedded fleet, commissioned, driven by a head end through the DCC front for about a minute.

Theory of operation
-------------------
Everything runs in one process and one event loop, but over the real edges (docs/demo.md):

1. **Fleet.** A `FleetHost` + `FleetRunner` from a configuration built in memory (`demo_config`): N premises of
   the usual mix (70 % dual fuel, 25 % electricity only, 5 % dual fuel with a PPMID and a prepayment ESME),
   state in a temporary directory (or `--state`), a TCP listener speaking the GFI text framing on a free port of
   127.0.0.1, simulated time at `speed` (default 60x: a GSME wakes every 30 wall seconds).
2. **Commissioning.** The runner's background commissioning materialises every premises (CCS01, HAN joins,
   CS03...) while the head end waits; progress is `host.counters.materialised`.
3. **Head end.** A `DccFront` acting for the fleet's supplier and network operator (keys derived from the same
   configuration, `FleetKeys`) with anomaly detection on: a deliberately low threshold on ECS43 (open the load
   switch) and GCS32 (close the valve) so some of them are quarantined. One TCP connection carries every
   command (`TcpWanClient`); up to `in_flight` ESME/hub commands are outstanding, GSME commands wait at the hub
   for the meter's wake (bounded separately). The mix: reads (ECS17a/17b, GCS13a), UTRN top-ups (CS01a/CS01b),
   tariff updates (ECS01b/GCS01b), supply switching (ECS42/43, GCS32/39).
4. **Alerts.** Now and then an ESME lives through a supply outage (ECS80: 8F35/8F36 when it comes back) and a
   credit event (GNCA/GCA with a low-credit / disablement code) (`stimulate`).
5. **Verification.** Every response and alert is decoded and its MAC or signature checked with the fleet's
   keys (`hil.verify`); a response whose protection is invalid is a fleet failure (exit 1).
6. **End.** Sending stops; the clock is moved past a GSME wake so gas commands are answered; what is still
   unanswered then counts as `no_answer`. The summary (`DemoSummary.as_dict()`, `--json`) holds commands,
   successes, failures by reason, latency percentiles, alerts by code, quarantine and the inventory.

Bounded: at most `in_flight` + `gsme_in_flight` commands outstanding; latencies kept in a fixed-size reservoir;
quarantined commands are discarded as soon as they are counted.
"""
from __future__ import annotations

import asyncio
import copy
import json
import logging
import math
import random
import shutil
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from protocols.dlms.apdu import access_request
from protocols.errors import DecodeError, GbcsEmuError
from protocols.gbcs.message import alert_code, decode
from protocols.gbcs.registry import REGISTRY
from protocols.security.eui import as_eui
from protocols.security.keystore import Role
from protocols.security.utrn import ValueClass, build_utrn


log = logging.getLogger(__name__)

__all__ = ["DemoOptions", "DemoStats", "DemoError", "demo_config", "run_demo", "USE_CASES", "percentile"]

DEMO_START = "2025-01-01T00:00:00Z"
GBCS_EPOCH_UNIX = 946684800        # 2000-01-01T00:00:00Z: GBZ times count from it
WAKE_INTERVAL = 1800.0
#: (use case, device type, weight, user role): the traffic mix.
USE_CASES = (
    ("ECS17a", "ESME", 14, Role.NETWORK_OPERATOR), ("ECS17b", "ESME", 14, Role.SUPPLIER),
    ("CS01a", "ESME", 8, Role.SUPPLIER), ("ECS01b", "ESME", 5, Role.SUPPLIER),
    ("ECS43", "ESME", 4, Role.SUPPLIER), ("ECS42", "ESME", 4, Role.SUPPLIER),
    ("GCS13a", "GSME", 4, Role.SUPPLIER), ("CS01b", "GSME", 2, Role.SUPPLIER),
    ("GCS01b", "GSME", 1, Role.SUPPLIER), ("GCS32", "GSME", 1, Role.SUPPLIER), ("GCS39", "GSME", 1, Role.SUPPLIER),
)
#: The deliberately low thresholds (per user and use case, sliding window in simulated seconds).
LOW_THRESHOLDS = ({"user": "*", "use_case": "ECS43", "limit": 5, "window": "1h"},
                  {"user": "*", "use_case": "GCS32", "limit": 2, "window": "1h"},
                  {"user": "*", "use_case": "*", "limit": 1_000_000, "window": "1h"})
_LATENCY_SAMPLES = 100_000


class DemoError(GbcsEmuError):
    """The demo could not run (the fleet did not start, commissioning stalled)."""


@dataclass
class DemoOptions:
    premises: int = 1000
    seconds: float = 60.0            # wall seconds of traffic
    speed: float = 60.0
    seed: int = 2025
    state: Path | None = None        # None: a temporary directory, removed at the end
    in_flight: int = 32              # outstanding ESME/hub commands
    gsme_in_flight: int = 200        # outstanding GSME commands (answered at the meter's wake)
    alerts_every: float = 1.0        # wall seconds between stimulated events
    han_loss: float = 0.01
    commissioning_timeout: float = 600.0


def demo_config(opts: DemoOptions, state_dir: Path):
    """The demo's fleet configuration (docs/demo.md)."""
    from firmware_emu.fleet.config import parse_config
    return parse_config({
        "fleet": {"name": "demo", "seed": opts.seed, "premises": opts.premises, "state_dir": str(state_dir)},
        "time": {"start": DEMO_START, "speed": opts.speed},
        "mix": [{"name": "dual_fuel", "share": 0.70, "devices": ["ESME", "GSME"]},
                {"name": "electricity_only", "share": 0.25, "devices": ["ESME"]},
                {"name": "dual_fuel_ppmid", "share": 0.05, "devices": ["ESME", "GSME", "PPMID"],
                 "profile": "prepayment"}],
        "profiles": {"default": {"ESME": {"mean_kw": 0.45}, "GSME": {"mean_kw": 1.5,
                                                                     "wake_interval": WAKE_INTERVAL}},
                     "prepayment": {"ESME": {"prepayment": {"meter_balance": 2_000_000}}}},
        "han": {"loss": opts.han_loss, "latency": 0.005},
        "commissioning": {"mode": "background", "rate": 400},
        "wan": {"tcp": [{"listen": "127.0.0.1:0", "framing": "gfi"}]},
        "host": {"cache": max(100, min(opts.premises, 5000)), "durability": "normal"},
    })


def percentile(values, q: float) -> float | None:
    """The q-th percentile (0..100, nearest rank) of `values`, None when empty."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100.0 * len(s)) - 1))
    return s[k]


@dataclass
class DemoStats:
    """What the head end saw (all counts; latencies in a bounded reservoir)."""

    phase: str = "starting"
    premises: int = 0
    commissioned: int = 0
    commissioning_s: float = 0.0
    sent: Counter = field(default_factory=Counter)           # by use case
    answered: Counter = field(default_factory=Counter)
    succeeded: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)       # by reason
    quarantined: Counter = field(default_factory=Counter)    # by use case
    alerts: Counter = field(default_factory=Counter)         # by alert code
    stimulated: Counter = field(default_factory=Counter)
    verified: int = 0
    verification_failures: int = 0
    latencies: dict = field(default_factory=lambda: {"ESME": deque(maxlen=_LATENCY_SAMPLES),
                                                     "GSME": deque(maxlen=_LATENCY_SAMPLES)})
    recent: deque = field(default_factory=lambda: deque(maxlen=4096))   # wall times of answers (rate)
    started: float = field(default_factory=time.monotonic)
    traffic_started: float | None = None
    traffic_s: float = 0.0
    sim_now: float = 0.0
    awaiting: int = 0
    unmatched: int = 0                # responses to no outstanding command (late, repeated blocks)

    @property
    def total_sent(self) -> int:
        return sum(self.sent.values())

    @property
    def total_answered(self) -> int:
        return sum(self.answered.values())

    @property
    def total_failed(self) -> int:
        return sum(self.failures.values())

    def rate(self, window: float = 5.0) -> float:
        now = time.monotonic()
        n = sum(1 for t in self.recent if t >= now - window)
        span = min(window, now - (self.traffic_started or now)) or 1.0
        return n / span if span > 0 else 0.0

    def latency_ms(self, kind: str | None = None) -> dict:
        vals = list(self.latencies[kind]) if kind else [*self.latencies["ESME"], *self.latencies["GSME"]]
        out = {}
        for q in (50, 90, 99):
            v = percentile(vals, q)
            out[f"p{q}"] = None if v is None else round(v * 1000.0, 2)
        out["count"] = len(vals)
        return out


# ------------------------------------------------------------------------------------------------ commands

#: Payloads (JSON form) of the demo's commands as `hil.spec_commands` builds them from the GBCS appendix
#: (`tests/test_demo.py` checks they still agree when the appendix is at hand; a fresh clone has no appendix, so the
#: demo carries them). GBZ `issuer_event_id`s are set to the current time when a command is built.
_TEMPLATES = json.loads(
    '{"ECS17a":{"access_request":{"long_invoke_id_and_priority":"20000000","date_time":"","request_specifications'
    '":[{"kind":"get","descriptor":{"class_id":3,"instance_id":"1-0:2.8.0.255","attribute_id":2},"access_selectio'
    'n":null},{"kind":"get","descriptor":{"class_id":3,"instance_id":"1-0:2.8.0.255","attribute_id":3},"access_se'
    'lection":null},{"kind":"get","descriptor":{"class_id":3,"instance_id":"1-0:4.8.0.255","attribute_id":2},"acc'
    'ess_selection":null},{"kind":"get","descriptor":{"class_id":3,"instance_id":"1-0:4.8.0.255","attribute_id":3'
    '},"access_selection":null}],"data":[{"type":"null-data","value":null},{"type":"null-data","value":null},{"ty'
    'pe":"null-data","value":null},{"type":"null-data","value":null}]}},"ECS17b":{"access_request":{"long_invoke_'
    'id_and_priority":"20000000","date_time":"","request_specifications":[{"kind":"action","descriptor":{"class_i'
    'd":30,"instance_id":"0-0:43.2.8.255","method_id":1},"access_selection":null}],"data":[{"type":"structure","v'
    'alue":[{"type":"array","value":[{"type":"structure","value":[{"type":"long-unsigned","value":1},{"type":"oct'
    'et-string","value":"00005E2C220A"},{"type":"integer","value":2},{"type":"long-unsigned","value":0},{"type":"'
    'structure","value":[{"type":"enum","value":0},{"type":"null-data","value":null}]}]}]},{"type":"array","value'
    '":[{"type":"structure","value":[{"type":"enum","value":2},{"type":"structure","value":[{"type":"octet-string'
    '","value":"040000000000000000"},{"type":"octet-string","value":"0000000000000000"},{"type":"octet-string","v'
    'alue":"0000000000000000"},{"type":"octet-string","value":""},{"type":"structure","value":[{"type":"enum","va'
    'lue":2},{"type":"structure","value":[{"type":"octet-string","value":"02"},{"type":"octet-string","value":""}'
    ']}]}]}]}]}]}]}},"ECS01b":{"access_request":{"long_invoke_id_and_priority":"20000000","date_time":"","request'
    '_specifications":[{"kind":"set","descriptor":{"class_id":113,"instance_id":"0-0:19.20.4.255","attribute_id":'
    '6},"access_selection":null},{"kind":"set","descriptor":{"class_id":113,"instance_id":"0-0:19.20.0.255","attr'
    'ibute_id":6},"access_selection":null},{"kind":"set","descriptor":{"class_id":113,"instance_id":"0-0:19.20.4.'
    '255","attribute_id":7},"access_selection":null},{"kind":"set","descriptor":{"class_id":113,"instance_id":"0-'
    '0:19.20.0.255","attribute_id":7},"access_selection":null}],"data":[{"type":"structure","value":[{"type":"str'
    'ucture","value":[{"type":"integer","value":0},{"type":"integer","value":3}]},{"type":"structure","value":[{"'
    'type":"long-unsigned","value":0},{"type":"octet-string","value":"000000000000"},{"type":"integer","value":0}'
    ']},{"type":"array","value":[{"type":"structure","value":[{"type":"octet-string","value":""},{"type":"long","'
    'value":500}]}]}]},{"type":"structure","value":[{"type":"structure","value":[{"type":"integer","value":3},{"t'
    'ype":"integer","value":3}]},{"type":"structure","value":[{"type":"long-unsigned","value":3},{"type":"octet-s'
    'tring","value":"0100010800FF"},{"type":"integer","value":2}]},{"type":"array","value":[{"type":"structure","'
    'value":[{"type":"octet-string","value":"AB"},{"type":"long","value":500}]}]}]},{"type":"octet-string","value'
    '":"0000000000000000008000FF"},{"type":"octet-string","value":"0000000000000000008000FF"}]}},"ECS42":{"access'
    '_request":{"long_invoke_id_and_priority":"20000000","date_time":"","request_specifications":[{"kind":"action'
    '","descriptor":{"class_id":9,"instance_id":"0-0:10.0.106.255","method_id":1},"access_selection":null}],"data'
    '":[{"type":"long-unsigned","value":51}]}},"ECS43":{"access_request":{"long_invoke_id_and_priority":"20000000'
    '","date_time":"","request_specifications":[{"kind":"action","descriptor":{"class_id":9,"instance_id":"0-0:10'
    '.0.106.255","method_id":1},"access_selection":null}],"data":[{"type":"long-unsigned","value":52}]}},"GCS13a"'
    ':{"gbz":{"components":[{"extended_header_control":{"last":true,"encrypted":false,"from_date_time":false,"res'
    'erved":0},"cluster":1794,"zcl":{"frame_control":{"frame_type":"global","manufacturer_specific":false,"direct'
    'ion":"client_to_server","disable_default_response":false,"reserved":0},"sequence_number":0,"command_id":0,"p'
    'ayload":{"attributes":[{"attribute_id":770},{"attribute_id":769},{"attribute_id":768},{"attribute_id":0}]}}}'
    ']}},"GCS01b":{"gbz":{"components":[{"extended_header_control":{"last":false,"encrypted":false,"from_date_tim'
    'e":false,"reserved":0},"cluster":1792,"zcl":{"frame_control":{"frame_type":"cluster","manufacturer_specific"'
    ':false,"direction":"server_to_client","disable_default_response":false,"reserved":0},"sequence_number":0,"co'
    'mmand_id":4,"payload":{"provider_id":0,"issuer_event_id":789004800,"issuer_tariff_id":1,"start_time":0,"tari'
    'ff_type_charging_scheme":0,"tariff_label":"","number_of_price_tiers_in_use":1,"number_of_block_thresholds_in'
    '_use":1,"unit_of_measure":0,"currency":826,"price_trailing_digit":80,"standing_charge":1000,"tier_block_mode'
    '":255,"block_threshold_multiplier":1,"block_threshold_divisor":1000}}},{"extended_header_control":{"last":tr'
    'ue,"encrypted":false,"from_date_time":false,"reserved":0},"cluster":1792,"zcl":{"frame_control":{"frame_type'
    '":"cluster","manufacturer_specific":false,"direction":"server_to_client","disable_default_response":false,"r'
    'eserved":0},"sequence_number":1,"command_id":5,"payload":{"provider_id":0,"issuer_event_id":789004800,"start'
    '_time":0,"issuer_tariff_id":1,"command_index":0,"total_number_of_commands":1,"sub_payload_control":0,"price_'
    'matrix_sub_payload":[{"tier_block_id":1,"price":1000}]}}}]}},"GCS32":{"gbz":{"components":[{"extended_header'
    '_control":{"last":true,"encrypted":false,"from_date_time":false,"reserved":0},"cluster":1794,"zcl":{"frame_c'
    'ontrol":{"frame_type":"cluster","manufacturer_specific":false,"direction":"client_to_server","disable_defaul'
    't_response":false,"reserved":0},"sequence_number":0,"command_id":11,"payload":{"provider_id":0,"issuer_event'
    '_id":789004800,"request_date_time":0,"implementation_date_time":0,"proposed_supply_status":0,"supply_control'
    '_bits":1}}}]}},"GCS39":{"gbz":{"components":[{"extended_header_control":{"last":true,"encrypted":false,"from'
    '_date_time":false,"reserved":0},"cluster":1794,"zcl":{"frame_control":{"frame_type":"cluster","manufacturer_'
    'specific":false,"direction":"client_to_server","disable_default_response":false,"reserved":0},"sequence_numb'
    'er":0,"command_id":11,"payload":{"provider_id":0,"issuer_event_id":789004800,"request_date_time":0,"implemen'
    'tation_date_time":0,"proposed_supply_status":1,"supply_control_bits":1}}}]}}}')


class _Commands:
    """JSON forms of the demo's commands: the appendix payloads above, UTRNs made for each top-up."""

    def __init__(self, keystore, supplier: str):
        self.ks = keystore
        self.supplier = supplier
        self._utrn_counters: dict[str, int] = {}

    def _utrn(self, device: str, pounds: int = 5) -> str:
        # A UTRN carries a few bits of its counter, resolved against the device's UTRN counter cache, so each
        # device gets the next block of its own (a resumed --state run repeats them: duplicates, refused).
        n = self._utrn_counters[device] = self._utrn_counters.get(device, 0) + 1
        return build_utrn(self.ks.pp_ka_private(as_eui(self.supplier)), self.ks.ka_public(as_eui(device)),
                          as_eui(self.supplier), as_eui(device), n << 32, pounds, ValueClass.POUNDS)

    @staticmethod
    def _envelope(code: int, originator: str, recipient: str, payload: dict) -> dict:
        return {"grouping_header": {"cra_flag": "command", "originator": originator, "recipient": recipient,
                                    "date_time": None, "other_information": {"message_code": f"0x{code:04X}"}},
                "payload": payload, "signature": ""}

    def build(self, use_case: str, recipient: str, originator: str, now: float) -> dict:
        code = REGISTRY.by_name(use_case).code
        if use_case == "CS01a":
            from firmware_emu.esme.prepayment import TOKEN_GATEWAY
            value = {"type": "octet-string", "value": self._utrn(recipient).encode().hex().upper()}
            payload = {"dlms": access_request(("action", 115, TOKEN_GATEWAY, 1, value))}
        elif use_case == "CS01b":
            comp = {"cluster": 0x0705, "zcl": {"frame_control": {"frame_type": "cluster",
                                                                 "direction": "client_to_server"},
                                               "sequence_number": 0, "command_id": 0x04,
                                               "payload": {"originating_device": 0,
                                                           "top_up_code": self._utrn(recipient).encode().hex()
                                                           .upper()}}}
            payload = {"gbz": {"components": [comp]}}
        else:
            payload = copy.deepcopy(_TEMPLATES[use_case])
            if "access_request" in payload:
                payload = {"dlms": payload}
            else:
                event_id = int(now) - GBCS_EPOCH_UNIX
                for c in payload["gbz"]["components"]:
                    if "issuer_event_id" in c["zcl"]["payload"]:
                        c["zcl"]["payload"]["issuer_event_id"] = event_id
        return self._envelope(code, originator, recipient, payload)


def _alert_code(msg: dict) -> str:
    """The alert code of an alert message, as 0xNNNN (else its message code)."""
    code = alert_code(msg)
    if code is not None:
        return f"0x{code:04X}"
    code = ((msg.get("grouping_header") or {}).get("other_information") or {}).get("message_code")
    return str(code) if code is not None else "unknown"


def _outcome(msg: dict) -> str | None:
    """None when a response reports success, else the failure reason."""
    payload = msg.get("payload") or {}
    if "dlms" in payload:
        results = (payload["dlms"].get("access_response") or {}).get("results") or []
        bad = [r.get("result") for r in results if r.get("result") != "success"]
        return f"device: {bad[0]}" if bad else None
    if "asn1" in payload:
        rc = (payload["asn1"].get("value") or {}).get("response_code", "success")
        return None if rc in ("success", 0) else f"device: {rc}"
    if "gbz" in payload:
        for c in payload["gbz"].get("components") or []:
            zcl = c.get("zcl") or {}
            p = zcl.get("payload") or {}
            if zcl.get("command_id") == 0x0B and isinstance(p, dict) and p.get("status", 0) not in (0, None):
                return f"device: ZCL status 0x{p['status']:02X}"   # a Default Response with an error status
    return None


# ------------------------------------------------------------------------------------------------ the head end

class _HeadEnd:
    def __init__(self, runner, opts: DemoOptions, stats: DemoStats, rng: random.Random):
        from firmware_emu.fleet.front import AnomalyConfig, DccFront
        from firmware_emu.fleet.keys import FleetKeys, premises_euis
        from hil.remote_party import CounterStore
        from hil.verify import make_verifier
        self.runner, self.host, self.cfg = runner, runner.host, runner.config
        self.opts, self.stats, self.rng = opts, stats, rng
        keys = FleetKeys.from_config(self.cfg, create=False)
        self.ks = keys.keystore
        self.users = {Role.SUPPLIER: keys.organisation(Role.SUPPLIER),
                      Role.NETWORK_OPERATOR: keys.organisation(Role.NETWORK_OPERATOR)}
        self.front = DccFront(self.ks, self.users.values(), config=AnomalyConfig.from_mapping(
            {"thresholds": list(LOW_THRESHOLDS)}), acb=keys.organisation(Role.ACCESS_CONTROL_BROKER),
            counter_store=CounterStore(None))
        self.verify = make_verifier(self.ks)
        self.commands = _Commands(self.ks, self.users[Role.SUPPLIER])
        self.euis = premises_euis
        self.pending: dict[tuple[str, int], tuple[str, str, float]] = {}
        self.slots = {"ESME": asyncio.Semaphore(opts.in_flight), "GSME": asyncio.Semaphore(opts.gsme_in_flight)}
        self.client = None
        self.sending = True
        self.indices = list(self.cfg.shard.premises(self.cfg.premises))

    async def connect(self) -> None:
        from firmware_emu.fleet.wan import TcpWanClient
        self.client = await TcpWanClient.connect("127.0.0.1", self.runner.tcp_ports[0], framing="gfi",
                                                 queue=65536)

    def _pick(self) -> tuple[str, str, Role, int]:
        weights = [w for _, _, w, _ in USE_CASES]
        while True:
            uc, dtype, _, role = self.rng.choices(USE_CASES, weights)[0]
            idx = self.rng.choice(self.indices)
            if dtype in self.cfg.devices_of(idx):
                return uc, dtype, role, idx

    async def send_loop(self, until: float) -> None:
        loop = asyncio.get_running_loop()
        while self.sending and loop.time() < until:
            uc, dtype, role, idx = self._pick()
            slot = self.slots[dtype]
            if dtype == "GSME" and slot.locked():
                self._expire()
                await asyncio.sleep(0)
                continue                                            # gas meters busy: pick something else
            try:
                await asyncio.wait_for(slot.acquire(), max(0.01, min(1.0, until - loop.time())))
            except asyncio.TimeoutError:
                self._expire()
                continue
            if not self.sending or loop.time() >= until:
                slot.release()
                break
            eui = self.euis(self.cfg, idx)[dtype]
            now = self.runner.clock.now()
            user = self.users[role]
            try:
                cmd = self.commands.build(uc, eui, user, now)
                got = self.front.submit(cmd, user, now)
            except (GbcsEmuError, ValueError, KeyError) as e:
                slot.release()
                self.stats.failures[f"build: {type(e).__name__}"] += 1
                log.warning("demo: cannot build %s for %s: %s", uc, eui, e)
                continue
            if not hasattr(got, "frame"):                           # Quarantined
                slot.release()
                self.stats.quarantined[uc] += 1
                self.front.discard(got.report.id)                   # counted and reported: never sent
                continue
            self.pending[(eui.upper(), got.counter)] = (uc, dtype, time.monotonic())
            self.stats.sent[uc] += 1
            try:
                await self.client.send(got.frame)
            except GbcsEmuError as e:
                self.pending.pop((eui.upper(), got.counter), None)
                slot.release()
                self.stats.failures["send: " + type(e).__name__] += 1
                await asyncio.sleep(0.1)
            await asyncio.sleep(0)

    def _expire(self) -> None:
        """Give up on commands unanswered for too long (an ESME answers at once; a GSME by its next wake)."""
        now = time.monotonic()
        limits = {"ESME": 20.0, "GSME": 2 * WAKE_INTERVAL / self.opts.speed + 20.0}
        for key, (uc, dtype, t0) in list(self.pending.items()):
            if now - t0 > limits[dtype]:
                del self.pending[key]
                self.slots[dtype].release()
                self.stats.failures["no_answer"] += 1

    async def recv_loop(self) -> None:
        from firmware_emu.fleet.wan import WanClosed
        from hil.verify import INVALID, VALID
        while True:
            try:
                frame = await self.client.recv(None)
            except WanClosed:
                return
            try:
                msg = decode(frame)
            except DecodeError:
                self.stats.failures["undecodable frame"] += 1
                continue
            try:
                verdict = self.verify(frame, msg)
            except GbcsEmuError:
                verdict = {"mac": INVALID}
            ok = (verdict.get("mac") == VALID or verdict.get("signature") == VALID) and INVALID not in (
                verdict.get("mac"), verdict.get("signature"))
            self.stats.verified += 1
            gh = msg["grouping_header"]
            if gh.get("cra_flag") == "alert":
                self.stats.alerts[_alert_code(msg)] += 1
                if not ok:
                    self.stats.verification_failures += 1
                continue
            if gh.get("cra_flag") != "response":
                continue
            key = (str(gh.get("originator", "")).upper(), gh.get("originator_counter"))
            p = self.pending.pop(key, None)
            if p is None:
                self.stats.unmatched += 1
                continue
            uc, dtype, t0 = p
            self.slots[dtype].release()
            now = time.monotonic()
            self.stats.answered[uc] += 1
            self.stats.recent.append(now)
            self.stats.latencies[dtype].append(now - t0)
            if not ok:
                self.stats.verification_failures += 1
                self.stats.failures["verification failed"] += 1
                continue
            reason = _outcome(msg)
            if reason is None:
                self.stats.succeeded[uc] += 1
            else:
                self.stats.failures[reason] += 1

    async def stimulate_loop(self, until: float) -> None:
        """Outages and credit events on random ESMEs (their alerts come back over the WAN)."""
        loop = asyncio.get_running_loop()
        while self.sending and loop.time() < until:
            await asyncio.sleep(self.opts.alerts_every)
            idx = self.rng.choice(self.indices)
            now = self.runner.clock.now()
            if self.rng.random() < 0.5:
                what, args = "outage", (0x0067, None)
                detail = {"start": now, "duration": self.rng.choice((60.0, 600.0))}   # 8F35 / 8F36 when back
            elif self.rng.random() < 0.5:
                what, args, detail = "low credit", (0x1001, 0x810D), {}
            else:
                what, args, detail = "credit below disablement", (0x1000, 0x8F0F), {}
            try:
                await stimulate(self.runner, idx, "ESME", *args, **detail)
                self.stats.stimulated[what] += 1
            except (GbcsEmuError, NotImplementedError, ValueError) as e:
                log.warning("demo: stimulating %s at premises %d failed: %s", what, idx, e)


async def stimulate(runner, idx: int, dtype: str, message_code: int, alert_code: int | None, **detail) -> int:
    """Make device `dtype` of premises `idx` live through an event (`Device.stimulate`); its frames go out through
    the runner like any other (commit first, then send). Returns how many frames left.

    Uses the host's internals (`_get`, `_touch`, `_drain`, `_outbound`) until FleetHost grows a public
    `stimulate` (change request in docs/demo.md)."""
    host = runner.host
    now = runner.clock.now()
    public = getattr(host, "stimulate", None)
    if public is not None:
        out = public(idx, dtype, message_code, alert_code, now, **detail)
    else:
        from firmware_emu.fleet.keys import premises_euis
        loaded = host._get(idx, now)
        p = loaded.premises
        t = max(now, p.now)
        eui = premises_euis(host.config, idx)[dtype]
        emitted = p.device(dtype).stimulate(message_code, alert_code, t, **detail)
        frames = p.emit(eui, emitted, t)
        if host.tuning.eager_han:
            frames += host._drain(p, t)
        host._touch(idx, loaded)
        out = host._outbound(idx, frames)
    host.commit()
    for o in out:
        await runner._send(o)
    return len(out)


# ------------------------------------------------------------------------------------------------ the run

async def run_demo(opts: DemoOptions, *, on_update: Callable[[DemoStats], None] | None = None) -> dict:
    """Run the demo (module docstring); `on_update(stats)` is called a few times a second. Returns the summary
    (`summary_dict`)."""
    from firmware_emu.fleet.host import FleetHost, FleetRunner
    tmp = None
    state = opts.state
    if state is None:
        tmp = Path(tempfile.mkdtemp(prefix="gbcs-emu-demo-"))
        state = tmp / "state"
    stats = DemoStats(premises=opts.premises)
    rng = random.Random(opts.seed)
    runner = None
    ticker = None
    try:
        cfg = demo_config(opts, Path(state))
        host = FleetHost(cfg)
        runner = FleetRunner(host, metrics_server=False)
        await runner.start()
        he = _HeadEnd(runner, opts, stats, rng)

        async def tick():
            while True:
                stats.sim_now = runner.clock.now()
                stats.awaiting = len(he.pending)
                stats.commissioned = host.store.count()
                if on_update is not None:
                    on_update(stats)
                await asyncio.sleep(0.25)

        ticker = asyncio.create_task(tick())
        loop = asyncio.get_running_loop()
        # 1. commissioning (the runner's background commissioning; the head end waits)
        stats.phase = "commissioning"
        t0 = loop.time()
        while not host.fully_commissioned:
            if loop.time() - t0 > opts.commissioning_timeout:
                raise DemoError(f"commissioning did not finish in {opts.commissioning_timeout:g} s "
                                f"({host.store.count()} of {opts.premises} premises)")
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.2)                                  # the last batch committed
        stats.commissioning_s = loop.time() - t0
        stats.commissioned = host.store.count()
        # 2. traffic
        stats.phase = "traffic"
        await he.connect()
        stats.traffic_started = time.monotonic()
        until = loop.time() + opts.seconds
        receiver = asyncio.create_task(he.recv_loop())
        await asyncio.gather(he.send_loop(until), he.stimulate_loop(until))
        he.sending = False
        stats.traffic_s = time.monotonic() - stats.traffic_started
        # 3. drain: ESME answers come at once; move time past a GSME wake for the gas commands
        stats.phase = "draining"
        await _settle(lambda: sum(1 for p in he.pending.values() if p[1] != "GSME"), 10.0)
        if he.pending:
            runner.clock.advance(WAKE_INTERVAL + 120.0)
            await _settle(lambda: len(he.pending), 10.0)
        await asyncio.sleep(0.3)                                   # late alerts
        for uc, dtype, _ in he.pending.values():
            stats.failures["no_answer"] += 1
        stats.awaiting = 0
        he.pending.clear()
        receiver.cancel()
        await asyncio.gather(receiver, return_exceptions=True)
        await he.client.close()
        stats.phase = "done"
        stats.sim_now = runner.clock.now()
        inventory = host.status()
        fleet = {"premises": opts.premises, "devices": inventory["devices"],
                 "materialised": inventory["premises_materialised"], "frames_in": host.counters.frames_in,
                 "responses": host.counters.responses, "alerts": host.counters.alerts,
                 "errors": dict(host.counters.errors), "tcp_port": runner.tcp_ports[0]}
        return summary_dict(stats, inventory, fleet, he.front)
    finally:
        if ticker is not None:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
        if runner is not None:
            await runner.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


async def _settle(outstanding: Callable[[], int], timeout: float, quiet: float = 1.5) -> None:
    """Wait until `outstanding()` is 0, or stops going down for `quiet` seconds, or `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last, since = outstanding(), loop.time()
    while last and loop.time() < deadline and loop.time() - since < quiet:
        await asyncio.sleep(0.05)
        n = outstanding()
        if n < last:
            last, since = n, loop.time()
        last = n


def summary_dict(stats: DemoStats, inventory: dict, fleet: dict, front=None) -> dict:
    """The end-of-run summary (the `--json` document; docs/demo.md)."""
    use_cases = sorted(set(stats.sent) | set(stats.quarantined))
    broken = stats.verification_failures > 0 or (stats.total_sent > 0 and stats.total_answered == 0) \
        or fleet.get("errors", {}).get("handler", 0) > 0
    return {
        "ok": not broken,
        "premises": stats.premises,
        "commissioning_s": round(stats.commissioning_s, 2),
        "traffic_s": round(stats.traffic_s, 2),
        "simulated_s": round(stats.sim_now - _start_seconds(), 1),
        "commands": {"sent": stats.total_sent, "answered": stats.total_answered,
                     "succeeded": sum(stats.succeeded.values()), "failed": stats.total_failed,
                     "quarantined": sum(stats.quarantined.values()),
                     "round_trips_per_s": round(stats.total_answered / stats.traffic_s, 1) if stats.traffic_s else 0,
                     "by_use_case": {uc: {"sent": stats.sent[uc], "answered": stats.answered[uc],
                                          "succeeded": stats.succeeded[uc], "quarantined": stats.quarantined[uc]}
                                     for uc in use_cases}},
        "failures": dict(stats.failures.most_common()),
        "unmatched_responses": stats.unmatched,
        "latency_ms": {"all": stats.latency_ms(), "ESME": stats.latency_ms("ESME"),
                       "GSME": stats.latency_ms("GSME")},
        "alerts": dict(sorted(stats.alerts.items())),
        "stimulated": dict(stats.stimulated),
        "verification": {"checked": stats.verified, "failures": stats.verification_failures},
        "quarantined": {"total": sum(stats.quarantined.values()), "by_use_case": dict(stats.quarantined),
                        "thresholds": [dict(t) for t in LOW_THRESHOLDS[:-1]]},
        "inventory": {"by_state": {k: v for k, v in inventory["by_state"].items() if v},
                      "by_type": inventory["by_type"]},
        "fleet": fleet,
    }


def _start_seconds() -> float:
    import calendar
    return float(calendar.timegm(time.strptime(DEMO_START, "%Y-%m-%dT%H:%M:%SZ")))


# ------------------------------------------------------------------------------------------------ rendering

def live_table(stats: DemoStats):
    """The live progress panel (rich)."""
    from rich.table import Table
    t = Table(title=f"gbcs-emu demo: {stats.premises} premises [{stats.phase}]", show_header=False,
              min_width=60)
    t.add_column("what", style="bold")
    t.add_column("value", justify="right")
    sim = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(stats.sim_now)) if stats.sim_now else "-"
    t.add_row("simulated time", sim)
    t.add_row("premises commissioned", f"{stats.commissioned} / {stats.premises}")
    t.add_row("commands sent", str(stats.total_sent))
    t.add_row("answered", str(stats.total_answered))
    t.add_row("failed", str(stats.total_failed))
    t.add_row("quarantined", str(sum(stats.quarantined.values())))
    t.add_row("awaiting (GSME wakes)", str(stats.awaiting))
    t.add_row("rate (answers/s, 5 s)", f"{stats.rate():.0f}")
    lat = stats.latency_ms("ESME")
    t.add_row("ESME latency p50/p90/p99 ms", "/".join("-" if lat[k] is None else f"{lat[k]:.0f}"
                                                        for k in ("p50", "p90", "p99")))
    t.add_row("alerts", ", ".join(f"{k}: {v}" for k, v in sorted(stats.alerts.items())) or "-")
    t.add_row("verification failures", str(stats.verification_failures))
    return t


def summary_tables(summary: dict) -> list:
    """The end-of-run tables (rich)."""
    from rich.table import Table
    c = summary["commands"]
    t1 = Table(title=f"commands ({summary['traffic_s']:.0f} s of traffic, {c['round_trips_per_s']}/s, "
                     f"{summary['simulated_s'] / 3600:.1f} simulated hours)")
    for col in ("use case", "sent", "answered", "succeeded", "quarantined"):
        t1.add_column(col, justify="left" if col == "use case" else "right")
    for uc, v in c["by_use_case"].items():
        t1.add_row(uc, *(str(v[k]) for k in ("sent", "answered", "succeeded", "quarantined")))
    t1.add_row("all", str(c["sent"]), str(c["answered"]), str(c["succeeded"]), str(c["quarantined"]), style="bold")
    t2 = Table(title="failures by reason")
    t2.add_column("reason")
    t2.add_column("count", justify="right")
    for k, v in summary["failures"].items():
        t2.add_row(k, str(v))
    if not summary["failures"]:
        t2.add_row("(none)", "0")
    t3 = Table(title="latency (ms, command to verified response)")
    for col in ("devices", "p50", "p90", "p99", "n"):
        t3.add_column(col, justify="right")
    for k, v in summary["latency_ms"].items():
        t3.add_row(k, *("-" if v[q] is None else f"{v[q]:.1f}" for q in ("p50", "p90", "p99")), str(v["count"]))
    t4 = Table(title="alerts by code")
    t4.add_column("alert code")
    t4.add_column("count", justify="right")
    for k, v in summary["alerts"].items():
        t4.add_row(k, str(v))
    inv = summary["inventory"]
    states = list(inv["by_state"])
    t5 = Table(title="inventory (SMI states per device type)")
    t5.add_column("device type")
    for s in states:
        t5.add_column(s, justify="right")
    for dtype, per in inv["by_type"].items():
        t5.add_row(dtype, *(str(per.get(s, 0)) for s in states))
    v = summary["verification"]
    t6 = Table(title="verdict")
    t6.add_column("what")
    t6.add_column("value", justify="right")
    t6.add_row("frames verified (MAC / signature)", str(v["checked"]))
    t6.add_row("verification failures", str(v["failures"]))
    t6.add_row("quarantined by anomaly detection", str(summary["quarantined"]["total"]))
    t6.add_row("result", "ok" if summary["ok"] else "FLEET BROKEN", style="green" if summary["ok"] else "red")
    return [t1, t2, t3, t4, t5, t6]


# ------------------------------------------------------------------------------------------------ command line

def _command():
    import sys

    import click

    @click.command("demo")
    @click.option("--premises", type=click.IntRange(1, 1_000_000), default=1000, show_default=True,
                  help="Premises in the embedded fleet.")
    @click.option("--seconds", type=click.FloatRange(0.5, None), default=60.0, show_default=True,
                  help="Wall seconds of traffic (after commissioning).")
    @click.option("--speed", type=click.FloatRange(1.0, 10_000.0), default=60.0, show_default=True,
                  help="Simulated seconds per wall second (60: a GSME wakes every 30 s).")
    @click.option("--seed", type=int, default=2025, show_default=True, help="Fleet seed (EUIs, keys, traffic).")
    @click.option("--state", type=click.Path(file_okay=False), default=None,
                  help="Keep the fleet's state here (default: a temporary directory, removed).")
    @click.option("--in-flight", type=click.IntRange(1, 10_000), default=32, show_default=True,
                  help="Outstanding ESME/hub commands.")
    @click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON (no live display).")
    @click.option("--verbose", "-v", is_flag=True, help="Log what the fleet does.")
    def demo(premises, seconds, speed, seed, state, in_flight, as_json, verbose):
        """Run an embedded fleet (no external services) against a head end for about a minute: commissioning,
        reads, top-ups, tariff updates, supply switching and alerts, every answer verified; live progress and a
        summary. Exit 1 only when the fleet broke (e.g. a response failing verification)."""
        logging.basicConfig(level=logging.INFO if verbose else logging.ERROR,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        opts = DemoOptions(premises=premises, seconds=seconds, speed=speed, seed=seed,
                           state=Path(state) if state else None, in_flight=in_flight)
        from rich.console import Console
        console = Console(stderr=as_json)
        live = None
        if console.is_terminal:
            from rich.live import Live
            live = Live(live_table(DemoStats(premises=premises)), console=console, refresh_per_second=4,
                        transient=as_json)
        last_phase = [None]

        def update(stats: DemoStats) -> None:
            if live is not None:
                live.update(live_table(stats))
            elif stats.phase != last_phase[0]:
                last_phase[0] = stats.phase
                console.print(f"demo: {stats.phase} ({stats.commissioned}/{stats.premises} premises commissioned, "
                              f"{stats.total_sent} commands sent)")

        try:
            if live is not None:
                with live:
                    summary = asyncio.run(run_demo(opts, on_update=update))
            else:
                summary = asyncio.run(run_demo(opts, on_update=update))
        except (GbcsEmuError, OSError) as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        if as_json:
            click.echo(json.dumps(summary, indent=1, sort_keys=False))
        else:
            for t in summary_tables(summary):
                console.print(t)
        sys.exit(0 if summary["ok"] else 1)

    return demo


demo_command = _command()
