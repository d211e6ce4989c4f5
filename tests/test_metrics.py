"""Fleet metrics: values read back from the scraped Prometheus text, registries that do not collide, bounded
labels, the HTTP endpoint."""
from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from firmware_emu.fleet.inventory import InventoryStore
from firmware_emu.fleet.metrics import LATENCY_BUCKETS, OTHER, FleetMetrics, start_http_server


def samples(metrics: FleetMetrics | bytes) -> dict[tuple, float]:
    """{(sample name, sorted label items): value} parsed from the exposition text."""
    text = (metrics.scrape() if isinstance(metrics, FleetMetrics) else metrics).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_recorded_values_appear_in_the_scrape():
    m = FleetMetrics()
    for _ in range(3):
        m.record_command("ECS17a", "success", 0.0004)
    m.record_command("ECS43", "rejected", 0.02)
    m.record_command("ECS43", "success")                 # latency unknown: counted, not observed
    m.record_error("bad_mac")
    m.record_error("bad_mac", 2)
    m.record_alert(0x8F53)
    m.record_alert("0x8F53")
    m.set_devices_in_memory(42)
    m.set_devices_by_state({"commissioned": 7, "pending": 2})
    got = samples(m)
    assert got[("gbcs_emu_commands_total", (("result", "success"), ("use_case", "ECS17a")))] == 3
    assert got[("gbcs_emu_commands_total", (("result", "rejected"), ("use_case", "ECS43")))] == 1
    assert got[("gbcs_emu_commands_total", (("result", "success"), ("use_case", "ECS43")))] == 1
    assert got[("gbcs_emu_errors_total", (("reason", "bad_mac"),))] == 3
    assert got[("gbcs_emu_alerts_total", (("alert_code", "0x8F53"),))] == 2
    assert got[("gbcs_emu_devices_in_memory", ())] == 42
    assert got[("gbcs_emu_devices_total", (("state", "commissioned"),))] == 7
    assert got[("gbcs_emu_command_latency_seconds_count", ())] == 4
    assert got[("gbcs_emu_command_latency_seconds_sum", ())] == pytest.approx(3 * 0.0004 + 0.02)
    # cumulative buckets: 0.4 ms falls in le=0.0005, 20 ms in le=0.025
    assert got[("gbcs_emu_command_latency_seconds_bucket", (("le", "0.00025"),))] == 0
    assert got[("gbcs_emu_command_latency_seconds_bucket", (("le", "0.0005"),))] == 3
    assert got[("gbcs_emu_command_latency_seconds_bucket", (("le", "0.01"),))] == 3
    assert got[("gbcs_emu_command_latency_seconds_bucket", (("le", "0.025"),))] == 4
    assert got[("gbcs_emu_command_latency_seconds_bucket", (("le", "+Inf"),))] == 4
    summary = m.summary()
    assert summary["commands"][("ECS17a", "success")] == 3 and summary["errors"] == {"bad_mac": 3}
    assert summary["alerts"] == {"0x8F53": 2} and summary["latency"]["count"] == 4


def test_latency_buckets_span_a_tenth_of_a_millisecond_to_ten_seconds():
    assert LATENCY_BUCKETS[0] == 0.0001 and LATENCY_BUCKETS[-1] == 10.0
    assert list(LATENCY_BUCKETS) == sorted(LATENCY_BUCKETS)


def test_states_that_empty_read_zero():
    m = FleetMetrics()
    m.set_devices_by_state({"pending": 5})
    m.set_devices_by_state({"whitelisted": 5})
    got = samples(m)
    assert got[("gbcs_emu_devices_total", (("state", "pending"),))] == 0
    assert got[("gbcs_emu_devices_total", (("state", "whitelisted"),))] == 5


def test_devices_total_from_the_inventory():
    m = FleetMetrics()
    with InventoryStore(":memory:") as inv:
        inv.enrol_many([(f"00DB00000000{i:04X}", "ESME") for i in range(4)], 0.0)
        inv.apply("00DB000000000000", "ccs01", 1.0)
        m.observe_inventory(inv)
    got = samples(m)
    assert got[("gbcs_emu_devices_total", (("state", "pending"),))] == 3
    assert got[("gbcs_emu_devices_total", (("state", "whitelisted"),))] == 1
    assert got[("gbcs_emu_devices_total", (("state", "withdrawn"),))] == 0


def test_two_fleets_do_not_collide_and_the_global_registry_stays_clean():
    from prometheus_client import REGISTRY
    a, b = FleetMetrics(), FleetMetrics()
    a.record_command("ECS17a", "success", 0.001)
    assert a.value("gbcs_emu_commands_total", {"use_case": "ECS17a", "result": "success"}) == 1
    assert b.value("gbcs_emu_commands_total", {"use_case": "ECS17a", "result": "success"}) is None
    assert REGISTRY.get_sample_value("gbcs_emu_commands_total", {"use_case": "ECS17a", "result": "success"}) is None


def test_shard_labels_keep_shards_apart():
    m = FleetMetrics(const_labels={"shard": "2"})
    m.record_command("ECS17a", "success", 0.001)
    m.record_alert(0x8F30)
    got = samples(m)
    assert got[("gbcs_emu_commands_total", (("result", "success"), ("shard", "2"), ("use_case", "ECS17a")))] == 1
    assert got[("gbcs_emu_command_latency_seconds_count", (("shard", "2"),))] == 1
    assert m.value("gbcs_emu_alerts_total", {"alert_code": "0x8F30"}) == 1
    assert m.summary()["alerts"] == {"0x8F30": 1}


def test_label_values_are_bounded():
    m = FleetMetrics(max_label_values=3)
    for i in range(10):
        m.record_error(f"reason-{i}")
    got = samples(m)
    reasons = {dict(k[1])["reason"]: v for k, v in got.items() if k[0] == "gbcs_emu_errors_total"}
    assert reasons == {"reason-0": 1, "reason-1": 1, "reason-2": 1, OTHER: 7}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_http_endpoint_serves_the_fleet_registry():
    m = FleetMetrics()
    m.record_command("ECS17a", "success", 0.003)
    port = _free_port()
    server, thread = start_http_server(port, m)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            body = resp.read()
        got = samples(body)
        assert got[("gbcs_emu_commands_total", (("result", "success"), ("use_case", "ECS17a")))] == 1
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
