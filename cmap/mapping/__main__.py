"""``python -m cmap.mapping``: the same command as ``cmap map``."""

from cmap.mapping.command import main

if __name__ == "__main__":
    main()
