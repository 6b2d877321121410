"""PCP (RFC 6887) MAP messages: stateless encoders and untrusted decoders.

All integers big-endian; addresses are 16 bytes, IPv4 as IPv4-mapped IPv6
(``::ffff:a.b.c.d``; the IPv4 "no preference" address is ``::ffff:0.0.0.0``).

Request (60 bytes for MAP without options), to the gateway's port 5351::

    0  version (2)   1  R=0 | opcode (1 = MAP)   2  reserved (2, zero)
    4  requested lifetime (4)                    8  client IP address (16)
   24  nonce (12)   36  protocol (17 = UDP)   37  reserved (3)
   40  internal port (2)   42  suggested external port (2)
   44  suggested external IP address (16)

Response (60 bytes, maybe followed by options)::

    0  version (2)   1  R=1 | opcode   2  reserved (1)   3  result code (1)
    4  lifetime (4)   8  epoch time (4)   12  reserved (12)
   24  nonce   36  protocol   40  internal port   42  assigned external port
   44  assigned external IP address

A lifetime of 0 in a request deletes the mapping. A NAT-PMP-only gateway answers
a PCP request with a NAT-PMP message (version 0) whose result is 1, "unsupported
version": :func:`decode_response_untrusted` reports it as ``UNSUPP_VERSION``.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from enum import IntEnum

from p2pd.portmap.errors import BadPortMapPacket

VERSION = 2
PORT = 5351
MAX_SIZE = 1100
RESPONSE_BIT = 0x80
UDP = 17
NONCE_SIZE = 12


class Opcode(IntEnum):
    ANNOUNCE = 0
    MAP = 1
    PEER = 2


class Result(IntEnum):
    SUCCESS = 0
    UNSUPP_VERSION = 1
    NOT_AUTHORIZED = 2
    MALFORMED_REQUEST = 3
    UNSUPP_OPCODE = 4
    UNSUPP_OPTION = 5
    MALFORMED_OPTION = 6
    NETWORK_FAILURE = 7
    NO_RESOURCES = 8
    UNSUPP_PROTOCOL = 9
    USER_EX_QUOTA = 10
    CANNOT_PROVIDE_EXTERNAL = 11
    ADDRESS_MISMATCH = 12
    EXCESSIVE_REMOTE_PEERS = 13


@dataclass(frozen=True, slots=True)
class MapRequest:
    lifetime: int
    client_ip: str
    nonce: bytes
    internal_port: int
    external_port: int = 0  # suggested; 0 for no preference
    external_ip: str = "0.0.0.0"  # suggested; 0.0.0.0 for no preference (IPv4)
    protocol: int = UDP


@dataclass(frozen=True, slots=True)
class MapResponse:
    result: int
    lifetime: int
    epoch: int
    nonce: bytes
    protocol: int
    internal_port: int
    external_port: int
    external_ip: str


_HEADER = struct.Struct("!BBHI16s")  # version, opcode, reserved, lifetime, client IP
_RESPONSE_HEADER = struct.Struct("!BBBBII12x")  # version, opcode, reserved, result, ...
_MAP = struct.Struct("!12sB3xHH16s")
_NATPMP_HEADER = struct.Struct("!BBH")  # a NAT-PMP gateway's answer: version 0, op, result


def _address(text: str) -> bytes:
    address = ipaddress.ip_address(text)
    if isinstance(address, ipaddress.IPv4Address):
        address = ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + address.packed)
    return address.packed


def _text(raw: bytes) -> str:
    address = ipaddress.IPv6Address(raw)
    return str(address.ipv4_mapped or address)


def encode_map_request(request: MapRequest) -> bytes:
    if len(request.nonce) != NONCE_SIZE:
        raise ValueError(f"a PCP nonce is {NONCE_SIZE} bytes, not {len(request.nonce)}")
    return _HEADER.pack(VERSION, Opcode.MAP, 0, request.lifetime,
                        _address(request.client_ip)) + _MAP.pack(
        request.nonce, request.protocol, request.internal_port, request.external_port,
        _address(request.external_ip))


def encode_map_response(response: MapResponse) -> bytes:
    """A gateway's answer (tests play the gateway with it)."""
    return _RESPONSE_HEADER.pack(VERSION, RESPONSE_BIT | Opcode.MAP, 0, response.result,
                                 response.lifetime, response.epoch) + _MAP.pack(
        response.nonce, response.protocol, response.internal_port, response.external_port,
        _address(response.external_ip))


def decode_response_untrusted(data: bytes) -> MapResponse:
    """A datagram from the gateway's port 5351 answering a MAP request; raises
    :class:`BadPortMapPacket` for anything else (an ANNOUNCE, a PEER response, junk)."""
    if len(data) >= _NATPMP_HEADER.size and data[0] == 0:
        _, opcode, result = _NATPMP_HEADER.unpack_from(data)
        if opcode >= 128 and result == Result.UNSUPP_VERSION:
            return MapResponse(Result.UNSUPP_VERSION, 0, 0, b"", 0, 0, 0, "0.0.0.0")
        raise BadPortMapPacket(f"NAT-PMP message (opcode {opcode}, result {result})")
    if len(data) < _RESPONSE_HEADER.size + _MAP.size or len(data) > MAX_SIZE or len(data) % 4:
        raise BadPortMapPacket(f"PCP MAP response of {len(data)} bytes")
    version, opcode, _, result, lifetime, epoch = _RESPONSE_HEADER.unpack_from(data)
    if version != VERSION:
        raise BadPortMapPacket(f"PCP version {version}")
    if opcode != RESPONSE_BIT | Opcode.MAP:
        raise BadPortMapPacket(f"PCP opcode {opcode:#x}: not a MAP response")
    nonce, protocol, internal, external, address = _MAP.unpack_from(data,
                                                                    _RESPONSE_HEADER.size)
    return MapResponse(result, lifetime, epoch, nonce, protocol, internal, external,
                       _text(address))


def decode_map_request_untrusted(data: bytes) -> MapRequest:
    """A client's MAP request (tests play the gateway with it); raises
    :class:`BadPortMapPacket`."""
    if len(data) < _HEADER.size + _MAP.size or len(data) > MAX_SIZE or len(data) % 4:
        raise BadPortMapPacket(f"PCP request of {len(data)} bytes")
    version, opcode, _, lifetime, client = _HEADER.unpack_from(data)
    if version != VERSION or opcode != Opcode.MAP:
        raise BadPortMapPacket(f"PCP request version {version} opcode {opcode:#x}")
    nonce, protocol, internal, external, address = _MAP.unpack_from(data, _HEADER.size)
    return MapRequest(lifetime, _text(client), nonce, internal, external, _text(address),
                      protocol)
