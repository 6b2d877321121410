"""The STUN codec against the RFC 5769 test vectors, and hostile bytes."""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pd.coordinator.messages import Addresses, encode_control
from p2pd.nat.stun import (
    Attr,
    Class,
    Method,
    StunError,
    StunMessage,
    binding_request,
    check_integrity,
    decode_error_code_untrusted,
    decode_message_untrusted,
    decode_xor_address_untrusted,
    encode_error_code,
    encode_message,
    encode_xor_address,
    long_term_key,
    looks_like_stun,
    mapped_address_untrusted,
    message_type,
    rest_credentials,
    short_term_key,
    split_type,
)

PASSWORD = "VOkJxbRl1RmTxUk/WvJxBt"
TID = bytes.fromhex("b7e7a701bc34d686fa87dfae")

# RFC 5769 2.1: a Binding request with short-term credentials
SAMPLE_REQUEST = bytes.fromhex(
    "000100582112a442b7e7a701bc34d686fa87dfae"
    "802200105354554e207465737420636c69656e74"
    "002400046e0001ff"
    "80290008932ff9b151263b36"
    "000600096576746a3a68367659202020"
    "000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2"
    "80280004e57a3bcf")
# RFC 5769 2.2: an IPv4 response
SAMPLE_V4_RESPONSE = bytes.fromhex(
    "0101003c2112a442b7e7a701bc34d686fa87dfae"
    "8022000b7465737420766563746f7220"
    "002000080001a147e112a643"
    "000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7"
    "80280004c07d4c96")
# RFC 5769 2.3: an IPv6 response
SAMPLE_V6_RESPONSE = bytes.fromhex(
    "010100482112a442b7e7a701bc34d686fa87dfae"
    "8022000b7465737420766563746f7220"
    "002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d9"
    "00080014a382954e4be67bf11784c97c8292c275bfe3ed41"
    "80280004c8fb0b4c")
# RFC 5769 2.4: a request with long-term credentials
LTC_TID = bytes.fromhex("78ad3433c6ad72c029da412e")
LTC_USERNAME = "\u30de\u30c8\u30ea\u30c3\u30af\u30b9"
SAMPLE_LTC_REQUEST = bytes.fromhex(
    "000100602112a44278ad3433c6ad72c029da412e"
    "00060012e3839ee38388e383aae38383e382afe382b90000"
    "0015001c662f2f3439396b39353464364f4c33346f4c39465354767936347341"
    "0014000b6578616d706c652e6f726700"
    "00080014f67024656dd64a3e02b8e0712e85c9a28ca89666")


def test_sample_request_decodes_and_checks() -> None:
    message = decode_message_untrusted(SAMPLE_REQUEST)
    assert (message.method, message.cls) == (Method.BINDING, Class.REQUEST)
    assert message.transaction_id == TID
    assert message.get(Attr.SOFTWARE) == b"STUN test client"
    assert message.get(Attr.USERNAME) == b"evtj:h6vY"
    assert message.get(Attr.PRIORITY) == bytes.fromhex("6e0001ff")
    assert check_integrity(message, short_term_key(PASSWORD))
    assert not check_integrity(message, short_term_key(PASSWORD + "x"))


def test_sample_request_encodes_byte_for_byte() -> None:
    message = StunMessage(Method.BINDING, Class.REQUEST, TID, (
        (Attr.SOFTWARE, b"STUN test client"),
        (Attr.PRIORITY, bytes.fromhex("6e0001ff")),
        (Attr.ICE_CONTROLLED, bytes.fromhex("932ff9b151263b36")),
        (Attr.USERNAME, b"evtj:h6vY"),
    ))
    encoded = encode_message(message, integrity_key=short_term_key(PASSWORD), fingerprint=True,
                             pad=b" ")
    assert encoded == SAMPLE_REQUEST


@pytest.mark.parametrize(("datagram", "address"), [
    (SAMPLE_V4_RESPONSE, ("192.0.2.1", 32853)),
    (SAMPLE_V6_RESPONSE, ("2001:db8:1234:5678:11:2233:4455:6677", 32853)),
])
def test_sample_responses(datagram: bytes, address: tuple[str, int]) -> None:
    message = decode_message_untrusted(datagram)
    assert (message.method, message.cls) == (Method.BINDING, Class.SUCCESS)
    assert message.get(Attr.SOFTWARE) == b"test vector"
    assert mapped_address_untrusted(message) == address
    assert check_integrity(message, short_term_key(PASSWORD))
    rebuilt = StunMessage(Method.BINDING, Class.SUCCESS, TID, (
        (Attr.SOFTWARE, b"test vector"),
        (Attr.XOR_MAPPED_ADDRESS, encode_xor_address(address, TID)),
    ))
    assert encode_message(rebuilt, integrity_key=short_term_key(PASSWORD), fingerprint=True,
                          pad=b" ") == datagram


def test_sample_long_term_request() -> None:
    message = decode_message_untrusted(SAMPLE_LTC_REQUEST)
    assert message.transaction_id == LTC_TID
    assert message.get(Attr.USERNAME) == LTC_USERNAME.encode()
    assert message.get(Attr.REALM) == b"example.org"
    assert message.get(Attr.NONCE) == b"f//499k954d6OL34oL9FSTvy64sA"
    key = long_term_key(LTC_USERNAME, "example.org", "TheMatrIX")
    assert check_integrity(message, key)
    assert not check_integrity(message, long_term_key(LTC_USERNAME, "example.org", "matrix"))
    rebuilt = StunMessage(Method.BINDING, Class.REQUEST, LTC_TID, (
        (Attr.USERNAME, LTC_USERNAME.encode()),
        (Attr.NONCE, b"f//499k954d6OL34oL9FSTvy64sA"),
        (Attr.REALM, b"example.org"),
    ))
    assert encode_message(rebuilt, integrity_key=key) == SAMPLE_LTC_REQUEST


def test_fingerprint_mismatch_is_refused() -> None:
    broken = bytearray(SAMPLE_REQUEST)
    broken[-1] ^= 1
    with pytest.raises(StunError, match="FINGERPRINT"):
        decode_message_untrusted(bytes(broken))


def test_integrity_fails_on_a_changed_byte() -> None:
    # a changed SOFTWARE byte, with the fingerprint left out: integrity no longer holds
    changed = bytearray(SAMPLE_V4_RESPONSE[:-8])
    changed[2:4] = (len(changed) - 20).to_bytes(2, "big")
    changed[25] ^= 1
    message = decode_message_untrusted(bytes(changed))
    assert not check_integrity(message, short_term_key(PASSWORD))


def test_type_interleaving_round_trips() -> None:
    assert message_type(Method.BINDING, Class.REQUEST) == 0x0001
    assert message_type(Method.BINDING, Class.SUCCESS) == 0x0101
    assert message_type(Method.BINDING, Class.ERROR) == 0x0111
    assert message_type(Method.ALLOCATE, Class.REQUEST) == 0x0003
    assert message_type(Method.DATA, Class.INDICATION) == 0x0017
    assert message_type(Method.SEND, Class.INDICATION) == 0x0016
    for method in range(0x1000):
        for cls in Class:
            assert split_type(message_type(method, cls)) == (method, cls)


def test_error_code_round_trip() -> None:
    assert decode_error_code_untrusted(encode_error_code(438, "Stale Nonce")) == (
        438, "Stale Nonce")
    with pytest.raises(StunError):
        decode_error_code_untrusted(b"\0\0\x09\x00")


def test_xor_address_ipv4_and_ipv6() -> None:
    for address in [("203.0.113.7", 1), ("198.51.100.1", 65535), ("2001:db8::1", 7000)]:
        assert decode_xor_address_untrusted(encode_xor_address(address, TID), TID) == address


def test_rest_credentials_are_coturns() -> None:
    # base64(HMAC-SHA1("secret", "1700000000:alice")), computed independently with openssl:
    # printf %s 1700000000:alice | openssl dgst -sha1 -hmac secret -binary | base64
    username, password = rest_credentials("secret", "alice", 1_700_000_000)
    assert username == "1700000000:alice"
    assert password == "d8soP47RbdIKLDUOpnJPVQyq5Ts="


@pytest.mark.parametrize("datagram", [
    b"", b"\0" * 19, SAMPLE_REQUEST[:-1], SAMPLE_REQUEST + b"\0\0\0\0",
    b"\x40" + SAMPLE_REQUEST[1:],  # leading bits
    SAMPLE_REQUEST[:4] + b"\0\0\0\0" + SAMPLE_REQUEST[8:],  # cookie
    bytes.fromhex("000100042112a442") + TID + bytes.fromhex("00060008"),  # attr past the end
    bytes.fromhex("000100022112a442") + TID + b"\0\0",  # length not a multiple of 4
])
def test_bad_messages_raise_stun_error(datagram: bytes) -> None:
    with pytest.raises(StunError):
        decode_message_untrusted(datagram)


@given(st.binary(max_size=200))
def test_only_stun_error_escapes(data: bytes) -> None:
    try:
        message = decode_message_untrusted(data)
    except StunError:
        return
    for kind, value in message.attributes:
        if kind in (Attr.XOR_MAPPED_ADDRESS, Attr.XOR_PEER_ADDRESS, Attr.XOR_RELAYED_ADDRESS):
            with contextlib.suppress(StunError):
                decode_xor_address_untrusted(value, message.transaction_id)


def test_mutated_vectors_raise_only_stun_error() -> None:
    rng = random.Random(5769)
    for sample in (SAMPLE_REQUEST, SAMPLE_V4_RESPONSE, SAMPLE_V6_RESPONSE, SAMPLE_LTC_REQUEST):
        for _ in range(300):
            data = bytearray(sample)
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            try:
                message = decode_message_untrusted(bytes(data))
                mapped_address_untrusted(message)
            except StunError:
                pass


def test_looks_like_stun() -> None:
    assert looks_like_stun(SAMPLE_REQUEST)
    assert not looks_like_stun(b"P2P2" + SAMPLE_REQUEST[4:])
    assert not looks_like_stun(SAMPLE_REQUEST[:19])


def test_protocol_md_v9_vectors() -> None:
    assert binding_request(TID).hex() == (
        "000100082112a442b7e7a701bc34d686fa87dfae80280004fdf6ae02")
    assert binding_request(TID, change_ip=True, change_port=True).hex() == (
        "000100102112a442b7e7a701bc34d686fa87dfae000300040000000680280004ece90f05")
    assert encode_control(Addresses(("host 10.0.1.2:7000", "srflx 203.0.113.1:7000"))).hex() == (
        "82a16ba9616464726573736573a16392b2686f73742031302e302e312e323a37303030b67372"
        "666c78203230332e302e3131332e313a37303030")
