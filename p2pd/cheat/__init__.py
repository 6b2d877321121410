"""Cheat prevention (spec 5.2), sans-IO: the map's cell grid and its loaders
(``mapgrid``), line of sight and reachability on it (``sight``), checks of a
peer's moves (``movement``) and the per-peer anomaly score (``anomaly``)."""
