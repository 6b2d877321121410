"""Server verification (spec 5.2): a peer's AI interaction result is a *claim*.

Critical outcomes are never taken from a peer alone. An ``ai_interaction`` a
peer sends reaches the client marked ``"claim": "claimed"`` and is remembered
here under (peer, ai_entity_id, interaction_id). When the game server tells
the client the real outcome, the client passes it on (``verify_interaction``)
and the claim becomes ``confirmed`` (same result) or ``rejected`` (another
result: the peer lied, a failed check against it). At most ``limit`` claims
wait; the oldest is forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict
from enum import StrEnum

from p2pd.ipc.fields import ScalarMap

Result = str | ScalarMap | None
ClaimKey = tuple[bytes, int, int]  # peer, ai_entity_id, interaction_id


class ClaimState(StrEnum):
    CLAIMED = "claimed"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"
    UNKNOWN = "unknown"  # no such claim (never made, or forgotten)


class ClaimBook:
    __slots__ = ("_claims", "confirmed", "limit", "rejected")

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._claims: OrderedDict[ClaimKey, Result] = OrderedDict()
        self.confirmed = 0
        self.rejected = 0

    def __len__(self) -> int:
        return len(self._claims)

    def claim(self, peer: bytes, ai_entity_id: int, interaction_id: int, result: Result) -> None:
        key = (peer, ai_entity_id, interaction_id)
        self._claims.pop(key, None)
        self._claims[key] = result
        while len(self._claims) > self.limit:
            self._claims.popitem(last=False)

    def verify(self, peer: bytes, ai_entity_id: int, interaction_id: int,
               server_result: Result) -> ClaimState:
        key = (peer, ai_entity_id, interaction_id)
        if key not in self._claims:
            return ClaimState.UNKNOWN
        claimed = self._claims.pop(key)
        if claimed == server_result:
            self.confirmed += 1
            return ClaimState.CONFIRMED
        self.rejected += 1
        return ClaimState.REJECTED

    def forget_peer(self, peer: bytes) -> None:
        for key in [k for k in self._claims if k[0] == peer]:
            del self._claims[key]
