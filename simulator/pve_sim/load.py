"""Usage profiles: how a CT's or a node's memory, CPU and disk use move over simulated time.

A profile maps *elapsed simulated seconds* (``SimClock.elapsed()``, the time base of scenarios) to a
usage *fraction* in [0, 1]: of the CT's own configured size (memory of ``memory``, CPU of ``cores``,
disk of the rootfs size) or, for a node's base load, of the node's capacity. The simulator core turns
fractions into bytes and CPU shares; this module knows nothing about CTs, nodes or HTTP.

Profiles are pydantic models (a union discriminated on ``type``) so scenarios validate them with the
rest of the file, but ``value_at`` is on the hot path: ``/cluster/resources`` with 5,000 CTs asks for
15,000 values per request. So ``value_at`` reads plain fields or tuples cached on first use (never
pydantic private attributes, which cost about a microsecond per access), and traces are searched
with ``bisect``. Profiles are frozen, so a cached tuple can never go stale.

YAML forms (times in simulated seconds since start, values as fractions)::

    memory: 0.4                                               # a bare number is a constant
    memory: {type: constant, value: 0.4}
    memory: {type: step, before: 0.3, steps: [{at: 60, value: 0.9}, {at: 300, value: 0.3}]}
    memory: {type: step, before: 0.3, at: 60, after: 0.9}    # one-step shorthand
    memory: {type: ramp, from: 0.2, to: 0.8, start: 60, end: 360}
    memory: {type: periodic, base: 0.5, amplitude: 0.1, periodSeconds: 600, shape: sine}
    memory: {type: trace, points: [[0, 0.2], [60, 0.8], [120, 0.2]], interpolate: linear, repeat: true}
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from bisect import bisect_right
from collections.abc import Mapping
from functools import cached_property
from itertools import pairwise
from typing import Annotated, Any, Literal, NamedTuple, TypeAlias

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, model_validator

# Unit words that keep their capitals in YAML names: `memory_gib` -> `memoryGiB`, as people write it.
_UNIT_WORDS = {"kib": "KiB", "mib": "MiB", "gib": "GiB", "tib": "TiB"}


def yaml_alias(field_name: str) -> str:
    """The YAML spelling of a Python field name: camelCase with binary units capitalised.

    ``memory_gib`` -> ``memoryGiB``, ``migrate_mib_per_second`` -> ``migrateMiBPerSecond``,
    ``period_seconds`` -> ``periodSeconds``. Shared by every scenario model so the format reads the
    same everywhere.
    """
    first, *rest = field_name.split("_")
    return first + "".join(_UNIT_WORDS.get(word, word[:1].upper() + word[1:]) for word in rest)


class SpecModel(BaseModel):
    """Base of the profile and scenario models: YAML spelling, typos rejected, immutable."""

    # Written out here (not shared through a variable) so the pydantic mypy plugin sees it.
    model_config = ConfigDict(
        alias_generator=yaml_alias,
        populate_by_name=True,
        # A typo in a scenario must be an error, not a silently ignored key.
        extra="forbid",
        frozen=True,
        # NaN or infinity in a scenario is always a mistake and would poison every comparison.
        allow_inf_nan=False,
        use_attribute_docstrings=True,
    )

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
"""A usage fraction: 0 = idle/empty, 1 = the whole configured size or node capacity."""

TimeSeconds = Annotated[float, Field(ge=0.0)]
"""Simulated seconds since the simulator started."""


class UsageFractions(NamedTuple):
    """Memory, CPU and disk use at one instant, each a fraction in [0, 1]."""

    memory: float
    cpu: float
    disk: float


class BaseProfile(SpecModel, ABC):
    """A usage fraction as a function of elapsed simulated seconds."""

    @abstractmethod
    def value_at(self, elapsed_seconds: float) -> float:
        """The usage fraction (clamped to [0, 1]) ``elapsed_seconds`` after simulator start."""


class ConstantProfile(BaseProfile):
    """The same fraction forever. A bare number in YAML means this."""

    type: Literal["constant"] = "constant"
    """Profile kind (the YAML discriminator)."""
    value: Fraction = 0.0
    """The usage fraction."""

    def value_at(self, elapsed_seconds: float) -> float:
        return self.value


class StepPoint(SpecModel):
    """From ``at`` on (until the next step), the profile holds ``value``."""

    at_seconds: TimeSeconds = Field(alias="at")
    """Simulated seconds since start at which the value changes."""
    value: Fraction
    """The fraction held from ``at`` on."""


class StepProfile(BaseProfile):
    """Piecewise constant: ``before`` until the first step, then each step's value from its ``at``.

    ``{before, at, after}`` is shorthand for a single step; give either that or ``steps``.
    """

    type: Literal["step"] = "step"
    """Profile kind (the YAML discriminator)."""
    before: Fraction = 0.0
    """The fraction before the first step."""
    steps: tuple[StepPoint, ...] = ()
    """Steps in strictly increasing order of ``at``."""
    at_seconds: TimeSeconds | None = Field(default=None, alias="at")
    """Shorthand: the time of the only step (with ``after``)."""
    after: Fraction | None = None
    """Shorthand: the fraction from ``at`` on."""

    @model_validator(mode="after")
    def _one_form_with_ordered_steps(self) -> StepProfile:
        shorthand = self.at_seconds is not None or self.after is not None
        if shorthand and self.steps:
            raise ValueError("give either steps or the at/after shorthand, not both")
        if shorthand and (self.at_seconds is None or self.after is None):
            raise ValueError("the step shorthand needs both at and after")
        if not shorthand and not self.steps:
            raise ValueError("a step profile needs steps (or the at/after shorthand)")
        times = [step.at_seconds for step in self.steps]
        if any(later <= earlier for earlier, later in pairwise(times)):
            raise ValueError("steps must be in strictly increasing order of at")
        return self

    @cached_property
    def _table(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        if self.at_seconds is not None and self.after is not None:
            return (self.at_seconds,), (self.after,)
        return tuple(s.at_seconds for s in self.steps), tuple(s.value for s in self.steps)

    def value_at(self, elapsed_seconds: float) -> float:
        times, values = self._table
        index = bisect_right(times, elapsed_seconds)
        return values[index - 1] if index else self.before


class RampProfile(BaseProfile):
    """A straight line from ``from`` at ``start`` to ``to`` at ``end``; flat outside that window."""

    type: Literal["ramp"] = "ramp"
    """Profile kind (the YAML discriminator)."""
    from_value: Fraction = Field(alias="from")
    """The fraction up to ``start``."""
    to_value: Fraction = Field(alias="to")
    """The fraction from ``end`` on."""
    start_seconds: TimeSeconds = Field(default=0.0, alias="start")
    """Simulated seconds since start at which the ramp begins."""
    end_seconds: TimeSeconds = Field(alias="end")
    """Simulated seconds since start at which the ramp reaches ``to``; after ``start``."""

    @model_validator(mode="after")
    def _end_after_start(self) -> RampProfile:
        if self.end_seconds <= self.start_seconds:
            raise ValueError("a ramp's end must be after its start (use a step profile for a jump)")
        return self

    def value_at(self, elapsed_seconds: float) -> float:
        if elapsed_seconds <= self.start_seconds:
            return self.from_value
        if elapsed_seconds >= self.end_seconds:
            return self.to_value
        progress = (elapsed_seconds - self.start_seconds) / (self.end_seconds - self.start_seconds)
        return self.from_value + (self.to_value - self.from_value) * progress


class PeriodicProfile(BaseProfile):
    """``base`` plus a wave of ``amplitude``, clamped to [0, 1].

    One cycle starts at ``phaseSeconds`` (and every ``periodSeconds`` before and after it): a sine
    rises from ``base`` first; a square wave is ``base + amplitude`` for the first half of the cycle
    and ``base - amplitude`` for the second. ``base + amplitude`` may exceed 1 on purpose: the
    value then saturates at 1 (a CT pinned at its limit for part of each cycle).
    """

    type: Literal["periodic"] = "periodic"
    """Profile kind (the YAML discriminator)."""
    base: Fraction
    """The fraction the wave swings around."""
    amplitude: Fraction
    """The swing above and below ``base``."""
    period_seconds: float = Field(gt=0.0)
    """Length of one cycle in simulated seconds."""
    phase_seconds: float = 0.0
    """When a cycle starts, in simulated seconds since start (shifts the wave later)."""
    shape: Literal["sine", "square"] = "sine"
    """The wave form."""

    def value_at(self, elapsed_seconds: float) -> float:
        cycles = (elapsed_seconds - self.phase_seconds) / self.period_seconds
        if self.shape == "sine":
            value = self.base + self.amplitude * math.sin(2.0 * math.pi * cycles)
        else:
            high = cycles - math.floor(cycles) < 0.5
            value = self.base + self.amplitude if high else self.base - self.amplitude
        return 0.0 if value < 0.0 else 1.0 if value > 1.0 else value


class TraceProfile(BaseProfile):
    """A recorded series: ``[time, fraction]`` points, interpolated between them.

    Before the first point the first value holds, after the last point the last value holds. With
    ``repeat`` the trace loops: it must start at time 0 and one cycle lasts until the last point's
    time, at which the cycle restarts at the first point (make the last value equal the first for a
    seamless loop).
    """

    type: Literal["trace"] = "trace"
    """Profile kind (the YAML discriminator)."""
    points: tuple[tuple[TimeSeconds, Fraction], ...] = Field(min_length=1)
    """``[seconds since start, fraction]`` pairs in strictly increasing time order."""
    interpolate: Literal["linear", "step"] = "linear"
    """``linear`` draws straight lines between points; ``step`` holds each value until the next point."""
    repeat: bool = False
    """Loop the trace forever instead of holding the last value."""

    @model_validator(mode="after")
    def _ordered_and_loopable(self) -> TraceProfile:
        times = [t for t, _ in self.points]
        if any(later <= earlier for earlier, later in pairwise(times)):
            raise ValueError("trace points must be in strictly increasing time order")
        if self.repeat and (times[0] != 0.0 or len(times) < 2):
            raise ValueError("a repeating trace must start at time 0 and have at least two points")
        return self

    @cached_property
    def _table(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return tuple(t for t, _ in self.points), tuple(v for _, v in self.points)

    def value_at(self, elapsed_seconds: float) -> float:
        times, values = self._table
        if self.repeat:
            elapsed_seconds %= times[-1]
        index = bisect_right(times, elapsed_seconds)
        if index == 0:
            return values[0]
        if index == len(times) or self.interpolate == "step":
            return values[index - 1]
        t0, t1 = times[index - 1], times[index]
        v0, v1 = values[index - 1], values[index]
        return v0 + (v1 - v0) * (elapsed_seconds - t0) / (t1 - t0)


def _bare_number_is_constant(value: Any) -> Any:
    """YAML ``memory: 0.4`` means ``{type: constant, value: 0.4}``; booleans are not numbers here."""
    if isinstance(value, bool):
        raise ValueError("a usage profile is a fraction (0..1) or a mapping with a type, not a boolean")
    if isinstance(value, int | float):
        return {"type": "constant", "value": value}
    if not isinstance(value, Mapping | BaseProfile):
        raise ValueError("a usage profile is a fraction (0..1) or a mapping with a type")
    return value


UsageProfile: TypeAlias = Annotated[
    Annotated[
        ConstantProfile | StepProfile | RampProfile | PeriodicProfile | TraceProfile,
        Field(discriminator="type"),
    ],
    BeforeValidator(_bare_number_is_constant),
]
"""Any usage profile; in YAML a mapping discriminated on ``type``, or a bare number (constant)."""

_PROFILE_ADAPTER: TypeAdapter[UsageProfile] = TypeAdapter(UsageProfile)


def parse_profile(obj: object) -> UsageProfile:
    """Validate one profile from its YAML/JSON form (raises ``pydantic.ValidationError``)."""
    return _PROFILE_ADAPTER.validate_python(obj)


def _idle() -> UsageProfile:
    return ConstantProfile(value=0.0)


class MetricProfiles(SpecModel):
    """One usage profile per metric. Unset metrics stay at 0 (idle, empty)."""

    memory: UsageProfile = Field(default_factory=_idle)
    """Memory in use, as a fraction of the configured memory (or node RAM)."""
    cpu: UsageProfile = Field(default_factory=_idle)
    """CPU in use, as a fraction of the configured cores (or node cores)."""
    disk: UsageProfile = Field(default_factory=_idle)
    """Root filesystem in use, as a fraction of its size (or the node's root filesystem)."""

    def values_at(self, elapsed_seconds: float) -> UsageFractions:
        """All three fractions at one instant."""
        return UsageFractions(
            self.memory.value_at(elapsed_seconds),
            self.cpu.value_at(elapsed_seconds),
            self.disk.value_at(elapsed_seconds),
        )

    def replaced(
        self,
        *,
        memory: UsageProfile | None = None,
        cpu: UsageProfile | None = None,
        disk: UsageProfile | None = None,
    ) -> MetricProfiles:
        """A copy with the given metrics swapped (a scenario event that changes some metrics)."""
        return MetricProfiles(
            memory=self.memory if memory is None else memory,
            cpu=self.cpu if cpu is None else cpu,
            disk=self.disk if disk is None else disk,
        )
