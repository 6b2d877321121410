"""The coordinator at server scale: presence updates per second and memory per daemon.

The world (seeded): 10,000 registered daemons spread over maps as on a real
server (DOMAIN.md). Six towns of 300-400 cells a side hold 4,200 players,
most of each town's population in a few crowds (a vending street, a plaza:
Gaussian clusters 5-8 cells wide, Prontera's main crowd about 500 players),
the rest scattered; 5,800 players are scattered over 600 field and dungeon
maps (200-400 cells a side), from one to a few dozen each (median about 9).

The stream (seeded, generated before the clock starts): 200,000 presence
reports as the coordinator would receive them: 75% one-cell steps of walking
players (two in five players walk; paths bend, turning back at a map's edge),
23% unchanged reports of standing players (the low-rate keep-alive), 2% map
changes (warps, towns more likely). Every report that moves its daemon into
another bucket or map (``update`` returns True) is followed by the query the
coordinator answers then, ``nearest(daemon, max_peers + 3)``; that fraction
is reported. Map names and cells in the stream are fresh objects, as a parser
would produce them, not the index's own.

Measured:
- index_updates_per_s: reports (update plus the queries they cause) per
  second on one core, best of several rounds, each on a fresh index loaded
  with the same world (loading not timed);
- index_bytes_per_daemon: bytes the index holds for the 10,000 daemons, by
  tracemalloc, divided by 10,000 (records, buckets, maps, and the ints and
  strings the index keeps from decoded reports);
- nearest_crowd_us: one nearest() for a daemon in Prontera's main crowd.

``updates_per_s`` and ``bytes_per_daemon`` are, for now, the index's figures:
the whole coordinator path (decrypt, parse, index, reply) is measured here
once the coordinator's protocol exists, as another function next to
:func:`measure_index`. Goals from the issue: 50,000 updates per second per
core for the whole path, at most 2 KB per daemon for the whole coordinator
(a few hundred bytes for the index). Ends with one JSON line.
"""

from __future__ import annotations

import gc
import json
import random
import struct
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass

from p2pd.coordinator.presence import PresenceIndex
from p2pd.mesh.policy import MeshSettings

DAEMONS = 10_000
UPDATES = 200_000
ROUNDS = 5
SEED = 5
QUERY_COUNT = MeshSettings().max_peers + 3  # a few more than max_peers
# (name, width, height, players, crowds as (x, y, spread in cells, share of the players))
TOWNS = [
    ("prontera", 312, 392, 1500, [(156, 190, 7, 0.33), (156, 100, 6, 0.12),
                                  (60, 290, 8, 0.10)]),
    ("payon", 300, 300, 700, [(160, 100, 6, 0.30), (200, 230, 8, 0.15)]),
    ("geffen", 300, 300, 600, [(120, 60, 6, 0.35)]),
    ("morocc", 400, 400, 550, [(160, 100, 8, 0.30), (280, 300, 6, 0.15)]),
    ("alberta", 300, 300, 450, [(100, 60, 5, 0.30)]),
    ("izlude", 300, 300, 400, [(130, 110, 6, 0.35)]),
]
FIELDS = 600
WALKING = 0.4  # share of players walking at any time
STEPS = [(0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1)]


@dataclass
class Player:
    map: str
    x: int
    y: int
    dir: int
    walking: bool


@dataclass
class World:
    players: list[Player]
    sizes: dict[str, tuple[int, int]]
    crowd_member: int  # a daemon standing in Prontera's main crowd


def place(rng: random.Random, map_name: str, world: World) -> tuple[int, int]:
    width, height = world.sizes[map_name]
    for town, _, _, _, crowds in TOWNS:
        if town == map_name:
            roll = rng.random()
            for cx, cy, spread, share in crowds:
                if roll < share:
                    return (min(max(round(rng.gauss(cx, spread)), 0), width - 1),
                            min(max(round(rng.gauss(cy, spread)), 0), height - 1))
                roll -= share
    return rng.randrange(width), rng.randrange(height)


def build_world(rng: random.Random) -> World:
    world = World([], {}, 0)
    names: list[str] = []
    for name, width, height, players, _ in TOWNS:
        world.sizes[name] = (width, height)
        names += [name] * players
    fields = [f"field{i:03d}" for i in range(FIELDS)]
    for name in fields:
        world.sizes[name] = (rng.randrange(200, 401), rng.randrange(200, 401))
    weights = [rng.uniform(0.3, 3.0) for _ in fields]  # some fields are more popular
    names += rng.choices(fields, weights, k=DAEMONS - len(names))
    for name in names:
        x, y = place(rng, name, world)
        world.players.append(Player(name, x, y, rng.randrange(8), rng.random() < WALKING))
    cx, cy = TOWNS[0][4][0][:2]
    world.crowd_member = min(
        (i for i, p in enumerate(world.players) if p.map == "prontera"),
        key=lambda i: max(abs(world.players[i].x - cx), abs(world.players[i].y - cy)))
    return world


def fresh(name: str) -> str:
    """A new string object equal to ``name``, as a datagram's parser would produce."""
    return name.encode().decode()


def build_stream(rng: random.Random, world: World) -> list[tuple[int, str, int, int]]:
    players = [Player(p.map, p.x, p.y, p.dir, p.walking) for p in world.players]
    walkers = [i for i, p in enumerate(players) if p.walking]
    standers = [i for i, p in enumerate(players) if not p.walking]
    towns = [name for name, *_ in TOWNS]
    fields = [name for name in world.sizes if name not in towns]
    stream = []
    for _ in range(UPDATES):
        roll = rng.random()
        if roll < 0.75:  # a walking player's step
            daemon = rng.choice(walkers)
            p = players[daemon]
            if rng.random() < 0.1:
                p.dir = (p.dir + rng.choice((-1, 1))) % 8
            width, height = world.sizes[p.map]
            dx, dy = STEPS[p.dir]
            if not (0 <= p.x + dx < width and 0 <= p.y + dy < height):
                p.dir = (p.dir + 4) % 8  # the edge of the map: turn back
                dx, dy = STEPS[p.dir]
            p.x += dx
            p.y += dy
        elif roll < 0.98:  # a standing player's keep-alive
            daemon = rng.choice(standers)
            p = players[daemon]
        else:  # a warp
            daemon = rng.choice(walkers)
            p = players[daemon]
            p.map = rng.choice(towns) if rng.random() < 0.5 else rng.choice(fields)
            p.x, p.y = place(rng, p.map, world)
        stream.append((daemon, fresh(p.map), p.x, p.y))
    return stream


def load(world: World) -> PresenceIndex:
    index = PresenceIndex()
    for daemon, p in enumerate(world.players):
        index.update(daemon, fresh(p.map), p.x, p.y)
    return index


def measure_index(world: World, stream: list[tuple[int, str, int, int]]
                  ) -> tuple[float, float]:
    """Best reports per second over ROUNDS, and the share of reports that queried."""
    best = float("inf")
    queries = 0
    for _ in range(ROUNDS):
        index = load(world)
        update, nearest, count = index.update, index.nearest, QUERY_COUNT
        queries = 0
        gc.collect()
        start = time.perf_counter()
        for daemon, map_name, x, y in stream:
            if update(daemon, map_name, x, y):
                nearest(daemon, count)
                queries += 1
        best = min(best, time.perf_counter() - start)
    return len(stream) / best, queries / len(stream)


def measure_nearest_crowd(world: World) -> tuple[float, int]:
    """Microseconds for one nearest() in the main crowd, and the players in its view."""
    index = load(world)
    daemon = world.crowd_member
    in_view = len(index.nearest(daemon, DAEMONS))
    n = 2_000
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(n):
            index.nearest(daemon, QUERY_COUNT)
        best = min(best, time.perf_counter() - start)
    return best / n * 1e6, in_view


def measure_index_memory(world: World) -> float:
    """Bytes the index holds per daemon, the reports decoded from bytes inside the trace."""
    record = struct.Struct("<IHH16s")
    reports = [record.pack(daemon, p.x, p.y, p.map.encode())
               for daemon, p in enumerate(world.players)]
    unpack = record.unpack
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    index = PresenceIndex()
    for report in reports:
        daemon, x, y, name = unpack(report)
        index.update(daemon, name.rstrip(b"\0").decode(), x, y)
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(index) == DAEMONS
    return held / DAEMONS


# Each measurement of the updates-per-second kind, by the name of its figure.
# The whole coordinator path joins here once its protocol exists.
THROUGHPUT: dict[str, Callable[[World, list[tuple[int, str, int, int]]],
                               tuple[float, float]]] = {
    "index": measure_index,
}


def main() -> None:
    rng = random.Random(SEED)
    world = build_world(rng)
    stream = build_stream(rng, world)
    index = load(world)
    maps = index.maps()
    towns = ", ".join(f"{name} {maps[name]}" for name, *_ in TOWNS)
    fields = sorted(n for name, n in maps.items() if name.startswith("field"))
    print(f"{DAEMONS} daemons: towns {towns}; {len(fields)} field maps with"
          f" {fields[0]}-{fields[-1]} each (median {fields[len(fields) // 2]});"
          f" {index.statistics().buckets} buckets of {index.view_range} x"
          f" {index.view_range} cells in use")
    figures: dict[str, float] = {}
    for name, measure in THROUGHPUT.items():
        rate, queried = measure(world, stream)
        figures[f"{name}_updates_per_s"] = round(rate)
        figures[f"{name}_query_fraction"] = round(queried, 4)
        print(f"{name}: {rate:,.0f} reports/s on one core ({UPDATES:,} reports, best of"
              f" {ROUNDS}); {queried:.1%} of them changed bucket or map and were answered"
              f" with nearest(daemon, {QUERY_COUNT})")
    crowd_us, in_view = measure_nearest_crowd(world)
    figures["nearest_crowd_us"] = round(crowd_us, 1)
    figures["nearest_crowd_in_view"] = in_view
    print(f"nearest(daemon, {QUERY_COUNT}) in Prontera's main crowd ({in_view} players in"
          f" view): {crowd_us:.1f} us")
    per_daemon = measure_index_memory(world)
    figures["index_bytes_per_daemon"] = round(per_daemon, 1)
    print(f"index memory: {per_daemon:.0f} bytes per registered daemon (tracemalloc,"
          f" {DAEMONS} daemons)")
    figures["updates_per_s"] = figures["index_updates_per_s"]
    figures["bytes_per_daemon"] = figures["index_bytes_per_daemon"]
    print("note: updates_per_s and bytes_per_daemon are the index's alone for now; the whole"
          " coordinator path (decrypt + parse + index + reply) is measured once the"
          " coordinator's protocol exists. Goals: 50,000 updates/s per core, 2 KB per daemon"
          " for the whole coordinator")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
