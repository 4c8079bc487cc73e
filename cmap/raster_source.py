"""The raster-source options: which images a stack is read from, and how their values and grid are read.

One typed object for ``cmap map`` and ``cmap extract`` (and their Python functions): parsed from the
command line, turned into a :class:`~cmap.data.raster.RasterStack` by :func:`cmap.data.stac.open_stack`.
This module imports nothing heavy, so a command's ``--help`` that lists these options starts fast.
"""

from dataclasses import dataclass, fields
from typing import Any

DEFAULT_PATTERN = r"(?P<date>\d{4}-\d{2}-\d{2})"

#: Options of STAC and Sentinel-2 inputs only: a folder of rasters is read on its own grid, unmasked.
STAC_ONLY = ("resolution", "masked_classes", "grid_crs", "bounds")


@dataclass(frozen=True)
class RasterSource:
    """The raster source: where the images are and how their values and grid are read.

    Args:
        rasters: folder of rasters, one file per date (or per date and band), see ``pattern``; or STAC
            items (a JSON file or URL, a catalogue folder) or a folder of Sentinel-2 L2A products (SAFE
            folders or COG folders): :mod:`cmap.data.stac`; or, with ``search``, a STAC API's URL.
        pattern: regular expression on file names with a ``date`` group, and a ``band`` group
            when each file holds one band (:mod:`cmap.data.raster`).
        scale: physical value = raw * scale + offset, as in the training data (default: a
            checkpoint's raw-value convention when its samples came from rasters; 1e-4 for
            Sentinel-2 L2A; else 1).
        offset: see ``scale`` (default: the checkpoint's, else 0).
        valid_range: raw values outside [low, high] are missing (clouds, fill values); default as
            ``scale``.
        resolution: STAC: pixel size of the target grid, in its CRS's units (default: the finest band's).
        masked_classes: Sentinel-2: SCL classes that make a date missing (default: no data, saturated,
            cloud shadows, clouds, cirrus, snow: ``[0, 1, 3, 8, 9, 10, 11]``; ``[]``: none).
        resampling: STAC: how bands off the target grid are resampled (``nearest``, ``bilinear``...).
        grid_crs: STAC: the CRS of the target grid (``EPSG:32631``; default: the first item's).
        bounds: STAC: ``[left, bottom, right, top]`` of the area to read, in the grid's CRS (default:
            every item), snapped outwards to the grid's pixels.
        search: a STAC API search, ``rasters`` being the API's URL: ``pystac_client.Client.search``'s keywords
            (``{collections: [sentinel-2-l2a], datetime: 2022-05-01/2022-09-30, bbox: [west, south, east,
            north], max_cloud_cover: 20}``; default area: the labels' or ``--parcels``' footprint, or ``bounds``
            in ``grid_crs``).
            The items found are saved beside the output (``<output>_stac_items.json``) and read from there:
            :mod:`cmap.data.stac_search`.
    """

    rasters: str
    pattern: str = DEFAULT_PATTERN
    scale: float | None = None
    offset: float | None = None
    valid_range: tuple[float, float] | None = None
    resolution: float | None = None
    masked_classes: list[int] | None = None
    resampling: str = "nearest"
    grid_crs: str | None = None
    bounds: tuple[float, float, float, float] | None = None
    search: dict[str, Any] | None = None

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "RasterSource":
        """The source of a command's options (``vars(namespace)``): its fields, the others ignored."""
        return cls(**{field.name: options[field.name] for field in fields(cls) if field.name in options})

    def stac_options_given(self) -> list[str]:
        """The STAC-only options set (:data:`STAC_ONLY`)."""
        return [name for name in STAC_ONLY if getattr(self, name) is not None]
