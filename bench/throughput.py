"""One-way small events per second between two p2pd sessions, beside ENet and aioquic.

Measures, in one run, on 127.0.0.1 (every stack in one thread, both ends
in the same process, over two real non-blocking UDP sockets):
- p2pd: two ``Endpoint``s (encryption_level high, batching on: the default
  1200-byte batch budget), A sends ``VISUAL_EFFECT`` messages (unreliable) to
  B with ``Endpoint.send``, then ``Endpoint.flush`` after each burst; B counts
  ``MessageReceived`` events. Measured here, with the project's venv;
- ENet (pyenet) unreliable packets on one channel (and, for reference,
  reliable ones), ``Host.flush`` after each burst, ``Host.service`` as the
  pump; ENet packs up to 32 commands into one datagram;
- aioquic: QUIC DATAGRAM frames (``max_datagram_frame_size`` set), one event
  per frame, client and server ``QuicConnection``s driven as sans-IO objects
  exactly like the p2pd endpoints (same socket pump, same timer handling).
ENet and aioquic run in a child process, ``bench/peers_throughput.py``, with
``bench/.venv-peers/bin/python``: they are installed there only (by
``bench/setup_peers.sh``, run here when the venv or a package is missing),
never in the project's venv.

The workload is the same for all three (see bench/peers_throughput.py, whose
harness this script uses for p2pd too): ``EVENTS`` events of 24 bytes (a
sequence number and 16 random bytes: nothing for a compressor to gain), in
bursts of 64 followed by a flush, the sender never more than 4096 events
ahead of what B has counted, gaps in the sequence numbers counted as lost.
Rate = events counted at B / wall time from the first send to the last event.
Each stack runs ``ROUNDS`` rounds, interleaved (one p2pd round, then one
child process for one round of each peer stack), on fresh connections (the
handshakes are not timed); the best round of each counts. Reports events per
datagram as B received them: with bursts of 64, each of the three sends a
burst as two datagrams (p2pd fits about 41 of these events into its
1200-byte batch, aioquic about 45 frames into a 1200-byte packet, ENet at most
32 commands into a datagram), so all three show about 32. Ends with one JSON
line; a peer stack that cannot be installed or run is reported with its
reason and null figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from peers_throughput import (
    EVENTS,
    LOOPBACK,
    ROUNDS,
    Result,
    SansIoPair,
    Tally,
    measure,
    payloads,
)

from p2pd.crypto.identity import Identity
from p2pd.session.config import SessionConfig
from p2pd.session.endpoint import Endpoint
from p2pd.session.events import MessageReceived, SessionEstablished
from p2pd.wire.types import PacketType

BENCH = Path(__file__).resolve().parent
PEERS_VENV = BENCH / ".venv-peers"
PEERS_PYTHON = PEERS_VENV / "bin" / "python"
PEERS_SCRIPT = BENCH / "peers_throughput.py"
SETUP_SCRIPT = BENCH / "setup_peers.sh"
PEER_STACKS = ("enet", "enet_reliable", "aioquic")
SETUP_TIMEOUT = 5.0  # seconds for the p2pd handshake


def p2pd_round(events: list[bytes]) -> Result:
    # The receiver's allowance (spec 5.1) and the sender's pacing below it are
    # raised so that the flood is limited by CPU alone; everything else is the
    # default configuration.
    config = SessionConfig(incoming_packet_rate=1e12, incoming_byte_rate=1e15,
                           send_packet_rate=1e11)
    epoch = time.time() - time.monotonic()
    a = Endpoint(Identity.generate(), config, epoch=epoch)
    b = Endpoint(Identity.generate(), config, epoch=epoch)
    pair = SansIoPair()
    try:
        b_key = b.identity.public_key
        now = time.monotonic()
        a.connect(b_key, pair.b_address, now)
        established = 0
        deadline = now + SETUP_TIMEOUT
        while established < 2:
            now = time.monotonic()
            pair.step(a, b, now)
            for endpoint in (a, b):
                while (event := endpoint.next_event()) is not None:
                    established += isinstance(event, SessionEstablished)
            if now > deadline:
                raise TimeoutError("p2pd handshake did not complete")
            pair.idle(a, b, now)

        tally = Tally(len(events))
        send_message, flush, next_event = a.send, a.flush, b.next_event
        count_event, visual_effect = tally.receive, PacketType.VISUAL_EFFECT

        def send(first: int, count: int, now: float) -> None:
            for data in events[first:first + count]:
                send_message(b_key, visual_effect, data, now)
            flush(now)

        def step(now: float) -> None:
            pair.step(a, b, now)
            while (event := next_event()) is not None:
                if type(event) is MessageReceived:
                    count_event(event.payload)
            while a.next_event() is not None:
                pass

        pair.b_datagrams = 0
        measure(tally, send, step, lambda now: pair.idle(a, b, now))
        drops = {**a.statistics().drops, **b.statistics().drops}
        if drops:
            print(f"  p2pd dropped datagrams: {drops}", file=sys.stderr)
        return tally.result(pair.b_datagrams)
    finally:
        pair.close()


def ensure_peers_venv() -> str | None:
    """Make bench/.venv-peers if it or one of its packages is missing.

    Returns why no peer stack can run, or None: a single package that could
    not be installed is reported by the child process, as its stack's error.
    """
    probe = [str(PEERS_PYTHON), "-c", "import enet, aioquic"]
    if PEERS_PYTHON.exists():
        found = subprocess.run(probe, check=False, stderr=subprocess.DEVNULL)
        if found.returncode == 0:
            return None
    print(f"setting up {PEERS_VENV.relative_to(BENCH.parent)} (pyenet, aioquic)...", flush=True)
    setup = subprocess.run(["bash", str(SETUP_SCRIPT)], check=False, capture_output=True,
                           text=True)
    if setup.returncode != 0:
        print(f"{SETUP_SCRIPT.name} failed in part:\n{setup.stderr.strip()[-2000:]}")
    if not PEERS_PYTHON.exists():
        return f"{SETUP_SCRIPT.name} could not create {PEERS_VENV.name}"
    return None


def peers_round() -> dict[str, Any]:
    """One round of each peer stack in the child process: its JSON line."""
    child = subprocess.run([str(PEERS_PYTHON), str(PEERS_SCRIPT), "1"], check=False,
                           capture_output=True, text=True, timeout=300)
    lines = child.stdout.strip().splitlines()
    if child.returncode != 0 or not lines:
        reason = f"{PEERS_SCRIPT.name} failed: {child.stderr.strip()[-500:]}"
        return {stack: {"error": reason} for stack in PEER_STACKS}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def best_of(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the most events per second, or the first error."""
    good = [r for r in rounds if "error" not in r]
    return max(good, key=lambda r: r["events_per_s"]) if good else rounds[0]


def line(name: str, r: dict[str, Any]) -> str:
    if "error" in r:
        return f"  {name:<26} not measured: {r['error']}"
    lost = f", {r['lost']} lost" if r["lost"] else ""
    return (f"  {name:<26} {r['events_per_s']:>10,.0f} events/s  "
            f"{r['events_per_datagram']:5.1f} events/datagram  "
            f"({r['received']} events in {r['seconds']:.3f} s{lost})")


def rate(r: dict[str, Any]) -> float | None:
    return None if "error" in r else round(r["events_per_s"])


def ratio(ours: float, theirs: float | None) -> float | None:
    return round(ours / theirs, 3) if theirs else None


def per_datagram(r: dict[str, Any]) -> float | None:
    return None if "error" in r else round(r["events_per_datagram"], 2)


def main() -> None:
    events = payloads()
    problem = ensure_peers_venv()
    if problem is not None:
        print(f"peer stacks unavailable: {problem}")
    ours: list[dict[str, Any]] = []
    theirs: dict[str, list[dict[str, Any]]] = {stack: [] for stack in PEER_STACKS}
    versions: dict[str, str | None] = {}
    for _ in range(ROUNDS):
        ours.append(asdict(p2pd_round(events)))
        peers: dict[str, Any] = (peers_round() if problem is None
                                 else {stack: {"error": problem} for stack in PEER_STACKS})
        versions = peers.get("versions") or versions
        for stack in PEER_STACKS:
            theirs[stack].append(peers[stack])

    p2pd = best_of(ours)
    enet, enet_reliable, quic = (best_of(theirs[stack]) for stack in PEER_STACKS)
    shown = ", ".join(f"{name} {v}" for name, v in versions.items() if v)
    print(f"one-way events of 24 bytes, A -> B over UDP on {LOOPBACK}, {EVENTS} events,"
          f" best of {ROUNDS} rounds{f' ({shown})' if shown else ''}:")
    print(line("p2pd VISUAL_EFFECT", p2pd))
    print(line("ENet unreliable", enet))
    print(line("ENet reliable", enet_reliable))
    print(line("aioquic DATAGRAM frames", quic))
    ours_rate = p2pd["events_per_s"]
    for name, r in (("ENet unreliable", enet), ("aioquic", quic)):
        if "error" not in r:
            print(f"p2pd / {name}: {ours_rate / r['events_per_s']:.2f}x")
    print(json.dumps({
        "p2pd_events_per_s": round(ours_rate),
        "enet_events_per_s": rate(enet),
        "aioquic_events_per_s": rate(quic),
        "ratio_enet": ratio(ours_rate, rate(enet)),
        "ratio_aioquic": ratio(ours_rate, rate(quic)),
        "p2pd_events_per_datagram": per_datagram(p2pd),
        "enet_events_per_datagram": per_datagram(enet),
        "aioquic_events_per_datagram": per_datagram(quic),
        "enet_reliable_events_per_s": rate(enet_reliable),
        "p2pd_lost": p2pd["lost"],
        "enet_lost": enet.get("lost"),
        "aioquic_lost": quic.get("lost"),
        "events": EVENTS,
        "rounds": ROUNDS,
    }))


if __name__ == "__main__":
    main()
