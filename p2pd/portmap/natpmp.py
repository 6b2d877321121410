"""NAT-PMP (RFC 6886) messages: stateless encoders and untrusted decoders.

All integers big-endian. Requests go to the gateway's port 5351:

- external address request (2 bytes): version 0, opcode 0
- mapping request (12 bytes): version 0, opcode 1 (UDP) or 2 (TCP), reserved
  (2, zero), internal port (2), suggested external port (2), requested lifetime
  in seconds (4). Lifetime 0 with suggested port 0 deletes the mapping.

Responses (opcode + 128) carry a result code (2) and the seconds since the
gateway's epoch (4), then for opcode 128 the external IPv4 address (4: 12 bytes
in all), for 129/130 the internal port, the mapped external port and the granted
lifetime (16 bytes in all). A non-zero result may come with only the first 8 bytes.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from enum import IntEnum

from p2pd.portmap.errors import BadPortMapPacket

VERSION = 0
PORT = 5351
RESPONSE_BIT = 128


class Opcode(IntEnum):
    EXTERNAL_ADDRESS = 0
    MAP_UDP = 1
    MAP_TCP = 2


class Result(IntEnum):
    SUCCESS = 0
    UNSUPPORTED_VERSION = 1
    NOT_AUTHORIZED = 2  # e.g. the box has NAT-PMP turned off
    NETWORK_FAILURE = 3  # e.g. no DHCP lease on the WAN yet
    OUT_OF_RESOURCES = 4
    UNSUPPORTED_OPCODE = 5


@dataclass(frozen=True, slots=True)
class ExternalAddressRequest:
    pass


@dataclass(frozen=True, slots=True)
class MapRequest:
    opcode: Opcode
    internal_port: int
    external_port: int  # suggested; 0 for no preference
    lifetime: int  # seconds; 0 deletes


@dataclass(frozen=True, slots=True)
class ExternalAddressResponse:
    result: int
    epoch: int
    external_ip: str | None  # None when the result is an error without the address


@dataclass(frozen=True, slots=True)
class MapResponse:
    opcode: Opcode
    result: int
    epoch: int
    internal_port: int
    external_port: int
    lifetime: int


Response = ExternalAddressResponse | MapResponse

_HEADER = struct.Struct("!BBHI")  # version, opcode, result, epoch
_MAP_REQUEST = struct.Struct("!BBHHHI")
_MAP_TAIL = struct.Struct("!HHI")


def encode_external_address_request() -> bytes:
    return bytes((VERSION, Opcode.EXTERNAL_ADDRESS))


def encode_map_request(request: MapRequest) -> bytes:
    return _MAP_REQUEST.pack(VERSION, request.opcode, 0, request.internal_port,
                             request.external_port, request.lifetime)


def encode_response(response: Response) -> bytes:
    """A gateway's answer (tests play the gateway with it)."""
    if isinstance(response, ExternalAddressResponse):
        address = ipaddress.IPv4Address(response.external_ip or "0.0.0.0").packed
        return _HEADER.pack(VERSION, RESPONSE_BIT + Opcode.EXTERNAL_ADDRESS, response.result,
                            response.epoch) + address
    return _HEADER.pack(VERSION, RESPONSE_BIT + response.opcode, response.result,
                        response.epoch) + _MAP_TAIL.pack(response.internal_port,
                                                          response.external_port,
                                                          response.lifetime)


def decode_response_untrusted(data: bytes) -> Response:
    """A datagram from the gateway's port 5351; raises :class:`BadPortMapPacket`."""
    if len(data) < _HEADER.size:
        raise BadPortMapPacket(f"NAT-PMP response of {len(data)} bytes: expected at least 8")
    version, opcode, result, epoch = _HEADER.unpack_from(data)
    if version != VERSION:
        raise BadPortMapPacket(f"NAT-PMP version {version}")
    if opcode < RESPONSE_BIT or opcode - RESPONSE_BIT not in tuple(Opcode):
        raise BadPortMapPacket(f"NAT-PMP opcode {opcode} is not a response")
    kind = Opcode(opcode - RESPONSE_BIT)
    if kind is Opcode.EXTERNAL_ADDRESS:
        if len(data) == 12:
            address = str(ipaddress.IPv4Address(data[8:12]))
        elif len(data) == 8 and result != Result.SUCCESS:
            address = None
        else:
            raise BadPortMapPacket(f"NAT-PMP external address response of {len(data)} bytes")
        return ExternalAddressResponse(result, epoch, address)
    if len(data) == 16:
        internal, external, lifetime = _MAP_TAIL.unpack_from(data, 8)
    elif len(data) == 8 and result != Result.SUCCESS:
        internal = external = lifetime = 0
    else:
        raise BadPortMapPacket(f"NAT-PMP mapping response of {len(data)} bytes: expected 16")
    return MapResponse(kind, result, epoch, internal, external, lifetime)


def decode_request_untrusted(data: bytes) -> ExternalAddressRequest | MapRequest:
    """A client's request (tests play the gateway with it); raises :class:`BadPortMapPacket`."""
    if len(data) >= 2 and data[0] == VERSION and data[1] == Opcode.EXTERNAL_ADDRESS:
        if len(data) != 2:
            raise BadPortMapPacket(f"NAT-PMP external address request of {len(data)} bytes")
        return ExternalAddressRequest()
    if len(data) != _MAP_REQUEST.size:
        raise BadPortMapPacket(f"NAT-PMP request of {len(data)} bytes")
    version, opcode, _, internal, external, lifetime = _MAP_REQUEST.unpack(data)
    if version != VERSION or opcode not in (Opcode.MAP_UDP, Opcode.MAP_TCP):
        raise BadPortMapPacket(f"NAT-PMP request version {version} opcode {opcode}")
    return MapRequest(Opcode(opcode), internal, external, lifetime)
