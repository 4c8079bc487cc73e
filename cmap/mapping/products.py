"""The files ``cmap map`` writes (their names, beside the class map) and the checks of output paths.

Output paths are checked before any work: never an input (a raster, the checkpoint), never an
existing file that is not a cmap map, never a name among the input rasters that the pattern would
read as a date (:mod:`cmap.outputs`).
"""

import os
import re
from collections.abc import Sequence
from pathlib import Path

import rasterio

from cmap.data.raster import RASTER_SUFFIXES, RasterStack
from cmap.mapping.options import MapProducts
from cmap.outputs import OutputPathError, check_outputs
from cmap.parcels import is_cmap_parcels


def probabilities_path(output: Path) -> Path:
    return output.with_name(f"{output.stem}_probs{output.suffix}")


def uncertainty_path(output: Path) -> Path:
    return output.with_name(f"{output.stem}_uncertainty{output.suffix}")


def attributes_path(output: Path) -> Path:
    """GDAL's sidecar (PAM) of the class map: its category names and raster attribute table."""
    return output.with_name(f"{output.name}.aux.xml")


def is_cmap_raster(path: Path) -> bool:
    """A class map or probability raster written by ``cmap map`` (class names in its tags)."""
    if not path.is_file():
        return False
    try:
        with rasterio.open(path) as dataset:
            return "class_names" in dataset.tags()
    except rasterio.errors.RasterioError:
        return False


def is_cmap_style(path: Path) -> bool:
    """A QGIS paletted style as ``cmap map`` writes beside its maps."""
    try:
        text = path.read_text(errors="replace")[:4096]
    except OSError:
        return False
    return text.startswith("<!DOCTYPE qgis") and 'rasterrenderer type="paletted"' in text


def is_gdal_sidecar(path: Path) -> bool:
    """GDAL's PAM sidecar (``.aux.xml``) of a raster, as ``cmap map`` writes beside its class map."""
    try:
        return path.read_text(errors="replace")[:4096].lstrip().startswith("<PAMDataset>")
    except OSError:
        return False


def map_rasters_of(output: Path, products: MapProducts) -> list[Path]:
    """The rasters ``cmap map`` writes for ``output``, in the order they are published (the class map last)."""
    return [
        *[probabilities_path(output)] * products.probabilities,
        *[uncertainty_path(output)] * products.uncertainty,
        output,
    ]


def map_sidecars(output: Path) -> list[Path]:
    """The files beside the class map: its QGIS style and its GDAL attributes."""
    return [output.with_suffix(".qml"), attributes_path(output)]


def check_map_output_names(output: Path, products: MapProducts, inputs: Sequence[Path]) -> None:
    """Refuse outputs that are ``inputs`` or files cmap did not write (the map, its products and sidecars):
    what can be checked before the rasters are found (a catalogue search saves its items beside the map)."""
    if output.suffix.lower() == ".qml":  # the style beside the map would replace the map itself
        raise OutputPathError(f"{output}: the crop map is a GeoTIFF (.tif), and its QGIS style goes to the .qml name")
    check_outputs(map_rasters_of(output, products), inputs, is_cmap_raster, "crop map")
    style, attributes = map_sidecars(output)
    check_outputs([style], inputs, is_cmap_style, "crop map's QGIS style")
    check_outputs([attributes], inputs, is_gdal_sidecar, "crop map's GDAL attributes (.aux.xml)")


def check_map_outputs(
    output: Path, products: MapProducts, stack: RasterStack, checkpoints: Sequence[str], pattern: str
) -> None:
    """Refuse outputs that are inputs (rasters, checkpoints), other files, or files a later run would read as dates."""
    targets = map_rasters_of(output, products)
    rasters = list(dict.fromkeys(path for paths in stack.paths for path in paths))
    inputs = [*map(Path, checkpoints), *rasters]
    check_map_output_names(output, products, inputs)
    folders = {Path(os.path.abspath(path.parent)).resolve() for path in rasters}
    regex = re.compile(pattern)
    for target in targets:
        if (
            Path(os.path.abspath(target.parent)).resolve() in folders
            and target.suffix.lower() in RASTER_SUFFIXES
            and regex.search(target.name)
        ):
            raise OutputPathError(
                f"{target}: the crop map would be written among its input rasters with a name matching the pattern "
                f"{pattern!r}, so the next run on that folder would read it as a date; choose another output path"
            )


def parcels_layer_path(output: Path, products: MapProducts) -> Path:
    """The GeoPackage of the parcels' summaries: ``parcels_output``, else ``OUTPUT`` with ``_parcels.gpkg``."""
    return Path(products.parcels_output) if products.parcels_output else output.with_name(f"{output.stem}_parcels.gpkg")


def check_parcels_output(output: Path, products: MapProducts, checkpoints: Sequence[str]) -> None:
    """Refuse a parcel layer path that is an input, another file, or one of the map's own files: now, not
    after the whole map is made."""
    map_files = [*map_rasters_of(output, products), *map_sidecars(output)]
    inputs = [*map_files, Path(products.parcels), *map(Path, checkpoints)]
    check_outputs([parcels_layer_path(output, products)], inputs, is_cmap_parcels, "parcel layer")
