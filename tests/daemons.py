"""Real p2pd processes on loopback for the daemon tests."""

from __future__ import annotations

import itertools
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio

from p2pd import localrun
from p2pd.client import DaemonClient
from p2pd.localrun import DaemonProcess

_ports = itertools.count(47100, 20)  # apart from the benches' ranges


def free_udp_range(width: int = 10) -> tuple[int, int]:
    return localrun.free_udp_range(next(_ports), width)


@contextmanager
def running_daemons(root: Path, count: int, p2p: dict[str, str] | None = None,
                    ipc: dict[str, str] | None = None) -> Iterator[list[DaemonProcess]]:
    low, _ = free_udp_range(count * 10)
    with localrun.running_daemons(root, count, first_port=low, p2p=p2p, ipc=ipc) as daemons:
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


class UdpRelay:
    """Forwards datagrams between a daemon and a target, keeping a copy of each."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.bind(("127.0.0.1", 0))
        self.target = target
        self.client: tuple[str, int] | None = None
        self.seen: list[bytes] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._forward, args=(self.front, True)),
                         threading.Thread(target=self._forward, args=(self.back, False))]
        for sock in (self.front, self.back):
            sock.settimeout(0.1)
        for thread in self._threads:
            thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.front.getsockname()[1]}"

    def _forward(self, sock: socket.socket, outbound: bool) -> None:
        while not self._stop.is_set():
            try:
                data, source = sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.seen.append(data)
            if outbound:
                self.client = source
                self.back.sendto(data, self.target)
            elif self.client is not None:
                self.front.sendto(data, self.client)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self.front.close()
        self.back.close()
