"""The anti-replay window against a set-based model."""

from __future__ import annotations

import random

import pytest

from p2pd.crypto.replay import COUNTER_LIMIT, MIN_WINDOW, ReplayWindow
from p2pd.session.config import SessionConfig


class ModelWindow:
    """Obviously correct and slow: every accepted counter in a set."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.seen: set[int] = set()
        self.top = -1

    def check(self, counter: int) -> bool:
        if counter >= COUNTER_LIMIT or counter in self.seen:
            return False
        return counter > self.top - self.size

    def update(self, counter: int) -> None:
        self.seen.add(counter)
        self.top = max(self.top, counter)


def drive(start: int, seed: int, steps: int, size: int) -> None:
    rng = random.Random(seed)
    window, model = ReplayWindow(size), ModelWindow(size)
    head = start
    for _ in range(steps):
        roll = rng.random()
        if roll < 0.5:
            head += rng.randint(1, 3)
            counter = head
        elif roll < 0.8:
            counter = max(0, head - rng.randint(0, size + 50))  # late or replayed
        elif roll < 0.95:
            counter = head + rng.randint(size // 2, 3 * size)  # a jump ahead
            head = counter
        else:
            counter = max(0, head - rng.randint(0, 10))  # a likely duplicate
        counter = min(counter, COUNTER_LIMIT + 5)
        expected = model.check(counter)
        assert window.check(counter) == expected, (seed, counter)
        if expected and rng.random() < 0.9:  # some packets fail authentication
            window.update(counter)
            model.update(counter)


@pytest.mark.parametrize("seed", range(40))
def test_window_matches_the_model(seed: int) -> None:
    drive(start=0, seed=seed, steps=3000, size=1024)


@pytest.mark.parametrize("seed", range(10))
def test_window_matches_the_model_near_the_64_bit_limit(seed: int) -> None:
    drive(start=COUNTER_LIMIT - 6000, seed=seed, steps=3000, size=2048)


def test_edges() -> None:
    window = ReplayWindow(1024)
    assert window.check(0)
    window.update(0)
    assert not window.check(0)
    window.update(5000)
    assert not window.check(5000 - 1024)  # just outside
    assert window.check(5000 - 1023)  # oldest slot still inside
    assert not window.check(COUNTER_LIMIT)
    window.update(COUNTER_LIMIT - 1)
    assert not window.check(COUNTER_LIMIT - 1)
    assert window.check(COUNTER_LIMIT - 2)


def test_check_never_mutates() -> None:
    window = ReplayWindow(1024)
    for counter in (10, 3, 10_000):
        assert window.check(counter)
        assert window.check(counter)
    assert window.highest == -1


@pytest.mark.parametrize("seed", range(20))
def test_a_coordinators_window_matches_the_model(seed: int) -> None:
    drive(start=0, seed=seed, steps=3000, size=128)


def test_window_size_has_a_floor() -> None:
    ReplayWindow(MIN_WINDOW)  # a coordinator's: 128
    with pytest.raises(ValueError, match="128"):
        ReplayWindow(MIN_WINDOW - 1)


def test_the_floor_keeps_the_ring_exact_for_every_counter_a_keypair_sends() -> None:
    """Generations alias 65535 windows apart: beyond what a sender may use."""
    assert SessionConfig().reject_after_messages < 65535 * MIN_WINDOW


def test_a_huge_jump_may_drop_new_counters_but_never_lets_a_replay_through() -> None:
    """Slots keep 16-bit generations: after a jump of exactly 65535 generations an
    old slot can look like the new counter's (a false drop, the documented price),
    but no counter already accepted is ever accepted again."""
    size = 1024
    window, model = ReplayWindow(size), ModelWindow(size)
    for counter in range(0, size // 2):  # half the slots written, half never
        window.update(counter)
        model.update(counter)
    jump = 65535 * size  # same stored generation value as the first window's
    false_drops = 0
    rng = random.Random(1)
    window.update(jump + size - 1)  # the newest first: the rest arrive out of order
    model.update(jump + size - 1)
    accepted: list[int] = []
    for counter in range(jump, jump + size - 1):
        if window.check(counter):
            assert model.check(counter)
            window.update(counter)
            model.update(counter)
            accepted.append(counter)
        else:
            false_drops += 1
    assert false_drops == size // 2  # the slots written long ago: the aliasing is real
    assert len(accepted) == size // 2 - 1
    for counter in [*rng.sample(accepted, 200), jump + size - 1]:  # replays of what got in
        assert not window.check(counter)
    # after one more window of traffic every slot is current again: exact
    for counter in range(jump + size, jump + 3 * size):
        assert window.check(counter) == model.check(counter)
        window.update(counter)
        model.update(counter)


def test_the_window_takes_two_bytes_a_slot() -> None:
    window = ReplayWindow(2048)
    assert window._slots.itemsize * len(window._slots) == 4096
