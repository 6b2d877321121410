"""The daemon's side of the sync requests of the IPC API (docs/ipc.md 6.8) and
the snapshots of shared state (spec 10.2), on top of a :class:`~p2pd.node.Node`.

- ``render``: where to draw each peer's player now (:meth:`GameSync.render`).
- ``server_position``: the game server's position of a peer's player: the
  drawn position snaps or blends to it, and a peer whose own report keeps
  disagreeing is an offender.
- ``verify_interaction``: the server's outcome of a peer's AI interaction
  confirms or rejects the peer's claim (a rejected claim is an offence).
- ``shared_state``: the environment and Legend values held now.
- ``request_snapshot``: asks peers for their whole shared state (the
  ENVIRONMENTAL payload ``{"c": 2}``); each answers with every value it holds.

A snapshot goes to a peer when it asks (each side asks as soon as their link
is up, so a newcomer has the area's state one round trip later), and to every
peer every ``snapshot_interval`` seconds while there is state to share.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from p2pd.cheat.anomaly import Offence
from p2pd.ipc.errors import IpcError
from p2pd.ipc.fields import map_to_dict
from p2pd.ipc.messages import (
    Environment,
    Render,
    RequestSnapshot,
    ServerPosition,
    SharedState,
    SyncRequest,
    VerifyInteraction,
)
from p2pd.ipc.peer_codec import encode_peer_event
from p2pd.session.endpoint import SendQueueFull
from p2pd.session.session import MessageTooLarge
from p2pd.sync.claims import ClaimState
from p2pd.sync.state import SNAPSHOT_REQUEST, StateEvent, state_key
from p2pd.wire.types import PacketType

if TYPE_CHECKING:
    from p2pd.node import Node

_REQUEST_KEY = hashlib.blake2b(b"snapshot-request", digest_size=16).digest()


def value_key(event: StateEvent) -> bytes:
    """The latest-value key of a state value: the same as Node's for a client's
    event, so that a newer version replaces an older one still waiting."""
    if isinstance(event, Environment):
        name = f"environment\0{event.kind}\0{event.key}"
    else:
        name = f"legend\0{event.ai_entity_id}\0{event.kind}"
    return hashlib.blake2b(name.encode(), digest_size=16).digest()


def state_row(event: StateEvent) -> dict[str, Any]:
    if isinstance(event, Environment):
        return {"kind": event.kind, "key": event.key, "value": map_to_dict(event.value),
                "version": event.version}
    return {"ai_entity_id": event.ai_entity_id, "kind": event.kind,
            "data": map_to_dict(event.data), "version": event.version}


class SyncApi:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.snapshots_sent = 0  # values sent in snapshots
        self.snapshot_requests = 0  # requests sent to peers
        self._next_snapshot: float | None = None
        self._next_refresh = 0.0
        self._deferred_at: float | None = None  # when held-back positions are tried again

    # -- snapshots -----------------------------------------------------------

    def send_snapshot(self, peer: bytes, now: float) -> int:
        """Every value held, to ``peer`` (reliable, latest-value); returns how many."""
        node = self.node
        sent = 0
        for value in node.sync.state.values():
            packet_type, payload = encode_peer_event(value)
            try:
                node.endpoint.check_send(peer, packet_type, payload, value_key(value))
            except (MessageTooLarge, SendQueueFull):
                continue  # a value that does not fit, or a peer that is behind: next time
            node.endpoint.send(peer, packet_type, payload, now, value_key(value))
            sent += 1
        self.snapshots_sent += sent
        return sent

    def ask_snapshot(self, peer: bytes, now: float) -> None:
        """Ask ``peer`` for its whole shared state (each side asks as its link comes
        up: the answer is one round trip away)."""
        self.node.endpoint.send(peer, PacketType.ENVIRONMENTAL, SNAPSHOT_REQUEST, now,
                                _REQUEST_KEY)
        self.snapshot_requests += 1

    def deadline(self) -> float | None:
        deadline = self._deadline()
        repeat = self.node.next_repeat()
        if repeat is not None:
            deadline = repeat if deadline is None else min(deadline, repeat)
        deferred = self._deferred_at
        if deferred is None:
            if any(link.deferred is not None for link in self.node.links.values()):
                deferred = self._deferred_at = self.node.now_hint + 0.05
            else:
                return deadline
        return deferred if deadline is None else min(deadline, deferred)

    def _deadline(self) -> float | None:
        own = self.node.own_position
        if own is not None and not own.moving and not self.node.own_hidden and self.node.links:
            refresh = self._next_refresh
            snapshot = self._snapshot_deadline()
            return refresh if snapshot is None else min(refresh, snapshot)
        return self._snapshot_deadline()

    def _snapshot_deadline(self) -> float | None:
        if not self.node.links or not len(self.node.sync.state):
            self._next_snapshot = None
            return None
        return self._next_snapshot

    def refresh_standing(self, now: float) -> None:
        """A standing player's client sends nothing until it moves: once a second
        its position goes out again with the clock moved on, which costs nothing
        where the peer acknowledged it (the position channel skips it) and
        repairs a lost stop where it did not (spec 10.2: drift corrected)."""
        node = self.node
        own = node.own_position
        if own is None or own.moving or node.own_hidden or now < self._next_refresh:
            return
        self._next_refresh = now + 1.0
        state = replace(own, tick=own.tick + max(int((now - node.own_position_at) * 1000), 0))
        for link in node.links.values():
            if node.in_view(link, own, now):  # information hiding holds here too
                node.hand_position(link, state, now)

    def on_timer(self, now: float) -> None:
        node = self.node
        self._deferred_at = now + 0.05 if node.send_deferred(now) else None
        node.repeat_positions(now)
        self.refresh_standing(now)
        if not node.links or not len(node.sync.state):
            return
        if self._next_snapshot is None:
            self._next_snapshot = now + node.sync.rules.snapshot_interval
        elif now >= self._next_snapshot:
            self._next_snapshot = now + node.sync.rules.snapshot_interval
            for peer in list(node.links):
                self.send_snapshot(peer, now)

    # -- requests ------------------------------------------------------------

    def _linked(self, keys: tuple[str, ...], field: str) -> list[bytes]:
        links = self.node.links
        if not keys:
            return list(links)
        chosen = [bytes.fromhex(k) for k in keys]
        for key in chosen:
            if key not in links:
                raise IpcError("no_such_peer", f"no link with peer {key.hex()}", field)
        return chosen

    def handle(self, request: SyncRequest, now: float) -> dict[str, Any]:
        node, sync = self.node, self.node.sync
        if isinstance(request, Render):
            return {"positions": sync.render(self._linked(request.peers, "peers"), now)}
        if isinstance(request, ServerPosition):
            peer = self._linked((request.peer,), "peer")[0]
            result, check = sync.server_position(peer, request.map, request.x, request.y,
                                                 request.speed or None, request.warp, now)
            if check is not None:
                node.offend(peer, check[0], check[1], now)
            return result
        if isinstance(request, VerifyInteraction):
            peer = bytes.fromhex(request.peer)
            state = sync.claims.verify(peer, request.ai_entity_id, request.interaction_id,
                                       request.result)
            if state is ClaimState.REJECTED:
                node.offend(peer, Offence.FAILED_CHECK,
                            f"claimed another result of interaction {request.interaction_id} "
                            f"with AI {request.ai_entity_id} than the server's", now)
            return {"claim": state.value}
        if isinstance(request, SharedState):
            values = sync.state.values()
            return {"environment": [state_row(v) for v in values
                                    if state_key(v)[0] == "environment"],
                    "legend": [state_row(v) for v in values if state_key(v)[0] == "legend"]}
        assert isinstance(request, RequestSnapshot)
        peers = self._linked(request.peers, "peers")
        for peer in peers:
            self.ask_snapshot(peer, now)
        return {"sent": len(peers)}
