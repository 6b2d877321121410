"""Checks of a peer's reported moves on the cell grid (spec 5.2: position
validation, speed hacking detection).

A :class:`MoveValidator` is kept per remote player. Each position the peer
reports is checked against the positions accepted before it, by the time they
*arrived here* (the peer's own clock, ``tick``, is the peer's word and not
trusted for this):

- ``wall``: the cell cannot be walked (a wall, a cliff, outside the map), or
  it cannot be reached from the last accepted cell in the steps the time
  allows (walking through a wall);
- ``teleport``: a change of map, or a jump far beyond what the time allows,
  without a warp the game server confirmed (:meth:`MoveValidator.warp`);
- ``speed``: more cells than the speed allows since any accepted position
  of the last ``window`` seconds (so that a steady small excess adds up and is
  caught), or a declared speed faster than the server's for that player.

The time allowed is the time between arrivals plus a tolerance for latency
and jitter: ``base_tolerance`` plus ``jitter_factor`` times the peer's measured
jitter, at most ``max_tolerance``. The speed used is the server's for that
player when the game passed it, else the one the peer declares. Diagonal steps
are counted as cheap as straight ones (lenient). A rejected position is not
accepted: later moves are measured from the last accepted one.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from p2pd.channels.position_codec import PositionState
from p2pd.cheat.mapgrid import MapStore
from p2pd.cheat.sight import reachable

HISTORY = 64  # accepted positions kept per peer


class MoveFault(StrEnum):
    WALL = "wall"
    TELEPORT = "teleport"
    SPEED = "speed"


@dataclass(frozen=True, slots=True)
class MoveRules:
    base_tolerance: float = 0.3  # seconds of slack beyond the time between arrivals
    jitter_factor: float = 4.0  # times the peer's measured jitter, added to it
    max_tolerance: float = 1.5  # seconds, at most
    window: float = 5.0  # seconds of accepted positions each move is checked against
    teleport_factor: float = 2.0  # a jump beyond this many times the allowance, and
    teleport_margin: int = 8  # this many cells beyond it, is a teleport, not speed
    speed_margin: float = 0.9  # a declared speed below 0.9x the server's is a hack


@dataclass(frozen=True, slots=True)
class MoveVerdict:
    fault: MoveFault | None  # None: accepted
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.fault is None


_OK = MoveVerdict(None)


@dataclass(frozen=True, slots=True)
class _Seen:
    at: float  # arrival time here
    map: str
    x: int
    y: int


class MoveValidator:
    """The accepted positions of one remote player and the checks of new ones."""

    __slots__ = ("_history", "_maps", "accepted", "rejected", "rules", "server_speed")

    def __init__(self, maps: MapStore, rules: MoveRules = MoveRules()) -> None:
        self._maps = maps
        self.rules = rules
        self._history: deque[_Seen] = deque(maxlen=HISTORY)
        self.server_speed: int | None = None  # ms per cell, from the game server
        self.accepted = 0
        self.rejected = 0

    def warp(self, map_name: str, x: int, y: int, now: float, speed: int | None = None) -> None:
        """The game server placed the player here (a warp, a respawn, or its
        authoritative position): later moves are measured from it."""
        self._history.clear()
        self._history.append(_Seen(now, map_name, x, y))
        if speed is not None:
            self.server_speed = speed

    def tolerance(self, jitter: float) -> float:
        rules = self.rules
        return min(rules.base_tolerance + rules.jitter_factor * jitter, rules.max_tolerance)

    def check(self, state: PositionState, now: float, jitter: float = 0.0) -> MoveVerdict:
        """Judge the peer's new position, arrived at ``now``; ``jitter``: the
        peer's measured jitter in seconds. An accepted one is remembered."""
        verdict = self._judge(state, now, jitter)
        if verdict.ok:
            self.accepted += 1
            self._history.append(_Seen(now, state.map, state.x, state.y))
        else:
            self.rejected += 1
        return verdict

    def _judge(self, state: PositionState, now: float, jitter: float) -> MoveVerdict:
        rules = self.rules
        grid = self._maps.get(state.map)
        if grid is not None and not grid.walkable(state.x, state.y):
            return MoveVerdict(MoveFault.WALL, f"({state.x}, {state.y}) on {state.map} "
                                               "cannot be walked")
        server = self.server_speed
        if server is not None and state.speed < server * rules.speed_margin:
            return MoveVerdict(MoveFault.SPEED, f"declares {state.speed} ms/cell, the "
                                                f"server says {server}")
        history = self._history
        if not history:
            return _OK  # nothing to measure against yet
        last = history[-1]
        if state.map != last.map:
            return MoveVerdict(MoveFault.TELEPORT, f"from {last.map} to {state.map} without "
                                                   "a warp")
        speed = server if server is not None else state.speed
        slack = self.tolerance(jitter)
        while len(history) > 1 and now - history[0].at > rules.window:
            history.popleft()
        for seen in history:
            allowed = (now - seen.at + slack) * 1000.0 / speed + 1.0
            distance = max(abs(state.x - seen.x), abs(state.y - seen.y))
            if distance > allowed:
                far = distance > allowed * rules.teleport_factor + rules.teleport_margin
                return MoveVerdict(
                    MoveFault.TELEPORT if far else MoveFault.SPEED,
                    f"{distance} cells in {now - seen.at:.2f} s at {speed} ms/cell "
                    f"(at most {allowed:.1f})")
        if grid is not None:
            steps = int((now - last.at + slack) * 1000.0 / speed) + 1
            if not reachable(grid, (last.x, last.y), (state.x, state.y), steps):
                return MoveVerdict(MoveFault.WALL, f"({state.x}, {state.y}) cannot be reached "
                                                   f"from ({last.x}, {last.y}) in {steps} steps")
        return _OK
