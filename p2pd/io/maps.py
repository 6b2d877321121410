"""Map files for the cheat checks, read off the receive path ([sync] map_dir).

The sans-IO core asks for a map the first time a peer's event needs it
(:class:`p2pd.cheat.mapgrid.MapStore`: the check is made without the map
meanwhile). After each pump the daemon calls :meth:`MapLoader.poke`, which
passes the names asked for to :meth:`MapLoader.run`; that task reads and parses
each map in a worker thread (``trio.to_thread.run_sync``), one at a time, hands
it to the store and pumps again. A file that does not parse or cannot be read
is logged and its map stays unchecked.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import structlog
import trio

from p2pd.cheat.mapgrid import MapError, MapFiles, MapStore, Reader


def directory_reader(directory: Path) -> Reader:
    """Files from ``directory`` (the daemon's ``[sync] map_dir``)."""

    def read(filename: str) -> bytes | None:
        path = directory / filename
        return path.read_bytes() if path.is_file() else None

    return read


class MapLoader:
    def __init__(self, maps: MapStore, files: MapFiles, after: Callable[[], None],
                 log: structlog.stdlib.BoundLogger) -> None:
        self.maps = maps
        self.files = files
        self.after = after  # the daemon's pump: what waited for the map may go on
        self.log = log
        # unbounded in type only: MapStore asks for at most MAX_LOADING maps at once
        self._send, self._receive = trio.open_memory_channel[str](math.inf)
        self.failures = 0

    def poke(self) -> None:
        """Pass on the maps the core asked for since (from the daemon's pump)."""
        for name in self.maps.take_wanted():
            self._send.send_nowait(name)

    async def run(self) -> None:
        async for name in self._receive:
            error: str | None = None
            try:
                grid = await trio.to_thread.run_sync(self.files.load, name)
            except (MapError, OSError) as problem:
                grid, error = None, str(problem)
                self.log.warning("map_not_loaded", map=name, error=error)
            except Exception:  # a bug of ours: the map stays unchecked, the daemon runs on
                grid, error = None, f"{name}: internal error"
                self.failures += 1
                self.log.exception("map_load_failed", map=name)
            else:
                if grid is not None:
                    self.log.info("map_loaded", map=name, width=grid.width, height=grid.height)
            self.maps.deliver(name, grid, error)
            self.after()
