"""``GameSync``: what the daemon does with game state between the network and
the IPC API (spec 4, 5.2, 9, 10.2), without I/O.

Per remote player it keeps a :class:`PeerSync`: the peer's clock and jitter
(:class:`~p2pd.sync.playout.PeerClock`), the interpolation buffer of its
player (:class:`~p2pd.sync.track.EntityTrack`), the checks of its moves
(:class:`~p2pd.cheat.movement.MoveValidator`), its anomaly score
(:class:`~p2pd.cheat.anomaly.AnomalyScore`) and allowances of positions and
effects per second (three times what this daemon's own settings send: peers'
settings may differ) and of chat lines and AI interactions (``[sync]``
``chat_rate``/``chat_burst``, ``interaction_rate``/``interaction_burst``: the
sender does not limit these reliable events beyond its bandwidth, a flood is
caught here). Beside them:
the shared latest-value state (:class:`~p2pd.sync.state.StateStore`) and the
claims awaiting the game server (:class:`~p2pd.sync.claims.ClaimBook`).

Each ``on_*`` call judges one event from a peer and returns ``None`` when it
is fine, else the offence and a reason; the :class:`~p2pd.node.Node` then
drops the event and counts the offence (:meth:`GameSync.offend`), which past
the threshold flags the peer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from p2pd.channels.position_codec import PositionState
from p2pd.cheat.anomaly import AnomalyRules, AnomalyScore, Offence
from p2pd.cheat.mapgrid import MapStore
from p2pd.cheat.movement import MoveRules, MoveValidator
from p2pd.cheat.sight import Sight, sight_from_walk
from p2pd.ipc.fields import map_to_dict
from p2pd.ipc.messages import AiInteraction, Environment, LegendData, VisualEffect
from p2pd.meters import TokenBucket
from p2pd.sync.claims import ClaimBook
from p2pd.sync.playout import PeerClock, PlayoutRules
from p2pd.sync.state import StateStore
from p2pd.sync.track import EntityTrack, walk

Check = tuple[Offence, str] | None
MAX_SIGHT_STEPS = 16  # cells of possible walk beyond which a sight check is not made


@dataclass(frozen=True, slots=True)
class SyncRules:
    playout: PlayoutRules = field(default_factory=PlayoutRules)
    moves: MoveRules = field(default_factory=MoveRules)
    anomaly: AnomalyRules = field(default_factory=AnomalyRules)
    snap_cells: int = 4  # a server correction this far or farther snaps; nearer blends
    blend: float = 0.3  # seconds a blend takes
    disagree_cells: int = 3  # server vs the peer's report, beyond the walk in the lag
    server_lag: float = 0.3  # seconds the server's position may lag the peer's report
    ban_seconds: float = 300.0  # a flagged peer is not linked again for this long
    snapshot_interval: float = 60.0  # the shared state to every peer again
    position_rate: float = 5.0  # this daemon's position_update_rate
    effect_rate: float = 10.0  # its effect_update_rate
    rate_factor: float = 3.0  # a peer's allowance: this many times the rates above
    view_range: int = 14  # cells (AREA_SIZE): farther effects and interactions fail
    effect_wait: float = 0.5  # seconds an effect may wait at its sender (effect_max_wait)
    interaction_slack: float = 1.0  # seconds an AI interaction may be older than it arrives
    chat_rate: float = 5.0  # chat lines a peer may send per second,
    chat_burst: int = 50  # and at once
    interaction_rate: float = 10.0  # AI interactions likewise
    interaction_burst: int = 50


class PeerSync:
    """What the daemon keeps of one remote player."""

    __slots__ = ("chats", "clock", "corrections", "disagreements", "effects", "hidden",
                 "interactions", "moves", "positions", "repeats", "reported", "reported_at",
                 "score", "track")

    def __init__(self, rules: SyncRules, maps: MapStore, now: float) -> None:
        self.clock = PeerClock(rules.playout)
        self.track = EntityTrack(rules.playout.max_extrapolation)
        self.moves = MoveValidator(maps, rules.moves)
        self.score = AnomalyScore(rules.anomaly)
        f = rules.rate_factor
        self.positions = TokenBucket(rules.position_rate * f, rules.position_rate * f, now)
        self.effects = TokenBucket(rules.effect_rate * f, rules.effect_rate * f, now)
        self.chats = TokenBucket(rules.chat_rate, rules.chat_burst, now)
        self.interactions = TokenBucket(rules.interaction_rate, rules.interaction_burst, now)
        self.reported: PositionState | None = None  # its newest accepted position
        self.reported_at = 0.0
        self.corrections = 0
        self.disagreements = 0
        self.repeats = 0  # its newest position received again
        self.hidden = False  # its player is hidden (its visibility notice): not shown


class GameSync:
    def __init__(self, rules: SyncRules | None = None, maps: MapStore | None = None) -> None:
        self.rules = rules or SyncRules()
        self.maps = maps or MapStore()
        self.state = StateStore()
        self.claims = ClaimBook()
        self._peers: dict[bytes, PeerSync] = {}
        self._banned: dict[bytes, float] = {}  # peer -> until
        self.next_snapshot: float | None = None
        self.effects_expired = 0
        self.sight_checks = 0  # range and line of sight judged (of a walking player: below)
        self.sight_checks_walking = 0
        self.sight_unjudged = 0  # sight checks not made: the sender's place too uncertain
        self.hidden_dropped = 0  # positions and effects of hidden players not shown
        self.rejected: dict[str, int] = {}  # by offence and reason class

    # -- peers --------------------------------------------------------------

    def peer(self, key: bytes, now: float) -> PeerSync:
        peer = self._peers.get(key)
        if peer is None:
            peer = self._peers[key] = PeerSync(self.rules, self.maps, now)
        return peer

    def forget(self, key: bytes) -> None:
        """The link is gone: its state goes too (a flagged peer stays banned)."""
        self._peers.pop(key, None)
        self.claims.forget_peer(key)

    def ban(self, key: bytes, now: float) -> None:
        self._banned[key] = now + self.rules.ban_seconds
        if len(self._banned) > 4096:  # bounded: the oldest bans end first
            del self._banned[min(self._banned, key=self._banned.__getitem__)]

    def banned(self, key: bytes, now: float) -> bool:
        until = self._banned.get(key)
        if until is None:
            return False
        if now >= until:
            del self._banned[key]
            return False
        return True

    def set_hidden(self, key: bytes, hidden: bool, now: float) -> None:
        """The peer's player is hidden (its visibility notice): what is drawn of
        it is dropped (never blended with where it shows up again); positions
        that come meanwhile are still checked as moves and kept, not drawn."""
        peer = self.peer(key, now)
        peer.hidden = hidden
        if hidden:
            peer.track.clear()

    def offend(self, key: bytes, offence: Offence, now: float, times: int = 1) -> bool:
        """Count an offence of ``key``; True when it crosses the threshold now."""
        self.rejected[offence.value] = self.rejected.get(offence.value, 0) + times
        return self.peer(key, now).score.add(offence, now, times)

    # -- events from peers ---------------------------------------------------

    def on_position(self, key: bytes, state: PositionState, now: float) -> tuple[Check, bool]:
        """(offence, news): news is False for the newest accepted position again
        (its sender repeats a course change), which changes nothing (it would
        look like a late sample to the clock)."""
        peer = self.peer(key, now)
        if not peer.positions.take(1, now):
            return (Offence.RATE_EXCESS, "positions beyond the allowance"), False
        if state == peer.reported:
            peer.repeats += 1
            return None, False
        peer.clock.observe(state.tick, now)
        verdict = peer.moves.check(state, now, peer.clock.jitter)
        if verdict.fault is not None:
            return (Offence.REJECTED_MOVE, f"{verdict.fault.value}: {verdict.detail}"), False
        peer.track.add(state)
        peer.reported = state
        peer.reported_at = now
        return None, True

    def _sight_check(self, peer: PeerSync, map_name: str, x: int, y: int, what: str,
                     made_before: float, now: float) -> Check:
        """The peer's player must see the cell (x, y) from where it may be: in
        view range, no wall between. Its place is known from its last accepted
        report, within what it may have walked since (cheat.sight.sight_from_walk):
        for a walking player the time since that report's clock (by the peer's
        clock, so that a report held back by the sender counts as old), for one
        standing none, plus, for both, the tolerance of the move checks (jitter)
        and ``made_before``: how much earlier than its arrival the event may
        have been made (an effect waits at most effect_max_wait at the sender;
        an AI interaction may be retransmitted). Where that leaves more than
        MAX_SIGHT_STEPS cells of walk, nothing is judged (``sight_unjudged``)."""
        own = peer.reported
        if own is None or own.map != map_name:
            return None  # nothing known well enough to judge by
        walked = made_before + peer.moves.tolerance(peer.clock.jitter)
        if own.moving:
            if peer.clock.known:
                walked += max(peer.clock.to_tick(now) - own.tick, 0.0) / 1000.0
            else:
                walked += max(now - peer.reported_at, 0.0)
        speed = peer.moves.server_speed or own.speed
        steps = math.ceil(walked * 1000.0 / speed) + 1
        if steps > MAX_SIGHT_STEPS:
            self.sight_unjudged += 1
            return None
        grid = self.maps.get(map_name)
        self.sight_checks += 1
        self.sight_checks_walking += own.moving
        sight = sight_from_walk(grid, (own.x, own.y), steps, (x, y), self.rules.view_range)
        where = (f"its player at ({own.x}, {own.y})"
                 + (f" or within {steps} steps" if steps else ""))
        if sight is Sight.FAR:
            return (Offence.FAILED_CHECK, f"{what} at ({x}, {y}), farther than "
                                          f"{self.rules.view_range} cells from {where}")
        if sight is Sight.BLOCKED:
            return (Offence.FAILED_CHECK, f"{what} at ({x}, {y}) behind a wall from {where}")
        return None

    def on_effect(self, key: bytes, effect: VisualEffect, now: float,
                  rtt: float | None) -> tuple[Check, int | None]:
        """(check, remaining ms); remaining None: expired, not to be shown."""
        peer = self.peer(key, now)
        if not peer.effects.take(1, now):
            return (Offence.RATE_EXCESS, "effects beyond the allowance"), None
        if peer.hidden:  # its player is hidden: nothing of it is shown
            self.hidden_dropped += 1
            return None, None
        check = self._sight_check(peer, effect.map, effect.x, effect.y, "effect",
                                  self.rules.effect_wait, now)
        if check is not None:
            return check, None
        one_way = (rtt or 0.0) / 2
        if peer.clock.known:  # its clock's offset includes the least one-way delay
            elapsed = now - (peer.clock.to_local(effect.start_ms) - one_way)
        else:
            elapsed = one_way
        remaining = effect.duration_ms - max(elapsed, 0.0) * 1000.0
        if remaining <= 0 and effect.duration_ms > 0:
            self.effects_expired += 1
            return None, None
        return None, int(min(remaining, effect.duration_ms)) if effect.duration_ms else 0

    def ai_location(self, ai_entity_id: int) -> tuple[str, int, int] | None:
        """Where an AI entity stands, from its Legend ``info`` (keys map, x, y)."""
        info = self.state.get(("legend", ai_entity_id, "info"))
        if not isinstance(info, LegendData):
            return None
        data = map_to_dict(info.data)
        where, x, y = data.get("map"), data.get("x"), data.get("y")
        if isinstance(where, str) and type(x) is int and type(y) is int:
            return where, x, y
        return None

    def on_chat(self, key: bytes, now: float) -> Check:
        if not self.peer(key, now).chats.take(1, now):
            return (Offence.RATE_EXCESS, "chat lines beyond the allowance (a flood)")
        return None

    def on_interaction(self, key: bytes, event: AiInteraction, now: float) -> Check:
        peer = self.peer(key, now)
        if not peer.interactions.take(1, now):
            return (Offence.RATE_EXCESS, "AI interactions beyond the allowance (a flood)")
        location = self.ai_location(event.ai_entity_id)
        if location is not None:
            check = self._sight_check(peer, *location,
                                      what=f"interaction with AI {event.ai_entity_id}",
                                      made_before=self.rules.interaction_slack, now=now)
            if check is not None:
                return check
        self.claims.claim(key, event.ai_entity_id, event.interaction_id, event.result)
        return None

    def on_state(self, event: Environment | LegendData) -> bool:
        """Whether a value (a peer's or the own client's) is news, and kept."""
        return self.state.offer(event)

    # -- the client's requests -----------------------------------------------

    def render_tick(self, peer: PeerSync, now: float) -> float:
        return peer.clock.to_tick(now - peer.clock.playout_delay())

    def render(self, keys: list[bytes], now: float) -> list[dict[str, Any]]:
        """Where to draw each peer's player now (rendered in the past by the
        peer's playout delay); peers without a position are left out."""
        rows = []
        for key in keys:
            peer = self._peers.get(key)
            if peer is None or peer.hidden:
                continue
            shown = peer.track.at(self.render_tick(peer, now))
            if shown is None:
                continue
            rows.append({"peer": key.hex(), "map": shown.map, "x": round(shown.x, 2),
                         "y": round(shown.y, 2), "dir": shown.dir, "moving": shown.moving,
                         "extrapolated": shown.extrapolated,
                         "delay_ms": round(peer.clock.playout_delay() * 1000.0, 1)})
        return rows

    def server_position(self, key: bytes, map_name: str, x: int, y: int, speed: int | None,
                        warp: bool, now: float) -> tuple[dict[str, Any], Check]:
        """The game server's position of ``key``'s player: the result for the
        client, and an offence when the peer's own report disagrees."""
        peer = self.peer(key, now)
        if speed is not None:
            peer.moves.server_speed = speed
        tick = self.render_tick(peer, now) if peer.clock.known else now * 1000.0
        state = PositionState(map_name, x, y, 0, speed or 150, False, max(int(tick), 0))
        shown = peer.track.at(tick)
        if shown is None or shown.map != map_name:
            error: float | None = None
        else:
            error = max(abs(shown.x - x), abs(shown.y - y))
        if warp or error is None or error >= self.rules.snap_cells:
            action = "snap"
            peer.track.correct(state, tick, snap=True, blend_ms=0.0)
            peer.moves.warp(map_name, x, y, now, speed)
        elif error > 0.5:
            action = "blend"
            peer.track.correct(state, tick, snap=False, blend_ms=self.rules.blend * 1000.0)
        else:
            action = "none"
        peer.corrections += action != "none"
        check: Check = None
        reported_error: int | None = None
        reported = peer.reported
        if not warp and reported is not None and reported.map == map_name:
            age = now - peer.reported_at
            ahead = min(age * 1000.0, 1000.0) if reported.moving else 0.0
            rx, ry = walk(reported, ahead)
            reported_error = round(max(abs(rx - x), abs(ry - y)))
            pace = speed or reported.speed
            unknown = age - ahead / 1000.0  # time it may have walked unreported
            allowed = self.rules.disagree_cells + (
                self.rules.server_lag + peer.moves.tolerance(peer.clock.jitter) + unknown
            ) * 1000.0 / pace
            if reported_error > allowed:
                peer.disagreements += 1
                check = (Offence.DISAGREEMENT, f"reported ({rx:.0f}, {ry:.0f}), the server says "
                                               f"({x}, {y})")
        elif not warp and reported is not None:
            peer.disagreements += 1
            check = (Offence.DISAGREEMENT, f"reported map {reported.map}, the server says "
                                           f"{map_name}")
        result = {"action": action, "error_cells": None if error is None else round(error, 2),
                  "reported_error_cells": reported_error, "disagreement": check is not None,
                  "disagreements": peer.disagreements}
        return result, check

    def statistics(self, now: float) -> dict[str, Any]:
        return {
            "tracked_peers": len(self._peers),
            "banned_peers": sum(1 for until in self._banned.values() if until > now),
            "offences": dict(self.rejected),
            "effects_expired": self.effects_expired,
            "sight_checks": self.sight_checks,
            "sight_checks_walking": self.sight_checks_walking,
            "sight_unjudged": self.sight_unjudged,
            "hidden_peers": sum(1 for peer in self._peers.values() if peer.hidden),
            "hidden_dropped": self.hidden_dropped,
            **self.maps.statistics(),
            "state_values": len(self.state),
            "state_stale": self.state.stale,
            "claims_waiting": len(self.claims),
            "claims_confirmed": self.claims.confirmed,
            "claims_rejected": self.claims.rejected,
        }

    def peer_row(self, key: bytes, now: float) -> dict[str, Any] | None:
        """The sync figures of one peer for ``peers``."""
        peer = self._peers.get(key)
        if peer is None:
            return None
        return {"anomaly_score": round(peer.score.value(now), 2),
                "offences": dict(peer.score.counts),
                "jitter_ms": round(peer.clock.jitter * 1000.0, 1),
                "playout_delay_ms": round(peer.clock.playout_delay() * 1000.0, 1),
                "moves_rejected": peer.moves.rejected,
                "disagreements": peer.disagreements,
                "hidden": peer.hidden}
