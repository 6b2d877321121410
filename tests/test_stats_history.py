"""The per-second history behind IPC stats (spec 8.2, 8.3): the ring itself, and
the node's samples over the simulated network in virtual time."""

from __future__ import annotations

from p2pd.ipc.messages import Chat
from p2pd.sim.network import LinkProfile, SimNetwork
from p2pd.stats_history import PeerTotals, StatsHistory, Totals, peer_id
from tests.test_node_bandwidth import linked

KEY = bytes(range(32))


def peer(**counts: int) -> PeerTotals:
    return PeerTotals("direct", "manual", 1.5, 0.0, False, **counts)


def test_samples_hold_per_second_rates_of_cumulative_totals() -> None:
    history = StatsHistory(capacity=3)
    assert history.record(10.2, Totals(bytes_in=100, events_sent={"chat": 1},
                                       peers={KEY: peer(bytes_in=50)})) is None  # baseline
    assert history.record(10.9, Totals(bytes_in=999)) is None  # same second: ignored
    first = history.record(11.0, Totals(bytes_in=400, events_sent={"chat": 4, "position": 0},
                                        drops=2, auth_failures=1,
                                        peers={KEY: peer(bytes_in=250, packets_in=3)}))
    assert first is not None and first.t == 11
    assert (first.bytes_in, first.drops, first.auth_failures) == (300, 2, 1)
    assert first.events_sent == {"chat": 3}  # kinds that did not occur are left out
    assert first.peers[peer_id(KEY)].bytes_in == 200
    assert first.peers[peer_id(KEY)].idle_s == 0
    late = history.record(14.5, Totals(bytes_in=1000, peers={KEY: peer(bytes_in=100,
                                                                        packets_in=3)}))
    assert late is not None and late.bytes_in == 200  # 600 over three seconds
    assert late.peers[peer_id(KEY)].bytes_in == 0  # its session restarted: not negative
    assert late.peers[peer_id(KEY)].idle_s == 3  # nothing from it since second 11
    for t in (15, 16, 17):
        history.record(t, Totals(bytes_in=1000))
    assert [s.t for s in history.samples] == [15, 16, 17]  # bounded: the oldest went
    assert [s.t for s in history.since(15)] == [16, 17]
    wire = history.samples[-1].to_wire()
    assert wire["errors"] == {"auth": 0, "drops": 0, "invalid_events": 0, "rate_excess": 0,
                              "internal": 0}
    assert wire["peers"] == {}


def test_the_node_samples_what_each_peer_link_carried_and_a_silent_peer_shows_idle() -> None:
    net = SimNetwork(seed=4)
    sim, (a, b) = linked(net)
    node = a.core
    second = int(sim.now) + 1
    sim.run_until(second)
    node.record_second(sim.now)  # the baseline
    for i in range(3):
        node.send_event(Chat(id=1, text=f"line {i}"), (), sim.now)
    before = node.endpoint.session_statistics(b.core.public_key)
    sim.run_until(second + 0.999)  # chats and their acks, within the second
    after = node.endpoint.session_statistics(b.core.public_key)
    sim.run_until(second + 1)
    node.record_second(sim.now)
    sample = node.history.samples[-1]
    assert sample.t == second + 1
    assert sample.events_sent == {"chat": 3}
    link = sample.peers[peer_id(b.core.public_key)]
    assert link.bytes_out == after.bytes_sent - before.bytes_sent > 0
    assert link.packets_in == after.packets_received - before.packets_received > 0
    assert link.path == "direct" and link.idle_s == 0
    assert b.core.history.samples == type(b.core.history.samples)()  # b was never sampled
    # b falls silent (its datagrams no longer reach a): idle grows each second
    silent = sim.now
    net.set_link(b.address, a.address, LinkProfile(blackholes=((silent, silent + 100),)))
    for t in range(1, 13):
        sim.run_until(second + 1 + t)
        node.record_second(sim.now)
    shown = node.stats(sim.now, history=3)
    assert [s["t"] for s in shown["history"]] == [second + 11, second + 12, second + 13]
    assert shown["history"][-1]["peers"][peer_id(b.core.public_key)]["idle_s"] >= 11
    link_entry = next(e for e in shown["links"] if e["peer"] == b.core.public_key.hex())
    assert link_entry["idle_s"] >= 11 and link_entry["id"] == peer_id(b.core.public_key)
    assert shown["bandwidth"]["limit_bytes_per_s_total"] == 250 * 1024
    assert shown["history_seconds"] == 300
