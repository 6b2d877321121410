"""Play the scripts against real daemons: one sender, one listener and one
monitor IPC connection per player, live progress, and the final report."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, TextIO

import trio

from p2pd.client import ClientError, DaemonClient
from p2pd.meshdemo.players import (
    MAP,
    WALK_MS,
    Action,
    Cast,
    Interact,
    Move,
    Say,
    Script,
    Weather,
    players_in_view,
    write_scripts,
)
from p2pd.meshdemo.processes import Cluster, ClusterSettings
from p2pd.meshdemo.report import (
    KINDS,
    Bandwidth,
    Ledger,
    LinkBook,
    Sent,
    build_report,
    chat_text,
    format_report,
    parse_chat,
)

POLL_S = 0.5  # how often the monitor asks each daemon for its peers
PROGRESS_S = 1.0  # one progress line this often
REGISTER_TIMEOUT = 15.0  # seconds for every daemon to register before play starts
SUBSCRIBED = [*KINDS, "peer_joined", "peer_left"]


@dataclass(frozen=True, slots=True)
class DemoOptions:
    players: int = 8
    seconds: float = 20.0
    seed: int = 1
    max_peers: int = 4
    backups: int = 1
    relay_only: int = 1  # players (the last ones) whose links all go through the relay
    as_json: bool = False
    keep: bool = False  # leave the daemons' directory behind
    drain: float = 1.0  # seconds to wait for events in flight after the last is sent


@dataclass
class Player:
    index: int
    script: Script
    sender: DaemonClient
    listener: DaemonClient
    monitor: DaemonClient


async def run_mesh_demo(options: DemoOptions, out: TextIO | None = None) -> dict[str, Any]:
    """Start the daemons, play, take everything down; print and return the report.

    With ``as_json`` the report goes to ``out`` as one JSON object and the
    progress to stderr; else both go to ``out``, the report as text."""
    out = out or sys.stdout
    progress = sys.stderr if options.as_json else out

    def say(line: str) -> None:
        print(line, file=progress, flush=True)

    scripts = write_scripts(options.players, options.seed, options.seconds)
    cluster = Cluster.create(ClusterSettings(options.players, options.max_peers, options.backups,
                                             min(options.relay_only, options.players - 1)),
                             keep=options.keep)
    try:
        say(f"starting {options.players} daemons on loopback in {cluster.root} ...")
        await cluster.start()
        assert cluster.coordinator is not None
        say(f"coordinator embedded in player 0's daemon, udp {cluster.coordinator.udp_address}")
        report = await _play(cluster, scripts, options, say)
    finally:
        cluster.close()
        if options.keep:
            say(f"kept {cluster.root}")
    if options.as_json:
        print(json.dumps(report, sort_keys=True), file=out, flush=True)
    else:
        print(format_report(report), file=out, flush=True)
    return report


async def _play(cluster: Cluster, scripts: list[Script], options: DemoOptions,
                say: Callable[[str], None]) -> dict[str, Any]:
    index_of = {daemon.public_key: i for i, daemon in enumerate(cluster.daemons)}
    ledger = Ledger()
    links = LinkBook(options.players)
    async with AsyncExitStack() as stack:
        players = []
        for i, daemon in enumerate(cluster.daemons):
            clients = []
            for role in ("sender", "listener", "monitor"):
                client = await DaemonClient.open(daemon.runtime_dir,
                                                 client_name=f"p2pd demo p{i} {role}")
                stack.push_async_callback(client.aclose)
                clients.append(client)
            await clients[1].request("subscribe", events=SUBSCRIBED)
            players.append(Player(i, scripts[i], *clients))
        await _wait_registered(players, say)
        start_bytes = [await _out_bytes(p.monitor) for p in players]
        t0 = trio.current_time()
        async with trio.open_nursery() as background:
            for player in players:
                background.start_soon(_listen, player, index_of, ledger, links)
            background.start_soon(_monitor, players, index_of, ledger, links, t0, say)
            async with trio.open_nursery() as play:
                for player in players:
                    play.start_soon(_act, player, scripts, ledger, t0)
            end_bytes = [await _out_bytes(p.monitor) for p in players]
            seconds = trio.current_time() - t0
            await trio.sleep(options.drain)  # what is in flight arrives
            for player in players:
                await _poll(player, index_of, links)
            background.cancel_scope.cancel()
    links.finish(time.time())
    assert cluster.coordinator is not None
    return build_report(
        players=options.players, seconds=options.seconds, seed=options.seed,
        max_peers=options.max_peers, backups=options.backups,
        relay_only=min(options.relay_only, options.players - 1),
        coordinator={"udp_address": cluster.coordinator.udp_address,
                     "public_key": cluster.coordinator.public_key, "embedded_in": "player 0"},
        ledger=ledger, links=links,
        bandwidth=Bandwidth(start_bytes, end_bytes, max(seconds, 1e-3)))


async def _wait_registered(players: list[Player], say: Callable[[str], None]) -> None:
    with trio.move_on_after(REGISTER_TIMEOUT):
        while True:
            waiting = []
            for player in players:
                coordinator = (await player.monitor.request("status")).get("coordinator") or {}
                if coordinator.get("state") != "registered":
                    waiting.append(player.index)
            if not waiting:
                return
            await trio.sleep(0.05)
    say(f"warning: players {waiting} not registered after {REGISTER_TIMEOUT:g} s; playing anyway")


async def _out_bytes(client: DaemonClient) -> int:
    stats = await client.request("stats")
    return int(stats["bandwidth"]["out_bytes_total"])


# -- the players' side ----------------------------------------------------------------


async def _act(player: Player, scripts: list[Script], ledger: Ledger, t0: float) -> None:
    seq = 0
    last_tick = 0
    for action in player.script.actions:
        await trio.sleep_until(t0 + action.t)
        seq += 1
        sent_at = time.time()
        if isinstance(action, Move):  # the tick is the send time, in ms, unique per player
            last_tick = max(last_tick + 1, round(sent_at * 1000))
            sent_at = last_tick / 1000
        kind, ident, fields = _request(player, action, seq, sent_at, last_tick)
        key = (player.index, kind, ident)
        ledger.will_send(key, Sent(kind, player.index, sent_at,
                                   players_in_view(scripts, player.index, action.t)))
        try:
            result = await player.sender.request(kind, **fields)
        except ClientError as error:
            ledger.failed(key, error.code)
            continue
        ledger.was_sent(key, result)


def _request(player: Player, action: Action, seq: int, sent_at: float,
             tick: int) -> tuple[str, int, dict[str, Any]]:
    """(kind, id in the ledger, the request's fields) for one action."""
    x, y = player.script.cell_at(action.t)
    mark = {"demo_seq": seq, "sent_at": sent_at}
    if isinstance(action, Move):
        return "position", tick, {"map": MAP, "x": action.x, "y": action.y, "dir": action.dir,
                                  "speed": WALK_MS, "moving": action.moving, "tick": tick}
    if isinstance(action, Say):
        return "chat", seq, {"text": chat_text(action.phrase, player.index, seq, sent_at)}
    if isinstance(action, Cast):
        return "effect", seq, {"effect_id": action.effect_id, "map": MAP, "x": x, "y": y,
                               "start_ms": round(sent_at * 1000),
                               "duration_ms": action.duration_ms,
                               "owner": player.script.player_id,
                               "params": {"skill": action.name, "level": 5, **mark}}
    if isinstance(action, Interact):
        return "ai_interaction", seq, {"interaction_id": 1, "ai_entity_id": action.ai_entity_id,
                                       "player_id": player.script.player_id,
                                       "params": {"npc": action.npc, "topic": action.topic,
                                                  **mark}}
    assert isinstance(action, Weather)
    # each player's own key: versions are its own count (a value with a higher
    # version of the same key from another author would supersede it)
    return "environment", seq, {"kind": "weather", "key": f"{MAP}.{player.index}",
                                "version": seq,
                                "value": {"type": action.weather,
                                          "intensity": action.intensity,
                                          "demo_from": player.index, **mark}}


# -- the receiving side -------------------------------------------------------------


async def _listen(player: Player, index_of: dict[str, int], ledger: Ledger,
                  links: LinkBook) -> None:
    while True:
        event = await player.listener.next_event()
        now = time.time()
        name = event.get("event")
        peer = index_of.get(str(event.get("peer", event.get("from", ""))))
        if peer is None:
            continue
        if name == "peer_joined":
            links.joined(player.index, peer, now)
        elif name == "peer_left":
            links.left(player.index, peer, str(event.get("reason", "unknown")), now)
        elif name in KINDS:
            found = _identify(str(name), peer, event)
            if found is None:
                ledger.unmatched += 1
            elif found[0] != peer:  # shared state a peer passed on in its snapshot
                ledger.state_passed_on += 1
            elif (name == "position" and not event.get("moving")
                  and not ledger.knows((peer, "position", found[1]))):
                # a standing player's position its daemon sent again with the clock
                # moved on (docs/ipc.md: refreshed each second until acknowledged)
                ledger.positions_refreshed += 1
            else:
                _, ident, sent_at = found
                ledger.delivered((peer, str(name), ident), player.index, sent_at, now,
                                 links.since(peer, player.index))


def _identify(kind: str, sender: int, event: dict[str, Any]
              ) -> tuple[int, int, float] | None:
    """The author, ledger id and embedded send time of a delivered event. The
    author is the sending peer, except for shared state (environment), which a
    peer also passes on from others in its snapshots (docs/ipc.md)."""
    if kind == "position":
        return sender, int(event["tick"]), int(event["tick"]) / 1000
    if kind == "chat":
        mark = parse_chat(str(event.get("text", "")))
        if mark is None or mark[0] != sender:
            return None
        return sender, mark[1], mark[2]
    holder = event.get("value") if kind == "environment" else event.get("params")
    if not isinstance(holder, dict) or "demo_seq" not in holder or "sent_at" not in holder:
        return None
    author = int(holder.get("demo_from", sender)) if kind == "environment" else sender
    return author, int(holder["demo_seq"]), float(holder["sent_at"])


# -- watching -----------------------------------------------------------------------


async def _poll(player: Player, index_of: dict[str, int], links: LinkBook) -> int:
    """Ask the daemon for its links and their paths; returns its upstream bytes/s."""
    peers = (await player.monitor.request("peers"))["peers"]
    established = [p for p in peers if p.get("state") == "established"]
    paths = {index_of[p["peer"]]: str(p.get("path", "direct"))
             for p in established if p["peer"] in index_of}
    links.observed(player.index, len(established), paths)
    stats = await player.monitor.request("stats")
    return int(stats["bandwidth"]["out_bytes_per_s"])


async def _monitor(players: list[Player], index_of: dict[str, int], ledger: Ledger,
                   links: LinkBook, t0: float, say: Callable[[str], None]) -> None:
    next_line = t0 + PROGRESS_S
    while True:
        upstream = 0
        for player in players:
            upstream += await _poll(player, index_of, links)
        now = trio.current_time()
        if now >= next_line:
            next_line += PROGRESS_S
            say(f"{now - t0:6.1f} s  players {len(players)}  links {links.up_now():3d} "
                f"(most {links.links_max} at one daemon)  events sent {ledger.sent_count():5d} "
                f"delivered {ledger.delivered_count():6d}  upstream {upstream / 1024:6.1f} KB/s")
        await trio.sleep(POLL_S)
