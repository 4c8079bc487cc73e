"""Crop-map speed and memory: ``cmap map`` over rasters 1x, 4x and 16x the Sinop cube.

    python benchmarks/map_throughput.py --checkpoint runs/sinop/mato_grosso_ndvi_map/.../last.ckpt

The rasters tile the real Sinop cube (12 NDVI dates, 147 x 255 pixels) 1x1, 2x2 and 4x4 times as
tiled, DEFLATE-compressed int16 GeoTIFFs (the JPEG2000 originals decode slowly; Sentinel-2 users
usually convert them once). Each size is mapped in its own process, so that its peak RSS
(``ru_maxrss``) is its own. Prints pixels/s, peak RSS and the time projected for a 10980 x 10980
Sentinel-2 tile at the measured rate (same model, same number of dates).

``--stac``: the same rasters also as STAC items, each date cut into two tiles overlapping by 64
pixels (as neighbouring Sentinel-2 tiles overlap), mapped from the ItemCollection: every raster is
then off the target grid, so each window goes through GDAL warped VRTs and the mosaic of two tiles
(:mod:`cmap.data.stac`); the map must equal the folder's, and memory must stay bounded by the window.
"""

import argparse
import datetime
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pystac
import rasterio
from common import REPO, SINOP_CUBE, SINOP_PATTERN
from rasterio.windows import Window

SENTINEL2_TILE_PIXELS = 10980 * 10980


def build(folder: Path, repeat: int) -> Path:
    """The Sinop cube tiled ``repeat`` x ``repeat`` times, one GeoTIFF per date."""
    folder.mkdir(parents=True, exist_ok=True)
    for source in sorted(SINOP_CUBE.glob("TERRA_MODIS_012010_NDVI_*.jp2")):
        target = folder / source.with_suffix(".tif").name
        if target.exists():
            continue
        with rasterio.open(source) as dataset:
            data, profile = np.tile(dataset.read(1), (repeat, repeat)), dataset.profile
        profile.update(driver="GTiff", width=data.shape[1], height=data.shape[0], tiled=True, blockxsize=256,
                       blockysize=256, compress="deflate")  # fmt: skip
        with rasterio.open(target, "w", **profile) as dataset:
            dataset.write(data, 1)
    return folder


def build_stac(folder: Path, overlap: int = 64) -> Path:
    """The rasters of ``folder`` as two overlapping tiles per date and their STAC ItemCollection."""
    tiles = folder / "tiles"
    tiles.mkdir(exist_ok=True)
    items = []
    for source in sorted(folder.glob("*.tif")):
        date = datetime.datetime.fromisoformat(source.stem[-10:]).replace(tzinfo=datetime.timezone.utc)
        with rasterio.open(source) as dataset:
            half = dataset.width // 2
            for name, window in (
                ("west", Window(0, 0, half + overlap, dataset.height)),
                ("east", Window(half - overlap, 0, dataset.width - half + overlap, dataset.height)),
            ):
                target = tiles / f"{source.stem}_{name}.tif"
                profile = {**dataset.profile, "width": int(window.width), "transform": dataset.window_transform(window)}
                if not target.exists():
                    with rasterio.open(target, "w", **profile) as tile:
                        tile.write(dataset.read(1, window=window), 1)
                item = pystac.Item(f"{source.stem}_{name}", None, None, date, {})
                item.add_asset("NDVI", pystac.Asset(str(target)))
                items.append(item)
    path = folder / "items.json"
    path.write_text(json.dumps(pystac.ItemCollection(items).to_dict()))
    return path


def run(checkpoint: str, rasters: Path, output: Path, window_size: int, batch_size: int, precision: str) -> dict:
    from cmap.mapping import map_rasters

    start = time.perf_counter()
    map_rasters(checkpoint, str(rasters), str(output), pattern=SINOP_PATTERN, scale=1e-4, valid_range=(-2000, 10000),
                window_size=window_size, batch_size=batch_size, precision=precision, progress=False)  # fmt: skip
    seconds = time.perf_counter() - start
    with rasterio.open(output) as dataset:
        pixels = dataset.width * dataset.height
    return {"pixels": pixels, "seconds": round(seconds, 2), "pixels_per_s": round(pixels / seconds),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a Classifier checkpoint with one band: NDVI")
    parser.add_argument("--repeats", type=int, nargs="+", default=[1, 2, 4], help="tilings of the cube per side")
    parser.add_argument("--window_size", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=8192)
    parser.add_argument("--precision", default="32-true", help="Lightning precision, e.g. bf16-mixed")
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "map_benchmark")
    parser.add_argument("--stac", action="store_true", help="also map each size from STAC items of two tiles")
    parser.add_argument("--run_one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--from_stac", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_one is not None:
        folder = args.workdir / f"sinop_x{args.run_one}"
        name = f"map_x{args.run_one}{'_stac' if args.from_stac else ''}.tif"
        rasters = folder / "items.json" if args.from_stac else folder
        figures = run(args.checkpoint, rasters, args.workdir / name, args.window_size, args.batch_size, args.precision)
        print(json.dumps(figures))
        return
    print("| size | input | pixels | seconds | pixels/s | peak RSS (MB) | projected 10980 x 10980 tile |")
    print("|---|---|---|---|---|---|---|")
    for repeat in args.repeats:
        folder = build(args.workdir / f"sinop_x{repeat}", repeat)
        inputs = ["folder"]
        if args.stac:
            build_stac(folder)
            inputs.append("STAC, 2 tiles")
        for source in inputs:
            extra = ["--from_stac"] if source != "folder" else []
            child = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--run_one", str(repeat), *extra],
                                   check=True, capture_output=True, text=True)  # fmt: skip
            figures = json.loads(child.stdout.strip().splitlines()[-1])
            hours = SENTINEL2_TILE_PIXELS / figures["pixels_per_s"] / 3600
            print(f"| {repeat * repeat}x Sinop | {source} | {figures['pixels']:,} | {figures['seconds']} "
                  f"| {figures['pixels_per_s']:,} | {figures['peak_rss_mb']} | {hours:.1f} h |")  # fmt: skip
        if args.stac:  # the same map from both inputs
            with (
                rasterio.open(args.workdir / f"map_x{repeat}.tif") as a,
                rasterio.open(args.workdir / f"map_x{repeat}_stac.tif") as b,
            ):
                same = np.array_equal(a.read(), b.read())
            print(f"|  | maps equal | {same} |  |  |  |  |")


if __name__ == "__main__":
    main()
