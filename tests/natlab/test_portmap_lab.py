"""Port mapping against a real router: miniupnpd (PCP, NAT-PMP, UPnP IGD) in the lab.

Each protocol on its own obtains a mapping of the player's UDP port, a packet
from the internet to the mapped port reaches the player's socket, the mapping is
renewed, and it is gone from the router after the mapper stops. Then the daemon
itself, with ``nat_traversal`` on: it maps its port, shows it in ``status``, a peer
on the internet connects straight to the mapped address, and the mapping goes
when the daemon stops."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pd.io.portmap import GatewayIo, UpnpClient, run_port_mapper
from p2pd.portmap import MapperConfig, MappingChanged, PortMapper, Protocol
from tests.daemons import open_client
from tests.natlab.conftest import MakeLab
from tests.natlab.daemons import start_lab_daemon
from tests.natlab.lab import INTERNET_HOSTS, Lab, NatKind, Side
from tests.natlab.netns import Netns


def redirects(side: Side, port: int) -> bool:
    """Whether miniupnpd's DNAT chain on the router holds a rule for ``port``."""
    chain = side.router.run("nft", "list", "chain", "inet", "filter", "prerouting_miniupnpd")
    return f"dport {port} " in chain.stdout


def in_namespace(namespace: Netns) -> Callable[[Callable[[], Any]], Any]:
    async def run(function: Callable[[], Any]) -> Any:
        return await trio.to_thread.run_sync(namespace.call, function, abandon_on_cancel=True)
    return run


async def receive(sock: socket.socket, timeout: float) -> bytes | None:
    sock.settimeout(timeout)

    def read() -> bytes | None:
        try:
            return sock.recv(2048)
        except TimeoutError:
            return None
    return await trio.to_thread.run_sync(read)


async def wait_until(what: str, predicate: Callable[[], bool], timeout: float) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.02)


@pytest.mark.parametrize("protocol", list(Protocol))
async def test_each_protocol_maps_renews_and_deletes(nat_lab: MakeLab, protocol: Protocol) -> None:
    lab: Lab = nat_lab(NatKind.UPNP)
    side = lab.a
    player = side.host.udp()  # the daemon's socket
    internal = player.getsockname()[1]
    sender = lab.internet.udp(INTERNET_HOSTS[0], 0)
    io = GatewayIo(side.gateway_ip, upnp=UpnpClient(discover_delay=200),
                   make_socket=side.host.socket, run_blocking=in_namespace(side.host))
    opened = io.open_socket()
    assert opened is not None
    sock, local = opened
    assert local == side.lan_ip
    # a 4 s lease: renewed every 2 s
    mapper = PortMapper(MapperConfig(protocols=(protocol,), lifetime=4), internal,
                        trio.current_time(), client_ip=local, nonce=bytes(range(12)))
    changes: list[MappingChanged] = []
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_port_mapper, mapper, io, sock, changes.append)
            await wait_until("a mapping", lambda: mapper.current() is not None, 10)
            mapping = mapper.current()
            assert mapping is not None
            assert (mapping.protocol, mapping.external_ip) == (protocol, side.wan_ip)
            assert mapping.internal_port == internal
            assert redirects(side, mapping.external_port)
            sender.sendto(b"through the router", mapping.external)
            assert await receive(player, 2) == b"through the router"
            await wait_until("a renewal", lambda: mapper.status().renewals >= 1, 6)
            assert mapper.current() is not None
            assert mapper.current().external == mapping.external  # type: ignore[union-attr]
            nursery.cancel_scope.cancel()
        assert mapper.stopped
        assert [change.reason for change in changes] == ["mapped", "stopped"]
        assert not redirects(side, mapping.external_port)
        sender.sendto(b"after the end", mapping.external)
        assert await receive(player, 0.3) is None
    finally:
        for each in (player, sender):
            each.close()


async def test_the_daemon_maps_its_port_and_a_peer_connects_to_it(nat_lab: MakeLab,
                                                                   tmp_path: Path) -> None:
    lab: Lab = nat_lab(NatKind.UPNP)
    side = lab.a
    behind = start_lab_daemon(side.host, tmp_path / "behind", p2p={"nat_traversal": "true"},
                              port_mapping={"enabled": "true", "lifetime": "4"})
    outside = start_lab_daemon(lab.internet, tmp_path / "outside")
    try:
        for daemon in (behind, outside):
            daemon.wait_ready()
        async with await open_client(behind) as client, await open_client(outside) as peer:
            async def mapping() -> dict[str, Any]:
                status = await client.request("status")
                result: dict[str, Any] = status["port_mapping"]
                return result

            with trio.fail_after(10):
                while (await mapping())["state"] != "mapped":
                    await trio.sleep(0.05)
            shown = await mapping()
            assert shown["protocol"] == "pcp"  # the first one tried, and miniupnpd speaks it
            assert shown["external"] == f"{side.wan_ip}:7000"
            assert 0 < shown["expires_in_s"] <= 4
            assert redirects(side, 7000)
            # a peer on the internet dials the mapped address, straight through the router
            await peer.request("connect", address=shown["external"], key=behind.public_key)
            with trio.fail_after(10):
                while not any(p["state"] == "established"
                              for p in (await client.request("peers"))["peers"]):
                    await trio.sleep(0.05)
            seen_from = (await peer.request("peers"))["peers"][0]
            assert seen_from["state"] == "established"
            with trio.fail_after(6):
                while (await mapping())["renewals"] < 1:
                    await trio.sleep(0.1)
        assert behind.stop() == 0
        assert not redirects(side, 7000)
        events = [record["event"] for record in behind.log_records()]
        assert "port_mapping_mapped" in events
        assert "port_mapping_stopped" in events
    finally:
        for daemon in (behind, outside):
            daemon.stop()
