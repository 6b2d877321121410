"""The coordinator server: trio tasks around the sans-IO coordinator.

One UDP socket; a drain loop that feeds every datagram to
:class:`~p2pd.coordinator.core.Coordinator`, sends what it produced and logs
what the operator should see; a timer loop; the stop signals. Keys come from
the files the configuration names (created on first start, mode 0600).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from p2pd import __version__
from p2pd.config import CoordinatorConfig
from p2pd.coordinator.core import (
    AdmissionRefused,
    Coordinator,
    CoordinatorSettings,
    DaemonLeft,
    DaemonRegistered,
    ReportReceived,
)
from p2pd.coordinator.credentials import load_or_create_signing_key, public_key_bytes
from p2pd.coordinator.mesh_view import mesh_view
from p2pd.crypto.identity import load_or_create_identity
from p2pd.io import sdnotify
from p2pd.io.metrics_server import serve_metrics
from p2pd.io.shell import Shell
from p2pd.io.udp import UdpSocket
from p2pd.logs import flush_logging, get_logger
from p2pd.metrics import CoordinatorCollector, registry_for
from p2pd.session.config import SessionConfig

log = get_logger("p2pd.coordinator")
UDP_RECEIVE_BUFFER = 4 << 20  # many daemons: absorb bursts
REFUSAL_LOG_INTERVAL = 10.0  # seconds between summaries of refused handshakes


class CoordinatorServer(Shell):
    def __init__(self, coordinator: Coordinator, udp: UdpSocket) -> None:
        super().__init__(coordinator, udp, log)
        self.coordinator = coordinator
        self._refusals_logged = 0.0

    def pump(self) -> None:
        now = trio.current_time()
        for data, address in self.coordinator.datagrams_to_send(now):
            self.udp.send(data, address)
        while (event := self.coordinator.next_event()) is not None:
            if isinstance(event, DaemonRegistered):
                log.info("daemon_registered", daemon=event.daemon_id, player=event.player_id,
                         key=event.key.hex()[:16], address=f"{event.address[0]}:{event.address[1]}")
            elif isinstance(event, DaemonLeft):
                log.info("daemon_left", daemon=event.daemon_id, player=event.player_id,
                         reason=event.reason)
            elif isinstance(event, ReportReceived):
                report = event.report
                log.warning("daemon_report", daemon=event.daemon_id, player=event.player_id,
                            severity=report.severity, code=report.code, detail=report.detail,
                            peer=report.peer.hex()[:16] if report.peer else None)
            elif isinstance(event, AdmissionRefused) and now - self._refusals_logged >= \
                    REFUSAL_LOG_INTERVAL:  # counted always, logged as a summary at most this often
                self._refusals_logged = now
                log.warning("admissions_refused", counts=dict(self.coordinator.refused))
        self.rearm()


STATUS_INTERVAL = 5.0  # seconds between rewrites of the operator's status file
RECENT_REPORTS = 50  # reports from daemons shown there, newest last


def status_snapshot(coordinator: Coordinator, info: dict[str, str]) -> dict[str, Any]:
    """The operator's view: counts, relayed traffic, and the latest reports."""
    reports = list(coordinator.reports)[-RECENT_REPORTS:]
    return {
        "time": round(time.time(), 3),
        **info,
        **coordinator.status(),
        "recent_reports": [
            {"daemon": r.daemon_id, "player": r.player_id, "severity": r.report.severity,
             "code": r.report.code, "detail": r.report.detail,
             "peer": r.report.peer.hex() if r.report.peer else None}
            for r in reports],
        "mesh": mesh_view(coordinator),
    }


async def _write_status(coordinator: Coordinator, info: dict[str, str], path: Path) -> None:
    """Rewrite the status file every STATUS_INTERVAL (atomically: a reader never
    sees half of it); a failure to write is logged, once, and does not stop it."""
    failed = False
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".tmp")
            partial.write_text(json.dumps(status_snapshot(coordinator, info)) + "\n",
                               encoding="utf-8")
            os.replace(partial, path)
            failed = False
        except OSError as error:
            if not failed:
                log.error("status_file_unwritable", file=str(path), error=str(error))
            failed = True
        await trio.sleep(STATUS_INTERVAL)


def build_coordinator(config: CoordinatorConfig, epoch: float) -> Coordinator:
    server = config.server
    identity = load_or_create_identity(server.key_file)
    signing = load_or_create_signing_key(server.signing_key_file)
    issuer = load_or_create_signing_key(server.issuer_key_file)
    issuers = [issuer.public_key()] + [Ed25519PublicKey.from_public_bytes(k)
                                       for k in server.trusted_issuers]
    settings = CoordinatorSettings(view_range=server.view_range,
                                   certificate_lifetime=server.certificate_lifetime,
                                   max_daemons=server.max_daemons,
                                   relay_rate=server.relay_rate * 1024,
                                   relay_burst=max(16 * 1024.0, server.relay_rate * 256))
    return Coordinator(identity, signing, issuers, settings,
                       session_config=coordinator_session_config(server.max_daemons), epoch=epoch)


def coordinator_session_config(max_daemons: int) -> SessionConfig:
    """Sessions for many daemons: one per daemon (and room for handshakes in
    flight), and enough handshakes per second before cookies for everyone's
    rekeys (at level high every 120 s) plus arrivals. A daemon pings every 5 s:
    one silent for 20 s is gone (its peers stop being offered it), and its
    channels are not kept (a daemon that comes back registers afresh)."""
    return SessionConfig(
        max_sessions=max_daemons + 64,
        handshake_load_limit=max(64, max_daemons // 30),
        inactive_timeout=20.0,
        resume_window=0.0,
    )


async def _open_metrics(nursery: trio.Nursery, config: CoordinatorConfig,
                        coordinator: Coordinator) -> str:
    """The Prometheus endpoint ([metrics]); its address, or why there is none."""
    metrics = config.metrics
    registry = registry_for(CoordinatorCollector(coordinator.status))
    try:
        address: str = await nursery.start(serve_metrics, registry, metrics.host, metrics.port)
    except OSError as error:
        log.error("metrics_unavailable", host=metrics.host, port=metrics.port,
                  error=str(error.strerror or error))
        return f"unavailable: {error.strerror or error}"
    return address


async def run_coordinator(config: CoordinatorConfig, info_file: Path | None = None) -> int:
    """Run until SIGINT or SIGTERM. ``info_file``: where to write a JSON line with
    the UDP address and public keys once ready (for scripts and tests)."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        return await _run(config, signals, info_file)


async def _run(config: CoordinatorConfig, signals: AsyncIterator[int],
               info_file: Path | None) -> int:
    server = config.server
    coordinator = build_coordinator(config, time.time() - trio.current_time())
    udp = UdpSocket.bind_in_range(server.listen_host, server.listen_port, server.listen_port,
                                  UDP_RECEIVE_BUFFER)
    host, port = udp.address
    info = {
        "version": __version__,
        "udp": f"{host}:{port}",
        "public_key": coordinator.public_key.hex(),
        "signing_key": coordinator.signing_public_key.hex(),
        "issuer_key": public_key_bytes(
            load_or_create_signing_key(server.issuer_key_file)).hex(),
    }
    log.info("coordinator_starting", **info, config=str(config.source))
    runner = CoordinatorServer(coordinator, udp)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(runner.udp_loop)
            nursery.start_soon(runner.timer_loop)
            nursery.start_soon(_write_status, coordinator, info, server.status_file)
            if config.metrics.enabled:
                info["metrics"] = await _open_metrics(nursery, config, coordinator)
            if info_file is not None:
                info_file.write_text(json.dumps(info) + "\n")
            log.info("coordinator_ready", udp=info["udp"])
            sdnotify.ready(f"UDP {info['udp']}")
            async for signum in signals:
                log.info("signal_received", signal=signal.Signals(signum).name)
                break
            sdnotify.stopping()
            nursery.cancel_scope.cancel()
    finally:
        udp.close()
        log.info("coordinator_stopped", status=coordinator.status())
        flush_logging()
    return 0
