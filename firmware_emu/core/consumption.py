"""Seeded, reproducible consumption: registers at any time in O(1), no stored history.

Load power is a sum of sinusoids, p(t) = base * (1 + sum A_k sin(2 pi t / P_k + phi_k)) with daily (+2nd, 3rd
harmonics), weekly and yearly (cosine peaking in mid-January) terms; sum |A_k| <= 0.85 so p >= 0.15 base > 0,
and E(t) = integral of p has a closed form, so a million meters need only their parameters. Every parameter is
drawn from SHA-256 of (kind, seed, key) (never Python's hash()), so processes and Python versions agree.
Angles are reduced with math.fmod (exact) before sin/cos, and registers are evaluated at whole seconds: the
increase per second (>= 0.15 base * 1 s) dwarfs float error, so integer registers never go down.

Registers are integers (`energy_wh` = initial_wh + floor(Wh since t0)); half-hour profiles, TOU and block
registers are differences of that integer register, so they telescope and sum exactly to its difference.
Gas (`kind="gas"`) is the same model with a heating-dominated yearly cycle, mean_kw as thermal power, and
`volume_dm3` (m3 x 1000) = energy / calorific value. Optional solar (`solar_kwp`) has no closed form for
export = integral of max(0, g - p): it is integrated numerically from `solar_since` on 300 s cells (midpoint
rule) with per-day checkpoints cached in the model, so its first call costs O(days since solar_since).
"""
from __future__ import annotations

import hashlib
import math
from typing import Callable, Sequence

from firmware_emu.core.clock import GBCS_EPOCH, to_gbcs_seconds

HALF_HOUR = 1800
DAY = 86400
WEEK = 604800
YEAR = 31557600  # 365.25 days
MAX_PROFILE_INTERVALS = 10_000
#: TOU splitting walks half-hours; bounded so a bad request cannot stall a device (~5.7 years).
MAX_TOU_INTERVALS = 100_000
_TWO_PI = 2.0 * math.pi
_MAX_AMPLITUDE_SUM = 0.85
_SOLAR_CELL = 300
#: 2000-01-15 (load peak, mid-winter) and 2000-06-21 (solstice), UTC.
_T_JAN = GBCS_EPOCH + 14 * DAY
_T_JUNE = GBCS_EPOCH + 172 * DAY
#: Gas: 39.5 MJ/m3 x 1.02264 (volume correction) / 3.6 = Wh per dm3.
DEFAULT_CALORIFIC_MJ_M3 = 39.5
VOLUME_CORRECTION = 1.02264


def _key_bytes(key: bytes | str | int) -> bytes:
    if isinstance(key, bytes):
        return key
    return str(key).encode("utf-8")


class _Draws:
    """Uniform [0, 1) numbers named by tag, from SHA-256: stable across processes and versions."""

    def __init__(self, *parts: bytes):
        self._prefix = b"\0".join((b"gbcs-emu/consumption/v1",) + parts) + b"\0"

    def u(self, tag: str, lo: float = 0.0, hi: float = 1.0) -> float:
        d = hashlib.sha256(self._prefix + tag.encode()).digest()
        return lo + (hi - lo) * ((int.from_bytes(d[:8], "big") >> 11) / 2.0 ** 53)


def _phase(t: float, period: int) -> float:
    """2 pi t / period, reduced exactly first so large t keeps full precision."""
    return _TWO_PI * math.fmod(t, period) / period


class ConsumptionModel:
    """One meter's deterministic load (and optional solar) with closed-form cumulative energy."""

    def __init__(self, seed: int, key: bytes | str | int, *, kind: str = "electricity",
                 mean_kw: float | None = None, t0: float = GBCS_EPOCH, initial_wh: int = 0,
                 solar_kwp: float = 0.0, solar_since: float | None = None,
                 calorific_mj_m3: float = DEFAULT_CALORIFIC_MJ_M3):
        if kind not in ("electricity", "gas"):
            raise ValueError(f"kind must be 'electricity' or 'gas', got {kind!r}")
        if kind == "gas" and solar_kwp:
            raise ValueError("gas meters have no generation")
        if mean_kw is None:
            mean_kw = 0.4 if kind == "electricity" else 1.4  # ~3,500 kWh and ~12,000 kWh a year
        if not mean_kw > 0 or solar_kwp < 0:
            raise ValueError("mean_kw must be > 0 and solar_kwp >= 0")
        self.kind = kind
        self.t0 = float(math.floor(t0))
        self.initial_wh = int(initial_wh)
        self.wh_per_dm3 = calorific_mj_m3 * VOLUME_CORRECTION / 3.6
        r = _Draws(kind.encode(), str(int(seed)).encode(), _key_bytes(key))
        self._draws = r
        self._last: tuple | None = None     # (t, _cumulative(t)) of the last call
        self.base_w = mean_kw * 1000.0 * r.u("base", 0.6, 1.4)
        self.power_factor = r.u("pf", 0.90, 0.98)

        if kind == "electricity":
            amps = {"day": r.u("a_day", 0.25, 0.40), "h2": r.u("a_h2", 0.05, 0.15), "h3": r.u("a_h3", 0.0, 0.08),
                    "week": r.u("a_week", 0.03, 0.10), "year": r.u("a_year", 0.10, 0.25)}
            peak_hour = r.u("peak_hour", 16.5, 20.0)
        else:
            amps = {"day": r.u("a_day", 0.10, 0.20), "h2": r.u("a_h2", 0.10, 0.20), "h3": r.u("a_h3", 0.0, 0.05),
                    "week": r.u("a_week", 0.0, 0.05), "year": r.u("a_year", 0.55, 0.75)}
            peak_hour = r.u("peak_hour", 17.0, 20.0)
        total = sum(amps.values())
        if total > _MAX_AMPLITUDE_SUM:
            amps = {k: v * _MAX_AMPLITUDE_SUM / total for k, v in amps.items()}
        t_jan = _T_JAN + r.u("jan_shift", -10.0, 10.0) * DAY
        # (amplitude, period, phase) of sin(2 pi t / P + phase); the daily peak sits at peak_hour UTC.
        self._terms = (
            (amps["day"], DAY, math.pi / 2 - _TWO_PI * peak_hour / 24),
            (amps["h2"], DAY // 2, r.u("phi_h2", 0.0, _TWO_PI)),
            (amps["h3"], DAY // 3, r.u("phi_h3", 0.0, _TWO_PI)),
            (amps["week"], WEEK, r.u("phi_week", 0.0, _TWO_PI)),
            (amps["year"], YEAR, math.pi / 2 - _phase(t_jan, YEAR)),
        )

        self.solar_kwp = float(solar_kwp)
        self.solar_since = float(DAY * math.floor((self.t0 if solar_since is None else solar_since) / DAY))
        self._solar_orientation = r.u("solar_orientation", 0.75, 1.0)
        self._days_imp: list[float] = [0.0]  # numeric import / export Wh from solar_since to each day start
        self._days_exp: list[float] = [0.0]
        self._day_cache: dict[int, tuple[list[float], list[float]]] = {}

    # -- instantaneous ----------------------------------------------------------------------------------

    def load_w(self, t: float) -> float:
        """Household load (before any solar), W; always > 0."""
        return self.base_w * (1.0 + sum(a * math.sin(_phase(t, p) + phi) for a, p, phi in self._terms))

    def generation_w(self, t: float) -> float:
        """Solar output, W: a daylight half-sine around 12:00 UTC, longer and stronger in summer, daily cloud."""
        if not self.solar_kwp or t < self.solar_since:
            return 0.0
        season = math.cos(_phase(t - _T_JUNE, YEAR))
        daylen = (12.0 + 4.4 * season) * 3600.0
        x = (math.fmod(t, DAY) - (DAY - daylen) / 2) / daylen
        if not 0.0 < x < 1.0:
            return 0.0
        cloud = self._draws.u(f"cloud/{math.floor(t / DAY)}", 0.25, 1.0)
        peak = self.solar_kwp * 1000.0 * (0.55 + 0.45 * season) * cloud * self._solar_orientation
        return peak * math.sin(math.pi * x)

    def power_w(self, t: float) -> float:
        """Active power imported from the grid, W (load net of solar, never negative)."""
        if not self.solar_kwp:
            return self.load_w(t)
        return max(0.0, self.load_w(t) - self.generation_w(t))

    # -- cumulative (float Wh) --------------------------------------------------------------------------

    def _load_integral_wh(self, t: float) -> float:
        """Closed form: Wh of load from t0 to t (t >= t0)."""
        acc = t - self.t0
        for a, p, phi in self._terms:
            acc += a * p / _TWO_PI * (math.cos(_phase(self.t0, p) + phi) - math.cos(_phase(t, p) + phi))
        return self.base_w * acc / 3600.0

    def _cumulative(self, t: float) -> tuple[float, float]:
        """(import Wh, export Wh) since t0 at time t, as floats. The last answer is kept: a device asks for the
        same instant several times per frame (its tick charges prepayment, then the read answers)."""
        last = self._last
        if last is not None and last[0] == t:
            return last[1]
        out = self._cumulative_at(t)
        self._last = (t, out)
        return out

    def _cumulative_at(self, t: float) -> tuple[float, float]:
        t = max(t, self.t0)
        if not self.solar_kwp or t <= self.solar_since:
            return self._load_integral_wh(t), 0.0
        base_imp = self._load_integral_wh(self.solar_since) if self.solar_since > self.t0 else 0.0
        day = int((t - self.solar_since) // DAY)
        self._extend_days(day)
        imp, exp = self._days_imp[day], self._days_exp[day]
        rates_imp, rates_exp = self._day_rates(day)
        offset = t - (self.solar_since + day * DAY)
        cell = int(offset // _SOLAR_CELL)
        imp += sum(rates_imp[:cell]) * _SOLAR_CELL / 3600.0
        exp += sum(rates_exp[:cell]) * _SOLAR_CELL / 3600.0
        if cell < len(rates_imp):
            frac = offset - cell * _SOLAR_CELL
            imp += rates_imp[cell] * frac / 3600.0
            exp += rates_exp[cell] * frac / 3600.0
        return base_imp + imp, exp

    def _day_rates(self, day: int) -> tuple[list[float], list[float]]:
        """Import and export W per 300 s cell of solar day `day` (midpoint rule)."""
        rates = self._day_cache.get(day)
        if rates is None:
            start = self.solar_since + day * DAY
            imp, exp = [], []
            for i in range(DAY // _SOLAR_CELL):
                mid = start + (i + 0.5) * _SOLAR_CELL
                net = self.load_w(mid) - self.generation_w(mid)
                imp.append(max(0.0, net))
                exp.append(max(0.0, -net))
            if len(self._day_cache) > 8:
                self._day_cache.clear()
            rates = self._day_cache[day] = (imp, exp)
        return rates

    def _extend_days(self, day: int) -> None:
        while len(self._days_imp) <= day:
            k = len(self._days_imp) - 1
            imp, exp = self._day_rates(k)
            self._days_imp.append(self._days_imp[k] + sum(imp) * _SOLAR_CELL / 3600.0)
            self._days_exp.append(self._days_exp[k] + sum(exp) * _SOLAR_CELL / 3600.0)

    def energy_between(self, t0: float, t1: float) -> float:
        """Imported Wh in [t0, t1] (float, not rounded)."""
        if t1 < t0:
            raise ValueError("t1 < t0")
        return self._cumulative(t1)[0] - self._cumulative(t0)[0]

    # -- registers (integers, monotonic) ------------------------------------------------------------------

    def energy_wh(self, t: float) -> int:
        """Import active energy register, Wh: ticks at whole seconds, never decreases."""
        return self.initial_wh + math.floor(self._cumulative(math.floor(t))[0])

    def export_wh(self, t: float) -> int:
        """Export active energy register, Wh: 0 without solar; counts only while generation > load."""
        if not self.solar_kwp:
            return 0
        return math.floor(self._cumulative(math.floor(t))[1])

    def reactive_varh(self, t: float) -> int:
        """Import reactive energy register, varh, at the device's fixed power factor."""
        if self.kind != "electricity":
            raise ValueError("gas meters have no reactive energy")
        tan_phi = math.tan(math.acos(self.power_factor))
        return math.floor(self._cumulative(math.floor(t))[0] * tan_phi)

    def volume_dm3(self, t: float) -> int:
        """Gas volume register in dm3 (m3 x 1000): energy over calorific value."""
        if self.kind != "gas":
            raise ValueError("only gas meters measure volume")
        return math.floor(self._cumulative(math.floor(t))[0] / self.wh_per_dm3)

    def _register(self, quantity: str) -> Callable[[float], int]:
        if quantity == "energy":
            return self.energy_wh
        if quantity == "volume":
            return self.volume_dm3
        raise ValueError(f"quantity must be 'energy' or 'volume', got {quantity!r}")

    # -- derived views ----------------------------------------------------------------------------------

    @staticmethod
    def _half_hours(t_from: float, t_to: float, limit: int) -> range:
        """Starts of the whole half-hours inside [t_from, t_to]."""
        first = math.ceil(t_from / HALF_HOUR) * HALF_HOUR
        last_end = math.floor(t_to / HALF_HOUR) * HALF_HOUR
        n = max(0, (last_end - first) // HALF_HOUR)
        if n > limit:
            raise ValueError(f"{n} half-hour intervals asked, at most {limit}")
        return range(first, first + n * HALF_HOUR, HALF_HOUR)

    def half_hour_profile(self, t_from: float, t_to: float, *,
                          quantity: str = "energy") -> list[tuple[int, int]]:
        """(interval end in GBCS seconds, Wh or dm3) for each whole half-hour inside [t_from, t_to]."""
        reg = self._register(quantity)
        starts = self._half_hours(t_from, t_to, MAX_PROFILE_INTERVALS)
        out, prev = [], None
        for s in starts:
            r0 = reg(s) if prev is None else prev
            prev = reg(s + HALF_HOUR)
            out.append((to_gbcs_seconds(s + HALF_HOUR), prev - r0))
        return out

    def max_demand(self, t_from: float, t_to: float) -> tuple[int, float]:
        """Highest half-hour average import power (W) over whole half-hours in range, and that interval's end."""
        best: tuple[float, float] | None = None
        for s in self._half_hours(t_from, t_to, MAX_TOU_INTERVALS):
            w = self.energy_between(s, s + HALF_HOUR) * (3600.0 / HALF_HOUR)
            if best is None or w > best[0]:
                best = (w, float(s + HALF_HOUR))
        if best is None:
            raise ValueError("no whole half-hour between t_from and t_to")
        return round(best[0]), best[1]

    def tou_registers(self, t_from: float, t_to: float, rate_of: Callable[[float], int],
                      n_rates: int) -> list[int]:
        """Wh per TOU rate in [t_from, t_to]; `rate_of(s)` is the rate of the half-hour starting at s.
        Sums exactly to energy_wh(t_to) - energy_wh(t_from)."""
        if t_to < t_from:
            raise ValueError("t_to < t_from")
        out = [0] * n_rates
        first = math.floor(t_from / HALF_HOUR) * HALF_HOUR
        n = math.ceil((t_to - first) / HALF_HOUR)
        if n > MAX_TOU_INTERVALS:
            raise ValueError(f"{n} half-hour intervals asked, at most {MAX_TOU_INTERVALS}")
        prev = self.energy_wh(t_from)
        for i in range(n):
            s = first + i * HALF_HOUR
            cur = self.energy_wh(min(s + HALF_HOUR, t_to))
            rate = rate_of(s)
            if not 0 <= rate < n_rates:
                raise ValueError(f"rate_of({s}) = {rate}, not in 0..{n_rates - 1}")
            out[rate] += cur - prev
            prev = cur
        return out

    def block_registers(self, t_from: float, t_to: float, thresholds: Sequence[int], *,
                        period_start: float | None = None) -> list[int]:
        """Wh per price block in [t_from, t_to]: len(thresholds) + 1 blocks.

        Block semantics: consumption since `period_start` (the billing period start; default t_from) is
        accumulated; the Wh that bring the period total from 0 up to thresholds[0] fall in block 1, from
        thresholds[0] up to thresholds[1] in block 2, ..., beyond the last threshold in the last block.
        Thresholds are cumulative Wh within the period, non-decreasing.
        """
        if any(b < a for a, b in zip(thresholds, thresholds[1:])) or any(x < 0 for x in thresholds):
            raise ValueError("thresholds must be non-negative and non-decreasing")
        period_start = t_from if period_start is None else period_start
        if not period_start <= t_from <= t_to:
            raise ValueError("need period_start <= t_from <= t_to")
        origin = self.energy_wh(period_start)
        a, b = self.energy_wh(t_from) - origin, self.energy_wh(t_to) - origin
        edges = [0, *thresholds, math.inf]
        return [int(max(0, min(b, hi) - max(a, lo))) for lo, hi in zip(edges, edges[1:])]


def model_of(device, params: dict, *, kind: str = "electricity", suffix: str = "") -> ConsumptionModel:
    """The consumption model of `device` (its profile's seed, its EUI + `suffix`, `params`), made once and kept on
    the device object: a fleet serves thousands of meters in turn, which a shared bounded cache would thrash
    (building a model costs about as much as answering a read)."""
    key = (int(device.profile.get("seed", 0)), device.state["eui"] + suffix, kind, tuple(sorted(params.items())))
    memo = device.__dict__.setdefault("_consumption_models", {})
    model = memo.get(key)
    if model is None:
        if len(memo) >= 8:
            memo.clear()
        model = memo[key] = ConsumptionModel(key[0], key[1], kind=kind, **params)
    return model
