"""PCP (RFC 6887) and NAT-PMP (RFC 6886) messages, byte by byte, and the one error
type their parsers of hostile bytes may raise."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pd.portmap import natpmp, pcp
from p2pd.portmap.errors import BadPortMapPacket

NONCE = bytes(range(1, 13))


def test_natpmp_requests_have_the_rfc_layout() -> None:
    assert natpmp.encode_external_address_request() == b"\x00\x00"
    request = natpmp.MapRequest(natpmp.Opcode.MAP_UDP, 7000, 7001, 7200)
    # version 0, opcode 1 (UDP), reserved, internal 7000, suggested 7001, lifetime 7200
    assert natpmp.encode_map_request(request) == bytes.fromhex("0001 0000 1b58 1b59 00001c20")
    assert natpmp.decode_request_untrusted(natpmp.encode_map_request(request)) == request
    delete = natpmp.MapRequest(natpmp.Opcode.MAP_UDP, 7000, 0, 0)
    assert natpmp.encode_map_request(delete) == bytes.fromhex("0001 0000 1b58 0000 00000000")


def test_natpmp_responses_decode() -> None:
    # opcode 128, result 0, epoch 100, 203.0.113.2
    external = bytes.fromhex("0080 0000 00000064 cb007102")
    assert natpmp.decode_response_untrusted(external) == natpmp.ExternalAddressResponse(
        0, 100, "203.0.113.2")
    # opcode 129, result 0, epoch 100, internal 7000, external 7001, lifetime 3600
    mapped = bytes.fromhex("0081 0000 00000064 1b58 1b59 00000e10")
    response = natpmp.MapResponse(natpmp.Opcode.MAP_UDP, 0, 100, 7000, 7001, 3600)
    assert natpmp.decode_response_untrusted(mapped) == response
    assert natpmp.encode_response(response) == mapped
    # an error may come with the 8-byte header only
    refused = bytes.fromhex("0081 0002 00000064")
    assert natpmp.decode_response_untrusted(refused) == natpmp.MapResponse(
        natpmp.Opcode.MAP_UDP, natpmp.Result.NOT_AUTHORIZED, 100, 0, 0, 0)


@pytest.mark.parametrize("hexdata", [
    "",
    "0080 0000 000000",  # short
    "0080 0000 00000064",  # success without the address
    "0080 0000 00000064 cb007102 00",  # a byte too many
    "0081 0000 00000064 1b58 1b59",  # short mapping
    "0001 0000 00000064 1b58 1b59 00000e10",  # a request, not a response
    "0083 0000 00000064 1b58 1b59 00000e10",  # unknown opcode
    "0181 0000 00000064 1b58 1b59 00000e10",  # version 1
    "0281 0000 00000064 1b58 1b59 00000e10",  # PCP's version
])
def test_natpmp_refuses_malformed_responses(hexdata: str) -> None:
    with pytest.raises(BadPortMapPacket):
        natpmp.decode_response_untrusted(bytes.fromhex(hexdata))


def test_pcp_map_request_has_the_rfc_layout() -> None:
    request = pcp.MapRequest(lifetime=7200, client_ip="10.1.0.2", nonce=NONCE,
                             internal_port=7000, external_port=7000)
    data = pcp.encode_map_request(request)
    assert data == bytes.fromhex(
        "02 01 0000 00001c20"                       # version 2, MAP, reserved, lifetime
        "00000000 00000000 0000ffff 0a010002"       # client ::ffff:10.1.0.2
        "0102030405060708090a0b0c"                  # nonce
        "11 000000 1b58 1b58"                       # UDP, reserved, internal, suggested
        "00000000 00000000 0000ffff 00000000")      # no preference: ::ffff:0.0.0.0
    assert len(data) == 60
    assert pcp.decode_map_request_untrusted(data) == request
    with pytest.raises(ValueError, match="12 bytes"):
        pcp.encode_map_request(pcp.MapRequest(1, "10.1.0.2", b"short", 7000))


RESPONSE = bytes.fromhex(
    "02 81 00 00 00000258 00005306"                 # R | MAP, result 0, lifetime 600, epoch
    "000000000000000000000000"                      # reserved
    "0102030405060708090a0b0c"                      # nonce
    "11 000000 1b58 1b59"                           # UDP, internal 7000, assigned 7001
    "00000000 00000000 0000ffff cb007102")          # 203.0.113.2


def test_pcp_map_response_decodes() -> None:
    response = pcp.decode_response_untrusted(RESPONSE)
    assert response == pcp.MapResponse(0, 600, 0x5306, NONCE, 17, 7000, 7001, "203.0.113.2")
    assert pcp.encode_map_response(response) == RESPONSE
    # options after the MAP payload are allowed (and skipped)
    assert pcp.decode_response_untrusted(RESPONSE + bytes.fromhex("12000000")) == response


def test_a_natpmp_gateway_refusing_pcp_reads_as_unsupported_version() -> None:
    # RFC 6887 9: a NAT-PMP server answers version 2 with its own UNSUPP_VERSION
    answer = pcp.decode_response_untrusted(bytes.fromhex("0081 0001 00000064"))
    assert answer.result == pcp.Result.UNSUPP_VERSION
    assert answer.nonce == b""


@pytest.mark.parametrize("data", [
    b"",
    RESPONSE[:59],  # short
    RESPONSE + b"\0",  # not a multiple of 4
    RESPONSE + bytes(1100),  # over 1100 bytes
    bytes([1]) + RESPONSE[1:],  # version 1
    RESPONSE[:1] + bytes([0x01]) + RESPONSE[2:],  # a request (R bit clear)
    RESPONSE[:1] + bytes([0x82]) + RESPONSE[2:],  # a PEER response
    RESPONSE[:1] + bytes([0x80]) + RESPONSE[2:],  # an ANNOUNCE
    bytes.fromhex("0081 0000 00000064 1b58 1b59 00000e10"),  # a NAT-PMP success
])
def test_pcp_refuses_what_is_not_a_map_response(data: bytes) -> None:
    with pytest.raises(BadPortMapPacket):
        pcp.decode_response_untrusted(data)


@given(st.binary(max_size=1200))
def test_hostile_bytes_raise_only_bad_portmap_packet(data: bytes) -> None:
    for parse in (pcp.decode_response_untrusted, natpmp.decode_response_untrusted):
        with contextlib.suppress(BadPortMapPacket):
            parse(data)


@given(st.binary(min_size=60, max_size=60))
def test_any_60_byte_map_response_shape_parses_or_is_refused(data: bytes) -> None:
    shaped = bytes([2, 0x81]) + data[2:]
    try:
        response = pcp.decode_response_untrusted(shaped)
    except BadPortMapPacket:
        return
    assert response.nonce == shaped[24:36]
