"""A Sentinel-2 tile-season at the machine's limit: reading, the model, and ``cmap map`` end to end, in one run.

    python benchmarks/tile_season.py                    # 1024 x 1024 px at 10 m, 30 dates (~0.4 GB of COGs)
    python benchmarks/tile_season.py --size 512 --threads 1

1. A synthetic Sentinel-2 L2A season written as one folder of COGs per product (as Earth Search serves
   them, the processing baseline in the folder's name): B02 B03 B04 B08 at 10 m, B05 B06 B07 B8A B11 B12
   and SCL at 20 m, ``--dates`` dates every 5 days; fields in stripes of four crops with their own
   seasonal profiles, and clouds (SCL 9) over ~15 % of each date.
2. The default recipe's model (configs/default.yaml) trained for ``--steps`` steps on points extracted
   from that stack (``cmap extract``, ``cmap fit``): a checkpoint of the right shape for timing.
3. Pixels/s, interleaved and one thread each unless ``--threads``: reading every window of the stack as
   ``cmap map`` does (StackWindows: warped windows, SCL mask, normalisation); the model's forward pass
   alone on those windows' pixels (reference path, inference form, its bf16 cast); ``cmap map`` end to end
   (``num_workers`` 0 and 1: reading in a DataLoader worker beside the model; and with
   ``--precision bf16-true``). Then the hours projected
   for a 10980 x 10980 tile-season at each rate.
4. The fast map against the reference path's over a part of the stack: classes identical, probabilities
   (uint8 percent) within 1.
"""

import argparse
import datetime
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
import torch
import yaml
from common import REPO, footer, header
from rasterio.transform import from_origin

from cmap.cli import main as cmap_main
from cmap.data.sentinel2 import DEFAULT_BANDS
from cmap.data.stac import open_stack
from cmap.data.time_axis import time_axis_from_arguments
from cmap.mapping import map_rasters
from cmap.mapping.products import probabilities_path
from cmap.mapping.windows import StackWindows
from cmap.ml.inference import inference_form
from cmap.predictions import load_classifier
from cmap.raster_source import RasterSource

TILE_PIXELS = 10980 * 10980
CRS, LEFT, TOP = "EPSG:32631", 300_000.0, 5_000_000.0
TEN_METRE_BANDS = ("B02", "B03", "B04", "B08")
CROPS = ("maize", "soy", "wheat", "grass")


def season_profile(crop: int, band: int, t: np.ndarray) -> np.ndarray:
    """Reflectance of ``crop`` in ``band`` at season fractions ``t`` (0..1): a green-up peak of its own timing."""
    peak = 0.3 + 0.15 * crop
    greenness = np.exp(-(((t - peak) / 0.15) ** 2))
    return 0.05 + 0.02 * band + (0.3 if band in (3, 6, 7) else -0.03) * greenness * (1 + 0.2 * crop)


def write_stack(folder: Path, size: int, dates: list[datetime.date], seed: int = 0) -> None:
    """One folder of band COGs per date (see the module docstring); DNs with the 04.00 offset of 1000."""
    rng = np.random.default_rng(seed)
    for index, date in enumerate(dates):
        stamp = date.strftime("%Y%m%d")
        product = folder / f"S2A_MSIL2A_{stamp}T105031_N0400_R051_T31TCJ_{stamp}T130000"
        if (product / "SCL.tif").is_file():
            continue
        product.mkdir(parents=True, exist_ok=True)
        t = index / max(1, len(dates) - 1)
        clouds = np.zeros((size // 2, size // 2), dtype=bool)
        for _ in range(6):  # square clouds, ~15 % of the area
            row, col = rng.integers(0, size // 2, 2)
            clouds[row : row + size // 16, col : col + size // 16] = True
        for band_index, band in enumerate(DEFAULT_BANDS):
            metres = 10 if band in TEN_METRE_BANDS else 20
            pixels = size * 10 // metres
            crop = (np.arange(pixels) * metres // 80) % len(CROPS)  # stripes of 80 m
            reflectance = np.array([season_profile(c, band_index, np.array(t)) for c in range(len(CROPS))])[crop]
            image = reflectance[None, :] + rng.normal(0, 0.01, (pixels, pixels))
            dn = (np.clip(image, 0.001, 1) * 10_000 + 1000).round().astype(np.uint16)
            write_cog(product / f"{band}.tif", dn, metres)
        write_cog(product / "SCL.tif", np.where(clouds, 9, 4).astype(np.uint8), 20)


def write_cog(path: Path, data: np.ndarray, metres: int) -> None:
    profile = {"driver": "COG", "width": data.shape[1], "height": data.shape[0], "count": 1, "dtype": data.dtype,
               "crs": CRS, "transform": from_origin(LEFT, TOP, metres, metres), "compress": "deflate",
               "nodata": 0}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(data, 1)


def train_checkpoint(stack: Path, work: Path, size: int, steps: int, threads: int) -> Path:
    """``cmap extract`` of points on the stack's stripes, then ``cmap fit`` of the default recipe for ``steps``."""
    checkpoint = work / "model" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    if checkpoint.is_file():
        return checkpoint
    rng = np.random.default_rng(1)
    xs = LEFT + 5 + 10 * rng.integers(0, size, 1500)
    ys = TOP - 5 - 10 * rng.integers(0, size, 1500)
    crops = np.array(CROPS)[((xs - LEFT) // 80).astype(int) % len(CROPS)]
    pd.DataFrame({"x": xs, "y": ys, "crop": crops}).to_csv(work / "points.csv", index=False)
    store = work / "store"
    if not store.exists():
        cmap_main(["extract", str(stack), str(work / "points.csv"), str(store), "--bands", *DEFAULT_BANDS,
                   "--label_field", "crop", "--x_column", "x", "--y_column", "y", "--crs", CRS])  # fmt: skip
    config = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())
    config["trainer"] = {
        "max_steps": steps, "default_root_dir": str(work / "model"), "enable_progress_bar": False,
        "limit_val_batches": 2, "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                               "init_args": {"save_last": True}}],
    }  # fmt: skip
    config["data"] = {"class_path": "cmap.data.SeriesStore", "init_args": {"path": str(store), "fold": 0}}
    (work / "fit.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    cmap_main(["fit", "--config", str(work / "fit.yaml"), "--threads", str(threads)])
    return checkpoint


def reading_windows(checkpoint: Path, stack: Path, window_size: int) -> StackWindows:
    """The stack's windows as ``cmap map`` reads them (its checkpoint's bands, raw values, time axis)."""
    model = load_classifier(checkpoint)
    contract = model.input_contract
    raster_stack = open_stack(RasterSource(str(stack)), list(contract.band_names), contract.raw_values)
    time_axis = time_axis_from_arguments({}, np.array(raster_stack.dates, dtype="datetime64[D]"), contract.time_axis)
    return StackWindows(raster_stack, window_size, raster_stack.days(time_axis), contract)


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=1024, help="pixels per side at 10 m")
    parser.add_argument("--dates", type=int, default=30)
    parser.add_argument("--steps", type=int, default=60, help="training steps of the timing checkpoint")
    parser.add_argument("--threads", type=int, default=1, help="PyTorch threads (the free cores)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds (the best is reported)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/cmap_tile_season"), help="stack, model and maps")
    args = parser.parse_args()
    started = time.perf_counter()
    print(header("Tile-season benchmark"))
    shutil.rmtree(args.work / "maps", ignore_errors=True)
    torch.set_num_threads(args.threads)
    stack, work = args.work / "stack", args.work
    first = datetime.date(2022, 4, 1)
    write_s = timed(
        lambda: write_stack(stack, args.size, [first + datetime.timedelta(5 * i) for i in range(args.dates)])
    )
    megabytes = sum(path.stat().st_size for path in stack.rglob("*.tif")) / 1e6
    checkpoint = train_checkpoint(stack, work, args.size, args.steps, args.threads)
    pixels = args.size * args.size
    print(
        f"Stack: {args.size} x {args.size} px at 10 m, {args.dates} dates, 10 bands + SCL as COGs "
        f"({megabytes:.0f} MB, written in {write_s:.0f} s); checkpoint `{checkpoint}` (default recipe, "
        f"{args.steps} steps); {args.threads} thread(s).\n"
    )
    windows = reading_windows(checkpoint, stack, 256)
    model = load_classifier(checkpoint)
    form = inference_form(model)
    bf16 = inference_form(model).to(torch.bfloat16)
    items = [windows[0]]  # one window: 65,536 pixels (the reference path takes a while)
    batches = [(item["values"][s : s + 8192], item["days"][s : s + 8192], item["mask"][s : s + 8192])
               for item in items for s in range(0, len(item["pixels"]), 8192)]  # fmt: skip
    batch_pixels = sum(len(b[0]) for b in batches)

    def forward(module, dtype=torch.float32):
        with torch.inference_mode():
            for values, days, mask in batches:
                module(values.to(dtype), days, mask)

    def end_to_end(workers: int, name: str, precision: str = "32-true") -> None:
        output = work / "maps" / f"{name}_{time.monotonic_ns()}.tif"  # a new map each round
        map_rasters(str(checkpoint), str(stack), str(output), threads=args.threads, num_workers=workers,
                    precision=precision,
                    progress=False)  # fmt: skip

    arms = {
        "reading (StackWindows, every window)": (lambda: [windows[i] for i in range(len(windows))], pixels),
        "model: reference path, fp32": (lambda: forward(model), batch_pixels),
        "model: inference form, fp32": (lambda: forward(form), batch_pixels),
        "model: inference form, bf16": (lambda: forward(bf16, torch.bfloat16), batch_pixels),
        "cmap map end to end (num_workers 0)": (lambda: end_to_end(0, "map0"), pixels),
        "cmap map end to end (num_workers 1)": (lambda: end_to_end(1, "map1"), pixels),
        "cmap map end to end, bf16-true (num_workers 0)": (lambda: end_to_end(0, "map0_bf16", "bf16-true"), pixels),
        "cmap map end to end, bf16-true (num_workers 1)": (lambda: end_to_end(1, "map1_bf16", "bf16-true"), pixels),
    }
    rates: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(args.repeats):
        for name, (call, count) in arms.items():
            rates[name].append(count / timed(call))
    best = {name: max(values) for name, values in rates.items()}
    fp32 = best["model: inference form, fp32"]
    print(f"Best of {args.repeats} interleaved rounds; projected hours for a 10980 x 10980 tile-season at that rate:\n")
    print("| what | pixels/s | of the fp32 forward pass | hours per tile-season |")
    print("|---|---|---|---|")
    for name, rate in best.items():
        print(f"| {name} | {rate:,.0f} | {rate / fp32:.2f} | {TILE_PIXELS / rate / 3600:.2f} |")
    print()
    compare_with_reference(checkpoint, stack, work, args.threads, min(args.size, 256))
    print(footer(started))


def compare_with_reference(checkpoint: Path, stack: Path, work: Path, threads: int, side: int) -> None:
    """The map of the stack's top-left ``side`` x ``side`` pixels by the inference form and by the reference path."""
    bounds = (LEFT, TOP - 10 * side, LEFT + 10 * side, TOP)
    maps = {}
    for inference in ("fast", "reference"):
        output = work / "maps" / f"part_{inference}.tif"
        map_rasters(str(checkpoint), str(stack), str(output), threads=threads, progress=False,
                    bounds=bounds, inference=inference)  # fmt: skip
        with rasterio.open(output) as classes, rasterio.open(probabilities_path(output)) as probabilities:
            maps[inference] = (classes.read(1), probabilities.read().astype(int))
    same = (maps["fast"][0] == maps["reference"][0]).mean()
    worst = np.abs(maps["fast"][1] - maps["reference"][1]).max()
    print(
        f"Fast against reference map, {side} x {side} px: classes equal on {100 * same:.3f} % of the pixels, "
        f"probabilities (uint8 percent) differ by at most {worst}; byte-identical: "
        f"{bool(same == 1 and worst == 0)}.\n"
    )


if __name__ == "__main__":
    main()
