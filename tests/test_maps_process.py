"""[sync] map_dir in the daemon as users run it: real processes on loopback. The
first position on a map makes the daemon load it off the receive path (in a
worker thread); from then on a move onto a wall is refused."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio

from tests.daemons import link, open_client, running_daemons
from tests.maps import gat_bytes

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX process control")


def town_rows() -> list[str]:
    """64 x 64 cells, a wall along x = 32."""
    return ["." * 32 + "#" + "." * 31 for _ in range(64)]


async def test_a_map_is_loaded_on_first_use_and_then_walls_are_checked(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    maps.mkdir()
    (maps / "town.gat").write_bytes(gat_bytes(town_rows()))
    with running_daemons(tmp_path, 2, sync={"map_dir": str(maps)}) as (a, b):
        async with await open_client(a) as client_a, await open_client(b) as client_b:
            await link(a, b, client_a, client_b)
            tick = 5_000_000
            await client_a.request("position", map="town", x=30, y=10, dir=6, tick=tick)
            with trio.fail_after(10):  # loaded by B's worker thread, then kept
                while (await client_b.request("stats"))["sync"]["maps_loaded"] != 1:
                    await trio.sleep(0.05)
            await trio.sleep(1.0)  # a cell a second: every step possible
            await client_a.request("position", map="town", x=31, y=10, dir=6, tick=tick + 1000)
            await trio.sleep(1.0)
            await client_a.request("position", map="town", x=32, y=10, dir=6, tick=tick + 2000)
            with trio.fail_after(10):  # onto the wall: refused
                while True:
                    stats = await client_b.request("stats")
                    if stats["sync"]["offences"].get("rejected_move"):
                        break
                    await trio.sleep(0.05)
            assert stats["sync"]["maps_pending"] == 0 and stats["sync"]["maps_kept"] == 1
            peers = (await client_b.request("peers"))["peers"]
            assert peers[0]["sync"]["moves_rejected"] == 1
