"""GPU check: the device's matmul roofline, then training, inference and ``cmap map`` against it, in one run.

    python benchmarks/gpu_check.py --output_dir OUT --ucr_root .devdata/ucr   # on a GPU (~8 min on an H200)
    python benchmarks/gpu_check.py --smoke --output_dir OUT                   # every section, CPU, toy sizes
    python benchmarks/gpu_check.py --sections roofline inference              # some sections only

On a lent GPU this is run once by ``benchmarks/gpu_run.sh`` (the plan: ``benchmarks/README.md``).
Sections, in the order they run (each prints its Markdown table as it ends, and ``OUT/gpu_check.md``
and ``OUT/gpu_check.json`` are rewritten after each, so a run stopped by a time limit keeps what it
measured):

- ``roofline``: matmul TFLOP/s of the device, square products in fp32, tf32 (CUDA) and bf16, and
  the seed model's feed-forward product (every date of every pixel, 256 -> 1024) in bf16.
- ``inference``: the seed model (d_model 256, 8 heads, 4 layers, 9 bands, 50 dates) in eval mode on
  device-resident batches: fp32, tf32, bf16-mixed, bf16-true (PyTorch's fused transformer kernel
  on and off: the latter is scaled-dot-product attention), bf16-true compiled (Inductor, weights
  frozen, as ``cmap map --compile``); pixels/s, TFLOP/s (FLOPs counted), fraction of the bf16 matmul
  roofline, and the change against fp32 (max |probability difference|, arg max agreement, relative
  logit error).
- ``training``: ``cmap fit`` of the UCR Crop models (``configs/ucr_crop_tempcnn.yaml``, TempCNN, and
  ``configs/ucr_crop_transformer.yaml``) through the ``cmap`` LightningCLI with its callbacks and
  logger, steps/s after a warm-up and seconds per epoch, arm by arm: ``today`` (the step as it was
  before issue 22: per-batch metric updates, boolean-selection batch norm, one_hot, the date check
  on the device, AdamW foreach), ``sync-free`` (the package now), ``+ compile`` and ``+ CUDA graphs``
  (``CompileModel`` default mode / ``reduce-overhead``), and larger batches.
- ``profile``: torch.profiler over a few Lightning steps of the TempCNN model, ``today`` and
  ``sync-free``: ops, kernel launches and host-device waits per step, host time vs device time;
  the full tables in ``OUT/profile_<arm>.txt``.
- ``map``: ``cmap map`` end to end on a generated raster mosaic (one int16 GeoTIFF per band and
  date) with a checkpoint of the seed model, bf16-true, against the same model's forward pass alone
  at the same batch (pixels/s), with 0 and ``--map_workers`` reading processes.
- ``accuracy``: the TempCNN model on UCR Crop, 3 seeds, the config's batch against ``--large_batch``
  with the learning rate scaled by the square-root rule (``cmap.ml.budget.ScaleBatch``): test OA of
  the final weights and seconds per epoch.

``--smoke`` runs every section on the CPU at toy sizes, compiled arms with the ``eager`` backend
(``tests/test_gpu_check.py`` runs it): it checks the script, not the speed.
"""

import argparse
import contextlib
import json
import math
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from common import (
    REPO,
    SEED_BANDS,
    SEED_CLASSES,
    SHARED_DATA,
    footer,
    load_average,
    machine,
    mha_fast_path,
    rate,
    seed_model,
    synchronize,
    synthetic_batch,
)
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

#: In the order they run on a GPU: the issue's three targets first, then the accuracy check, the profile last.
SECTIONS = ("roofline", "training", "inference", "map", "accuracy", "profile")
UCR_CONFIGS = {
    "tempcnn": REPO / "configs" / "ucr_crop_tempcnn.yaml",
    "transformer": REPO / "configs" / "ucr_crop_transformer.yaml",
}
#: Host-side events that wait for the device (CUDA runtime calls), counted per profiled step.
WAIT_EVENTS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")
#: Host-side events that launch device work: kernels (runtime API; Triton's through the driver API) and graphs.
LAUNCH_EVENTS = ("cudaLaunchKernel", "cuLaunchKernel", "cudaGraphLaunch")
#: aten ops whose result the host reads back from the device (each a wait on a GPU).
HOST_READ_OPS = ("aten::_local_scalar_dense", "aten::nonzero", "aten::bincount")


class Sizes:
    """Problem sizes: the device's, or toy ones for ``--smoke``."""

    def __init__(self, smoke: bool, args: argparse.Namespace) -> None:
        self.smoke = smoke
        self.matmul = 256 if smoke else 8192
        self.pixels = 256 if smoke else args.pixels
        self.dates = 8 if smoke else 50
        self.calls = 2 if smoke else 5
        self.repeats = 1 if smoke else args.repeats
        self.train_steps = 6 if smoke else args.train_steps
        self.warmup_steps = 2 if smoke else 30
        self.batches = [32, 64] if smoke else [128, *args.large_batches]
        self.profile_steps = 2 if smoke else 5
        self.map_size = 48 if smoke else args.map_size
        self.map_batch = 512 if smoke else args.pixels
        self.map_workers = 0 if smoke else args.map_workers
        self.seeds = [0] if smoke else [0, 1, 2]
        self.large_batch = 128 if smoke else args.large_batch
        self.seed_width = 16 if smoke else 256  # d_model of the seed-like model of the map section


class Report:
    """Markdown and JSON of the sections so far, rewritten in ``output_dir`` at every update: a run stopped
    by a time limit keeps what it measured, down to the last arm of a section."""

    def __init__(self, output_dir: Path | None) -> None:
        self.output_dir = output_dir
        self.markdown: dict[str, str] = {}
        self.figures: dict[str, Any] = {}
        if output_dir is not None:
            output_dir.mkdir(parents=True, exist_ok=True)

    def add(self, section: str, text: str, figures: Any, final: bool = True) -> None:
        """Set ``section``'s text and figures (replacing a partial version); printed when ``final``."""
        if final:
            print(text, flush=True)
        self.markdown[section] = text if final else text + "\n(partial: the section was still running)\n"
        self.figures[section] = figures
        if self.output_dir is not None:
            (self.output_dir / "gpu_check.md").write_text("\n".join(self.markdown.values()))
            (self.output_dir / "gpu_check.json").write_text(json.dumps(self.figures, indent=1, default=str))


def median_rate(function: Callable[[], object], items: float, sizes: Sizes, device: torch.device) -> float:
    """Median items/s over ``sizes.repeats`` measurements of ``sizes.calls`` calls, after one untimed call."""
    function()
    measure = rate(function, items, sizes.calls, device)
    return statistics.median(measure() for _ in range(sizes.repeats))


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# Roofline
# --------------------------------------------------------------------------------------------------


def matmul_tflops(shape: tuple[int, int, int], dtype: torch.dtype, sizes: Sizes, device: torch.device) -> float:
    """TFLOP/s of an (m x k) @ (k x n) product on random data (never zeros: they run faster)."""
    m, k, n = shape
    a = torch.randn(m, k, device=device).to(dtype)
    b = torch.randn(k, n, device=device).to(dtype)
    return median_rate(lambda: a @ b, 2 * m * k * n / 1e12, sizes, device)


def roofline(sizes: Sizes, device: torch.device) -> tuple[str, dict[str, float]]:
    s = sizes.matmul
    figures = {}
    torch.set_float32_matmul_precision("highest")
    figures["fp32"] = matmul_tflops((s, s, s), torch.float32, sizes, device)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
        figures["tf32"] = matmul_tflops((s, s, s), torch.float32, sizes, device)
        torch.set_float32_matmul_precision("highest")
    figures["bf16"] = matmul_tflops((s, s, s), torch.bfloat16, sizes, device)
    ffn = (sizes.pixels * sizes.dates, 256, 1024)
    figures["bf16 FFN shape"] = matmul_tflops(ffn, torch.bfloat16, sizes, device)
    rows = [[name, f"{value:,.1f}"] for name, value in figures.items()]
    text = (
        f"## Matmul roofline\n\nSquare products {s} x {s} x {s}; FFN shape: {ffn[0]} x {ffn[1]} x {ffn[2]} "
        f"(the seed model's feed-forward product over every date of {sizes.pixels} pixels).\n\n"
    )
    return text + table(["product", "TFLOP/s"], rows), figures


# --------------------------------------------------------------------------------------------------
# Inference
# --------------------------------------------------------------------------------------------------


def flops_per_pixel(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> float:
    """FLOPs of one forward pass per series (the unfused path: the fused kernel is opaque to the counter)."""
    small = {key: value[:64] for key, value in batch.items()}
    with mha_fast_path(False), FlopCounterMode(display=False) as counter:
        model(small["values"], small["days"], small["mask"])
    return counter.get_total_flops() / len(small["values"])


def inference(sizes: Sizes, device: torch.device, roof: dict[str, float], autotune: bool) -> tuple[str, dict[str, Any]]:
    torch.manual_seed(0)
    model = seed_model().to(device).eval()
    batch = {key: value.to(device) for key, value in synthetic_batch(sizes.pixels, sizes.dates, seed=1).items()}
    flops = flops_per_pixel(model, batch)
    bf16_model = seed_model().to(device).eval()
    bf16_model.load_state_dict(model.state_dict())
    bf16_model.to(torch.bfloat16)
    compiled = torch.compile(bf16_model, backend="eager") if sizes.smoke else None
    if compiled is None:  # as CompileModel when predicting: Inductor, weights frozen into the graph
        compiled = torch.compile(bf16_model, options={"freezing": True})

    def run(module, dtype=torch.float32, autocast=False, fast_path=True, tf32=False):
        def forward() -> torch.Tensor:
            torch.set_float32_matmul_precision("high" if tf32 else "highest")
            with (
                torch.inference_mode(),
                mha_fast_path(fast_path),
                torch.autocast(device.type, torch.bfloat16, enabled=autocast),
            ):
                return module(batch["values"].to(dtype), batch["days"], batch["mask"]).float()

        return forward

    arms = {"fp32": run(model)}
    if device.type == "cuda":
        arms["tf32"] = run(model, tf32=True)
    arms |= {
        "bf16-mixed": run(model, autocast=True),
        "bf16-true": run(bf16_model, torch.bfloat16),
        "bf16-true, SDPA (fused kernel off)": run(bf16_model, torch.bfloat16, fast_path=False),
        "bf16-true compiled": run(compiled, torch.bfloat16, fast_path=False),
    }
    if autotune and not sizes.smoke:  # Inductor tries GEMM kernels per shape (minutes of compilation)
        autotuned = torch.compile(bf16_model, mode="max-autotune-no-cudagraphs")
        arms["bf16-true compiled, max-autotune"] = run(autotuned, torch.bfloat16, fast_path=False)
    reference = arms["fp32"]()
    reference_probabilities = reference.softmax(-1)
    rows, figures = [], {"gflop_per_pixel": flops / 1e9, "pixels": sizes.pixels, "dates": sizes.dates, "arms": {}}
    for name, forward in arms.items():
        start = time.perf_counter()
        logits = forward()  # the first call: warm-up (and compilation)
        synchronize(device)
        first_s = time.perf_counter() - start
        pixels_per_s = median_rate(forward, sizes.pixels, sizes, device)
        tflops = pixels_per_s * flops / 1e12
        change = {
            "max_probability_difference": (logits.softmax(-1) - reference_probabilities).abs().max().item(),
            "argmax_agreement": (logits.argmax(-1) == reference.argmax(-1)).float().mean().item(),
            "relative_logit_error": ((logits - reference).norm() / reference.norm()).item(),
        }
        figures["arms"][name] = {"pixels_per_s": pixels_per_s, "tflops": tflops, "first_call_s": first_s, **change}
        rows.append([
            name, f"{pixels_per_s:,.0f}", f"{tflops:.1f}", f"{tflops / roof['bf16']:.3f}",
            f"{change['max_probability_difference']:.1e}", f"{change['argmax_agreement']:.4f}",
            f"{change['relative_logit_error']:.1e}", f"{first_s:.1f} s",
        ])  # fmt: skip
    torch.set_float32_matmul_precision("highest")
    best = max(figures["arms"].values(), key=lambda arm: arm["pixels_per_s"])
    figures["best_fraction_of_bf16_roofline"] = best["tflops"] / roof["bf16"]
    text = (
        f"## Inference: seed model\n\n{sizes.pixels} pixels x {sizes.dates} dates (20 % clouded) per forward pass, "
        f"**{flops / 1e9:.3f} GFLOP per pixel** (counted); medians of {sizes.repeats} x {sizes.calls} calls. "
        f"Roofline: the bf16 square matmul, {roof['bf16']:.1f} TFLOP/s.\n\n"
    )
    header = ["variant", "pixels/s", "TFLOP/s", "of bf16 roofline", "max abs prob. diff vs fp32",
              "arg max agreement", "rel. logit error", "first call"]  # fmt: skip
    return text + table(header, rows), figures


# --------------------------------------------------------------------------------------------------
# Training: the step as it was (the "today" arm) and as it is
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def step_as_before() -> Iterator[None]:
    """The training step as it was before issue 22 (commit 610cf60): the code paths that made a GPU
    step wait for the device, put back for the ``today`` arms."""
    from torchmetrics import MetricCollection

    from cmap.ml.base import SITSTask
    from cmap.ml.embeddings.position import PositionalEncoding
    from cmap.ml.losses import FocalLoss
    from cmap.ml.metrics import DeferredMetrics
    from cmap.ml.tempcnn import MaskedBatchNorm1d

    def focal_loss_with_one_hot(self, logits, target):
        log_p = F.log_softmax(logits.float(), dim=-1)
        hard = F.one_hot(target, logits.shape[-1]).to(log_p.dtype)
        q = hard * (1 - self.label_smoothing) + self.label_smoothing / logits.shape[-1]
        focus = 1.0 if self.gamma == 0 else (1 - log_p.exp()) ** self.gamma
        if self.alpha is None:
            return -(q * focus * log_p).sum(dim=-1).mean()
        return -(q * self.alpha * focus * log_p).sum() / (hard * self.alpha).sum()

    position_forward = PositionalEncoding.forward

    def position_checked_on_any_device(self, days):
        if not torch.compiler.is_compiling() and days.device.type != "cpu":
            self.check_days(days)
        return position_forward(self, days)

    saved = {
        (MaskedBatchNorm1d, "forward"): (MaskedBatchNorm1d.forward, MaskedBatchNorm1d.normalise_selection),
        (FocalLoss, "forward"): (FocalLoss.forward, focal_loss_with_one_hot),
        (PositionalEncoding, "forward"): (position_forward, position_checked_on_any_device),
        (DeferredMetrics, "update"): (DeferredMetrics.update, MetricCollection.update),  # torchmetrics per batch
        (SITSTask, "fused_optimizer"): (SITSTask.fused_optimizer, False),  # AdamW's CUDA default: foreach
    }
    for (owner, name), (_, replacement) in saved.items():
        setattr(owner, name, replacement)
    try:
        yield
    finally:
        for (owner, name), (original, _) in saved.items():
            setattr(owner, name, original)


def step_variant(variant: str) -> contextlib.AbstractContextManager:
    return step_as_before() if variant == "today" else contextlib.nullcontext()


class StepTimer(L.Callback):
    """Seconds from the start of step ``warmup`` to the end of training (device drained at both ends)."""

    def __init__(self, warmup: int, device: torch.device) -> None:
        self.warmup, self.device = warmup, device
        self.start: float | None = None
        self.timed_steps = 0
        self.seconds = float("nan")
        self.fit_start = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.start is None and trainer.global_step >= self.warmup:
            synchronize(self.device)
            self.start, self.start_step = time.perf_counter(), trainer.global_step

    def on_train_end(self, trainer, pl_module) -> None:
        synchronize(self.device)
        if self.start is not None:
            self.seconds = time.perf_counter() - self.start
            self.timed_steps = trainer.global_step - self.start_step


class ProfileSteps(L.Callback):
    """torch.profiler over ``steps`` training steps from step ``first``."""

    def __init__(self, first: int, steps: int, device: torch.device) -> None:
        self.first, self.steps, self.device = first, steps, device
        self.profiler: profile | None = None
        self.wall_s = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.first and self.profiler is None:
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
            synchronize(self.device)
            self.profiler = profile(activities=activities)
            self.profiler.__enter__()
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.profiler is not None and self.wall_s == 0 and trainer.global_step >= self.first + self.steps:
            synchronize(self.device)
            self.wall_s = time.perf_counter() - self.start
            self.profiler.__exit__(None, None, None)


def ucr_cli(model: str, batch_size: int, args: argparse.Namespace, workdir: Path, device: torch.device, *extra: str):
    """The ``cmap fit`` objects of a UCR Crop config (model, data, trainer with cmap's callbacks), not yet run."""
    from cmap.lightning_cli import CMapCLI

    root = args.ucr_root or SHARED_DATA / "ucr_crop_formosat2"
    return CMapCLI(
        run=False,
        args=[
            f"--config={UCR_CONFIGS[model]}",
            f"--data.init_args.root={root}",
            f"--data.init_args.batch_size={batch_size}",
            f"--trainer.accelerator={'gpu' if device.type == 'cuda' else 'cpu'}",
            "--trainer.devices=1",
            "--trainer.callbacks=[]",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            f"--trainer.default_root_dir={workdir}",
            *extra,
        ],
    )


def compile_callback(mode: str | None, sizes: Sizes):
    from cmap.ml.compile import CompileModel

    torch._dynamo.reset()  # a fresh cache: the arms compile the same code objects
    return CompileModel(backend="eager") if sizes.smoke else CompileModel(mode=mode)


def train_arm(
    model: str, batch_size: int, variant: str, sizes: Sizes, args: argparse.Namespace, device: torch.device
) -> dict[str, float]:
    """Steps/s of ``cmap fit`` for ``warmup + train_steps`` steps of one arm, and seconds per epoch."""
    with tempfile.TemporaryDirectory() as workdir, step_variant(variant):
        total = sizes.warmup_steps + sizes.train_steps
        cli = ucr_cli(
            model, batch_size, args, Path(workdir), device, f"--trainer.max_steps={total}",
            "--trainer.max_epochs=100000", "--trainer.limit_val_batches=0", "--trainer.enable_checkpointing=false",
            "--seed_everything=0",
        )  # fmt: skip
        timer = StepTimer(sizes.warmup_steps, device)
        cli.trainer.callbacks.append(timer)
        if variant in ("compile", "CUDA graphs"):
            cli.trainer.callbacks.append(
                compile_callback("reduce-overhead" if variant == "CUDA graphs" else None, sizes)
            )
        with contextlib.redirect_stdout(sys.stderr):
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        steps_per_s = timer.timed_steps / timer.seconds
        batches_per_epoch = len(cli.datamodule.datasets["train"]) // batch_size
        first_s = timer.start - timer.fit_start if timer.start is not None else float("nan")
    return {
        "steps_per_s": steps_per_s,
        "series_per_s": steps_per_s * batch_size,
        "epoch_s": batches_per_epoch / steps_per_s,
        "until_warm_s": first_s,
    }


def training_plan(sizes: Sizes, args: argparse.Namespace) -> list[tuple[str, int, str]]:
    """(model, batch, arm) to measure, the most telling first: each compiled arm costs a compilation
    (tens of seconds), so larger batches are compiled for the TempCNN model only."""
    base, larger = sizes.batches[0], sizes.batches[1:]
    plan = []
    for model in args.training_models:
        plan += [(model, base, "today"), (model, base, "sync-free"), (model, base, "CUDA graphs")]
        if args.default_compile or sizes.smoke:
            plan.append((model, base, "compile"))
        if model == "tempcnn":
            plan += [(model, batch_size, "sync-free") for batch_size in larger]
            plan += [(model, batch_size, "CUDA graphs") for batch_size in larger[:1]]
        else:
            plan += [(model, batch_size, "sync-free") for batch_size in larger[:1]]
    if sizes.smoke:  # every kind of arm once; the speed of toy sizes on a CPU means nothing
        plan = [arm for arm in plan if arm[0] == "tempcnn"][:5] + [("transformer", base, "sync-free")]
    return plan


def training(sizes: Sizes, args: argparse.Namespace, device: torch.device, report: Report):
    base = sizes.batches[0]
    text = (
        f"## Training: UCR Crop models through `cmap fit`\n\n{sizes.warmup_steps} warm-up steps, then "
        f"{sizes.train_steps} timed steps (epoch ends included, validation off); seconds per epoch = "
        "full batches of the 6,840 training series / steps per s. `today`: the step as before issue 22; "
        "`sync-free`: the package now; `compile`: + CompileModel (Inductor); `CUDA graphs`: + CompileModel "
        "mode reduce-overhead. Until warm: from the start of fit to the first timed step (compilation "
        "included).\n\n"
    )
    header = ["model", "batch", "arm", "steps/s", "series/s", "s per epoch", "steps/s vs today", "until warm"]
    rows, figures = [], {}
    for model, batch_size, variant in training_plan(sizes, args):
        try:
            result = train_arm(model, batch_size, variant, sizes, args, device)
        except Exception as error:  # one failing arm (e.g. a compiler error) must not cost the others
            print(f"training arm {model} {batch_size} {variant} failed: {error!r}", file=sys.stderr)
            result = {"error": repr(error)[:300]}
        figures[f"{model} | {batch_size} | {variant}"] = result
        today = figures.get(f"{model} | {base} | today", {}).get("steps_per_s")
        if "error" in result:
            rows.append([model, batch_size, variant, "failed", "", "", "", result["error"][:80]])
        else:
            rows.append([
                model, batch_size, variant, f"{result['steps_per_s']:.1f}", f"{result['series_per_s']:,.0f}",
                f"{result['epoch_s']:.2f}", f"{result['steps_per_s'] / today:.2f}x" if today else "",
                f"{result['until_warm_s']:.1f} s",
            ])  # fmt: skip
        report.add("training", text + table(header, rows), figures, final=False)
    return text + table(header, rows), figures


# --------------------------------------------------------------------------------------------------
# Profile
# --------------------------------------------------------------------------------------------------


def profile_arm(variant: str, sizes: Sizes, args: argparse.Namespace, device: torch.device, out: Path | None):
    steps = sizes.profile_steps
    with tempfile.TemporaryDirectory() as workdir, step_variant(variant):
        first = sizes.warmup_steps // 2 + 1
        cli = ucr_cli(
            "tempcnn", sizes.batches[0], args, Path(workdir), device, f"--trainer.max_steps={first + steps + 1}",
            "--trainer.max_epochs=100000", "--trainer.limit_val_batches=0", "--trainer.enable_checkpointing=false",
        )  # fmt: skip
        profiler = ProfileSteps(first, steps, device)
        cli.trainer.callbacks.append(profiler)
        with contextlib.redirect_stdout(sys.stderr):
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    events = profiler.profiler.key_averages()
    counts = {event.key: event.count for event in events}
    cpu_s = sum(event.self_cpu_time_total for event in events) / 1e6
    device_s = sum(getattr(event, "self_device_time_total", 0) for event in events) / 1e6
    summary = {
        "step_ms": 1000 * profiler.wall_s / steps,
        "aten_ops_per_step": sum(c for k, c in counts.items() if k.startswith("aten::")) / steps,
        "launches_per_step": sum(c for k, c in counts.items() if k.startswith(LAUNCH_EVENTS)) / steps,
        "device_waits_per_step": sum(c for k, c in counts.items() if k.startswith(WAIT_EVENTS)) / steps,
        "copies_per_step": sum(c for k, c in counts.items() if k.startswith("cudaMemcpy")) / steps,
        **{f"{op.removeprefix('aten::').strip('_')} per step": counts.get(op, 0) / steps for op in HOST_READ_OPS},
        "host_ms_per_step": 1000 * cpu_s / steps,
        "device_busy_ms_per_step": 1000 * device_s / steps,
    }
    if out is not None:
        sort = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
        tables = [events.table(sort_by="self_cpu_time_total", row_limit=40)]
        if device.type == "cuda":
            tables.append(events.table(sort_by=sort, row_limit=40))
        (out / f"profile_{variant}.txt").write_text(
            f"TempCNN on UCR Crop, batch {sizes.batches[0]}, {steps} Lightning steps from step {first}; {summary}\n\n"
            + "\n\n".join(tables)
        )
    return summary


def profiling(sizes: Sizes, args: argparse.Namespace, device: torch.device, out: Path | None):
    figures = {variant: profile_arm(variant, sizes, args, device, out) for variant in ("today", "sync-free")}
    keys = list(next(iter(figures.values())))
    rows = [[key.replace("_", " ")] + [f"{figures[v][key]:.1f}" for v in figures] for key in keys]
    text = (
        f"## Profile: TempCNN training steps (batch {sizes.batches[0]}, {sizes.profile_steps} steps)\n\n"
        "Host reads: ops whose result the host reads back (`local_scalar_dense`: `.item()`; `nonzero`: boolean "
        "selections; `bincount`: torchmetrics' counts); on the CPU (smoke) `.item()` also counts AdamW's step "
        "counters and the date check, which stay on the host on a GPU. Launches: kernels and CUDA graphs; device "
        "waits: CUDA synchronisations; copies: cudaMemcpy calls (batches in, values out); host time: the "
        "profiler's self CPU time of every op (including the waits). Tables: `profile_today.txt`, "
        "`profile_sync-free.txt`.\n\n"
    )
    return text + table(["per step", *figures], rows), figures


# --------------------------------------------------------------------------------------------------
# cmap map end to end
# --------------------------------------------------------------------------------------------------

MAP_PATTERN = r"_(?P<band>b\d)_(?P<date>\d{4}-\d{2}-\d{2})"


def write_band(path: Path, size: int, seed: int) -> None:
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    data = rng.integers(0, 10000, (1, size, size), dtype=np.int16)
    profile_ = {"driver": "GTiff", "width": size, "height": size, "count": 1, "dtype": "int16",
                "crs": "EPSG:32631", "tiled": True, "blockxsize": 256, "blockysize": 256}  # fmt: skip
    with rasterio.open(path, "w", transform=from_origin(500_000, 4_800_000, 10, 10), **profile_) as dataset:
        dataset.write(data)


def write_mosaic(folder: Path, size: int, dates: int, workers: int) -> int:
    """One int16 GeoTIFF per band and date (``MOSAIC_b<k>_<date>.tif``), every 8 days; their bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    days = np.datetime64("2021-01-01") + 8 * np.arange(dates)
    jobs = [(folder / f"MOSAIC_b{band + 1}_{day}.tif", size, 1000 * i + band) for i, day in enumerate(days)
            for band in range(SEED_BANDS)]  # fmt: skip
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(write_band, *zip(*jobs, strict=True)))
    else:
        for job in jobs:
            write_band(*job)
    return len(jobs) * size * size * 2


def seed_checkpoint(folder: Path, sizes: Sizes, device: torch.device) -> Path:
    """A ``cmap fit`` checkpoint of the seed model (its input contract: 9 bands, 7 classes), one step trained."""
    import yaml

    from cmap.cli import main as cmap_main

    width = sizes.seed_width
    position = {"class_path": "cmap.ml.embeddings.position.PositionalEncoding",
                "init_args": {"d_model": width, "tau": 10000, "max_len": 10000}}  # fmt: skip
    band_sizes = [SEED_BANDS, 32, 64, 128, width] if width == 256 else [SEED_BANDS, width]
    bands = {"class_path": "cmap.ml.embeddings.bands.PixelEncoding", "init_args": {"sizes": band_sizes}}
    heads, layers = (8, 4) if width == 256 else (2, 1)
    config = {
        "seed_everything": 0,
        "trainer": {
            "max_steps": 1,
            "default_root_dir": str(folder),
            "enable_progress_bar": False,
            "limit_val_batches": 0,
            "accelerator": "gpu" if device.type == "cuda" else "cpu",
            "devices": 1,
            "callbacks": [
                {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"save_last": True}}
            ],
        },  # fmt: skip
        "model": {
            "class_path": "cmap.ml.classifiers.Classifier",
            "init_args": {
                "encoder": {
                    "class_path": "cmap.ml.encoders.TransformerEncoder",
                    "init_args": {
                        "position_encoder": position,
                        "bands_encoder": bands,
                        "d_model": width,
                        "n_att_head": heads,
                        "n_att_layers": layers,
                    },
                },
                "decoder": {
                    "class_path": "cmap.ml.decoders.MultiClassClassification",
                    "init_args": {"hidden": width, "num_classes": len(SEED_CLASSES)},
                },
            },
        },  # fmt: skip
        "data": {
            "class_path": "cmap.data.SyntheticSITS",
            "init_args": {
                "class_names": SEED_CLASSES,
                "num_bands": SEED_BANDS,
                "num_dates": sizes.dates,
                "num_train": 256,
                "num_test": 16,
                "batch_size": 64,
            },
        },  # fmt: skip
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    with contextlib.redirect_stdout(sys.stderr):
        cmap_main(["fit", "--config", str(folder / "config.yaml")])
    return next(folder.glob("lightning_logs/version_*/checkpoints/last.ckpt"))


def forward_alone(checkpoint: Path, sizes: Sizes, device: torch.device, precision: str) -> float:
    """Pixels/s of the checkpoint's model alone at ``precision`` (bf16-true: cast to bf16) on device-resident
    batches of the map's size."""
    from cmap.predictions import load_classifier

    dtype = torch.bfloat16 if precision == "bf16-true" else torch.float32
    model = load_classifier(str(checkpoint)).to(device).to(dtype)
    batch = {key: value.to(device) for key, value in synthetic_batch(sizes.map_batch, sizes.dates, seed=2).items()}

    def forward() -> None:
        with torch.inference_mode():
            model(batch["values"].to(dtype), batch["days"], batch["mask"]).float().softmax(-1)

    return median_rate(forward, sizes.map_batch, sizes, device)


def map_end_to_end(sizes: Sizes, args: argparse.Namespace, device: torch.device) -> tuple[str, dict[str, Any]]:
    from cmap.mapping import map_rasters

    figures: dict[str, Any] = {"size": sizes.map_size, "dates": sizes.dates, "batch_size": sizes.map_batch}
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        workdir = Path(workdir)
        start = time.perf_counter()
        raster_bytes = write_mosaic(workdir / "mosaic", sizes.map_size, sizes.dates, 1 if sizes.smoke else 16)
        figures["mosaic_write_s"], figures["mosaic_gb"] = time.perf_counter() - start, raster_bytes / 1e9
        checkpoint = seed_checkpoint(workdir / "fit", sizes, device)
        figures["forward_pixels_per_s"] = forward_alone(checkpoint, sizes, device, args.map_precision)
        pixels = sizes.map_size**2
        rows = [["forward pass alone", f"{figures['forward_pixels_per_s']:,.0f}", "1.00", ""]]
        for workers in sorted({0, sizes.map_workers}):
            output = workdir / f"map_w{workers}.tif"
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                map_rasters(str(checkpoint), str(workdir / "mosaic"), str(output), pattern=MAP_PATTERN, scale=1e-4,
                            valid_range=(0, 10000), window_size=256, batch_size=sizes.map_batch, num_workers=workers,
                            accelerator="gpu" if device.type == "cuda" else "cpu", precision=args.map_precision,
                            progress=False)  # fmt: skip
            seconds = time.perf_counter() - start
            pixels_per_s = pixels / seconds
            ratio = pixels_per_s / figures["forward_pixels_per_s"]
            figures[f"map_workers_{workers}"] = {"seconds": seconds, "pixels_per_s": pixels_per_s, "of_forward": ratio}
            rows.append([f"`cmap map`, {workers} reading workers", f"{pixels_per_s:,.0f}", f"{ratio:.2f}",
                         f"{seconds:.1f} s"])  # fmt: skip
    text = (
        f"## `cmap map` end to end\n\nA {sizes.map_size} x {sizes.map_size} mosaic, {sizes.dates} dates x "
        f"{SEED_BANDS} bands, one int16 GeoTIFF per band and date ({figures['mosaic_gb']:.2f} GB, written in "
        f"{figures['mosaic_write_s']:.0f} s); the seed model (d_model {sizes.seed_width}) one step trained, "
        f"{args.map_precision}, {sizes.map_batch} pixels per forward pass, windows of 256 x 256, class map and "
        "probabilities written as COGs. Forward pass alone: the same model and batch on device-resident data "
        "(softmax included).\n\n"
    )
    return text + table(["run", "pixels/s", "of the forward pass", "time"], rows), figures


# --------------------------------------------------------------------------------------------------
# Accuracy at a larger batch
# --------------------------------------------------------------------------------------------------


def accuracy_arm(seed: int, batch_size: int, sizes: Sizes, args: argparse.Namespace, device: torch.device):
    from cmap.ml.budget import ScaleBatch

    with tempfile.TemporaryDirectory() as workdir:
        extra = [f"--seed_everything={seed}", "--trainer.enable_checkpointing=false"]
        if sizes.smoke:
            extra += ["--trainer.max_epochs=1", "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=1",
                      "--trainer.limit_test_batches=2"]  # fmt: skip
        cli = ucr_cli("tempcnn", 32 if sizes.smoke else 128, args, Path(workdir), device, *extra)
        base = cli.datamodule.batch_size
        if batch_size != base:
            cli.trainer.callbacks.append(ScaleBatch(batch_size // base, "sqrt", gpu_only=False))
        timer = StepTimer(0, device)
        cli.trainer.callbacks.append(timer)
        with contextlib.redirect_stdout(sys.stderr):
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
            results = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)[0]
        epochs = cli.trainer.current_epoch
    return {
        "test_oa": results["test/overall_accuracy"],
        "epoch_s": timer.seconds / max(epochs, 1),
        "max_lr": cli.model.hparams.max_lr,
        "epochs": epochs,
    }


def accuracy(sizes: Sizes, args: argparse.Namespace, device: torch.device, report: Report):
    base = 32 if sizes.smoke else 128
    text = (
        f"## Accuracy at a larger batch: TempCNN on UCR Crop\n\n`configs/ucr_crop_tempcnn.yaml` (its 20 epochs, "
        f"validation each epoch; sync-free step, no compilation), seeds {sizes.seeds}; the larger batch with max_lr "
        "and min_lr x sqrt(batch ratio) (`ScaleBatch`); test OA of the final weights on the 16,800 test series; "
        "seconds per epoch include validation.\n\n"
    )
    header = ["batch", "max_lr", "test OA (mean ± std)", "per seed", "s per epoch"]
    runs: dict[int, list[dict[str, Any]]] = {base: [], sizes.large_batch: []}
    figures: dict[str, Any] = {}
    for seed in sizes.seeds:  # seed by seed, both batches: a run stopped early still has pairs
        for batch_size in runs:
            runs[batch_size].append(accuracy_arm(seed, batch_size, sizes, args, device))
            rows = []
            for size, done in runs.items():
                if not done:
                    continue
                oa = [run["test_oa"] for run in done]
                std = statistics.stdev(oa) if len(oa) > 1 else 0.0
                figures[str(size)] = {"runs": done, "mean_oa": statistics.mean(oa), "std_oa": std}
                rows.append([
                    size, f"{done[0]['max_lr']:.4g}", f"{statistics.mean(oa):.4f} ± {std:.4f}",
                    ", ".join(f"{value:.4f}" for value in oa), f"{statistics.mean(r['epoch_s'] for r in done):.2f}",
                ])  # fmt: skip
            report.add("accuracy", text + table(header, rows), figures, final=False)
    if all(len(done) > 1 for done in runs.values()):
        (small, large) = (figures[str(size)] for size in runs)
        figures["difference"] = large["mean_oa"] - small["mean_oa"]
        # The standard error of a difference of two means of n seeds each.
        figures["difference_se"] = math.sqrt((small["std_oa"] ** 2 + large["std_oa"] ** 2) / len(sizes.seeds))
        text += (
            f"Larger batch - base batch: {figures['difference']:+.4f} test OA (standard error of the difference "
            f"{figures['difference_se']:.4f}).\n\n"
        )
    return text + table(header, rows), figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="every section on the CPU at toy sizes")
    parser.add_argument("--device", default=None, help="default: cuda when available (cpu with --smoke)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--output_dir", type=Path, help="where gpu_check.md, gpu_check.json and profiles go")
    parser.add_argument("--ucr_root", type=Path, help="folder of Crop_TRAIN.tsv and Crop_TEST.tsv")
    parser.add_argument("--workdir", type=Path, default=None, help="where the map's mosaic is written (temporary)")
    parser.add_argument("--pixels", type=int, default=32768, help="pixels per inference forward pass (GPU)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train_steps", type=int, default=150, help="timed training steps per arm (GPU)")
    parser.add_argument("--large_batches", type=int, nargs="*", default=[512, 1024], help="training speed arms")
    parser.add_argument("--large_batch", type=int, default=512, help="the accuracy section's larger batch")
    parser.add_argument("--autotune", action="store_true", help="also a max-autotune inference arm (minutes)")
    parser.add_argument("--default_compile", action="store_true", help="also the CompileModel default-mode arms")
    parser.add_argument("--training_models", nargs="+", choices=list(UCR_CONFIGS), default=list(UCR_CONFIGS))
    parser.add_argument("--map_size", type=int, default=2048, help="side of the map's mosaic in pixels (GPU)")
    parser.add_argument("--map_workers", type=int, default=8, help="reading workers of the second map run")
    parser.add_argument("--map_precision", default="bf16-true", choices=["bf16-true", "32-true"])
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.smoke else "cpu"))
    sizes = Sizes(args.smoke, args)
    report = Report(args.output_dir)
    started = time.perf_counter()
    title = "GPU check" + (" (smoke: toy sizes, not a measurement)" if args.smoke else "")
    report.add("machine", f"# {title}\n\nMachine: {machine()}.\nDevice measured: **{device}**. At start: "
               f"{load_average()}.\n", {"machine": machine(), "device": str(device)})  # fmt: skip
    roof: dict[str, float] | None = None
    for section in args.sections:
        section_start = time.perf_counter()
        try:
            if roof is None and section in ("roofline", "inference"):
                text, roof = roofline(sizes, device)
                report.add("roofline", text, roof)
            if section == "inference":
                text, figures = inference(sizes, device, roof, args.autotune)
            elif section == "training":
                text, figures = training(sizes, args, device, report)
            elif section == "profile":
                text, figures = profiling(sizes, args, device, args.output_dir)
            elif section == "map":
                text, figures = map_end_to_end(sizes, args, device)
            elif section == "accuracy":
                text, figures = accuracy(sizes, args, device, report)
            else:
                continue  # the roofline, reported above
        except Exception as error:  # the one device run goes on to the next section
            traceback.print_exc()
            text, figures = f"## {section}\n\nFailed: `{error!r}`\n", {"error": repr(error)}
        report.add(section, text + f"\n({time.perf_counter() - section_start:.0f} s)\n", figures)
    if device.type == "cuda":
        report.add("memory", f"Peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB.\n", {})
    report.add("end", footer(started), {"total_s": time.perf_counter() - started})


if __name__ == "__main__":
    main()
