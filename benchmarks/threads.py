"""Training speed against torch's thread count, on an idle CPU and with one core taken by another process.

    python benchmarks/threads.py

PyTorch starts one OpenMP thread per core. When another process holds a core, every parallel op
waits at its barrier for a thread the scheduler has not run yet, and small models pay that on each
of their many small ops. Measured here: training steps (forward, loss, backward, AdamW) of

- the UCR Crop model of ``configs/ucr_crop_transformer.yaml`` (d_model 96, 3 layers; batch 128,
  46 dates, 1 band);
- the seed model (d_model 256, 4 layers; batch 128, 24 dates, 9 bands);

with 1 thread and with one per core, first as the machine is found, then while this script runs a
busy loop in a child process (one core taken, as by another job). Arms interleaved, medians printed.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch
from common import header, interleaved, load_average, seed_model, synthetic_batch, training_arm, ucr_crop_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="training steps per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()
    cores = os.cpu_count() or 1
    print(header("Threads"))
    torch.manual_seed(0)
    models = {
        "UCR Crop model (d96, 3 layers), batch 128 x 46 dates": (ucr_crop_model(), synthetic_batch(128, 46, 1)),
        "seed model (d256, 4 layers), batch 128 x 24 dates": (seed_model(), synthetic_batch(128, 24)),
    }
    thread_counts = sorted({1, cores})
    print("| model | condition | " + " | ".join(f"{n} thread{'s' * (n > 1)} samples/s" for n in thread_counts) + " |")
    print("|---|---|" + "---|" * len(thread_counts))
    for condition in ("as found", "one core busy"):
        busy = None
        if condition == "one core busy":
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            arms = {
                (name, n): training_arm(model, batch, args.steps, threads=n)
                for name, (model, batch) in models.items()
                for n in thread_counts
            }
            rates = interleaved(arms, args.repeats)
            load = load_average()
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
        for name in models:
            cells = " | ".join(f"{statistics.median(rates[(name, n)]):.0f}" for n in thread_counts)
            print(f"| {name} | {condition} ({load}) | {cells} |")
    torch.set_num_threads(cores)
    total = time.perf_counter() - started
    print(f"\nMedians of {args.repeats} interleaved rounds of {args.steps} steps. Total {total:.0f} s.")


if __name__ == "__main__":
    main()
