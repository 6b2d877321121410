"""``p2pctl graph`` and ``coordinator-status --graph``: DOT text into a picture.

Graphviz draws it (``dot -Tsvg``, ``dot -Tpng``; Debian's ``graphviz``
package): the graph is made as DOT text anyway (:mod:`p2pd.viz`), which a
person or a test can read and count, and Graphviz lays out small graphs well
in milliseconds, without pulling a plotting stack into the daemon's tools.
``--format dot`` needs no Graphviz at all.
"""

from __future__ import annotations

import shutil
import subprocess

FORMATS = ("dot", "svg", "png")


class GraphError(Exception):
    """The picture could not be made; the text says why."""


def render(dot: str, fmt: str) -> bytes:
    """``dot`` (DOT text) as ``fmt``: the text itself, or Graphviz's SVG or PNG."""
    if fmt == "dot":
        return dot.encode("utf-8")
    if fmt not in FORMATS:
        raise GraphError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")
    program = shutil.which("dot")
    if program is None:
        raise GraphError("Graphviz's dot program is not installed (Debian: apt-get install "
                         "graphviz); --format dot writes the graph as text without it")
    try:
        done = subprocess.run([program, f"-T{fmt}"], input=dot.encode("utf-8"),
                              capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise GraphError(f"Graphviz failed: {error}") from None
    if done.returncode != 0 or not done.stdout:
        raise GraphError("Graphviz failed: " + done.stderr.decode(errors="replace").strip())
    return done.stdout
