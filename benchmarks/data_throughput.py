"""Can the data module feed training? Batches/s of a large memory-mapped store vs the seed model.

    python benchmarks/data_throughput.py --num_series 10000000       # builds ~8.6 GB under --workdir
    python benchmarks/data_throughput.py --num_series 1000000 --json  # one line, for comparisons

1. Builds a synthetic store (9 bands, 24 dates, 7 classes, 20 % clouded dates) chunk by chunk.
2. Data alone: SeriesStore (``--streaming``: StreamingSeriesStore) setup (splits, statistics) and
   batches/s of its train loader (random rows of the memory-mapped store), batch 256.
3. Consumption: training steps/s of the seed model (d_model 256, 8 heads, 4 layers, band MLP
   9-32-64-128-256) on batches of the same shape, plain PyTorch (forward, backward, AdamW).
4. Peak RSS of this process (``ru_maxrss``) after the data phase and after the model phase. Run it
   at two sizes: RSS must not grow with the store.
"""

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import SEED_BANDS, SEED_CLASSES, seed_model, training_arm

from cmap.data.store import write_metadata
from cmap.data.store_datamodule import SeriesStore
from cmap.data.streaming import StreamingSeriesStore

BANDS = [f"b{i + 1}" for i in range(SEED_BANDS)]


def build_store(folder: Path, num_series: int, num_dates: int, chunk: int = 500_000) -> Path:
    """A synthetic store written chunk by chunk (memory bounded by ``chunk``)."""
    if (folder / "metadata.json").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    shape = (num_series, num_dates, len(BANDS))
    values = np.lib.format.open_memmap(folder / "values.npy", "w+", np.float32, shape)
    days = np.lib.format.open_memmap(folder / "days.npy", "w+", np.int32, shape[:2])
    labels = np.lib.format.open_memmap(folder / "labels.npy", "w+", np.int64, (num_series,))
    rng = np.random.default_rng(0)
    grid = np.arange(num_dates, dtype=np.int32) * (365 // num_dates)
    for start in range(0, num_series, chunk):
        n = min(chunk, num_series - start)
        block = rng.standard_normal((n, num_dates, len(BANDS)), dtype=np.float32)
        clouds = rng.random((n, num_dates)) < 0.2
        clouds[:, 0] = False
        block[clouds] = np.nan
        values[start : start + n] = block
        days[start : start + n] = grid
        labels[start : start + n] = rng.integers(0, len(SEED_CLASSES), n)
    for array in (values, days, labels):
        array.flush()
    write_metadata(folder, BANDS, SEED_CLASSES, shape[:2], None, "synthetic benchmark")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num_series", type=int, default=10_000_000)
    parser.add_argument("--num_dates", type=int, default=24)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--num_workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--model_steps", type=int, default=5)
    parser.add_argument("--streaming", action="store_true", help="StreamingSeriesStore instead of SeriesStore")
    parser.add_argument("--workdir", type=Path, default=Path("runs/data_benchmark"))
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--build_only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    folder = args.workdir / f"store_{args.num_series}"
    if args.build_only:
        build_store(folder, args.num_series, args.num_dates)
        return
    # Built in a child process, so that its memory does not count in this process' peak RSS.
    start = time.perf_counter()
    subprocess.run([sys.executable, __file__, *sys.argv[1:], "--build_only"], check=True)
    build_s = time.perf_counter() - start

    start = time.perf_counter()
    module = StreamingSeriesStore if args.streaming else SeriesStore
    data = module(str(folder), batch_size=args.batch_size, val_fraction=0.01, num_workers=args.num_workers)
    data.setup("fit")
    setup_s = time.perf_counter() - start
    loader = iter(data.train_dataloader())
    next(loader)
    start = time.perf_counter()
    for _ in range(args.batches):
        batch = next(loader)
    data_batches_per_s = args.batches / (time.perf_counter() - start)
    data_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    samples_per_s = training_arm(seed_model(), batch, args.model_steps)()
    model_batches_per_s = samples_per_s / len(batch["label"])

    figures = {
        "num_series": args.num_series,
        "store_gb": round(sum(f.stat().st_size for f in folder.iterdir()) / 1e9, 2),
        "build_s": round(build_s, 1),
        "setup_s": round(setup_s, 1),
        "data_batches_per_s": round(data_batches_per_s, 1),
        "seed_model_batches_per_s": round(model_batches_per_s, 2),
        "ratio": round(data_batches_per_s / model_batches_per_s, 1),
        "peak_rss_data_mb": round(data_rss_mb),
        "peak_rss_workers_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
        "peak_rss_with_model_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "data_module": module.__name__,
    }
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:>26}: {value}")


if __name__ == "__main__":
    main()
