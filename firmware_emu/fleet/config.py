"""Fleet configuration: one TOML file says which premises exist, how they behave and where they are served.

Theory of operation
-------------------
`load_config(path)` reads the TOML, checks every key (unknown keys are errors too, so a typo never silently
falls back to a default) and returns a frozen `FleetConfig`. Every problem raises `ConfigError` naming the key
(`mix[2].share`, `wan.tcp[0].framing`...). Paths are relative to the configuration file.

Everything about a premises follows from the configuration and its index `i` (0 ≤ i < premises): its kind
(`kind_of(i)`, a low-discrepancy draw from the seed, so the shares hold for any prefix of the fleet and per
shard), its devices (`devices_of(i)`), their profiles (`profiles_for(kind)`), their EUIs and keys
(`fleet.keys`). Nothing per premises is stored until a premises is first needed. The format (docs/fleet.md)::

    [fleet]       name, seed, premises, state_dir, shard = "k/K"
    [time]        start = "2025-01-01T00:00:00Z" | "now", speed
    [keys]        pki = "DIR" (a `gbcs-emu keys init` keystore; default: made from the seed in <state_dir>/pki)
    [[mix]]       name, share, devices = ["ESME", "GSME", "PPMID"...], gpf (default: with a GSME), profile
    [profiles.<set>.<DEVICE TYPE>]   device profile keys (mean_kw, twin, prepayment = {...}, wake_interval...)
    [han]         loss, latency
    [commissioning] mode = "lazy" | "background", rate (premises per second in the background),
                  method = "protocol" | "installer" (fleet/template.py), template_max_age (simulated s)
    [[wan.tcp]]   listen = "host:port", framing = "gfi" | "lencrc"
    [[wan.mqtt]]  broker = "host:port", prefix
    [metrics]     port, listen
    [host]        cache, batch, batch_window_ms, queue, compress, durability, eager_han, han_horizon, timers,
                  timer_interval, timer_batch, pending, key_cache, han = "simulated" | "direct"
"""
from __future__ import annotations

import calendar
import math
import re
import time
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from protocols.errors import GbcsEmuError

__all__ = [
    "ConfigError", "FleetConfig", "MixEntry", "TcpListen", "MqttBroker", "HostTuning", "Shard", "load_config",
    "parse_config", "parse_shard", "DEVICE_SLOTS", "HAN_DEVICE_TYPES",
]

#: Device type → slot (the last byte of its EUI): fixed, so an EUI names its premises and its role at once.
DEVICE_SLOTS = {"CHF": 0, "GPF": 1, "ESME": 2, "GSME": 3, "PPMID": 4, "HCALCS": 5}
HAN_DEVICE_TYPES = ("ESME", "GSME", "PPMID", "HCALCS")
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
_KIND_COUNTS: dict[tuple, dict[str, int]] = {}    # FleetConfig.kind_counts, per (mix, range)
_FRAMINGS = ("gfi", "lencrc", "binary")
_MODES = ("lazy", "background")
_TIMERS = ("needed", "all")
_DURABILITY = ("full", "normal")


class ConfigError(GbcsEmuError):
    """A fleet configuration that cannot be used; `key` names the offending key (dotted path)."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count`: the premises i with i % count == index."""

    index: int = 0
    count: int = 1

    def owns(self, i: int) -> bool:
        return i % self.count == self.index

    def premises(self, total: int) -> range:
        return range(self.index, total, self.count)

    def size(self, total: int) -> int:
        return len(self.premises(total))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str, key: str = "fleet.shard") -> Shard:
    """`"k/K"` with 0 ≤ k < K."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m:
        raise ConfigError(key, f"expected \"k/K\" (e.g. \"0/4\"), got {text!r}")
    k, n = int(m[1]), int(m[2])
    if n < 1 or not 0 <= k < n:
        raise ConfigError(key, f"need 0 <= k < K, got {k}/{n}")
    return Shard(k, n)


@dataclass(frozen=True)
class MixEntry:
    """One kind of premises: its share of the fleet, its HAN devices and the profile set they use."""

    name: str
    share: float
    devices: tuple[str, ...]
    gpf: bool
    profile: str = "default"

    @property
    def hub(self) -> tuple[str, ...]:
        return ("CHF", "GPF") if self.gpf else ("CHF",)

    @property
    def device_types(self) -> tuple[str, ...]:
        """Every device of the premises: hub functions first, then the HAN devices."""
        return self.hub + self.devices


@dataclass(frozen=True)
class TcpListen:
    host: str
    port: int
    framing: str = "gfi"


@dataclass(frozen=True)
class MqttBroker:
    host: str
    port: int = 1883
    prefix: str = "gbcs"


@dataclass(frozen=True)
class HostTuning:
    """How the host trades memory, latency and durability (docs/fleet.md, "Scale design")."""

    cache: int = 10_000               # premises kept loaded (LRU)
    batch: int = 256                  # frames handled per group commit at most
    batch_window_ms: float = 0.0      # wait this long for more frames before a commit (0: take what is queued)
    queue: int = 10_000               # inbound frames waiting (bounded: the WAN is held back beyond)
    compress: bool = True             # zlib the premises JSON in SQLite
    durability: str = "full"          # SQLite synchronous: full (power-loss safe) or normal (kill -9 safe)
    eager_han: bool = True            # run a premises' HAN traffic at once after a frame (its clock runs ahead)
    han_horizon: float = 5.0          # ... by at most this many simulated seconds
    timers: str = "needed"            # needed: idle GSME wakes are caught up on the next load; all: every wake
    timer_interval: float = 0.05      # wall seconds between timer sweeps
    timer_batch: int = 500            # premises woken per sweep at most
    pending: int = 100_000            # commands awaiting a late answer remembered (origin, latency)
    key_cache: int = 0                # device key entries kept (0: 4 per cached premises)
    han: str = "simulated"            # simulated: every HAN frame; direct: always-on devices skip the HAN
    gc: str = "default"               # default: Python's collector as it is; tuned: the runner freezes start-up
                                      # objects and collects less often (cheaper per command, but cyclic
                                      # garbage, e.g. the simulated HAN's parsed frames, then piles up between
                                      # rare full collections; use it for short benchmarks only)


@dataclass(frozen=True)
class FleetConfig:
    """A validated fleet configuration (module docstring)."""

    name: str
    seed: int
    premises: int
    state_dir: Path
    shard: Shard = Shard()
    start: float | None = None        # None: "now" (wall clock at first run)
    speed: float = 1.0
    pki: Path | None = None
    eui_prefix: bytes = bytes.fromhex("00DBF1")
    mix: tuple[MixEntry, ...] = ()
    profiles: Mapping[str, Mapping[str, dict]] = field(default_factory=dict)
    han_loss: float = 0.0
    han_latency: float = 0.005
    commissioning: str = "lazy"
    commissioning_rate: float = 100.0
    commissioning_method: str = "protocol"      # protocol | installer (fleet/template.py)
    template_max_age: float = 3600.0
    tcp: tuple[TcpListen, ...] = ()
    mqtt: tuple[MqttBroker, ...] = ()
    metrics_port: int | None = None
    metrics_listen: str = "127.0.0.1"
    host: HostTuning = HostTuning()
    source: Path | None = None

    # -- the premises ------------------------------------------------------------------------------------------

    def _u(self, i: int) -> float:
        """A low-discrepancy uniform draw for premises i (Weyl sequence offset by the seed)."""
        offset = ((self.seed * 0x9E3779B97F4A7C15) % (1 << 64)) / float(1 << 64)
        return (offset + i * _GOLDEN) % 1.0

    def kind_of(self, i: int) -> MixEntry:
        """The kind of premises i (module docstring)."""
        if not 0 <= i < self.premises:
            raise ConfigError("fleet.premises", f"premises index {i} outside 0..{self.premises - 1}")
        u, acc = self._u(i), 0.0
        total = sum(m.share for m in self.mix)
        for m in self.mix:
            acc += m.share / total
            if u < acc:
                return m
        return self.mix[-1]

    def devices_of(self, i: int) -> tuple[str, ...]:
        return self.kind_of(i).device_types

    def profiles_for(self, kind: MixEntry) -> dict[str, dict]:
        """Device type → profile for a kind of premises: the `default` set, overlaid by the kind's set, with the
        fleet seed (the consumption model's) unless the profile gives one."""
        out: dict[str, dict] = {}
        for set_name in ("default", kind.profile):
            for dtype, prof in (self.profiles.get(set_name) or {}).items():
                out.setdefault(dtype, {}).update(prof)
        for dtype in kind.device_types:
            out.setdefault(dtype, {}).setdefault("seed", self.seed)
        return out

    def kind_counts(self, indices: range | None = None) -> dict[str, int]:
        """How many premises of each kind among `indices` (default: this shard's). They follow from the seed and
        the mix alone, so they are counted once per range (a million premises take a second; the fleet's gauges
        ask every few seconds)."""
        rng = indices if indices is not None else self.shard.premises(self.premises)
        key = (self.seed, self.premises, tuple((m.name, m.share) for m in self.mix), rng.start, rng.stop, rng.step)
        got = _KIND_COUNTS.get(key)
        if got is None:
            got = {m.name: 0 for m in self.mix}
            for i in rng:
                got[self.kind_of(i).name] += 1
            if len(_KIND_COUNTS) >= 64:
                _KIND_COUNTS.clear()
            _KIND_COUNTS[key] = got
        return dict(got)

    def with_overrides(self, *, shard: Shard | None = None, speed: float | None = None,
                       state_dir: Path | None = None) -> "FleetConfig":
        """The command line wins over the file."""
        kw: dict[str, Any] = {}
        if shard is not None:
            kw["shard"] = shard
        if speed is not None:
            if not (speed >= 0 and math.isfinite(speed)):
                raise ConfigError("--speed", f"must be finite and >= 0, got {speed!r}")
            kw["speed"] = float(speed)
        if state_dir is not None:
            kw["state_dir"] = Path(state_dir)
        return replace(self, **kw)

    @property
    def state_file(self) -> Path:
        """This shard's SQLite file (premises, timers, inventory)."""
        return self.state_dir / f"shard-{self.shard.index}-of-{self.shard.count}.sqlite"

    @property
    def pki_dir(self) -> Path:
        return self.pki if self.pki is not None else self.state_dir / "pki"


# ------------------------------------------------------------------------------------------------ reading

def load_config(path: str | Path) -> FleetConfig:
    """Read and validate a fleet TOML file (ConfigError naming the key on any problem)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError("", f"cannot read {path}: {e.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("", f"{path} is not valid TOML: {e}") from None
    return parse_config(data, base=path.parent, source=path)


class _Section:
    """One TOML table being read: typed getters naming the key; `done()` refuses keys nobody read."""

    def __init__(self, data, key: str):
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(key, f"must be a table, got {type(data).__name__}")
        self.data, self.key, self.seen = data, key, set()

    def _k(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name

    def get(self, name: str, kinds, default=None, *, required: bool = False):
        self.seen.add(name)
        if name not in self.data:
            if required:
                raise ConfigError(self._k(name), "is required")
            return default
        v = self.data[name]
        if isinstance(v, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
            raise ConfigError(self._k(name), f"must be {_kind_name(kinds)}, got a boolean")
        if not isinstance(v, kinds):
            raise ConfigError(self._k(name), f"must be {_kind_name(kinds)}, got {type(v).__name__} {v!r}")
        return v

    def number(self, name: str, default=None, *, lo=None, hi=None, integer=False, required=False,
               lo_open=False):
        v = self.get(name, int if integer else (int, float), default, required=required)
        if v is None:
            return None
        if not integer and not math.isfinite(v):
            raise ConfigError(self._k(name), f"must be finite, got {v!r}")
        if lo is not None and (v < lo or (lo_open and v == lo)):
            raise ConfigError(self._k(name), f"must be {'>' if lo_open else '>='} {lo}, got {v!r}")
        if hi is not None and v > hi:
            raise ConfigError(self._k(name), f"must be <= {hi}, got {v!r}")
        return v

    def choice(self, name: str, choices, default):
        v = self.get(name, str, default)
        if v not in choices:
            raise ConfigError(self._k(name), f"must be one of {', '.join(choices)}, got {v!r}")
        return v

    def done(self) -> None:
        extra = sorted(set(self.data) - self.seen)
        if extra:
            raise ConfigError(self._k(extra[0]), "unknown key (a typo?)")


def _kind_name(kinds) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list",
             dict: "a table"}
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _address(text: str, key: str, default_port: int | None = None) -> tuple[str, int]:
    host, sep, port = str(text).rpartition(":")
    if not sep:
        host, port = port, ""
    if not port:
        if default_port is None:
            raise ConfigError(key, f"expected \"host:port\", got {text!r}")
        port = str(default_port)
    try:
        n = int(port)
    except ValueError:
        raise ConfigError(key, f"port must be a number, got {port!r}") from None
    if not 0 <= n <= 65535:
        raise ConfigError(key, f"port must be 0..65535, got {n}")
    return host.strip("[]") or "127.0.0.1", n


def _time(value, key: str) -> float | None:
    if isinstance(value, bool):
        raise ConfigError(key, "must be an ISO date-time, \"now\" or Unix seconds")
    if isinstance(value, (int, float)):
        return float(value)
    if hasattr(value, "timetuple"):           # TOML offset date-time
        if getattr(value, "tzinfo", None) is None:
            raise ConfigError(key, "needs a time zone (e.g. 2025-01-01T00:00:00Z)")
        return value.timestamp()
    if isinstance(value, str):
        if value.strip().lower() == "now":
            return None
        m = re.fullmatch(r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)Z", value.strip())
        if m:
            return float(calendar.timegm(tuple(int(x) for x in m.groups()) + (0, 0, 0)))
    raise ConfigError(key, f"must be an ISO UTC date-time (2025-01-01T00:00:00Z), \"now\" or Unix seconds; "
                           f"got {value!r}")


def parse_config(data: Mapping, *, base: Path = Path("."), source: Path | None = None) -> FleetConfig:
    """A `FleetConfig` from already-parsed TOML (module docstring)."""
    from firmware_emu import devices as device_types

    top = _Section(dict(data), "")
    fleet = _Section(top.get("fleet", dict, required=True), "fleet")
    name = fleet.get("name", str, required=True)
    seed = fleet.number("seed", required=True, integer=True, lo=0)
    premises = fleet.number("premises", required=True, integer=True, lo=1, hi=0xFFFFFFFF)
    state_dir = Path(fleet.get("state_dir", str, f"state/{name}"))
    state_dir = state_dir if state_dir.is_absolute() else base / state_dir
    shard = parse_shard(fleet.get("shard", str, "0/1"))
    prefix_text = fleet.get("eui_prefix", str, "00DBF1")
    if not re.fullmatch(r"[0-9A-Fa-f]{6}", prefix_text):
        raise ConfigError("fleet.eui_prefix", f"must be 6 hex digits (3 bytes), got {prefix_text!r}")
    prefix = bytes.fromhex(prefix_text)
    if prefix[:2] != b"\x00\xdb" or prefix == b"\x00\xdb\x00" or prefix == b"\x00\xdb\x12":
        raise ConfigError("fleet.eui_prefix", "must start 00DB and differ from the test PKI's 00DB00 and "
                                              "RTDS's 00DB12 device EUIs")
    fleet.done()

    tm = _Section(top.get("time", dict), "time")
    start = _time(tm.data.get("start", "now"), "time.start")
    tm.seen.add("start")
    speed = float(tm.number("speed", 1.0, lo=0))
    tm.done()

    keys = _Section(top.get("keys", dict), "keys")
    pki_text = keys.get("pki", str)
    pki = None
    if pki_text is not None:
        pki = Path(pki_text)
        pki = pki if pki.is_absolute() else base / pki
        if not pki.is_dir():
            raise ConfigError("keys.pki", f"{pki} is not a directory (make one with `gbcs-emu keys init DIR`)")
    keys.done()

    raw_mix = top.get("mix", list, None)
    if raw_mix is None:
        raw_mix = [{"name": "dual_fuel", "share": 1.0, "devices": ["ESME", "GSME"]}]
    if not raw_mix:
        raise ConfigError("mix", "needs at least one kind of premises")
    mix: list[MixEntry] = []
    raw_profiles = top.get("profiles", dict, {})
    for n, item in enumerate(raw_mix):
        s = _Section(item, f"mix[{n}]")
        mname = s.get("name", str, f"kind{n}")
        share = float(s.number("share", required=True, lo=0, lo_open=True))
        devs = s.get("devices", list, required=True)
        devs_u = []
        for j, d in enumerate(devs):
            if not isinstance(d, str) or d.upper() not in HAN_DEVICE_TYPES:
                raise ConfigError(f"mix[{n}].devices[{j}]", f"must be one of {', '.join(HAN_DEVICE_TYPES)}, "
                                                            f"got {d!r}")
            if d.upper() in devs_u:
                raise ConfigError(f"mix[{n}].devices[{j}]", f"{d.upper()} listed twice (one of each per premises)")
            if device_types.device_class(d.upper()) is None:
                raise ConfigError(f"mix[{n}].devices[{j}]", f"{d.upper()} is not emulated in this build")
            devs_u.append(d.upper())
        if not devs_u:
            raise ConfigError(f"mix[{n}].devices", "needs at least one HAN device")
        gpf = s.get("gpf", bool, "GSME" in devs_u and device_types.device_class("GPF") is not None)
        profile = s.get("profile", str, "default")
        if profile != "default" and profile not in raw_profiles:
            raise ConfigError(f"mix[{n}].profile", f"no [profiles.{profile}] table")
        if any(m.name == mname for m in mix):
            raise ConfigError(f"mix[{n}].name", f"{mname!r} used twice")
        s.done()
        mix.append(MixEntry(mname, share, tuple(devs_u), bool(gpf), profile))

    profiles: dict[str, dict[str, dict]] = {}
    if not isinstance(raw_profiles, dict):
        raise ConfigError("profiles", "must be a table of profile sets")
    for set_name, per_type in raw_profiles.items():
        if not isinstance(per_type, dict):
            raise ConfigError(f"profiles.{set_name}", "must be a table of device types")
        profiles[set_name] = {}
        for dtype, prof in per_type.items():
            key = f"profiles.{set_name}.{dtype}"
            if dtype.upper() not in DEVICE_SLOTS:
                raise ConfigError(key, f"unknown device type (one of {', '.join(DEVICE_SLOTS)})")
            if not isinstance(prof, dict):
                raise ConfigError(key, "must be a table of profile keys")
            for pk in ("mean_kw", "solar_kwp", "secondary_mean_kw", "wake_interval", "initial_wh"):
                if pk in prof and (isinstance(prof[pk], bool) or not isinstance(prof[pk], (int, float))
                                   or prof[pk] < 0 or (pk == "wake_interval" and prof[pk] <= 0)):
                    raise ConfigError(f"{key}.{pk}", f"must be a positive number, got {prof[pk]!r}")
            if "twin" in prof and not isinstance(prof["twin"], bool):
                raise ConfigError(f"{key}.twin", "must be true or false")
            if "prepayment" in prof and not isinstance(prof["prepayment"], dict):
                raise ConfigError(f"{key}.prepayment", "must be a table")
            profiles[set_name][dtype.upper()] = dict(prof)

    han = _Section(top.get("han", dict), "han")
    han_loss = float(han.number("loss", 0.0, lo=0, hi=0.99))
    han_latency = float(han.number("latency", 0.005, lo=0, hi=10))
    han.done()

    com = _Section(top.get("commissioning", dict), "commissioning")
    mode = com.choice("mode", _MODES, "lazy")
    rate = float(com.number("rate", 100.0, lo=0, lo_open=True))
    method = com.choice("method", ("protocol", "installer"), "protocol")
    max_age = float(com.number("template_max_age", 3600.0, lo=0, lo_open=True))
    com.done()

    wan = _Section(top.get("wan", dict), "wan")
    tcp_raw = wan.get("tcp", (list, dict), [])
    mqtt_raw = wan.get("mqtt", (list, dict), [])
    wan.done()
    tcp = []
    for n, item in enumerate([tcp_raw] if isinstance(tcp_raw, dict) else tcp_raw):
        s = _Section(item, f"wan.tcp[{n}]")
        host, port = _address(s.get("listen", str, required=True), f"wan.tcp[{n}].listen")
        framing = s.choice("framing", _FRAMINGS, "gfi")
        s.done()
        tcp.append(TcpListen(host, port, "lencrc" if framing == "binary" else framing))
    mqtt = []
    for n, item in enumerate([mqtt_raw] if isinstance(mqtt_raw, dict) else mqtt_raw):
        s = _Section(item, f"wan.mqtt[{n}]")
        host, port = _address(s.get("broker", str, required=True), f"wan.mqtt[{n}].broker", 1883)
        prefix_t = s.get("prefix", str, "gbcs")
        if not prefix_t or any(c in prefix_t for c in "+#"):
            raise ConfigError(f"wan.mqtt[{n}].prefix", f"must be a non-empty topic without wildcards, got "
                                                       f"{prefix_t!r}")
        s.done()
        mqtt.append(MqttBroker(host, port, prefix_t.rstrip("/")))

    met = _Section(top.get("metrics", dict), "metrics")
    metrics_port = met.number("port", None, integer=True, lo=0, hi=65535)
    metrics_listen = met.get("listen", str, "127.0.0.1")
    met.done()

    h = _Section(top.get("host", dict), "host")
    d = HostTuning()
    tuning = HostTuning(
        cache=h.number("cache", d.cache, integer=True, lo=1),
        batch=h.number("batch", d.batch, integer=True, lo=1),
        batch_window_ms=float(h.number("batch_window_ms", d.batch_window_ms, lo=0, hi=1000)),
        queue=h.number("queue", d.queue, integer=True, lo=1),
        compress=h.get("compress", bool, d.compress),
        durability=h.choice("durability", _DURABILITY, d.durability),
        eager_han=h.get("eager_han", bool, d.eager_han),
        han_horizon=float(h.number("han_horizon", d.han_horizon, lo=0)),
        timers=h.choice("timers", _TIMERS, d.timers),
        timer_interval=float(h.number("timer_interval", d.timer_interval, lo=0.001, hi=60)),
        timer_batch=h.number("timer_batch", d.timer_batch, integer=True, lo=1),
        pending=h.number("pending", d.pending, integer=True, lo=1),
        key_cache=h.number("key_cache", d.key_cache, integer=True, lo=0),
        han=h.choice("han", ("simulated", "direct"), d.han),
        gc=h.choice("gc", ("tuned", "default"), d.gc),
    )
    h.done()
    top.done()
    return FleetConfig(name=name, seed=seed, premises=premises, state_dir=state_dir, shard=shard, start=start,
                       speed=speed, pki=pki, eui_prefix=prefix, mix=tuple(mix), profiles=profiles,
                       han_loss=han_loss, han_latency=han_latency, commissioning=mode, commissioning_rate=rate,
                       commissioning_method=method, template_max_age=max_age,
                       tcp=tuple(tcp), mqtt=tuple(mqtt), metrics_port=metrics_port, metrics_listen=metrics_listen,
                       host=tuning, source=source)


def wall_start() -> float:
    """`time.start = "now"`: whole seconds of the wall clock."""
    return float(int(time.time()))
