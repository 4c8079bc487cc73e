"""Does self-supervised pretraining pay off when labels are few? (UCR Crop)

Protocol: pretrain an encoder on all 7,200 UCR Crop training series without their labels
(``--objective``: masked reconstruction with an AutoEncoder and one of its maskings, or
ContrastivePretraining), then fine-tune a Classifier with 10, 30 and 100 labelled series per class
(drawn with seeds 0, 1, 2), (a) from scratch and (b) from the pretrained encoder; report test
overall accuracy (16,800 series) as mean and standard deviation over the repeats.

    python benchmarks/pretraining.py --root ../shared/data/ucr_crop_formosat2
    python benchmarks/pretraining.py --objective contrastive --freeze_fraction 0.25 --threads 1

Prints the table and writes it (Markdown) to --output.
"""

import argparse
import os
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from common import machine, quiet_trainer, ucr_crop_encoder, ucr_crop_model

from cmap.data import UCRCrop
from cmap.data.datamodule import SeriesDataset, batch_loader
from cmap.data.perturbations import ContiguousDates, NoiseContamination, RandomDates
from cmap.ml.autoencoders import AutoEncoder
from cmap.ml.contrastive import ContrastivePretraining
from cmap.ml.decoders import BandReconstruction, ProjectionHead

# Default encoder width (--d_model): that of the first UCR Crop config, cheap enough for 18 fine-tunings.
D_MODEL = 64
MASKINGS = {  # name -> (strategy class, default ratio of hidden or contaminated dates)
    "random_dates": (RandomDates, 0.5),
    "contiguous_dates": (ContiguousDates, 0.5),
    "noise": (NoiseContamination, 0.15),
}
FINETUNE_BATCH = 32
OBJECTIVES = [*MASKINGS, "contrastive"]  # masked reconstruction (AutoEncoder), or ContrastivePretraining


def pretrain(
    root: str, objective: str, epochs: int, output: Path, d_model: int = D_MODEL, mask_ratio: float | None = None
) -> Path:
    L.seed_everything(0)
    data = UCRCrop(root=root, batch_size=128)
    data.setup("fit")
    train, val = data.datasets["train"], data.datasets["val"]
    every_series = SeriesDataset(train.series, np.concatenate([train.index, val.index]), data.input_contract)
    if objective == "contrastive":
        # Negatives come from the batch: a larger one than reconstruction needs.
        model = ContrastivePretraining(ucr_crop_encoder(d_model), ProjectionHead([d_model, d_model, 32]), max_lr=2e-3)
        batch_size = 256
    else:
        encoder, decoder = ucr_crop_encoder(d_model), BandReconstruction([d_model, 1])
        strategy, default_ratio = MASKINGS[objective]
        masking = strategy(mask_ratio or default_ratio)
        model = AutoEncoder(encoder, decoder, masking, max_lr=2e-3)
        batch_size = 128
    trainer = quiet_trainer(max_epochs=epochs)
    trainer.fit(model, train_dataloaders=batch_loader(every_series, batch_size, shuffle=True, drop_last=True))
    trainer.save_checkpoint(output)
    return output


def finetune(
    root: str,
    labels_per_class: int,
    seed: int,
    steps: int,
    encoder_from: Path | None,
    encoder_lr_factor: float = 1.0,
    freeze_fraction: float = 0.0,
    d_model: int = D_MODEL,
) -> float:
    L.seed_everything(seed)
    data = UCRCrop(root=root, batch_size=FINETUNE_BATCH, labels_per_class=labels_per_class, seed=seed)
    # The classifier freezes by epochs; an epoch is labels_per_class * 24 series (10 per class: 7.5 steps).
    steps_per_epoch = labels_per_class * len(data.source_class_names) / FINETUNE_BATCH
    freeze_encoder_epochs = round(freeze_fraction * steps / steps_per_epoch)
    model = ucr_crop_model(
        d_model,
        max_lr=1e-3,
        focal_gamma=0.0,
        init_encoder_from=None if encoder_from is None else str(encoder_from),
        encoder_lr_factor=1.0 if encoder_from is None else encoder_lr_factor,
        freeze_encoder_epochs=0 if encoder_from is None else freeze_encoder_epochs,
    )
    trainer = quiet_trainer(max_steps=steps, max_epochs=-1, limit_val_batches=0)
    trainer.fit(model, data)
    data.setup("test")
    test = batch_loader(data.datasets["test"], 1024)
    return trainer.test(model, dataloaders=test, verbose=False)[0]["test/overall_accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=None, help="folder with Crop_TRAIN.tsv / Crop_TEST.tsv (default: the wheel)")
    parser.add_argument("--labels", type=int, nargs="+", default=[10, 30, 100])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--objective", choices=OBJECTIVES, default="random_dates", help="masking, or contrastive")
    parser.add_argument("--pretrain_epochs", type=int, default=30)
    parser.add_argument("--finetune_steps", type=int, default=600)
    parser.add_argument("--mask_ratio", type=float, default=None, help="masking objectives: 0.5 (dates), 0.15 (noise)")
    parser.add_argument("--d_model", type=int, default=D_MODEL, help="encoder width (heads 4, 3 layers)")
    parser.add_argument("--encoder_lr_factor", type=float, default=1.0, help="pretrained encoder's LR fraction")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads (0: torch's default); 1 on a shared machine"
    )
    parser.add_argument(
        "--freeze_fraction", type=float, default=0.0,
        help="pretrained arm: linear probe first, for this fraction of the fine-tuning steps (rounded to epochs)",
    )  # fmt: skip
    parser.add_argument("--arms", nargs="+", choices=["scratch", "pretrained"], default=["scratch", "pretrained"])
    parser.add_argument("--reuse_pretrained", action="store_true", help="reuse this pretraining's checkpoint")
    parser.add_argument("--workdir", type=Path, default=Path("runs/pretraining"))
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/pretraining.md"))
    args = parser.parse_args()
    torch.set_float32_matmul_precision("high")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    ratio = f"_ratio{args.mask_ratio}" if args.mask_ratio else ""
    checkpoint = args.workdir / f"pretrained_{args.objective}{ratio}_d{args.d_model}_{args.pretrain_epochs}epochs.ckpt"
    if "pretrained" not in args.arms:
        pretraining = "not needed"
    elif args.reuse_pretrained and checkpoint.exists():
        pretraining = f"reused {checkpoint}"
    else:
        pretrain(args.root, args.objective, args.pretrain_epochs, checkpoint, args.d_model, args.mask_ratio)
        pretraining = f"{(time.perf_counter() - start) / 60:.1f} min"
    print(f"pretraining ({args.objective}, {args.pretrain_epochs} epochs): {pretraining}", flush=True)

    rows = []
    for labels in args.labels:
        scores = {"scratch": [], "pretrained": []}
        for seed in range(args.repeats):
            for arm, source in (("scratch", None), ("pretrained", checkpoint)):
                if arm not in args.arms:
                    continue
                accuracy = finetune(
                    args.root, labels, seed, args.finetune_steps, source, args.encoder_lr_factor,
                    args.freeze_fraction, args.d_model,
                )  # fmt: skip
                scores[arm].append(accuracy)
                print(f"labels/class {labels} seed {seed} {arm}: {accuracy:.4f}", flush=True)
        scratch, pretrained = np.array(scores["scratch"]), np.array(scores["pretrained"])
        cells = [f"{a.mean():.4f} ± {a.std():.4f}" if len(a) else "not run" for a in (scratch, pretrained)]
        gain = f"{100 * (pretrained.mean() - scratch.mean()):+.1f}" if len(scratch) and len(pretrained) else "-"
        rows.append(f"| {labels} | {cells[0]} | {cells[1]} | {gain} |")
    total_minutes = (time.perf_counter() - start) / 60
    table = "\n".join(
        [
            f"Encoder: transformer d_model {args.d_model}, 3 layers. "
            f"Pretraining: `{args.objective}`{ratio.replace('_ratio', ' ratio ')}, {args.pretrain_epochs} epochs "
            f"on the 7,200 training series ({pretraining}); fine-tuning: {args.finetune_steps} steps, batch 32, "
            f"encoder LR x{args.encoder_lr_factor}, encoder frozen for the first {args.freeze_fraction:.0%} of them, "
            f"{args.repeats} seeds; test: 16,800 series. Total {total_minutes:.1f} min ({machine()}).",
            "",
            "| labels per class | from scratch | pretrained | gain (points) |",
            "|---|---|---|---|",
            *rows,
        ]
    )
    print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    temporary = args.output.with_name(args.output.name + ".tmp")
    temporary.write_text(table + "\n")
    os.replace(temporary, args.output)


if __name__ == "__main__":
    main()
