"""Tests for p2pd.crypto.noise: Noise_IK_25519_AESGCM_SHA256 (Noise revision 34).

Published test vectors (noise-c and cacophony, see tests/vectors/noise_ik_25519_aesgcm_sha256.json
for provenance), round trips, authentication failures and hostile-input fuzzing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pd.crypto.noise import (
    MAX_MESSAGE_LEN,
    MAX_NONCE,
    PROTOCOL_NAME,
    REQUEST_OVERHEAD,
    RESPONSE_OVERHEAD,
    CipherState,
    InitiatorHandshake,
    ResponderHandshake,
    SymmetricState,
    TransportKeys,
    dh,
    hkdf2,
    hkdf3,
    noise_nonce,
    public_bytes,
)
from p2pd.wire.errors import BadPacket, DropReason

VECTORS_FILE = Path(__file__).parent / "vectors" / "noise_ik_25519_aesgcm_sha256.json"
VECTORS: list[dict[str, Any]] = json.loads(VECTORS_FILE.read_text())["vectors"]


def _key(hex_private: str) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(bytes.fromhex(hex_private))


def _messages(vector: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    return [
        (bytes.fromhex(m["payload"]), bytes.fromhex(m["ciphertext"])) for m in vector["messages"]
    ]


def _literal_nonce(counter: int) -> bytes:
    # Written out independently of the module: 32 bits of zeros, then the 64-bit counter BE.
    return b"\x00\x00\x00\x00" + counter.to_bytes(8, "big")


# Fixed, deterministic keys for the property tests (hypothesis dislikes fixtures).
INIT_STATIC = _key("11" * 32)
RESP_STATIC = _key("22" * 32)
INIT_EPHEMERAL = _key("33" * 32)
RESP_EPHEMERAL = _key("44" * 32)
OTHER_STATIC = _key("55" * 32)
PROLOGUE = b"p2pd test prologue"

# X25519 points of small order (all give an all-zero shared secret), as 32-byte u-coordinates:
# 0, 1, the two points of order 8, p - 1, p and p + 1 (p = 2^255 - 19).
P = 2**255 - 19
LOW_ORDER_POINTS = [
    (0).to_bytes(32, "little"),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    (P - 1).to_bytes(32, "little"),
    P.to_bytes(32, "little"),
    (P + 1).to_bytes(32, "little"),
]


def _handshake(
    request_payload: bytes = b"hello",
    response_payload: bytes = b"welcome",
) -> tuple[InitiatorHandshake, bytes, ResponderHandshake, bytes, TransportKeys]:
    initiator = InitiatorHandshake(
        INIT_STATIC, public_bytes(RESP_STATIC), PROLOGUE, ephemeral_private=INIT_EPHEMERAL
    )
    request = initiator.write_request(request_payload)
    responder = ResponderHandshake.read_request_untrusted(RESP_STATIC, request, PROLOGUE)
    response, responder_keys = responder.write_response(response_payload, RESP_EPHEMERAL)
    return initiator, request, responder, response, responder_keys


def _assert_handshake_failed(call: Callable[[], object]) -> None:
    with pytest.raises(BadPacket) as info:
        call()
    assert info.value.reason is DropReason.HANDSHAKE_FAILED


# --------------------------------------------------------------------------- test vectors


@pytest.mark.parametrize("use_cache", [False, True], ids=["no-ss-cache", "ss-cache"])
@pytest.mark.parametrize("vector", VECTORS, ids=[v["origin"] for v in VECTORS])
def test_published_vector(vector: dict[str, Any], use_cache: bool) -> None:
    assert vector["protocol_name"].encode() == PROTOCOL_NAME
    messages = _messages(vector)
    init_static = _key(vector["init_static"])
    resp_static = _key(vector["resp_static"])
    init_remote_static = bytes.fromhex(vector["init_remote_static"])
    assert public_bytes(resp_static) == init_remote_static

    static_static = init_static.exchange(resp_static.public_key()) if use_cache else None
    initiator = InitiatorHandshake(
        init_static,
        init_remote_static,
        bytes.fromhex(vector["init_prologue"]),
        ephemeral_private=_key(vector["init_ephemeral"]),
        static_static=static_static,
    )
    request = initiator.write_request(messages[0][0])
    assert request == messages[0][1]
    assert len(request) == REQUEST_OVERHEAD + len(messages[0][0])

    cache_calls: list[bytes] = []

    def cache(remote_static: bytes) -> bytes | None:
        cache_calls.append(remote_static)
        return static_static

    responder = ResponderHandshake.read_request_untrusted(
        resp_static,
        request,
        bytes.fromhex(vector["resp_prologue"]),
        static_static_cache=cache if use_cache else None,
    )
    assert responder.payload == messages[0][0]
    assert responder.remote_static == public_bytes(init_static)
    assert responder.static_static == initiator.static_static
    assert cache_calls == ([public_bytes(init_static)] if use_cache else [])

    response, responder_keys = responder.write_response(
        messages[1][0], _key(vector["resp_ephemeral"])
    )
    assert response == messages[1][1]
    assert len(response) == RESPONSE_OVERHEAD + len(messages[1][0])

    payload, initiator_keys = initiator.read_response_untrusted(response)
    assert payload == messages[1][0]
    assert initiator_keys == responder_keys
    if "handshake_hash" in vector:
        assert initiator_keys.handshake_hash == bytes.fromhex(vector["handshake_hash"])

    # Transport messages: alternate initiator -> responder and back, AAD empty, nonces from 0.
    send = {
        0: CipherState(initiator_keys.initiator_to_responder),
        1: CipherState(initiator_keys.responder_to_initiator),
    }
    receive = {
        0: CipherState(responder_keys.initiator_to_responder),
        1: CipherState(responder_keys.responder_to_initiator),
    }
    for index, (plaintext, ciphertext) in enumerate(messages[2:]):
        direction = index % 2
        counter = index // 2
        key = (
            initiator_keys.initiator_to_responder
            if direction == 0
            else initiator_keys.responder_to_initiator
        )
        # Independently of CipherState: raw AES-256-GCM with the literal Noise nonce.
        assert AESGCM(key).encrypt(_literal_nonce(counter), plaintext, b"") == ciphertext
        assert send[direction].encrypt_with_ad(b"", plaintext) == ciphertext
        assert receive[direction].decrypt_with_ad(b"", ciphertext) == plaintext


def test_cacophony_handshake_hash_field_is_h_after_message_1() -> None:
    """Documents why the cacophony handshake_hash field is not compared with the final h."""
    (vector,) = [v for v in VECTORS if v["origin"] == "cacophony"]
    messages = _messages(vector)
    responder = ResponderHandshake.read_request_untrusted(
        _key(vector["resp_static"]), messages[0][1], bytes.fromhex(vector["resp_prologue"])
    )
    state = responder._state
    assert state is not None
    assert state.h == bytes.fromhex(vector["cacophony_h_after_message_1"])
    _, keys = responder.write_response(messages[1][0], _key(vector["resp_ephemeral"]))
    assert keys.handshake_hash != bytes.fromhex(vector["cacophony_h_after_message_1"])


def test_hkdf_matches_rfc5869() -> None:
    chaining_key = bytes(range(32))
    ikm = bytes(range(100, 132))
    expected = HKDF(algorithm=hashes.SHA256(), length=96, salt=chaining_key, info=b"").derive(ikm)
    assert b"".join(hkdf3(chaining_key, ikm)) == expected
    assert b"".join(hkdf2(chaining_key, ikm)) == expected[:64]


def test_initial_state_and_nonce_format() -> None:
    state = SymmetricState()
    assert len(PROTOCOL_NAME) == 28
    assert state.h == state.ck == PROTOCOL_NAME + bytes(4)
    assert noise_nonce(0) == bytes(12)
    assert noise_nonce(0x0102030405060708) == bytes(4) + bytes.fromhex("0102030405060708")


# --------------------------------------------------------------------------- round trips


@settings(max_examples=60, deadline=None)
@given(
    request_payload=st.binary(max_size=300),
    response_payload=st.binary(max_size=300),
    prologue=st.binary(max_size=64),
)
def test_round_trip_random_keys(
    request_payload: bytes, response_payload: bytes, prologue: bytes
) -> None:
    init_static = X25519PrivateKey.generate()
    resp_static = X25519PrivateKey.generate()
    initiator = InitiatorHandshake(init_static, public_bytes(resp_static), prologue)
    request = initiator.write_request(request_payload)
    responder = ResponderHandshake.read_request_untrusted(resp_static, request, prologue)
    assert responder.payload == request_payload
    assert responder.remote_static == public_bytes(init_static)
    assert responder.static_static == initiator.static_static
    response, responder_keys = responder.write_response(response_payload)
    payload, initiator_keys = initiator.read_response_untrusted(response)
    assert payload == response_payload
    assert initiator_keys == responder_keys
    assert len(initiator_keys.initiator_to_responder) == 32
    assert len(initiator_keys.responder_to_initiator) == 32
    assert len(initiator_keys.handshake_hash) == 32
    assert initiator_keys.initiator_to_responder != initiator_keys.responder_to_initiator

    up, down = (
        CipherState(initiator_keys.initiator_to_responder),
        CipherState(responder_keys.initiator_to_responder),
    )
    for data in (request_payload, response_payload, b""):
        assert down.decrypt_with_ad(b"", up.encrypt_with_ad(b"", data)) == data


def test_static_static_cache_round_trip() -> None:
    """Caching ss on both sides gives the same keys as computing it."""
    _, _, responder, _, keys = _handshake()
    cache = {responder.remote_static: responder.static_static}
    initiator = InitiatorHandshake(
        INIT_STATIC,
        public_bytes(RESP_STATIC),
        PROLOGUE,
        ephemeral_private=INIT_EPHEMERAL,
        static_static=responder.static_static,
    )
    request = initiator.write_request(b"hello")
    cached = ResponderHandshake.read_request_untrusted(
        RESP_STATIC, request, PROLOGUE, static_static_cache=cache.get
    )
    response, cached_keys = cached.write_response(b"welcome", RESP_EPHEMERAL)
    assert cached_keys == keys
    assert initiator.read_response_untrusted(response)[1] == keys


def test_fresh_ephemeral_keys_give_fresh_sessions() -> None:
    resp_public = public_bytes(RESP_STATIC)
    first = InitiatorHandshake(INIT_STATIC, resp_public, PROLOGUE).write_request(b"x")
    second = InitiatorHandshake(INIT_STATIC, resp_public, PROLOGUE).write_request(b"x")
    assert first[:32] != second[:32]
    assert first != second


# --------------------------------------------------------------------------- authentication


def test_wrong_responder_static_key_fails_at_responder() -> None:
    initiator = InitiatorHandshake(INIT_STATIC, public_bytes(OTHER_STATIC), PROLOGUE)
    request = initiator.write_request(b"hello")
    _assert_handshake_failed(
        lambda: ResponderHandshake.read_request_untrusted(RESP_STATIC, request, PROLOGUE)
    )


def test_prologue_mismatch_fails() -> None:
    initiator = InitiatorHandshake(INIT_STATIC, public_bytes(RESP_STATIC), b"version 1")
    request = initiator.write_request(b"hello")
    _assert_handshake_failed(
        lambda: ResponderHandshake.read_request_untrusted(RESP_STATIC, request, b"version 2")
    )


def test_wrong_cached_static_static_fails() -> None:
    _, request, _, _, _ = _handshake()
    _assert_handshake_failed(
        lambda: ResponderHandshake.read_request_untrusted(
            RESP_STATIC, request, PROLOGUE, static_static_cache=lambda _rs: bytes(32)
        )
    )


def test_tampered_request_fails() -> None:
    _, request, _, _, _ = _handshake()
    for index in (0, 40, len(request) - 1):
        tampered = bytearray(request)
        tampered[index] ^= 0x01
        _assert_handshake_failed(
            partial(
                ResponderHandshake.read_request_untrusted, RESP_STATIC, bytes(tampered), PROLOGUE
            )
        )


def test_wrong_response_fails_and_leaves_state_usable() -> None:
    initiator, _, _, response, keys = _handshake()
    # A valid response, but to a different request (another initiator ephemeral).
    other = InitiatorHandshake(INIT_STATIC, public_bytes(RESP_STATIC), PROLOGUE)
    other_responder = ResponderHandshake.read_request_untrusted(
        RESP_STATIC, other.write_request(b"hello"), PROLOGUE
    )
    other_response, _ = other_responder.write_response(b"welcome")
    _assert_handshake_failed(lambda: initiator.read_response_untrusted(other_response))
    # A response from someone without the responder's static key.
    impostor = ResponderHandshake.read_request_untrusted(
        OTHER_STATIC,
        InitiatorHandshake(INIT_STATIC, public_bytes(OTHER_STATIC), PROLOGUE).write_request(b""),
        PROLOGUE,
    )
    impostor_response, _ = impostor.write_response(b"welcome")
    _assert_handshake_failed(lambda: initiator.read_response_untrusted(impostor_response))
    tampered = bytearray(response)
    tampered[-1] ^= 0x80
    _assert_handshake_failed(lambda: initiator.read_response_untrusted(bytes(tampered)))
    # The genuine response is still accepted after all those failures.
    payload, initiator_keys = initiator.read_response_untrusted(response)
    assert payload == b"welcome"
    assert initiator_keys == keys
    # Once complete, a duplicate response is refused.
    _assert_handshake_failed(lambda: initiator.read_response_untrusted(response))


def test_response_before_request_is_refused() -> None:
    initiator = InitiatorHandshake(INIT_STATIC, public_bytes(RESP_STATIC), PROLOGUE)
    _assert_handshake_failed(lambda: initiator.read_response_untrusted(bytes(64)))


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=range(len(LOW_ORDER_POINTS)))
def test_low_order_ephemeral_in_request(point: bytes) -> None:
    _, request, _, _, _ = _handshake()
    hostile = point + request[32:]
    _assert_handshake_failed(
        lambda: ResponderHandshake.read_request_untrusted(RESP_STATIC, hostile, PROLOGUE)
    )


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=range(len(LOW_ORDER_POINTS)))
def test_low_order_static_in_request(point: bytes) -> None:
    """A correctly encrypted request whose initiator static key is a low-order point."""
    ephemeral = X25519PrivateKey.generate()
    e_pub = public_bytes(ephemeral)
    state = SymmetricState()
    state.mix_hash(PROLOGUE)
    state.mix_hash(public_bytes(RESP_STATIC))
    state.mix_hash(e_pub)
    state.mix_key(ephemeral.exchange(RESP_STATIC.public_key()))
    encrypted_static = state.encrypt_and_hash(point)
    state.mix_key(bytes(32))  # what the attacker would like ss to be
    hostile = e_pub + encrypted_static + state.encrypt_and_hash(b"payload")
    _assert_handshake_failed(
        lambda: ResponderHandshake.read_request_untrusted(RESP_STATIC, hostile, PROLOGUE)
    )


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=range(len(LOW_ORDER_POINTS)))
def test_low_order_ephemeral_in_response(point: bytes) -> None:
    initiator, _, _, response, _ = _handshake()
    _assert_handshake_failed(lambda: initiator.read_response_untrusted(point + response[32:]))
    assert initiator.read_response_untrusted(response)[0] == b"welcome"


def test_low_order_responder_static_is_rejected_at_construction() -> None:
    for point in LOW_ORDER_POINTS:
        with pytest.raises(ValueError):
            dh(INIT_STATIC, point)
        with pytest.raises(ValueError):
            InitiatorHandshake(INIT_STATIC, point, PROLOGUE)
    assert dh(INIT_STATIC, public_bytes(RESP_STATIC)) == dh(RESP_STATIC, public_bytes(INIT_STATIC))


# --------------------------------------------------------------------------- hostile input


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400))
def test_random_request_bytes_only_raise_bad_packet(data: bytes) -> None:
    _assert_handshake_failed(
        lambda: ResponderHandshake.read_request_untrusted(RESP_STATIC, data, PROLOGUE)
    )


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400))
def test_random_response_bytes_only_raise_bad_packet(data: bytes) -> None:
    initiator = InitiatorHandshake(
        INIT_STATIC, public_bytes(RESP_STATIC), PROLOGUE, ephemeral_private=INIT_EPHEMERAL
    )
    initiator.write_request(b"hello")
    _assert_handshake_failed(lambda: initiator.read_response_untrusted(data))


@settings(max_examples=100, deadline=None)
@given(data=st.binary(min_size=32, max_size=200), cached=st.booleans())
def test_request_with_valid_ephemeral_prefix_only_raises_bad_packet(
    data: bytes, cached: bool
) -> None:
    """Random bytes after a real ephemeral key reach the AEAD (and the cache) stages."""
    _, request, _, _, _ = _handshake()
    hostile = request[:32] + data
    _assert_handshake_failed(
        lambda: ResponderHandshake.read_request_untrusted(
            RESP_STATIC,
            hostile,
            PROLOGUE,
            static_static_cache=(lambda _rs: bytes(32)) if cached else None,
        )
    )


def test_every_truncation_and_extension_of_request_fails() -> None:
    _, request, _, _, _ = _handshake()
    for length in range(len(request)):
        _assert_handshake_failed(
            partial(
                ResponderHandshake.read_request_untrusted, RESP_STATIC, request[:length], PROLOGUE
            )
        )
    _assert_handshake_failed(
        lambda: ResponderHandshake.read_request_untrusted(RESP_STATIC, request + b"\x00", PROLOGUE)
    )


def test_every_truncation_and_extension_of_response_fails() -> None:
    initiator, _, _, response, keys = _handshake()
    for length in range(len(response)):
        _assert_handshake_failed(partial(initiator.read_response_untrusted, response[:length]))
    _assert_handshake_failed(lambda: initiator.read_response_untrusted(response + b"\x00"))
    assert initiator.read_response_untrusted(response)[1] == keys


def test_every_bit_flip_of_request_fails() -> None:
    _, request, _, _, _ = _handshake()
    for bit in range(len(request) * 8):
        flipped = bytearray(request)
        flipped[bit // 8] ^= 1 << (bit % 8)
        _assert_handshake_failed(
            partial(
                ResponderHandshake.read_request_untrusted, RESP_STATIC, bytes(flipped), PROLOGUE
            )
        )


def test_every_bit_flip_of_response_fails() -> None:
    initiator, _, _, response, keys = _handshake()
    for bit in range(len(response) * 8):
        flipped = bytearray(response)
        flipped[bit // 8] ^= 1 << (bit % 8)
        _assert_handshake_failed(partial(initiator.read_response_untrusted, bytes(flipped)))
    assert initiator.read_response_untrusted(response)[1] == keys


def test_oversized_messages_fail() -> None:
    _assert_handshake_failed(
        lambda: ResponderHandshake.read_request_untrusted(
            RESP_STATIC, bytes(MAX_MESSAGE_LEN + 1), PROLOGUE
        )
    )
    initiator, _, _, _, _ = _handshake()
    _assert_handshake_failed(lambda: initiator.read_response_untrusted(bytes(MAX_MESSAGE_LEN + 1)))


# --------------------------------------------------------------------------- API misuse


def test_misuse_raises_programming_errors() -> None:
    initiator, _, responder, _, _ = _handshake()
    with pytest.raises(RuntimeError):
        initiator.write_request(b"again")
    with pytest.raises(RuntimeError):
        responder.write_response(b"again")
    fresh = InitiatorHandshake(INIT_STATIC, public_bytes(RESP_STATIC), PROLOGUE)
    with pytest.raises(ValueError):
        fresh.write_request(bytes(MAX_MESSAGE_LEN - REQUEST_OVERHEAD + 1))
    assert len(fresh.write_request(bytes(MAX_MESSAGE_LEN - REQUEST_OVERHEAD))) == MAX_MESSAGE_LEN
    with pytest.raises(ValueError):
        InitiatorHandshake(INIT_STATIC, b"short", PROLOGUE)
    with pytest.raises(ValueError):
        InitiatorHandshake(INIT_STATIC, public_bytes(RESP_STATIC), PROLOGUE, static_static=b"x")


def test_transport_keys_are_frozen() -> None:
    keys = TransportKeys(bytes(32), bytes(32), bytes(32))
    with pytest.raises(AttributeError):
        keys.handshake_hash = b""  # type: ignore[misc]


# --------------------------------------------------------------------------- CipherState


def test_cipher_state_nonces_and_failures() -> None:
    key = bytes(range(32))
    sender, receiver = CipherState(key), CipherState(key)
    first = sender.encrypt_with_ad(b"ad", b"one")
    second = sender.encrypt_with_ad(b"ad", b"two")
    assert sender.n == 2
    assert AESGCM(key).decrypt(_literal_nonce(1), second, b"ad") == b"two"
    with pytest.raises(InvalidTag):
        receiver.decrypt_with_ad(b"ad", second)  # out of order: wrong nonce
    assert receiver.n == 0  # a failed decryption does not consume the nonce
    assert receiver.decrypt_with_ad(b"ad", first) == b"one"
    assert receiver.decrypt_with_ad(b"ad", second) == b"two"

    exhausted = CipherState(key, nonce=MAX_NONCE)
    with pytest.raises(OverflowError):
        exhausted.encrypt_with_ad(b"", b"x")
    with pytest.raises(OverflowError):
        exhausted.decrypt_with_ad(b"", bytes(16))

    empty = CipherState()
    assert not empty.has_key()
    assert empty.encrypt_with_ad(b"ad", b"clear") == b"clear"


def test_cipher_state_rekey() -> None:
    key = bytes(range(32))
    state = CipherState(key)
    state.encrypt_with_ad(b"", b"x")
    state.rekey()
    expected = AESGCM(key).encrypt(b"\x00" * 4 + b"\xff" * 8, bytes(32), b"")[:32]
    assert state.key == expected
    assert state.n == 1
