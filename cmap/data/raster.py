"""Raster time series: images of one area at several dates, read window by window as pixel series.

A :class:`RasterStack` is the input of :mod:`cmap.mapping` (crop maps) and :func:`extract_samples`
(training series at labelled points or polygons). It knows, for each date, the granules acquired
that day (one per tile or product: the rasters of its bands, an optional class mask such as
Sentinel-2's SCL, a raw-value offset) and the target grid they are read on. Windows of that grid
are read one at a time, so memory depends on the window, not on the rasters' size. Files (or
URLs) are read with rasterio: GeoTIFF, JPEG2000 and every other format of the GDAL in its wheel.
A raster that is not on the target grid (a 20 m band on a 10 m grid, a neighbouring tile) is read
through a GDAL warped VRT (``rasterio.vrt.WarpedVRT``): resampled window by window, never whole.
Granules of one date are mosaicked (the first granule with a valid value wins a pixel).

Two ways in:

- :meth:`RasterStack.from_folder`: one folder of rasters sharing one grid, dates (and bands)
  parsed from file names by a regular expression (below). No resampling: a file on another grid
  is an error.
- :func:`cmap.data.stac.stack_from_stac`: STAC items (a catalogue, an ItemCollection, or Sentinel-2
  L2A products in SAFE or COG folders), bands found by name, on a grid chosen from the assets.

File names of :meth:`~RasterStack.from_folder`: ``pattern`` is a regular expression searched in
each file name, with a ``date`` group and, when each file holds one band, a ``band`` group::

    T31TCJ_2021-05-04.tif                  pattern (default)  (?P<date>\\d{4}-\\d{2}-\\d{2})
    TERRA_MODIS_012010_NDVI_2013-09-14.jp2 pattern  _(?P<band>[A-Za-z0-9]+)_(?P<date>\\d{4}-\\d{2}-\\d{2})
    T31TCJ_20210504T105031_B02_10m.jp2     pattern  _(?P<date>\\d{8})T\\d{6}_(?P<band>B\\w\\w)_

Dates are ISO (``2021-05-04``) or compact (``20210504``). Files whose name does not match are
ignored. Without a ``band`` group, each file holds every band, named by its band descriptions.
"""

import datetime
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from cmap.data.raster_files import GRID_KEYS, OpenRasters, is_url, one_line, open_raster, raster_grid
from cmap.data.time_axis import TimeAxis, parse_date
from cmap.outputs import InputError, MissingInput
from cmap.raster_source import DEFAULT_PATTERN

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt", ".img")


@dataclass(frozen=True)
class Layer:
    """One raster of a stack: band ``band`` (1-based) of the file or URL ``href``."""

    href: str
    band: int = 1


@dataclass(frozen=True)
class Granule:
    """What one acquisition (a tile, a product, a STAC item) gives a stack at its date.

    Args:
        layers: the layer of each band of the stack, in the stack's band order.
        source: names the granule in errors (a STAC item id, a file).
        mask: a layer of classes (Sentinel-2's SCL), read with nearest-neighbour resampling; pixels
            whose class is in ``masked_classes`` are missing at this date, every band.
        raw_offset: added to the raw values before the stack's scale and valid range (Sentinel-2's
            BOA_ADD_OFFSET, -1000 from processing baseline 04.00): raw values of every granule then
            follow one convention.
        nodata: a raw value meaning "no data" besides the files' own nodata (Sentinel-2: 0, which
            its JPEG2000 files do not declare).
    """

    layers: tuple[Layer, ...]
    source: str
    mask: Layer | None = None
    masked_classes: tuple[int, ...] = ()
    raw_offset: float = 0.0
    nodata: float | None = None


@dataclass
class RasterStack:
    """Images of one grid at several dates, read as pixel series.

    Args:
        granules: ``granules[t]`` the granules of date ``t`` (one for a folder of rasters; one per
            tile for tiles of one day), mosaicked in this order.
        dates: the acquisition date of each ``t``, increasing.
        band_names: the name of each band ``c``.
        scale, offset: physical value = (raw + granule's raw_offset) * scale + offset (e.g. 1e-4
            for MODIS NDVI and Sentinel-2 reflectances).
        valid_range: raw values (after the granule's raw_offset) outside ``[low, high]`` are missing
            (NaN), as are the files' nodata values; ``None`` keeps every finite value.
        grid: the target grid (``crs``, ``transform``, ``width``, ``height``); rasters on another
            grid are resampled onto it. ``None``: every raster must share one grid, which is the
            target (a raster on another grid is an error naming it).
        resampling: how bands not on the grid are resampled (a ``rasterio.enums.Resampling`` name:
            ``nearest``, ``bilinear``, ``average``...). Masks are always resampled ``nearest``.
    """

    granules: list[list[Granule]]
    dates: list[datetime.date]
    band_names: list[str]
    scale: float = 1.0
    offset: float = 0.0
    valid_range: tuple[float, float] | None = None
    grid: dict[str, Any] | None = None
    resampling: str = "nearest"
    profile: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        if self.resampling not in Resampling.__members__:
            raise InputError(f"resampling {self.resampling!r} is not one of {sorted(Resampling.__members__)}")
        self.profile = self._check_grid() if self.grid is None else {key: self.grid[key] for key in GRID_KEYS}

    @classmethod
    def from_folder(
        cls,
        folder: str | Path,
        pattern: str = DEFAULT_PATTERN,
        bands: Sequence[str] | None = None,
        scale: float = 1.0,
        offset: float = 0.0,
        valid_range: tuple[float, float] | None = None,
    ) -> "RasterStack":
        """The stack of the raster files of ``folder`` whose names match ``pattern``.

        ``bands``: the bands to read, in this order (a trained model's band names); default: every
        band found, in the order of the first date. Files of other bands are ignored.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise MissingInput(f"{folder}: no such folder of rasters")
        regex = re.compile(pattern)
        if "date" not in regex.groupindex:
            raise InputError(f"pattern {pattern!r} needs a (?P<date>...) group")
        by_date: dict[datetime.date, dict[str, Layer]] = {}
        other_bands: set[str] = set()  # in files that match the pattern, but not among ``bands``
        for path in sorted(folder.iterdir()):
            match = regex.search(path.name)
            if path.suffix.lower() not in RASTER_SUFFIXES or match is None:
                continue
            if "band" in regex.groupindex:
                names = {match["band"]: Layer(str(path), 1)}
            else:
                with open_raster(path) as dataset:
                    descriptions = dataset.descriptions
                if any(d is None for d in descriptions):
                    raise InputError(
                        f"{path}: bands have no descriptions, so their names are unknown; name them in the files "
                        "or give one file per band with a (?P<band>...) group in the pattern"
                    )
                names = {name: Layer(str(path), i + 1) for i, name in enumerate(descriptions)}
            if bands is not None:
                # Other bands' files are skipped; a multi-band file still counts for its date.
                other_bands.update(name for name in names if name not in bands)
                names = {name: layer for name, layer in names.items() if name in bands}
                if not names and "band" in regex.groupindex:
                    continue
            try:
                date = parse_date(match["date"], str(path))
            except ValueError as error:
                raise InputError(str(error)) from None
            found = by_date.setdefault(date, {})
            for name, layer in names.items():
                if name in found:
                    raise InputError(f"{path}: band {name!r} at {date} is also in {found[name].href}")
                found[name] = layer
        if not by_date and other_bands:
            raise InputError(f"{folder}: no file of the bands {list(bands)}; the files hold {sorted(other_bands)}")
        if not by_date:
            raise InputError(f"{folder}: no file ({', '.join(RASTER_SUFFIXES)}) matches the pattern {pattern!r}")
        dates = sorted(by_date)
        names = list(bands) if bands is not None else list(by_date[dates[0]])
        for date in dates:
            missing = [name for name in names if name not in by_date[date]]
            if missing:
                raise InputError(
                    f"{folder}: bands {missing} missing at {date} (found {sorted(by_date[date])}, expected {names})"
                )
        granules = [
            [Granule(tuple(by_date[date][name] for name in names), by_date[date][names[0]].href)] for date in dates
        ]
        return cls(granules, dates, names, scale, offset, valid_range)

    @property
    def paths(self) -> list[list[Path]]:
        """``paths[t]``: the local files read at date ``t`` (each granule's bands, in band order, then its
        mask); URLs are left out."""
        return [
            list(
                dict.fromkeys(
                    Path(layer.href)
                    for granule in granules
                    for layer in (*granule.layers, *([granule.mask] if granule.mask else []))
                    if not is_url(layer.href)
                )
            )
            for granules in self.granules
        ]

    def _hrefs(self) -> list[str]:
        """Every file or URL of the stack, once, in order."""
        return list(
            dict.fromkeys(
                layer.href
                for granules in self.granules
                for granule in granules
                for layer in (*granule.layers, *([granule.mask] if granule.mask else []))
            )
        )

    def _check_grid(self) -> dict[str, Any]:
        """The grid (CRS, transform, size) shared by every file; a file on another grid is an error."""
        reference, grid = None, None
        for href in self._hrefs():
            with open_raster(href) as dataset:
                this = raster_grid(dataset)
            if grid is None:
                reference, grid = href, this
                continue
            for key, expected in grid.items():
                if this[key] != expected:
                    raise InputError(f"{href}: {key} {this[key]} differs from {expected} of {reference}")
        return grid

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return self.profile["height"], self.profile["width"]

    def days(self, time_axis: TimeAxis | None = None) -> np.ndarray:
        """int64 (T,) day offsets of the dates on ``time_axis`` (default: days since the first date)."""
        return (time_axis or TimeAxis()).days(self.dates)

    def season(self) -> TimeAxis:
        """The time axis of samples extracted from this stack: days since the month-day of its first
        date, so that the same season of another year, or this stack without its first image, gets
        the same days."""
        first = self.dates[0]
        day = min(first.day, 28) if first.month == 2 else first.day  # 02-29 does not come every year
        return TimeAxis.from_season_start(f"{first.month:02d}-{day:02d}")

    def windows(self, size: int) -> Iterator[Window]:
        """Row-major ``size`` x ``size`` windows covering the grid (smaller at the right and bottom)."""
        height, width = self.shape
        for row in range(0, height, size):
            for col in range(0, width, size):
                yield Window(col, row, min(size, width - col), min(size, height - row))

    def read(self, window: Window | None = None, datasets: Any = None) -> np.ndarray:
        """float32 (T, C, h, w) physical values of ``window`` (default: everything); NaN = missing.

        ``datasets``: open rasters by (href, resampling), to reuse across windows (see :meth:`open`). Each band is read
        straight into its place in the output (the first granule of a date) or into one buffer
        shared by the later granules of every mosaic, not into an array of its own.
        """
        height, width = self.shape if window is None else (int(window.height), int(window.width))
        opened = self.open() if datasets is None else datasets
        try:
            out = np.full((len(self.dates), len(self.band_names), height, width), np.nan, dtype=np.float32)
            later = None  # the buffer of a mosaic's later granules, allocated once
            for t, granules in enumerate(self.granules):
                self._read_granule(granules[0], t, window, opened, out[t])
                for granule in granules[1:]:
                    if later is None:
                        later = np.empty_like(out[t])
                    self._read_granule(granule, t, window, opened, later)
                    # Mosaic: pixels that no earlier granule of this date filled take this one's values.
                    fill = np.isnan(out[t]).all(axis=0) & ~np.isnan(later).all(axis=0)
                    out[t][:, fill] = later[:, fill]
        finally:
            if datasets is None:
                opened.close()
        return out

    def _read_granule(self, granule: Granule, t: int, window: Window | None, datasets: Any, values: np.ndarray) -> None:
        """Fill ``values``, float32 (C, h, w), with the physical values of one granule; NaN = missing
        (nodata, out of range, masked class)."""
        for c, layer in enumerate(granule.layers):
            data = values[c]
            raw = self._read_layer(layer, self.resampling, window, datasets, f"band {self.band_names[c]}", t, data)
            missing = np.ma.getmaskarray(raw)
            if granule.nodata is not None:
                missing |= data == np.float32(granule.nodata)
            data += np.float32(granule.raw_offset)
            if self.valid_range is not None:
                missing |= (data < self.valid_range[0]) | (data > self.valid_range[1])
            data *= np.float32(self.scale)
            data += np.float32(self.offset)
            data[missing] = np.nan
        if granule.mask is not None:
            classes = self._read_layer(granule.mask, "nearest", window, datasets, "mask", t)
            # Outside the mask raster's footprint nothing is known: missing too.
            masked = np.ma.getmaskarray(classes) | np.isin(classes.data, granule.masked_classes)
            values[:, masked] = np.nan

    def _read_layer(
        self,
        layer: Layer,
        resampling: str,
        window: Window | None,
        datasets: Any,
        what: str,
        t: int,
        out: np.ndarray | None = None,
    ) -> np.ma.MaskedArray:
        """The layer's values in ``window``, masked where the raster has no data or a value of the file's
        own type is not finite (NaN, infinite).

        ``out``: an array to read the values into (its dtype), whose data the returned array is. GDAL
        converts them while reading when every value of the file's type converts exactly (integers of
        up to 16 bits, float32 into float32); other types (int32, float64) are read as they are and
        copied in by NumPy, so the values are always NumPy's conversion of the file's.
        """
        dataset = datasets[(layer.href, resampling)]
        dtype = np.dtype(dataset.dtypes[layer.band - 1])
        try:
            if out is not None and not np.can_cast(dtype, out.dtype, "safe"):
                native = dataset.read(layer.band, window=window, masked=True)
                np.copyto(out, native.data, casting="unsafe")
                values = np.ma.MaskedArray(out, mask=np.ma.getmaskarray(native) | ~np.isfinite(native.data))
            else:
                # A view: rasterio (1.4, masked=True) reshapes the array it reads into to (1, h, w).
                view = None if out is None else out.view()
                values = dataset.read(layer.band, window=window, masked=True, out=view)
                if out is not None and not np.may_share_memory(values.data, out):  # rasterio gave a copy after all
                    out[...] = values.data
                if dtype.kind == "f":
                    values.mask = np.ma.getmaskarray(values) | ~np.isfinite(values.data)
            if isinstance(dataset, WarpedVRT) and dataset.src_dataset.nodata is None:
                # Outside the raster's footprint: its alpha band (the last) is 0. GDAL does not always
                # report the alpha band as the data band's mask, so it is read here.
                values.mask = np.ma.getmaskarray(values) | (dataset.read(dataset.count, window=window) == 0)
            return values
        except rasterio.errors.RasterioError as error:  # a truncated or corrupt file
            where = "" if window is None else f", window rows {window.row_off}.. cols {window.col_off}.."
            raise InputError(
                f"{layer.href}: unreadable at date {self.dates[t]}, {what} (band {layer.band} of the file){where} "
                f"({one_line(error)})"
            ) from error

    def open(self, capacity: int | None = None) -> OpenRasters:
        """The stack's rasters, opened as they are read and kept open for the next windows, at most
        ``capacity`` at once (:class:`~cmap.data.raster_files.OpenRasters`; close it when done).

        A raster on the target grid is read directly; one on another grid through a warped VRT onto
        the target grid (outside its footprint: masked, with an alpha band when it has no nodata).
        """
        return OpenRasters(self._open_layer, capacity)

    def layer_keys(self) -> list[tuple[str, str]]:
        """Every raster the stack reads, by (href, resampling), once, in the order they are read."""
        needs = [
            (layer.href, resampling)
            for granules in self.granules
            for granule in granules
            for layer, resampling in (
                *((layer, self.resampling) for layer in granule.layers),
                *([(granule.mask, "nearest")] if granule.mask else []),
            )
        ]
        return list(dict.fromkeys(needs))

    def _open_layer(self, href: str, resampling: str) -> Any:
        dataset = open_raster(href)
        if raster_grid(dataset) == self.profile:
            return dataset
        try:
            return WarpedVRT(
                dataset, **self.profile, resampling=Resampling[resampling], add_alpha=dataset.nodata is None
            )
        except rasterio.errors.RasterioError as error:
            dataset.close()
            raise InputError(f"{href}: cannot be resampled onto the target grid ({one_line(error)})") from error


def pixel_series(cube: np.ndarray) -> np.ndarray:
    """(T, C, h, w) -> (h * w, T, C), row-major pixels."""
    t, c, h, w = cube.shape
    return np.ascontiguousarray(cube.reshape(t, c, h * w).transpose(2, 0, 1))
