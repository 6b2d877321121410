"""Dead reckoning against a fixed-rate position stream: bytes and error.

One remote player walks a typical town walk (stop-and-go with turns, as
DOMAIN.md describes it: p2pd/sim/walks.py, ``mixed``) for 300 virtual seconds;
its daemon's session core sends its positions to one peer over the simulated
network (40 ms one way, 30 ms jitter, 1% loss). Two ways:

- fixed: the position at ``position_update_rate`` (5/s), every one sent
  (``SessionConfig.position_error_budget = None``), delta-coded as p2pd does;
- dead reckoning: the client hands over every change (a new cell, a turn, a
  start or stop) within the same 5/s limit, and the sender leaves out what the
  peer can predict within the error budget of 1 cell (refreshed every second).

Bytes per second per remote player: every datagram of that link both ways
(positions, acknowledgements, PINGs; UDP/IPv4 headers included, the
handshake excluded). Error: the receiver draws the player with p2pd's
interpolation buffer (p2pd/sync: playout delay, interpolation, capped
extrapolation) every 50 ms, and the distance in cells (Chebyshev) from the
true cell at the moment drawn is recorded. Goal: dead reckoning at most half
the bytes of the fixed stream at the same error bound; ``ratio`` is dead
reckoning's bytes over the fixed stream's. Ends with one JSON line.
"""

from __future__ import annotations

import json
import random

from p2pd.crypto.identity import Identity
from p2pd.meters import TokenBucket
from p2pd.session.config import SessionConfig
from p2pd.session.endpoint import Endpoint
from p2pd.session.events import PositionReceived, SessionEstablished
from p2pd.sim.network import LinkProfile, SimNetwork, Simulation
from p2pd.sim.nodes import EndpointNode
from p2pd.sim.walks import record_walk
from p2pd.sync.playout import PeerClock, PlayoutRules
from p2pd.sync.track import EntityTrack

SECONDS = 300.0
RATE = 5.0  # position_update_rate
UDP_IP = 28
TICK_BASE = 5_000_000
A, B = ("10.9.0.1", 7000), ("10.9.0.2", 7000)


def run(mode: str, seed: int = 1) -> dict[str, float]:
    rng = random.Random(seed)
    net = SimNetwork(seed, LinkProfile(delay=0.04, jitter=0.03, loss=0.01))
    budget = 1 if mode == "dead_reckoning" else None
    nodes = []
    for address in (A, B):
        own = random.Random(rng.random())
        config = SessionConfig(position_error_budget=budget)
        endpoint = Endpoint(Identity.from_private_bytes(own.randbytes(32)), config,
                            random_bytes=own.randbytes)
        nodes.append(EndpointNode(address, endpoint))
    a, b = nodes
    sim = Simulation(net, nodes)
    key_b = b.endpoint.identity.public_key
    a.endpoint.connect(key_b, B, 0.0)
    assert sim.run_while(lambda: not b.events_of(SessionEstablished), 5.0)
    wire = 0
    original = net.send

    def count(src: tuple[str, int], dst: tuple[str, int], data: bytes, now: float) -> None:
        nonlocal wire
        wire += UDP_IP + len(data)
        original(src, dst, data, now)

    net.send = count  # type: ignore[method-assign]
    walk = record_walk(seed, SECONDS, (200, 200), kind="mixed", tick_base=TICK_BASE)
    clock = PeerClock(PlayoutRules(interval=1.0 / RATE))
    track = EntityTrack(PlayoutRules().max_extrapolation)
    start = sim.now
    bucket = TokenBucket(RATE, RATE, start)
    seen = 0
    errors: list[float] = []
    handed = 0
    i = 0
    step = 0
    deferred = None
    while True:
        now = start + step * 0.05
        if now >= start + SECONDS:
            break
        t = now - start
        if mode == "dead_reckoning":  # every change, within the rate limit
            while i < len(walk.times) and walk.times[i] <= t:
                deferred = walk.states[i]  # a newer change replaces one still waiting
                i += 1
            if deferred is not None and bucket.take(1, now):
                a.endpoint.send_position(key_b, deferred, now)
                deferred = None
                handed += 1
        elif step % round(1.0 / RATE / 0.05) == 0:  # the current state, 5 times a second
            state = walk.at(t)
            a.endpoint.send_position(key_b, state.__class__(
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
            truth = walk.at((tick - TICK_BASE) / 1000.0)
            errors.append(max(abs(shown.x - truth.x), abs(shown.y - truth.y)))
        step += 1
    errors.sort()
    channels = a.endpoint.session_statistics(key_b).channels
    return {
        "bytes_per_s": wire / SECONDS,
        "positions_sent_per_s": channels["positions_sent"] / SECONDS,
        "handed_per_s": handed / SECONDS,
        "error_mean": sum(errors) / len(errors),
        "error_p95": errors[int(0.95 * len(errors))],
        "error_p99": errors[int(0.99 * len(errors))],
        "error_max": errors[-1],
    }


def main() -> None:
    fixed = run("fixed")
    reckoned = run("dead_reckoning")
    print(f"one remote player, {SECONDS:g} s of stop-and-go walking with turns; 40 ms one "
          "way, 30 ms jitter, 1% loss; bytes both ways with UDP/IPv4 headers")
    for name, figures in (("fixed 5/s", fixed), ("dead reckoning", reckoned)):
        print(f"  {name:<15}: {figures['bytes_per_s']:7.1f} B/s, "
              f"{figures['positions_sent_per_s']:.2f} positions/s sent "
              f"({figures['handed_per_s']:.2f}/s handed over); error mean "
              f"{figures['error_mean']:.2f}, p95 {figures['error_p95']:.2f}, p99 "
              f"{figures['error_p99']:.2f}, max {figures['error_max']:.2f} cells")
    ratio = reckoned["bytes_per_s"] / fixed["bytes_per_s"]
    print(f"ratio (dead reckoning / fixed bytes): {ratio:.3f}; goal: at most 0.5 at the "
          "same error bound")
    out: dict[str, float] = {"ratio": round(ratio, 3)}
    for prefix, figures in (("fixed", fixed), ("dr", reckoned)):
        for name, value in figures.items():
            out[f"{prefix}_{name}"] = round(value, 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
