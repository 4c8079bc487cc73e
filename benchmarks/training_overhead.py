"""Training overhead of ``cmap fit`` (Lightning) against a bare PyTorch loop, same model, data, optimizer.

    python benchmarks/training_overhead.py                        # seed model, batch 128, 24 dates
    python benchmarks/training_overhead.py --batch_size 256 --dates 50 --steps 12

Both arms train the seed model (``../shared/seed/classifier.yaml``) on the seed's synthetic data
module (``configs/seed_data_synthetic.yaml``: 9 bands, 7 classes, in-memory series), each through
its own DataLoader of that data module, so data loading costs the same in both and is part of both:

- ``cmap fit``: the ``cmap`` command's LightningCLI, built in this process from those two configs
  (every callback ``cmap fit`` adds, TensorBoard logger, progress bar on unless ``--no_progress_bar``,
  the Classifier's metrics and logging, its AdamW + one-cycle schedule); validation and checkpoint
  writing are off (they are per epoch, not per step);
- bare: a second copy of the model, built from the same configs, with the optimizer and schedule of
  its own ``configure_optimizers``; each step is next batch, forward, focal loss, zero_grad,
  backward, AdamW step, schedule step, nothing else.

The two arms alternate step by step in one process (this machine's load drifts within seconds): at
the end of each Lightning batch a callback runs and times one bare step. A Lightning step is the time
from the start of one batch to the start of the next (hooks, logging, progress bar and the next
batch's loading included) minus the bare step run in between. After ``--warmup`` steps of each,
``--steps`` pairs are timed; the ratio is the median of the per-step ratios.
"""

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import torch
from common import REPO, footer, header

from cmap.lightning_cli import CMapCLI

SEED_MODEL = REPO.parent / "shared" / "seed" / "classifier.yaml"
SEED_DATA = REPO / "configs" / "seed_data_synthetic.yaml"


def build(args: argparse.Namespace, workdir: str) -> CMapCLI:
    """The ``cmap fit`` objects (model, data module, trainer with cmap's callbacks), not yet run."""
    steps = args.warmup + args.steps + 1  # the last Lightning step only closes the previous interval
    return CMapCLI(
        run=False,
        args=[
            f"--model={args.model_config}",
            f"--data={SEED_DATA}",
            f"--data.init_args.num_dates={args.dates}",
            f"--data.init_args.batch_size={args.batch_size}",
            # The train split is what is left after holding out 5 % for validation: one epoch of `steps`.
            f"--data.init_args.num_train={int(steps * args.batch_size / 0.95) + args.batch_size}",
            "--data.init_args.val_fraction=0.05",
            # OneCycleLR divides by zero when warm-up rounds to less than 2 steps (e.g. 10 steps x 0.1).
            "--model.init_args.warmup_fraction=0.2",
            "--seed_everything=0",
            f"--trainer.max_steps={steps}",
            "--trainer.max_epochs=1",
            "--trainer.limit_val_batches=0",
            "--trainer.enable_checkpointing=false",
            f"--trainer.enable_progress_bar={not args.no_progress_bar}",
            f"--trainer.default_root_dir={workdir}",
        ],
    )


class BareLoop:
    """The minimal loop: one call is one training step, loading included."""

    def __init__(self, cli: CMapCLI, total_steps: int) -> None:
        self.model, data = cli.model, cli.datamodule
        data.setup("fit")
        self.model.trainer = SimpleNamespace(estimated_stepping_batches=total_steps)  # all the schedule reads
        setup = self.model.configure_optimizers()
        self.model.trainer = None
        self.optimizer, self.scheduler = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
        self.model.train()
        self.batches = iter(data.train_dataloader())

    def step(self) -> None:
        batch = next(self.batches)
        loss = self.model.criterion(self.model(batch["values"], batch["days"], batch["mask"]), batch["label"])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()


class Interleave(L.Callback):
    """Runs one bare step after each Lightning batch; records both arms' step times."""

    def __init__(self, bare: BareLoop) -> None:
        self.bare = bare
        self.batch_starts: list[float] = []
        self.bare_times: list[float] = []
        self.train_end = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batch_starts.append(time.perf_counter())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == trainer.max_steps - 1:
            self.train_end = time.perf_counter()
            return
        start = time.perf_counter()
        self.bare.step()
        self.bare_times.append(time.perf_counter() - start)

    def step_times(self) -> tuple[list[float], list[float]]:
        """Seconds per Lightning step and per bare step, pairwise."""
        starts, ends = self.batch_starts[:-1], self.batch_starts[1:]
        lightning = [end - start - bare for start, end, bare in zip(starts, ends, self.bare_times, strict=True)]
        return lightning, self.bare_times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--dates", type=int, default=24)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each arm")
    parser.add_argument("--steps", type=int, default=40, help="timed steps of each arm")
    parser.add_argument("--model_config", type=Path, default=SEED_MODEL)
    parser.add_argument("--no_progress_bar", action="store_true", help="cmap fit without its progress bar")
    args = parser.parse_args()
    started = time.perf_counter()
    print(header("Training overhead: cmap fit vs a bare PyTorch loop"))

    with tempfile.TemporaryDirectory() as workdir:
        cli = build(args, workdir)
        interleave = Interleave(BareLoop(build(args, workdir), cli.trainer.max_steps))
        cli.trainer.callbacks.append(interleave)
        with contextlib.redirect_stdout(sys.stderr):  # the progress bar writes to stdout, which holds the report
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        epoch_end_s = time.perf_counter() - interleave.train_end
        # The Classifier's own per-step work besides model and loss: its training metrics update.
        logits = torch.randn(args.batch_size, cli.model.num_classes)
        labels = torch.randint(0, cli.model.num_classes, (args.batch_size,))
        start = time.perf_counter()
        for _ in range(20):
            cli.model.train_metrics.update(logits, labels)
        metrics_ms = 1000 * (time.perf_counter() - start) / 20

    lightning, bare = (times[args.warmup :] for times in interleave.step_times())
    ratios = [b / a for a, b in zip(lightning, bare, strict=True)]  # speed ratio: bare time / Lightning time
    print(
        f"Seed model, batch {args.batch_size}, {args.dates} dates, 9 bands; {args.steps} timed steps of each arm "
        f"(after {args.warmup} warm-up steps), alternating step by step; progress bar "
        f"{'off' if args.no_progress_bar else 'on'}.\n"
    )
    print("| | cmap fit | bare loop | cmap fit / bare (samples/s) |")
    print("|---|---|---|---|")
    print(
        f"| step time, median | {1000 * statistics.median(lightning):.0f} ms | {1000 * statistics.median(bare):.0f} ms "
        f"| **{statistics.median(ratios):.3f}** (median of per-step ratios; quartiles "
        f"{' / '.join(f'{q:.3f}' for q in statistics.quantiles(ratios, n=4))}) |"
    )
    print(
        f"| samples/s, total over the timed steps | {args.batch_size * len(lightning) / sum(lightning):.1f} | "
        f"{args.batch_size * len(bare) / sum(bare):.1f} | {sum(bare) / sum(lightning):.3f} |\n"
    )
    print(
        f"The Classifier's training-metrics update: {metrics_ms:.2f} ms per step "
        f"({100 * metrics_ms / (1000 * statistics.median(bare)):.2f} % of a step). End of training after the "
        f"last batch (epoch-end metrics, logger flush; not in the step times): {1000 * epoch_end_s:.0f} ms.\n"
    )
    print(footer(started))


if __name__ == "__main__":
    main()
