"""Connect tokens, certificates, the replay guard, the peer policy and signing key files."""

from __future__ import annotations

import hashlib
import os
import random
import stat
import struct
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from p2pd.coordinator.credentials import (
    CERTIFICATE_CONTEXT,
    CERTIFICATE_SIZE,
    MAX_CERTIFICATE_LIFETIME,
    MAX_TOKEN_LIFETIME,
    TOKEN_CONTEXT,
    TOKEN_SIZE,
    Certificate,
    ConnectToken,
    CredentialError,
    Refusal,
    SigningKeyFileError,
    TokenReplayGuard,
    certificate_policy,
    issue_certificate,
    key_id,
    load_or_create_signing_key,
    mint_token,
    public_key_bytes,
    verify_certificate_untrusted,
    verify_token_untrusted,
)
from p2pd.crypto.identity import load_or_create_identity
from p2pd.session.events import CloseReason, SessionClosed, SessionEstablished
from tests.sessions import B_ADDR, Pair, make_pair

ISSUER = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
COORDINATOR = Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64)))
OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(100, 132)))
DAEMON_KEY = bytes(range(64, 96))
ANOTHER_DAEMON_KEY = bytes(range(96, 128))
NONCE = bytes(range(0xA0, 0xB0))
NOW = 1_700_000_000.0
ADDRESS = ("198.51.100.7", 7000)

_TOKEN_BODY = struct.Struct(">BQI32sQQ16s")
_CERT_BODY = struct.Struct(">BI32sQQ8s")


def token(now: float = NOW, lifetime: float = 600, nonce: bytes = NONCE,
          issuer: Ed25519PrivateKey = ISSUER) -> bytes:
    return mint_token(issuer, account_id=2000001, player_id=150001, daemon_key=DAEMON_KEY,
                      lifetime=lifetime, now=now, nonce=nonce)


def certificate(now: float = NOW, lifetime: float = 3600, identity_key: bytes = DAEMON_KEY,
                coordinator: Ed25519PrivateKey = COORDINATOR) -> bytes:
    return issue_certificate(coordinator, player_id=150001, identity_key=identity_key,
                             lifetime=lifetime, now=now)


def signed_token(issued_at: int, expires_at: int, version: int = 1,
                 context: bytes = TOKEN_CONTEXT, key: Ed25519PrivateKey = ISSUER) -> bytes:
    """A token built from the documented layout, bypassing mint_token's checks."""
    body = _TOKEN_BODY.pack(version, 2000001, 150001, DAEMON_KEY, issued_at, expires_at, NONCE)
    return body + key.sign(context + body)


def signed_certificate(issued_at: int, expires_at: int, version: int = 1,
                       context: bytes = CERTIFICATE_CONTEXT,
                       key: Ed25519PrivateKey = COORDINATOR,
                       named_key: Ed25519PrivateKey = COORDINATOR) -> bytes:
    """A certificate built from the documented layout, signed by ``key``, naming ``named_key``."""
    kid = hashlib.sha256(public_key_bytes(named_key)).digest()[:8]
    body = _CERT_BODY.pack(version, 150001, DAEMON_KEY, issued_at, expires_at, kid)
    return body + key.sign(context + body)


def verify_token(data: bytes, now: float = NOW, skew: float = 30.0) -> ConnectToken:
    return verify_token_untrusted(data, [ISSUER.public_key()], now, skew=skew)


def verify_cert(data: bytes, now: float = NOW, identity_key: bytes = DAEMON_KEY,
                skew: float = 30.0) -> Certificate:
    return verify_certificate_untrusted(data, [COORDINATOR.public_key()], identity_key, now,
                                        skew=skew)


def refusal(call: Callable[[], object]) -> Refusal:
    with pytest.raises(CredentialError) as caught:
        call()
    return caught.value.reason


# -- sizes, layouts and vectors ----------------------------------------------


def test_sizes() -> None:
    assert TOKEN_SIZE == 1 + 8 + 4 + 32 + 8 + 8 + 16 + 64 == 141
    assert CERTIFICATE_SIZE == 1 + 4 + 32 + 8 + 8 + 8 + 64 == 125
    assert len(token()) == TOKEN_SIZE
    assert len(token(nonce=os.urandom(16))) == TOKEN_SIZE
    assert len(certificate()) == CERTIFICATE_SIZE


def test_token_round_trip() -> None:
    data = mint_token(ISSUER, account_id=2**64 - 1, player_id=2**32 - 1, daemon_key=DAEMON_KEY,
                      lifetime=600, now=NOW + 0.75, nonce=NONCE)
    assert verify_token(data) == ConnectToken(
        version=1, account_id=2**64 - 1, player_id=2**32 - 1, daemon_key=DAEMON_KEY,
        issued_at=int(NOW), expires_at=int(NOW) + 600, nonce=NONCE,
    )


def test_token_nonces_are_random_by_default() -> None:
    first = mint_token(ISSUER, account_id=1, player_id=2, daemon_key=DAEMON_KEY,
                       lifetime=60, now=NOW)
    second = mint_token(ISSUER, account_id=1, player_id=2, daemon_key=DAEMON_KEY,
                        lifetime=60, now=NOW)
    assert verify_token(first).nonce != verify_token(second).nonce


def test_token_layout_byte_by_byte() -> None:
    data = token()
    assert data[0] == 1
    assert struct.unpack_from(">Q", data, 1) == (2000001,)
    assert struct.unpack_from(">I", data, 9) == (150001,)
    assert data[13:45] == DAEMON_KEY
    assert struct.unpack_from(">QQ", data, 45) == (int(NOW), int(NOW) + 600)
    assert data[61:77] == NONCE
    ISSUER.public_key().verify(data[77:], TOKEN_CONTEXT + data[:77])  # raises if not


def test_certificate_round_trip_and_layout() -> None:
    data = certificate(now=NOW + 0.5)
    kid = hashlib.sha256(COORDINATOR.public_key().public_bytes_raw()).digest()[:8]
    assert verify_cert(data) == Certificate(
        version=1, player_id=150001, identity_key=DAEMON_KEY, issued_at=int(NOW),
        expires_at=int(NOW) + 3600, key_id=kid,
    )
    assert data[0] == 1
    assert struct.unpack_from(">I", data, 1) == (150001,)
    assert data[5:37] == DAEMON_KEY
    assert struct.unpack_from(">QQ", data, 37) == (int(NOW), int(NOW) + 3600)
    assert data[53:61] == kid == key_id(COORDINATOR) == key_id(COORDINATOR.public_key())
    COORDINATOR.public_key().verify(data[61:], CERTIFICATE_CONTEXT + data[:61])


# Ed25519 signatures are deterministic: these pin the whole format, signature included.
TOKEN_VECTOR = (
    "0100000000001e8481000249f1404142434445464748494a4b4c4d4e4f5051525354555657"
    "58595a5b5c5d5e5f000000006553f100000000006553f358a0a1a2a3a4a5a6a7a8a9aaabac"
    "adaeafc178b8264379ce8f6463a1f01442d9637388deca7dd473fd928e000adefb69211bd9"
    "ec8ec0f5e798c5b50b77d0650eef3942e1efe1c918e14fbe7cd076078a06"
)
CERTIFICATE_VECTOR = (
    "01000249f1404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
    "000000006553f100000000006555428024f6ed6acbfe100997af2a58016292bd97ae424537"
    "3c59683d03b9067e47732b52cf07004d7e5e45ec36fee59eae1ec68bc1a5ab91cc46d18f38"
    "afedcac83796d8613aa0b28bc602"
)


def test_deterministic_vectors() -> None:
    assert token(now=NOW + 0.5, lifetime=600).hex() == TOKEN_VECTOR
    assert certificate(now=NOW + 0.5, lifetime=86400).hex() == CERTIFICATE_VECTOR
    assert public_key_bytes(ISSUER).hex() == (
        "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
    )


# -- minting ---------------------------------------------------------------


@pytest.mark.parametrize("lifetime", [0, -1, 3600.001, float("nan"), float("inf")])
def test_mint_refuses_lifetimes_outside_the_range(lifetime: float) -> None:
    with pytest.raises(ValueError, match="lifetime"):
        token(lifetime=lifetime)


def test_mint_accepts_the_maximum_lifetime_and_rounds_up_to_seconds() -> None:
    assert verify_token(token(lifetime=MAX_TOKEN_LIFETIME)).expires_at == int(NOW) + 3600
    assert verify_token(token(lifetime=0.25)).expires_at == int(NOW) + 1
    long = certificate(lifetime=MAX_CERTIFICATE_LIFETIME)
    assert verify_cert(long).expires_at == int(NOW) + 86400
    with pytest.raises(ValueError, match="lifetime"):
        certificate(lifetime=MAX_CERTIFICATE_LIFETIME + 1)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"account_id": 2**64}, "account_id"),
        ({"account_id": -1}, "account_id"),
        ({"player_id": 2**32}, "player_id"),
        ({"daemon_key": bytes(31)}, "daemon_key"),
        ({"nonce": bytes(15)}, "nonce"),
        ({"now": -1.0}, "now"),
        ({"now": float("nan")}, "now"),
    ],
)
def test_mint_refuses_bad_arguments(arguments: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"account_id": 1, "player_id": 1, "daemon_key": DAEMON_KEY,
                               "lifetime": 60, "now": NOW, "nonce": NONCE}
    with pytest.raises(ValueError, match=message):
        mint_token(ISSUER, **{**base, **arguments})  # type: ignore[arg-type]


# -- token refusals ----------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, TOKEN_SIZE - 1, TOKEN_SIZE + 1, CERTIFICATE_SIZE])
def test_token_of_wrong_size_is_malformed(size: int) -> None:
    data = (token() * 2)[:size]
    assert refusal(lambda: verify_token(data)) == Refusal.MALFORMED


def test_token_version_is_checked_before_the_signature() -> None:
    # a correctly signed token of another version is bad_version, not accepted
    assert refusal(lambda: verify_token(signed_token(int(NOW), int(NOW) + 60, version=2))) == (
        Refusal.BAD_VERSION
    )
    # and a token whose signature was never computed also stops at the version
    assert refusal(lambda: verify_token(b"\x02" + bytes(TOKEN_SIZE - 1))) == Refusal.BAD_VERSION


def test_token_signed_by_another_key_is_refused() -> None:
    forged = token(issuer=OTHER)
    assert refusal(lambda: verify_token(forged)) == Refusal.BAD_SIGNATURE
    assert refusal(lambda: verify_token_untrusted(token(), [], NOW)) == Refusal.BAD_SIGNATURE


def test_token_accepted_under_any_trusted_issuer() -> None:
    issuers = [OTHER.public_key(), ISSUER.public_key()]
    assert verify_token_untrusted(token(), issuers, NOW).nonce == NONCE
    assert verify_token_untrusted(token(issuer=OTHER), issuers, NOW).nonce == NONCE


def test_every_flipped_bit_of_a_token_is_refused() -> None:
    data = token()
    for bit in range(TOKEN_SIZE * 8):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        expected = Refusal.BAD_VERSION if bit < 8 else Refusal.BAD_SIGNATURE
        assert refusal(partial(verify_token, bytes(flipped))) == expected, bit


def test_signatures_are_domain_separated() -> None:
    # the issuer's signature over the token bytes under the certificate context does not pass
    wrong = signed_token(int(NOW), int(NOW) + 60, context=CERTIFICATE_CONTEXT)
    assert refusal(lambda: verify_token(wrong)) == Refusal.BAD_SIGNATURE
    # nor does a token signature without any context
    body = token()[:77]
    bare = body + ISSUER.sign(body)
    assert refusal(lambda: verify_token(bare)) == Refusal.BAD_SIGNATURE
    wrong_cert = signed_certificate(int(NOW), int(NOW) + 60, context=TOKEN_CONTEXT)
    assert refusal(lambda: verify_cert(wrong_cert)) == Refusal.BAD_SIGNATURE


def test_token_expires_at_exactly_expires_at() -> None:
    data = token(lifetime=600)
    end = int(NOW) + 600
    assert verify_token(data, now=end - 0.001).expires_at == end
    assert refusal(lambda: verify_token(data, now=end)) == Refusal.EXPIRED
    assert refusal(lambda: verify_token(data, now=end + 1000)) == Refusal.EXPIRED


def test_token_skew_boundaries() -> None:
    data = token()  # issued at NOW
    assert verify_token(data, now=NOW - 30).issued_at == NOW  # issued_at == now + skew
    assert refusal(lambda: verify_token(data, now=NOW - 30.001)) == Refusal.NOT_YET_VALID
    assert verify_token(data, now=NOW, skew=0).issued_at == NOW
    assert refusal(lambda: verify_token(data, now=NOW - 0.001, skew=0)) == Refusal.NOT_YET_VALID
    assert verify_token(data, now=NOW - 100, skew=100).issued_at == NOW


def test_token_with_a_lifetime_beyond_the_maximum_is_refused() -> None:
    issued = int(NOW)
    assert verify_token(signed_token(issued, issued + 3600)).expires_at == issued + 3600
    too_long = signed_token(issued, issued + 3601)
    assert refusal(lambda: verify_token(too_long)) == Refusal.TOO_LONG
    forever = signed_token(issued, 2**64 - 1)
    assert refusal(lambda: verify_token(forever)) == Refusal.TOO_LONG


def test_token_expiring_before_its_issue_is_malformed() -> None:
    backwards = signed_token(int(NOW) + 10, int(NOW) + 5)  # in the skew window, not expired
    assert refusal(lambda: verify_token(backwards)) == Refusal.MALFORMED


def test_non_finite_now_is_local_misuse() -> None:
    with pytest.raises(ValueError, match="finite"):
        verify_token(token(), now=float("nan"))
    with pytest.raises(ValueError, match="finite"):
        verify_cert(certificate(), now=float("inf"))


def test_refusals_carry_a_reason_string_and_a_detail() -> None:
    with pytest.raises(CredentialError) as caught:
        verify_token(token(), now=NOW + 10_000)
    assert caught.value.reason == "expired"
    assert "expired at" in caught.value.detail
    assert str(caught.value).startswith("expired: ")
    assert {r.value for r in Refusal} == {
        "malformed", "bad_version", "unknown_key", "bad_signature", "wrong_key",
        "not_yet_valid", "expired", "too_long", "replayed", "busy",
    }


# -- the replay guard ------------------------------------------------------


def test_replay_from_another_address_is_refused_and_from_the_same_accepted() -> None:
    guard = TokenReplayGuard(16)
    tok = verify_token(token())
    guard.check(tok, ADDRESS, NOW)
    guard.check(tok, ADDRESS, NOW + 1)  # a retransmitted registration
    with pytest.raises(CredentialError) as caught:
        guard.check(tok, ("203.0.113.9", 7000), NOW + 2)
    assert caught.value.reason == Refusal.REPLAYED
    assert refusal(lambda: guard.check(tok, (ADDRESS[0], 7001), NOW + 2)) == Refusal.REPLAYED
    guard.check(tok, ADDRESS, NOW + 3)  # still accepted from its first address
    stats = guard.statistics()
    assert (stats.remembered, stats.accepted, stats.repeated, stats.replayed, stats.busy) == (
        1, 1, 2, 2, 0
    )


def test_guard_forgets_a_token_when_it_expires() -> None:
    guard = TokenReplayGuard(16)
    tok = verify_token(token(lifetime=60))
    guard.check(tok, ADDRESS, NOW)
    assert len(guard) == 1
    later = verify_token(token(now=NOW + 60, nonce=bytes(16)), now=NOW + 60)
    guard.check(later, ADDRESS, NOW + 60)  # the first token expired at NOW + 60
    assert len(guard) == 1
    # an expired token is refused by the guard too, never remembered again
    assert refusal(lambda: guard.check(tok, ("203.0.113.9", 7000), NOW + 60)) == Refusal.EXPIRED
    assert len(guard) == 1


def test_a_full_guard_refuses_new_tokens_and_never_evicts_live_ones() -> None:
    guard = TokenReplayGuard(2)
    first = verify_token(token(lifetime=60, nonce=b"\x01" * 16))
    second = verify_token(token(lifetime=120, nonce=b"\x02" * 16))
    third = verify_token(token(lifetime=600, nonce=b"\x03" * 16))
    guard.check(first, ADDRESS, NOW)
    guard.check(second, ADDRESS, NOW)
    assert refusal(lambda: guard.check(third, ADDRESS, NOW + 1)) == Refusal.BUSY
    # the live entries survived: their tokens are still bound to their first address
    elsewhere = ("203.0.113.9", 7000)
    assert refusal(lambda: guard.check(first, elsewhere, NOW + 1)) == Refusal.REPLAYED
    assert refusal(lambda: guard.check(second, elsewhere, NOW + 1)) == Refusal.REPLAYED
    guard.check(first, ADDRESS, NOW + 1)  # a retransmission still passes while full
    assert len(guard) == 2
    # once the first token expires its entry is dropped and the third fits
    guard.check(third, ADDRESS, NOW + 60)
    assert len(guard) == 2
    assert refusal(lambda: guard.check(second, elsewhere, NOW + 61)) == Refusal.REPLAYED
    assert guard.statistics().busy == 1


def test_guard_memory_stays_bounded_under_many_tokens() -> None:
    guard = TokenReplayGuard(100)
    rng = random.Random(5)
    accepted = busy = 0
    for i in range(2000):
        now = NOW + i * 0.5  # 2 tokens a second, each living 60 s: ~120 live at once
        tok = verify_token(token(now=now, lifetime=60, nonce=rng.randbytes(16)), now=now)
        try:
            guard.check(tok, ADDRESS, now)
            accepted += 1
        except CredentialError as error:
            assert error.reason == Refusal.BUSY
            busy += 1
        assert len(guard) <= 100
    assert accepted > 1000 and busy > 0
    assert guard.statistics().accepted == accepted


def test_guard_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        TokenReplayGuard(0)


# -- certificate refusals ----------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, CERTIFICATE_SIZE - 1, CERTIFICATE_SIZE + 1, TOKEN_SIZE])
def test_certificate_of_wrong_size_is_malformed(size: int) -> None:
    data = (certificate() * 2)[:size]
    assert refusal(lambda: verify_cert(data)) == Refusal.MALFORMED


def test_certificate_refusals() -> None:
    end = int(NOW) + 3600
    assert refusal(lambda: verify_cert(signed_certificate(int(NOW), end, version=0))) == (
        Refusal.BAD_VERSION
    )
    # signed by an untrusted coordinator, naming itself: its key id is unknown
    assert refusal(lambda: verify_cert(certificate(coordinator=OTHER))) == Refusal.UNKNOWN_KEY
    # signed by another key but naming the trusted one: the signature fails
    forged = signed_certificate(int(NOW), end, key=OTHER)
    assert refusal(lambda: verify_cert(forged)) == Refusal.BAD_SIGNATURE
    # a valid certificate presented with another static key
    assert refusal(lambda: verify_cert(certificate(), identity_key=ANOTHER_DAEMON_KEY)) == (
        Refusal.WRONG_KEY
    )
    assert refusal(lambda: verify_cert(certificate(), identity_key=b"")) == Refusal.WRONG_KEY


def test_certificate_expiry_and_skew_boundaries() -> None:
    data = certificate(lifetime=3600)
    end = int(NOW) + 3600
    assert verify_cert(data, now=end - 0.001).expires_at == end
    assert refusal(lambda: verify_cert(data, now=end)) == Refusal.EXPIRED
    assert verify_cert(data, now=NOW - 30).issued_at == NOW
    assert refusal(lambda: verify_cert(data, now=NOW - 30.001)) == Refusal.NOT_YET_VALID
    assert refusal(lambda: verify_cert(data, now=NOW - 5, skew=1)) == Refusal.NOT_YET_VALID


def test_certificate_with_a_lifetime_beyond_the_maximum_is_refused() -> None:
    issued = int(NOW)
    assert verify_cert(signed_certificate(issued, issued + 86400)).issued_at == issued
    too_long = signed_certificate(issued, issued + 86401)
    assert refusal(lambda: verify_cert(too_long)) == Refusal.TOO_LONG
    backwards = signed_certificate(issued + 10, issued + 5)
    assert refusal(lambda: verify_cert(backwards)) == Refusal.MALFORMED


def test_every_flipped_bit_of_a_certificate_is_refused() -> None:
    data = certificate()
    for bit in range(CERTIFICATE_SIZE * 8):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        byte = bit // 8
        expected = (Refusal.BAD_VERSION if byte == 0
                    else Refusal.UNKNOWN_KEY if 53 <= byte < 61
                    else Refusal.BAD_SIGNATURE)
        assert refusal(partial(verify_cert, bytes(flipped))) == expected, bit


def test_key_rotation_trusts_several_coordinator_keys() -> None:
    old, new = COORDINATOR, OTHER
    both = [new.public_key(), old.public_key()]
    for coordinator in (old, new):
        cert = certificate(coordinator=coordinator)
        assert verify_certificate_untrusted(cert, both, DAEMON_KEY, NOW).key_id == (
            key_id(coordinator)
        )
    retired = certificate(coordinator=old)
    assert refusal(
        lambda: verify_certificate_untrusted(retired, [new.public_key()], DAEMON_KEY, NOW)
    ) == Refusal.UNKNOWN_KEY


# -- fuzzing: only CredentialError escapes -----------------------------------


def _mutations(rng: random.Random, valid: bytes, count: int) -> list[bytes]:
    out: list[bytes] = []
    for _ in range(count):
        data = bytearray(valid)
        kind = rng.randrange(6)
        if kind == 0:
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif kind == 1:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif kind == 2:
            data = data[: rng.randrange(len(data))]
        elif kind == 3:
            data += rng.randbytes(rng.randint(1, 40))
        elif kind == 4:
            at = rng.randrange(len(data))
            data[at:at] = rng.randbytes(rng.randint(1, 8))
        else:
            data = bytearray(b"\x01" + rng.randbytes(len(valid) - 1))
        out.append(bytes(data))
    return out


def _fuzz(rng: random.Random, valid: bytes, times_at: int,
          sign: Callable[[bytes], bytes], check: Callable[[bytes], object]) -> set[Refusal]:
    size = len(valid)
    inputs = [rng.randbytes(rng.randrange(2 * size)) for _ in range(1500)]
    inputs += _mutations(rng, valid, 3000)
    # signed garbage: random fields under a good signature reach the time checks;
    # half of them get times near NOW rather than anywhere in the u64 range
    for _ in range(1000):
        body = bytearray(b"\x01" + rng.randbytes(size - 65))
        if rng.random() < 0.5:
            issued = int(NOW) + rng.randint(-100_000, 100)
            struct.pack_into(">QQ", body, times_at, issued, issued + rng.randint(-10, 100_000))
        inputs.append(bytes(body) + sign(bytes(body)))
    reasons: set[Refusal] = set()
    for data in inputs:
        try:
            check(data)
        except CredentialError as error:
            assert isinstance(error.reason, Refusal)
            reasons.add(error.reason)
        # any other exception fails the test
    return reasons


def test_fuzz_tokens_raise_only_credential_errors() -> None:
    reasons = _fuzz(random.Random(1), token(), 45,
                    lambda body: ISSUER.sign(TOKEN_CONTEXT + body),
                    verify_token)
    assert set(Refusal) - {Refusal.UNKNOWN_KEY, Refusal.WRONG_KEY, Refusal.REPLAYED,
                           Refusal.BUSY} <= reasons


def test_fuzz_certificates_raise_only_credential_errors() -> None:
    rng = random.Random(2)
    kid = key_id(COORDINATOR)

    def sign(body: bytes) -> bytes:  # keep the key id known half of the time
        return COORDINATOR.sign(CERTIFICATE_CONTEXT + body)

    def check(data: bytes) -> object:
        if len(data) == CERTIFICATE_SIZE and rng.random() < 0.5:
            body = data[:53] + kid
            data = body + sign(body)  # a good signature over random fields
        presented = data[5:37] if rng.random() < 0.9 else DAEMON_KEY
        return verify_certificate_untrusted(data, [COORDINATOR.public_key()], presented, NOW)

    reasons = _fuzz(rng, certificate(), 37, sign, check)
    assert set(Refusal) - {Refusal.REPLAYED, Refusal.BUSY} <= reasons


# -- the peer policy, alone and in a real handshake --------------------------


def test_certificate_policy_accepts_exactly_certified_keys() -> None:
    clock = [NOW]
    policy = certificate_policy([COORDINATOR.public_key()], lambda: clock[0])
    cert = certificate(lifetime=600)
    assert policy(DAEMON_KEY, cert) is True
    assert policy(DAEMON_KEY, None) is False
    assert policy(ANOTHER_DAEMON_KEY, cert) is False
    assert policy(DAEMON_KEY, certificate(coordinator=OTHER)) is False
    assert policy(DAEMON_KEY, b"not a certificate") is False
    clock[0] = NOW + 600  # the injected clock decides expiry
    assert policy(DAEMON_KEY, cert) is False


def certified_pair(present: Callable[[bytes], bytes | None]) -> Pair:
    """A pair whose responder b admits only certified peers; a presents ``present(a_key)``."""
    holder: list[Pair] = []
    policy = certificate_policy([COORDINATOR.public_key()], lambda: NOW + holder[0].sim.now)
    pair = make_pair(b_policy=policy)
    holder.append(pair)
    a = pair.a.endpoint
    a.identity = a.identity.with_certificate(present(pair.a_key))
    a.connect(pair.b_key, B_ADDR, 0.0)
    return pair


def test_handshake_succeeds_with_a_valid_certificate() -> None:
    cert = b""

    def present(a_key: bytes) -> bytes:
        nonlocal cert
        cert = certificate(identity_key=a_key)
        return cert

    pair = certified_pair(present)
    assert pair.sim.run_while(
        lambda: not (pair.a.events_of(SessionEstablished) and pair.b.events_of(SessionEstablished)),
        10.0,
    )
    (established,) = pair.b.events_of(SessionEstablished)
    assert established.peer == pair.a_key
    assert established.certificate == cert
    assert pair.b.endpoint.statistics().drops.get("peer_refused", 0) == 0


@pytest.mark.parametrize(
    "present",
    [
        pytest.param(lambda key: None, id="none"),
        pytest.param(lambda key: certificate(identity_key=key, coordinator=OTHER), id="untrusted"),
        pytest.param(lambda key: signed_certificate(int(NOW), int(NOW) + 60, key=OTHER),
                     id="forged"),
        pytest.param(lambda key: certificate(identity_key=ANOTHER_DAEMON_KEY), id="other_key"),
        pytest.param(lambda key: certificate(identity_key=key, now=NOW - 4000, lifetime=3600),
                     id="expired"),
    ],
)
def test_handshake_is_refused_without_a_valid_certificate(
    present: Callable[[bytes], bytes | None],
) -> None:
    pair = certified_pair(present)
    pair.sim.run_until(6.0)
    assert pair.b.events_of(SessionEstablished) == []
    assert pair.b.endpoint.statistics().drops.get("peer_refused", 0) >= 1
    assert [e.reason for e in pair.a.events_of(SessionClosed)] == [CloseReason.HANDSHAKE_TIMEOUT]


# -- signing key files -------------------------------------------------------


def test_signing_key_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "state" / "coordinator.key"
    first = load_or_create_signing_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    tag, hexkey = path.read_text().split()
    assert tag == "p2pd-signing-key-v1"
    assert bytes.fromhex(hexkey) == first.private_bytes_raw()
    again = load_or_create_signing_key(path)
    assert public_key_bytes(again) == public_key_bytes(first)
    assert public_key_bytes(first) == public_key_bytes(first.public_key())
    assert len(public_key_bytes(first)) == 32


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_signing_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "coordinator.key"
    load_or_create_signing_key(path)
    path.chmod(0o640)
    with pytest.raises(SigningKeyFileError, match="chmod 600"):
        load_or_create_signing_key(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("garbage\n", "not a p2pd signing key file"),
        ("p2pd-signing-key-v1\nzz\n", "not hexadecimal"),
        ("p2pd-signing-key-v1\n" + "ab" * 16 + "\n", "16 bytes, expected 32"),
    ],
)
def test_malformed_signing_key_files_are_named(tmp_path: Path, content: str,
                                               message: str) -> None:
    path = tmp_path / "coordinator.key"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(SigningKeyFileError, match=message):
        load_or_create_signing_key(path)


def test_an_identity_file_is_not_taken_for_a_signing_key(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    load_or_create_identity(path)
    with pytest.raises(SigningKeyFileError, match="not a p2pd signing key file"):
        load_or_create_signing_key(path)
