"""Small generated maps for the sync and cheat tests, and their files (.gat and
an rAthena map cache) written the way the client and rAthena write them."""

from __future__ import annotations

import struct
import zlib

from p2pd.cheat.mapgrid import MapGrid

_CODES = {".": 0, "#": 1, "~": 3, "^": 5}


def types_of(rows: list[str]) -> bytes:
    return bytes(_CODES[c] for row in rows for c in row)


def gat_bytes(rows: list[str], version: tuple[int, int] = (1, 2)) -> bytes:
    """A .gat file: GRAT, version, width, height, 20 bytes per cell (heights, type)."""
    height, width = len(rows), len(rows[0])
    out = bytearray(b"GRAT" + bytes(version) + struct.pack("<II", width, height))
    for t in types_of(rows):
        out += struct.pack("<ffffI", 1.0, 2.0, 3.0, 4.0, t)
    return bytes(out)


def mapcache_bytes(maps: dict[str, list[str]]) -> bytes:
    """An rAthena map_cache.dat holding ``maps``."""
    body = bytearray()
    for name, rows in maps.items():
        cells = zlib.compress(types_of(rows))
        body += struct.pack("<12shhi", name.encode(), len(rows[0]), len(rows), len(cells))
        body += cells
    return struct.pack("<IHxx", 8 + len(body), len(maps)) + bytes(body)


def open_field(name: str = "field", size: int = 64) -> MapGrid:
    return MapGrid.from_rows(name, ["." * size] * size)


def walled_field(name: str = "walled", size: int = 64, wall_x: int = 32,
                 gap_y: int | None = None) -> MapGrid:
    """An open square with a wall along x = wall_x (a gap at gap_y, if given)."""
    rows = []
    for y in range(size):
        row = ["."] * size
        if y != gap_y:
            row[wall_x] = "#"
        rows.append("".join(row))
    return MapGrid.from_rows(name, rows)
