"""The NAT lab: real Linux NATs, coturn and miniupnpd in network namespaces, per test.

``open_lab(kind_a, kind_b, workdir=..., turn=True)`` (and the ``nat_lab`` fixture
of ``tests/natlab/conftest.py``) builds one; see :mod:`tests.natlab.lab`.
"""

from tests.natlab.lab import (
    Lab,
    NatKind,
    Side,
    TurnServer,
    TurnSettings,
    capture_lines,
    lab_unavailable,
    open_lab,
)
from tests.natlab.netns import LabError, Netns

__all__ = ["Lab", "LabError", "NatKind", "Netns", "Side", "TurnServer", "TurnSettings",
           "capture_lines", "lab_unavailable", "open_lab"]
