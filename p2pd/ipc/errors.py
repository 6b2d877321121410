"""The one error type of the IPC layer.

Every parser of client or peer input in :mod:`p2pd.ipc` (the functions whose
names end in ``_untrusted`` and :class:`~p2pd.ipc.framing.FrameDecoder`) raises
only :class:`IpcError`. The daemon turns it into an error reply with
:func:`p2pd.ipc.outgoing.reply_error`, or closes the connection on ``bad_frame``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    """Error codes as the client sees them in ``error.code``."""

    # raised by this package's parsers
    BAD_FRAME = "bad_frame"  # framing or msgpack: the connection is closed
    BAD_REQUEST = "bad_request"  # unknown op, missing or invalid id
    BAD_FIELD = "bad_field"  # a field is missing, mistyped, out of range, too long, unknown
    TOO_LARGE = "too_large"  # an outgoing message does not fit its frame or datagram
    # for the daemon
    UNAUTHORIZED = "unauthorized"  # first message not a hello with the right token
    NOT_CONNECTED = "not_connected"  # the request needs a peer link that is not up
    P2P_DISABLED = "p2p_disabled"  # P2P is switched off in the configuration
    NO_SUCH_PEER = "no_such_peer"  # the named peer is not known
    TOO_MANY_PEERS = "too_many_peers"  # connect would exceed [P2P] max_peers
    BUSY = "busy"  # a peer's reliable send queue is full: retry later, slower
    NO_COORDINATOR = "no_coordinator"  # a coordinator request, but none is configured
    INTERNAL = "internal"  # a bug in the daemon; the request may or may not have run


ERROR_CODES = frozenset(code.value for code in ErrorCode)

# Not an IpcError: the code of the pushed ``error`` event that reports dropped events.
EVENTS_DROPPED = "events_dropped"


class IpcError(Exception):
    """Input was rejected. ``code`` is one of :data:`ERROR_CODES`, ``message``
    is for humans, ``field`` names the offending field (dotted when nested:
    ``params.speed``, ``to.3``) or is None."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(f"{code} ({field}): {message}" if field else f"{code}: {message}")
        self.code = str(code)
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, Any]:
        """The ``error`` object of a reply; ``field`` only when there is one."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            out["field"] = self.field
        return out

    def __repr__(self) -> str:
        return f"IpcError({self.code!r}, {self.message!r}, {self.field!r})"
