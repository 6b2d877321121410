"""Line of sight and reachability on a map's cell grid (pure functions).

Line of sight walks the cells of the straight line between two cells, one cell
per step along the longer axis (Bresenham), as Athena-family servers do: a cell
that blocks sight (a wall, an unknown type) on the way blocks the line; a cliff
does not. The end cells themselves are not tested (a unit stands on them).

Reachability asks whether a unit could have walked from one cell to another
in at most ``steps`` moves over walkable cells: eight directions, a diagonal
step only when both cells beside it are walkable (no cutting wall corners).

:func:`sight_from_walk` asks whether a unit that was on one cell a while ago
(``steps`` moves' worth) could now see a target from any cell it may have
walked to: how a walking player is judged, whose place is known only within
what it may have walked since its last report.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from enum import Enum

from p2pd.cheat.mapgrid import MapGrid

MAX_SEARCH_STEPS = 40  # a longer search is not made: the move counts as reachable


def line_cells(x0: int, y0: int, x1: int, y1: int) -> Iterator[tuple[int, int]]:
    """The cells from (x0, y0) to (x1, y1), both included, one per step along
    the longer axis."""
    dx, dy = abs(x1 - x0), abs(y1 - y0)
    sx = 1 if x1 > x0 else -1
    sy = 1 if y1 > y0 else -1
    err = dx - dy
    x, y = x0, y0
    while True:
        yield x, y
        if x == x1 and y == y1:
            return
        e2 = 2 * err
        if e2 > -dy:
            err -= dy
            x += sx
        if e2 < dx:
            err += dx
            y += sy


def line_of_sight(grid: MapGrid, a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether nothing blocks sight between the cells ``a`` and ``b``."""
    return all(cell in (a, b) or grid.sight_passes(*cell) for cell in line_cells(*a, *b))


def straight_walk_clear(grid: MapGrid, a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether every cell on the straight line from ``a`` to ``b`` is walkable."""
    return all(grid.walkable(*cell) for cell in line_cells(*a, *b))


def reachable(grid: MapGrid, a: tuple[int, int], b: tuple[int, int], steps: int) -> bool:
    """Whether a unit on ``a`` can stand on ``b`` after at most ``steps`` moves
    (breadth-first within the square the steps allow). ``b`` must be walkable;
    ``a`` need not be (the last accepted place may predate a map change).
    Beyond :data:`MAX_SEARCH_STEPS` the answer is yes: such a move is judged by
    speed alone."""
    if not grid.walkable(*b):
        return False
    if max(abs(a[0] - b[0]), abs(a[1] - b[1])) > steps:
        return False
    if steps > MAX_SEARCH_STEPS or straight_walk_clear(grid, a, b):
        return True
    seen = {a}
    frontier: deque[tuple[int, int, int]] = deque([(a[0], a[1], 0)])
    while frontier:
        x, y, depth = frontier.popleft()
        if depth == steps:
            continue
        for nx, ny in _steps(grid, x, y):
            if (nx, ny) in seen:
                continue
            # cells farther from b than the steps left can never get there
            if max(abs(nx - b[0]), abs(ny - b[1])) > steps - depth - 1:
                continue
            if (nx, ny) == b:
                return True
            seen.add((nx, ny))
            frontier.append((nx, ny, depth + 1))
    return False


class Sight(Enum):
    SEEN = "seen"  # some cell the unit may be on sees the target
    FAR = "far"  # every such cell is beyond view range of it
    BLOCKED = "blocked"  # some are in range, walls block every one of them


def _steps(grid: MapGrid, x: int, y: int) -> Iterator[tuple[int, int]]:
    """The cells one step from (x, y) that a player can walk to: walkable, and a
    diagonal step only past two walkable cells (no cutting a wall's corner)."""
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            nx, ny = x + dx, y + dy
            if (dx == dy == 0) or not grid.walkable(nx, ny):
                continue
            if dx and dy and not (grid.walkable(x + dx, y) and grid.walkable(x, y + dy)):
                continue
            yield nx, ny


def _chebyshev(a: tuple[int, int], b: tuple[int, int]) -> int:
    return max(abs(a[0] - b[0]), abs(a[1] - b[1]))


def sight_from_walk(grid: MapGrid | None, start: tuple[int, int], steps: int,
                    target: tuple[int, int], view_range: int) -> Sight:
    """Whether a unit on ``start`` that may since have made up to ``steps``
    moves (over walkable cells, as :func:`reachable`) could see ``target``
    within ``view_range`` cells from where it is now. Breadth-first from
    ``start``, the cells nearest it first; cells from which the target is out
    of range even with the moves left are not searched further. Without a grid
    only the range counts. The work grows with ``steps`` squared: callers
    bound it."""
    if grid is None:
        return Sight.SEEN if _chebyshev(start, target) <= view_range + steps else Sight.FAR
    in_range = False
    seen = {start}
    frontier: deque[tuple[int, int, int]] = deque([(start[0], start[1], 0)])
    while frontier:
        x, y, depth = frontier.popleft()
        distance = _chebyshev((x, y), target)
        if distance <= view_range:
            in_range = True
            if line_of_sight(grid, (x, y), target):
                return Sight.SEEN
        if depth == steps or distance - (steps - depth) > view_range:
            continue
        for nx, ny in _steps(grid, x, y):
            if (nx, ny) not in seen:
                seen.add((nx, ny))
                frontier.append((nx, ny, depth + 1))
    return Sight.BLOCKED if in_range else Sight.FAR
