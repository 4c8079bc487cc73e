"""Read speed of the real SAFE's JPEG2000 bands against the same pixels written as DEFLATE COGs.

    python benchmarks/jp2_vs_cog.py              # ../shared/data/sentinel2_l2a_real's SAFE, 3 rounds

A SAFE product (what ESA and the Copernicus Data Space serve) holds its bands as JPEG2000; Earth
Search and the Planetary Computer serve the same pixels as cloud-optimised GeoTIFFs. This script
writes every band of the real L2A SAFE (60 m B01-B12 and B8A, 1830 x 1830, and the 20 m SCL,
5490 x 5490) as a DEFLATE COG (GDAL's COG driver, predictor 2, 512-pixel blocks), checks that the
COG holds the same pixels, then times, in interleaved rounds (the arms in turn, so that a shared
machine's load drifts over both alike), each round's ratio taken within the round:

- ``whole``: every band file read whole with rasterio;
- ``windows``: the same files in ``--window`` x ``--window`` windows (how ``cmap map`` reads them);
- ``cmap stack``: what ``cmap extract`` / ``cmap map`` read: the SAFE as a STAC item against a folder
  of the COGs (same offset, same SCL mask), every band of the default list present at 60 m and the
  SCL mask, the whole tile at once, checked equal.

One GDAL thread (``GDAL_NUM_THREADS=1``): the project's CPU machine is shared.
"""

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import footer, header, interleaved  # noqa: E402

from cmap.data import sentinel2  # noqa: E402
from cmap.data.stac import read_items, stack_from_items  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SAFE = (REPO.parent / "shared" / "data" / "sentinel2_l2a_real" / "safe" /
        "S2A_MSIL2A_20221005T115411_N0400_R023_T29UNU_20221005T164454.SAFE")  # fmt: skip
BANDS = ["B02", "B03", "B04", "B05", "B06", "B07", "B8A", "B11", "B12"]  # the default bands present at 60 m


def band_files(safe: Path) -> dict[str, Path]:
    """The SAFE's band files by asset key (``B02_60m``, ``SCL_20m``): the 60 m bands and the 20 m SCL."""
    item = sentinel2.safe_item(safe)
    keys = [key for key in item.assets if key.endswith("_60m") and key != "SCL_60m"] + ["SCL_20m"]
    return {key: Path(item.assets[key].href) for key in keys}


def write_cogs(files: dict[str, Path], folder: Path) -> dict[str, Path]:
    """Each file's pixels as a DEFLATE COG ``folder/<band>.tif`` (``B02.tif``, ``SCL.tif``: a COG folder
    cmap reads as a product), checked equal to the JPEG2000's."""
    cogs = {}
    folder.mkdir(parents=True, exist_ok=True)
    for key, path in files.items():
        cog = folder / f"{key.split('_')[0]}.tif"
        with rasterio.open(path) as source:
            data, profile = source.read(), source.profile
        profile.update(driver="COG", compress="DEFLATE", predictor=2, blocksize=512)
        for name in ("blockxsize", "blockysize", "tiled", "interleave"):
            profile.pop(name, None)
        with rasterio.open(cog, "w", **profile) as out:
            out.write(data)
        with rasterio.open(cog) as written:
            assert np.array_equal(written.read(), data), f"{cog}: not the pixels of {path}"
        cogs[key] = cog
    return cogs


def read_whole(paths: list[Path]) -> Callable[[], float]:
    """An arm: seconds to read every file whole."""

    def arm() -> float:
        start = time.perf_counter()
        for path in paths:
            with rasterio.open(path) as dataset:
                dataset.read(1)
        return time.perf_counter() - start

    return arm


def read_windows(paths: list[Path], size: int) -> Callable[[], float]:
    """An arm: seconds to read every file in ``size`` x ``size`` windows."""

    def arm() -> float:
        start = time.perf_counter()
        for path in paths:
            with rasterio.open(path) as dataset:
                for row in range(0, dataset.height, size):
                    for col in range(0, dataset.width, size):
                        width, height = min(size, dataset.width - col), min(size, dataset.height - row)
                        dataset.read(1, window=Window(col, row, width, height))
        return time.perf_counter() - start

    return arm


def read_stack(stack) -> Callable[[], float]:
    """An arm: seconds for cmap's read of the whole stack (offset, scale, no data, SCL mask)."""

    def arm() -> float:
        start = time.perf_counter()
        stack.read()
        return time.perf_counter() - start

    return arm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--safe", type=Path, default=SAFE, help="an L2A SAFE product folder")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per measurement")
    parser.add_argument("--window", type=int, default=256, help="window side in pixels (cmap map's default)")
    args = parser.parse_args()
    started = time.perf_counter()
    print(header("JPEG2000 vs DEFLATE COG: the real L2A SAFE's bands"))
    files = band_files(args.safe)
    workdir = Path(tempfile.mkdtemp(prefix="jp2_vs_cog_"))
    try:
        with rasterio.Env(GDAL_NUM_THREADS=1, GDAL_CACHEMAX=64):
            cogs = write_cogs(files, workdir / "S2A_29UNU_20221005_0_L2A")
            shutil.copy(args.safe / "MTD_MSIL2A.xml", workdir / "S2A_29UNU_20221005_0_L2A")
            jp2_bytes = sum(path.stat().st_size for path in files.values())
            cog_bytes = sum(path.stat().st_size for path in cogs.values())
            print(f"{len(files)} files ({', '.join(files)}), same pixels checked; "
                  f"JPEG2000 {jp2_bytes / 1e6:.1f} MB, DEFLATE COG {cog_bytes / 1e6:.1f} MB "
                  f"({cog_bytes / jp2_bytes:.2f}x)\n")  # fmt: skip
            jp2_stack = stack_from_items([sentinel2.safe_item(args.safe)], BANDS)
            cog_stack = stack_from_items(read_items(workdir), BANDS)
            np.testing.assert_array_equal(jp2_stack.read(), cog_stack.read())
            arms = {
                "whole": (read_whole(list(files.values())), read_whole(list(cogs.values()))),
                f"windows {args.window}": (read_windows(list(files.values()), args.window),
                                           read_windows(list(cogs.values()), args.window)),
                f"cmap stack, {len(BANDS)} bands + SCL mask": (read_stack(jp2_stack), read_stack(cog_stack)),
            }  # fmt: skip
            print("| read | JPEG2000 s (median) | COG s (median) | JPEG2000 / COG (median of the rounds' ratios) |")
            print("|---|---|---|---|")
            for name, (jp2_arm, cog_arm) in arms.items():
                times = interleaved({"jp2": jp2_arm, "cog": cog_arm}, args.rounds)
                ratio = statistics.median(j / c for j, c in zip(times["jp2"], times["cog"], strict=True))
                print(f"| {name} | {statistics.median(times['jp2']):.2f} | {statistics.median(times['cog']):.2f} "
                      f"| {ratio:.1f} |")  # fmt: skip
    finally:
        shutil.rmtree(workdir)
    print("\n" + footer(started))


if __name__ == "__main__":
    main()
