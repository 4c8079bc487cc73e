"""Exchanger (group propagation) vs Transformer encoder at equal width: speed against the number of
dates, and accuracy on UCR Crop.

    python benchmarks/encoder_scaling.py                    # pixels/s at T = 25 .. 400 (about 2 min)
    python benchmarks/encoder_scaling.py --training         # ... and training samples/s
    python benchmarks/encoder_scaling.py --accuracy         # UCR Crop test accuracy after the same short training

Speed: both encoders at the seed's width (d_model 256, 8 heads, 4 layers / blocks; 16 group tokens
for the Exchanger), fp32 inference (eval, ``torch.inference_mode``) on synthetic series of T dates
(20 % clouded), ``--tokens`` date tokens per forward pass (pixels = tokens / T, so every forward has
the same linear-layer work). Arms are interleaved, ``--repeats`` rounds, medians reported. "Cost per
date" is the time per pixel divided by T, relative to T = 25: a linear encoder stays at 1.0.

Accuracy: both encoders at equal width (d_model 64, 4 heads, 3 layers / blocks, 8 group tokens)
trained the same number of epochs on UCR Crop (the settings of ``configs/ucr_crop_transformer.yaml``
but narrower), then tested on the 16,800 test series.
"""

import argparse
import statistics
import tempfile
import time

import lightning as L
import torch
from common import (
    footer,
    header,
    interleaved,
    quiet_trainer,
    rate,
    seed_model,
    synthetic_batch,
    training_arm,
    ucr_crop_model,
)

DATES = (25, 50, 100, 200, 400)
ENCODERS = ("transformer", "exchanger")


def speed(args: argparse.Namespace) -> None:
    models = {name: seed_model(name) for name in ENCODERS}
    params = {name: sum(p.numel() for p in model.parameters()) for name, model in models.items()}
    batches = {t: synthetic_batch(max(1, args.tokens // t), t, seed=t) for t in DATES}
    arms = {}
    with torch.inference_mode():
        for t, batch in batches.items():
            for name, model in models.items():
                model.eval()
                model(batch["values"], batch["days"], batch["mask"])  # warm-up (allocations, kernels)
                arms[("inference", name, t)] = rate(
                    lambda m=model, b=batch: m(b["values"], b["days"], b["mask"]), len(batch["values"])
                )
        rates = interleaved(arms, args.repeats)
    if args.training:
        arms = {}
        for t, batch in batches.items():
            for name, model in models.items():
                model.train()
                arms[("training", name, t)] = training_arm(model, batch)
        rates.update(interleaved(arms, args.repeats))

    print(
        f"Equal width: d_model 256, 8 heads, 4 layers / blocks; Transformer {params['transformer']:,} parameters, "
        f"Exchanger (16 groups) {params['exchanger']:,}. {args.tokens} date tokens per forward pass, "
        f"medians of {args.repeats} interleaved rounds.\n"
    )
    for mode in ("inference", "training") if args.training else ("inference",):
        print(f"**{mode.capitalize()}** (pixels/s; cost per date relative to T = {DATES[0]}):\n")
        print("| dates T | pixels | Transformer pixels/s | Exchanger pixels/s | Exchanger / Transformer "
              "| Transformer cost per date | Exchanger cost per date |")  # fmt: skip
        print("|---|---|---|---|---|---|---|")
        medians = {key: statistics.median(values) for key, values in rates.items() if key[0] == mode}
        for t in DATES:
            tr, ex = medians[(mode, "transformer", t)], medians[(mode, "exchanger", t)]
            # Time per pixel per date, relative to the shortest series: rate(T0) * T0 / (rate(T) * T).
            cost = {
                name: medians[(mode, name, DATES[0])] * DATES[0] / (medians[(mode, name, t)] * t) for name in ENCODERS
            }
            print(
                f"| {t} | {len(batches[t]['values'])} | {tr:.1f} | {ex:.1f} | {ex / tr:.2f} | "
                f"{cost['transformer']:.2f} | {cost['exchanger']:.2f} |"
            )
        print()


def accuracy(args: argparse.Namespace) -> None:
    from cmap.data import UCRCrop
    from cmap.data.perturbations import Augmentation

    width, depth, heads, groups = 64, 3, 4, 8
    print(
        f"UCR Crop, equal width: d_model {width}, {heads} heads, {depth} layers / blocks (Exchanger: {groups} group "
        f"tokens), dropout 0.1, {args.epochs} epochs, batch 128, AdamW one-cycle 1e-5 .. 2e-3, label smoothing 0.1, "
        "date dropout 0.1, band noise 0.03, seed 0; test on the 16,800 test series.\n"
    )
    print("| encoder | parameters | training time | test accuracy | test pass pixels/s (with data loading, metrics) |")
    print("|---|---|---|---|---|")
    for name in ENCODERS:
        L.seed_everything(0, verbose=False)
        model = ucr_crop_model(width, name, heads, depth, groups, max_lr=0.002, focal_gamma=0.0, label_smoothing=0.1)
        augmentation = Augmentation(date_dropout=0.1, band_noise=0.03)
        data = UCRCrop(batch_size=128, val_fraction=0.05, augmentation=augmentation)
        with tempfile.TemporaryDirectory() as workdir:
            trainer = quiet_trainer(max_epochs=args.epochs, limit_val_batches=0, default_root_dir=workdir)
            start = time.perf_counter()
            trainer.fit(model, datamodule=data)
            train_s = time.perf_counter() - start
            start = time.perf_counter()
            metrics = trainer.test(model, datamodule=data, verbose=False)[0]
            test_s = time.perf_counter() - start
        params = sum(p.numel() for p in model.parameters())
        print(
            f"| {name} | {params:,} | {train_s:.0f} s | {metrics['test/overall_accuracy']:.4f} | {16800 / test_s:.0f} |"
        )
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=6400, help="date tokens (pixels x dates) per forward pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--training", action="store_true", help="also time training steps")
    parser.add_argument("--accuracy", action="store_true", help="train both on UCR Crop instead of timing")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs for --accuracy")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's, one per core)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    started = time.perf_counter()
    print(header("Exchanger vs Transformer"))
    accuracy(args) if args.accuracy else speed(args)
    print(footer(started))


if __name__ == "__main__":
    main()
