"""Which peers to be linked with: the proximity mesh of spec §1.2, as pure policy.

:func:`plan` takes what a daemon knows (its links, with their age and the
peer's distance; the candidates the coordinator offered) and returns what to
change. It never touches a socket, a clock or a session: the caller passes
``now`` and carries the plan out. The rules, with the settings of
:class:`MeshSettings`:

- A link is *active* (counts against ``max_peers``) or a *backup* (kept warm,
  at most ``backups`` of them, promoted when an active link goes).
- Connect to candidates inside ``connect_radius`` cells, nearest first, while
  there is room among the active links; the next nearest become backups.
- Drop a link only when its peer is beyond ``connect_radius + drop_margin``
  (hysteresis: a player walking along the edge of range does not cause
  connect/disconnect churn) and the link is older than ``min_lifetime``, or at
  once when the peer is on another map (a map change tears the old area down).
- A nearer candidate replaces the farthest active link only when it is nearer
  by more than ``drop_margin`` and that link is older than ``min_lifetime``.

Distances are in cells, Chebyshev (the game's view area is a square).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

VIEW_RANGE = 14
"""Cells each way the game shows a player (AREA_SIZE, DOMAIN.md): the square a
player sees, the default connect radius, and what a daemon may learn of."""


class Role(StrEnum):
    ACTIVE = "active"
    BACKUP = "backup"


@dataclass(frozen=True, slots=True)
class MeshSettings:
    max_peers: int = 10
    backups: int = 2
    connect_radius: int = VIEW_RANGE
    drop_margin: int = 4
    min_lifetime: float = 10.0  # seconds a link lives at least, unless its peer left the map

    def __post_init__(self) -> None:
        if self.max_peers < 1:
            raise ValueError(f"max_peers must be at least 1, got {self.max_peers}")
        if not 0 <= self.backups <= 4:
            raise ValueError(f"backups must be within 0..4, got {self.backups}")
        if self.connect_radius < 1 or self.drop_margin < 0:
            raise ValueError("connect_radius must be >= 1 and drop_margin >= 0, got "
                             f"{self.connect_radius} and {self.drop_margin}")
        if self.min_lifetime < 0:
            raise ValueError(f"min_lifetime must be >= 0, got {self.min_lifetime}")

    @property
    def drop_radius(self) -> int:
        return self.connect_radius + self.drop_margin


@dataclass(frozen=True, slots=True)
class Link:
    """A link the daemon holds (or is dialling)."""

    since: float  # when it was made
    distance: int | None  # cells to the peer; None: on another map, or unknown
    role: Role = Role.ACTIVE


@dataclass(frozen=True, slots=True)
class Plan:
    connect: tuple[bytes, ...] = ()  # new active links, nearest first
    connect_backup: tuple[bytes, ...] = ()  # new backup links
    drop: tuple[bytes, ...] = ()
    promote: tuple[bytes, ...] = ()  # backups that become active
    demote: tuple[bytes, ...] = ()  # active links that become backups

    @property
    def empty(self) -> bool:
        return not (self.connect or self.connect_backup or self.drop or self.promote
                    or self.demote)


def plan(links: Mapping[bytes, Link], candidates: Mapping[bytes, int], now: float,
         settings: MeshSettings) -> Plan:
    """What to change. ``candidates``: peer -> distance in cells, on this player's
    map (the coordinator's offer; peers already linked may be among them)."""
    drop: list[bytes] = []
    keep: dict[bytes, Link] = {}
    for peer, link in links.items():
        distance = candidates.get(peer, link.distance)
        old = now - link.since >= settings.min_lifetime
        if distance is None or (distance > settings.drop_radius and old):
            drop.append(peer)
        else:
            keep[peer] = Link(link.since, distance, link.role)

    def nearness(peer: bytes) -> tuple[int, bytes]:
        distance = keep[peer].distance
        return (distance if distance is not None else 1 << 30, peer)

    active = sorted((p for p, k in keep.items() if k.role is Role.ACTIVE), key=nearness)
    backup = sorted((p for p, k in keep.items() if k.role is Role.BACKUP), key=nearness)
    fresh = sorted(((d, p) for p, d in candidates.items()
                    if p not in keep and p not in links and d <= settings.connect_radius))
    promote: list[bytes] = []
    demote: list[bytes] = []
    connect: list[bytes] = []
    # too many active links (max_peers lowered): the farthest become backups
    while len(active) > settings.max_peers:
        demote.append(active.pop())
    # room among the active links: backups first (they are warm), then candidates
    while len(active) < settings.max_peers and (backup or fresh):
        backup_distance = nearness(backup[0])[0] if backup else 1 << 30
        if backup and (not fresh or backup_distance <= fresh[0][0]):
            peer = backup.pop(0)
            promote.append(peer)
        else:
            peer = fresh.pop(0)[1]
            connect.append(peer)
            keep[peer] = Link(now, candidates[peer])
        active.append(peer)
        active.sort(key=nearness)
    # a much nearer candidate replaces the farthest old active link
    while fresh and active:
        farthest = active[-1]
        link = keep[farthest]
        distance, peer = fresh[0]
        far = nearness(farthest)[0]
        if not (distance + settings.drop_margin < far
                and now - link.since >= settings.min_lifetime):
            break
        fresh.pop(0)
        active.pop()
        demote.append(farthest)
        backup.append(farthest)
        connect.append(peer)
        keep[peer] = Link(now, distance)
        active.append(peer)
        active.sort(key=nearness)
    # backups: the nearest of what is left, up to the allowance
    backup.sort(key=nearness)
    connect_backup: list[bytes] = []
    while len(backup) < settings.backups and fresh:
        peer = fresh.pop(0)[1]
        connect_backup.append(peer)
        keep[peer] = Link(now, candidates[peer], Role.BACKUP)
        backup.append(peer)
    while len(backup) > settings.backups:
        drop.append(backup.pop())  # the farthest spare backups go
    demote = [peer for peer in demote if peer not in drop]
    return Plan(tuple(connect), tuple(connect_backup), tuple(drop), tuple(promote),
                tuple(demote))


class Backoff:
    """Exponential backoff with full jitter for reconnection attempts: the n-th
    delay is uniform in [base/2, base] where base = initial * 2^n, capped at
    ``maximum``. Seeded by the caller's ``random.Random`` for tests."""

    def __init__(self, rng: random.Random, initial: float = 0.5, maximum: float = 30.0) -> None:
        if not 0 < initial <= maximum:
            raise ValueError(f"need 0 < initial <= maximum, got {initial} and {maximum}")
        self._rng = rng
        self._initial = initial
        self._maximum = maximum
        self.attempts = 0

    def next_delay(self) -> float:
        base = min(self._initial * (2 ** min(self.attempts, 32)), self._maximum)
        self.attempts += 1
        return self._rng.uniform(base / 2, base)

    def reset(self) -> None:
        self.attempts = 0


def chebyshev(a: tuple[int, int], b: tuple[int, int]) -> int:
    return max(abs(a[0] - b[0]), abs(a[1] - b[1]))


__all__ = ["Backoff", "Link", "MeshSettings", "Plan", "Role", "chebyshev", "plan"]

