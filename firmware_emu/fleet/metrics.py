"""Prometheus metrics of a fleet: commands, errors, alerts, latency and devices, on a registry of its own.

Why a registry per fleet: prometheus-client's global registry refuses a second metric of the same name, so two
fleets (shards in one process, tests) would collide; `FleetMetrics()` makes a fresh `CollectorRegistry` and
every metric lives there. The host calls the recorder methods (plain calls, no I/O, cheap enough for the hot
path); `start_http_server(port, registry)` serves the registry for scraping and `scrape()` renders it.

Label values are bounded: each label keeps at most `max_label_values` distinct values and folds the rest into
`other`, so a flood of odd error reasons cannot grow the registry without limit.

Metrics (names get the `namespace` prefix, default `gbcs_emu`):

- `commands_total{use_case,result}`: commands processed (result e.g. `success`, `rejected`, `error`)
- `errors_total{reason}`: failures by reason
- `alerts_total{alert_code}`: alerts sent, by code (`0x8F53`)
- `command_latency_seconds`: histogram, 0.1 ms … 10 s
- `devices_in_memory`: device objects currently loaded
- `devices_total{state}`: devices per SMI state
"""
from __future__ import annotations

import threading
from typing import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import start_http_server as _start_http_server

__all__ = ["FleetMetrics", "LATENCY_BUCKETS", "OTHER", "start_http_server"]

#: Seconds: 0.1 ms to 10 s, roughly 1-2.5-5 per decade.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0)
OTHER = "other"


class _Bounded:
    """The distinct values one label may take: the first `limit` seen, then `other`."""

    def __init__(self, limit: int):
        self.limit, self._seen, self._lock = limit, set(), threading.Lock()

    def __call__(self, value) -> str:
        value = str(value)
        if value in self._seen:
            return value
        with self._lock:
            if len(self._seen) < self.limit:
                self._seen.add(value)
                return value
        return OTHER


def _alert_label(code) -> str:
    if isinstance(code, int) and not isinstance(code, bool):
        return f"0x{code:04X}"
    return str(code)


class FleetMetrics:
    """The recorder a fleet host calls; owns its `registry`."""

    def __init__(self, registry: CollectorRegistry | None = None, *, namespace: str = "gbcs_emu",
                 max_label_values: int = 512, const_labels: Mapping[str, str] | None = None):
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        # const_labels (e.g. {"shard": "3"}) become extra labels of every metric, so shards scraped into one
        # Prometheus stay apart.
        self._const = dict(const_labels or {})
        extra = tuple(self._const)

        def labels(*names):
            return (*names, *extra)

        self.commands = Counter("commands", "Commands processed, by use case and result",
                                labels("use_case", "result"), namespace=namespace, registry=self.registry)
        self.errors = Counter("errors", "Failures, by reason", labels("reason"), namespace=namespace,
                              registry=self.registry)
        self.alerts = Counter("alerts", "Alerts sent, by alert code", labels("alert_code"), namespace=namespace,
                              registry=self.registry)
        self.latency = Histogram("command_latency_seconds", "Command to response latency", labels(),
                                 namespace=namespace, registry=self.registry, buckets=LATENCY_BUCKETS)
        self.in_memory = Gauge("devices_in_memory", "Device objects loaded in memory", labels(),
                               namespace=namespace, registry=self.registry)
        self.devices = Gauge("devices_total", "Devices per SMI state", labels("state"), namespace=namespace,
                             registry=self.registry)
        self._use_case = _Bounded(max_label_values)
        self._result = _Bounded(64)
        self._reason = _Bounded(max_label_values)
        self._alert = _Bounded(max_label_values)
        self._states: set[str] = set()
        self._latency = self.latency.labels(**self._const) if extra else self.latency
        self._in_memory = self.in_memory.labels(**self._const) if extra else self.in_memory

    def __repr__(self) -> str:
        return f"<FleetMetrics {self._const or ''}>"

    # -- recording (what the host calls) ---------------------------------------------------------------------

    def record_command(self, use_case: str, result: str = "success", seconds: float | None = None) -> None:
        """One command done: its use case, result and (when known) latency in seconds."""
        self.commands.labels(use_case=self._use_case(use_case), result=self._result(result), **self._const).inc()
        if seconds is not None:
            self._latency.observe(max(0.0, float(seconds)))

    def record_latency(self, seconds: float) -> None:
        self._latency.observe(max(0.0, float(seconds)))

    def record_error(self, reason: str, n: int = 1) -> None:
        self.errors.labels(reason=self._reason(reason), **self._const).inc(n)

    def record_alert(self, alert_code: int | str, n: int = 1) -> None:
        """An alert sent; `alert_code` as a number (0x8F53) or its text."""
        self.alerts.labels(alert_code=self._alert(_alert_label(alert_code)), **self._const).inc(n)

    def set_devices_in_memory(self, n: int) -> None:
        self._in_memory.set(n)

    def set_devices_by_state(self, counts: Mapping[str, int]) -> None:
        """Devices per SMI state (e.g. `InventoryStore.status().by_state`); states absent now read 0."""
        counts = {str(getattr(k, "value", k)): v for k, v in counts.items()}
        for state in self._states - set(counts):
            self.devices.labels(state=state, **self._const).set(0)
        for state, n in counts.items():
            self.devices.labels(state=state, **self._const).set(n)
        self._states |= set(counts)

    def observe_inventory(self, inventory) -> None:
        """Refresh `devices_total` from an `InventoryStore` (SQL counts, nothing loaded)."""
        self.set_devices_by_state(inventory.status().by_state)

    # -- reading ---------------------------------------------------------------------------------------------

    def scrape(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)

    def summary(self) -> dict:
        """Totals for an end-of-run table: commands by use case and result, errors by reason, alerts by code,
        latency count/sum and bucket counts, devices by state and in memory (this fleet's samples only)."""
        out: dict = {"commands": {}, "errors": {}, "alerts": {}, "latency": {"count": 0.0, "sum": 0.0,
                                                                             "buckets": {}},
                     "devices": {}, "devices_in_memory": 0.0}
        for metric in self.registry.collect():
            for s in metric.samples:
                if any(s.labels.get(k) != v for k, v in self._const.items()):
                    continue
                name = s.name.rsplit("_", 1)[0] if s.name.endswith("_total") else s.name
                if name.endswith("commands"):
                    out["commands"][(s.labels["use_case"], s.labels["result"])] = s.value
                elif name.endswith("errors"):
                    out["errors"][s.labels["reason"]] = s.value
                elif name.endswith("alerts"):
                    out["alerts"][s.labels["alert_code"]] = s.value
                elif s.name.endswith("command_latency_seconds_count"):
                    out["latency"]["count"] = s.value
                elif s.name.endswith("command_latency_seconds_sum"):
                    out["latency"]["sum"] = s.value
                elif s.name.endswith("command_latency_seconds_bucket"):
                    out["latency"]["buckets"][s.labels["le"]] = s.value
                elif name.endswith("devices") and "state" in s.labels:
                    out["devices"][s.labels["state"]] = s.value
                elif s.name.endswith("devices_in_memory"):
                    out["devices_in_memory"] = s.value
        return out

    def value(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        """One sample's value by full sample name (e.g. `gbcs_emu_commands_total`), for summaries and tests."""
        want = {**self._const, **(labels or {})}
        return self.registry.get_sample_value(name, want)


def start_http_server(port: int, registry: CollectorRegistry | FleetMetrics, addr: str = "127.0.0.1"):
    """Serve `registry` (or a FleetMetrics' registry) on http://addr:port/metrics in a daemon thread.
    Returns (server, thread); `server.shutdown()` stops it. Binds to localhost unless told otherwise."""
    if isinstance(registry, FleetMetrics):
        registry = registry.registry
    return _start_http_server(port, addr=addr, registry=registry)
