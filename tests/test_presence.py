"""The coordinator's presence index against a brute-force model of the same world.

The model is a plain dict daemon -> (map, x, y); its answers are computed by
looking at every daemon. Worlds are seeded: crowds on a few cells (many ties
in distance), players scattered over maps with the edge cells 0 and 1023,
walks of one cell, jumps, map changes, removals and returns.
"""

from __future__ import annotations

import random

import pytest

from p2pd.coordinator.presence import PresenceIndex, PresenceStatistics

Position = tuple[str, int, int]
MAPS = {"prontera": 1024, "payon": 300, "moc_fild01": 40}  # map -> side in cells


def chebyshev(a: Position, b: Position) -> int:
    return max(abs(a[1] - b[1]), abs(a[2] - b[2]))


def brute_nearest(world: dict[int, Position], daemon: int, count: int,
                  view_range: int) -> list[tuple[int, int]]:
    here = world[daemon]
    found = sorted((chebyshev(here, there), other) for other, there in world.items()
                   if other != daemon and there[0] == here[0]
                   and chebyshev(here, there) <= view_range)
    return [(other, distance) for distance, other in found[:max(count, 0)]]


def brute_within(world: dict[int, Position], map_name: str, x: int, y: int,
                 radius: int) -> list[int]:
    return sorted(daemon for daemon, there in world.items()
                  if there[0] == map_name and chebyshev((map_name, x, y), there) <= radius)


def brute_maps(world: dict[int, Position]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for map_name, _, _ in world.values():
        counts[map_name] = counts.get(map_name, 0) + 1
    return counts


def random_place(rng: random.Random) -> Position:
    map_name = rng.choice(list(MAPS))
    side = MAPS[map_name]
    roll = rng.random()
    if roll < 0.4:  # a crowd around a few spots: many equal distances
        cx, cy = rng.choice([(20, 20), (side // 2, side // 2), (side - 3, 2)])
        return (map_name, min(max(cx + rng.randint(-16, 16), 0), side - 1),
                min(max(cy + rng.randint(-16, 16), 0), side - 1))
    if roll < 0.5:  # the edges of the map
        return map_name, rng.choice([0, 1, side - 2, side - 1]), rng.choice([0, side - 1])
    return map_name, rng.randrange(side), rng.randrange(side)


def apply(index: PresenceIndex, world: dict[int, Position], daemon: int,
          place: Position) -> bool:
    """Update both; check the return value against the model's view of buckets."""
    view = index.view_range
    before = world.get(daemon)
    world[daemon] = place
    changed = index.update(daemon, *place)
    expected = (before is None or before[0] != place[0]
                or (before[1] // view, before[2] // view) != (place[1] // view, place[2] // view))
    assert changed == expected, (daemon, before, place)
    return changed


def check_all(index: PresenceIndex, world: dict[int, Position], rng: random.Random) -> None:
    view = index.view_range
    assert len(index) == len(world)
    assert index.maps() == brute_maps(world)
    occupied = {(m, x // view, y // view) for m, x, y in world.values()}
    assert index.statistics() == PresenceStatistics(
        daemons=len(world), maps=len(brute_maps(world)), buckets=len(occupied))
    for daemon, place in world.items():
        assert index.position(daemon) == place
        count = rng.choice([0, 1, 3, 13, 1000])
        assert index.nearest(daemon, count) == brute_nearest(world, daemon, count, view)
    for _ in range(20):
        map_name = rng.choice([*MAPS, "nowhere"])
        x, y = rng.randrange(-20, 1050), rng.randrange(-20, 1050)
        radius = rng.choice([-1, 0, 1, view - 1, view, view + 1, 3 * view, 2000])
        assert index.within(map_name, x, y, radius) == brute_within(world, map_name, x, y,
                                                                    radius)


def step(rng: random.Random, place: Position) -> Position:
    map_name, x, y = place
    side = MAPS[map_name]
    return (map_name, min(max(x + rng.randint(-1, 1), 0), side - 1),
            min(max(y + rng.randint(-1, 1), 0), side - 1))


@pytest.mark.parametrize("view_range", [14, 5, 1])
@pytest.mark.parametrize("seed", range(6))
def test_nearest_within_and_maps_equal_brute_force_in_random_worlds(seed: int,
                                                                   view_range: int) -> None:
    rng = random.Random(seed)
    index = PresenceIndex(view_range)
    world: dict[int, Position] = {}
    for daemon in range(150):
        apply(index, world, daemon, random_place(rng))
    check_all(index, world, rng)
    next_daemon = 150
    for _ in range(8):
        for _ in range(300):
            roll = rng.random()
            if world and roll < 0.6:  # walk one cell
                daemon = rng.choice(list(world))
                apply(index, world, daemon, step(rng, world[daemon]))
            elif world and roll < 0.75:  # a warp: anywhere, maybe on another map
                apply(index, world, rng.choice(list(world)), random_place(rng))
            elif world and roll < 0.9:  # leaves
                daemon = rng.choice(list(world))
                del world[daemon]
                index.remove(daemon)
            else:  # a new daemon, or one coming back
                daemon = rng.choice([next_daemon, rng.randrange(next_daemon)])
                next_daemon += daemon == next_daemon
                apply(index, world, daemon, random_place(rng))
        check_all(index, world, rng)


def test_nothing_beyond_view_range_is_offered() -> None:
    rng = random.Random(7)
    index = PresenceIndex()
    world: dict[int, Position] = {}
    for daemon in range(400):  # dense: every daemon has neighbours just outside range
        apply(index, world, daemon, ("prontera", rng.randrange(100), rng.randrange(100)))
    offered = 0
    for daemon, place in world.items():
        for other, distance in index.nearest(daemon, 1000):
            assert other != daemon
            assert distance == chebyshev(place, world[other]) <= 14
            offered += 1
    assert offered > 0


def test_view_range_is_a_square_and_its_border_is_inside() -> None:
    index = PresenceIndex()
    index.update(0, "prontera", 100, 100)
    inside = {1: (114, 100), 2: (86, 86), 3: (114, 114), 4: (100, 86)}
    outside = {5: (115, 100), 6: (85, 100), 7: (114, 115), 8: (100, 85), 9: (129, 129)}
    for daemon, (x, y) in (inside | outside).items():
        index.update(daemon, "prontera", x, y)
    index.update(10, "payon", 100, 100)  # same cell, another map
    assert index.nearest(0, 100) == [(1, 14), (2, 14), (3, 14), (4, 14)]


def test_map_change_takes_the_daemon_out_of_the_old_map() -> None:
    index = PresenceIndex()
    index.update(1, "prontera", 150, 150)
    index.update(2, "prontera", 151, 150)
    index.update(3, "payon", 10, 10)
    assert index.maps() == {"prontera": 2, "payon": 1}
    assert index.update(1, "payon", 150, 150) is True  # the same cell on another map
    assert index.maps() == {"prontera": 1, "payon": 2}
    assert index.within("prontera", 150, 150, 14) == [2]
    assert index.within("payon", 150, 150, 14) == [1]
    assert index.nearest(2, 10) == []
    assert index.nearest(1, 10) == []
    assert index.update(2, "payon", 9, 9) is True  # the last one leaves: the map goes
    assert index.maps() == {"payon": 3}
    assert index.statistics() == PresenceStatistics(daemons=3, maps=1, buckets=2)
    assert index.nearest(2, 10) == [(3, 1)]


def test_remove_leaves_no_trace() -> None:
    rng = random.Random(3)
    index = PresenceIndex()
    for daemon in range(300):
        index.update(daemon, rng.choice(list(MAPS)), rng.randrange(40), rng.randrange(40))
    for daemon in rng.sample(range(300), 300):
        index.remove(daemon)
        assert index.position(daemon) is None
    assert len(index) == 0
    assert index.maps() == {}
    assert index.statistics() == PresenceStatistics(daemons=0, maps=0, buckets=0)
    for map_name in MAPS:
        assert index.within(map_name, 20, 20, 100) == []
    with pytest.raises(KeyError):
        index.nearest(0, 10)
    index.remove(0)  # removing an unknown daemon is no error
    assert index.update(0, "prontera", 5, 5) is True  # and it may come back as new
    assert index.nearest(0, 10) == []


def test_remove_one_keeps_the_others_in_their_buckets() -> None:
    index = PresenceIndex()
    for daemon in range(5):  # one bucket, the removed one in the middle of its list
        index.update(daemon, "prontera", 1 + daemon, 1)
    index.remove(2)
    assert index.nearest(0, 10) == [(1, 1), (3, 3), (4, 4)]
    assert index.statistics() == PresenceStatistics(daemons=4, maps=1, buckets=1)
    index.update(4, "prontera", 100, 100)
    index.remove(0)
    assert index.nearest(1, 10) == [(3, 2)]


def test_walking_across_buckets_leaves_no_empty_bucket_behind() -> None:
    index = PresenceIndex()
    index.update(1, "prontera", 200, 200)  # stays: the map never empties
    for x in range(0, 100):
        index.update(2, "prontera", x, 0)
    assert index.statistics() == PresenceStatistics(daemons=2, maps=1, buckets=2)
    assert index.within("prontera", 0, 0, 99) == [2]
    assert index.within("prontera", 0, 0, 98) == []


def test_update_answers_true_only_for_new_bucket_or_map() -> None:
    index = PresenceIndex()
    assert index.update(1, "prontera", 14, 27) is True  # new: bucket (1, 1)
    assert index.update(1, "prontera", 14, 27) is False  # the same cell
    assert index.update(1, "prontera", 27, 14) is False  # within bucket (1, 1)
    assert index.position(1) == ("prontera", 27, 14)
    assert index.update(1, "prontera", 28, 14) is True  # bucket (2, 1)
    assert index.update(1, "prontera", 28, 13) is True  # bucket (2, 0)
    assert index.update(1, "payon", 28, 13) is True  # another map


def test_edge_cells_0_and_1023() -> None:
    index = PresenceIndex()
    corners = {1: (0, 0), 2: (1023, 0), 3: (0, 1023), 4: (1023, 1023)}
    for daemon, (x, y) in corners.items():
        index.update(daemon, "prontera", x, y)
    index.update(5, "prontera", 14, 14)
    index.update(6, "prontera", 1009, 1009)
    index.update(7, "prontera", 1008, 1023)
    assert index.nearest(1, 10) == [(5, 14)]
    assert index.nearest(4, 10) == [(6, 14)]
    assert index.nearest(3, 10) == []
    assert index.nearest(7, 10) == [(6, 14)]  # the corner is 15 cells away
    assert index.within("prontera", 1023, 1023, 0) == [4]
    assert index.within("prontera", 0, 1023, 2000) == [1, 2, 3, 4, 5, 6, 7]
    assert index.position(4) == ("prontera", 1023, 1023)


def test_cells_up_to_65535_and_nothing_outside() -> None:
    index = PresenceIndex(view_range=1)  # one-cell buckets: the key's rows at their limit
    index.update(1, "prontera", 65535, 65535)
    index.update(2, "prontera", 65534, 65535)
    index.update(3, "prontera", 65535, 0)
    assert index.nearest(1, 10) == [(2, 1)]
    assert index.nearest(3, 10) == []
    for x, y in ((-1, 0), (0, -1), (65536, 0), (0, 65536)):
        with pytest.raises(ValueError):
            index.update(1, "payon", x, y)
    assert index.position(1) == ("prontera", 65535, 65535)  # a refused update changes nothing
    assert index.maps() == {"prontera": 3}


def test_count_larger_than_candidates_returns_all_of_them() -> None:
    index = PresenceIndex()
    for daemon, x in ((10, 100), (11, 103), (12, 97), (13, 101), (14, 200)):
        index.update(daemon, "prontera", x, 50)
    assert index.nearest(10, 50) == [(13, 1), (11, 3), (12, 3)]
    assert index.nearest(10, 2) == [(13, 1), (11, 3)]
    assert index.nearest(10, 0) == []
    assert index.nearest(14, 50) == []


def test_ties_are_ordered_by_daemon_id() -> None:
    index = PresenceIndex()
    index.update(50, "prontera", 100, 100)
    for daemon in (9, 3, 7, 1, 5):  # all on one cell, inserted out of order
        index.update(daemon, "prontera", 102, 99)
    assert index.nearest(50, 3) == [(1, 2), (3, 2), (5, 2)]
    assert index.nearest(1, 10) == [(3, 0), (5, 0), (7, 0), (9, 0), (50, 2)]


def test_view_range_must_be_within_1_to_255() -> None:
    for view_range in (0, -14, 256):
        with pytest.raises(ValueError):
            PresenceIndex(view_range)
    assert PresenceIndex(255).view_range == 255
    assert PresenceIndex().view_range == 14
