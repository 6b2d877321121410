"""The interpolation buffer of one remote player: where to draw it at render time.

Samples are the player's positions as received (in order: the position
channel never delivers an older one after a newer), stamped with the sender's
clock. Asked for the position at a time on that clock, the track
interpolates between the two samples around it along their courses
(:func:`between`: a turn where the two courses meet, a start when the walk
must begin), or, past the newest,
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


MEET_CELLS = 1.5  # two courses this close at some moment: one turn between the samples


def _step_ms(state: PositionState) -> float:
    dx, dy = STEPS[state.dir]
    return state.speed * (DIAGONAL_COST if dx and dy else 1.0)


def _meet(ux: float, uy: float, vx: float, vy: float, span: float) -> tuple[float, float]:
    """The moment in [0, span] at which the gap (ux + vx t, uy + vy t) is
    smallest (Chebyshev), and that gap."""
    moments = {0.0, span}
    for u, v in ((ux, vx), (uy, vy), (ux - uy, vx - vy), (ux + uy, vx + vy)):
        if v:
            moment = -u / v
            if 0.0 < moment < span:
                moments.add(moment)
    meet = min(moments, key=lambda m: max(abs(ux + vx * m), abs(uy + vy * m)))
    return meet, max(abs(ux + vx * meet), abs(uy + vy * meet))


def _two_legs(a: PositionState, b: PositionState, span: float, at: float,
              back: bool) -> tuple[float, tuple[float, float]]:
    """``a``'s course, then ``b``'s: how near the two courses come (cells), and
    the place ``at`` ms after ``a``. ``back``: ``b``'s course is ``b`` walked back
    from its tick (it walked in there); else ``b`` is a cell ``a``'s course
    reaches, where it then stands."""
    a_step = _step_ms(a)
    adx, ady = STEPS[a.dir]
    if back:
        b_step = _step_ms(b)
        bdx, bdy = STEPS[b.dir]
        ux, uy = b.x - bdx * span / b_step - a.x, b.y - bdy * span / b_step - a.y
        vx, vy = bdx / b_step - adx / a_step, bdy / b_step - ady / a_step
    else:  # the gap from a walked on to b's cell
        ux, uy = b.x - a.x, b.y - a.y
        vx, vy = -adx / a_step, -ady / a_step
    meet, gap = _meet(ux, uy, vx, vy, span)
    # the turn (or the arrival): halfway between the two courses at that moment
    turn_x = a.x + adx * meet / a_step + (ux + vx * meet) / 2
    turn_y = a.y + ady * meet / a_step + (uy + vy * meet) / 2
    if at <= meet:
        g = at / meet if meet > 0 else 1.0
        return gap, (a.x + (turn_x - a.x) * g, a.y + (turn_y - a.y) * g)
    if not back:
        return gap, (float(b.x), float(b.y))
    g = (at - meet) / (span - meet)
    return gap, (turn_x + (b.x - turn_x) * g, turn_y + (b.y - turn_y) * g)


def between(a: PositionState, ta: float, b: PositionState, tb: float,
            tick: float) -> tuple[float, float]:
    """The position at ``tick`` between two samples ``a`` (at ``ta``) and ``b``
    (at ``tb``, later), by the courses they give rather than the straight line
    between their cells. The sender leaves out whatever dead reckoning from a
    walking ``a`` predicts, so until ``b`` the player followed ``a``'s course
    and then, after at most one turn, ``b``'s: the turn goes where the two
    courses meet (``a`` walked on, ``b`` walked back), or, for a ``b`` standing,
    where ``a``'s course reaches its cell (it stands there from then on). A
    start (``a`` standing, ``b`` walking) waits on ``a``'s cell until the walk
    to ``b`` must begin. Courses that never meet (a turn lost, several turns)
    are drawn straight."""
    span = tb - ta
    at = tick - ta
    f = at / span if span > 0 else 1.0
    straight = (a.x + (b.x - a.x) * f, a.y + (b.y - a.y) * f)
    if span <= 0 or (not a.moving and not b.moving):
        return straight
    if not a.moving:  # a start: stand, then walk to b at b's pace
        cells = max(abs(b.x - a.x), abs(b.y - a.y))
        start = max(span - cells * _step_ms(b), 0.0)
        if at <= start:
            return float(a.x), float(a.y)
        g = (at - start) / (span - start)
        return a.x + (b.x - a.x) * g, a.y + (b.y - a.y) * g
    gap, place = _two_legs(a, b, span, at, back=True)
    if not b.moving:  # a stop: turned into b's cell, or on a's course to it
        gap_on, place_on = _two_legs(a, b, span, at, back=False)
        if gap_on < gap:
            gap, place = gap_on, place_on
    return straight if gap > MEET_CELLS else place


class EntityTrack:
    __slots__ = ("_samples", "max_extrapolation_ms")

    def __init__(self, max_extrapolation: float = 1.0) -> None:
        self._samples: deque[_Sample] = deque(maxlen=SAMPLES)
        self.max_extrapolation_ms = max_extrapolation * 1000.0

    def __bool__(self) -> bool:
        return bool(self._samples)

    def clear(self) -> None:
        self._samples.clear()

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
        x, y = between(a, before.tick, b, after.tick, tick)
        return Rendered(a.map, x, y, a.dir, a.moving, False)

    def correct(self, server: PositionState, render_tick: float, snap: bool,
                blend_ms: float) -> None:
        """Take the server's position: ``snap`` at once, else blend over ``blend_ms``."""
        if snap:
            self._samples.clear()
            self._samples.append(_Sample(render_tick, server))
        else:
            self.add(server, render_tick + blend_ms)
