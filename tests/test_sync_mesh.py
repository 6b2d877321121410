"""Cheat prevention with a coordinator (spec 5.2, server verification): daemon
nodes and the real coordinator on the simulated network, in virtual time. A
flagged peer is reported to the coordinator (``anomalous_peer``) and is not
dialled again by the mesh while it is banned; after the ban it may be."""

from __future__ import annotations

from p2pd.config import SyncSettings
from p2pd.coordinator.core import ReportReceived
from p2pd.ipc.messages import Position
from tests.test_coordinator import World, world
from tests.test_relay import Daemon, mesh_daemon

BAN = 40.0  # seconds; [sync] ban_seconds of the daemons here


def sync_daemon(w: World, player: int, x: int) -> Daemon:
    """A daemon like test_relay's, with a short ban."""
    return mesh_daemon(w, player, x, sync=SyncSettings(ban_seconds=BAN))


def linked(a: Daemon, b: Daemon) -> bool:
    return b.core.public_key in a.core.links and a.core.public_key in b.core.links


def speed_hack(w: World, cheat: Daemon, judge: Daemon) -> dict[str, object]:
    """Positions 12 cells apart every 0.3 s (within view of the honest player:
    its daemon would not send them to a player out of view; 5 cells at most at
    150 ms a cell) until ``judge`` flags the cheat: its anomaly event."""
    for i in range(100):
        if cheat.core.links:
            cheat.core.send_event(Position(id=1, map="prontera", x=102 + 12 * (i % 2), y=100,
                                           dir=0, tick=10_000 + i * 300), (), w.sim.now)
        w.sim.run_until(w.sim.now + 0.3)
        for note in judge.notes:
            if note.get("event") == "anomaly":
                return note
    raise AssertionError("never flagged")


def test_a_flagged_peer_is_reported_to_the_coordinator_and_not_redialled_while_banned() -> None:
    w, _ = world(31)
    honest, cheat = sync_daemon(w, 1, 100), sync_daemon(w, 2, 104)
    assert w.sim.run_while(lambda: not linked(honest, cheat), 15.0)
    dials: list[float] = []
    connect = honest.core.endpoint.connect

    def watch(peer: bytes, *args: object, **kwargs: object) -> None:
        if peer == cheat.core.public_key:
            dials.append(w.sim.now)
        connect(peer, *args, **kwargs)  # type: ignore[arg-type]

    honest.core.endpoint.connect = watch  # type: ignore[method-assign]
    alarm = speed_hack(w, cheat, honest)
    banned_at = w.sim.now  # within 0.3 s after it
    assert alarm["peer"] == cheat.core.public_key.hex()
    assert alarm["reason"] == "rejected_move"
    w.sim.run_until(w.sim.now + 2.0)
    # the report reached the coordinator: from the honest daemon, naming the cheat
    honest_id = w.coordinator.store.by_key(honest.core.public_key).daemon_id  # type: ignore[union-attr]
    reports = [r for r in w.coordinator.reports if r.report.code == "anomalous_peer"]
    assert reports == [ReportReceived(honest_id, 1, reports[0].report)]
    report = reports[0].report
    assert report.peer == cheat.core.public_key and report.severity == "warn"
    assert report.detail.startswith("rejected_move: speed")
    assert w.coordinator.report_codes["anomalous_peer"] == 1
    # banned: the mesh never dials it, though the coordinator keeps offering it and
    # the cheat's own daemon keeps dialling (each of its links is closed at once)
    cheat_tries = cheat.core.mesh.connects  # type: ignore[union-attr]
    w.sim.run_until(banned_at + BAN - 5.0)
    assert dials == [] and not linked(honest, cheat)
    assert cheat.core.public_key in honest.core.mesh.candidates  # type: ignore[union-attr]
    assert cheat.core.mesh.connects > cheat_tries  # type: ignore[union-attr]
    assert honest.core.mesh.banned(cheat.core.public_key, w.sim.now)  # type: ignore[union-attr]
    # after the ban it may link again (it behaves now)
    assert w.sim.run_while(lambda: not linked(honest, cheat), banned_at + BAN + 30.0)
    assert w.sim.now >= banned_at - 0.3 + BAN  # flagged at most 0.3 s before banned_at
    assert not honest.core.mesh.banned(cheat.core.public_key, w.sim.now)  # type: ignore[union-attr]
