"""Dead reckoning against a fixed-rate position stream: bytes and error.

One remote player walks a typical town walk (stop-and-go with turns, as
DOMAIN.md describes it: p2pd/sim/walks.py, ``mixed``) for 300 virtual seconds
over the simulated network (40 ms one way, 30 ms jitter, 1% loss). Two ways:

- fixed: a session core sends the player's position at ``position_update_rate``
  (5/s), every one (``SessionConfig.position_error_budget = None``),
  delta-coded as p2pd does;
- dead reckoning: two daemons' nodes (p2pd.node.Node) as they run: the client
  hands every change (a new cell, a turn, a start or a stop) over IPC's
  ``position``; the daemon sends within ``position_update_rate``, leaves out
  what the peer predicts within the error budget of 1 cell (refreshed every
  second), sends each course change (a stop, a turn) once more 150 ms later
  and again 800 ms later unless acknowledged, and refreshes a standing player
  each second.

Bytes per second per remote player: every datagram of that link both ways
(positions, acknowledgements, PINGs; UDP/IPv4 headers included, the
handshake excluded). Error: the receiver draws the player with p2pd's
interpolation buffer (p2pd/sync: playout delay, course-aware interpolation,
capped extrapolation) every 50 ms, and the distance in cells (Chebyshev) from
the true cell at the moment drawn is recorded; ``delay`` is the playout delay
(how far in the past it draws). Goal: dead reckoning at most half the bytes
of the fixed stream at the same error bound; ``ratio`` is dead reckoning's
bytes over the fixed stream's. Ends with one JSON line.
"""

from __future__ import annotations

import bisect
import json
import random
from collections.abc import Callable
from pathlib import Path

from p2pd.channels.position_codec import PositionState
from p2pd.config import DaemonConfig
from p2pd.crypto.identity import Identity
from p2pd.ipc.messages import Position
from p2pd.node import Node
from p2pd.session.config import SessionConfig
from p2pd.session.endpoint import Endpoint
from p2pd.session.events import PositionReceived, SessionEstablished
from p2pd.sim.network import LinkProfile, SimNetwork, Simulation
from p2pd.sim.nodes import CoreNode, EndpointNode
from p2pd.sim.walks import Walk, record_walk
from p2pd.sync.playout import PeerClock, PlayoutRules
from p2pd.sync.track import EntityTrack

SECONDS = 300.0
RATE = 5.0  # position_update_rate
STEP = 0.05  # seconds between two renders
UDP_IP = 28
TICK_BASE = 5_000_000
A, B = ("10.9.0.1", 7000), ("10.9.0.2", 7000)
Place = tuple[float, float]


def _count_bytes(net: SimNetwork) -> Callable[[], int]:
    """Bytes of every datagram sent from now on, UDP/IPv4 headers included (the
    network's own counters)."""
    start = net.statistics()

    def total() -> int:
        now = net.statistics()
        return now.bytes_sent - start.bytes_sent + UDP_IP * (now.sent - start.sent)

    return total


def _smooth(walk: Walk, t: float) -> Place:
    """Where a client animating the walk draws it at ``t``: between the cell it
    entered and the next one, in proportion to the time of the step."""
    i = max(bisect.bisect_right(walk.times, t) - 1, 0)
    state = walk.states[i]
    if not state.moving or i + 1 >= len(walk.times):
        return float(state.x), float(state.y)
    after, t0, t1 = walk.states[i + 1], walk.times[i], walk.times[i + 1]
    f = (t - t0) / (t1 - t0) if t1 > t0 else 1.0
    return state.x + (after.x - state.x) * f, state.y + (after.y - state.y) * f


def _figures(walk: Walk, drawn: list[tuple[float, Place, float]], wire: int, sent: int,
             handed: int) -> dict[str, float]:
    """Errors of the places drawn ((sender's tick, place, playout delay)) against
    the walk's true cells, and against the walk animated between cells."""
    errors = sorted(
        max(abs(x - truth.x), abs(y - truth.y))
        for tick, (x, y), _ in drawn
        for truth in (walk.at((tick - TICK_BASE) / 1000.0),))
    smooth = sorted(
        max(abs(x - sx), abs(y - sy))
        for tick, (x, y), _ in drawn
        for sx, sy in (_smooth(walk, (tick - TICK_BASE) / 1000.0),))
    delays = [delay for _, _, delay in drawn]
    return {
        "bytes_per_s": wire / SECONDS,
        "positions_sent_per_s": sent / SECONDS,
        "handed_per_s": handed / SECONDS,
        "error_mean": sum(errors) / len(errors),
        "error_p95": errors[int(0.95 * len(errors))],
        "error_p99": errors[int(0.99 * len(errors))],
        "error_p999": errors[int(0.999 * len(errors))],
        "error_max": errors[-1],
        "smooth_error_p99": smooth[int(0.99 * len(smooth))],
        "smooth_error_max": smooth[-1],
        "delay_ms_mean": 1000.0 * sum(delays) / len(delays),
    }


def run_fixed(seed: int = 1) -> dict[str, float]:
    """The current position 5 times a second, every one sent, drawn by the same
    clock and interpolation buffer as the daemon's."""
    rng = random.Random(seed)
    net = SimNetwork(seed, LinkProfile(delay=0.04, jitter=0.03, loss=0.01))
    nodes = []
    for address in (A, B):
        own = random.Random(rng.random())
        endpoint = Endpoint(Identity.from_private_bytes(own.randbytes(32)),
                            SessionConfig(position_error_budget=None),
                            random_bytes=own.randbytes)
        nodes.append(EndpointNode(address, endpoint))
    a, b = nodes
    sim = Simulation(net, nodes)
    key_b = b.endpoint.identity.public_key
    a.endpoint.connect(key_b, B, 0.0)
    assert sim.run_while(lambda: not b.events_of(SessionEstablished), 5.0)
    wire = _count_bytes(net)
    walk = record_walk(seed, SECONDS, (200, 200), kind="mixed", tick_base=TICK_BASE)
    clock = PeerClock(PlayoutRules(interval=1.0 / RATE))
    track = EntityTrack(PlayoutRules().max_extrapolation)
    start = sim.now
    seen = handed = 0
    drawn: list[tuple[float, Place, float]] = []
    every = round(1.0 / RATE / STEP)
    for step in range(int(SECONDS / STEP)):
        now = start + step * STEP
        t = now - start
        if step % every == 0:
            state = walk.at(t)
            a.endpoint.send_position(key_b, PositionState(
                state.map, state.x, state.y, state.dir, state.speed, state.moving,
                TICK_BASE + round(t * 1000)), now)
            handed += 1
        sim.run_until(now)
        for _, event in b.events[seen:]:
            if isinstance(event, PositionReceived):
                clock.observe(event.state.tick, sim.now)
                track.add(event.state)
        seen = len(b.events)
        if t > 2.0 and track:
            tick = clock.to_tick(now - clock.playout_delay())
            shown = track.at(tick)
            assert shown is not None
            drawn.append((tick, (shown.x, shown.y), clock.playout_delay()))
    sent = a.endpoint.session_statistics(key_b).channels["positions_sent"]
    return _figures(walk, drawn, wire(), sent, handed)


def run_dead_reckoning(seed: int = 1) -> dict[str, float]:
    """Two daemons' nodes: every change of the walk handed over as a client
    would, at its moment; the receiving node draws the player (``render``)."""
    rng = random.Random(seed)
    net = SimNetwork(seed, LinkProfile(delay=0.04, jitter=0.03, loss=0.01))
    nodes = []
    for address in (A, B):
        node = Node(DaemonConfig(source=Path("bench.ini")),
                    Identity.from_private_bytes(rng.randbytes(32)),
                    random_bytes=random.Random(rng.random()).randbytes)
        nodes.append(CoreNode(address, node))
    a, b = nodes
    sim = Simulation(net, nodes)
    a.core.connect(B, b.core.public_key, sim.now)
    assert sim.run_while(lambda: not (a.core.links and b.core.links), 5.0)
    wire = _count_bytes(net)
    walk = record_walk(seed, SECONDS, (200, 200), kind="mixed", tick_base=TICK_BASE)
    key = a.core.public_key
    start = sim.now
    drawn: list[tuple[float, Place, float]] = []
    i = 0
    for step in range(int(SECONDS / STEP)):
        now = start + step * STEP
        while i < len(walk.times) and start + walk.times[i] <= now:
            at = start + walk.times[i]
            sim.run_until(at)  # the client hands each change at its moment
            s = walk.states[i]
            a.core.send_event(Position(id=1, map=s.map, x=s.x, y=s.y, dir=s.dir,
                                       speed=s.speed, moving=s.moving, tick=s.tick), (), at)
            i += 1
        sim.run_until(now)
        b.core.take_notifications()
        peer = b.core.sync.peer(key, now)
        if now - start > 2.0 and peer.track:
            tick = b.core.sync.render_tick(peer, now)
            shown = peer.track.at(tick)
            assert shown is not None
            drawn.append((tick, (shown.x, shown.y), peer.clock.playout_delay()))
    channels = a.core.endpoint.session_statistics(b.core.public_key).channels
    return _figures(walk, drawn, wire(), channels["positions_sent"], i) | {
        "repeated_per_s": channels["positions_repeated"] / SECONDS}


def main() -> None:
    fixed = run_fixed()
    reckoned = run_dead_reckoning()
    print(f"one remote player, {SECONDS:g} s of stop-and-go walking with turns; 40 ms one "
          "way, 30 ms jitter, 1% loss; bytes both ways with UDP/IPv4 headers")
    for name, figures in (("fixed 5/s", fixed), ("dead reckoning", reckoned)):
        print(f"  {name:<15}: {figures['bytes_per_s']:7.1f} B/s, "
              f"{figures['positions_sent_per_s']:.2f} positions/s sent "
              f"({figures['handed_per_s']:.2f}/s handed over); error mean "
              f"{figures['error_mean']:.2f}, p95 {figures['error_p95']:.2f}, p99 "
              f"{figures['error_p99']:.2f}, p99.9 {figures['error_p999']:.2f}, max "
              f"{figures['error_max']:.2f} cells; drawn {figures['delay_ms_mean']:.0f} ms "
              "in the past")
    print(f"  dead reckoning repeats {reckoned['repeated_per_s']:.2f} course changes/s")
    ratio = reckoned["bytes_per_s"] / fixed["bytes_per_s"]
    print(f"ratio (dead reckoning / fixed bytes): {ratio:.3f}; goal: at most 0.5 at the "
          "same error bound (max error: fixed "
          f"{fixed['error_max']:.2f}, dead reckoning {reckoned['error_max']:.2f} cells)")
    out: dict[str, float] = {"ratio": round(ratio, 3)}
    for prefix, figures in (("fixed", fixed), ("dr", reckoned)):
        for name, value in figures.items():
            out[f"{prefix}_{name}"] = round(value, 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
