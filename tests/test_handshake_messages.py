"""Handshake datagram framing: payloads, MACs and cookie replies."""

from __future__ import annotations

import pytest

from p2pd.crypto.handshake import (
    MAX_CERTIFICATE,
    REQUEST_MIN_SIZE,
    CookieJar,
    build_cookie_reply,
    decode_request_payload_untrusted,
    decode_response_payload_untrusted,
    encode_request_payload,
    encode_response_payload,
    frame_request,
    mac1_key,
    open_cookie_reply_untrusted,
    unframe_untrusted,
)
from p2pd.wire.errors import BadPacket, DropReason

RESPONDER = bytes(range(32))
NOISE_1 = bytes(96 + 11)  # stands in for a Noise message 1 with an 11-byte payload


def test_payloads_round_trip() -> None:
    assert decode_request_payload_untrusted(encode_request_payload(123, b"cert")) == (
        123, b"cert", False)
    assert decode_request_payload_untrusted(encode_request_payload(5, None, fresh=True)) == (
        5, None, True)
    assert decode_response_payload_untrusted(encode_response_payload(7, b"c", fresh=True)) == (
        7, b"c", True)


def test_unknown_state_flags_are_malformed() -> None:
    payload = bytearray(encode_response_payload(7, None))
    payload[4] = 0x02
    with pytest.raises(BadPacket) as caught:
        decode_response_payload_untrusted(bytes(payload))
    assert caught.value.reason is DropReason.MALFORMED


@pytest.mark.parametrize("payload", [b"", b"\x00" * 9, encode_request_payload(1, b"abc")[:-1],
                                     encode_request_payload(1, b"abc") + b"x"])
def test_malformed_request_payloads(payload: bytes) -> None:
    with pytest.raises(BadPacket) as caught:
        decode_request_payload_untrusted(payload)
    assert caught.value.reason is DropReason.MALFORMED


def test_oversized_certificate_is_a_local_error() -> None:
    with pytest.raises(ValueError, match="certificate"):
        encode_request_payload(1, bytes(MAX_CERTIFICATE + 1))


def test_mac1_is_checked_before_anything_else() -> None:
    request = frame_request(42, NOISE_1, mac1_key(RESPONDER))
    framed = unframe_untrusted(request, mac1_key(RESPONDER), REQUEST_MIN_SIZE)
    assert framed.index == 42 and framed.noise_message == NOISE_1
    with pytest.raises(BadPacket) as caught:  # meant for another responder
        unframe_untrusted(request, mac1_key(bytes(32)), REQUEST_MIN_SIZE)
    assert caught.value.reason is DropReason.BAD_MAC
    for at in range(len(request) - 16):  # any change before mac2 breaks mac1
        tampered = bytearray(request)
        tampered[at] ^= 0x01
        with pytest.raises(BadPacket):
            unframe_untrusted(bytes(tampered), mac1_key(RESPONDER), REQUEST_MIN_SIZE)


def test_cookie_binds_address_and_survives_one_rotation() -> None:
    jar = CookieJar(b"s" * 32, lifetime=120.0)
    jar.rotate(0.0, b"unused" * 6)
    address = ("192.0.2.7", 4000)
    cookie = jar.cookie_for(address)
    request = frame_request(9, NOISE_1, mac1_key(RESPONDER), cookie)
    framed = unframe_untrusted(request, mac1_key(RESPONDER), REQUEST_MIN_SIZE)
    assert jar.accepts(framed, address)
    assert not jar.accepts(framed, ("192.0.2.7", 4001))
    jar.rotate(130.0, b"t" * 32)
    assert jar.accepts(framed, address)  # previous secret still honoured
    jar.rotate(260.0, b"u" * 32)
    assert not jar.accepts(framed, address)


def test_cookie_reply_opens_only_for_the_request_it_answers() -> None:
    mac1 = bytes(range(16))
    reply = build_cookie_reply(9, b"c" * 16, mac1, RESPONDER, bytes(12))
    assert open_cookie_reply_untrusted(reply, mac1, RESPONDER) == b"c" * 16
    with pytest.raises(BadPacket) as caught:
        open_cookie_reply_untrusted(reply, bytes(16), RESPONDER)
    assert caught.value.reason is DropReason.AUTH_FAILED
    with pytest.raises(BadPacket) as caught:
        open_cookie_reply_untrusted(reply[:-1], mac1, RESPONDER)
    assert caught.value.reason is DropReason.MALFORMED
    assert len(reply) < REQUEST_MIN_SIZE  # never an amplifier
