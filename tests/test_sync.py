"""Game-state sync and cheat prevention through real Node pairs on the simulated
network, in virtual time (spec 4.1, 4.2, 5.2, 9, 10.2): smoothing against
recorded walks under jitter and loss, each cheat caught, an honest player
never flagged, a newcomer's state within one round trip."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from p2pd.channels.position_codec import PositionState
from p2pd.cheat.mapgrid import MapGrid
from p2pd.cheat.sight import line_of_sight
from p2pd.config import DaemonConfig, P2PSettings, SyncSettings
from p2pd.crypto.identity import Identity
from p2pd.ipc.messages import (
    AiInteraction,
    Chat,
    Environment,
    LegendData,
    Position,
    Render,
    ServerPosition,
    SharedState,
    VerifyInteraction,
    VisualEffect,
)
from p2pd.node import Node
from p2pd.sim.network import LinkProfile, SimNetwork, Simulation
from p2pd.sim.nodes import CoreNode
from p2pd.sim.walks import Walk, record_walk
from p2pd.sync.state import SNAPSHOT_REQUEST, is_snapshot_request
from p2pd.sync.track import between
from tests.maps import walled_field

A_ADDR = ("10.7.0.1", 7000)
B_ADDR = ("10.7.0.2", 7000)
TICK_BASE = 1_000_000


def town() -> MapGrid:
    """64 x 64 cells, a wall along x = 32 with a gap at y = 40, and a block."""
    grid = walled_field("town", 64, wall_x=32, gap_y=40)
    return grid


def pair(net: SimNetwork, grid: MapGrid | None = None, seed: int = 3,
         a_p2p: dict[str, Any] | None = None,
         b_p2p: dict[str, Any] | None = None) -> tuple[Simulation, CoreNode[Node], CoreNode[Node]]:
    rng = random.Random(seed)
    nodes = []
    for address, p2p in ((A_ADDR, a_p2p or {}), (B_ADDR, b_p2p or {})):
        config = DaemonConfig(source=Path("test.ini"), p2p=P2PSettings(**p2p),
                              sync=SyncSettings())
        node = Node(config, Identity.from_private_bytes(rng.randbytes(32)),
                    random_bytes=random.Random(rng.random()).randbytes)
        if grid is not None:
            node.sync.maps.add(grid)
        nodes.append(CoreNode(address, node))
    a, b = nodes
    sim = Simulation(net, nodes)
    a.core.connect(b.address, b.core.public_key, sim.now)
    assert sim.run_while(lambda: not (a.core.links and b.core.links), 10.0)
    return sim, a, b


def to_position(state: Any, request_id: int = 1) -> Position:
    return Position(id=request_id, map=state.map, x=state.x, y=state.y, dir=state.dir,
                    speed=state.speed, moving=state.moving, tick=state.tick)


def events(node: CoreNode[Node], name: str) -> list[dict[str, Any]]:
    return [m for m in node.core.take_notifications() if m.get("event") == name]


def play(sim: Simulation, sender: CoreNode[Node], walk: Walk, start: float,
         until: float, on_step: Any = None, every: float = 0.05) -> None:
    """Hand the walk's positions to the sender's node as its client would (each
    change, at its time), calling ``on_step(now)`` every ``every`` seconds."""
    i = 0
    now = start
    while now < until:
        while i < len(walk.times) and start + walk.times[i] <= now:
            sender.core.send_event(to_position(walk.states[i]), (), start + walk.times[i])
            i += 1
        sim.run_until(now)
        if on_step is not None:
            on_step(now)
        now += every


# -- smoothing ------------------------------------------------------------------------


# Within a cell everywhere (what the receiver draws moves smoothly between
# cells, the truth jumps from cell to cell), the worst case included: a lost
# update that said "stopped" or "turned" would let the receiver walk the player
# on for cells, but each such course change goes twice (and a third time when
# still unacknowledged), and the receiver draws the turn between two samples
# where their courses meet, not across the corner.
@pytest.mark.parametrize(("kind", "p95_bound", "max_bound"), [
    ("straight", 1.0, 1.25), ("turns", 1.0, 1.25), ("stops", 1.0, 1.25), ("mixed", 1.0, 1.25)])
def test_dead_reckoning_and_interpolation_follow_recorded_walks(
        kind: str, p95_bound: float, max_bound: float) -> None:
    # 100 ms of jitter and 4% loss: below the 5% at which adaptive quality lowers
    # the position rate (docs/ipc.md 11.9)
    net = SimNetwork(11, LinkProfile(delay=0.04, jitter=0.1, loss=0.04))
    sim, a, b = pair(net)
    key = a.core.public_key
    walk = record_walk(5, 60.0, (300, 300), kind=kind, tick_base=TICK_BASE)
    start = sim.now
    errors: list[float] = []

    def look(now: float) -> None:
        rows = b.core.sync_request(Render(id=1), now)["positions"]
        if not rows or now < start + 2.0:
            return
        peer = b.core.sync.peer(key, now)
        tick = b.core.sync.render_tick(peer, now)
        truth = walk.at((tick - TICK_BASE) / 1000.0)
        errors.append(max(abs(rows[0]["x"] - truth.x), abs(rows[0]["y"] - truth.y)))

    play(sim, a, walk, start, start + 60.0, look)
    errors.sort()
    p95 = errors[int(0.95 * len(errors))]
    sent = a.core.endpoint.session_statistics(b.core.public_key).channels["positions_sent"]
    cells = sum(1 for s0, s1 in zip(walk.states, walk.states[1:], strict=False)
                if (s0.x, s0.y) != (s1.x, s1.y))
    print(f"{kind}: {len(errors)} renders, error mean {sum(errors) / len(errors):.2f} p95 "
          f"{p95:.2f} max {errors[-1]:.2f} cells; {sent / 60:.2f} positions/s sent for "
          f"{cells / 60:.2f} cell changes/s")
    assert p95 <= p95_bound and errors[-1] <= max_bound
    assert sent / 60.0 <= 5.0  # never above position_update_rate
    if kind == "straight":
        assert sent < cells / 4  # dead reckoning covers a straight walk


def test_between_two_samples_the_path_follows_their_courses() -> None:
    east = PositionState("m", 0, 0, 6, 150, True, 0)  # dir 6: x + 1 per 150 ms
    # five cells east (the turn at 750 ms, left out: dead reckoning predicted it),
    # then north (dir 0: y + 1) for two cells
    north = PositionState("m", 5, 2, 0, 150, True, 1050)
    assert between(east, 0, north, 1050, 375) == pytest.approx((2.5, 0.0))
    assert between(east, 0, north, 1050, 750) == pytest.approx((5.0, 0.0))  # not the chord
    assert between(east, 0, north, 1050, 900) == pytest.approx((5.0, 1.0))
    # the same turn, then a stop on the second cell north
    stopped = PositionState("m", 5, 2, 0, 150, False, 1050)
    assert between(east, 0, stopped, 1050, 750) == pytest.approx((5.0, 0.0))
    # walking straight into a stop: along the course, then standing
    arrived = PositionState("m", 4, 0, 6, 150, False, 1000)
    assert between(east, 0, arrived, 1000, 300) == pytest.approx((2.0, 0.0))
    assert between(east, 0, arrived, 1000, 800) == pytest.approx((4.0, 0.0))
    # a start: standing until the walk to the next sample must begin
    standing = PositionState("m", 0, 0, 6, 150, False, 0)
    walking = PositionState("m", 3, 0, 6, 150, True, 2000)
    assert between(standing, 0, walking, 2000, 1000) == (0.0, 0.0)
    assert between(standing, 0, walking, 2000, 1775) == pytest.approx((1.5, 0.0))
    # courses that never meet (turns lost): the straight line
    far = PositionState("m", 0, 9, 0, 150, True, 1000)
    assert between(east, 0, far, 1000, 500) == pytest.approx((0.0, 4.5))


def test_a_course_change_goes_twice_and_a_third_time_only_when_unacknowledged() -> None:
    net = SimNetwork(12, LinkProfile(delay=0.03))
    sim, a, b = pair(net)
    peer = b.core.public_key
    tick = TICK_BASE
    for x in range(100, 110):  # a walk east (dir 6), each cell as the client hands it
        a.core.send_event(Position(id=1, map="field", x=x, y=50, dir=6, moving=True,
                                   tick=tick), (), sim.now)
        sim.run_until(sim.now + 0.15)
        tick += 150
    sim.run_until(sim.now + 2.0)  # every acknowledgement owed has gone (0.5 s at most)
    b.core.take_notifications()
    channels = a.core.endpoint.session_statistics(peer).channels
    repeated = channels["positions_repeated"]  # the start's repeat
    tick += 2000
    stop = Position(id=1, map="field", x=110, y=50, dir=6, moving=False, tick=tick)
    a.core.send_event(stop, (), sim.now)
    sim.run_until(sim.now + 2.0)
    channels = a.core.endpoint.session_statistics(peer).channels
    assert channels["positions_repeated"] == repeated + 1  # once: acknowledged by 0.8 s
    stops = [m for m in events(b, "position") if not m["moving"]]
    assert [(m["x"], m["tick"]) for m in stops] == [(110, tick)]  # shown once
    # the stop and its repeat lost: the third sending, 0.8 s after it, repairs it
    a.core.send_event(Position(id=1, map="field", x=110, y=50, dir=0, moving=True,
                               tick=tick + 2000), (), sim.now)
    sim.run_until(sim.now + 0.15)
    lost_from = sim.now
    net.set_path(A_ADDR, B_ADDR, LinkProfile(delay=0.03,
                                             blackholes=((lost_from, lost_from + 0.3),)))
    a.core.send_event(Position(id=1, map="field", x=110, y=51, dir=0, moving=False,
                               tick=tick + 2150), (), sim.now)
    sim.run_until(lost_from + 0.7)
    heard = b.core.sync.peer(a.core.public_key, sim.now).reported
    assert heard is not None and heard.moving  # the stop not heard yet
    sim.run_until(lost_from + 1.0)
    reported = b.core.sync.peer(a.core.public_key, sim.now).reported
    assert reported is not None and (reported.y, reported.moving) == (51, False)
    channels = a.core.endpoint.session_statistics(peer).channels
    assert channels["positions_repeated"] == repeated + 4  # start 1, stop 2 (+1 before)


def test_the_next_cells_of_a_walk_take_no_token_so_a_turn_goes_at_once() -> None:
    net = SimNetwork(13, LinkProfile(delay=0.03))
    sim, a, _ = pair(net)
    tick = TICK_BASE
    for x in range(100, 140):  # 6.7 cells a second for 6 s: more than the 5 tokens a second
        result = a.core.send_event(Position(id=1, map="field", x=x, y=50, dir=6, moving=True,
                                            tick=tick), (), sim.now)
        assert result["rate_limited"] == 0
        sim.run_until(sim.now + 0.15)
        tick += 150
    turn = a.core.send_event(Position(id=1, map="field", x=140, y=51, dir=0, moving=True,
                                      tick=tick), (), sim.now)
    assert turn["sent"] == 1 and turn["rate_limited"] == 0


# -- cheats ---------------------------------------------------------------------------


def flagged(node: CoreNode[Node]) -> list[dict[str, Any]]:
    return [m for m in node.core.take_notifications() if m.get("event") == "anomaly"]


def test_speed_hack_is_flagged_and_the_link_closed() -> None:
    net = SimNetwork(1, LinkProfile(delay=0.03, jitter=0.05))
    sim, a, b = pair(net, a_p2p={"position_update_rate": 10.0})
    start = sim.now
    for i in range(60):  # one cell per 75 ms while declaring 150 ms per cell
        now = start + i * 0.1
        sim.run_until(now)
        if a.core.links:
            a.core.send_event(Position(id=1, map="field", x=100 + int(i * 0.1 / 0.075), y=100,
                                       dir=6, speed=150, moving=True,
                                       tick=TICK_BASE + int(i * 100)), (), now)
    sim.run_until(sim.now + 1.0)
    (alarm,) = flagged(b)
    assert alarm["peer"] == a.core.public_key.hex() and alarm["reason"] == "rejected_move"
    assert "speed" in alarm["detail"]
    assert not b.core.links and not a.core.links  # closed, both sides
    assert b.core.sync.banned(a.core.public_key, sim.now)


def test_teleports_are_flagged() -> None:
    net = SimNetwork(2, LinkProfile(delay=0.03))
    sim, a, b = pair(net)
    start = sim.now
    for i in range(20):
        now = start + i * 0.3
        sim.run_until(now)
        if a.core.links:
            spot = (100, 100) if i % 2 == 0 else (400, 700)
            a.core.send_event(Position(id=1, map="field", x=spot[0], y=spot[1], dir=0,
                                       tick=TICK_BASE + i * 300), (), now)
    sim.run_until(sim.now + 1.0)
    (alarm,) = flagged(b)
    assert "teleport" in alarm["detail"]
    assert not b.core.links


def test_wall_walk_is_flagged() -> None:
    net = SimNetwork(3, LinkProfile(delay=0.03))
    sim, a, b = pair(net, town())
    start = sim.now
    for i in range(30):  # steps east along y = 10, straight through the wall at x = 32
        now = start + i * 0.2
        sim.run_until(now)
        if a.core.links:
            a.core.send_event(Position(id=1, map="town", x=20 + i, y=10, dir=6,
                                       tick=TICK_BASE + i * 200), (), now)
    sim.run_until(sim.now + 1.0)
    (alarm,) = flagged(b)
    assert "wall" in alarm["detail"]


def test_a_map_is_asked_for_not_read_on_the_receive_path_and_checked_once_delivered() -> None:
    net = SimNetwork(16, LinkProfile(delay=0.03))
    sim, a, b = pair(net)
    maps = b.core.sync.maps
    maps.loading = True  # as with [sync] map_dir: the shell loads what is asked for
    start = sim.now
    for i in range(3):  # through the wall at x = 32 while the map is not there yet
        sim.run_until(start + i * 0.2)
        a.core.send_event(Position(id=1, map="town", x=30 + i, y=10, dir=6,
                                   tick=TICK_BASE + i * 200), (), sim.now)
    sim.run_until(sim.now + 0.3)
    stats = b.core.stats(sim.now)["sync"]
    assert stats["maps_pending"] == 1 and stats["maps_unchecked"] >= 3
    assert not b.core.sync.peer(a.core.public_key, sim.now).score.counts  # unchecked
    assert maps.take_wanted() == ["town"]  # what the daemon's shell loads (p2pd/io/maps.py)
    maps.deliver("town", town())
    for i in range(3, 10):
        sim.run_until(start + i * 0.2)
        a.core.send_event(Position(id=1, map="town", x=33 - i, y=12, dir=2,
                                   tick=TICK_BASE + i * 200), (), sim.now)
    a.core.send_event(Position(id=1, map="town", x=32, y=12, dir=6,
                               tick=TICK_BASE + 2100), (), sim.now)  # onto the wall
    sim.run_until(sim.now + 0.5)
    assert b.core.stats(sim.now)["sync"]["maps_loaded"] == 1
    assert b.core.sync.peer(a.core.public_key, sim.now).score.counts["rejected_move"] >= 1


def test_effect_behind_a_wall_is_a_line_of_sight_violation() -> None:
    net = SimNetwork(4, LinkProfile(delay=0.03))
    sim, a, b = pair(net, town())
    a.core.send_event(Position(id=1, map="town", x=28, y=10, dir=6, tick=TICK_BASE), (),
                      sim.now)
    sim.run_until(sim.now + 0.5)
    assert events(b, "position")
    for i in range(8):  # an effect aimed across the wall, at a cell it cannot see
        a.core.send_event(VisualEffect(id=2, effect_id=316, map="town", x=36, y=10,
                                       start_ms=TICK_BASE + 500 + i * 200, duration_ms=1000,
                                       owner=7), (), sim.now)
        sim.run_until(sim.now + 0.2)
    shown = [m for m in b.core.take_notifications() if m.get("event") in ("effect", "anomaly")]
    assert not [m for m in shown if m["event"] == "effect"]  # never shown
    (alarm,) = [m for m in shown if m["event"] == "anomaly"]
    assert alarm["reason"] == "failed_check" and "wall" in alarm["detail"]


def test_a_walking_player_aiming_through_a_wall_is_a_line_of_sight_violation() -> None:
    net = SimNetwork(15, LinkProfile(delay=0.03, jitter=0.02))
    sim, a, b = pair(net, town())
    start = sim.now
    shown: list[dict[str, Any]] = []
    for i in range(40):  # south along x = 28 (dir 0), four cells from the wall at x = 32
        now = start + i * 0.15
        sim.run_until(now)
        if not a.core.links:
            break
        tick = TICK_BASE + i * 150
        a.core.send_event(Position(id=1, map="town", x=28, y=5 + i, dir=0, moving=True,
                                   tick=tick), (), now)
        if i >= 4 and i % 2 == 0:  # effects aimed at the cell across the wall
            a.core.send_event(VisualEffect(id=2, effect_id=316, map="town", x=36, y=5 + i,
                                           start_ms=tick, duration_ms=1000, owner=7), (), now)
        shown += b.core.take_notifications()
    sim.run_until(sim.now + 0.5)
    shown += b.core.take_notifications()
    assert not [m for m in shown if m.get("event") == "effect"]  # never shown
    (alarm,) = [m for m in shown if m.get("event") == "anomaly"]
    assert alarm["reason"] == "failed_check" and "behind a wall" in alarm["detail"]
    assert b.core.stats(sim.now)["sync"]["sight_checks_walking"] >= 5  # judged walking


def test_an_effect_in_sight_is_shown_with_its_remaining_time_and_an_expired_one_is_not() -> None:
    net = SimNetwork(5, LinkProfile(delay=0.05))
    sim, a, b = pair(net, town())
    base = TICK_BASE
    a.core.send_event(Position(id=1, map="town", x=28, y=10, dir=6, tick=base), (), sim.now)
    sim.run_until(sim.now + 0.5)
    now = sim.now
    tick = base + 500
    a.core.send_event(Position(id=1, map="town", x=28, y=11, dir=6, tick=tick), (), now)
    # started 300 ms ago by the sender's clock, 1000 ms long; then one long over
    a.core.send_event(VisualEffect(id=2, effect_id=1, map="town", x=30, y=10,
                                   start_ms=tick - 300, duration_ms=1000, owner=7), (), now)
    a.core.send_event(VisualEffect(id=3, effect_id=2, map="town", x=30, y=10,
                                   start_ms=tick - 5000, duration_ms=1000, owner=7), (), now)
    sim.run_until(sim.now + 0.5)
    (effect,) = events(b, "effect")
    assert effect["effect_id"] == 1
    # 300 ms before sending, plus the way here (50 ms): about 650 ms left
    assert 600 <= effect["remaining_ms"] <= 700
    assert b.core.stats(sim.now)["sync"]["effects_expired"] == 1


def test_a_flood_of_effects_is_flagged() -> None:
    net = SimNetwork(6, LinkProfile(delay=0.02))
    sim, a, b = pair(net, a_p2p={"effect_update_rate": 60.0})
    for i in range(200):
        a.core.send_event(VisualEffect(id=2, effect_id=1, map="field", x=10, y=10,
                                       start_ms=TICK_BASE + i * 10, duration_ms=60_000,
                                       owner=7), (), sim.now)
        sim.run_until(sim.now + 0.01)
        if not a.core.links:
            break
    (alarm,) = flagged(b)
    assert alarm["reason"] == "rate_excess"
    assert not b.core.links


@pytest.mark.parametrize("kind", ["chat", "ai_interaction"])
def test_a_flood_of_chat_or_ai_interactions_is_cut_at_the_allowance_and_flagged(
        kind: str) -> None:
    net = SimNetwork(14, LinkProfile(delay=0.02))
    sim, a, b = pair(net)
    b.core.take_notifications()

    def event(i: int) -> Chat | AiInteraction:
        if kind == "chat":
            return Chat(id=i, text=f"buy cheap zeny {i}")
        return AiInteraction(id=i, interaction_id=i, ai_entity_id=77, player_id=9)

    burst = 50  # [sync] chat_burst and interaction_burst
    for i in range(40):  # a paste of 40 lines at once, then a line every 0.5 s: fine
        a.core.send_event(event(i), (), sim.now)
    for i in range(40, 60):
        sim.run_until(sim.now + 0.5)
        a.core.send_event(event(i), (), sim.now)
    sim.run_until(sim.now + 1.0)
    assert len(events(b, kind)) == 60
    assert not b.core.sync.peer(a.core.public_key, sim.now).score.counts
    sim.run_until(sim.now + 10.0)  # the allowance is full again
    # then 300 at once (a flood): what the allowance holds is shown, the rest dropped
    for i in range(60, 360):
        a.core.send_event(event(i), (), sim.now)
    sim.run_until(sim.now + 2.0)
    shown = [m for m in b.core.take_notifications() if m.get("event") in (kind, "anomaly")]
    lines = [m for m in shown if m["event"] == kind]
    assert burst <= len(lines) <= burst + 1  # the burst, in order (a token may refill)
    if kind == "chat":
        assert [m["text"] for m in lines[:burst]] == [f"buy cheap zeny {i}"
                                                     for i in range(60, 60 + burst)]
    else:
        assert [m["interaction_id"] for m in lines[:burst]] == list(range(60, 60 + burst))
    (alarm,) = [m for m in shown if m["event"] == "anomaly"]
    assert alarm["reason"] == "rate_excess" and "flood" in alarm["detail"]
    assert not b.core.links and b.core.sync.banned(a.core.public_key, sim.now)


def test_reports_disagreeing_with_the_server_are_flagged() -> None:
    net = SimNetwork(7, LinkProfile(delay=0.03))
    sim, a, b = pair(net)
    key = a.core.public_key.hex()
    results = []
    for i in range(40):  # it says it stands at (100, 100); the server sees it at (140, 100)
        sim.run_until(sim.now + 0.5)
        if not a.core.links:
            break
        a.core.send_event(Position(id=1, map="field", x=100, y=100, dir=0,
                                   tick=TICK_BASE + i * 500), (), sim.now)
        sim.run_until(sim.now + 0.1)
        if b.core.links:
            results.append(b.core.sync_request(
                ServerPosition(id=1, peer=key, map="field", x=140, y=100), sim.now))
    assert results[0]["action"] == "snap" and results[0]["disagreement"]
    (alarm,) = flagged(b)
    assert alarm["reason"] in ("disagreement", "rejected_move")
    assert alarm["offences"]["disagreement"] >= 2


def test_a_claim_the_server_rejects_is_a_failed_check() -> None:
    net = SimNetwork(8, LinkProfile(delay=0.03))
    sim, a, b = pair(net)
    key = a.core.public_key.hex()
    a.core.send_event(AiInteraction(id=1, interaction_id=5, ai_entity_id=77, player_id=9,
                                    result="won the duel"), (), sim.now)
    a.core.send_event(AiInteraction(id=2, interaction_id=6, ai_entity_id=77, player_id=9,
                                    result="gift"), (), sim.now)
    sim.run_until(sim.now + 0.5)
    got = events(b, "ai_interaction")
    assert [m["claim"] for m in got] == ["claimed", "claimed"]
    verify = b.core.sync_request
    assert verify(VerifyInteraction(id=1, peer=key, ai_entity_id=77, interaction_id=6,
                                    result="gift"), sim.now) == {"claim": "confirmed"}
    assert verify(VerifyInteraction(id=1, peer=key, ai_entity_id=77, interaction_id=5,
                                    result="lost the duel"), sim.now) == {"claim": "rejected"}
    assert verify(VerifyInteraction(id=1, peer=key, ai_entity_id=77, interaction_id=5,
                                    result="lost the duel"), sim.now) == {"claim": "unknown"}
    assert b.core.sync.peer(a.core.public_key, sim.now).score.counts == {"failed_check": 1}


def test_honest_player_is_never_flagged_over_a_long_lossy_jittery_session() -> None:
    grid = town()
    net = SimNetwork(21, LinkProfile(delay=0.04, jitter=0.1, loss=0.2))
    sim, a, b = pair(net, grid)
    key = a.core.public_key
    walk = record_walk(8, 600.0, (10, 10), map_name="town", grid=grid, tick_base=TICK_BASE)
    start = sim.now
    rng = random.Random(2)
    counts = {"server": 0, "effects": 0, "claims": 0}

    def act(now: float) -> None:
        truth = walk.at(now - start)
        if rng.random() < 0.02:  # an effect on a cell it sees, up to 8 cells away
            x, y = truth.x, truth.y
            for _ in range(20):
                x, y = truth.x + rng.randint(-8, 8), truth.y + rng.randint(-8, 8)
                if grid.inside(x, y) and line_of_sight(grid, (truth.x, truth.y), (x, y)):
                    break
                x, y = truth.x, truth.y
            a.core.send_event(VisualEffect(id=3, effect_id=9, map="town", x=x, y=y,
                                           start_ms=truth.tick, duration_ms=2000,
                                           owner=1), (), now)
            counts["effects"] += 1
        if rng.random() < 0.05 and b.core.links:  # the server's view, 100 ms behind
            lagged = walk.at(now - start - 0.1)
            b.core.sync_request(ServerPosition(id=4, peer=key.hex(), map="town", x=lagged.x,
                                               y=lagged.y, speed=150), now)
            counts["server"] += 1

    play(sim, a, walk, start, start + 600.0, act)
    assert b.core.links and not flagged(b)
    peer = b.core.sync.peer(key, sim.now)
    print(f"honest: {peer.moves.accepted} moves accepted, {peer.moves.rejected} rejected, "
          f"score {peer.score.value(sim.now):.2f}, offences {dict(peer.score.counts)}, "
          f"{counts}")
    assert peer.moves.rejected == 0 and not peer.score.counts.get("failed_check")
    # a report that aged under 20% loss may rarely disagree with the server; it
    # fades and stays far from the threshold
    assert peer.score.counts.get("disagreement", 0) <= 2
    assert peer.score.value(sim.now) < b.core.sync.rules.anomaly.threshold / 2
    assert counts["server"] > 500 and counts["effects"] > 200  # the checks really ran
    sight = b.core.stats(sim.now)["sync"]
    print(f"sight: {sight['sight_checks']} judged ({sight['sight_checks_walking']} of a walking "
          f"player), {sight['sight_unjudged']} not (too uncertain)")
    assert sight["sight_checks_walking"] > 50  # walkers' effects are judged too


# -- state for newcomers --------------------------------------------------------------


def test_a_newcomer_gets_environment_and_legend_state_within_one_round_trip() -> None:
    net = SimNetwork(9, LinkProfile(delay=0.05))
    rng = random.Random(4)
    nodes = []
    for address in (A_ADDR, B_ADDR):
        config = DaemonConfig(source=Path("test.ini"))
        nodes.append(CoreNode(address, Node(config, Identity.from_private_bytes(
            rng.randbytes(32)), random_bytes=random.Random(rng.random()).randbytes)))
    old, newcomer = nodes
    sim = Simulation(net, nodes)
    # the old hand's client set the area's state before anyone else came
    old.core.sync.on_state(Environment(id=1, kind="weather", key="prontera",
                                       value=(("type", "rain"),), version=3))
    old.core.sync.on_state(Environment(id=1, kind="weather", key="prontera",
                                       value=(("type", "snow"),), version=2))  # stale
    old.core.sync.on_state(LegendData(id=1, ai_entity_id=77, kind="info",
                                      data=(("map", "prontera"), ("x", 5), ("y", 5)),
                                      version=1))
    newcomer.core.connect(old.address, old.core.public_key, sim.now)
    established: dict[str, float] = {}
    arrived: dict[str, float] = {}

    def watch() -> bool:
        for m in newcomer.core.take_notifications():
            if m.get("event") == "peer_joined":
                established["at"] = sim.now
            elif m.get("event") in ("environment", "legend"):
                arrived.setdefault(m["event"], sim.now)
                assert m.get("value", {}).get("type", "rain") == "rain"
        return len(arrived) < 2

    assert sim.run_while(watch, 5.0)
    # one round trip (0.1 s), plus the 5 ms each side's session waits for more data
    # to batch (the daemon's shell flushes at the end of each input burst instead)
    rtt = 0.1
    assert max(arrived.values()) - established["at"] <= rtt + 2 * 0.005 + 1e-9
    state = newcomer.core.sync_request(SharedState(id=1), sim.now)
    assert state["environment"] == [{"kind": "weather", "key": "prontera",
                                      "value": {"type": "rain"}, "version": 3}]
    assert state["legend"][0]["ai_entity_id"] == 77


def test_snapshot_request_bytes_are_as_documented() -> None:
    assert bytes.fromhex("81a16302") == SNAPSHOT_REQUEST  # docs/protocol.md 13.3
    assert is_snapshot_request(bytes.fromhex("81a16302"))
    assert not is_snapshot_request(bytes.fromhex("81a16301"))
