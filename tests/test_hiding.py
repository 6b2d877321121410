"""Information hiding (spec 5.2): a peer only receives what its player may see.
Node triples on the simulated network, in virtual time: effects and AI
interactions only to players in view of where they happen, nothing positional
of a hidden player, and a hidden peer never shown by the receiving daemon."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from p2pd.channels.position_codec import PositionState
from p2pd.config import DaemonConfig
from p2pd.crypto.identity import Identity
from p2pd.ipc.messages import AiInteraction, LegendData, Position, Render, VisualEffect
from p2pd.ipc.peer_codec import encode_peer_event
from p2pd.node import Node
from p2pd.sim.network import LinkProfile, SimNetwork, Simulation
from p2pd.sim.nodes import CoreNode
from p2pd.sync.visibility import HIDDEN_NOTICE, SHOWN_NOTICE, VISIBILITY_KEY, read_notice
from p2pd.wire.types import PacketType

TICK = 1_000_000


def trio(seed: int, xs: tuple[int, ...]) -> tuple[Simulation, list[CoreNode[Node]]]:
    """Nodes standing at (x, 100) on one map, the first linked with the others,
    each having told the others where it stands."""
    rng = random.Random(seed)
    nodes = [CoreNode((f"10.8.0.{i + 1}", 7000),
                      Node(DaemonConfig(source=Path("test.ini")),
                           Identity.from_private_bytes(rng.randbytes(32)),
                           random_bytes=random.Random(rng.random()).randbytes))
             for i in range(len(xs))]
    sim = Simulation(SimNetwork(seed, LinkProfile(delay=0.02)), nodes)
    hub = nodes[0]
    for other in nodes[1:]:
        hub.core.connect(other.address, other.core.public_key, sim.now)
    assert sim.run_while(lambda: len(hub.core.links) < len(xs) - 1
                         or not all(n.core.links for n in nodes[1:]), 10.0)
    for node, x in zip(nodes, xs, strict=True):
        stand(node, x, sim.now)
    sim.run_until(sim.now + 0.5)
    for node in nodes:
        node.core.take_notifications()
    return sim, nodes


def stand(node: CoreNode[Node], x: int, now: float, hidden: bool = False,
          tick: int = TICK) -> dict[str, int]:
    return node.core.send_event(Position(id=1, map="prontera", x=x, y=100, dir=0, tick=tick,
                                         hidden=hidden), (), now)


def effect(x: int, start: int = TICK) -> VisualEffect:
    return VisualEffect(id=2, effect_id=316, map="prontera", x=x, y=100, start_ms=start,
                        duration_ms=60_000, owner=1)


def got(node: CoreNode[Node], name: str) -> list[dict[str, Any]]:
    return [m for m in node.core.take_notifications() if m.get("event") == name]


def test_effects_and_placed_ai_interactions_go_only_to_players_who_may_see_them() -> None:
    # A at 100; B at 96 and C at 120 (C sees the cells from 106 on, B up to 110)
    sim, (a, b, c) = trio(1, (100, 96, 120))
    assert a.core.send_event(effect(90), (), sim.now) == {
        "sent": 1, "rate_limited": 0, "out_of_view": 1, "absent": 0}
    assert a.core.send_event(effect(112), (), sim.now)["out_of_view"] == 1
    assert a.core.send_event(effect(108), (), sim.now)["sent"] == 2  # both see it
    sim.run_until(sim.now + 0.5)
    assert [m["x"] for m in got(b, "effect")] == [90, 108]
    assert [m["x"] for m in got(c, "effect")] == [112, 108]
    # an AI entity whose place A knows (its Legend info) at (91, 100): B only
    a.core.send_event(LegendData(id=3, ai_entity_id=77, kind="info",
                                 data=(("map", "prontera"), ("x", 91), ("y", 100)),
                                 version=1), (), sim.now)
    talk = AiInteraction(id=4, interaction_id=1, ai_entity_id=77, player_id=1, result="hi")
    assert a.core.send_event(talk, (), sim.now)["out_of_view"] == 1
    # one whose place is not known goes to everyone
    elsewhere = AiInteraction(id=5, interaction_id=2, ai_entity_id=78, player_id=1)
    assert a.core.send_event(elsewhere, (), sim.now)["sent"] == 2
    sim.run_until(sim.now + 0.5)
    assert [m["ai_entity_id"] for m in got(b, "ai_interaction")] == [77, 78]
    assert [m["ai_entity_id"] for m in got(c, "ai_interaction")] == [78]
    assert a.core.stats(sim.now)["events"]["out_of_view"] >= 3


def test_a_hidden_player_sends_nothing_positional_and_peers_stop_drawing_it() -> None:
    sim, (a, b, c) = trio(2, (100, 104, 108))
    key = a.core.public_key
    assert [r["peer"] for r in b.core.sync_request(Render(id=1), sim.now)["positions"]] == [
        key.hex()]
    sent_before = a.core.endpoint.session_statistics(b.core.public_key).channels[
        "positions_sent"]
    result = stand(a, 101, sim.now, hidden=True, tick=TICK + 500)
    assert result["sent"] == 0 and result["out_of_view"] == 2
    for i in range(10):  # it walks on, hidden, and casts an effect
        sim.run_until(sim.now + 0.2)
        stand(a, 102 + i, sim.now, hidden=True, tick=TICK + 700 + 200 * i)
    assert a.core.send_event(effect(104), (), sim.now)["out_of_view"] == 2
    sim.run_until(sim.now + 2.0)  # refreshes and repeats would have gone by now
    assert a.core.endpoint.session_statistics(b.core.public_key).channels[
        "positions_sent"] == sent_before
    for peer in (b, c):
        notes = peer.core.take_notifications()
        assert [m for m in notes if m.get("event") == "hidden"] == [
            {"event": "hidden", "from": key.hex(), "hidden": True}]
        assert not [m for m in notes if m.get("event") in ("position", "effect")]
        assert peer.core.sync_request(Render(id=1), sim.now)["positions"] == []
        assert peer.core.stats(sim.now)["sync"]["hidden_peers"] == 1
        (row,) = [r for r in peer.core.peers(sim.now) if r["peer"] == key.hex()]
        assert row["sync"]["hidden"] is True
    # a peer that links while it is hidden learns only that
    rng = random.Random(9)
    d = CoreNode(("10.8.0.9", 7000), Node(DaemonConfig(source=Path("test.ini")),
                                          Identity.from_private_bytes(rng.randbytes(32)),
                                          random_bytes=rng.randbytes))
    sim.add_node(d)
    stand(d, 106, sim.now)
    d.core.connect(a.address, key, sim.now)
    sim.run_until(sim.now + 1.0)
    notes = d.core.take_notifications()
    assert {"event": "hidden", "from": key.hex(), "hidden": True} in notes
    assert not [m for m in notes if m.get("event") == "position" and m["from"] == key.hex()]
    # shown again: peers are told, and get where it is at once
    stand(a, 112, sim.now, tick=TICK + 5000)
    sim.run_until(sim.now + 0.5)
    for peer in (b, c, d):
        notes = peer.core.take_notifications()
        shown = [m for m in notes if m.get("event") in ("hidden", "position")]
        assert shown[0] == {"event": "hidden", "from": key.hex(), "hidden": False}
        assert shown[-1]["event"] == "position" and shown[-1]["x"] == 112
        rows = peer.core.sync_request(Render(id=1), sim.now)["positions"]
        assert [r["x"] for r in rows if r["peer"] == key.hex()] == [112]


def test_shown_again_where_it_hid_it_is_drawn_there_again() -> None:
    sim, (a, b) = trio(4, (100, 104))
    key = a.core.public_key.hex()
    stand(a, 100, sim.now, hidden=True, tick=TICK + 100)
    sim.run_until(sim.now + 1.0)
    assert b.core.sync_request(Render(id=1), sim.now)["positions"] == []
    b.core.take_notifications()
    stand(a, 100, sim.now, tick=TICK + 1100)  # the same cell: sent all the same
    sim.run_until(sim.now + 0.5)
    notes = [m for m in b.core.take_notifications() if m.get("event") in ("hidden", "position")]
    assert [(m["event"], m.get("x")) for m in notes] == [("hidden", None), ("position", 100)]
    assert [r["x"] for r in b.core.sync_request(Render(id=1), sim.now)["positions"]
            if r["peer"] == key] == [100]


def test_a_hidden_peer_is_not_shown_whatever_it_sends() -> None:
    """A daemon that says its player is hidden but keeps sending (a modified
    one, or datagrams in flight): the receiver shows none of it."""
    sim, (a, b) = trio(3, (100, 104))
    key, b_key = a.core.public_key, b.core.public_key
    a.core.endpoint.send(b_key, PacketType.ENVIRONMENTAL, HIDDEN_NOTICE, sim.now, VISIBILITY_KEY)
    sim.run_until(sim.now + 0.3)
    assert got(b, "hidden") == [{"event": "hidden", "from": key.hex(), "hidden": True}]
    a.core.endpoint.send_position(b_key, PositionState("prontera", 101, 100, 0, 150, False,
                                                       TICK + 900), sim.now)
    packet_type, payload = encode_peer_event(effect(103, TICK + 900))
    a.core.endpoint.send(b_key, packet_type, payload, sim.now)
    sim.run_until(sim.now + 0.5)
    notes = b.core.take_notifications()
    assert not [m for m in notes if m.get("event") in ("position", "effect")]
    assert b.core.sync_request(Render(id=1), sim.now)["positions"] == []
    # the position and the effect (and A's refreshes of where it stands)
    assert b.core.stats(sim.now)["sync"]["hidden_dropped"] >= 2
    assert not b.core.sync.peer(key, sim.now).score.counts  # hiding is no offence
    a.core.endpoint.send(b_key, PacketType.ENVIRONMENTAL, SHOWN_NOTICE, sim.now, VISIBILITY_KEY)
    sim.run_until(sim.now + 0.3)
    notes = b.core.take_notifications()
    assert notes[0] == {"event": "hidden", "from": key.hex(), "hidden": False}
    newest = b.core.sync.peer(key, sim.now).reported  # 101, or A's refresh of 100 after it
    assert newest is not None and notes[1]["event"] == "position"
    assert (notes[1]["x"], notes[1]["tick"]) == (newest.x, newest.tick)


def test_visibility_notices_are_the_documented_bytes() -> None:
    assert bytes.fromhex("82a16303a168c3") == HIDDEN_NOTICE  # docs/protocol.md 13.3
    assert bytes.fromhex("82a16303a168c2") == SHOWN_NOTICE
    assert bytes.fromhex("55f0b27d02a73a933308058b7146525e") == VISIBILITY_KEY
    assert read_notice(HIDDEN_NOTICE) is True and read_notice(SHOWN_NOTICE) is False
    assert read_notice(bytes.fromhex("82a16303a168c0")) is None
