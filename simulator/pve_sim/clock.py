"""The simulator's clock: simulated seconds, scaled from real time, freezable and steppable.

``time_scale`` is real seconds per simulated second: 1 runs in real time, 0.1 runs ten times faster,
and 0 means "manual": the clock moves only when told to (``advance``/``set``) and tasks finish
instantly. Everything in the simulator that depends on time (task progress, load profiles, scenario
events, RRD history) reads ``now()`` from here, never ``time.time()``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class SimClock:
    """Simulated epoch seconds.

    ``start_epoch`` is the simulated wall-clock time at simulator start (what UPIDs, task start
    times and RRD rows show). ``elapsed()`` is simulated seconds since start, the time base of load
    profiles and scenario events.
    """

    def __init__(
        self,
        time_scale: float = 1.0,
        *,
        start_epoch: float | None = None,
        real_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if time_scale < 0:
            raise ValueError("time_scale must be >= 0 (0 = manual clock, 1 = real time)")
        self._lock = threading.Lock()
        self._real_clock = real_clock
        self._time_scale = time_scale
        self.start_epoch = float(int(start_epoch if start_epoch is not None else time.time()))
        self._frozen = time_scale == 0
        # Simulated elapsed seconds accumulated up to the real instant `_anchor_real`.
        self._anchor_elapsed = 0.0
        self._anchor_real = real_clock()

    @property
    def time_scale(self) -> float:
        return self._time_scale

    @property
    def frozen(self) -> bool:
        return self._frozen

    @property
    def instant_tasks(self) -> bool:
        """True when tasks should complete at once (time scale 0)."""
        return self._time_scale == 0

    def _elapsed_locked(self) -> float:
        if self._frozen:
            return self._anchor_elapsed
        return self._anchor_elapsed + (self._real_clock() - self._anchor_real) / self._time_scale

    def elapsed(self) -> float:
        """Simulated seconds since the simulator started."""
        with self._lock:
            return self._elapsed_locked()

    def now(self) -> float:
        """Simulated epoch seconds."""
        return self.start_epoch + self.elapsed()

    def freeze(self) -> None:
        """Stop the clock where it is (tasks and load profiles stop moving)."""
        with self._lock:
            self._anchor_elapsed = self._elapsed_locked()
            self._anchor_real = self._real_clock()
            self._frozen = True

    def resume(self) -> None:
        """Let a frozen clock run again at its time scale (a manual clock stays manual)."""
        with self._lock:
            if self._time_scale == 0:
                return
            self._anchor_real = self._real_clock()
            self._frozen = False

    def advance(self, seconds: float) -> None:
        """Move simulated time forward by ``seconds`` (frozen or running)."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._anchor_elapsed = self._elapsed_locked() + seconds
            self._anchor_real = self._real_clock()

    def set_time_scale(self, time_scale: float) -> None:
        if time_scale < 0:
            raise ValueError("time_scale must be >= 0")
        with self._lock:
            self._anchor_elapsed = self._elapsed_locked()
            self._anchor_real = self._real_clock()
            self._time_scale = time_scale
            self._frozen = time_scale == 0

    def real_seconds_for(self, simulated_seconds: float) -> float:
        """How long a simulated duration takes in real time at the current scale."""
        return simulated_seconds * self._time_scale
