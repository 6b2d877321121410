"""Real p2pd processes on loopback for the daemon tests."""

from __future__ import annotations

import itertools
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio

from p2pd.client import DaemonClient
from p2pd.localrun import DaemonProcess, start_daemon, write_local_config

_ports = itertools.count(47100, 20)


def free_udp_range(width: int = 10) -> tuple[int, int]:
    """A range of ports with at least its first one free on 0.0.0.0 (UDP)."""
    for low in _ports:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.bind(("0.0.0.0", low))
        except OSError:
            continue
        finally:
            probe.close()
        return low, low + width - 1
    raise RuntimeError("no free port range")


@contextmanager
def running_daemons(root: Path, count: int,
                    p2p: dict[str, str] | None = None) -> Iterator[list[DaemonProcess]]:
    daemons: list[DaemonProcess] = []
    try:
        for i in range(count):
            home = root / f"daemon{i}"
            low, high = free_udp_range()
            daemons.append(start_daemon(home, write_local_config(home, port_low=low,
                                                                 port_high=high, p2p=p2p)))
        for daemon in daemons:
            daemon.wait_ready()
        yield daemons
    finally:
        for daemon in daemons:
            daemon.stop()


async def open_client(daemon: DaemonProcess, *, unix: bool = True) -> DaemonClient:
    return await DaemonClient.open(daemon.runtime_dir, unix=unix, client_name="test")


async def link(a: DaemonProcess, b: DaemonProcess, client_a: DaemonClient,
               client_b: DaemonClient) -> None:
    """Connect a to b and wait until both report the link."""
    await client_a.request("connect", address=b.udp_address, key=b.public_key)
    with trio.fail_after(10):
        for client, other in ((client_a, b), (client_b, a)):
            while not any(p["peer"] == other.public_key and p["state"] == "established"
                          for p in (await client.request("peers"))["peers"]):
                await trio.sleep(0.02)


async def next_event_named(client: DaemonClient, name: str, timeout: float = 10) -> dict[str, Any]:
    with trio.fail_after(timeout):
        while True:
            event = await client.next_event()
            if event["event"] == name:
                return event
