"""Map files off the receive path (p2pd/io/maps.py): the core asks, the shell
reads and parses in a worker thread and hands the map back."""

from __future__ import annotations

import threading
from pathlib import Path

import trio

from p2pd.cheat.mapgrid import MapFiles, MapStore
from p2pd.io.maps import MapLoader, directory_reader
from p2pd.logs import get_logger
from tests.maps import gat_bytes, mapcache_bytes

ROWS = ["..#..",
        "....."]


async def test_maps_are_read_in_a_worker_thread_and_handed_to_the_core(tmp_path: Path) -> None:
    (tmp_path / "tiny.gat").write_bytes(gat_bytes(ROWS))
    (tmp_path / "bad.gat").write_bytes(b"GRAT junk")
    (tmp_path / "map_cache.dat").write_bytes(mapcache_bytes({"open": ["...", "..."]}))
    (tmp_path / "secret").write_bytes(b"not a map")
    read = directory_reader(tmp_path)
    threads: list[int] = []

    def reading(name: str) -> bytes | None:
        threads.append(threading.get_ident())
        return read(name)

    store = MapStore(loading=True)
    pumps: list[int] = []
    loader = MapLoader(store, MapFiles(reading), lambda: pumps.append(store.loaded),
                       get_logger("test"))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(loader.run)
        for name in ("tiny", "bad", "open", "nowhere", "../secret"):
            assert store.get(name) is None  # asked for; checks go on without it
        loader.poke()
        with trio.fail_after(10):
            while store.statistics()["maps_pending"]:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    tiny, opened = store.get("tiny"), store.get("open")
    assert tiny is not None and not tiny.walkable(2, 0)
    assert opened is not None and opened.width == 3
    assert store.get("bad") is None and "bad.gat" in store.errors[0]
    assert store.get("nowhere") is None and store.take_wanted() == []  # not asked again
    assert len(pumps) == 4 and store.loaded == 2  # the daemon pumps after each
    assert threads and threading.get_ident() not in threads  # never on the event loop
