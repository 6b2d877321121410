"""The connectivity matrix: every pair of the lab's NAT kinds, real daemons, a real
coordinator, coturn and miniupnpd (issue 6's NAT lab).

:func:`run_pair` runs one pair in a lab it is given: two players, registered with
the coordinator and done gathering candidates, meet on a map of their own (nobody
else is there), so the coordinator introduces exactly them. It records the path
each side uses once linked (``nat`` peers[].path: direct, turn, relay) and the
address it sends to, the time from both players placed to both links up
(``peer_joined`` on both), the path after it settled, a chat line each way, and
the port mapping each side holds.

Two ways to run the 15 pairs:

- each pair in a lab of its own (:func:`run_pair_in_own_lab`): the two players'
  NATs, coturn (and miniupnpd), then the coordinator and both ``p2pd run`` started
  at once; the lab and every process removed at the end, also on failure. This is
  what ``tests/natlab/test_matrix.py`` does, one test per pair, and
  ``python bench/natmatrix.py --own-labs``.
- all in one shared lab (:func:`run_matrix`, ``python bench/natmatrix.py``): ten
  players, two behind a router of each kind, and the pairs in three rounds of five
  disjoint pairs at once: the five same-kind pairs, then the ten others as two
  5-cycles of K5 (masquerade-home-full_cone-symmetric-upnp and
  masquerade-full_cone-upnp-home-symmetric), so that every player takes part in
  exactly one pair per round; between rounds every player moves to its next pair's
  map, and the links of the old map go.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio

from p2pd.client import DaemonClient
from tests.natlab.daemons import (
    LabCoordinator,
    Player,
    lab_players,
    launch_lab_coordinator,
    start_lab_coordinator,
    wait_until_gathered,
)
from tests.natlab.lab import Lab, NatKind, open_lab

M, H, F, S, U = (NatKind.MASQUERADE, NatKind.HOME, NatKind.FULL_CONE, NatKind.SYMMETRIC,
                 NatKind.UPNP)
KINDS = (M, H, F, S, U)
ROUNDS: tuple[tuple[tuple[NatKind, NatKind], ...], ...] = (
    ((M, M), (H, H), (F, F), (S, S), (U, U)),
    ((M, H), (H, F), (F, S), (S, U), (U, M)),
    ((M, F), (F, U), (U, H), (H, S), (S, M)),
)
PAIRS: tuple[tuple[NatKind, NatKind], ...] = tuple(
    (a, b) for i, a in enumerate(KINDS) for b in KINDS[i:])


def pair_key(a: NatKind, b: NatKind) -> tuple[NatKind, NatKind]:
    """The pair in PAIRS order."""
    return (a, b) if KINDS.index(a) <= KINDS.index(b) else (b, a)


# Why each pair takes the path it does. Mapping: every kind but symmetric keeps the
# socket's port for every destination (endpoint-independent); symmetric picks a new
# random port per destination. Filtering: full_cone lets anything in; masquerade,
# home and upnp only replies (address- and port-dependent); upnp also forwards its
# mapped port (PCP/NAT-PMP/UPnP) from anyone.
_NO_MAPPING = ("symmetric's port towards the peer is known to nobody (its STUN and "
               "coordinator mappings differ), and the {other} NAT lets in only replies "
               "from the exact address it sent to: no direct path without a port mapping; "
               "TURN relays")
EXPECTED: dict[tuple[NatKind, NatKind], tuple[str, str]] = {
    (M, M): ("direct", "both keep their port; low-TTL punches open each side before the "
                       "other's packets arrive (no conntrack conflict)"),
    (M, H): ("direct", "both keep their port: simultaneous punching"),
    (M, F): ("direct", "full cone takes anything; masquerade keeps its port"),
    (M, S): ("turn", _NO_MAPPING.format(other="masquerade")),
    (M, U): ("direct", "the upnp side's mapped port takes anything"),
    (H, H): ("direct", "both keep their port; new inbound flows are dropped, but each "
                       "side's punch opens its own NAT first"),
    (H, F): ("direct", "full cone takes anything; home keeps its port"),
    (H, S): ("turn", _NO_MAPPING.format(other="home")),
    (H, U): ("direct", "the upnp side's mapped port takes anything"),
    (F, F): ("direct", "both take anything"),
    (F, S): ("direct", "full cone takes symmetric's packets from any port, and answers "
                       "the port they came from (a peer-reflexive path)"),
    (F, U): ("direct", "both take anything (upnp on its mapped port)"),
    (S, S): ("turn", "two symmetric NATs: neither side's port towards the other is known"),
    (S, U): ("direct", "symmetric dials the upnp side's mapped port, which takes anything; "
                       "the answer goes back to the port the packets came from"),
    (U, U): ("direct", "both mapped ports take anything"),
}


@dataclass
class PairResult:
    kinds: tuple[NatKind, NatKind]
    expected: str
    connected: bool = False
    first_paths: tuple[str, str] | None = None  # each side's path when both links were up
    paths: tuple[str, str] | None = None  # after settling (or the last seen)
    addresses: tuple[str, str] | None = None  # where each side sends to the other
    connect_s: float | None = None  # both placed -> both links up
    settle_s: float | None = None  # both placed -> both on the expected path
    chat: bool = False  # a line each way arrived
    mapped: tuple[str | None, str | None] = (None, None)  # a port mapping each side had
    wan: tuple[str, str] = ("", "")  # each side's router's public address
    error: str | None = None
    ready_s: float | None = None  # own lab: from building it to both players gathered
    seconds: float | None = None  # own lab: from building it to its removal

    @property
    def name(self) -> str:
        return f"{self.kinds[0].value}-{self.kinds[1].value}"


@dataclass
class MatrixRun:
    """One run of the shared lab (:func:`run_matrix`)."""

    results: dict[tuple[NatKind, NatKind], PairResult] = field(default_factory=dict)
    start_s: float = 0.0  # lab, coordinator and ten daemons up, registered, gathered
    seconds: float = 0.0


async def _next_joined(client: DaemonClient, key: str) -> None:
    while True:
        event = await client.next_event()
        if event["event"] == "peer_joined" and event["peer"] == key:
            return


async def _links(x: Player, y: Player) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    return await x.link_to(y), await y.link_to(x)


async def run_pair(result: PairResult, x: Player, y: Player, map_name: str, *,
                   connect_timeout: float = 15.0, settle_timeout: float = 12.0) -> None:
    """One pair in the lab ``x`` and ``y`` are in (x behind a NAT of
    ``result.kinds[0]``, y of ``[1]``), both registered and gathered and the only
    players on ``map_name``: place them there, wait for both links, read the paths
    (until both are on the expected one, ``settle_timeout`` at most), send a chat
    line each way, read the port mappings. Fills ``result``; a link that does not
    come up is ``result.error``, not an exception."""
    result.wan = (x.side.wan_ip, y.side.wan_ip)
    for player in (x, y):
        await player.client.request("subscribe", events=["peer_joined", "chat"])
    started = time.monotonic()
    await x.client.request("position", map=map_name, x=100, y=100, dir=0, tick=1)
    await y.client.request("position", map=map_name, x=103, y=100, dir=0, tick=1)
    with trio.move_on_after(connect_timeout):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_next_joined, x.client, y.key)
            nursery.start_soon(_next_joined, y.client, x.key)
        result.connect_s = time.monotonic() - started
        result.connected = True
    if not result.connected:
        result.error = f"no link within {connect_timeout} s"
        return
    seen_x, seen_y = await _links(x, y)
    if seen_x is not None and seen_y is not None:
        result.first_paths = (seen_x["path"], seen_y["path"])
    with trio.move_on_after(settle_timeout):
        while True:
            seen_x, seen_y = await _links(x, y)
            if seen_x is not None and seen_y is not None:
                result.paths = (seen_x["path"], seen_y["path"])
                result.addresses = (seen_x["address"], seen_y["address"])
                if result.paths == (result.expected, result.expected):
                    result.settle_s = time.monotonic() - started
                    break
            await trio.sleep(0.02)
    with trio.move_on_after(5):
        await x.client.request("chat", text=f"{result.name} from {x.side.name}")
        await y.client.request("chat", text=f"{result.name} from {y.side.name}")
        got: set[str] = set()
        for player in (x, y):
            while True:
                event = await player.client.next_event()
                if event["event"] == "chat":
                    got.add(event["text"])
                    break
        result.chat = got == {f"{result.name} from {x.side.name}",
                              f"{result.name} from {y.side.name}"}
    result.mapped = (_mapped(await x.nat()), _mapped(await y.nat()))


def _mapped(nat: dict[str, Any]) -> str | None:
    mapping = nat.get("port_mapping") or {}
    external = mapping.get("external") if mapping.get("state") == "mapped" else None
    return str(external) if external else None


async def gathered(players: Sequence[Player], timeout: float = 20.0) -> None:
    """Until every player is done gathering (TURN allocated, NAT behaviour discovered:
    about 7.5 s behind a NAT that filters and has no port mapping protocol, the
    mapping waited for 2 s, then two CHANGE-REQUESTs unanswered), all at once."""
    async with trio.open_nursery() as nursery:
        for player in players:
            nursery.start_soon(wait_until_gathered, player.client, timeout)


# -- each pair in a lab of its own ----------------------------------------------------


async def run_pair_in_own_lab(result: PairResult, workdir: Path, **options: float) -> None:
    """``result.kinds`` in a lab of their own: the NATs, coturn (and miniupnpd) built,
    then the coordinator and both players' daemons started at once; :func:`run_pair`
    once both are registered and gathered. The lab and every process in it are
    removed before this returns, also when it raises. ``options``: run_pair's
    timeouts."""
    began = time.monotonic()
    try:
        with open_lab(*result.kinds, workdir=workdir / "lab") as lab:
            coordinator = launch_lab_coordinator(lab, workdir / "coordinator")
            async with lab_players(lab, workdir, coordinator, lab.sides) as (x, y):
                await gathered((x, y))
                result.ready_s = time.monotonic() - began
                await run_pair(result, x, y, "natlab", **options)
    finally:
        result.seconds = time.monotonic() - began


# -- all pairs in one shared lab ------------------------------------------------------


@contextmanager
def matrix_lab(workdir: Path) -> Iterator[tuple[Lab, LabCoordinator]]:
    """The shared lab (two players of each kind: sides ``a``, ``b``, ``p2``...
    in the order of KINDS twice) with the coordinator running; removed on exit."""
    kinds = [*KINDS, *KINDS]
    with open_lab(kinds[0], kinds[1], more=kinds[2:], workdir=workdir / "lab") as lab:
        coordinator = start_lab_coordinator(lab, workdir / "coordinator")
        yield lab, coordinator


async def run_matrix(lab: Lab, coordinator: LabCoordinator, workdir: Path, *,
                     rounds: Sequence[Sequence[tuple[NatKind, NatKind]]] = ROUNDS,
                     connect_timeout: float = 15.0, settle_timeout: float = 12.0) -> MatrixRun:
    """Start a daemon per side of the shared lab, run the rounds, return what each
    pair did."""
    began = time.monotonic()
    run = MatrixRun()
    async with lab_players(lab, workdir, coordinator, lab.sides) as players:
        await gathered(players)
        run.start_s = time.monotonic() - began
        for number, pairs in enumerate(rounds):
            async with trio.open_nursery() as nursery:
                used: set[int] = set()
                for index, (kind_x, kind_y) in enumerate(pairs):
                    x = _pick(players, kind_x, used)
                    y = _pick(players, kind_y, used)
                    key = pair_key(kind_x, kind_y)
                    if key != (kind_x, kind_y):
                        x, y = y, x
                    result = PairResult(key, EXPECTED[key][0])
                    run.results[key] = result
                    nursery.start_soon(partial(
                        run_pair, result, x, y, f"natlab{number}p{index}",
                        connect_timeout=connect_timeout, settle_timeout=settle_timeout))
    run.seconds = time.monotonic() - began
    return run


def _pick(players: list[Player], kind: NatKind, used: set[int]) -> Player:
    for index, player in enumerate(players):
        if player.side.kind is kind and index not in used:
            used.add(index)
            return player
    raise ValueError(f"no free {kind} player in this round")


def run_once(workdir: Path) -> MatrixRun:
    """The shared lab, built, run and removed."""
    with matrix_lab(workdir) as (lab, coordinator):
        return trio.run(run_matrix, lab, coordinator, workdir)


def run_own_labs(workdir: Path, pairs: Sequence[tuple[NatKind, NatKind]] = PAIRS
                 ) -> MatrixRun:
    """Every pair in a lab of its own, one after another (as the tests run them)."""
    began = time.monotonic()
    run = MatrixRun()
    for key in pairs:
        result = run.results[key] = PairResult(key, EXPECTED[key][0])
        try:
            trio.run(run_pair_in_own_lab, result, workdir / result.name)
        except Exception as error:  # the lab is gone; the table shows the pair FAILED
            result.error = repr(error)
    run.seconds = time.monotonic() - began
    return run


# -- the table -----------------------------------------------------------------------


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def table(runs: Sequence[MatrixRun]) -> str:
    """The matrix as a Markdown table: pair, path (each run's), median time to connect
    (and range); for pairs in labs of their own also the median time to both players
    gathered and to the lab removed (the whole pair)."""
    own = any(r.seconds is not None for run in runs for r in run.results.values())
    lines = ["| pair | expected | path taken | median time to connect |"
             + (" lab ready, whole pair |" if own else "") + " runs |",
             "|---|---|---|---|" + ("---|" if own else "") + "---|"]
    for key in PAIRS:
        results = [run.results[key] for run in runs if key in run.results]
        if not results:
            continue
        taken = sorted({_shown(r) for r in results})
        cells = [f"{key[0].value} - {key[1].value}", EXPECTED[key][0], ", ".join(taken),
                 _spread([r.connect_s for r in results if r.connect_s is not None], 2)]
        if own:
            ready = _spread([r.ready_s for r in results if r.ready_s is not None], 1)
            whole = _spread([r.seconds for r in results if r.seconds is not None], 1)
            cells.append(f"{ready}, {whole}")
        lines.append("| " + " | ".join([*cells, str(len(results))]) + " |")
    return "\n".join(lines)


def _spread(times: list[float], digits: int) -> str:
    """The median of ``times`` in seconds, and the range when there are several."""
    median = _median(times)
    if median is None:
        return "-"
    shown = f"{median:.{digits}f} s"
    if len(times) > 1:
        shown += f" ({min(times):.{digits}f}-{max(times):.{digits}f})"
    return shown


def _shown(result: PairResult) -> str:
    if not result.connected or result.paths is None:
        return "FAILED"
    a, b = result.paths
    path = a if a == b else f"{a}/{b}"
    if result.first_paths is not None and result.first_paths != result.paths:
        first = result.first_paths[0] if len(set(result.first_paths)) == 1 else "/".join(
            result.first_paths)
        path = f"{first}, then {path}"
    return path
