"""The one error type of the port-mapping parsers."""

from __future__ import annotations


class BadPortMapPacket(Exception):
    """A datagram from the gateway's port was not a valid PCP or NAT-PMP message."""
