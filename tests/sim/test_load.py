"""Usage profiles: the values a scenario author expects at each simulated second."""

from __future__ import annotations

import math
import time

import pytest
from pydantic import ValidationError

from pve_sim.load import (
    ConstantProfile,
    MetricProfiles,
    PeriodicProfile,
    RampProfile,
    StepProfile,
    TraceProfile,
    UsageFractions,
    parse_profile,
    yaml_alias,
)


def values(profile_yaml: object, times: list[float]) -> list[float]:
    profile = parse_profile(profile_yaml)
    return [round(profile.value_at(t), 6) for t in times]


class TestConstant:
    def test_bare_number_is_a_constant(self) -> None:
        profile = parse_profile(0.4)
        assert isinstance(profile, ConstantProfile)
        assert values(0.4, [0, 1e6]) == [0.4, 0.4]

    def test_integer_one_means_full(self) -> None:
        assert values(1, [0]) == [1.0]

    def test_boolean_is_not_a_fraction(self) -> None:
        with pytest.raises(ValidationError, match="not a boolean"):
            parse_profile(True)

    @pytest.mark.parametrize("bad", [1.2, -0.1, {"type": "constant", "value": 2}])
    def test_fraction_outside_0_1_is_rejected(self, bad: object) -> None:
        with pytest.raises(ValidationError):
            parse_profile(bad)

    def test_unknown_type_is_rejected(self) -> None:
        with pytest.raises(ValidationError, match="'wave'"):
            parse_profile({"type": "wave", "value": 0.1})


class TestStep:
    def test_steps_hold_each_value_from_their_time(self) -> None:
        profile = {"type": "step", "before": 0.2, "steps": [{"at": 60, "value": 0.9}, {"at": 300, "value": 0.4}]}
        assert values(profile, [0, 59.9, 60, 200, 299.99, 300, 1e6]) == [0.2, 0.2, 0.9, 0.9, 0.9, 0.4, 0.4]

    def test_shorthand_is_one_step(self) -> None:
        profile = {"type": "step", "before": 0.3, "at": 60, "after": 0.95}
        assert values(profile, [0, 59, 60, 61]) == [0.3, 0.3, 0.95, 0.95]

    def test_before_defaults_to_idle(self) -> None:
        assert values({"type": "step", "at": 10, "after": 0.5}, [0, 10]) == [0.0, 0.5]

    @pytest.mark.parametrize(
        ("profile", "message"),
        [
            ({"type": "step", "at": 10}, "needs both at and after"),
            (
                {"type": "step", "at": 10, "after": 0.5, "steps": [{"at": 1, "value": 0.1}]},
                "either steps or the at/after shorthand",
            ),
            ({"type": "step", "before": 0.1}, "needs steps"),
            (
                {"type": "step", "steps": [{"at": 60, "value": 0.1}, {"at": 30, "value": 0.2}]},
                "strictly increasing",
            ),
        ],
    )
    def test_malformed_steps_are_rejected(self, profile: object, message: str) -> None:
        with pytest.raises(ValidationError, match=message):
            parse_profile(profile)


class TestRamp:
    def test_linear_between_start_and_end_and_clamped_outside(self) -> None:
        profile = {"type": "ramp", "from": 0.2, "to": 0.8, "start": 100, "end": 400}
        assert values(profile, [0, 100, 250, 400, 1e6]) == [0.2, 0.2, 0.5, 0.8, 0.8]

    def test_ramp_down(self) -> None:
        assert values({"type": "ramp", "from": 0.9, "to": 0.1, "end": 80}, [0, 20, 80]) == [0.9, 0.7, 0.1]

    def test_end_must_follow_start(self) -> None:
        with pytest.raises(ValidationError, match="end must be after its start"):
            parse_profile({"type": "ramp", "from": 0, "to": 1, "start": 50, "end": 50})


class TestPeriodic:
    def test_sine_rises_from_base_first(self) -> None:
        profile = {"type": "periodic", "base": 0.5, "amplitude": 0.1, "periodSeconds": 600}
        assert values(profile, [0, 150, 300, 450, 600]) == [0.5, 0.6, 0.5, 0.4, 0.5]

    def test_phase_shifts_the_cycle_later(self) -> None:
        profile = {"type": "periodic", "base": 0.5, "amplitude": 0.1, "periodSeconds": 600, "phaseSeconds": 150}
        assert values(profile, [150, 300]) == [0.5, 0.6]

    def test_square_is_high_then_low(self) -> None:
        profile = {"type": "periodic", "base": 0.5, "amplitude": 0.2, "periodSeconds": 100, "shape": "square"}
        assert values(profile, [0, 49.9, 50, 99.9, 100, 150]) == [0.7, 0.7, 0.3, 0.3, 0.7, 0.3]

    def test_values_past_the_bounds_are_clamped(self) -> None:
        profile = {"type": "periodic", "base": 0.9, "amplitude": 0.3, "periodSeconds": 100, "shape": "square"}
        assert values(profile, [10, 60]) == [1.0, 0.6]
        sine = parse_profile({"type": "periodic", "base": 0.1, "amplitude": 0.5, "periodSeconds": 100})
        samples = [sine.value_at(t) for t in range(0, 100)]
        assert min(samples) == 0.0
        assert max(samples) == pytest.approx(0.6)

    def test_period_must_be_positive(self) -> None:
        with pytest.raises(ValidationError, match="periodSeconds"):
            parse_profile({"type": "periodic", "base": 0.5, "amplitude": 0.1, "periodSeconds": 0})


class TestTrace:
    POINTS = [[0, 0.2], [60, 0.8], [120, 0.2]]

    def test_linear_interpolation_and_holding_the_ends(self) -> None:
        profile = {"type": "trace", "points": [[30, 0.2], [60, 0.8], [120, 0.2]]}
        assert values(profile, [0, 30, 45, 60, 90, 120, 1e6]) == [0.2, 0.2, 0.5, 0.8, 0.5, 0.2, 0.2]

    def test_step_interpolation_holds_until_the_next_point(self) -> None:
        profile = {"type": "trace", "points": self.POINTS, "interpolate": "step"}
        assert values(profile, [0, 59.9, 60, 119, 120, 500]) == [0.2, 0.2, 0.8, 0.8, 0.2, 0.2]

    def test_repeat_loops_with_the_last_point_as_cycle_length(self) -> None:
        profile = parse_profile({"type": "trace", "points": [[0, 0.1], [60, 0.7], [100, 0.5]], "repeat": True})
        assert profile.value_at(30) == pytest.approx(0.4)
        assert profile.value_at(130) == pytest.approx(0.4)
        assert profile.value_at(1030) == pytest.approx(0.4)
        # At the cycle boundary the trace restarts at its first point.
        assert profile.value_at(100) == pytest.approx(0.1)
        assert profile.value_at(99.999) == pytest.approx(0.5, abs=1e-3)

    def test_without_repeat_the_last_value_holds(self) -> None:
        assert values({"type": "trace", "points": [[0, 0.1], [60, 0.7], [100, 0.5]]}, [130]) == [0.5]

    def test_single_point_is_constant(self) -> None:
        assert values({"type": "trace", "points": [[10, 0.3]]}, [0, 10, 99]) == [0.3, 0.3, 0.3]

    @pytest.mark.parametrize(
        ("profile", "message"),
        [
            ({"type": "trace", "points": [[0, 0.1], [0, 0.2]]}, "strictly increasing"),
            ({"type": "trace", "points": [[5, 0.1], [10, 0.2]], "repeat": True}, "must start at time 0"),
            ({"type": "trace", "points": [[0, 0.1]], "repeat": True}, "at least two points"),
            ({"type": "trace", "points": []}, "at least 1 item"),
            ({"type": "trace", "points": [[0, 1.5]]}, "less than or equal to 1"),
            ({"type": "trace", "points": [[0, 0.5]], "interpolate": "cubic"}, "'linear' or 'step'"),
        ],
    )
    def test_malformed_traces_are_rejected(self, profile: object, message: str) -> None:
        with pytest.raises(ValidationError, match=message):
            parse_profile(profile)


class TestMetricProfiles:
    def test_unset_metrics_are_idle(self) -> None:
        profiles = MetricProfiles.model_validate({"memory": 0.5})
        assert profiles.values_at(100) == UsageFractions(memory=0.5, cpu=0.0, disk=0.0)

    def test_replaced_swaps_only_the_given_metrics(self) -> None:
        profiles = MetricProfiles.model_validate({"memory": 0.5, "cpu": 0.2, "disk": 0.3})
        spiked = profiles.replaced(memory=parse_profile({"type": "step", "before": 0.5, "at": 60, "after": 0.9}))
        assert spiked.values_at(120) == UsageFractions(memory=0.9, cpu=0.2, disk=0.3)
        assert profiles.values_at(120).memory == 0.5

    def test_unknown_metric_is_an_error(self) -> None:
        with pytest.raises(ValidationError, match="swap"):
            MetricProfiles.model_validate({"swap": 0.1})

    def test_profiles_are_immutable(self) -> None:
        profile = parse_profile({"type": "trace", "points": [[0, 0.1], [10, 0.9]]})
        assert isinstance(profile, TraceProfile)
        with pytest.raises(ValidationError):
            profile.repeat = True  # type: ignore[misc]


def test_python_construction_uses_python_names() -> None:
    ramp = RampProfile(from_value=0.0, to_value=1.0, start_seconds=0, end_seconds=10)
    step = StepProfile(before=0.1, at_seconds=5, after=0.6)
    periodic = PeriodicProfile(base=0.5, amplitude=0.5, period_seconds=4, shape="square")
    assert (ramp.value_at(5), step.value_at(5), periodic.value_at(3)) == (0.5, 0.6, 0.0)


def test_yaml_alias_capitalises_binary_units() -> None:
    assert yaml_alias("memory_gib") == "memoryGiB"
    assert yaml_alias("migrate_mib_per_second") == "migrateMiBPerSecond"
    assert yaml_alias("period_seconds") == "periodSeconds"
    assert yaml_alias("cores") == "cores"


def test_evaluating_5000_containers_is_cheap() -> None:
    """/cluster/resources with 5,000 CTs evaluates 15,000 profiles; print what that costs."""
    kinds: list[object] = [
        0.3,
        {"type": "step", "before": 0.2, "steps": [{"at": 60, "value": 0.9}, {"at": 300, "value": 0.4}]},
        {"type": "ramp", "from": 0.1, "to": 0.9, "start": 0, "end": 600},
        {"type": "periodic", "base": 0.5, "amplitude": 0.2, "periodSeconds": 600},
        {"type": "trace", "points": [[i * 10, (i % 10) / 10] for i in range(100)], "repeat": True},
    ]
    containers = [
        MetricProfiles(
            memory=parse_profile(kinds[i % 5]),
            cpu=parse_profile(kinds[(i + 1) % 5]),
            disk=parse_profile(kinds[(i + 2) % 5]),
        )
        for i in range(5000)
    ]
    for profiles in containers:  # first use fills the cached lookup tables
        profiles.values_at(0.0)
    started = time.perf_counter()
    total = 0.0
    for profiles in containers:
        memory, cpu, disk = profiles.values_at(123.4)
        total += memory + cpu + disk
    elapsed_ms = (time.perf_counter() - started) * 1000
    print(f"\n5,000 CTs x 3 profiles: {elapsed_ms:.1f} ms per evaluation pass")
    assert math.isfinite(total)
    assert 0.0 < total < 15000.0
