"""The fleet host: a small fleet served over TCP (GFI) to a head end built on the fleet's own keys; GSME reads
answered at the wake; restart from the state directory (counters carry on, a replay is refused, the inventory
persists); shards disjoint and complete; LRU eviction writes back; lazy provisioning; config validation."""
from __future__ import annotations

import asyncio
import time

import pytest

from firmware_emu.core.clock import SimClock
from firmware_emu.fleet.config import ConfigError, parse_config
from firmware_emu.fleet.host import FleetHost, FleetRunner, Unroutable, fleet_status
from firmware_emu.fleet.keys import FleetKeys, premises_euis
from firmware_emu.fleet.wan import TcpWanClient
from hil.remote_party import CounterStore, RemoteParty
from hil.verify import VALID, make_verifier
from protocols.gbcs.message import decode
from protocols.security.keystore import Keystore, Role, Usage
from protocols.security.pki import PkiIssuer

MIX = [{"name": "dual_fuel", "share": 0.70, "devices": ["ESME", "GSME"]},
       {"name": "electricity_only", "share": 0.25, "devices": ["ESME"]},
       {"name": "dual_fuel_ppmid", "share": 0.05, "devices": ["ESME", "GSME", "PPMID"]}]


def config(tmp_path, premises=20, **host):
    return parse_config({
        "fleet": {"name": "t", "seed": 11, "premises": premises, "state_dir": str(tmp_path / "state")},
        "time": {"start": "2025-01-01T00:00:00Z", "speed": 1.0},
        "mix": MIX,
        "profiles": {"default": {"GSME": {"wake_interval": 1800}}},
        "wan": {"tcp": [{"listen": "127.0.0.1:0", "framing": "gfi"}]},
        "host": host,
    })


class HeadEnd:
    """A supplier and a network operator on the fleet's keys (what a real head end derives from the config)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.keys = FleetKeys.from_config(cfg, create=False)
        ks = self.keys.keystore
        counters = CounterStore(None, initial_counter=5000)
        self.sup = RemoteParty(ks, self.keys.organisation(Role.SUPPLIER), Role.SUPPLIER, counter_store=counters)
        self.no = RemoteParty(ks, self.keys.organisation(Role.NETWORK_OPERATOR), Role.NETWORK_OPERATOR,
                              counter_store=counters)
        self.verify = make_verifier(ks)

    def eui(self, i, dtype):
        return premises_euis(self.cfg, i)[dtype]

    def dlms(self, party, eui, code, spec, data):
        cmd = {"grouping_header": {"recipient": eui, "other_information": {"message_code": f"0x{code:04X}"}},
               "payload": {"dlms": {"access_request": {"long_invoke_id_and_priority": "20000000", "date_time": "",
                                                       "request_specifications": [spec], "data": [data]}}}}
        return party.build(cmd), party.last_counter

    def ecs17a(self, eui):
        spec = {"kind": "get", "descriptor": {"class_id": 3, "instance_id": "1-0:1.8.0.255", "attribute_id": 2},
                "access_selection": None}
        return self.dlms(self.no, eui, 0x0026, spec, {"type": "null-data", "value": None})

    def ecs43(self, eui):
        spec = {"kind": "action", "descriptor": {"class_id": 9, "instance_id": "0-0:10.0.106.255", "method_id": 1},
                "access_selection": None}
        return self.dlms(self.sup, eui, 0x0050, spec, {"type": "long-unsigned", "value": 52})

    def gcs13a(self, eui):
        read = {"cluster": 0x0702, "zcl": {
            "frame_control": {"frame_type": "global", "manufacturer_specific": False,
                              "direction": "client_to_server", "disable_default_response": False, "reserved": 0},
            "sequence_number": 0, "command_id": 0, "payload": {"attributes": [{"attribute_id": 0x0000}]}}}
        cmd = {"grouping_header": {"recipient": eui, "other_information": {"message_code": "0x0074"}},
               "payload": {"gbz": {"components": [read]}}}
        return self.sup.build(cmd), self.sup.last_counter

    def check(self, frame, eui, counter, *, signed=False):
        msg = decode(frame)
        gh = msg["grouping_header"]
        assert gh["cra_flag"] == "response" and gh["originator"] == eui and gh["originator_counter"] == counter
        verdict = self.verify(frame, msg)
        assert verdict["signature" if signed else "mac"] == VALID, verdict
        return msg


async def answer(client, counter, timeout=5.0, alerts=None):
    """The response to `counter`; alerts (CS14 after commissioning...) that come first are collected."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise TimeoutError(f"no response to counter {counter}")
        frame = await client.recv(left)
        gh = decode(frame)["grouping_header"]
        if gh["cra_flag"] == "response" and gh["originator_counter"] == counter:
            return frame
        if alerts is not None:
            alerts.append(frame)


def first(cfg, kind):
    return next(i for i in range(cfg.premises) if cfg.kind_of(i).name == kind)


async def start(cfg):
    host = FleetHost(cfg)
    clock = SimClock(host.start_time, speed=1.0)
    runner = FleetRunner(host, clock=clock)
    await runner.start()
    client = await TcpWanClient.connect("127.0.0.1", runner.tcp_ports[0], framing="gfi")
    return host, clock, runner, client


async def test_head_end_over_tcp_and_restart(tmp_path):
    cfg = config(tmp_path)
    host, clock, runner, client = await start(cfg)
    he = HeadEnd(cfg)
    try:
        for i in (0, 1, 3, 6, 9):                        # ESME reads: answered within the same handling
            eui = he.eui(i, "ESME")
            frame, counter = he.ecs17a(eui)
            await client.send(frame)
            he.check(await answer(client, counter), eui, counter)
        # a critical, replay-protected command: signed by the ESME
        esme0 = he.eui(0, "ESME")
        ecs43, c43 = he.ecs43(esme0)
        await client.send(ecs43)
        he.check(await answer(client, c43), esme0, c43, signed=True)
        # a GSME read waits at the hub for the wake
        g = first(cfg, "dual_fuel")
        gsme = he.eui(g, "GSME")
        frame, counter = he.gcs13a(gsme)
        await client.send(frame)
        with pytest.raises(TimeoutError):
            await answer(client, counter, timeout=0.3)
        clock.advance(1800 + 10)
        he.check(await answer(client, counter), gsme, counter)
        before = host.status()
        touched = {0, 1, 3, 6, 9, g}
        assert before["premises_materialised"] == len(touched)
        assert before["by_type"]["ESME"]["commissioned"] == len(touched)
        assert before["by_type"]["GSME"]["commissioned"] == sum(1 for i in touched if "GSME" in cfg.devices_of(i))
        assert host.counters.responses >= 7 and runner.metrics.value(
            "gbcs_emu_commands_total", {"use_case": "ECS17a", "result": "response"}) == 5
    finally:
        await client.close()
        await runner.stop()

    # restart from the state directory: counters carried on, the replay is refused, inventory kept
    host, clock, runner, client = await start(cfg)
    try:
        assert host.status() == before
        assert host.start_time >= before_time(cfg) + 1800
        await client.send(ecs43)                                       # the very same bytes again
        alerts = []
        with pytest.raises(TimeoutError):
            await answer(client, c43, timeout=0.5, alerts=alerts)
        esme = host.premises(0, clock.now()).device("ESME")
        assert esme.state["security_log"][-1]["reason"] == "replayed_counter"
        frame, counter = he.ecs43(esme0)                               # a fresh counter is accepted
        await client.send(frame)
        he.check(await answer(client, counter), esme0, counter, signed=True)
    finally:
        await client.close()
        await runner.stop()


def before_time(cfg):
    return cfg.start


def test_shards_are_disjoint_and_complete(tmp_path):
    cfg = config(tmp_path, premises=30)
    hosts = [FleetHost(cfg.with_overrides(shard=s)) for s in
             (parse_config({"fleet": {"name": "x", "seed": 1, "premises": 1, "shard": f"{k}/3"}}).shard
              for k in range(3))]
    try:
        assert len({h.config.state_file for h in hosts}) == 3
        for i in range(cfg.premises):
            for eui in premises_euis(cfg, i).values():
                owners = []
                for h in hosts:
                    try:
                        h.route(eui)
                        owners.append(h)
                    except Unroutable as e:
                        assert e.reason == "other_shard"
                assert len(owners) == 1 and owners[0].config.shard.index == i % 3
        with pytest.raises(Unroutable):
            hosts[0].route("00DBF1FFFFFFFF02")          # beyond the fleet
        with pytest.raises(Unroutable):
            hosts[0].route("90B3D51FEE010000")          # not a device EUI of the fleet
    finally:
        for h in hosts:
            h.close()


def test_lru_eviction_writes_back_and_reload_is_identical(tmp_path):
    cfg = config(tmp_path, cache=2)
    host = FleetHost(cfg)
    he = HeadEnd(cfg)
    now = host.start_time
    try:
        out = host.handle(he.ecs17a(he.eui(0, "ESME"))[0], now)
        assert [o.kind for o in out] == ["response"]
        saved = host.premises(0, now).state()
        host.handle(he.ecs17a(he.eui(1, "ESME"))[0], now + 1)
        assert host.loaded(0) and host.store.load(0) is None          # not written yet: no commit so far
        host.handle(he.ecs17a(he.eui(2, "ESME"))[0], now + 2)
        assert not host.loaded(0) and host.counters.evictions == 1
        kind, stored, version = host.store.load(0)                    # written back on eviction
        assert stored == saved and kind == cfg.kind_of(0).name and version == 1
        assert host.premises(0, now + 3).state() == saved             # reloaded: the same premises
        assert host.counters.loads == 1 and host.devices_in_memory <= 2 * 5
    finally:
        host.close()


def test_a_premises_written_by_another_process_is_not_overwritten(tmp_path):
    """Two hosts on one shard file (a misconfiguration): the second commit of a premises both loaded, and the
    second creation of a premises both made, write nothing and raise ConcurrentWrite."""
    from firmware_emu.fleet.host import ConcurrentWrite
    cfg = config(tmp_path, han="direct")
    a, b = FleetHost(cfg), FleetHost(cfg)
    he = HeadEnd(cfg)
    now = a.start_time
    try:
        a.handle(he.ecs17a(he.eui(0, "ESME"))[0], now)
        b.handle(he.ecs17a(he.eui(0, "ESME"))[0], now)
        a.commit()
        with pytest.raises(ConcurrentWrite, match="created by someone else"):
            b.commit()
        assert not b.loaded(0) and b.counters.errors.get("concurrent_write") == 1
        kind, stored, version = a.store.load(0)
        assert version == 1
        a.handle(he.ecs17a(he.eui(0, "ESME"))[0], now + 1)
        b.handle(he.ecs17a(he.eui(0, "ESME"))[0], now + 1)     # b reloads version 1
        a.commit()
        with pytest.raises(ConcurrentWrite, match="changed since they were loaded"):
            b.commit()
        assert a.store.load(0)[2] == 2 and a.store.load(0)[1] == a.premises(0, now + 1).state()
    finally:
        a.close()
        b.close()


def test_direct_han_gives_valid_answers(tmp_path):
    cfg = config(tmp_path, han="direct")
    host = FleetHost(cfg)
    he = HeadEnd(cfg)
    try:
        eui = he.eui(4, "ESME")
        frame, counter = he.ecs17a(eui)
        (out,) = host.handle(frame, host.start_time)
        he.check(out.frame, eui, counter)
        assert out.use_case == "ECS17a"
    finally:
        host.close()


def test_lazy_provisioning_of_a_big_fleet(tmp_path):
    cfg = config(tmp_path, premises=100_000)
    t = time.perf_counter()
    host = FleetHost(cfg)
    elapsed = time.perf_counter() - t
    try:
        assert elapsed < 2.0 and host.store.count() == 0
        st = host.status()
        assert st["premises"] == 100_000 and st["premises_materialised"] == 0
        assert st["by_state"]["pending"] == st["devices"]
        # the mix holds: 70 / 25 / 5 %
        counts = cfg.kind_counts()
        assert abs(counts["dual_fuel"] - 70_000) <= 2 and abs(counts["dual_fuel_ppmid"] - 5_000) <= 2
    finally:
        host.close()
    assert fleet_status(cfg)["devices"] == st["devices"]


def test_fleet_keys_are_the_test_pki_scheme(tmp_path):
    cfg = config(tmp_path)
    keys = FleetKeys.from_config(cfg)
    eui = premises_euis(cfg, 3)["ESME"]
    ref = Keystore()
    PkiIssuer.load(cfg.pki_dir / "ca", seed=cfg.seed).issue_device(ref, eui)
    for usage in (Usage.DS, Usage.KA):
        assert keys.keystore.entry(eui, usage).point == ref.entry(eui, usage).point
        assert keys.keystore.certificate(eui, usage) == ref.certificate(eui, usage)
    again = FleetKeys.from_config(cfg, create=False)                  # the head end computes the same
    assert again.keystore.entry(eui, Usage.KA).point == ref.entry(eui, Usage.KA).point
    assert eui in keys.keystore and keys.keystore.is_device(eui)
    assert premises_euis(cfg, 3)["ESME"] not in [e.hex().upper() for e in keys.keystore.euis()]


def test_a_state_dir_refuses_another_configuration(tmp_path):
    cfg = config(tmp_path)
    FleetHost(cfg).close()
    other = parse_config({"fleet": {"name": "t", "seed": 12, "premises": 20, "state_dir": str(tmp_path / "state")},
                          "mix": MIX})
    with pytest.raises(ConfigError, match="seed"):
        FleetHost(other)


BASE = {"fleet": {"name": "t", "seed": 1, "premises": 10}}


@pytest.mark.parametrize("patch, key", [
    ({"fleet": {"name": "t", "premises": 10}}, "fleet.seed"),
    ({"fleet": {"name": "t", "seed": 1, "premises": 0}}, "fleet.premises"),
    ({"fleet": {"name": "t", "seed": 1, "premises": 10, "shard": "3/2"}}, "fleet.shard"),
    ({"fleet": {"name": "t", "seed": 1, "premises": 10, "eui_prefix": "00DB00"}}, "fleet.eui_prefix"),
    ({"mix": [{"share": -1, "devices": ["ESME"]}]}, "mix[0].share"),
    ({"mix": [{"share": 1, "devices": ["ESME", "TOASTER"]}]}, "mix[0].devices[1]"),
    ({"mix": [{"share": 1, "devices": ["ESME"], "profile": "nope"}]}, "mix[0].profile"),
    ({"host": {"cach": 5}}, "host.cach"),
    ({"host": {"cache": 0}}, "host.cache"),
    ({"wan": {"tcp": [{"listen": "127.0.0.1:9", "framing": "xml"}]}}, "wan.tcp[0].framing"),
    ({"wan": {"tcp": [{"listen": "nowhere"}]}}, "wan.tcp[0].listen"),
    ({"time": {"start": "yesterday"}}, "time.start"),
    ({"profiles": {"default": {"ESME": {"mean_kw": "lots"}}}}, "profiles.default.ESME.mean_kw"),
    ({"keys": {"pki": "/does/not/exist"}}, "keys.pki"),
    ({"commissioning": {"mode": "eager"}}, "commissioning.mode"),
])
def test_config_errors_name_the_key(patch, key):
    with pytest.raises(ConfigError) as e:
        parse_config({**BASE, **patch})
    assert e.value.key == key and key in str(e.value)
