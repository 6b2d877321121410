"""The NAT lab's connectivity matrix, run several times: path and time to connect per pair.

Every pair of the lab's NAT kinds (masquerade, home, full_cone, symmetric, upnp;
15 pairs) with real ``p2pd run`` daemons behind real Linux NATs and miniupnpd, a
real ``p2pd coordinator`` and coturn (tests/natlab/matrix.py; root and the lab's
Debian packages, which ``scripts/test`` installs). By default each run is one
fresh shared lab of ten players, two behind each kind, the pairs in three rounds
of five at once (about 15 s a run); with ``--own-labs`` each pair gets a lab of
its own, built, run and removed one after another, as tests/natlab/test_matrix.py
does (about 2.5 min a run). Time to connect: from both players placed on one map
(both registered, candidates gathered) to both links up (``peer_joined`` on both
sides). Prints the matrix as a Markdown table (the median over the runs, and the
range) and ends with one JSON line: per pair the paths seen and the median.

    .venv/bin/python bench/natmatrix.py [--runs N] [--own-labs]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests package

from tests.natlab.lab import lab_unavailable
from tests.natlab.matrix import PAIRS, MatrixRun, run_once, run_own_labs, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs, one after another")
    parser.add_argument("--own-labs", action="store_true",
                        help="each pair in a lab of its own (as the tests), not one shared lab")
    args = parser.parse_args()
    reason = lab_unavailable()
    if reason is not None:
        print(f"natmatrix: {reason}", file=sys.stderr)
        sys.exit(2)
    runs: list[MatrixRun] = []
    with tempfile.TemporaryDirectory(prefix="natmatrix-") as directory:
        for number in range(args.runs):
            workdir = Path(directory) / f"run{number}"
            run = run_own_labs(workdir) if args.own_labs else run_once(workdir)
            runs.append(run)
            if args.own_labs:
                times = [r.ready_s for r in run.results.values() if r.ready_s is not None]
                ready = (f"each pair's lab ready after median {statistics.median(times):.1f} s"
                         if times else "no lab got ready")
            else:
                ready = f"ready after {run.start_s:.1f} s"
            print(f"run {number + 1}/{args.runs}: {run.seconds:.1f} s ({ready})",
                  file=sys.stderr)
    print(table(runs))
    print(f"time to connect: both players placed on one map to both links up; "
          f"{len(runs)} runs, median (min-max); "
          f"{'each pair in a lab of its own' if args.own_labs else 'one shared lab a run'}")
    out: dict[str, object] = {"runs": len(runs), "own_labs": args.own_labs}
    for key in PAIRS:
        results = [run.results[key] for run in runs if key in run.results]
        times = [r.connect_s for r in results if r.connect_s is not None]
        name = f"{key[0].value}-{key[1].value}"
        out[name] = {
            "paths": sorted({"/".join(r.paths) if r.paths else "failed" for r in results}),
            "connect_s_median": round(statistics.median(times), 3) if times else None,
        }
    out["run_s_median"] = round(statistics.median(run.seconds for run in runs), 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
