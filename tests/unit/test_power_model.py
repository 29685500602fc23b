"""The power model as pure functions: sun, battery, site physics, autonomy, load-shedding policy.

No I/O and no sleeping: times are handed in, a `ManualClock` moves the
simulated site, and the assertions are on values.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from edge_agent.power import (
    DEFAULT_STEPS,
    ChargeEstimate,
    PowerConfig,
    PowerManager,
    autonomy_h,
    battery_faults,
    estimate_charge,
    select_step,
)
from hardware.battery import CHEMISTRIES, autonomy_hours, reserve_fraction
from hardware.clock import ManualClock
from hardware.power import PowerReading, SimPowerMonitor
from hardware.sim_clock import ScaledClock
from hardware.solar import (
    CITIES,
    cloud_factor,
    hours_until_sunrise,
    is_night,
    plane_of_array_irradiance,
    sun_position,
    sunrise_sunset,
)
from hardware.solar_site import CloudySpell, SiteSpec, SolarSite, Weather

LAHORE = CITIES["lahore"]
PKT = timezone(timedelta(hours=5))
DEC1 = datetime(2025, 12, 1, tzinfo=timezone.utc)
LFP = CHEMISTRIES["lifepo4"]
LEAD = CHEMISTRIES["lead_acid"]


# ------------------------------------------------------------------- sun


def test_lahore_sunrise_and_sunset_in_december_match_the_almanac() -> None:
    times = sunrise_sunset(day=DEC1, lat=LAHORE.lat, lon=LAHORE.lon)
    assert times is not None
    rise, sets = (t.astimezone(PKT) for t in times)
    # Almanac for Lahore, 1 December: sunrise 06:44, sunset 17:00 (PKT).
    assert abs((rise - rise.replace(hour=6, minute=44)).total_seconds()) < 180
    assert abs((sets - sets.replace(hour=17, minute=0)).total_seconds()) < 180


def test_night_and_day_and_the_hours_to_sunrise() -> None:
    midnight = datetime(2025, 12, 1, 0, 0, tzinfo=PKT)
    noon = datetime(2025, 12, 1, 12, 0, tzinfo=PKT)
    assert is_night(at=midnight, lat=LAHORE.lat, lon=LAHORE.lon)
    assert not is_night(at=noon, lat=LAHORE.lat, lon=LAHORE.lon)
    assert 6.5 < hours_until_sunrise(at=midnight, lat=LAHORE.lat, lon=LAHORE.lon) < 7.0
    assert 18.5 < hours_until_sunrise(at=noon, lat=LAHORE.lat, lon=LAHORE.lon) < 19.0


def test_a_panel_gets_nothing_at_night_and_most_at_noon() -> None:
    night = sun_position(at=datetime(2025, 12, 1, 0, tzinfo=PKT), lat=LAHORE.lat, lon=LAHORE.lon)
    noon = sun_position(at=datetime(2025, 12, 1, 12, tzinfo=PKT), lat=LAHORE.lat, lon=LAHORE.lon)
    assert plane_of_array_irradiance(sun=night, lat=LAHORE.lat) == 0.0
    assert 700 < plane_of_array_irradiance(sun=noon, lat=LAHORE.lat) < 1100


def test_clouds_take_away_up_to_three_quarters_of_the_light() -> None:
    assert cloud_factor(0.0) == 1.0
    assert cloud_factor(1.0) == pytest.approx(0.25)
    with pytest.raises(ValueError, match=r"within 0\.\.1"):
        cloud_factor(1.5)


def test_times_without_a_zone_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        sun_position(at=datetime(2025, 12, 1, 12), lat=LAHORE.lat, lon=LAHORE.lon)


# --------------------------------------------------------------- battery


@pytest.mark.parametrize("chemistry", [LFP, LEAD])
def test_resting_voltage_rises_with_charge_and_inverts(chemistry: object) -> None:
    assert chemistry in (LFP, LEAD)
    chem = LFP if chemistry is LFP else LEAD
    socs = [i / 20 for i in range(21)]
    volts = [chem.open_circuit_v(s) for s in socs]
    assert volts == sorted(volts)
    for soc in (0.15, 0.4, 0.75, 0.95):
        assert chem.soc_from_voltage(chem.open_circuit_v(soc)) == pytest.approx(soc, abs=1e-6)


def test_autonomy_counts_only_the_usable_charge_and_the_cold() -> None:
    # 100 Ah LiFePO4 at 12.8 V, 60 % charge, 10 % floor: 640 Wh usable → 25.6 h at 25 W.
    assert autonomy_hours(
        chemistry=LFP, capacity_ah=100, soc=0.6, load_w=25, temp_c=25
    ) == pytest.approx(0.5 * 100 * LFP.nominal_v / 25)
    # Lead-acid below half charge has nothing usable left.
    assert autonomy_hours(chemistry=LEAD, capacity_ah=100, soc=0.45, load_w=25) == 0.0
    warm = autonomy_hours(chemistry=LEAD, capacity_ah=100, soc=1.0, load_w=25, temp_c=25)
    cold = autonomy_hours(chemistry=LEAD, capacity_ah=100, soc=1.0, load_w=25, temp_c=0)
    assert cold < warm
    assert autonomy_hours(chemistry=LFP, capacity_ah=100, soc=1.0, load_w=0.0) == 999.0


def test_reserve_is_the_share_of_usable_charge() -> None:
    assert reserve_fraction(LFP, 0.1) == 0.0
    assert reserve_fraction(LFP, 1.0) == 1.0
    assert reserve_fraction(LEAD, 0.75) == pytest.approx(0.5)


# ------------------------------------------------------------------ site


def _site(*, panel_w: float, capacity_ah: float, weather: Weather | None = None) -> SolarSite:
    spec = SiteSpec(
        city="lahore",
        lat=LAHORE.lat,
        lon=LAHORE.lon,
        panel_w=panel_w,
        chemistry="lifepo4",
        capacity_ah=capacity_ah,
    )
    start = datetime(2025, 12, 1, 0, tzinfo=PKT)
    return SolarSite(spec=spec, weather=weather or Weather(), at=start, soc=0.6)


def test_a_site_drains_at_night_and_charges_by_day() -> None:
    site = _site(panel_w=400, capacity_ah=150)
    start = site.at
    dawn = site.advance(start + timedelta(hours=6))
    assert dawn.soc < 0.6
    assert dawn.panel_w == 0.0
    assert dawn.battery_a < 0
    noon = site.advance(start + timedelta(hours=12))
    assert noon.panel_w > 100
    assert noon.battery_a > 0
    assert noon.soc > dawn.soc


def test_a_cloudy_spell_cuts_the_harvest() -> None:
    start = datetime(2025, 12, 1, 0, tzinfo=PKT)
    spell = CloudySpell(start=start, end=start + timedelta(days=2), cloud_cover=1.0)
    clear = _site(panel_w=400, capacity_ah=150)
    cloudy = _site(panel_w=400, capacity_ah=150, weather=Weather(spells=(spell,)))
    clear.advance(start + timedelta(days=1))
    cloudy.advance(start + timedelta(days=1))
    assert cloudy.energy_in_wh < clear.energy_in_wh * 0.4


def test_shedding_load_lowers_the_draw_and_an_empty_battery_disconnects_it() -> None:
    site = _site(panel_w=10, capacity_ah=10)
    full = site.state.load_w
    site.set_mode(3)
    site.advance(site.at + timedelta(minutes=5))
    assert site.state.load_w < full
    site.set_mode(0)
    site.advance(site.at + timedelta(hours=12))
    assert not site.load_connected
    assert site.state.load_w == 0.0


# ---------------------------------------------------------------- policy


@pytest.mark.parametrize(
    ("reserve", "current", "expected"),
    [
        (0.9, 0, 0),
        (0.49, 0, 1),
        (0.30, 0, 2),  # a steep drop skips straight to the step it calls for
        (0.10, 1, 3),
        (0.02, 3, 4),
        (0.52, 1, 1),  # just above the threshold: stays (hysteresis)
        (0.56, 1, 0),
        (0.30, 4, 2),  # recovering leaves the steps the reserve is well above
        (0.24, 3, 3),
    ],
)
def test_the_step_follows_the_reserve_with_hysteresis(
    reserve: float, current: int, expected: int
) -> None:
    assert select_step(reserve=reserve, current=current, steps=DEFAULT_STEPS, hysteresis=0.05) == (
        expected
    )


def test_only_the_last_step_may_shed_the_panic_path() -> None:
    steps = [s.model_dump() for s in DEFAULT_STEPS]
    steps[1]["panic"] = False
    with pytest.raises(ValidationError, match="only the last step"):
        PowerConfig.model_validate({"steps": steps})


def test_steps_must_shed_in_order() -> None:
    steps = [s.model_dump() for s in DEFAULT_STEPS]
    steps[2]["below_reserve"] = 0.6
    with pytest.raises(ValidationError, match="below the previous"):
        PowerConfig.model_validate({"steps": steps})
    steps = [s.model_dump() for s in DEFAULT_STEPS]
    steps[3]["cameras"] = True
    with pytest.raises(ValidationError, match="switch back on"):
        PowerConfig.model_validate({"steps": steps})


def test_unknown_power_settings_are_refused() -> None:
    with pytest.raises(ValidationError):
        PowerConfig.model_validate({"enabled": True, "autonomy_hours": 8})


# -------------------------------------------------------------- estimates


def _reading(**values: float | bool | None) -> PowerReading:
    return PowerReading(at=DEC1, **values)  # type: ignore[arg-type]


def test_charge_from_a_gauge_from_a_resting_voltage_and_by_counting() -> None:
    gauge = estimate_charge(
        _reading(battery_soc=0.7), battery=LFP, capacity_ah=100, previous=None, elapsed_s=0
    )
    assert gauge == ChargeEstimate(0.7, pytest.approx(2 / 3), "gauge")  # type: ignore[arg-type]
    resting = estimate_charge(
        _reading(battery_v=LEAD.open_circuit_v(0.8), battery_a=0.1),
        battery=LEAD,
        capacity_ah=100,
        previous=None,
        elapsed_s=0,
    )
    assert resting is not None
    assert resting.source == "voltage"
    assert resting.soc == pytest.approx(0.8)
    counted = estimate_charge(
        _reading(battery_v=12.0, battery_a=-10.0),
        battery=LEAD,
        capacity_ah=100,
        previous=resting,
        elapsed_s=3600,
    )
    assert counted is not None
    assert counted.source == "coulomb"
    assert counted.soc == pytest.approx(0.7)
    assert (
        estimate_charge(_reading(), battery=LFP, capacity_ah=100, previous=None, elapsed_s=0)
        is None
    )


def test_autonomy_at_the_present_load_or_from_the_discharge() -> None:
    charge = ChargeEstimate(0.6, reserve_fraction(LFP, 0.6), "gauge")
    by_load = autonomy_h(_reading(load_w=25.0), charge, battery=LFP, capacity_ah=100)
    by_current = autonomy_h(
        _reading(battery_v=12.5, battery_a=-2.0), charge, battery=LFP, capacity_ah=100
    )
    assert by_load == pytest.approx(0.5 * 100 * LFP.nominal_v / 25.0, rel=0.01)
    assert by_current == pytest.approx(0.5 * 100 * LFP.nominal_v / 25.0, rel=0.01)
    assert autonomy_h(_reading(), charge, battery=LFP, capacity_ah=100) is None


def test_a_hot_or_sagging_battery_is_a_fault() -> None:
    charge = ChargeEstimate(0.6, reserve_fraction(LFP, 0.6), "gauge")
    healthy_v = LFP.open_circuit_v(0.6) - 2.0 * LFP.resistance_ohm(100)
    ok = battery_faults(
        _reading(battery_v=healthy_v, battery_a=-2.0, battery_temp_c=30.0),
        charge,
        battery=LFP,
        capacity_ah=100,
        sag_factor=3.0,
    )
    assert ok == {}
    sagging_v = LFP.open_circuit_v(0.6) - 2.0 * LFP.resistance_ohm(100) * 8
    bad = battery_faults(
        _reading(battery_v=sagging_v, battery_a=-2.0, battery_temp_c=65.0),
        charge,
        battery=LFP,
        capacity_ah=100,
        sag_factor=3.0,
    )
    assert set(bad) == {"over_temperature", "voltage_sag"}


# ---------------------------------------------------------------- runner


def test_the_manager_reports_steps_mains_and_autonomy_as_the_battery_drains() -> None:
    clock = ManualClock(start=0.0, wall=datetime(2025, 12, 1, 19, tzinfo=timezone.utc))
    spec = SiteSpec(
        city="lahore",
        lat=LAHORE.lat,
        lon=LAHORE.lon,
        panel_w=5,
        chemistry="lifepo4",
        capacity_ah=40,
        mains=True,
    )
    site = SolarSite(spec=spec, weather=Weather(), at=clock.now(), soc=0.9)
    manager = PowerManager(
        config=PowerConfig(enabled=True, capacity_ah=40, interval_s=300),
        monitor=SimPowerMonitor(site=site, clock=clock),
        clock=clock,
        node_id="lhr-test-001",
    )
    kinds: list[str] = []
    kinds += [n.power for n in manager.sample()]
    site.set_mains(False)
    for _ in range(3 * 12 * 24):
        clock.advance(300)
        kinds += [n.power for n in manager.sample()]
        if manager.dark:
            break
    assert kinds[0] == "mains_lost"
    assert "autonomy_low" in kinds
    steps = [step for _, step in manager.history]
    assert steps == sorted(steps)  # draining: only ever deeper
    assert steps[-1] == manager.last_step
    assert manager.dark
    telemetry = manager.telemetry()
    assert telemetry is not None
    assert telemetry.policy_step == manager.last_step
    assert telemetry.mains_present is False


def test_a_scaled_clock_runs_a_week_in_a_minute_and_waits_until_started() -> None:
    clock = ScaledClock(start=DEC1, speed=10080, paused=True)
    assert clock.now() == DEC1
    assert clock.real_seconds(7 * 24 * 3600) == pytest.approx(60.0)
    clock.restart()
    assert clock.now() >= DEC1
    with pytest.raises(ValueError, match="timezone-aware"):
        ScaledClock(start=datetime(2025, 12, 1), speed=2)
