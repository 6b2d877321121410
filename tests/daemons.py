"""Real p2pd processes on loopback for the daemon tests."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio

from p2pd import localrun
from p2pd.client import DaemonClient
from p2pd.localrun import DaemonProcess
from p2pd.sim.network import LinkProfile
from p2pd.sim.udp_relay import UdpImpairmentRelay

_ports = itertools.count(47100, 20)  # apart from the benches' ranges


def free_udp_range(width: int = 10) -> tuple[int, int]:
    return localrun.free_udp_range(next(_ports), width)


@contextmanager
def running_daemons(root: Path, count: int, p2p: dict[str, str] | None = None,
                    ipc: dict[str, str] | None = None,
                    sync: dict[str, str] | None = None) -> Iterator[list[DaemonProcess]]:
    low, _ = free_udp_range(count * 10)
    with localrun.running_daemons(root, count, first_port=low, p2p=p2p, ipc=ipc,
                                  sync=sync) as daemons:
        yield daemons


async def open_client(daemon: DaemonProcess, *, unix: bool = True) -> DaemonClient:
    return await DaemonClient.open(daemon.runtime_dir, unix=unix, client_name="test")


link = localrun.link


async def next_event_named(client: DaemonClient, name: str, timeout: float = 10) -> dict[str, Any]:
    with trio.fail_after(timeout):
        while True:
            event = await client.next_event()
            if event["event"] == name:
                return event


async def relayed_chat(a: DaemonProcess, b: DaemonProcess, texts: list[str],
                       profile: LinkProfile | None = None) -> list[bytes]:
    """Link a to b through an impairment relay, send ``texts`` as chat lines from a's
    client to b's; return every datagram the relay saw, both directions."""
    assert b.info is not None
    relay = UdpImpairmentRelay(("127.0.0.1", b.info.udp_port), forward=profile or LinkProfile(),
                               backward=profile or LinkProfile(), seed=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(relay.run)
        host, port = relay.front_address
        async with await open_client(a) as client_a, await open_client(b) as client_b:
            await client_b.request("subscribe", events=["chat"])
            await client_a.request("connect", address=f"{host}:{port}", key=b.public_key)
            with trio.fail_after(10):
                while (await client_a.request("peers"))["peers"][0]["state"] != "established":
                    await trio.sleep(0.02)
            for text in texts:
                await client_a.request("chat", text=text)
                assert (await next_event_named(client_b, "chat"))["text"] == text
        nursery.cancel_scope.cancel()
    return [datagram for _, datagram in relay.seen]
