"""Recorded walks for tests and benches: a player's cells over time on a map,
as DOMAIN.md describes movement (one cell per ``speed`` ms, diagonal steps
1.4 times as long, stop-and-go, turns), seeded and deterministic.

A :class:`Walk` is the list of the moments the player's state changed (a new
cell, a turn, a start or a stop), each with the position the game client would
send then; :meth:`Walk.at` is the true cell at any time.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass

from p2pd.channels.position_codec import PositionState
from p2pd.channels.positions import DIAGONAL_COST, STEPS
from p2pd.cheat.mapgrid import MapGrid


@dataclass(frozen=True, slots=True)
class Walk:
    times: list[float]  # seconds, ascending
    states: list[PositionState]  # the position sent at each time

    def at(self, t: float) -> PositionState:
        i = bisect.bisect_right(self.times, t) - 1
        return self.states[max(i, 0)]


def _free(grid: MapGrid | None, x: int, y: int, dx: int, dy: int) -> bool:
    if grid is None:
        return 0 <= x + dx <= 1023 and 0 <= y + dy <= 1023
    if not grid.walkable(x + dx, y + dy):
        return False
    return not (dx and dy) or (grid.walkable(x + dx, y) and grid.walkable(x, y + dy))


def record_walk(seed: int, seconds: float, start: tuple[int, int], *, map_name: str = "field",
                grid: MapGrid | None = None, speed: int = 150, kind: str = "mixed",
                tick_base: int = 1_000_000) -> Walk:
    """``kind``: ``straight`` (one direction, no stops), ``turns`` (walking,
    turning 45 or 90 degrees every few steps), ``stops`` (straight walks with
    stops), ``mixed`` (stop-and-go with turns: a typical walk in town)."""
    rng = random.Random(seed)
    x, y = start
    direction = rng.randrange(8)
    t = 0.0
    times: list[float] = []
    states: list[PositionState] = []

    def emit(moving: bool) -> None:
        times.append(t)
        states.append(PositionState(map_name, x, y, direction, speed, moving,
                                    tick_base + round(t * 1000)))

    emit(False)
    while t < seconds:
        if kind in ("stops", "mixed"):
            t += rng.uniform(0.5, 3.0)  # standing
            if kind == "mixed" and rng.random() < 0.5:
                direction = rng.randrange(8)
                emit(False)
        run_until = t + (rng.uniform(1.0, 5.0) if kind in ("stops", "mixed") else seconds)
        emit(True)
        while t < run_until and t < seconds:
            if kind in ("turns", "mixed") and rng.random() < (0.2 if kind == "turns" else 0.1):
                direction = (direction + rng.choice((-2, -1, 1, 2))) % 8
            for _ in range(8):
                dx, dy = STEPS[direction]
                if _free(grid, x, y, dx, dy):
                    break
                direction = rng.randrange(8)
            else:
                break  # boxed in: stand
            t += speed * (DIAGONAL_COST if dx and dy else 1.0) / 1000.0
            x, y = x + dx, y + dy
            emit(True)
        emit(False)
    return Walk(times, states)
