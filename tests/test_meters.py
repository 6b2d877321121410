"""Rate limits driven by ``now``: the incoming allowance against two token buckets."""

from __future__ import annotations

import random

import pytest

from p2pd.meters import Allowance, TokenBucket


@pytest.mark.parametrize("seed", range(10))
def test_the_allowance_is_two_token_buckets_asked_in_turn(seed: int) -> None:
    """A packet takes a packet token, then its bytes; refused bytes still cost the
    packet token, exactly as ``packets.take(1) and bytes.take(size)``."""
    rng = random.Random(seed)
    packets, size_rate = rng.choice((5.0, 50.0, 2000.0)), rng.choice((500.0, 20_000.0))
    allowance = Allowance(packets, size_rate, 0.0)
    packet_bucket = TokenBucket(packets, packets, 0.0)
    byte_bucket = TokenBucket(size_rate, size_rate, 0.0)
    now = 0.0
    for _ in range(3000):
        now += rng.choice((0.0, 0.0, 0.0001, 0.001, 0.01, 0.3))
        size = rng.randrange(42, 1473)
        expected = packet_bucket.take(1, now) and byte_bucket.take(size, now)
        assert allowance.take(size, now) == expected


def test_rates_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Allowance(0, 100, 0.0)
