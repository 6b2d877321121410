"""The embedded coordinator: ``p2pd run`` with no ``[coordinator] address`` (LAN play, the demo).

The daemon runs a :class:`~p2pd.io.coordinator_server.CoordinatorServer` of
its own, in the same trio nursery but on a UDP socket of its own
(``[coordinator] embedded_host:embedded_port``): a separate server role, the
same one ``p2pd coordinator`` plays. Its three keys live next to the daemon's
identity key (the state directory): ``coordinator.key`` (its X25519 identity),
``signing.key`` (Ed25519, signs certificates) and ``issuer.key`` (Ed25519,
signs connect tokens; other daemons of the LAN get theirs with ``p2pctl token
--issuer-key``). The daemon mints a connect token for itself
(``[coordinator] player_id``, else one derived from its identity key) and
registers with its coordinator like any other daemon (``Node.start_mesh``).

When ``embedded_host`` is ``0.0.0.0`` the daemon registers over loopback, so
its coordinator knows it as ``127.0.0.1``: right for daemons on this machine.
For players on other machines, set ``embedded_host`` to this machine's LAN
address, so that the address it hands out for this daemon is reachable.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time
from dataclasses import dataclass, replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from p2pd.config import (
    CoordinatorConfig,
    CoordinatorServerSettings,
    DaemonConfig,
    LogSettings,
)
from p2pd.coordinator.credentials import (
    MAX_TOKEN_LIFETIME,
    load_or_create_signing_key,
    mint_token,
    public_key_bytes,
)
from p2pd.io.coordinator_server import CoordinatorServer, build_coordinator
from p2pd.io.udp import UdpSocket
from p2pd.ipc.fields import format_address
from p2pd.session.events import Address

UDP_RECEIVE_BUFFER = 1 << 20
MAX_DAEMONS = 1000  # a LAN party, not a game server
CERTIFICATE_LIFETIME = 86400.0  # the longest a certificate may live
OWN_TOKEN_LIFETIME = float(MAX_TOKEN_LIFETIME)
OWN_ACCOUNT_ID = 0


def embedded_coordinator_config(config: DaemonConfig) -> CoordinatorConfig:
    """The coordinator's configuration for this daemon: keys in its state directory."""
    state = config.identity.key_file.parent
    coordinator = config.coordinator
    server = CoordinatorServerSettings(
        listen_host=coordinator.embedded_host,
        listen_port=coordinator.embedded_port,
        key_file=state / "coordinator.key",
        signing_key_file=state / "signing.key",
        issuer_key_file=state / "issuer.key",
        certificate_lifetime=CERTIFICATE_LIFETIME,
        max_daemons=MAX_DAEMONS,
        log_level=config.p2p.log_level,
    )
    return CoordinatorConfig(source=config.source, server=server, log=LogSettings())


def derived_player_id(identity_key: bytes) -> int:
    """A player id for a daemon that names none: 31 bits of a hash of its key
    (two daemons with the same id would push each other out of the coordinator)."""
    digest = hashlib.blake2b(b"p2pd player id\0" + identity_key, digest_size=4).digest()
    return int.from_bytes(digest, "big") >> 1


@dataclass
class EmbeddedCoordinator:
    server: CoordinatorServer
    issuer: Ed25519PrivateKey
    config: CoordinatorConfig

    @property
    def address(self) -> Address:
        """Where it listens (its bound socket)."""
        return self.server.udp.address

    @property
    def public_key(self) -> bytes:
        return self.server.coordinator.public_key

    @property
    def issuer_key(self) -> bytes:
        return public_key_bytes(self.issuer)

    def own_address(self) -> Address:
        """Where this daemon reaches it: loopback when it listens on every interface."""
        host, port = self.address
        if ipaddress.IPv4Address(host).is_unspecified:
            host = "127.0.0.1"
        return host, port

    def mint_own_token(self, daemon_key: bytes, player_id: int,
                       now: float | None = None) -> bytes:
        """A connect token for this daemon's own registration (unix time ``now``)."""
        return mint_token(self.issuer, account_id=OWN_ACCOUNT_ID, player_id=player_id,
                          daemon_key=daemon_key, lifetime=OWN_TOKEN_LIFETIME,
                          now=time.time() if now is None else now)

    def pin(self, config: DaemonConfig) -> DaemonConfig:
        """The daemon's configuration with this coordinator's key pinned, as
        ``Node.start_mesh`` reads it."""
        return replace(config, coordinator=replace(config.coordinator,
                                                   public_key=self.public_key))

    def status(self) -> dict[str, Any]:
        status = self.server.coordinator.status()
        return {
            "udp_address": format_address(self.address),
            "public_key": self.public_key.hex(),
            "issuer_key": self.issuer_key.hex(),
            "daemons": status.get("daemons", 0),
        }


def open_embedded_coordinator(config: DaemonConfig, epoch: float) -> EmbeddedCoordinator:
    """Load or create its keys and bind its socket. Raises ``OSError`` when the
    port is taken, and the key files' errors (``IdentityFileError``,
    ``SigningKeyFileError``) when a key file is refused."""
    coordinator_config = embedded_coordinator_config(config)
    server_settings = coordinator_config.server
    issuer = load_or_create_signing_key(server_settings.issuer_key_file)
    coordinator = build_coordinator(coordinator_config, epoch)
    port = server_settings.listen_port
    udp = UdpSocket.bind_in_range(server_settings.listen_host, port, port, UDP_RECEIVE_BUFFER)
    return EmbeddedCoordinator(CoordinatorServer(coordinator, udp), issuer, coordinator_config)
