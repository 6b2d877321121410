"""The trio shell of the port mapper: a socket to the gateway, UPnP in threads.

:func:`run_port_mapper` drives a :class:`~p2pd.portmap.PortMapper` until
cancelled, then deletes the mapping (shielded, at most ``stop_timeout``).

PCP and NAT-PMP go through a small socket of their own, connected to the
gateway's port 5351, not through the daemon's P2P socket: both protocols name
the internal port to map inside the request (the internal address is the
request's source address, the same for both sockets), so the mapping is the
same; the connected socket lets the kernel drop every datagram that is not from
the gateway's port 5351 before it reaches the parser; and the daemon's hot
receive path stays untouched. UPnP IGD uses the miniupnpc library (SSDP
discovery, then SOAP over HTTP), which blocks: each call runs in a worker thread.

:func:`default_gateway` reads Linux's routing table; elsewhere, without
``[port_mapping] gateway``, only UPnP (which discovers its gateway by multicast)
is tried.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import trio

from p2pd.config import PortMappingSettings
from p2pd.logs import get_logger
from p2pd.portmap.events import MappingChanged, Protocol
from p2pd.portmap.mapper import (
    MapperConfig,
    PortMapper,
    UpnpAdd,
    UpnpCommand,
    UpnpFailed,
    UpnpMapped,
    UpnpResult,
)

log = get_logger("p2pd.portmap")
T = TypeVar("T")
GATEWAY_PORT = 5351
RunBlocking = Callable[[Callable[[], Any]], Awaitable[Any]]


async def _in_thread(function: Callable[[], T]) -> T:
    return await trio.to_thread.run_sync(function, abandon_on_cancel=True)


def default_gateway(route_table: Path = Path("/proc/net/route")) -> str | None:
    """The IPv4 default route's gateway (Linux), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        lines = route_table.read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        # Iface Destination Gateway Flags ...; RTF_UP | RTF_GATEWAY = 0x3
        if len(fields) >= 4 and fields[1] == "00000000" and int(fields[3], 16) & 0x3 == 0x3:
            return str(ipaddress.IPv4Address(bytes.fromhex(fields[2])[::-1]))
    return None


def local_address_towards(sock: socket.socket, gateway: str) -> str:
    """The address the system would send from to ``gateway`` (connects ``sock``; no packet)."""
    sock.connect((gateway, GATEWAY_PORT))
    return str(sock.getsockname()[0])


class UpnpError(Exception):
    """A UPnP IGD call failed; the message is miniupnpc's."""


class UpnpClient:
    """UPnP IGD through miniupnpc: blocking calls, each made in a worker thread.

    The gateway is discovered (SSDP, ``discover_delay`` ms) at the first call
    and kept. Some IGDs grant only permanent leases (error 725): the mapping is
    then added with lease 0, and the mapper still renews it, and deletes it at the end.
    """

    def __init__(self, description: str = "p2pd", discover_delay: int = 200) -> None:
        self.description = description
        self.discover_delay = discover_delay
        self._igd: Any = None

    def _gateway(self) -> Any:
        if self._igd is None:
            try:
                import miniupnpc  # noqa: PLC0415  (a native wheel, loaded when UPnP is used)
            except ImportError as error:  # a platform without the wheel
                raise UpnpError(f"miniupnpc is not installed: {error}") from None
            igd = miniupnpc.UPnP()
            igd.discoverdelay = self.discover_delay
            try:
                if igd.discover() == 0:
                    raise UpnpError("no UPnP device answered the discovery")
                igd.selectigd()
            except Exception as error:
                raise UpnpError(f"no UPnP IGD: {error}") from None
            self._igd = igd
        return self._igd

    def add(self, internal_port: int, external_port: int, lifetime: int) -> UpnpMapped:
        igd = self._gateway()
        try:
            external_ip = str(igd.externalipaddress())
            try:
                igd.addportmapping(external_port, "UDP", igd.lanaddr, internal_port,
                                   self.description, "", lifetime)
            except Exception as error:
                if "725" not in str(error) and "Permanent" not in str(error):
                    raise
                lifetime = 0
                igd.addportmapping(external_port, "UDP", igd.lanaddr, internal_port,
                                   self.description, "", 0)
        except UpnpError:
            raise
        except Exception as error:
            self._igd = None  # discover again next time: the gateway may have changed
            raise UpnpError(str(error) or type(error).__name__) from None
        return UpnpMapped(external_ip, external_port, lifetime)

    def delete(self, external_port: int) -> None:
        igd = self._gateway()
        try:
            igd.deleteportmapping(external_port, "UDP")
        except Exception as error:
            raise UpnpError(str(error) or type(error).__name__) from None


@dataclass
class GatewayIo:
    """How the mapper reaches the gateway. The defaults are the daemon's; tests
    give a socket factory and a thread runner that work inside a network namespace."""

    gateway: str | None  # the PCP / NAT-PMP server, normally the default router
    upnp: UpnpClient | None = field(default_factory=UpnpClient)
    make_socket: Callable[[], socket.socket] = lambda: socket.socket(socket.AF_INET,
                                                                      socket.SOCK_DGRAM)
    run_blocking: RunBlocking = _in_thread
    stop_timeout: float = 2.0  # the deletion at exit, at most

    def open_socket(self) -> tuple[socket.socket, str] | None:
        """A socket connected to the gateway's port 5351 and the local address it
        sends from (PCP's client address), or None without a gateway."""
        if self.gateway is None:
            return None
        sock = self.make_socket()
        try:
            return sock, local_address_towards(sock, self.gateway)
        except OSError as error:
            sock.close()
            log.warning("port_mapping_no_route", gateway=self.gateway, error=str(error))
            return None


class PortMapperHook:
    """The NAT agent's view of the port mapper (``p2pd.nat.candidates.PortMapper``):
    the mapping in force as its 'mapped' candidate, and the status ``p2pctl nat``
    shows."""

    def __init__(self, mapper: PortMapper, clock: Callable[[], float]) -> None:
        self._mapper = mapper
        self._clock = clock

    def mapped_address(self) -> tuple[str, int] | None:
        mapping = self._mapper.current()
        return None if mapping is None else (mapping.external_ip, mapping.external_port)

    def status(self) -> dict[str, object]:
        return dict(self._mapper.status().as_dict(self._clock()))


def open_port_mapper(settings: PortMappingSettings, internal_port: int, now: float,
                     io: GatewayIo | None = None
                     ) -> tuple[PortMapper, GatewayIo, socket.socket | None]:
    """A mapper for ``internal_port`` as ``settings`` say, the way to its gateway
    (``settings.gateway`` or the default route's), and the socket to the gateway
    (None without one): the arguments of :func:`run_port_mapper`."""
    if io is None:
        io = GatewayIo(settings.gateway or default_gateway())
    opened = io.open_socket()
    sock, local = opened if opened is not None else (None, None)
    config = MapperConfig(protocols=tuple(Protocol(name) for name in settings.protocols),
                          lifetime=settings.lifetime, retry_interval=settings.retry_interval)
    mapper = PortMapper(config, internal_port, now, client_ip=local, nonce=os.urandom(12),
                        gateway_known=sock is not None)
    return mapper, io, sock


async def run_port_mapper(mapper: PortMapper, io: GatewayIo, sock: socket.socket | None,
                          on_change: Callable[[MappingChanged], None] | None = None) -> None:
    """Drive ``mapper`` until cancelled, then delete its mapping. ``sock``: from
    :meth:`GatewayIo.open_socket` (closed here at the end), or None for UPnP only."""
    driver = _Driver(mapper, io, sock, on_change)
    try:
        await driver.run()
    finally:
        with trio.move_on_after(io.stop_timeout) as scope:
            scope.shield = True
            await driver.stop()
        if sock is not None:
            sock.close()


class _Driver:
    def __init__(self, mapper: PortMapper, io: GatewayIo, sock: socket.socket | None,
                 on_change: Callable[[MappingChanged], None] | None) -> None:
        self.mapper = mapper
        self.io = io
        self.raw = sock
        self.sock = None if sock is None else trio.socket.from_stdlib_socket(sock)
        self.on_change = on_change
        self.changed = trio.Event()
        self.nursery: trio.Nursery | None = None

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            if self.sock is not None:
                nursery.start_soon(self._receive_loop)
            while True:
                self.pump()
                self.changed = trio.Event()
                deadline = self.mapper.get_timer()
                with trio.move_on_at(deadline if deadline is not None else float("inf")):
                    await self.changed.wait()
                now = trio.current_time()
                if deadline is not None and now >= deadline:
                    self.mapper.handle_timer(now)

    def pump(self) -> None:
        """Send what the mapper wants sent, start its UPnP calls, report its events."""
        for data in self.mapper.datagrams_to_send():
            if self.raw is not None:
                with contextlib.suppress(OSError):  # a full buffer, the route gone: as a loss
                    self.raw.send(data)
        for command in self.mapper.upnp_commands():
            assert self.nursery is not None
            self.nursery.start_soon(self._upnp, command)
        while (event := self.mapper.next_event()) is not None:
            self._report(event)

    def _report(self, event: MappingChanged) -> None:
        mapping = event.mapping
        if mapping is None:
            log.info("port_mapping_" + event.reason, error=self.mapper.status().last_error)
        else:
            log.info("port_mapping_" + event.reason, protocol=mapping.protocol.value,
                     external=f"{mapping.external_ip}:{mapping.external_port}",
                     lifetime=mapping.lifetime)
        if self.on_change is not None:
            self.on_change(event)

    async def _receive_loop(self) -> None:
        assert self.sock is not None
        while True:
            try:
                data = await self.sock.recv(2048)
            except OSError:  # ICMP port unreachable: no PCP server there
                await trio.sleep(0)
                continue
            self.mapper.receive_datagram(data, trio.current_time())
            self.changed.set()

    async def _upnp(self, command: UpnpCommand) -> None:
        result = await self._run_upnp(command)
        self.mapper.upnp_result(command.command, result, trio.current_time())
        self.changed.set()

    async def _run_upnp(self, command: UpnpCommand) -> UpnpResult:
        upnp = self.io.upnp
        if upnp is None:
            return UpnpFailed("UPnP is not available")
        try:
            if isinstance(command, UpnpAdd):
                mapped: UpnpMapped = await self.io.run_blocking(
                    lambda: upnp.add(command.internal_port, command.external_port,
                                     command.lifetime))
                return mapped
            external = command.external_port
            await self.io.run_blocking(lambda: upnp.delete(external))
            return UpnpMapped("", external, 0)
        except UpnpError as error:
            return UpnpFailed(str(error))

    async def stop(self) -> None:
        """Delete the mapping: send, and wait for the answer or the mapper's timeout."""
        mapper = self.mapper
        mapper.stop(trio.current_time())
        while not mapper.stopped:
            for data in mapper.datagrams_to_send():
                if self.sock is not None:
                    with contextlib.suppress(OSError):
                        await self.sock.send(data)
            commands = mapper.upnp_commands()
            for command in commands:
                mapper.upnp_result(command.command, await self._run_upnp(command),
                                   trio.current_time())
            while (event := mapper.next_event()) is not None:
                self._report(event)
            if mapper.stopped:
                break
            deadline = mapper.get_timer()
            with trio.move_on_at(deadline if deadline is not None else float("inf")):
                if self.sock is None:
                    await trio.sleep_forever()
                try:
                    data = await self.sock.recv(2048)
                except OSError:
                    continue
                mapper.receive_datagram(data, trio.current_time())
                continue
            mapper.handle_timer(trio.current_time())
        while (event := mapper.next_event()) is not None:
            self._report(event)

