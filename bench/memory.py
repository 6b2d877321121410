"""Resident memory (RSS) of a p2pd daemon, idle and with 10 peers.

Measures, in one run (Linux: VmRSS of /proc/PID/status; skipped elsewhere):
- idle: 11 real daemons start on loopback; after a second of settling, the RSS
  of the first (and the median of all eleven), no IPC client connected;
- 10 peers: the first daemon connects to the ten others over IPC (``connect``
  with each one's address and key, ``max_peers`` is 10 by default) until
  ``peers`` shows ten established links; then traffic: 200 rounds, one every
  20 ms, of a ``chat`` and a ``position`` from the first daemon to every peer,
  and a ``chat`` from every peer to the first, whose client is subscribed to
  every event and reads them all; after a second of settling, its RSS (also
  the peak, VmHWM, and the anonymous/file split);
- for reference, the floor: a bare interpreter, and an interpreter that only
  imports the daemon's third-party libraries (trio, cryptography's AEAD, lz4,
  zstandard, msgpack, structlog, click), measured the same way.

The daemons run with log level info and ``position_update_rate=60`` so that
the positions are not rate limited. Goal from the issue (reported, not
asserted): at most 45 MiB with 10 peers. Ends with one JSON line.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import trio

from p2pd.client import DaemonClient
from p2pd.localrun import DaemonProcess, running_daemons

PEERS = 10
ROUNDS = 200
ROUND_INTERVAL = 0.02  # seconds; 50 positions/s per peer, under position_update_rate=60
SETTLE = 1.0  # seconds before reading an RSS
GOAL_MIB = 45.0
DAEMON_SETTINGS = {"log_level": "info", "position_update_rate": "60"}
IMPORT_FLOOR = ("import trio, cryptography.hazmat.primitives.ciphers.aead, lz4.block, "
                "zstandard, msgpack, structlog, click")
WAIT_FOR_STDIN = "import sys; print('ready', flush=True); sys.stdin.read()"


def memory_kib(pid: int) -> dict[str, int]:
    """The Vm*/Rss* lines of /proc/PID/status, in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.startswith(("Vm", "Rss")) and value.strip().endswith("kB"):
            out[key] = int(value.split()[0])
    return out


def mib(kib: float) -> float:
    return round(kib / 1024, 2)


def reference_rss(code: str) -> dict[str, int]:
    """Memory of an interpreter that runs ``code`` and waits."""
    child = subprocess.Popen([sys.executable, "-c", f"{code}\n{WAIT_FOR_STDIN}"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdin is not None
        if child.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"reference process failed: {code}")
        time.sleep(SETTLE)
        memory = memory_kib(child.pid)
        child.stdin.close()
        child.wait(5)
        return memory
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def daemons(root: Path, count: int,
            settings: dict[str, str]) -> AbstractContextManager[list[DaemonProcess]]:
    first_port = 51000 + (os.getpid() % 200) * 60  # apart from the tests' 47100 and other runs
    return running_daemons(root, count, first_port=first_port, p2p=settings)


async def open_client(daemon: DaemonProcess) -> DaemonClient:
    return await DaemonClient.open(daemon.runtime_dir, unix=True, client_name="bench.memory")


async def with_peers(hub: DaemonProcess, others: list[DaemonProcess]) -> dict[str, Any]:
    """Link ``hub`` to every other daemon, exchange traffic; the hub's figures."""
    opened: list[DaemonClient] = []
    try:
        control = await open_client(hub)
        listener = await open_client(hub)
        opened += [control, listener]
        for daemon in others:
            opened.append(await open_client(daemon))
        peer_clients = opened[2:]
        await listener.request("subscribe", events=["*"])

        for daemon in others:
            await control.request("connect", address=daemon.udp_address, key=daemon.public_key)
        with trio.fail_after(15):
            while sum(p["state"] == "established"
                      for p in (await control.request("peers"))["peers"]) < len(others):
                await trio.sleep(0.02)
        linked = trio.current_time()

        received: list[int] = [0]
        expected = ROUNDS * len(others)

        async def listen() -> None:
            while True:
                if (await listener.next_event())["event"] == "chat":
                    received[0] += 1

        async def hub_round(i: int) -> None:
            await control.request("chat", text=f"round {i} from the hub")
            await control.request("position", map="prontera", x=100 + i % 50, y=150,
                                  dir=i % 8, moving=True, tick=i)

        async def peer_round(client: DaemonClient, i: int) -> None:
            await client.request("chat", text=f"round {i} to the hub")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(listen)
            start = trio.current_time()
            for i in range(ROUNDS):
                await trio.sleep_until(start + i * ROUND_INTERVAL)
                async with trio.open_nursery() as round_nursery:
                    round_nursery.start_soon(hub_round, i)
                    for client in peer_clients:
                        round_nursery.start_soon(peer_round, client, i)
            with trio.move_on_after(5):
                while received[0] < expected:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()

        stats = await control.request("stats")
        peers = (await control.request("peers"))["peers"]
        await trio.sleep(SETTLE)
        return {"memory": memory_kib(hub.process.pid), "stats": stats, "peers": peers,
                "received": received[0], "expected": expected,
                "traffic_s": trio.current_time() - linked - SETTLE}
    finally:
        for client in opened:
            await client.aclose()


def main() -> None:
    if not Path(f"/proc/{os.getpid()}/status").exists():
        print("RSS is read from /proc/PID/status (Linux): skipped on this system")
        print(json.dumps({"skipped": "no /proc", "rss_mib_idle": None,
                          "rss_mib_10_peers": None, "rss_mib_import_floor": None}))
        return

    python = reference_rss("pass")
    floor = reference_rss(IMPORT_FLOOR)
    with tempfile.TemporaryDirectory(prefix="p2pd-bench-memory-") as tmp, \
            daemons(Path(tmp), PEERS + 1, DAEMON_SETTINGS) as started:
        time.sleep(SETTLE)
        idle_all = [memory_kib(d.process.pid) for d in started]
        r = trio.run(with_peers, started[0], started[1:])

    idle, busy = idle_all[0], r["memory"]
    stats = r["stats"]
    established = sum(p["state"] == "established" for p in r["peers"])
    sent = sum(p["packets_sent"] for p in r["peers"] if "packets_sent" in p)
    limited = sum(stats["events"]["rate_limited"].values())

    def line(name: str, memory: dict[str, int]) -> str:
        return (f"  {name:<44} {mib(memory['VmRSS']):6.2f} MiB  (anon {mib(memory['RssAnon']):.2f},"
                f" file {mib(memory['RssFile']):.2f}, peak {mib(memory['VmHWM']):.2f})")

    print("resident memory (VmRSS):")
    print(line("bare python", python))
    print(line("python + the daemon's libraries (floor)", floor))
    print(line("daemon, idle", idle))
    print(f"  {'idle, median of the ' + str(len(idle_all)) + ' daemons':<44}"
          f" {mib(statistics.median(m['VmRSS'] for m in idle_all)):6.2f} MiB")
    print(line(f"daemon, {established} peers, after traffic", busy))
    print(f"  traffic: {ROUNDS} rounds in {r['traffic_s']:.1f} s; the hub sent"
          f" {stats['events']['sent']} ({sent} datagrams), received"
          f" {r['received']}/{r['expected']} chats, rate limited {limited}")
    print(f"  with peers - idle: {mib(busy['VmRSS'] - idle['VmRSS']):.2f} MiB;"
          f" idle - import floor: {mib(idle['VmRSS'] - floor['VmRSS']):.2f} MiB")
    print(f"goal: <= {GOAL_MIB:g} MiB with 10 peers: {mib(busy['VmRSS']):.2f} MiB")
    print(json.dumps({
        "rss_mib_idle": mib(idle["VmRSS"]),
        "rss_mib_10_peers": mib(busy["VmRSS"]),
        "rss_mib_import_floor": mib(floor["VmRSS"]),
        "rss_mib_python": mib(python["VmRSS"]),
        "rss_mib_idle_median": mib(statistics.median(m["VmRSS"] for m in idle_all)),
        "hwm_mib_10_peers": mib(busy["VmHWM"]),
        "anon_mib_10_peers": mib(busy["RssAnon"]),
        "peers_established": established,
        "chats_received": r["received"],
        "events_rate_limited": limited,
    }))


if __name__ == "__main__":
    main()
