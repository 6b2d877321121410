"""What the port mapper reports: the public API of this layer."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Protocol(StrEnum):
    PCP = "pcp"
    NATPMP = "natpmp"
    UPNP = "upnp"


class MapperState(StrEnum):
    REQUESTING = "requesting"  # asking the gateway with ``protocol`` (first time or renewal)
    MAPPED = "mapped"
    FAILED = "failed"  # every protocol failed: waiting for the retry time
    STOPPING = "stopping"  # deleting the mapping
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class Mapping:
    """A port the gateway forwards to the daemon: a 'port-mapped' candidate."""

    protocol: Protocol
    internal_port: int
    external_ip: str
    external_port: int
    lifetime: float  # seconds granted
    obtained: float  # the ``now`` of the grant or the last renewal

    @property
    def expires(self) -> float:
        return self.obtained + self.lifetime

    @property
    def external(self) -> tuple[str, int]:
        return (self.external_ip, self.external_port)


@dataclass(frozen=True, slots=True)
class MappingChanged:
    """The mapping appeared, moved to another external address, or was lost
    (``mapping`` None); ``reason`` says why in a word or two."""

    mapping: Mapping | None
    reason: str


@dataclass(frozen=True, slots=True)
class PortMapStatus:
    state: MapperState
    protocol: Protocol | None  # in use, or being tried
    mapping: Mapping | None
    last_error: str | None
    renewals: int

    def as_dict(self, now: float) -> dict[str, Any]:
        """For ``status`` and ``p2pctl``: seconds relative to ``now``."""
        mapping = self.mapping
        return {
            "state": self.state.value,
            "protocol": None if self.protocol is None else self.protocol.value,
            "external": None if mapping is None
            else f"{mapping.external_ip}:{mapping.external_port}",
            "internal_port": None if mapping is None else mapping.internal_port,
            "lifetime_s": None if mapping is None else mapping.lifetime,
            "expires_in_s": None if mapping is None else round(mapping.expires - now, 1),
            "renewals": self.renewals,
            "last_error": self.last_error,
        }
