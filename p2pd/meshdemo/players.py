"""Simulated players: what each one does, when, and where everybody stands.

Pure and seeded: :func:`write_script` gives the same actions for the same
seed, player and duration, whatever the machine; the runner only plays them
in real time. Facts from the game (``/work/shared/DOMAIN.md``): a position is
a cell on a map; a player walks one cell per 150 ms, a diagonal step takes
about 1.4 times as long; the view range is 14 cells each way (Chebyshev).

The scene: everyone logs in at Prontera's fountain (the save point), then
walks between a few spots about 20 cells apart (the fountain, the shops, the
gates), idles there a while, and meanwhile chats, casts effects, talks to
AI NPCs and changes the weather. Spots are near enough that players at two
of them often see each other, and the fountain draws more than its share, so
that more players are in view than ``max_peers`` allows links.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field

from p2pd.mesh.policy import VIEW_RANGE, chebyshev

MAP = "prontera"
WALK_MS = 150  # ms per cell, the game's default walk speed
DIAGONAL = 1.4  # a diagonal step takes this much longer
PLAYER_ID_BASE = 150_000  # the game's character ids start about here

# (name, x, y, weight): where players go; the fountain is the busiest
SPOTS: tuple[tuple[str, int, int, int], ...] = (
    ("fountain", 156, 191, 3),
    ("tool shop", 134, 186, 1),
    ("armory", 178, 194, 1),
    ("north road", 154, 213, 1),
    ("south gate road", 158, 170, 1),
)
SPAWN_SPREAD = 6  # cells around the fountain at login
SPOT_SPREAD = 5  # cells around a spot where a player stops
IDLE_S = (1.5, 5.0)  # seconds a player stays at a spot

# the first time of each activity after login, then the gap to the next (seconds)
CHAT_S = ((0.3, 2.0), (2.0, 6.0))
EFFECT_S = ((0.2, 1.5), (0.8, 2.5))
AI_S = ((0.5, 2.5), (3.0, 7.0))
ENVIRONMENT_S = ((0.5, 3.0), (4.0, 8.0))

PHRASES = ("hi all", "anyone for the sewers?", "selling red potions", "lfg orc dungeon",
           "nice hat", "brb", "where is the kafra?", "party at the fountain",
           "wts 5x jellopy", "gg", "who casts heal?", "buying blue gemstones")
EFFECTS = ((316, 1200, "heal"), (17, 800, "fire bolt"), (28, 600, "increase agi"),
           (34, 1500, "blessing"), (89, 2000, "storm gust"))
NPCS = ((110001, "kafra"), (110002, "guard"), (110003, "tool dealer"))
TOPICS = ("weather", "directions", "quest", "prices")
WEATHER = ("clear", "rain", "fog", "snow")

# the game's eight directions: 0 north, then counter-clockwise (y grows northward)
_DIRECTIONS = {(0, 1): 0, (-1, 1): 1, (-1, 0): 2, (-1, -1): 3, (0, -1): 4, (1, -1): 5,
               (1, 0): 6, (1, 1): 7}


# -- actions ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Move:
    """The player is now on this cell (walking on toward ``dir``, or standing)."""

    t: float  # seconds since the start of play
    x: int
    y: int
    dir: int
    moving: bool


@dataclass(frozen=True, slots=True)
class Say:
    t: float
    phrase: str


@dataclass(frozen=True, slots=True)
class Cast:
    t: float
    effect_id: int
    duration_ms: int
    name: str


@dataclass(frozen=True, slots=True)
class Interact:
    t: float
    ai_entity_id: int
    npc: str
    topic: str


@dataclass(frozen=True, slots=True)
class Weather:
    t: float
    weather: str
    intensity: float


Action = Move | Say | Cast | Interact | Weather


@dataclass
class Script:
    """One player's actions in time order, and where the player stands when."""

    index: int
    actions: list[Action]
    _times: list[float] = field(default_factory=list)
    _cells: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        moves = [a for a in self.actions if isinstance(a, Move)]
        self._times = [m.t for m in moves]
        self._cells = [(m.x, m.y) for m in moves]

    @property
    def player_id(self) -> int:
        return PLAYER_ID_BASE + self.index

    def cell_at(self, t: float) -> tuple[int, int]:
        """The cell the player stands on at ``t`` (its first cell before its first move)."""
        i = bisect.bisect_right(self._times, t) - 1
        return self._cells[max(i, 0)]


def in_view(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Within the game's view range (a 29 x 29 square of cells)."""
    return chebyshev(a, b) <= VIEW_RANGE


def players_in_view(scripts: list[Script], sender: int, t: float) -> frozenset[int]:
    """The other players that see ``sender`` at ``t`` (all on one map)."""
    here = scripts[sender].cell_at(t)
    return frozenset(s.index for s in scripts
                     if s.index != sender and in_view(here, s.cell_at(t)))


# -- writing the scripts ---------------------------------------------------------------


def write_scripts(players: int, seed: int, duration: float) -> list[Script]:
    return [write_script(index, seed, duration) for index in range(players)]


def write_script(index: int, seed: int, duration: float) -> Script:
    rng = random.Random(f"p2pd demo {seed} player {index}")
    moves = _walk(rng, duration)
    actions: list[Action] = list(moves)
    for t in _times(rng, CHAT_S, duration):
        actions.append(Say(t, rng.choice(PHRASES)))
    for t in _times(rng, EFFECT_S, duration):
        effect_id, duration_ms, name = rng.choice(EFFECTS)
        actions.append(Cast(t, effect_id, duration_ms, name))
    for t in _times(rng, AI_S, duration):
        npc_id, npc = rng.choice(NPCS)
        actions.append(Interact(t, npc_id, npc, rng.choice(TOPICS)))
    for t in _times(rng, ENVIRONMENT_S, duration):
        actions.append(Weather(t, rng.choice(WEATHER), round(rng.uniform(0.1, 1.0), 2)))
    actions.sort(key=lambda action: action.t)  # stable: a move before an act at its time
    return Script(index, actions)


def _times(rng: random.Random, timing: tuple[tuple[float, float], tuple[float, float]],
           duration: float) -> list[float]:
    (first_low, first_high), (gap_low, gap_high) = timing
    out = []
    t = rng.uniform(first_low, first_high)
    while t < duration:
        out.append(round(t, 3))
        t += rng.uniform(gap_low, gap_high)
    return out


def _walk(rng: random.Random, duration: float) -> list[Move]:
    """Log in near the fountain, then walk from spot to spot, idling at each."""
    name, fx, fy, _ = SPOTS[0]
    x = fx + rng.randint(-SPAWN_SPREAD, SPAWN_SPREAD)
    y = fy + rng.randint(-SPAWN_SPREAD, SPAWN_SPREAD)
    direction = rng.randrange(8)
    moves = [Move(0.0, x, y, direction, False)]
    t = rng.uniform(*IDLE_S) / 2  # some leave at once, some chat first
    spot = name
    while t < duration:
        choices = [s for s in SPOTS if s[0] != spot]
        spot, sx, sy, _ = rng.choices(choices, weights=[s[3] for s in choices])[0]
        tx = sx + rng.randint(-SPOT_SPREAD, SPOT_SPREAD)
        ty = sy + rng.randint(-SPOT_SPREAD, SPOT_SPREAD)
        while (x, y) != (tx, ty) and t < duration:
            dx, dy = _sign(tx - x), _sign(ty - y)
            t += WALK_MS / 1000 * (DIAGONAL if dx and dy else 1.0)
            x, y = x + dx, y + dy
            direction = _DIRECTIONS[(dx, dy)]
            moves.append(Move(round(t, 3), x, y, direction, (x, y) != (tx, ty)))
        t += rng.uniform(*IDLE_S)
    return [m for m in moves if m.t < duration]


def _sign(value: int) -> int:
    return (value > 0) - (value < 0)
