"""Cheat prevention's pure parts (spec 5.2): map files, line of sight and
reachability, move checks, the anomaly score."""

from __future__ import annotations

import struct
import zlib

import pytest

from p2pd.channels.position_codec import PositionState
from p2pd.cheat.anomaly import AnomalyRules, AnomalyScore, Offence
from p2pd.cheat.mapgrid import (
    MAX_LOADING,
    MapError,
    MapFiles,
    MapGrid,
    MapStore,
    load_gat_untrusted,
    load_mapcache_untrusted,
)
from p2pd.cheat.movement import MoveFault, MoveValidator
from p2pd.cheat.sight import Sight, line_cells, line_of_sight, reachable, sight_from_walk
from tests.maps import gat_bytes, mapcache_bytes, open_field, walled_field

ROWS = ["..#..",
        ".~#^.",
        "....."]


def test_gat_file_loads_walkability_and_sight_per_cell() -> None:
    grid = load_gat_untrusted("tiny", gat_bytes(ROWS))
    assert (grid.width, grid.height) == (5, 3)
    assert grid.walkable(0, 0) and grid.walkable(1, 1)  # ground, water
    assert not grid.walkable(2, 0) and not grid.sight_passes(2, 0)  # wall
    assert not grid.walkable(3, 1) and grid.sight_passes(3, 1)  # cliff: shots pass
    assert not grid.walkable(5, 0) and not grid.walkable(-1, 0)  # outside


def test_gat_unknown_type_is_a_wall() -> None:
    data = bytearray(gat_bytes(["..", ".."]))
    struct.pack_into("<I", data, 14 + 20 * 3 + 16, 0x100)  # cell (1, 1): type 256
    struct.pack_into("<I", data, 14 + 20 * 2 + 16, 7)  # cell (0, 1): type 7
    grid = load_gat_untrusted("odd", bytes(data))
    assert grid.walkable(0, 0) and grid.walkable(1, 0)
    assert not grid.walkable(0, 1) and not grid.walkable(1, 1)
    assert not grid.sight_passes(1, 1)


@pytest.mark.parametrize(("data", "message"), [
    (b"GRA", "shorter than its header"),
    (b"GRAX\x01\x02" + struct.pack("<II", 1, 1) + bytes(20), "magic"),
    (b"GRAT\x01\x02" + struct.pack("<II", 0, 1), "size"),
    (b"GRAT\x01\x02" + struct.pack("<II", 5000, 1), "size"),
    (b"GRAT\x01\x02" + struct.pack("<II", 2, 2) + bytes(60), "expected 94"),
    (b"GRAT\x01\x02" + struct.pack("<II", 1, 1) + bytes(21), "expected 34"),
])
def test_bad_gat_files_are_refused_with_a_reason(data: bytes, message: str) -> None:
    with pytest.raises(MapError, match=message):
        load_gat_untrusted("bad", data)


def test_map_cache_loads_every_map_and_refuses_bad_ones() -> None:
    data = mapcache_bytes({"tiny": ROWS, "open": ["...", "..."]})
    maps = load_mapcache_untrusted(data)
    assert sorted(maps) == ["open", "tiny"]
    assert maps["tiny"].walkable(2, 2)  # ground
    assert not maps["tiny"].walkable(2, 1)
    assert (maps["open"].width, maps["open"].height) == (3, 2)
    assert list(load_mapcache_untrusted(data, ["open"])) == ["open"]
    with pytest.raises(MapError, match="header says"):
        load_mapcache_untrusted(data + b"x")
    bad_size = bytearray(data)
    struct.pack_into("<h", bad_size, 8 + 12, 4)  # tiny says xs 4: cells do not match
    with pytest.raises(MapError, match="inflate"):
        load_mapcache_untrusted(bytes(bad_size))
    broken = struct.pack("<IHxx", 8 + 20 + 4, 1) + struct.pack("<12shhi", b"x", 1, 1, 4) + b"junk"
    with pytest.raises(MapError, match="do not inflate"):
        load_mapcache_untrusted(broken)
    with pytest.raises(MapError, match="cut short"):
        load_mapcache_untrusted(struct.pack("<IHxx", 8, 1))
    assert zlib.decompress(data[8 + 20: 8 + 20 + struct.unpack_from("<i", data, 8 + 16)[0]]) \
        == bytes([0, 0, 1, 0, 0, 0, 3, 1, 5, 0, 0, 0, 0, 0, 0])


def test_map_files_read_gat_then_cache_and_never_a_path() -> None:
    files = {"tiny.gat": gat_bytes(ROWS), "map_cache.dat": mapcache_bytes({"open": ["..."]}),
             "broken.gat": b"nope"}
    asked: list[str] = []

    def read(name: str) -> bytes | None:
        asked.append(name)
        return files.get(name)

    maps = MapFiles(read)
    tiny = maps.load("tiny")
    assert tiny is not None and not tiny.walkable(2, 0)
    opened = maps.load("open")
    assert opened is not None and opened.width == 3
    assert maps.load("nowhere") is None
    assert asked.count("map_cache.dat") == 1  # read and indexed once
    with pytest.raises(MapError, match="shorter"):
        maps.load("broken")
    assert maps.load("../etc") is None and not any(".." in name for name in asked)


def test_map_store_asks_for_a_map_once_and_checks_without_it_until_it_is_delivered() -> None:
    store = MapStore(loading=True, limit=2)
    assert store.get("tiny") is None and store.pending("tiny")
    assert store.get("tiny") is None  # asked for once only
    assert store.take_wanted() == ["tiny"] and store.take_wanted() == []
    assert store.get("tiny") is None and store.unchecked == 3  # checked without it
    store.deliver("tiny", load_gat_untrusted("tiny", gat_bytes(ROWS)))
    grid = store.get("tiny")
    assert grid is not None and not grid.walkable(2, 0) and not store.pending("tiny")
    # no file has it, or it does not parse: not asked for again, the error kept for the log
    store.get("nowhere")
    store.get("broken")
    assert store.take_wanted() == ["nowhere", "broken"]
    store.deliver("nowhere", None)
    store.deliver("broken", None, "broken.gat: 4 bytes, shorter than its header")
    assert store.get("nowhere") is None and store.get("broken") is None
    assert store.take_wanted() == [] and list(store.errors) == [
        "broken.gat: 4 bytes, shorter than its header"]
    assert store.get("../etc") is None and store.take_wanted() == []  # never a path
    for i in range(MAX_LOADING + 3):  # at most MAX_LOADING asked for at once
        store.get(f"map{i}")
    assert len(store.take_wanted()) == MAX_LOADING
    assert store.statistics()["maps_pending"] == MAX_LOADING
    assert MapStore().get("tiny") is None and MapStore().take_wanted() == []  # no map_dir


def test_line_of_sight_walls_block_cliffs_do_not() -> None:
    grid = MapGrid.from_rows("m", ["....#....",
                                   "....^....",
                                   "........."])
    assert not line_of_sight(grid, (0, 0), (8, 0))  # through the wall
    assert line_of_sight(grid, (0, 1), (8, 1))  # over the cliff
    assert line_of_sight(grid, (0, 2), (8, 2))
    assert list(line_cells(0, 0, 3, 1)) == [(0, 0), (1, 0), (2, 1), (3, 1)]
    assert list(line_cells(2, 2, 2, 2)) == [(2, 2)]


def test_reachable_goes_around_walls_within_the_steps_and_not_through() -> None:
    grid = walled_field(size=20, wall_x=10, gap_y=15)
    assert reachable(grid, (9, 5), (8, 5), 1)
    # through the wall: 2 cells apart; the way round, through the gap at y = 15, is
    # 10 steps down, 2 across (no cutting the wall's corners), 10 back up
    assert not reachable(grid, (9, 5), (11, 5), 3)
    assert not reachable(grid, (9, 5), (11, 5), 21)
    assert reachable(grid, (9, 5), (11, 5), 22)
    assert not reachable(grid, (9, 5), (10, 5), 40)  # onto the wall


def test_sight_from_walk_searches_the_cells_the_walker_may_be_on() -> None:
    grid = walled_field(size=40, wall_x=20, gap_y=30)
    # four cells from the wall, the target four cells behind it: no cell within 6
    # moves sees it (the gap is 20 rows away)
    assert sight_from_walk(grid, (16, 10), 6, (24, 10), 14) is Sight.BLOCKED
    # near the gap, a few moves bring the walker where it sees through
    assert sight_from_walk(grid, (19, 27), 0, (24, 31), 14) is Sight.BLOCKED
    assert sight_from_walk(grid, (19, 27), 4, (24, 31), 14) is Sight.SEEN
    # in range only after walking: 16 cells away, 2 moves allowed
    assert sight_from_walk(grid, (0, 0), 1, (16, 0), 14) is Sight.FAR
    assert sight_from_walk(grid, (0, 0), 2, (16, 0), 14) is Sight.SEEN
    assert sight_from_walk(None, (0, 0), 2, (16, 0), 14) is Sight.SEEN  # no map: range only
    assert sight_from_walk(None, (0, 0), 1, (16, 0), 14) is Sight.FAR


def state(x: int, y: int, tick: int = 0, map_name: str = "field", speed: int = 150,
          moving: bool = True) -> PositionState:
    return PositionState(map_name, x, y, 6, speed, moving, tick)


def test_honest_walk_is_accepted() -> None:
    store = MapStore()
    store.add(open_field("field", 100))
    moves = MoveValidator(store)
    for i in range(60):  # one cell per 150 ms, reported every 200 ms, 30 ms of jitter
        t = i * 0.2 + (0.03 if i % 3 == 0 else 0.0)
        assert moves.check(state(10 + int(i * 0.2 / 0.15), 10), t, jitter=0.01).ok
    assert moves.rejected == 0


def test_speed_hack_is_caught_even_when_each_step_is_small() -> None:
    store = MapStore()
    store.add(open_field("field", 200))
    moves = MoveValidator(store)
    faults = []
    for i in range(40):  # 1.6x the declared speed: one cell per 94 ms
        t = i * 0.2
        verdict = moves.check(state(10 + int(t / 0.094), 10), t)
        faults.append(verdict.fault)
    assert MoveFault.SPEED in faults
    assert faults[:3] == [None, None, None]  # single steps alone look fine


def test_declared_speed_faster_than_the_servers_is_a_speed_hack() -> None:
    moves = MoveValidator(MapStore())
    moves.server_speed = 150
    assert moves.check(state(1, 1, speed=50), 0.0).fault is MoveFault.SPEED


def test_teleport_and_map_change_without_warp_are_caught_and_a_warp_is_not() -> None:
    moves = MoveValidator(MapStore())
    assert moves.check(state(10, 10), 0.0).ok
    assert moves.check(state(90, 90), 0.2).fault is MoveFault.TELEPORT
    assert moves.check(state(11, 10), 0.4).ok  # measured from the last accepted one
    assert moves.check(state(11, 10, map_name="other"), 0.6).fault is MoveFault.TELEPORT
    moves.warp("other", 50, 50, 0.7)  # the server confirms a warp
    assert moves.check(state(50, 51, map_name="other"), 0.8).ok


def test_wall_cells_and_walking_through_walls_are_caught() -> None:
    store = MapStore()
    store.add(walled_field("walled", 64, wall_x=32))
    moves = MoveValidator(store)
    assert moves.check(state(31, 10, map_name="walled"), 0.0).ok
    assert moves.check(state(32, 10, map_name="walled"), 0.2).fault is MoveFault.WALL
    assert moves.check(state(33, 10, map_name="walled"), 0.4).fault is MoveFault.WALL
    assert moves.rejected == 2


def test_anomaly_score_crosses_once_and_decays() -> None:
    score = AnomalyScore(AnomalyRules(threshold=10.0, half_life=10.0))
    assert not score.add(Offence.REJECTED_MOVE, 0.0)  # 3
    assert not score.add(Offence.REJECTED_MOVE, 0.0, times=2)  # 9
    assert score.value(10.0) == pytest.approx(4.5)
    assert score.add(Offence.FAILED_CHECK, 10.0, times=2)  # 12.5: crossed
    assert not score.add(Offence.FAILED_CHECK, 10.0)  # reported once
    assert score.counts == {"rejected_move": 3, "failed_check": 3}
