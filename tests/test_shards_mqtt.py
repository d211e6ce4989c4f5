"""Beyond one machine, proved on one: two `gbcs-emu fleet run` processes with one configuration, shards 0/2 and
1/2, against a real mosquitto. A head end on the broker sends commands to devices of both shards and gets each
answer exactly once, from the process that owns the premises (its counters and its shard file say so)."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from firmware_emu.fleet.config import load_config
from firmware_emu.fleet.host import PremisesStore
from firmware_emu.fleet.keys import FleetKeys, premises_euis
from firmware_emu.fleet.mqtt import MqttHeadEnd
from hil.remote_party import CounterStore, RemoteParty
from hil.verify import VALID, make_verifier
from protocols.gbcs.message import decode
from protocols.security.keystore import Role

import mqtt_broker as _broker

mqtt_broker = _broker.mqtt_broker

ROOT = Path(__file__).resolve().parents[1]
PREMISES = 6

CONFIG = """
[fleet]
name = "shards"
seed = 31
premises = {premises}
state_dir = "state"

[time]
start = "2025-01-01T00:00:00Z"
speed = 1.0

[[mix]]
name = "dual_fuel"
share = 0.5
devices = ["ESME", "GSME"]

[[mix]]
name = "electricity_only"
share = 0.5
devices = ["ESME"]

[[wan.mqtt]]
broker = "127.0.0.1:{port}"
prefix = "gbcs"

[host]
han = "direct"
durability = "normal"
"""


def start_shard(path: Path, k: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "firmware_emu.cli", "fleet", "run", str(path), "--shard",
                             f"{k}/2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=path.parent,
                            text=True)


def wait_ready(proc: subprocess.Popen, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        lines.append(line)
        if "ready in" in line:
            return line
    raise AssertionError(f"shard did not get ready: {''.join(lines)}")


def stop(proc: subprocess.Popen) -> dict:
    """SIGTERM: a clean stop prints one JSON summary line."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"shard did not stop on SIGTERM: {err}")
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


async def test_two_shard_processes_serve_disjoint_devices(tmp_path, mqtt_broker):
    path = tmp_path / "fleet.toml"
    path.write_text(CONFIG.format(premises=PREMISES, port=mqtt_broker.port))
    cfg = load_config(path)
    keys = FleetKeys.from_config(cfg)                       # the PKI from the seed, before the shards start
    procs = [start_shard(path, 0), start_shard(path, 1)]
    summaries = []
    try:
        for p in procs:
            line = wait_ready(p)
            assert "premises" in line
        ks = keys.keystore
        no = RemoteParty(ks, keys.organisation(Role.NETWORK_OPERATOR), Role.NETWORK_OPERATOR,
                         counter_store=CounterStore(None, initial_counter=7000))
        verify = make_verifier(ks)
        hubs = {i: premises_euis(cfg, i)["CHF"] for i in range(PREMISES)}
        head = MqttHeadEnd("127.0.0.1", mqtt_broker.port, hubs=hubs.values(), identifier="head-end-test")
        await head.start()
        await head.wait_connected(10)
        await asyncio.sleep(0.5)                             # the shards' subscriptions are in place
        sent = {}
        spec = {"kind": "get", "descriptor": {"class_id": 3, "instance_id": "1-0:1.8.0.255", "attribute_id": 2},
                "access_selection": None}
        for round_ in range(2):
            for i in range(PREMISES):
                esme = premises_euis(cfg, i)["ESME"]
                frame = no.build({"grouping_header": {"recipient": esme,
                                                      "other_information": {"message_code": "0x0026"}},
                                  "payload": {"dlms": {"access_request": {
                                      "long_invoke_id_and_priority": "20000000", "date_time": "",
                                      "request_specifications": [spec],
                                      "data": [{"type": "null-data", "value": None}]}}}})
                sent[(esme, no.last_counter)] = i
                await head.publish(hubs[i], frame)
        answers: dict[tuple[str, int], int] = {}
        deadline = asyncio.get_running_loop().time() + 20
        while len(answers) < len(sent) and asyncio.get_running_loop().time() < deadline:
            try:
                hub, frame = await head.recv(timeout=1.0)
            except asyncio.TimeoutError:
                continue
            msg = decode(frame)
            gh = msg["grouping_header"]
            if gh["cra_flag"] != "response":
                continue
            key = (gh["originator"].upper(), gh["originator_counter"])
            assert key in sent, key
            assert hub == hubs[sent[key]]                   # up the topic of the device's own hub
            assert verify(frame, msg)["mac"] == VALID
            answers[key] = answers.get(key, 0) + 1
        # nothing more comes: every answer exactly once
        end = asyncio.get_running_loop().time() + 1.0
        while asyncio.get_running_loop().time() < end:
            try:
                hub, frame = await head.recv(timeout=0.2)
            except asyncio.TimeoutError:
                continue
            gh = decode(frame)["grouping_header"]
            if gh["cra_flag"] == "response":
                key = (gh["originator"].upper(), gh["originator_counter"])
                answers[key] = answers.get(key, 0) + 1
        await head.close()
        assert set(answers) == set(sent) and set(answers.values()) == {1}
    finally:
        for p in procs:
            summaries.append(stop(p))
    # each process answered exactly its shard's commands, and stored exactly its shard's premises
    for k, s in enumerate(summaries):
        mine = sum(1 for i in sent.values() if i % 2 == k)
        assert s["responses"] == mine and s["frames_in"] == mine, s
        assert not s["errors"].get("other_shard") and not s["errors"].get("handler"), s
        store = PremisesStore(cfg.state_dir / f"shard-{k}-of-2.sqlite")
        try:
            assert sorted(store.indices()) == [i for i in range(PREMISES) if i % 2 == k]
        finally:
            store.close()



# ------------------------------------------------------------------------------------------------ deploy/

DEPLOY = ROOT / "deploy"


def _yaml_documents(text: str) -> list[list[str]]:
    """A tiny structural check of the YAML subset the manifests use (PyYAML is not a dependency): no tabs,
    two-space indentation, every line a `key: value`, a `- item`, a comment or inside a `|` block scalar."""
    docs, lines, block = [], [], None
    for n, line in enumerate(text.splitlines(), 1):
        assert "\t" not in line, f"line {n}: tab"
        if line.strip() == "---":
            docs.append(lines)
            lines, block = [], None
            continue
        if not line.strip() or line.lstrip().startswith("#"):
            lines.append(line)
            continue
        indent = len(line) - len(line.lstrip(" "))
        if block is not None and indent > block:
            lines.append(line)
            continue
        block = None
        assert indent % 2 == 0, f"line {n}: odd indentation: {line!r}"
        body = line.strip()
        if body.startswith("- "):
            body = body[2:]
        if ":" in body.split("#")[0] or body.startswith(("{", "[", '"')):
            key, _, value = body.partition(":")
            if value.split("#")[0].strip() in ("|", ">", "|-", ">-"):
                block = indent
        else:
            assert line.strip().startswith("- "), f"line {n}: neither a mapping nor a list item: {line!r}"
        lines.append(line)
    docs.append(lines)
    return [d for d in docs if any(x.strip() and not x.lstrip().startswith("#") for x in d)]


def _block(text: str, key: str) -> str:
    """The content of the `key: |` block scalar."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.strip() == f"{key}: |")
    indent = len(lines[start]) - len(lines[start].lstrip()) + 2
    out = []
    for ln in lines[start + 1:]:
        if ln.strip() and len(ln) - len(ln.lstrip()) < indent:
            break
        out.append(ln[indent:])
    return "\n".join(out) + "\n"


def test_deploy_manifests_are_well_formed():
    kinds = []
    for f in sorted(DEPLOY.glob("*.yaml")):
        text = f.read_text()
        for doc in _yaml_documents(text):
            body = "\n".join(doc)
            assert "apiVersion:" in body and "\nkind:" in "\n" + body and "metadata:" in body, f
            kinds.append(next(ln.split(":", 1)[1].strip() for ln in doc if ln.startswith("kind:")))
        try:
            import yaml
        except ImportError:
            continue
        for d in yaml.safe_load_all(text):
            assert d["apiVersion"] and d["kind"] and d["metadata"]["name"]
    assert sorted(kinds) == ["ConfigMap", "ConfigMap", "Deployment", "Job", "Service"]
    job = (DEPLOY / "fleet-job.yaml").read_text()
    assert "completionMode: Indexed" in job and "--shard ${JOB_COMPLETION_INDEX}/" in job
    k = {ln.split(":")[1].split("#")[0].strip() for ln in job.splitlines()
         if ln.strip().startswith(("completions:", "parallelism:"))}
    assert k == {job.split("${JOB_COMPLETION_INDEX}/")[1].split('"')[0]}      # the same K everywhere
    # the ConfigMap's fleet TOML is a valid fleet configuration for the shards
    from firmware_emu.fleet.config import parse_config, parse_shard
    import tomllib
    cfg = parse_config(tomllib.loads(_block((DEPLOY / "configmap.yaml").read_text(), "fleet.toml")))
    assert cfg.mqtt and cfg.mqtt[0].host.startswith("mosquitto.")
    assert cfg.with_overrides(shard=parse_shard(f"7/{k.pop()}")).shard.index == 7
    assert "pip install ." in (DEPLOY / "Dockerfile").read_text() and "python:3.11-slim" in \
        (DEPLOY / "Dockerfile").read_text()
