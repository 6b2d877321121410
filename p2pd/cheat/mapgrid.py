"""Map walkability: the cell grid of a map, and loaders for the files rAthena uses.

A map is a grid of ``width`` x ``height`` cells; cell (x, y) is at index
``x + y * width``. Each cell has a *type*, as in the client's ``.gat`` files and
rAthena's map cache:

====  ===========================  ========  =================
type  meaning                      walkable  line of sight
====  ===========================  ========  =================
0     ground                       yes       passes
1     wall                         no        blocked
3     walkable water               yes       passes
5     cliff or gap (shots pass)    no        passes
else  unknown                      no        blocked
====  ===========================  ========  =================

Two loaders read the two formats (both documented byte by byte in
docs/protocol.md, "Map files"); each raises only :class:`MapError` on bad input:

- :func:`load_gat_untrusted`: a ``.gat`` file: ``GRAT``, version (2 bytes),
  width and height (little-endian u32), then 20 bytes per cell, row by row from
  y = 0: four little-endian f32 corner heights and a little-endian u32 type.
- :func:`load_mapcache_untrusted`: rAthena's ``map_cache.dat``: a header (u32
  file size, u16 map count, 2 bytes padding), then per map a 20-byte record
  (name, 12 bytes NUL-padded; xs, ys as little-endian i16; len as
  little-endian i32) followed by ``len`` bytes of zlib-compressed cell types,
  one byte per cell.

:class:`MapStore` holds the grids by map name, bounded, and asks the daemon's
shell for a map it does not know yet; :class:`MapFiles` is what the shell uses
to read one (in a worker thread: :mod:`p2pd.io.maps`).
"""

from __future__ import annotations

import re
import struct
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Final

WALKABLE_TYPES: Final = frozenset({0, 3})
SIGHT_TYPES: Final = frozenset({0, 3, 5})  # line of sight passes
MAX_SIDE: Final = 1024  # cells; positions are 0..1023 (p2pd.ipc.messages.MAX_CELL)
GAT_MAGIC: Final = b"GRAT"
_GAT_HEADER = struct.Struct("<4sBBII")
_GAT_CELL = struct.Struct("<ffffI")
_CACHE_HEADER = struct.Struct("<IHxx")
_CACHE_MAP = struct.Struct("<12shhi")
_MAP_FILE_NAME = re.compile(r"[a-z0-9_@-][a-z0-9_@.-]{0,31}")

__all__ = ["MapError", "MapFiles", "MapGrid", "MapStore", "index_mapcache_untrusted",
           "load_gat_untrusted", "load_mapcache_untrusted", "valid_map_file_name"]


class MapError(ValueError):
    """A map file is refused; the message says why."""


class MapGrid:
    """The cells of one map: walkability and line of sight per cell."""

    __slots__ = ("_sight", "_walk", "height", "name", "width")

    def __init__(self, name: str, width: int, height: int, types: bytes) -> None:
        if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
            raise MapError(f"map {name!r}: size {width}x{height} outside 1..{MAX_SIDE}")
        if len(types) != width * height:
            raise MapError(f"map {name!r}: {len(types)} cells for {width}x{height}")
        self.name = name
        self.width = width
        self.height = height
        walk = bytes(1 if t in WALKABLE_TYPES else 0 for t in range(256))
        sight = bytes(1 if t in SIGHT_TYPES else 0 for t in range(256))
        self._walk = bytes(types).translate(walk)
        self._sight = bytes(types).translate(sight)

    @classmethod
    def from_rows(cls, name: str, rows: Iterable[str]) -> MapGrid:
        """A small map drawn as text, for tests and examples: one string per row,
        the first row is y = 0; ``.`` ground, ``#`` wall, ``~`` water, ``^`` cliff."""
        codes = {".": 0, "#": 1, "~": 3, "^": 5}
        lines = list(rows)
        width = len(lines[0]) if lines else 0
        types = bytearray()
        for line in lines:
            if len(line) != width:
                raise MapError(f"map {name!r}: rows of different lengths")
            try:
                types.extend(codes[c] for c in line)
            except KeyError as error:
                raise MapError(f"map {name!r}: unknown cell {error.args[0]!r}") from None
        return cls(name, width, len(lines), bytes(types))

    def inside(self, x: int, y: int) -> bool:
        return 0 <= x < self.width and 0 <= y < self.height

    def walkable(self, x: int, y: int) -> bool:
        """A cell a unit may stand on (outside the map: no)."""
        return self.inside(x, y) and self._walk[x + y * self.width] == 1

    def sight_passes(self, x: int, y: int) -> bool:
        """A cell line of sight crosses (a cliff does, a wall does not)."""
        return self.inside(x, y) and self._sight[x + y * self.width] == 1


def load_gat_untrusted(name: str, data: bytes) -> MapGrid:
    """A ``.gat`` file's cells. Raises MapError for anything malformed."""
    if len(data) < _GAT_HEADER.size:
        raise MapError(f"{name}.gat: {len(data)} bytes, shorter than its header")
    magic, _major, _minor, width, height = _GAT_HEADER.unpack_from(data)
    if magic != GAT_MAGIC:
        raise MapError(f"{name}.gat: magic {magic!r}, expected {GAT_MAGIC!r}")
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise MapError(f"{name}.gat: size {width}x{height} outside 1..{MAX_SIDE}")
    cells = width * height
    expected = _GAT_HEADER.size + cells * _GAT_CELL.size
    if len(data) != expected:
        raise MapError(f"{name}.gat: {len(data)} bytes, expected {expected} for "
                       f"{width}x{height} cells")
    start = _GAT_HEADER.size + 16  # the type's low byte in each 20-byte cell
    types = bytearray(data[start::_GAT_CELL.size])
    for high in (1, 2, 3):  # a type above 255 is unknown: not walkable, blocks sight
        column = data[start + high::_GAT_CELL.size]
        if any(column):
            for i, value in enumerate(column):
                if value:
                    types[i] = 255
    return MapGrid(name, width, height, bytes(types))


def index_mapcache_untrusted(data: bytes) -> dict[str, tuple[int, int, int, int]]:
    """The maps of an rAthena ``map_cache.dat`` without inflating them: name ->
    (xs, ys, offset of the compressed cells, their length). Raises MapError for a
    malformed header, record or size."""
    if len(data) < _CACHE_HEADER.size:
        raise MapError(f"map cache: {len(data)} bytes, shorter than its header")
    file_size, count = _CACHE_HEADER.unpack_from(data)
    if file_size != len(data):
        raise MapError(f"map cache: header says {file_size} bytes, the file has {len(data)}")
    index: dict[str, tuple[int, int, int, int]] = {}
    offset = _CACHE_HEADER.size
    for number in range(count):
        if offset + _CACHE_MAP.size > len(data):
            raise MapError(f"map cache: map {number} of {count} cut short")
        raw_name, xs, ys, length = _CACHE_MAP.unpack_from(data, offset)
        offset += _CACHE_MAP.size
        try:
            name = raw_name.split(b"\0", 1)[0].decode("ascii")
        except UnicodeDecodeError:
            raise MapError(f"map cache: map {number}: name is not ASCII") from None
        if not name:
            raise MapError(f"map cache: map {number}: empty name")
        if not (0 < xs <= MAX_SIDE and 0 < ys <= MAX_SIDE):
            raise MapError(f"map cache: {name}: size {xs}x{ys} outside 1..{MAX_SIDE}")
        if length < 0 or offset + length > len(data):
            raise MapError(f"map cache: {name}: {length} bytes of cells past the end")
        index[name] = (xs, ys, offset, length)
        offset += length
    if offset != len(data):
        raise MapError(f"map cache: {len(data) - offset} bytes after the last map")
    return index


def _inflate_map(data: bytes, name: str, entry: tuple[int, int, int, int]) -> MapGrid:
    xs, ys, offset, length = entry
    inflater = zlib.decompressobj()
    try:
        cells = inflater.decompress(data[offset:offset + length], xs * ys + 1)
    except zlib.error as error:
        raise MapError(f"map cache: {name}: cells do not inflate ({error})") from None
    if len(cells) != xs * ys or not inflater.eof:
        raise MapError(f"map cache: {name}: cells inflate to {len(cells)} bytes "
                       f"(or more), expected {xs * ys}")
    return MapGrid(name, xs, ys, cells)


def load_mapcache_untrusted(data: bytes, names: Iterable[str] | None = None) -> dict[str, MapGrid]:
    """The maps of an rAthena ``map_cache.dat`` (those in ``names``, or all).
    Raises MapError for anything malformed (sizes, names, a cell block that does
    not inflate to exactly xs * ys bytes)."""
    index = index_mapcache_untrusted(data)
    wanted = index if names is None else [n for n in names if n in index]
    return {name: _inflate_map(data, name, index[name]) for name in wanted}


Reader = Callable[[str], bytes | None]
"""A file of the map directory by name (``prontera.gat``, ``map_cache.dat``), or
None when there is none: the one piece of I/O, given by the daemon's shell."""

MAX_LOADING = 8  # maps asked for and not loaded yet, at most
MAX_MISSING = 4096  # names remembered as having no map (not asked for again)


def valid_map_file_name(name: str) -> bool:
    """Whether a map name (from a peer) may be used as a file name."""
    return _MAP_FILE_NAME.fullmatch(name) is not None


class MapFiles:
    """The map files of one directory through ``read``: ``<name>.gat``, else the
    map in ``map_cache.dat`` (read and indexed once). Blocking: the daemon's
    shell calls :meth:`load` in a worker thread, one map at a time
    (:mod:`p2pd.io.maps`)."""

    def __init__(self, read: Reader) -> None:
        self._read = read
        self._cache = b""
        self._cache_index: dict[str, tuple[int, int, int, int]] | None = None

    def load(self, name: str) -> MapGrid | None:
        """The grid of ``name``, or None when neither file has it. Raises
        MapError for a file that does not parse, OSError when one cannot be read."""
        if not valid_map_file_name(name):
            return None  # never a path from a peer's map name
        gat = self._read(f"{name}.gat")
        if gat is not None:
            return load_gat_untrusted(name, gat)
        if self._cache_index is None:
            self._cache_index = {}
            cache = self._read("map_cache.dat")
            if cache is not None:
                self._cache = cache
                self._cache_index = index_mapcache_untrusted(cache)
        entry = self._cache_index.get(name)
        return None if entry is None else _inflate_map(self._cache, name, entry)


class MapStore:
    """Grids by map name, at most ``limit`` kept (least recently used forgotten).

    Sans-IO: with ``loading`` (the daemon has a ``[sync] map_dir``) a map not
    known yet is *asked for* on first use (:meth:`get` returns None and the
    name waits in :meth:`take_wanted` for the daemon's shell, which loads it in
    a worker thread and hands it back with :meth:`deliver`); until then, and
    for good when no file has it, the map is not checked: every cell counts as
    walkable and clear (counted in ``unchecked``). At most MAX_LOADING maps are
    asked for at once; a name that is no valid file name is never asked for.
    Without ``loading`` only grids added by hand (:meth:`add`) are known."""

    def __init__(self, loading: bool = False, limit: int = 16) -> None:
        self.loading = loading
        self.limit = limit
        self._grids: OrderedDict[str, MapGrid] = OrderedDict()
        self._missing: set[str] = set()
        self._wanted: list[str] = []  # asked for, not yet taken by the shell
        self._in_flight: set[str] = set()  # taken, not yet delivered
        self.errors: deque[str] = deque(maxlen=32)  # files that did not load, for the log
        self.loaded = 0
        self.unchecked = 0  # lookups of a map being loaded: checked without it

    def add(self, grid: MapGrid) -> None:
        self._grids[grid.name] = grid
        self._grids.move_to_end(grid.name)
        while len(self._grids) > self.limit:
            self._grids.popitem(last=False)

    def get(self, name: str) -> MapGrid | None:
        grid = self._grids.get(name)
        if grid is not None:
            self._grids.move_to_end(name)
            return grid
        if not self.loading or name in self._missing:
            return None
        if self.pending(name):
            self.unchecked += 1
        elif len(self._wanted) + len(self._in_flight) < MAX_LOADING:
            if valid_map_file_name(name):
                self._wanted.append(name)
                self.unchecked += 1
            else:
                self._forget(name)
        return None

    def pending(self, name: str) -> bool:
        """Asked for and not loaded (nor found missing) yet."""
        return name in self._in_flight or name in self._wanted

    def take_wanted(self) -> list[str]:
        """The maps to load now (each once): the shell's part."""
        wanted, self._wanted = self._wanted, []
        self._in_flight.update(wanted)
        return wanted

    def deliver(self, name: str, grid: MapGrid | None, error: str | None = None) -> None:
        """A map the shell loaded (None: no file has it, or ``error``)."""
        self._in_flight.discard(name)
        if grid is not None:
            self.loaded += 1
            self.add(grid)
        else:
            self._forget(name)
            if error is not None:
                self.errors.append(error)

    def _forget(self, name: str) -> None:
        if len(self._missing) < MAX_MISSING:
            self._missing.add(name)

    def statistics(self) -> dict[str, int]:
        return {"maps_loaded": self.loaded, "maps_kept": len(self._grids),
                "maps_pending": len(self._wanted) + len(self._in_flight),
                "maps_missing": len(self._missing), "maps_unchecked": self.unchecked}
