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
from common import interleaved, load_average, machine, rate, seed_model, synthetic_batch

from cmap.ml.classifiers import Classifier
from cmap.ml.decoders import MultiClassClassification
from cmap.ml.embeddings import PixelEncoding, PositionalEncoding
from cmap.ml.encoders import TransformerEncoder


def ucr_crop_model() -> Classifier:
    """The architecture of configs/ucr_crop_transformer.yaml."""
    encoder = TransformerEncoder(PositionalEncoding(96, 1000, 1000), PixelEncoding([1, 32, 96]), 96, 4, 3, 0.1, 192)
    return Classifier(encoder, MultiClassClassification(96, 24, 0.1), class_names=[str(i) for i in range(24)])


def training_arm(model: Classifier, batch: dict[str, torch.Tensor], threads: int, steps: int):
    optimizer = torch.optim.AdamW(model.parameters(), 1e-4)

    def step() -> None:
        loss = model.criterion(model(batch["values"], batch["days"], batch["mask"]), batch["label"] % model.num_classes)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def run() -> None:
        torch.set_num_threads(threads)
        for _ in range(steps):
            step()

    torch.set_num_threads(threads)
    step()  # AdamW state
    return rate(run, steps * len(batch["label"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="training steps per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()
    cores = os.cpu_count() or 1
    print(f"# Threads\n\nMachine: {machine()}.\nAt start: {load_average()}.\n")
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
                (name, n): training_arm(model, batch, n, args.steps)
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
