"""The connectivity matrix in the NAT lab: every pair of NAT kinds links, with real
``p2pd run`` daemons behind real Linux NATs (and miniupnpd), a real ``p2pd
coordinator`` and coturn on the lab's internet; directly wherever the NATs allow
it, through TURN otherwise.

One test per pair, each in a lab of its own (tests/natlab/matrix.py,
``run_pair_in_own_lab``): the pair's two NATs, coturn (and miniupnpd), then the
coordinator and both players' daemons started at once; once both are registered
and done gathering candidates they meet on a map, and the test asserts each
side's path and the address it sends to, and a chat line each way. The lab and
every process in it are gone when the test ends, passed or failed. Each test's
result goes into a session-wide table, printed with the time each pair took to
connect at the end of the test run (tests/natlab/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pd.ipc.fields import split_address
from tests.natlab.lab import TURN_ADDRESS, NatKind, lab_unavailable
from tests.natlab.matrix import EXPECTED, PAIRS, PairResult, run_pair_in_own_lab


def _host(address: str) -> str:
    if address.startswith("turn/"):
        address = address[len("turn/"):]
    return split_address(address)[0]


@pytest.mark.parametrize("pair", PAIRS, ids=[f"{a.value}-{b.value}" for a, b in PAIRS])
async def test_each_pair_of_nat_kinds_links_on_the_path_the_nats_allow(
        pair: tuple[NatKind, NatKind], tmp_path: Path,
        matrix_results: dict[tuple[NatKind, NatKind], PairResult]) -> None:
    reason = lab_unavailable()
    if reason is not None:
        pytest.skip(reason)
    expected, why = EXPECTED[pair]
    result = matrix_results[pair] = PairResult(pair, expected)
    await run_pair_in_own_lab(result, tmp_path)
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
