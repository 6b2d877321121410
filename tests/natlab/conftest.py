"""The NAT lab's fixtures: ``nat_lab`` (labs built on demand, all removed when the
test ends) and ``matrix`` (the connectivity matrix, run once per session), and the
matrix printed at the end of the test run."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.natlab.lab import Lab, NatKind, TurnSettings, lab_unavailable, open_lab
from tests.natlab.matrix import MatrixRun, run_once, table

MakeLab = Callable[..., Lab]
MATRIX_RUNS = pytest.StashKey[list[MatrixRun]]()


@pytest.fixture
def nat_lab(tmp_path: Path) -> Iterator[MakeLab]:
    """``nat_lab(kind_a, kind_b=None, turn=True, turn_settings=None, more=()) -> Lab``.

    Skips the test (with the reason) where the lab cannot run: not root, or a
    Debian package missing. Every lab made is removed after the test, passed or
    failed: its processes stopped, its namespaces deleted."""
    reason = lab_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with contextlib.ExitStack() as stack:
        count = 0

        def make(kind_a: NatKind, kind_b: NatKind | None = None, *, turn: bool = True,
                 turn_settings: TurnSettings | None = None,
                 more: tuple[NatKind, ...] = ()) -> Lab:
            nonlocal count
            count += 1
            return stack.enter_context(open_lab(kind_a, kind_b, workdir=tmp_path / f"lab{count}",
                                                turn=turn, turn_settings=turn_settings,
                                                more=more))

        yield make


@pytest.fixture(scope="module")
def matrix(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> MatrixRun:
    """The 15 pairs of NAT kinds, run once in one lab (tests/natlab/matrix.py); the lab
    and every process are gone when this returns, failed or not."""
    reason = lab_unavailable()
    if reason is not None:
        pytest.skip(reason)
    run = run_once(tmp_path_factory.mktemp("matrix"))
    request.config.stash.setdefault(MATRIX_RUNS, []).append(run)
    return run


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter,
                            config: pytest.Config) -> None:
    runs = config.stash.get(MATRIX_RUNS, [])
    if runs:
        terminalreporter.write_sep("-", "NAT lab: the connectivity matrix")
        terminalreporter.write_line(table(runs))
        terminalreporter.write_line(
            f"(time to connect: both players placed on one map, to both links up; "
            f"lab and ten daemons ready in {runs[0].start_s:.1f} s, whole run "
            f"{runs[0].seconds:.1f} s)")
