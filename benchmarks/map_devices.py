r"""``cmap map`` on 1, 2, ... N devices (or CPU processes): wall time, pixels/s, equal maps.

    python benchmarks/map_devices.py --devices 1 2 --accelerator cpu --threads 1     # the mechanics, here
    python benchmarks/map_devices.py --devices 1 2 4 8 --accelerator gpu --precision bf16-true \
        --num_workers 8 --size 8192                                                # on a GPU machine

Needs nothing but the package (no ../shared data), so it runs on a lent machine as it is:

1. A synthetic stack of ``--dates`` multi-band GeoTIFFs (``--bands`` bands ``b1``.., ``--size`` x
   ``--size`` pixels, smooth fields plus noise, int16 DEFLATE tiles) in ``--workdir``.
2. The default recipe (``configs/default.yaml``: TempCNN and its date-grid head) fitted for a few
   steps on synthetic series of the same bands and dates (the speed does not depend on the weights).
3. ``cmap map`` of the stack for each device count (``--strategy ddp`` above one), each in its own
   process group; the maps are compared with the first one pixel for pixel.

Prints a Markdown table: wall time (process start, model load, classification, assembly), windows
per process, pixels/s of the whole command, and whether the map equals the 1-device map.
"""

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
from common import REPO
from rasterio.transform import from_origin


def build_stack(folder: Path, size: int, dates: int, bands: int) -> Path:
    """``dates`` GeoTIFFs of ``bands`` bands (described ``b1``...), one per date, 2021-01-01 + 5 days each."""
    import datetime

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    cells = max(1, size // 64)  # fields of ~64 pixels
    for t in range(dates):
        date = datetime.date(2021, 1, 1) + datetime.timedelta(days=5 * t)
        path = folder / f"synthetic_{date}.tif"
        if path.exists():
            continue
        fields = rng.integers(0, 4000, (bands, cells, cells)).astype(np.int16)
        data = np.repeat(np.repeat(fields, -(-size // cells), axis=1), -(-size // cells), axis=2)[:, :size, :size]
        data = data + rng.integers(0, 200, data.shape, dtype=np.int16)
        with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=bands, dtype="int16",
                           crs="EPSG:32631", transform=from_origin(500_000, 4_800_000, 10, 10), tiled=True,
                           blockxsize=256, blockysize=256, compress="deflate") as dataset:  # fmt: skip
            dataset.write(data)
            for band in range(bands):
                dataset.set_band_description(band + 1, f"b{band + 1}")
    return folder


def fit_default_recipe(root: Path, dates: int, bands: int, classes: int) -> Path:
    """The default recipe fitted for 5 steps on synthetic series (bands ``b1``..., ``dates`` dates)."""
    found = sorted(root.glob("lightning_logs/version_*/checkpoints/last.ckpt"))
    if found:
        return found[-1]
    data = (
        "{class_path: cmap.data.SyntheticSITS, init_args: {class_names: ["
        + ", ".join(f"class{k}" for k in range(classes))
        + f"], num_bands: {bands}, num_dates: {dates}, num_train: 512, batch_size: 64}}}}"
    )
    command = [sys.executable, "-m", "cmap.cli", "fit", "--config", str(REPO / "configs" / "default.yaml"),
               "--data", data, "--trainer.max_steps", "5", "--trainer.default_root_dir", str(root),
               "--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu"]  # fmt: skip
    subprocess.run(command, check=True, cwd=REPO)
    return sorted(root.glob("lightning_logs/version_*/checkpoints/last.ckpt"))[-1]


def map_once(checkpoint: Path, rasters: Path, output: Path, devices: int, args: argparse.Namespace) -> dict:
    command = [sys.executable, "-m", "cmap.mapping", "--checkpoint", str(checkpoint), "--rasters", str(rasters),
               "--output", str(output), "--window_size", str(args.window_size), "--batch_size", str(args.batch_size),
               "--accelerator", args.accelerator, "--devices", str(devices), "--precision", args.precision,
               "--num_workers", str(args.num_workers), "--progress", "false", "--cog", "false"]  # fmt: skip
    command += ["--strategy", "ddp"] if devices > 1 else []
    command += ["--threads", str(args.threads)] if args.threads else []
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, start_new_session=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"cmap map on {devices} devices failed:\n{result.stderr[-3000:]}")
    windows = [int(n) for n in re.findall(r"process \d+ of \d+: (\d+) windows to classify", result.stderr)]
    return {"devices": devices, "wall_s": wall, "windows": windows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--size", type=int, default=1024, help="pixels per side of the synthetic stack")
    parser.add_argument("--dates", type=int, default=24)
    parser.add_argument("--bands", type=int, default=4)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--window_size", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=8192)
    parser.add_argument("--num_workers", type=int, default=0, help="reading processes per device")
    parser.add_argument("--threads", type=int, help="torch threads per process")
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "map_devices")
    args = parser.parse_args()
    rasters = build_stack(args.workdir / f"stack_{args.size}_{args.dates}x{args.bands}", args.size, args.dates,
                          args.bands)  # fmt: skip
    checkpoint = fit_default_recipe(args.workdir / f"model_{args.dates}x{args.bands}", args.dates, args.bands,
                                    args.classes)  # fmt: skip
    pixels = args.size**2
    rows, reference = [], None
    for devices in args.devices:
        output = args.workdir / f"map_{devices}" / "map.tif"
        row = map_once(checkpoint, rasters, output, devices, args)
        with rasterio.open(output) as classes, rasterio.open(output.with_name("map_probs.tif")) as probabilities:
            maps = np.concatenate([classes.read(), probabilities.read()])
        reference = maps if reference is None else reference
        row["equal"] = bool(np.array_equal(maps, reference))
        rows.append(row)
        print(f"{devices} devices: {row['wall_s']:.1f} s", file=sys.stderr)
    print(
        f"{pixels:,} pixels, {args.dates} dates x {args.bands} bands, default recipe, {args.accelerator}, "
        f"{args.precision}, windows of {args.window_size}, {args.num_workers} reading processes per device\n"
    )
    print("| devices | wall (s) | windows per process | pixels/s | speed-up | map equal to 1 device's |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        speed_up = rows[0]["wall_s"] / row["wall_s"]
        windows = ", ".join(map(str, row["windows"]))
        print(
            f"| {row['devices']} | {row['wall_s']:.1f} | {windows} | {pixels / row['wall_s']:,.0f} | "
            f"{speed_up:.2f}x | {row['equal']} |"
        )


if __name__ == "__main__":
    main()
