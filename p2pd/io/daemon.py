"""The p2pd daemon: trio tasks around the sans-IO node.

Tasks: the UDP drain loop, the timer loop, the IPC listeners (TCP on
127.0.0.1, a Unix socket on Linux) and the signal watcher. After any input the
daemon *pumps*: sends the node's datagrams, hands its notifications to the IPC
clients and re-arms the one timer. Without ``[coordinator] address`` it also
runs the embedded coordinator (:mod:`p2pd.io.embedded`: its own socket, drain
and timer loops) and joins the mesh through it.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack
import trio

from p2pd import __version__
from p2pd.cheat.mapgrid import MapFiles
from p2pd.config import DaemonConfig, default_runtime_dir
from p2pd.crypto.identity import load_or_create_identity
from p2pd.io import sdnotify
from p2pd.io.embedded import (
    OWN_TOKEN_LIFETIME,
    EmbeddedCoordinator,
    derived_player_id,
    open_embedded_coordinator,
)
from p2pd.io.ipc_server import ClientConnection, client_handler, handle_common_request
from p2pd.io.maps import MapLoader, directory_reader
from p2pd.io.metrics_server import serve_metrics
from p2pd.io.portmap import PortMapperHook, open_port_mapper, run_port_mapper
from p2pd.io.runtime import (
    RuntimeInfo,
    prepare_runtime_dir,
    remove_runtime_files,
    write_runtime_info,
    write_token,
)
from p2pd.io.shell import Shell
from p2pd.io.udp import UdpSocket
from p2pd.ipc.errors import IpcError
from p2pd.ipc.fields import format_address, split_address
from p2pd.ipc.framing import DEFAULT_MAX_FRAME_BYTES, encode_message
from p2pd.ipc.messages import SYNC_REQUEST_CLASSES, Connect, CoordinatorToken, GameEvent
from p2pd.logs import flush_logging, get_logger
from p2pd.metrics import DaemonCollector, registry_for
from p2pd.node import Node
from p2pd.portmap import PortMapper
from p2pd.session.events import Address

log = get_logger("p2pd.daemon")
UDP_BIND_HOST = "0.0.0.0"
UDP_RECEIVE_BUFFER = 1 << 20  # absorbs bursts while the daemon is busy elsewhere
_LINK_EVENTS = frozenset({"peer_joined", "peer_left", "link"})


class Daemon(Shell):
    def __init__(self, config: DaemonConfig, node: Node, udp: UdpSocket, token: str,
                 runtime_dir: Path, embedded: EmbeddedCoordinator | None = None,
                 embedded_error: str | None = None) -> None:
        super().__init__(node, udp, log)
        self.embedded = embedded
        self.embedded_error = embedded_error  # why the embedded coordinator could not start
        self.config = config
        self.node = node
        self.token = token
        self.runtime_dir = runtime_dir
        self.clients: set[ClientConnection] = set()
        self.started = trio.current_time()
        self.tcp_address: tuple[str, int] | None = None
        self.unix_socket: Path | None = None
        # [port_mapping] with [P2P] nat_traversal: current() is the port-mapped candidate
        self.port_mapper: PortMapper | None = None
        self.metrics_address: str | None = None  # host:port of the metrics endpoint, if on
        self.map_loader: MapLoader | None = None  # [sync] map_dir: maps read off the receive path
        if config.sync.map_dir is not None:
            self.map_loader = MapLoader(node.sync.maps,
                                        MapFiles(directory_reader(config.sync.map_dir)),
                                        self.pump, log)

    # -- the pump ----------------------------------------------------------------

    def pump(self) -> None:
        """After an input burst: send what it produced (batched per peer), notify
        clients, re-arm the timer."""
        now = trio.current_time()
        self.node.flush(now)
        for data, address in self.node.datagrams_to_send(now):
            self.udp.send(data, address)
        for data, address, ttl in self.node.low_ttl_datagrams():
            self.udp.send_with_ttl(data, address, ttl)
        for message in self.node.take_notifications():
            name = message["event"]
            if name in _LINK_EVENTS:
                log.info(name, **{k: v for k, v in message.items() if k != "event"})
            if self.clients:
                frame = encode_message(message)
                for client in list(self.clients):
                    client.push_event(name, frame)
        if self.map_loader is not None:
            self.map_loader.poke()
        self.rearm()

    # -- requests from IPC clients -------------------------------------------------

    async def handle_request(self, client: ClientConnection,
                             request: object) -> dict[str, Any]:
        if isinstance(request, Connect):
            address = await resolve_udp_address(request.address)
        coordinator: Address | None = None
        if isinstance(request, CoordinatorToken) and self.node.mesh is None and (
                self.config.coordinator.address is not None):
            coordinator = await resolve_udp_address(self.config.coordinator.address)
        now = trio.current_time()
        result: dict[str, Any]
        if isinstance(request, GameEvent):
            result = self.node.send_event(request, [bytes.fromhex(k) for k in request.to], now)
        elif isinstance(request, SYNC_REQUEST_CLASSES):
            result = self.node.sync_request(request, now)
        elif isinstance(request, Connect):
            self.node.connect(address, bytes.fromhex(request.key), now)
            result = {"peer": request.key, "state": "connecting",
                      "address": format_address(address)}
        elif isinstance(request, CoordinatorToken):
            result = self.node.set_coordinator_token(bytes.fromhex(request.token), coordinator,
                                                     now)
            log.info("coordinator_token_received", state=result["state"])
        else:
            result = handle_common_request(self, client, request, now)
        return result  # the client connection pumps after its burst of requests

    def hello_result(self) -> dict[str, Any]:
        return {"version": __version__, "public_key": self.node.public_key.hex(),
                "p2p_enabled": self.node.enabled, "udp_port": self.udp.address[1]}

    def status(self) -> dict[str, Any]:
        now = trio.current_time()
        status = self.node.status(now)
        status.update({
            "version": __version__,
            "pid": os.getpid(),
            "uptime_s": round(now - self.started, 3),
            "config": str(self.config.source),
            "ipc_clients": len(self.clients),
            "embedded_coordinator": self.embedded_status(),
            "port_mapping": None if self.port_mapper is None
            else self.port_mapper.status().as_dict(now),
            "metrics_address": self.metrics_address,
        })
        return status

    def embedded_status(self) -> dict[str, Any] | None:
        if self.embedded is not None:
            return self.embedded.status()
        if self.embedded_error is not None:
            return {"error": self.embedded_error}
        return None

    def stats(self, history: int = 0) -> dict[str, Any]:
        stats = self.node.stats(trio.current_time(), history)
        stats["ipc"] = dict(self.counters) | {"clients": len(self.clients),
                                                "send_drops_udp": self.udp.send_drops}
        stats["errors"]["internal"] = self.counters["internal_errors"]
        stats["metrics_address"] = self.metrics_address
        # the reply must fit one frame: the oldest seconds go first
        samples = stats["history"]
        limit = min(self.config.ipc.max_frame_bytes, DEFAULT_MAX_FRAME_BYTES) - 256
        while samples and len(msgpack.packb(stats, use_bin_type=True)) > limit:
            del samples[:max(1, len(samples) // 8)]
        return stats

    async def stats_loop(self) -> None:
        """On every second: a sample for the statistics' history (and the
        daemon's own errors to the coordinator: ``Node.record_second``)."""
        while True:
            await trio.sleep_until(math.floor(trio.current_time()) + 1)
            self.node.record_second(trio.current_time(), self.counters["internal_errors"])
            self.pump()  # a report may wait to go


async def run_daemon(config: DaemonConfig) -> int:
    """Run until SIGINT or SIGTERM; returns the exit status.

    The stop signals are caught before anything is created, so that a signal
    at any moment, a SIGTERM right after READY included, stops gracefully.
    """
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        return await _run(config, signals)


async def _run(config: DaemonConfig, signals: AsyncIterator[int]) -> int:
    p2p, ipc = config.p2p, config.ipc
    log.debug("configuration", p2p=repr(p2p), ipc=repr(ipc), log=repr(config.log))
    identity = load_or_create_identity(config.identity.key_file)
    epoch = time.time() - trio.current_time()
    embedded: EmbeddedCoordinator | None = None
    embedded_error: str | None = None
    if config.coordinator.runs_embedded and p2p.enabled:
        try:
            embedded = open_embedded_coordinator(config, epoch)
        except OSError as error:  # its port taken: the daemon goes on without a mesh
            embedded_error = (f"cannot listen on {config.coordinator.embedded_host}:"
                              f"{config.coordinator.embedded_port}: {error.strerror or error}")
            log.error("embedded_coordinator_failed", error=embedded_error)
            print(f"p2pd: embedded coordinator: {embedded_error} (set [coordinator] "
                  "embedded_port, or address, or embedded = false)", file=sys.stderr)
        else:
            config = embedded.pin(config)
    node = Node(config, identity, epoch=epoch)
    udp = UdpSocket.bind_in_range(UDP_BIND_HOST, *p2p.port_range, UDP_RECEIVE_BUFFER)
    node.udp_address = udp.address
    runtime_dir = ipc.runtime_dir or default_runtime_dir()
    prepare_runtime_dir(runtime_dir)
    token = write_token(runtime_dir)
    daemon = Daemon(config, node, udp, token, runtime_dir, embedded, embedded_error)
    log.info("daemon_starting", version=__version__, udp_port=udp.address[1],
             public_key=identity.public_key.hex(), p2p_enabled=p2p.enabled,
             config=str(config.source))
    try:
        async with trio.open_nursery() as nursery:
            await _open_tcp(nursery, daemon)
            if config.metrics.enabled:
                await _open_metrics(nursery, daemon)
            if hasattr(socket, "AF_UNIX") and sys.platform != "win32":
                daemon.unix_socket = await _open_unix(nursery, daemon, runtime_dir)
            assert daemon.tcp_address is not None
            info = RuntimeInfo(
                pid=os.getpid(), public_key=identity.public_key.hex(), udp_port=udp.address[1],
                tcp_host=daemon.tcp_address[0], tcp_port=daemon.tcp_address[1],
                unix_socket=str(daemon.unix_socket) if daemon.unix_socket else None,
                token_file=str(runtime_dir / "ipc.token"), p2p_enabled=p2p.enabled,
            )
            write_runtime_info(runtime_dir, info)
            nursery.start_soon(daemon.udp_loop)
            nursery.start_soon(daemon.timer_loop)
            if daemon.map_loader is not None:
                nursery.start_soon(daemon.map_loader.run)
            if p2p.enabled and p2p.nat_traversal and config.port_mapping.enabled:
                daemon.port_mapper, gateway, gateway_socket = open_port_mapper(
                    config.port_mapping, udp.address[1], trio.current_time())
                # cancelled with the nursery, it deletes the mapping (2 s at most); a
                # change pumps the node: a new 'mapped' candidate, discovery run again
                nursery.start_soon(run_port_mapper, daemon.port_mapper, gateway, gateway_socket,
                                   lambda _change: daemon.pump())
            await _start_nat(daemon)
            nursery.start_soon(daemon.stats_loop)
            if embedded is not None:
                nursery.start_soon(embedded.server.udp_loop)
                nursery.start_soon(embedded.server.timer_loop)
                _start_embedded_mesh(daemon, embedded)
                nursery.start_soon(_renew_embedded_token, daemon, embedded)
            elif config.coordinator.address is not None:
                await _start_mesh(daemon)
                if config.coordinator.token_file is not None:
                    nursery.start_soon(_watch_token_file, daemon, config.coordinator.token_file)
            log.info("daemon_ready", udp_port=udp.address[1],
                     tcp=f"{info.tcp_host}:{info.tcp_port}", unix_socket=info.unix_socket)
            sdnotify.ready(f"UDP port {udp.address[1]}, IPC {info.tcp_host}:{info.tcp_port}")
            await _wait_for_stop_signal(signals)
            log.info("daemon_stopping")
            sdnotify.stopping()
            node.shutdown(trio.current_time())
            daemon.pump()  # DISCONNECT to every peer
            nursery.cancel_scope.cancel()
    finally:
        remove_runtime_files(runtime_dir, daemon.unix_socket)
        udp.close()
        if embedded is not None:
            embedded.server.udp.close()
        log.info("daemon_stopped")
        flush_logging()
    return 0


async def _open_metrics(nursery: trio.Nursery, daemon: Daemon) -> None:
    """The Prometheus endpoint ([metrics]); a port taken is logged, not fatal."""
    metrics = daemon.config.metrics
    registry = registry_for(DaemonCollector(daemon.stats))
    try:
        daemon.metrics_address = await nursery.start(serve_metrics, registry, metrics.host,
                                                     metrics.port)
    except OSError as error:
        log.error("metrics_unavailable", host=metrics.host, port=metrics.port,
                  error=str(error.strerror or error))


async def _start_nat(daemon: Daemon) -> None:
    """Resolve the [nat] servers and start NAT traversal ([P2P] nat_traversal): STUN,
    behaviour discovery, the TURN allocation, candidates. A server that does not
    resolve is logged and left out."""
    node, config = daemon.node, daemon.config
    if not config.p2p.nat_traversal or not node.enabled:
        return
    stun: list[Address] = []
    for text in config.nat.stun_servers:
        try:
            stun.append(await resolve_udp_address(text))
        except IpcError as error:
            log.error("stun_server_unresolved", address=text, error=error.message)
    turn: Address | None = None
    if config.nat.turn_server is not None:
        try:
            turn = await resolve_udp_address(config.nat.turn_server)
        except IpcError as error:
            log.error("turn_server_unresolved", address=config.nat.turn_server,
                      error=error.message)
    hosts: list[Address] = []
    port = daemon.udp.address[1]
    for target in [*stun, *([turn] if turn else []), ("192.0.2.1", 9)]:
        local = daemon.udp.local_address_towards(target)
        if local is not None and local != "0.0.0.0" and (local, port) not in hosts:
            hosts.append((local, port))
            break
    # the mapping in force is the NAT agent's 'mapped' candidate
    hook = (PortMapperHook(daemon.port_mapper, trio.current_time)
            if daemon.port_mapper is not None else None)
    node.start_nat(stun, turn, hosts, trio.current_time(), port_mapper=hook)
    log.info("nat_started", stun=[format_address(a) for a in stun],
             turn=format_address(turn) if turn else None,
             host=[format_address(a) for a in hosts])
    daemon.pump()


async def _start_mesh(daemon: Daemon) -> None:
    """Register with the configured coordinator; on a problem, log it and go on
    with hand-made links only. Without a token file the game brings the token
    over IPC (``coordinator_token``)."""
    coordinator = daemon.config.coordinator
    assert coordinator.address is not None
    if coordinator.token_file is None:
        log.info("coordinator_waiting_for_token", address=coordinator.address)
        return
    token = _read_token(coordinator.token_file)
    if token is None:
        return
    try:
        address = await resolve_udp_address(coordinator.address)
    except IpcError as error:
        log.error("coordinator_unresolved", address=coordinator.address, error=error.message)
        return
    daemon.node.start_mesh(address, token, trio.current_time())
    log.info("coordinator_registering", address=f"{address[0]}:{address[1]}")
    daemon.pump()


def _read_token(path: Path) -> bytes | None:
    try:
        return bytes.fromhex(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError) as error:
        log.error("coordinator_token_unreadable", file=str(path), error=str(error))
        return None


async def _watch_token_file(daemon: Daemon, path: Path, interval: float = 5.0) -> None:
    """Hand a token file the game rewrote (a fresh token) to the mesh."""
    def stamp() -> tuple[int, int] | None:
        try:
            info = path.stat()
        except OSError:
            return None
        return (info.st_mtime_ns, info.st_size)

    seen = stamp()
    while True:
        await trio.sleep(interval)
        now_stamp = stamp()
        if now_stamp is None or now_stamp == seen:
            continue
        seen = now_stamp
        token = _read_token(path)
        if token is None:
            continue
        address = None
        coordinator = daemon.config.coordinator.address
        if daemon.node.mesh is None and coordinator is not None:  # unreadable at start
            try:
                address = await resolve_udp_address(coordinator)
            except IpcError as error:
                log.error("coordinator_unresolved", address=coordinator, error=error.message)
                continue
        daemon.node.set_coordinator_token(token, address, trio.current_time())
        log.info("coordinator_token_read", file=str(path))
        daemon.pump()


async def _renew_embedded_token(daemon: Daemon, embedded: EmbeddedCoordinator) -> None:
    """A fresh token for the own daemon at half its lifetime, so that a
    re-registration or rekey never presents an expired one."""
    while True:
        await trio.sleep(OWN_TOKEN_LIFETIME / 2)
        mesh = daemon.node.mesh
        if mesh is not None:
            mesh.set_token(embedded.mint_own_token(daemon.node.public_key,
                                                   _own_player_id(daemon)),
                           trio.current_time())
            daemon.pump()


def _own_player_id(daemon: Daemon) -> int:
    player_id = daemon.config.coordinator.player_id
    return derived_player_id(daemon.node.public_key) if player_id is None else player_id


def _start_embedded_mesh(daemon: Daemon, embedded: EmbeddedCoordinator) -> None:
    """Register with the embedded coordinator, with a token minted here."""
    key = daemon.node.public_key
    player_id = _own_player_id(daemon)
    token = embedded.mint_own_token(key, player_id)
    address = embedded.own_address()
    daemon.node.start_mesh(address, token, trio.current_time())
    log.info("embedded_coordinator_started", udp=format_address(embedded.address),
             public_key=embedded.public_key.hex(), issuer_key=embedded.issuer_key.hex(),
             player_id=player_id)
    daemon.pump()


async def resolve_udp_address(text: str) -> tuple[str, int]:
    """``host:port`` to an IPv4 address, resolving names without blocking the loop."""
    host, port = split_address(text)
    try:
        infos = await trio.socket.getaddrinfo(host, port, family=socket.AF_INET,
                                              type=socket.SOCK_DGRAM)
    except OSError as error:
        raise IpcError("bad_field", f"cannot resolve {host!r} to an IPv4 address "
                       f"(the UDP socket is IPv4 only): {error}", "address") from None
    return str(infos[0][4][0]), int(infos[0][4][1])


async def _open_tcp(nursery: trio.Nursery, daemon: Daemon) -> list[trio.SocketListener]:
    ipc = daemon.config.ipc
    listeners = await trio.open_tcp_listeners(ipc.tcp_port, host=ipc.tcp_host)
    host, port = listeners[0].socket.getsockname()[:2]
    daemon.tcp_address = (str(host), int(port))
    nursery.start_soon(trio.serve_listeners, client_handler(daemon, "tcp", check_uid=False),
                       listeners)
    return listeners


async def _open_unix(nursery: trio.Nursery, daemon: Daemon, runtime_dir: Path) -> Path:
    path = daemon.config.ipc.unix_socket or runtime_dir / "p2pd.sock"
    path.unlink(missing_ok=True)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(str(path))
    path.chmod(0o600)
    sock.listen(16)
    listener = trio.SocketListener(sock)
    nursery.start_soon(trio.serve_listeners, client_handler(daemon, "unix", check_uid=True),
                       [listener])
    return path


async def _wait_for_stop_signal(signals: AsyncIterator[int]) -> None:
    async for signum in signals:
        log.info("signal_received", signal=signal.Signals(signum).name)
        return
