"""`gbcs-emu fleet run|status|export|export-keys`: exit codes, output contracts, errors as one line; and two
shards of one configuration in one process against a real mosquitto serving disjoint devices."""
from __future__ import annotations

import asyncio
import csv
import io
import json

import pytest
from click.testing import CliRunner

from firmware_emu.cli import main
from firmware_emu.fleet.config import load_config, parse_shard
from firmware_emu.fleet.host import FleetHost, FleetRunner
from firmware_emu.fleet.keys import premises_euis
from firmware_emu.fleet.mqtt import MqttHeadEnd
from protocols.gbcs.message import decode
from protocols.security.keystore import Keystore

import mqtt_broker as _broker
from test_fleet_host import HeadEnd

# the broker fixture (tests/mqtt_broker.py), imported rather than registered in conftest
mqtt_broker = _broker.mqtt_broker
MOSQUITTO = _broker.MOSQUITTO

CONFIG = """
[fleet]
name = "cli"
seed = 3
premises = 12
state_dir = "state"

[time]
start = "2025-01-01T00:00:00Z"
speed = 60.0

[[mix]]
name = "dual_fuel"
share = 0.75
devices = ["ESME", "GSME"]

[[mix]]
name = "electricity_only"
share = 0.25
devices = ["ESME"]

[commissioning]
mode = "background"
rate = 1000

[[wan.tcp]]
listen = "127.0.0.1:0"
"""


@pytest.fixture
def config_file(tmp_path):
    p = tmp_path / "fleet.toml"
    p.write_text(CONFIG)
    return p


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_status_of_a_fleet_never_run_is_all_pending(config_file):
    r = run("fleet", "status", config_file, "--json")
    assert r.exit_code == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["premises"] == 12 and st["premises_materialised"] == 0 and st["shards"] == 0
    assert st["by_state"]["pending"] == st["devices"] == sum(st["by_type"][t]["pending"] for t in st["by_type"])


def test_run_commissions_in_the_background_then_status_and_export(config_file, tmp_path):
    r = run("fleet", "run", config_file, "--duration", "1.5")
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["materialised"] == 12
    assert "ready in" in r.stderr
    r = run("fleet", "status", config_file, "--json")
    st = json.loads(r.stdout)
    assert st["premises_materialised"] == 12 and st["by_state"]["commissioned"] == st["devices"]
    r = run("fleet", "status", config_file)
    assert r.exit_code == 0 and "commissioned" in r.stdout and "ESME" in r.stdout
    r = run("fleet", "export", config_file, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == st["devices"] and {row["state"] for row in rows} == {"commissioned"}
    assert r.stderr.strip() == f"{st['devices']} devices"
    out = tmp_path / "inv.json"
    r = run("fleet", "export", config_file, "--format", "json", "-o", out)
    doc = json.loads(out.read_text())
    assert doc["format"] == "gbcs-emu inventory 1" and len(doc["devices"]) == st["devices"]
    # a second run carries on from the state directory (nothing provisioned again)
    r = run("fleet", "run", config_file, "--duration", "0.3")
    assert r.exit_code == 0 and json.loads(r.stdout.strip().splitlines()[-1])["materialised"] == 0


def test_export_keys_writes_a_keystore(config_file, tmp_path):
    r = run("fleet", "export-keys", config_file, tmp_path / "keys", "--premises", "0-1")
    assert r.exit_code == 0, r.stderr
    ks = Keystore(tmp_path / "keys")
    cfg = load_config(config_file)
    for i in (0, 1):
        for eui in premises_euis(cfg, i).values():
            assert ks.ds_private(eui) is not None and ks.certificate(eui, "ka") is not None


def test_errors_are_one_line(config_file, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(CONFIG.replace("premises = 12", "premises = -1"))
    r = run("fleet", "status", bad)
    assert r.exit_code == 2 and r.stderr.strip() == "error: fleet.premises: must be >= 1, got -1"
    r = run("fleet", "run", config_file, "--shard", "2/2", "--duration", "0.1")
    assert r.exit_code == 2 and "--shard" in r.stderr
    r = run("fleet", "export-keys", config_file, tmp_path / "k", "--premises", "5-99")
    assert r.exit_code == 2


@pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto not installed (scripts/test installs it)")
async def test_two_shards_over_mqtt_serve_disjoint_devices(config_file, mqtt_broker):
    text = CONFIG.replace('[[wan.tcp]]\nlisten = "127.0.0.1:0"',
                          f'[[wan.mqtt]]\nbroker = "127.0.0.1:{mqtt_broker.port}"\nprefix = "fleet-test"')
    text = text.replace('mode = "background"', 'mode = "lazy"')
    config_file.write_text(text)
    base = load_config(config_file)
    runners = []
    for k in range(2):
        host = FleetHost(base.with_overrides(shard=parse_shard(f"{k}/2")))
        runner = FleetRunner(host, metrics_server=False)
        await runner.start()
        runners.append(runner)
    he = HeadEnd(base)
    head = MqttHeadEnd("127.0.0.1", mqtt_broker.port, prefix="fleet-test")
    await head.start()
    try:
        for r in runners:
            await r.mqtt[0].wait_connected(5)
        await head.wait_connected(5)
        await asyncio.sleep(0.3)                                  # subscriptions settle
        for i in range(4):
            hub, esme = premises_euis(base, i)["CHF"], premises_euis(base, i)["ESME"]
            frame, counter = he.ecs17a(esme)
            resp = await head.request(hub, frame, timeout=5)
            assert decode(resp)["grouping_header"]["originator_counter"] == counter
            he.check(resp, esme, counter)
        served = [sorted(r.host._lru) for r in runners]
        assert served == [[0, 2], [1, 3]]
    finally:
        await head.close()
        for r in runners:
            await r.stop()
