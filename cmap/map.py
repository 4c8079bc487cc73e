"""Moved to :mod:`cmap.mapping`; ``python -m cmap.map`` and ``from cmap.map import main`` still work (old scripts)."""

from cmap.mapping.command import main, map_rasters

__all__ = ["main", "map_rasters"]

if __name__ == "__main__":
    main(prog="python -m cmap.map")
