"""The coordinator's presence index: who is where, and who is near whom (spec §5.2).

Every registered daemon reports its player's map and cell at a low rate. The
index keeps those positions and answers the question the coordinator asks
when it introduces peers: which daemons are nearest to this one? It is pure:
no clock, no socket, no randomness; the coordinator's server drives it.

Information hiding: :meth:`PresenceIndex.nearest` offers only daemons whose
player is within ``view_range`` cells of the asking daemon's player (the
Chebyshev distance ``max(|dx|, |dy|)``, as the game's square view area), on
the same map. A daemon learns nothing of players it could not see in game.

Layout, for 10,000 daemons at tens of thousands of updates a second:

- One record per daemon (a ``__slots__`` object): its map, cell, bucket key
  and slot in that bucket. A move within the same bucket writes the record's
  cell and touches nothing else.
- Per map a uniform grid of square buckets ``view_range`` cells wide, so a
  view square (the cell +- ``view_range``) touches at most 3 x 3 buckets. A
  bucket is a list of records, each record knowing its slot: leaving a bucket
  moves the list's last record into the hole (constant time, no hash table
  per bucket; a field map with one player per bucket costs a short list).
- A bucket is deleted when its last record leaves, a map when its last
  daemon leaves; map names are interned, one string per map. Every
  dictionary is therefore bounded by the number of registered daemons, however
  many map names they report.

Cells are 0..65535 on each axis, the bound that keeps the bucket key (the
bucket's column and row packed into one int) sound; the wire's codecs allow
0..1023 (``p2pd.channels.position_codec.MAX_CELL``), and the coordinator's parser
should refuse more before a report reaches the index.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from p2pd.mesh.policy import VIEW_RANGE

_AXIS = 16  # bits per axis in a bucket key; cells are 0..65535
_CELL_MAX = (1 << _AXIS) - 1
_VIEW_MAX = 255  # the game's is 14; nearest() keeps one list per distance up to it


class _Map:
    """One map: its interned name, its buckets and how many daemons are on it."""

    __slots__ = ("buckets", "count", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.buckets: dict[int, list[_Entry]] = {}
        self.count = 0


class _Entry:
    """One registered daemon: where its player is and where the index keeps it."""

    __slots__ = ("daemon", "key", "map", "slot", "x", "y")

    def __init__(self, daemon: int, map_: _Map, x: int, y: int, key: int) -> None:
        self.daemon = daemon
        self.map = map_
        self.x = x
        self.y = y
        self.key = key  # the bucket: column << 16 | row
        self.slot = 0  # the index in that bucket's list


@dataclass(frozen=True, slots=True)
class PresenceStatistics:
    """A snapshot for the operator: registered daemons, maps with any, buckets in use."""

    daemons: int
    maps: int
    buckets: int


def _first(pair: tuple[int, list[_Entry]]) -> int:
    return pair[0]


class PresenceIndex:
    """Positions of registered daemons, per map, with nearest-in-view queries.

    Daemons are the small ints the coordinator assigns. Map names are what the
    daemons report; cells are 0..65535 (``ValueError`` otherwise, with the
    index unchanged).
    """

    def __init__(self, view_range: int = VIEW_RANGE) -> None:
        if not 1 <= view_range <= _VIEW_MAX:
            raise ValueError(f"view_range must be within 1..{_VIEW_MAX}, got {view_range}")
        self._view_range = view_range
        self._rings: list[list[int]] = [[] for _ in range(view_range + 1)]  # for nearest()
        self._entries: dict[int, _Entry] = {}
        self._maps: dict[str, _Map] = {}

    @property
    def view_range(self) -> int:
        return self._view_range

    def update(self, daemon: int, map_name: str, x: int, y: int) -> bool:
        """Record a daemon's position; True if it is new or changed bucket or map.

        A True answer is the coordinator's cue to send fresh candidates: the
        set of daemons that can be in view changed. A move within the bucket
        returns False.
        """
        if (x | y) >> _AXIS:  # negative or beyond 65535
            raise ValueError(f"cell ({x}, {y}) outside 0..{_CELL_MAX}")
        view = self._view_range
        key = (x // view) << _AXIS | (y // view)
        entry = self._entries.get(daemon)
        if entry is not None:
            if entry.key == key and entry.map.name == map_name:
                entry.x = x  # the common case: a step within the bucket
                entry.y = y
                return False
            self._leave(entry)
        map_ = self._maps.get(map_name)
        if map_ is None:
            map_ = self._maps[map_name] = _Map(sys.intern(map_name))
        if entry is None:
            entry = self._entries[daemon] = _Entry(daemon, map_, x, y, key)
        else:
            entry.map = map_
            entry.x = x
            entry.y = y
            entry.key = key
        bucket = map_.buckets.get(key)
        if bucket is None:
            bucket = map_.buckets[key] = []
        entry.slot = len(bucket)
        bucket.append(entry)
        map_.count += 1
        return True

    def remove(self, daemon: int) -> None:
        """Forget a daemon (unregistered or gone); nothing happens for an unknown one."""
        entry = self._entries.pop(daemon, None)
        if entry is not None:
            self._leave(entry)

    def _leave(self, entry: _Entry) -> None:
        """Take a record out of its bucket, dropping the bucket and map when they empty."""
        map_ = entry.map
        bucket = map_.buckets[entry.key]
        last = bucket.pop()
        if last is not entry:
            bucket[entry.slot] = last
            last.slot = entry.slot
        elif not bucket:
            del map_.buckets[entry.key]
        map_.count -= 1
        if not map_.count:
            del self._maps[map_.name]

    def position(self, daemon: int) -> tuple[str, int, int] | None:
        """The daemon's (map, x, y), or None for one not registered."""
        entry = self._entries.get(daemon)
        if entry is None:
            return None
        return entry.map.name, entry.x, entry.y

    def nearest(self, daemon: int, count: int) -> list[tuple[int, int]]:
        """Up to ``count`` other daemons in view of this one, as (daemon, distance in cells).

        Nearest first, ties by daemon id; only daemons on the same map within
        ``view_range`` cells (Chebyshev), never the daemon itself. Raises
        ``KeyError`` for a daemon not registered. The work is bounded by the
        3 x 3 buckets around the daemon, visited nearest first (by their
        nearest cell): once ``count`` are found, a bucket whose nearest cell is
        farther than the ``count``-th is not read, nor any after it (in a crowd,
        most of them). The candidates are sorted as they are found, into one
        list per distance, so only the ties need sorting.
        """
        entry = self._entries[daemon]
        if count <= 0:
            return []
        view = self._view_range
        x = entry.x
        y = entry.y
        bx = x // view
        by = y // view
        # the buckets around, nearest first by their nearest cell to (x, y)
        get = entry.map.buckets.get
        near: list[tuple[int, list[_Entry]]] = []
        rows = range(by - 1 if by else 0, min(by + 1, _CELL_MAX // view) + 1)
        for column in range(bx - 1 if bx else 0, bx + 2):
            base = column << _AXIS
            left = column * view
            gap_x = left - x if left > x else x - left - view + 1 if x >= left + view else 0
            for row in rows:
                bucket = get(base + row)
                if bucket is not None:
                    top = row * view
                    gap_y = top - y if top > y else y - top - view + 1 if y >= top + view else 0
                    near.append((gap_x if gap_x > gap_y else gap_y, bucket))
        near.sort(key=_first)
        # candidates sorted by distance as they come: one list of daemons per distance
        # (the index's own, emptied again before returning: no lists made per query)
        rings = self._rings
        try:
            held = 0  # candidates found, itself included
            for gap, bucket in near:
                if held > count and gap > self._kth(count):
                    break  # every daemon left is farther than the count found: a crowd
                for other in bucket:
                    dx = other.x - x
                    if dx < 0:
                        dx = -dx
                    dy = other.y - y
                    if dy < 0:
                        dy = -dy
                    distance = dx if dx > dy else dy
                    if distance <= view:
                        rings[distance].append(other.daemon)
                        held += 1
            rings[0].remove(entry.daemon)  # itself, at distance 0 in its own bucket
            found: list[tuple[int, int]] = []
            for distance, ring in enumerate(rings):
                if ring:
                    if len(found) < count:
                        ring.sort()  # ties by daemon id
                        found += [(other, distance) for other in ring[:count - len(found)]]
                    ring.clear()
        except BaseException:  # never leave a daemon behind for the next query
            for ring in rings:
                ring.clear()
            raise
        return found

    def _kth(self, count: int) -> int:
        """The distance of the ``count``-th candidate in the rings, the asking daemon
        (at distance 0) not counted; call only with more than ``count`` held."""
        seen = -1  # itself
        for distance, ring in enumerate(self._rings):
            seen += len(ring)
            if seen >= count:
                return distance
        raise AssertionError("fewer candidates held than counted")

    def within(self, map_name: str, x: int, y: int, radius: int) -> list[int]:
        """Daemons on ``map_name`` within ``radius`` cells (Chebyshev) of (x, y), by id.

        A position query, not a daemon's: a daemon standing on the cell is
        included. The work is bounded by the buckets the square touches, or
        by the map's buckets when the square is larger than the map's extent.
        """
        map_ = self._maps.get(map_name)
        if map_ is None or radius < 0:
            return []
        view = self._view_range
        last = _CELL_MAX // view
        columns = range(max(x - radius, 0) // view, min((x + radius) // view, last) + 1)
        rows = range(max(y - radius, 0) // view, min((y + radius) // view, last) + 1)
        buckets = map_.buckets
        if len(columns) * len(rows) > len(buckets):
            chosen = list(buckets.values())
        else:
            chosen = [bucket for column in columns for row in rows
                      if (bucket := buckets.get(column << _AXIS | row)) is not None]
        return sorted(other.daemon for bucket in chosen for other in bucket
                      if abs(other.x - x) <= radius and abs(other.y - y) <= radius)

    def __len__(self) -> int:
        return len(self._entries)

    def maps(self) -> dict[str, int]:
        """Daemons per map, for the operator's status; maps without daemons are absent."""
        return {name: map_.count for name, map_ in self._maps.items()}

    def statistics(self) -> PresenceStatistics:
        return PresenceStatistics(
            daemons=len(self._entries), maps=len(self._maps),
            buckets=sum(len(map_.buckets) for map_ in self._maps.values()))
