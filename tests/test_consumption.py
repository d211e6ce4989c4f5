"""Consumption model: reproducible, monotonic, internally consistent (profiles, TOU, blocks, demand).

The last section checks the clock conversions the model's timestamps rely on."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from firmware_emu.core.clock import (
    DLMS_NEVER, DLMS_NOW, GBCS_EPOCH, FixedClock, SimClock, dlms_datetime, dlms_datetime_json, from_gbcs_seconds,
    parse_dlms_datetime, to_gbcs_seconds,
)
from firmware_emu.core.consumption import HALF_HOUR, ConsumptionModel

ROOT = Path(__file__).resolve().parents[1]
T = 1_700_000_000.0  # 2023-11-14T22:13:20Z
T_ALIGNED = 1_699_999_200  # a half-hour boundary
EUI = "00-1A-2B-3C-4D-5E-6F-70"
TIMES = st.floats(min_value=GBCS_EPOCH, max_value=GBCS_EPOCH + 60 * 365.25 * 86400, allow_nan=False)

ELEC = ConsumptionModel(7, EUI)
GAS = ConsumptionModel(7, EUI, kind="gas")
SOLAR = ConsumptionModel(7, EUI, solar_kwp=4.0, solar_since=T - 20 * 86400)


def test_reproducible_and_seeded():
    again = ConsumptionModel(7, EUI)
    assert [again.energy_wh(T + k * 977.5) for k in range(50)] == [ELEC.energy_wh(T + k * 977.5) for k in range(50)]
    assert ConsumptionModel(8, EUI).energy_wh(T) != ELEC.energy_wh(T)
    assert ConsumptionModel(7, "00-1A-2B-3C-4D-5E-6F-71").energy_wh(T) != ELEC.energy_wh(T)
    # another process (other PYTHONHASHSEED) agrees to the bit
    code = ("from firmware_emu.core.consumption import ConsumptionModel as M;"
            f"m = M(7, {EUI!r}); print(m.energy_wh({T}), repr(m.power_w({T})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True,
                         env={"PYTHONHASHSEED": "123", "PYTHONPATH": str(ROOT)}).stdout.split()
    assert out == [str(ELEC.energy_wh(T)), repr(ELEC.power_w(T))]


def test_plausible_annual_totals():
    year = 365.25 * 86400
    kwh = ELEC.energy_between(T, T + year) / 1000
    assert 0.6 * 0.4 * 8766 * 0.99 < kwh < 1.4 * 0.4 * 8766 * 1.01
    assert GAS.volume_dm3(T + year) > GAS.volume_dm3(T)
    winter = GAS.energy_between(T_ALIGNED + 60 * 86400, T_ALIGNED + 90 * 86400)  # mid-January
    summer = GAS.energy_between(T_ALIGNED + 240 * 86400, T_ALIGNED + 270 * 86400)  # July
    assert winter > 2 * summer


@given(TIMES, TIMES)
def test_registers_monotonic(a, b):
    a, b = min(a, b), max(a, b)
    assert ELEC.energy_wh(a) <= ELEC.energy_wh(b)
    assert ELEC.reactive_varh(a) <= ELEC.reactive_varh(b)
    assert GAS.volume_dm3(a) <= GAS.volume_dm3(b)
    assert ELEC.power_w(a) > 0 and GAS.power_w(b) > 0


@given(st.floats(min_value=0, max_value=40 * 86400), st.floats(min_value=0, max_value=5 * 86400))
def test_solar_monotonic(offset, span):
    a = T - 25 * 86400 + offset
    assert SOLAR.energy_wh(a) <= SOLAR.energy_wh(a + span)
    assert SOLAR.export_wh(a) <= SOLAR.export_wh(a + span)


@given(TIMES, st.floats(min_value=0, max_value=400 * 86400))
def test_energy_between_matches_register(a, span):
    a = math.floor(a)
    b = a + math.floor(span)
    assert abs((ELEC.energy_wh(b) - ELEC.energy_wh(a)) - ELEC.energy_between(a, b)) <= 1


def test_energy_between_is_integral_of_power():
    a, b = T, T + 6 * 3600
    n = 2000
    h = (b - a) / n
    simpson = sum((1 if i in (0, n) else 4 if i % 2 else 2) * ELEC.power_w(a + i * h) for i in range(n + 1)) * h / 3
    assert ELEC.energy_between(a, b) == pytest.approx(simpson / 3600, rel=1e-9)


def test_half_hour_profile_sums_to_register():
    t_from, t_to = T_ALIGNED, T_ALIGNED + 7 * 86400
    profile = ELEC.half_hour_profile(t_from, t_to)
    assert len(profile) == 7 * 48
    assert profile[0][0] == to_gbcs_seconds(t_from + HALF_HOUR)
    assert all(b[0] - a[0] == HALF_HOUR for a, b in zip(profile, profile[1:]))
    assert sum(wh for _, wh in profile) == ELEC.energy_wh(t_to) - ELEC.energy_wh(t_from)
    gas = GAS.half_hour_profile(t_from + 100, t_to, quantity="volume")  # unaligned start: whole half-hours only
    assert len(gas) == 7 * 48 - 1
    assert sum(v for _, v in gas) == GAS.volume_dm3(t_to) - GAS.volume_dm3(t_from + HALF_HOUR)
    with pytest.raises(ValueError):
        ELEC.half_hour_profile(T_ALIGNED, T_ALIGNED + 10_001 * HALF_HOUR)


def test_max_demand():
    t_from, t_to = T_ALIGNED, T_ALIGNED + 3 * 86400
    w, at = ELEC.max_demand(t_from, t_to)
    average = ELEC.energy_between(t_from, t_to) / ((t_to - t_from) / 3600)
    assert w >= average - 1
    assert (at - t_from) % HALF_HOUR == 0 and t_from < at <= t_to
    assert w == round(ELEC.energy_between(at - HALF_HOUR, at) * 2)
    with pytest.raises(ValueError):
        ELEC.max_demand(T_ALIGNED + 1, T_ALIGNED + HALF_HOUR + 5)


def test_tou_split_sums_to_total():
    def rate_of(s):  # economy 7: 00:30-07:30 UTC on rate 1
        return 1 if 1800 <= s % 86400 < 27000 else 0
    t_from, t_to = T + 17.3, T + 31 * 86400 + 5.9
    regs = ELEC.tou_registers(t_from, t_to, rate_of, 2)
    assert sum(regs) == ELEC.energy_wh(t_to) - ELEC.energy_wh(t_from)
    assert all(r > 0 for r in regs)
    with pytest.raises(ValueError):
        ELEC.tou_registers(T, T + 3600, lambda s: 2, 2)


def test_block_registers():
    t_from, t_to = T + 10 * 86400, T + 20 * 86400
    used_before = ELEC.energy_wh(t_from) - ELEC.energy_wh(T)
    used = ELEC.energy_wh(t_to) - ELEC.energy_wh(t_from)
    th = [used_before + used // 3, used_before + used // 2]
    blocks = ELEC.block_registers(t_from, t_to, th, period_start=T)
    assert blocks == [used // 3, used // 2 - used // 3, used - used // 2]
    assert ELEC.block_registers(t_from, t_to, [0, 10]) == [0, 10, used - 10]


def test_solar_exports_only_when_generating_more_than_load():
    day = T_ALIGNED - 5 * 86400
    assert SOLAR.export_wh(day) > 0  # some November days export, cloudy ones may not
    night = day - (day % 86400)  # midnight UTC: no sun, no export
    assert all(SOLAR.export_wh(night + k * 3600) == SOLAR.export_wh(night) for k in range(7))
    for h in range(24):  # import and export exclude each other over a 5-minute cell
        t = night + h * 3600 + 150
        exporting = SOLAR.export_wh(t + 150) > SOLAR.export_wh(t - 150)
        if SOLAR.generation_w(t) < SOLAR.load_w(t):
            assert not exporting
    assert SOLAR.export_wh(night + 3 * 3600) == SOLAR.export_wh(night)
    assert SOLAR.power_w(night + 3600) == SOLAR.load_w(night + 3600) > 0
    assert ELEC.export_wh(T) == 0
    # before solar_since the import register is the plain model's
    assert SOLAR.energy_wh(T - 30 * 86400) == ELEC.energy_wh(T - 30 * 86400)


# -- clock conversions -------------------------------------------------------------------------------------

def test_gbcs_seconds_and_dlms_datetime():
    assert GBCS_EPOCH == 946684800 and to_gbcs_seconds(GBCS_EPOCH + 5.7) == 5 and from_gbcs_seconds(5) == GBCS_EPOCH + 5
    b = dlms_datetime(T)
    assert b.hex().upper() == "07E70B0E02160D1400800000"  # Tuesday
    assert parse_dlms_datetime(b) == T
    assert parse_dlms_datetime(dlms_datetime(T, deviation=60)) == T - 3600  # fields read as local = UTC + 60'
    assert dlms_datetime_json(T, clock_status=0x80)["clock_status"] == 0x80
    assert parse_dlms_datetime(DLMS_NOW) == "now" and parse_dlms_datetime(DLMS_NEVER) == "never"
    assert parse_dlms_datetime(b"") is None
    for bad in (b[:2] + b"\xff" + b[3:], b[:5] + b"\xff" + b[6:], b"\xff\xff" + b[2:], b[:4] + b"\x05" + b[5:], b[:11]):
        with pytest.raises(ValueError):
            parse_dlms_datetime(bad)
    assert parse_dlms_datetime(b[:4] + b"\xff" + b[5:8] + b"\xff" + b[9:]) == T  # weekday, hundredths unspecified


@given(st.integers(min_value=GBCS_EPOCH, max_value=4102444799))
def test_dlms_datetime_round_trip(t):
    assert parse_dlms_datetime(dlms_datetime(t)) == t


def test_clocks():
    src = [0.0]
    c = SimClock(T, speed=60, source=lambda: src[0])
    src[0] = 2.0
    assert c.now() == T + 120
    c.set_speed(1)
    assert c.now() == T + 120 and c.speed == 1
    c.advance(30)
    src[0] = 3.0
    assert c.now() == T + 151
    with pytest.raises(ValueError):
        c.advance(-1)
    f = FixedClock(T)
    f.advance(5)
    f.set(T + 10)
    assert f.now() == T + 10
    with pytest.raises(ValueError):
        f.set(T)
