"""The coordinator at server scale: presence updates per second and memory per daemon.

The world (seeded): 10,000 registered daemons spread over maps as on a real
server (DOMAIN.md). Six towns of 300-400 cells a side hold 4,200 players,
most of each town's population in a few crowds (a vending street, a plaza:
Gaussian clusters 5-8 cells wide, Prontera's main crowd about 500 players),
the rest scattered; 5,800 players are scattered over 600 field and dungeon
maps (200-400 cells a side), from one to a few dozen each (median about 9).

The stream (seeded, generated before the clock starts): 200,000 presence
reports as the coordinator would receive them: 75% one-cell steps of walking
players (two in five players walk; paths bend, turning back at a map's edge),
23% unchanged reports of standing players (the low-rate keep-alive), 2% map
changes (warps, towns more likely). Every report that moves its daemon into
another bucket or map (``update`` returns True) is followed by the query the
coordinator answers then, ``nearest(daemon, max_peers + 3)``; that fraction
is reported. Map names and cells in the stream are fresh objects, as a parser
would produce them, not the index's own.

Measured:
- index_updates_per_s: reports (update plus the queries they cause) per
  second on one core, best of several rounds, each on a fresh index loaded
  with the same world (loading not timed);
- index_bytes_per_daemon: bytes the index holds for the 10,000 daemons, by
  tracemalloc, divided by 10,000 (records, buckets, maps, and the ints and
  strings the index keeps from decoded reports);
- nearest_crowd_us: one nearest() for a daemon in Prontera's main crowd.

The whole coordinator path (bench/_coordinator_world.py wires it): one
:class:`~p2pd.coordinator.core.Coordinator` and 10,000 daemon Endpoints, each
with a seeded identity and a connect token, datagrams handed over directly
(no network, zero delay) with a virtual clock; only the calls into the
coordinator are timed, in CPU time of this process (one core's work, which
other processes on the machine do not disturb as they would wall time). The
daemons run their timers as real daemons do; so does the coordinator (its
server's timer loop) in every phase. The coordinator's SessionConfig holds a session per
daemon (max_sessions) and takes 2,000 handshakes a second before cookies.

- registration_ms: coordinator time per daemon registering through the real
  handshake (request, response, the daemon's confirming PING answered with a
  PONG and ``registered``, the daemon's ack), bursts of 64 datagrams (what
  p2pd.io.udp drains per wake-up), 1,000 registrations per virtual second
  (with the keepalives of the daemons registered before);
- updates_per_s: presence reports per second on one core through what the
  coordinator's server does per burst of 64 datagrams (the daemons' reports
  and whatever their timers send: acks of the coordinator's messages, PINGs,
  PONGs): ``handle_timer`` when its deadline has passed (its own acks that
  no reply carried, PINGs, retransmissions), ``receive_datagram`` for each
  datagram (decrypt, frames, reliable channel, parse, index, candidates and
  introductions queued), ``datagrams_to_send`` (every session given data
  flushed: replies sealed, acks) and ``get_timer``; best of several rounds,
  each the stream's next reports from every daemon at 50,000 reports per
  virtual second. Before each burst, outside the clock, the daemons take the
  coordinator's answers, run their timers when due (acks ``ack_delay`` after
  data that no report carried, PINGs every ``ping_interval``) and seal their
  next reports (fresh AEAD counters, in order): a closed loop, as real
  daemons make it. Before the rounds every daemon reported its position
  three times. Also printed: receive_datagram alone, the cost of the scans
  of every session a driver makes per burst, and a cProfile of one more round;
- bytes_per_daemon: tracemalloc of everything the coordinator holds
  (sessions, keypairs, channel state, store, index, caches) after the
  registrations and the three reports of every daemon (and two seconds of
  timers after them: acks, PINGs), divided by 10,000,
  with the top lines; ``bytes_per_daemon_registered`` before the reports.
  The registration and warm-up are recorded and replayed, datagram for
  datagram, into the same coordinator alone in a fresh process (the answers'
  digest must match), so that no daemon allocates beside it. The resident
  figure (RSS growth less tracemalloc's own) adds what tracemalloc cannot
  see: OpenSSL's cipher contexts, allocator overhead.

Goals from the issue: 50,000 updates per second per core for the whole path,
at most 2 KB per daemon for the whole coordinator (a few hundred bytes for the
index). The index's own figures stay under index_updates_per_s and
index_bytes_per_daemon. Takes about a minute and a half; ends with one JSON
line.
"""

from __future__ import annotations

import cProfile
import gc
import json
import linecache
import os
import pickle
import random
import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import CodeType

from _coordinator_world import ACK_DELAY, CoordinatorWorld, Datagrams, Replay, Report
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from p2pd.coordinator.presence import PresenceIndex
from p2pd.mesh.policy import MeshSettings
from p2pd.session.config import SessionConfig

DAEMONS = 10_000
UPDATES = 200_000
ROUNDS = 5
SEED = 5
QUERY_COUNT = MeshSettings().max_peers + 3  # a few more than max_peers
# (name, width, height, players, crowds as (x, y, spread in cells, share of the players))
TOWNS = [
    ("prontera", 312, 392, 1500, [(156, 190, 7, 0.33), (156, 100, 6, 0.12),
                                  (60, 290, 8, 0.10)]),
    ("payon", 300, 300, 700, [(160, 100, 6, 0.30), (200, 230, 8, 0.15)]),
    ("geffen", 300, 300, 600, [(120, 60, 6, 0.35)]),
    ("morocc", 400, 400, 550, [(160, 100, 8, 0.30), (280, 300, 6, 0.15)]),
    ("alberta", 300, 300, 450, [(100, 60, 5, 0.30)]),
    ("izlude", 300, 300, 400, [(130, 110, 6, 0.35)]),
]
FIELDS = 600
WALKING = 0.4  # share of players walking at any time
STEPS = [(0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1)]


@dataclass
class Player:
    map: str
    x: int
    y: int
    dir: int
    walking: bool


@dataclass
class World:
    players: list[Player]
    sizes: dict[str, tuple[int, int]]
    crowd_member: int  # a daemon standing in Prontera's main crowd


def place(rng: random.Random, map_name: str, world: World) -> tuple[int, int]:
    width, height = world.sizes[map_name]
    for town, _, _, _, crowds in TOWNS:
        if town == map_name:
            roll = rng.random()
            for cx, cy, spread, share in crowds:
                if roll < share:
                    return (min(max(round(rng.gauss(cx, spread)), 0), width - 1),
                            min(max(round(rng.gauss(cy, spread)), 0), height - 1))
                roll -= share
    return rng.randrange(width), rng.randrange(height)


def build_world(rng: random.Random) -> World:
    world = World([], {}, 0)
    names: list[str] = []
    for name, width, height, players, _ in TOWNS:
        world.sizes[name] = (width, height)
        names += [name] * players
    fields = [f"field{i:03d}" for i in range(FIELDS)]
    for name in fields:
        world.sizes[name] = (rng.randrange(200, 401), rng.randrange(200, 401))
    weights = [rng.uniform(0.3, 3.0) for _ in fields]  # some fields are more popular
    names += rng.choices(fields, weights, k=DAEMONS - len(names))
    for name in names:
        x, y = place(rng, name, world)
        world.players.append(Player(name, x, y, rng.randrange(8), rng.random() < WALKING))
    cx, cy = TOWNS[0][4][0][:2]
    world.crowd_member = min(
        (i for i, p in enumerate(world.players) if p.map == "prontera"),
        key=lambda i: max(abs(world.players[i].x - cx), abs(world.players[i].y - cy)))
    return world


def fresh(name: str) -> str:
    """A new string object equal to ``name``, as a datagram's parser would produce."""
    return name.encode().decode()


def build_stream(rng: random.Random, world: World) -> list[tuple[int, str, int, int]]:
    players = [Player(p.map, p.x, p.y, p.dir, p.walking) for p in world.players]
    walkers = [i for i, p in enumerate(players) if p.walking]
    standers = [i for i, p in enumerate(players) if not p.walking]
    towns = [name for name, *_ in TOWNS]
    fields = [name for name in world.sizes if name not in towns]
    stream = []
    for _ in range(UPDATES):
        roll = rng.random()
        if roll < 0.75:  # a walking player's step
            daemon = rng.choice(walkers)
            p = players[daemon]
            if rng.random() < 0.1:
                p.dir = (p.dir + rng.choice((-1, 1))) % 8
            width, height = world.sizes[p.map]
            dx, dy = STEPS[p.dir]
            if not (0 <= p.x + dx < width and 0 <= p.y + dy < height):
                p.dir = (p.dir + 4) % 8  # the edge of the map: turn back
                dx, dy = STEPS[p.dir]
            p.x += dx
            p.y += dy
        elif roll < 0.98:  # a standing player's keep-alive
            daemon = rng.choice(standers)
            p = players[daemon]
        else:  # a warp
            daemon = rng.choice(walkers)
            p = players[daemon]
            p.map = rng.choice(towns) if rng.random() < 0.5 else rng.choice(fields)
            p.x, p.y = place(rng, p.map, world)
        stream.append((daemon, fresh(p.map), p.x, p.y))
    return stream


def load(world: World) -> PresenceIndex:
    index = PresenceIndex()
    for daemon, p in enumerate(world.players):
        index.update(daemon, fresh(p.map), p.x, p.y)
    return index


def measure_index(world: World, stream: list[tuple[int, str, int, int]]
                  ) -> tuple[float, float]:
    """Best reports per second over ROUNDS, and the share of reports that queried."""
    best = float("inf")
    queries = 0
    for _ in range(ROUNDS):
        index = load(world)
        update, nearest, count = index.update, index.nearest, QUERY_COUNT
        queries = 0
        gc.collect()
        start = time.perf_counter()
        for daemon, map_name, x, y in stream:
            if update(daemon, map_name, x, y):
                nearest(daemon, count)
                queries += 1
        best = min(best, time.perf_counter() - start)
    return len(stream) / best, queries / len(stream)


def measure_nearest_crowd(world: World) -> tuple[float, int]:
    """Microseconds for one nearest() in the main crowd, and the players in its view."""
    index = load(world)
    daemon = world.crowd_member
    in_view = len(index.nearest(daemon, DAEMONS))
    n = 2_000
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(n):
            index.nearest(daemon, QUERY_COUNT)
        best = min(best, time.perf_counter() - start)
    return best / n * 1e6, in_view


def measure_index_memory(world: World) -> float:
    """Bytes the index holds per daemon, the reports decoded from bytes inside the trace."""
    record = struct.Struct("<IHH16s")
    reports = [record.pack(daemon, p.x, p.y, p.map.encode())
               for daemon, p in enumerate(world.players)]
    unpack = record.unpack
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    index = PresenceIndex()
    for report in reports:
        daemon, x, y, name = unpack(report)
        index.update(daemon, name.rstrip(b"\0").decode(), x, y)
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(index) == DAEMONS
    return held / DAEMONS


# Each measurement of the index's updates-per-second kind, by the name of its figure.
THROUGHPUT: dict[str, Callable[[World, list[tuple[int, str, int, int]]],
                               tuple[float, float]]] = {
    "index": measure_index,
}


# -- the whole coordinator path --------------------------------------------------

BURST = 64  # datagrams per burst: what p2pd.io.udp drains per wake-up (MAX_BURST)
CAPACITY = DAEMONS + 64  # the coordinator's max_sessions
REGISTRATION_RATE = 1000  # registrations per virtual second
HANDSHAKE_LIMIT = 2 * REGISTRATION_RATE  # handshake requests per second before cookies
REGISTRATION_STEP = 2000  # daemons between progress lines
REPORT_RATE = 50_000.0  # the stream's reports per virtual second: the goal's load
WARMUP_PASSES = 3  # presence reports of every daemon before the memory figure and the rounds
WARMUP_BURST = 1000  # datagrams; not timed: large bursts, few flushes
PASS_INTERVAL = 2.0  # virtual seconds between warm-up passes, and before the rounds
WHOLE_ROUNDS = 3  # timed rounds; then one more, profiled
ROUND_STREAM = 25_000  # a round's reports: the stream's next ones (half a virtual second)
SCAN_REPEAT = 5  # calls of each per-burst scan of every session, fastest taken
PROFILE_TOP = 12
GOAL_UPDATES = 50_000
GOAL_BYTES = 2048
_STARTED = time.perf_counter()
PROFILE_STREAM = ROUND_STREAM // 2  # the profiled round's reports
# cumulative times in the profile: (label, file, function), by the coordinator call they are in
RECEIVE_PARTS = [
    ("Coordinator.handle_timer (its acks alone, PINGs)", "coordinator/core.py", "handle_timer"),
    ("Coordinator.receive_datagram", "coordinator/core.py", "receive_datagram"),
    ("  Endpoint.receive_datagram", "session/endpoint.py", "receive_datagram"),
    ("    Session.receive_transport: AEAD, allowance, frames", "session/session.py",
     "receive_transport"),
    ("      Keypair.open_untrusted (AES-GCM, replay window)", "crypto/transport.py",
     "open_untrusted"),
    ("      ChannelLink.on_frame (reliable receive, deliver)", "channels/link.py", "on_frame"),
    ("  Coordinator._process: coordinator logic", "coordinator/core.py", "_process"),
    ("    decode_control_untrusted", "coordinator/messages.py", "decode_control_untrusted"),
    ("    Coordinator._on_presence", "coordinator/core.py", "_on_presence"),
    ("      PresenceIndex.update", "coordinator/presence.py", "update"),
    ("      PresenceIndex.nearest", "coordinator/presence.py", "nearest"),
    ("      Coordinator._entry (peer entries)", "coordinator/core.py", "_entry"),
    ("      encode_control (candidates, introductions)", "coordinator/messages.py",
     "encode_control"),
    ("      Endpoint.send (queue replies)", "session/endpoint.py", "send"),
]
SEND_PARTS = [
    ("Coordinator.datagrams_to_send", "coordinator/core.py", "datagrams_to_send"),
    ("  Endpoint.flush: every session", "session/endpoint.py", "flush"),
    ("    Session.pump", "session/session.py", "pump"),
    ("      ChannelLink.has_data", "channels/link.py", "has_data"),
    ("      ChannelLink.acks_pending", "channels/link.py", "acks_pending"),
    ("      ChannelLink.build (frames of replies and acks)", "channels/link.py", "build"),
    ("      Session._transmit_frames (compress or pad, seal)", "session/session.py",
     "_transmit_frames"),
]


def progress(message: str) -> None:
    print(f"[{time.perf_counter() - _STARTED:6.1f} s] {message}", flush=True)


@dataclass
class WholePath:
    updates_per_s: float  # best round: receive_datagram and datagrams_to_send
    receive_updates_per_s: float  # the same round, receive_datagram alone
    rounds: list[float]
    round_reports: int
    bursts: int  # per round
    datagrams_in: float  # per report (acks of the coordinator's messages included)
    datagrams_out: float  # per report
    messages_out: float  # per report: candidates and introductions the daemons received
    bytes_out: float  # per report
    registration_ms: float
    registration_receive_ms: float  # of it, receive_datagram
    registration_bursts: int
    flush_ms: float  # datagrams_to_send with nothing to send, every session registered
    get_timer_ms: float
    handle_timer_ms: float  # nothing due
    retransmissions: int  # by the coordinator, over everything
    drops: dict[str, int]  # datagrams the coordinator dropped, by reason, over everything
    bad_messages: int
    profile: list[str]
    recording: list[tuple[Datagrams, float]]
    split: int  # recording[:split] registered the daemons
    digest: str


def round_reports(stream: list[tuple[int, str, int, int]], start: float) -> list[Report]:
    """The reports of ``stream``, REPORT_RATE a second from ``start``."""
    return [(start + j / REPORT_RATE, daemon, map_name, x, y)
            for j, (daemon, map_name, x, y) in enumerate(stream)]


def measure_whole_path(world: World, stream: list[tuple[int, str, int, int]]) -> WholePath:
    """Registration, warm-up (recorded for the memory replay), then the timed rounds."""
    cw = CoordinatorWorld(CAPACITY, SEED, handshakes_per_second=HANDSHAKE_LIMIT)
    coordinator = cw.coordinator
    cw.recording = []
    for first in range(0, DAEMONS, REGISTRATION_STEP):
        cw.register(min(REGISTRATION_STEP, DAEMONS - first), BURST, BURST / REGISTRATION_RATE)
        progress(f"registered {len(coordinator.store):,} daemons through handshakes")
    if len(coordinator.store) != DAEMONS or coordinator.refused:
        raise RuntimeError(f"registration failed: {len(coordinator.store)} registered,"
                           f" refused {dict(coordinator.refused)}")
    registration_s = cw.receive_s + cw.send_s
    registration_receive_s = cw.receive_s
    registration_bursts = cw.bursts
    split = len(cw.recording)
    for _ in range(WARMUP_PASSES):
        cw.advance(cw.now + PASS_INTERVAL)  # only timers: acks, PINGs
        begin = cw.now
        cw.run([(begin + i / REPORT_RATE, i, fresh(p.map), p.x, p.y)
                for i, p in enumerate(world.players)], WARMUP_BURST)
    cw.advance(cw.now + PASS_INTERVAL)
    if coordinator.messages["presence"] != WARMUP_PASSES * DAEMONS or coordinator.bad_messages:
        raise RuntimeError(f"warm-up: {dict(coordinator.messages)},"
                           f" {coordinator.bad_messages} bad")
    buckets = coordinator.presence.statistics().buckets
    progress(f"every daemon reported {WARMUP_PASSES} times ({buckets} buckets in use);"
             f" {len(cw.recording)} bursts recorded for the memory replay")
    recording, cw.recording = cw.recording, None
    # each timed round: rate, receive_datagram's rate, reports, bursts, and per report:
    # datagrams in, datagrams out, bytes out, messages out
    rounds: list[tuple[float, float, int, int, tuple[float, float, float, float]]] = []
    profile: list[str] = []
    offset = 0
    for number in range(WHOLE_ROUNDS + 1):
        profiled = number == WHOLE_ROUNDS
        length = PROFILE_STREAM if profiled else ROUND_STREAM
        batch = round_reports(stream[offset:offset + length], cw.now + 1 / REPORT_RATE)
        offset += length
        gc.collect()
        cw.reset_counters()
        if profiled:
            cw.profilers = (cProfile.Profile(), cProfile.Profile())
            count = cw.run(batch, BURST)
            profile = profile_lines(cw.profilers, count)
            cw.profilers = None
            progress(f"profiled round: {count:,} reports,"
                     f" {cw.receive_s + cw.send_s:.1f} s under cProfile")
            continue
        sent_before = Counter(coordinator.sent)
        count = cw.run(batch, BURST)
        sent = Counter(coordinator.sent)
        sent.subtract(sent_before)
        busy = cw.receive_s + cw.send_s
        rounds.append((count / busy, count / cw.receive_s, count, cw.bursts,
                       (cw.datagrams_in / count, cw.datagrams_out / count,
                        cw.bytes_out / count, cw.messages_out / count)))
        progress(f"round {number + 1}/{WHOLE_ROUNDS}: {count:,} reports (the stream's next"
                 f" ones, {count / REPORT_RATE:.1f} virtual s) in {cw.bursts} bursts:"
                 f" {busy:.2f} s"
                 f" ({count / busy:,.0f}/s; receive_datagram {cw.receive_s:.2f} s,"
                 f" datagrams_to_send {cw.send_s:.2f} s); per report"
                 f" {sent['candidates'] / count:.3f} candidate lists,"
                 f" {sent['introduce'] / count:.3f} introductions")
    cw.advance(cw.now + 2 * ACK_DELAY)  # the last acks
    now = cw.now
    endpoint = coordinator.endpoint
    retransmissions = sum(endpoint.session_statistics(peer).channels["retransmissions"]
                          for peer in endpoint.peers())
    flush_ms = scan_ms(lambda: coordinator.datagrams_to_send(now))
    get_timer_ms = scan_ms(coordinator.get_timer)
    later = now + SessionConfig().ping_interval + 1.0
    coordinator.handle_timer(later)  # the pings due by then: not timed
    coordinator.datagrams_to_send(later)
    handle_timer_ms = scan_ms(lambda: coordinator.handle_timer(later))
    best, receive_rate, reports, bursts, per_report = max(rounds)
    return WholePath(
        updates_per_s=best, receive_updates_per_s=receive_rate,
        rounds=[rate for rate, *_ in rounds], round_reports=reports, bursts=bursts,
        datagrams_in=per_report[0], datagrams_out=per_report[1], bytes_out=per_report[2],
        messages_out=per_report[3],
        registration_ms=registration_s / DAEMONS * 1e3,
        registration_receive_ms=registration_receive_s / DAEMONS * 1e3,
        registration_bursts=registration_bursts, flush_ms=flush_ms, get_timer_ms=get_timer_ms,
        handle_timer_ms=handle_timer_ms, retransmissions=retransmissions,
        drops=endpoint.statistics().drops, bad_messages=coordinator.bad_messages, profile=profile,
        recording=recording, split=split, digest=cw.digest.hexdigest())


def scan_ms(call: Callable[[], object]) -> float:
    """Milliseconds of the fastest of SCAN_REPEAT calls."""
    best = float("inf")
    for _ in range(SCAN_REPEAT):
        begin = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - begin)
    return best * 1e3


def short_path(filename: str) -> str:
    """A source file's name from the project's root (p2pd/..., bench/...), else its base name."""
    name = filename.replace("\\", "/")
    for root in ("/p2pd/", "/bench/"):
        if root in name:
            return root[1:] + name.split(root, 1)[1]
    return name.rsplit("/", 1)[-1]


def _where(code: CodeType | str) -> tuple[str, str]:
    """(file:line, or "" for a builtin; function name)."""
    if isinstance(code, str):
        return "", code
    return f"{short_path(code.co_filename)}:{code.co_firstlineno}", code.co_name


def profile_lines(profilers: tuple[cProfile.Profile, cProfile.Profile],
                  reports: int) -> list[str]:
    """Where the coordinator's time went, per report: cumulative times of the main
    steps, then the functions with the most time of their own, for each call."""
    receive, send = profilers[0].getstats(), profilers[1].getstats()
    total = sum(entry.inlinetime for entry in receive + send) or 1.0
    lines = [f"  cProfile of one more round ({reports:,} reports; cProfile inflates call-heavy"
             " Python code): us per report and share of the profiled time"]
    for entries, parts, top in ((receive, RECEIVE_PARTS, PROFILE_TOP), (send, SEND_PARTS, 6)):
        cumulative: dict[tuple[str, str], float] = {}
        for entry in entries:
            if not isinstance(entry.code, str):  # builtins count in their callers' time
                key = (short_path(entry.code.co_filename), entry.code.co_name)
                cumulative[key] = cumulative.get(key, 0.0) + entry.totaltime
        for label, path, function in parts:
            spent = cumulative.get((f"p2pd/{path}", function), 0.0)
            lines.append(f"    {spent / reports * 1e6:8.1f} us {spent / total:6.1%}  {label}")
        lines.append(f"      its top {top} functions by own time (us per report, share,"
                     " calls per report):")
        for entry in sorted(entries, key=lambda e: -e.inlinetime)[:top]:
            path, function = _where(entry.code)
            where = f"{function} ({path})" if path else function
            lines.append(f"      {entry.inlinetime / reports * 1e6:8.1f} us"
                         f" {entry.inlinetime / total:6.1%} {entry.callcount / reports:7.1f}"
                         f"  {where[:80]}")
    return lines


# -- memory of the whole coordinator (a replay in a fresh process) -----------------------


def resident_bytes() -> int:
    """Resident set size of this process (Linux), 0 where /proc is missing."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def aesgcm_outside_python() -> tuple[float, list[AESGCM]]:
    """Resident bytes one AESGCM object holds beyond what tracemalloc sees (OpenSSL's
    cipher context), and the objects measured: keep them, or the next allocations
    reuse their memory unseen."""
    keys = [bytes([i % 256, i // 256]) * 16 for i in range(4000)]
    gc.collect()
    tracemalloc.start()
    before, traced = resident_bytes(), tracemalloc.get_traced_memory()[0]
    ciphers = [AESGCM(key) for key in keys]
    grown = resident_bytes() - before
    seen = tracemalloc.get_traced_memory()[0] - traced
    tracemalloc.stop()
    return (grown - seen) / len(ciphers), ciphers


def replay_memory(path: Path) -> None:
    """In a fresh process: the coordinator alone, replayed from the recording, traced."""
    recording, split, digest = pickle.loads(path.read_bytes())
    aesgcm_outside, ciphers = aesgcm_outside_python()
    gc.collect()
    resident_start = resident_bytes()
    tracemalloc.start()
    overhead_start = tracemalloc.get_tracemalloc_memory()

    def checkpoint() -> tuple[float, float]:
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0]
        overhead = tracemalloc.get_tracemalloc_memory() - overhead_start
        resident = resident_bytes() - resident_start - overhead
        return traced / DAEMONS, resident / DAEMONS

    replay = Replay(SEED, CAPACITY, HANDSHAKE_LIMIT)
    registered = (0.0, 0.0)
    for i, (datagrams, now) in enumerate(recording):
        if i == split:
            registered = checkpoint()
        replay.feed(datagrams, now)
    reported = checkpoint()
    snapshot = tracemalloc.take_snapshot()
    tracemalloc.stop()
    if replay.digest.hexdigest() != digest:
        raise RuntimeError("the replayed coordinator answered differently from the recorded one")
    coordinator = replay.coordinator
    sessions = list(coordinator.endpoint._sessions.values())
    keypairs = sum((s.current is not None) + (s._previous is not None) + len(s._unconfirmed)
                   for s in sessions)
    lines = []
    for stat in snapshot.statistics("lineno")[:10]:
        frame = stat.traceback[0]
        path_name = short_path(frame.filename)
        source = linecache.getline(frame.filename, frame.lineno).strip()
        lines.append(f"    {stat.size / DAEMONS:7.0f} B {stat.count / DAEMONS:5.1f}"
                     f"  {path_name}:{frame.lineno}  {source[:64]}")
    files = []
    for stat in snapshot.statistics("filename")[:6]:
        files.append(f"{short_path(stat.traceback[0].filename)} {stat.size / DAEMONS:,.0f} B")
    print(json.dumps({
        "registered": registered, "reported": reported, "lines": lines, "files": files,
        "sessions": len(sessions), "keypairs": keypairs,
        "aesgcm_outside": aesgcm_outside,
    }))
    del ciphers


@dataclass
class WholeMemory:
    registered: float  # tracemalloc, per daemon, after registration
    reported: float  # ... after every daemon's warm-up reports
    resident_registered: float  # resident bytes per daemon (tracemalloc's own excluded)
    resident_reported: float
    lines: list[str]  # the breakdown
    files: list[str]
    sessions: int
    keypairs: int
    aesgcm_outside: float  # resident bytes per AESGCM beyond tracemalloc's view


def measure_whole_memory(whole: WholePath) -> WholeMemory:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "recording.pickle"
        path.write_bytes(pickle.dumps((whole.recording, whole.split, whole.digest)))
        done = subprocess.run([sys.executable, __file__, "--replay", str(path)],
                              capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"the memory replay failed:\n{done.stderr}")
    result = json.loads(done.stdout.splitlines()[-1])
    return WholeMemory(
        registered=result["registered"][0], reported=result["reported"][0],
        resident_registered=result["registered"][1], resident_reported=result["reported"][1],
        lines=result["lines"], files=result["files"], sessions=result["sessions"],
        keypairs=result["keypairs"], aesgcm_outside=result["aesgcm_outside"])


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--replay":
        replay_memory(Path(sys.argv[2]))
        return
    rng = random.Random(SEED)
    world = build_world(rng)
    stream = build_stream(rng, world)
    index = load(world)
    maps = index.maps()
    towns = ", ".join(f"{name} {maps[name]}" for name, *_ in TOWNS)
    fields = sorted(n for name, n in maps.items() if name.startswith("field"))
    print(f"{DAEMONS} daemons: towns {towns}; {len(fields)} field maps with"
          f" {fields[0]}-{fields[-1]} each (median {fields[len(fields) // 2]});"
          f" {index.statistics().buckets} buckets of {index.view_range} x"
          f" {index.view_range} cells in use")
    figures: dict[str, float | bool] = {}
    for name, measure in THROUGHPUT.items():
        rate, queried = measure(world, stream)
        figures[f"{name}_updates_per_s"] = round(rate)
        figures[f"{name}_query_fraction"] = round(queried, 4)
        print(f"{name}: {rate:,.0f} reports/s on one core ({UPDATES:,} reports, best of"
              f" {ROUNDS}); {queried:.1%} of them changed bucket or map and were answered"
              f" with nearest(daemon, {QUERY_COUNT})")
    crowd_us, in_view = measure_nearest_crowd(world)
    figures["nearest_crowd_us"] = round(crowd_us, 1)
    figures["nearest_crowd_in_view"] = in_view
    print(f"nearest(daemon, {QUERY_COUNT}) in Prontera's main crowd ({in_view} players in"
          f" view): {crowd_us:.1f} us")
    per_daemon = measure_index_memory(world)
    figures["index_bytes_per_daemon"] = round(per_daemon, 1)
    print(f"index memory: {per_daemon:.0f} bytes per registered daemon (tracemalloc,"
          f" {DAEMONS} daemons)")
    del index

    progress("the whole path: one Coordinator, 10,000 daemon Endpoints, datagrams handed over"
             " directly with a virtual clock")
    whole = measure_whole_path(world, stream)
    bursts_per_report = whole.bursts / whole.round_reports
    print(f"registration: {whole.registration_ms:.2f} ms of coordinator time per daemon"
          f" (receive_datagram {whole.registration_receive_ms:.2f} ms: handshake, token checks,"
          f" certificate; the rest datagrams_to_send, {whole.registration_bursts} bursts of up"
          f" to {BURST} datagrams)")
    print(f"whole path: {whole.updates_per_s:,.0f} presence updates/s on one core, best of"
          f" {WHOLE_ROUNDS} rounds ({', '.join(f'{r:,.0f}' for r in whole.rounds)}) of"
          f" {whole.round_reports:,} reports in bursts of {BURST} datagrams: handle_timer when"
          f" due, receive_datagram for each datagram, datagrams_to_send and get_timer after"
          f" each burst")
    print(f"  per report: {whole.datagrams_in:.2f} datagrams in (acks included),"
          f" {whole.datagrams_out:.2f} out ({whole.bytes_out:.0f} bytes) carrying"
          f" {whole.messages_out:.2f} candidate lists and introductions (the others: acks alone);"
          f" in all {whole.retransmissions} retransmissions by the coordinator, datagrams"
          f" dropped {whole.drops or 'none'}, {whole.bad_messages} bad messages")
    print(f"  receive_datagram alone (the same round): {whole.receive_updates_per_s:,.0f}"
          " updates/s")
    print(f"  scans of every session ({DAEMONS:,} registered): datagrams_to_send with nothing"
          f" to send {whole.flush_ms:.1f} ms, get_timer {whole.get_timer_ms:.1f} ms,"
          f" handle_timer with nothing due {whole.handle_timer_ms:.1f} ms")
    flush_share = whole.flush_ms / 1e3 * bursts_per_report * whole.updates_per_s
    with_timer = 1 / (1 / whole.updates_per_s + whole.get_timer_ms / 1e3 * bursts_per_report)
    print(f"  the idle flush alone is {flush_share:.0%} of the whole path's time; the"
          f" server's pump also calls get_timer after every burst: {with_timer:,.0f} updates/s"
          " with it")
    for line in whole.profile:
        print(line)
    figures["updates_per_s"] = round(whole.updates_per_s)
    figures["receive_updates_per_s"] = round(whole.receive_updates_per_s)
    figures["registration_ms"] = round(whole.registration_ms, 3)
    figures["flush_ms"] = round(whole.flush_ms, 2)
    figures["get_timer_ms"] = round(whole.get_timer_ms, 2)

    progress("memory: the recorded registration and warm-up replayed into the coordinator alone"
             " (a fresh process, tracemalloc)")
    memory = measure_whole_memory(whole)
    del whole
    print(f"whole coordinator memory per registered daemon (tracemalloc, {DAEMONS:,} daemons,"
          f" {memory.sessions:,} sessions, {memory.keypairs:,} keypairs):"
          f" {memory.registered:,.0f} B registered, {memory.reported:,.0f} B after"
          f" {WARMUP_PASSES} presence reports each")
    print(f"  resident (RSS growth less tracemalloc's own): {memory.resident_registered:,.0f} B"
          f" registered, {memory.resident_reported:,.0f} B after the reports; tracemalloc does"
          f" not see OpenSSL's memory: {memory.aesgcm_outside:,.0f} B per AESGCM, two per keypair")
    print("  by file: " + "; ".join(memory.files))
    print("  top 10 lines (bytes and allocations per daemon):")
    for line in memory.lines:
        print(line)
    figures["bytes_per_daemon"] = round(memory.reported, 1)
    figures["bytes_per_daemon_registered"] = round(memory.registered, 1)
    figures["resident_bytes_per_daemon"] = round(memory.resident_reported, 1)

    updates_met = figures["updates_per_s"] >= GOAL_UPDATES
    bytes_met = figures["bytes_per_daemon"] <= GOAL_BYTES
    figures["goals_met"] = updates_met and bytes_met
    print(f"goal: at least {GOAL_UPDATES:,} presence updates/s per core through the whole"
          f" coordinator: {'met' if updates_met else 'MISSED'} ({figures['updates_per_s']:,}/s)")
    print(f"goal: at most {GOAL_BYTES:,} B per registered daemon:"
          f" {'met' if bytes_met else 'MISSED'} ({figures['bytes_per_daemon']:,.0f} B by"
          f" tracemalloc, {figures['resident_bytes_per_daemon']:,.0f} B resident)")
    progress("done")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
