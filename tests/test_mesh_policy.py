"""The proximity mesh policy (p2pd.mesh.policy): pure, so tested exhaustively."""

from __future__ import annotations

import random

import pytest

from p2pd.mesh.policy import Backoff, Link, MeshSettings, Plan, Role, plan

S = MeshSettings(max_peers=3, backups=2, connect_radius=14, drop_margin=4, min_lifetime=10.0)


def key(i: int) -> bytes:
    return bytes([i]) * 32


def apply(links: dict[bytes, Link], result: Plan, candidates: dict[bytes, int],
          now: float) -> dict[bytes, Link]:
    """Carry a plan out, as the daemon would."""
    out = {p: link for p, link in links.items() if p not in result.drop}
    for peer in result.connect:
        out[peer] = Link(now, candidates[peer], Role.ACTIVE)
    for peer in result.connect_backup:
        out[peer] = Link(now, candidates[peer], Role.BACKUP)
    for peer in result.promote:
        out[peer] = Link(out[peer].since, out[peer].distance, Role.ACTIVE)
    for peer in result.demote:
        out[peer] = Link(out[peer].since, out[peer].distance, Role.BACKUP)
    return {peer: Link(link.since, candidates.get(peer, link.distance), link.role)
            for peer, link in out.items()}


def active(links: dict[bytes, Link]) -> set[bytes]:
    return {p for p, link in links.items() if link.role is Role.ACTIVE}


def backups(links: dict[bytes, Link]) -> set[bytes]:
    return {p for p, link in links.items() if link.role is Role.BACKUP}


def test_the_nearest_candidates_become_links_and_the_next_ones_backups() -> None:
    candidates = {key(i): d for i, d in enumerate([9, 2, 14, 5, 15, 7, 1, 30])}
    result = plan({}, candidates, 0.0, S)
    assert result.connect == (key(6), key(1), key(3))  # distances 1, 2, 5, nearest first
    assert result.connect_backup == (key(5), key(0))  # 7, 9
    assert result.drop == result.promote == result.demote == ()


def test_a_link_between_the_two_radii_is_kept_and_beyond_both_dropped_once_old() -> None:
    links = {key(1): Link(0.0, 10)}
    assert plan(links, {key(1): 16}, 20.0, S).drop == ()  # in the margin: kept
    assert plan(links, {key(1): 19}, 20.0, S).drop == (key(1),)  # beyond it and old
    assert plan(links, {key(1): 19}, 5.0, S).drop == ()  # young links live min_lifetime


def test_a_map_change_drops_every_link_at_once() -> None:
    links = {key(1): Link(99.0, None), key(2): Link(99.0, None, Role.BACKUP)}
    result = plan(links, {}, 100.0, S)
    assert set(result.drop) == {key(1), key(2)}


def test_a_much_nearer_candidate_replaces_the_farthest_old_link() -> None:
    links = {key(1): Link(0.0, 2), key(2): Link(0.0, 3), key(3): Link(0.0, 14)}
    result = plan(links, {key(1): 2, key(2): 3, key(3): 14, key(9): 5}, 50.0, S)
    assert result.connect == (key(9),) and result.demote == (key(3),)
    # nearer, but not by more than the margin: nothing changes
    result = plan(links, {key(1): 2, key(2): 3, key(3): 14, key(9): 11}, 50.0, S)
    assert key(9) not in result.connect and result.demote == ()
    # the farthest link is still young: nothing changes either
    young = {**links, key(3): Link(45.0, 14)}
    result = plan(young, {key(1): 2, key(2): 3, key(3): 14, key(9): 5}, 50.0, S)
    assert result.connect == () and result.demote == ()


def test_a_failed_link_is_replaced_by_the_nearest_warm_backup() -> None:
    links = {key(1): Link(0.0, 2), key(2): Link(0.0, 3),  # key(3) failed and is gone
             key(4): Link(0.0, 8, Role.BACKUP), key(5): Link(0.0, 6, Role.BACKUP)}
    candidates = {key(1): 2, key(2): 3, key(4): 8, key(5): 6, key(6): 7}
    result = plan(links, candidates, 30.0, S)
    assert result.promote == (key(5),) and result.connect == ()
    assert result.connect_backup == (key(6),)  # the spare backup slot refilled


def test_links_never_exceed_max_peers_and_backups_in_a_random_world() -> None:
    rng = random.Random(5)
    links: dict[bytes, Link] = {}
    for step in range(500):
        now = step * 1.0
        candidates = {key(i): rng.randrange(0, 25) for i in rng.sample(range(40), 12)}
        for peer in links:  # linked peers keep being seen, somewhere
            candidates.setdefault(peer, rng.randrange(0, 25))
        if rng.random() < 0.05:
            candidates = {}
            links = {p: Link(link.since, None, link.role) for p, link in links.items()}
        result = plan(links, candidates, now, S)
        assert not set(result.connect) & set(links)
        links = apply(links, result, candidates, now)
        assert len(active(links)) <= S.max_peers
        assert len(backups(links)) <= S.backups
        assert all(link.distance is not None for link in links.values())


def test_walking_along_the_edge_of_range_causes_no_churn() -> None:
    links: dict[bytes, Link] = {}
    changes = 0
    for step in range(600):  # ten minutes, one plan a second
        now = float(step)
        distance = 13 + (step // 3) % 5  # 13..17: in and out of the connect radius
        candidates = {key(1): distance, key(2): 3}
        result = plan(links, candidates, now, S)
        changes += len(result.connect) + len(result.drop)
        links = apply(links, result, candidates, now)
    assert changes == 2  # each peer connected once, never dropped
    assert active(links) == {key(1), key(2)}


def test_max_peers_lowered_moves_the_farthest_links_to_backups() -> None:
    links = {key(i): Link(0.0, i) for i in range(1, 6)}
    result = plan(links, {key(i): i for i in range(1, 6)}, 50.0, S)
    assert result.demote == (key(5), key(4))


def test_settings_refuse_nonsense() -> None:
    for bad in ({"max_peers": 0}, {"backups": 9}, {"connect_radius": 0},
                {"drop_margin": -1}, {"min_lifetime": -1.0}):
        with pytest.raises(ValueError):
            MeshSettings(**bad)


def test_backoff_doubles_with_jitter_up_to_the_cap_and_resets() -> None:
    backoff = Backoff(random.Random(1), initial=0.5, maximum=8.0)
    delays = [backoff.next_delay() for _ in range(8)]
    bases = [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    assert all(base / 2 <= d <= base for d, base in zip(delays, bases, strict=True))
    assert len(set(delays)) == len(delays)  # jittered
    backoff.reset()
    assert 0.25 <= backoff.next_delay() <= 0.5
    with pytest.raises(ValueError):
        Backoff(random.Random(1), initial=0.0)
