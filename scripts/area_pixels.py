"""The pixels of an area to map, as a CSV of points for ``cmap extract``: pretraining data without labels.

Self-supervised pretraining (``AutoEncoder``) pays most on the pixels that will be mapped (the
"mapping setting", ``benchmarks/pretraining.py``). ``cmap extract`` reads the series under points;
this writes the centre of every ``--step``-th pixel (rows and columns) of one raster of the stack,
in longitude / latitude (``cmap extract``'s default ``--crs``), each with the label ``area``. The
store that ``cmap extract`` makes of them has that one class, which pretraining never reads.

    python scripts/area_pixels.py ../shared/data/sits_sinop_modis_cube/TERRA_MODIS_012010_NDVI_2013-09-14.jp2 \\
        runs/sinop_pixels.csv
"""

import argparse
import os
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
import rasterio.errors
from rasterio.transform import xy
from rasterio.warp import transform


def pixel_centres(raster: Path, step: int = 1) -> pd.DataFrame:
    """Longitude, latitude (EPSG:4326) of every ``step``-th pixel centre of ``raster``, label ``area``."""
    if step < 1:
        raise ValueError(f"--step must be >= 1, got {step}")
    with rasterio.open(raster) as dataset:
        rows, cols = np.meshgrid(np.arange(0, dataset.height, step), np.arange(0, dataset.width, step), indexing="ij")
        xs, ys = xy(dataset.transform, rows.ravel(), cols.ravel())
        longitudes, latitudes = transform(dataset.crs, "EPSG:4326", xs, ys)
    return pd.DataFrame({"longitude": longitudes, "latitude": latitudes, "label": "area"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("raster", type=Path, help="one raster of the stack (every date shares its grid)")
    parser.add_argument("output", type=Path, help="the CSV to write")
    parser.add_argument("--step", type=int, default=1, help="every step-th row and column (1: every pixel)")
    args = parser.parse_args()
    try:
        table = pixel_centres(args.raster, args.step)
    except (rasterio.errors.RasterioIOError, ValueError) as error:
        parser.error(f"{args.raster}: {error}")
    temporary = args.output.with_name(args.output.name + ".tmp")
    table.to_csv(temporary, index=False, float_format="%.8f")
    os.replace(temporary, args.output)
    print(f"{args.output}: {len(table)} pixel centres")


if __name__ == "__main__":
    main()
