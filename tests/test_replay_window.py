"""The anti-replay window against a set-based model."""

from __future__ import annotations

import random

import pytest

from p2pd.crypto.replay import COUNTER_LIMIT, MIN_WINDOW, ReplayWindow


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


def test_a_huge_jump_forgets_nothing_it_should_remember() -> None:
    """Words are cleared as the highest counter passes them: after any jump, even one
    of 65535 windows (which aliased the old ring of 16-bit generations), the window
    is exact: no false drop, no counter accepted twice."""
    rng = random.Random(1)
    for size in (MIN_WINDOW, 1024, 2048):
        window, model = ReplayWindow(size), ModelWindow(size)
        for counter in range(0, size // 2):  # half the window written, half never
            window.update(counter)
            model.update(counter)
        for jump in (65535 * size, 65535 * size + 7, 3 * size + 63, 64):
            newest = model.top + jump
            window.update(newest)  # the newest first: the rest arrive out of order
            model.update(newest)
            late = list(range(newest - size - 3, newest))
            rng.shuffle(late)
            for counter in late:
                assert window.check(counter) == model.check(counter), (size, jump, counter)
                if model.check(counter) and rng.random() < 0.5:
                    window.update(counter)
                    model.update(counter)
            for counter in range(newest - size, newest + 1):  # replays of what got in
                assert window.check(counter) == model.check(counter)


def test_the_window_takes_a_bit_a_counter() -> None:
    assert ReplayWindow(2048)._words.itemsize * len(ReplayWindow(2048)._words) == 272
    assert len(ReplayWindow(MIN_WINDOW)._words) * 8 == 32  # a coordinator's
