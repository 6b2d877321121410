"""The NAT lab's fixtures: ``nat_lab`` (labs built on demand, all removed when the
test ends) and ``matrix_results`` (each connectivity matrix test's result, by pair,
for the whole session), and the matrix printed at the end of the test run."""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.natlab.lab import Lab, NatKind, TurnSettings, lab_unavailable, open_lab
from tests.natlab.matrix import MatrixRun, PairResult, table

MakeLab = Callable[..., Lab]
MatrixResults = dict[tuple[NatKind, NatKind], PairResult]
MATRIX_RESULTS = pytest.StashKey[MatrixResults]()


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


@pytest.fixture(scope="session")
def matrix_results(pytestconfig: pytest.Config) -> MatrixResults:
    """Where each test of tests/natlab/test_matrix.py puts its pair's result (also a
    failed one), for the table at the end of the run."""
    return pytestconfig.stash.setdefault(MATRIX_RESULTS, {})


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter,
                            config: pytest.Config) -> None:
    results = config.stash.get(MATRIX_RESULTS, {})
    if not results:
        return
    terminalreporter.write_sep("-", "NAT lab: the connectivity matrix")
    terminalreporter.write_line(table([MatrixRun(results=results)]))
    ready = [r.ready_s for r in results.values() if r.ready_s is not None]
    whole = [r.seconds for r in results.values() if r.seconds is not None]
    line = "(time to connect: both players placed on one map, to both links up; each pair " \
           "in a lab of its own"
    if ready and whole:
        line += (f": lab built and both daemons registered and gathered in "
                 f"{statistics.median(ready):.1f} s ({min(ready):.1f}-{max(ready):.1f}), "
                 f"the whole pair {statistics.median(whole):.1f} s "
                 f"({min(whole):.1f}-{max(whole):.1f}), {sum(whole):.0f} s in all")
    terminalreporter.write_line(line + ")")
