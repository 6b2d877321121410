"""The interpolation buffer of one remote player: where to draw it at render time.

Samples are the player's positions as received (in order: the position
channel never delivers an older one after a newer), stamped with the sender's
clock. Asked for the position at a time on that clock, the track
interpolates linearly between the two samples around it, or, past the newest,
extrapolates it by dead reckoning (a walking player goes on at its speed in
its direction, in fractions of a cell) for at most ``max_extrapolation``
seconds, then holds. A position on another map than the newest sample's is
never blended with it.

Authoritative correction: :meth:`EntityTrack.correct` takes the game
server's position. A small error is blended (the server's cell becomes a
sample ``blend`` seconds ahead of the time being rendered, so the drawn
player glides there); a large one snaps (the samples are dropped and the
player is drawn on the server's cell at once).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from p2pd.channels.position_codec import PositionState
from p2pd.channels.positions import DIAGONAL_COST, STEPS

SAMPLES = 32  # kept per player


@dataclass(frozen=True, slots=True)
class Rendered:
    map: str
    x: float  # fractional cells
    y: float
    dir: int
    moving: bool
    extrapolated: bool  # past the newest sample


@dataclass(frozen=True, slots=True)
class _Sample:
    tick: float  # the sender's clock, ms
    state: PositionState


def walk(state: PositionState, ms: float) -> tuple[float, float]:
    """Where ``state`` is ``ms`` after its tick, walking straight on (fractional)."""
    if not state.moving or ms <= 0:
        return float(state.x), float(state.y)
    dx, dy = STEPS[state.dir]
    cells = ms / (state.speed * (DIAGONAL_COST if dx and dy else 1.0))
    return state.x + dx * cells, state.y + dy * cells


class EntityTrack:
    __slots__ = ("_samples", "max_extrapolation_ms")

    def __init__(self, max_extrapolation: float = 1.0) -> None:
        self._samples: deque[_Sample] = deque(maxlen=SAMPLES)
        self.max_extrapolation_ms = max_extrapolation * 1000.0

    def __bool__(self) -> bool:
        return bool(self._samples)

    def add(self, state: PositionState, tick: float | None = None) -> None:
        at = float(state.tick if tick is None else tick)
        samples = self._samples
        while samples and samples[-1].tick > at:  # a correction stamped ahead of it
            samples.pop()
        samples.append(_Sample(at, state))

    @property
    def newest(self) -> PositionState | None:
        return self._samples[-1].state if self._samples else None

    def at(self, tick: float) -> Rendered | None:
        """The position at the sender's clock ``tick`` (ms), or None without samples."""
        samples = self._samples
        if not samples:
            return None
        newest = samples[-1]
        if tick >= newest.tick:
            state = newest.state
            ahead = min(tick - newest.tick, self.max_extrapolation_ms)
            x, y = walk(state, ahead)
            return Rendered(state.map, x, y, state.dir, state.moving,
                            state.moving and tick > newest.tick)
        before = samples[0]
        if tick <= before.tick:
            s = before.state
            return Rendered(s.map, float(s.x), float(s.y), s.dir, s.moving, False)
        for after in samples:  # few samples: a linear walk is fine
            if after.tick > tick:
                break
            before = after
        a, b = before.state, after.state
        if a.map != b.map:
            return Rendered(a.map, float(a.x), float(a.y), a.dir, a.moving, False)
        f = (tick - before.tick) / (after.tick - before.tick)
        return Rendered(a.map, a.x + (b.x - a.x) * f, a.y + (b.y - a.y) * f, a.dir,
                        a.moving, False)

    def correct(self, server: PositionState, render_tick: float, snap: bool,
                blend_ms: float) -> None:
        """Take the server's position: ``snap`` at once, else blend over ``blend_ms``."""
        if snap:
            self._samples.clear()
            self._samples.append(_Sample(render_tick, server))
        else:
            self.add(server, render_tick + blend_ms)
