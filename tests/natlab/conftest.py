"""The ``nat_lab`` fixture: labs built on demand, all removed when the test ends."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.natlab.lab import Lab, NatKind, TurnSettings, lab_unavailable, open_lab

MakeLab = Callable[..., Lab]


@pytest.fixture
def nat_lab(tmp_path: Path) -> Iterator[MakeLab]:
    """``nat_lab(kind_a, kind_b=None, turn=True, turn_settings=None) -> Lab``.

    Skips the test (with the reason) where the lab cannot run: not root, or a
    Debian package missing. Every lab made is removed after the test, passed or
    failed: its processes stopped, its namespaces deleted."""
    reason = lab_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with contextlib.ExitStack() as stack:
        count = 0

        def make(kind_a: NatKind, kind_b: NatKind | None = None, *, turn: bool = True,
                 turn_settings: TurnSettings | None = None) -> Lab:
            nonlocal count
            count += 1
            return stack.enter_context(open_lab(kind_a, kind_b, workdir=tmp_path / f"lab{count}",
                                                turn=turn, turn_settings=turn_settings))

        yield make
