"""The connectivity matrix in the NAT lab: every pair of NAT kinds links, with real
``p2pd run`` daemons behind real Linux NATs (and miniupnpd), a real ``p2pd
coordinator`` and coturn on the lab's internet; directly wherever the NATs allow
it, through TURN otherwise. The pairs run once, together (tests/natlab/matrix.py:
one lab of ten players, three rounds of five pairs); each test here asserts its
pair. The matrix, with the time each pair took to connect, is printed at the end
of the test run."""

from __future__ import annotations

import pytest

from p2pd.ipc.fields import split_address
from tests.natlab.lab import TURN_ADDRESS, NatKind
from tests.natlab.matrix import EXPECTED, PAIRS, MatrixRun, PairResult


def _host(address: str) -> str:
    if address.startswith("turn/"):
        address = address[len("turn/"):]
    return split_address(address)[0]


@pytest.mark.parametrize("pair", PAIRS, ids=[f"{a.value}-{b.value}" for a, b in PAIRS])
def test_each_pair_of_nat_kinds_links_on_the_path_the_nats_allow(
        matrix: MatrixRun, pair: tuple[NatKind, NatKind]) -> None:
    result: PairResult = matrix.results[pair]
    expected, why = EXPECTED[pair]
    assert result.connected, result.error
    assert result.paths == (expected, expected), (
        f"{result.name}: {result.paths} (first {result.first_paths}), expected {expected}: {why}")
    assert result.addresses is not None
    assert result.chat, f"{result.name}: a chat line each way did not arrive"
    for sends_to, peer_wan, peer_mapped in ((result.addresses[0], result.wan[1], result.mapped[1]),
                                            (result.addresses[1], result.wan[0], result.mapped[0])):
        if expected == "direct":
            # straight to the peer's router: its public address, never a private one
            assert _host(sends_to) == peer_wan, (result.name, result.addresses, result.wan)
            if peer_mapped is not None:  # behind miniupnpd: to the port it mapped
                assert sends_to == peer_mapped, (result.name, result.addresses, result.mapped)
        else:
            # through coturn: this side's allocation towards the peer's router, or
            # straight to the peer's relayed address
            assert (sends_to.startswith("turn/") and _host(sends_to) == peer_wan) or (
                _host(sends_to) == TURN_ADDRESS), (result.name, result.addresses)
