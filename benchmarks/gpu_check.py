"""GPU readiness: training samples/s and inference pixels/s of the seed model on the best device here.

    python benchmarks/gpu_check.py                 # CUDA when available, else CPU (small sizes)
    python benchmarks/gpu_check.py --compile       # also the torch.compile variants (minutes of compilation)

Seed model (d_model 256, 8 heads, 4 layers, 9 bands, 7 classes) on synthetic batches of ``--dates``
dates already on the device (data loading is not measured). Training: forward, focal loss, backward,
AdamW step. Inference: forward in eval mode under ``torch.inference_mode``. Precisions:

- ``fp32``: full float32 matmuls (``torch.set_float32_matmul_precision("highest")``);
- ``tf32`` (CUDA only): float32 with TensorFloat-32 matmuls ("high"), what Lightning suggests on GPUs;
- ``bf16-mixed``: ``torch.autocast(bfloat16)``, as ``--trainer.precision bf16-mixed``;
- ``bf16-true`` (inference): the model cast to bfloat16, as ``--trainer.precision bf16-true``.

Every arm is measured ``--repeats`` times, arms interleaved; medians are printed with the device.
"""

import argparse
import contextlib
import copy
import statistics
import time

import torch
from common import (
    footer,
    interleaved,
    load_average,
    machine,
    mha_fast_path,
    rate,
    seed_model,
    synchronize,
    synthetic_batch,
    training_arm,
)


def precision_context(precision: str, device: torch.device):
    torch.set_float32_matmul_precision("high" if precision == "tf32" else "highest")
    if precision == "bf16-mixed":
        return torch.autocast(device.type, torch.bfloat16)
    return contextlib.nullcontext()


def seed_training_arm(precision: str, compiled: bool, batch, device: torch.device, steps: int):
    """The seed model's training arm at ``precision`` and the seconds of its first step (warm-up, compilation)."""
    model = seed_model().to(device).train()
    forward = torch.compile(model) if compiled else model
    start = time.perf_counter()
    arm = training_arm(
        model, batch, steps, forward=forward, precision=lambda: precision_context(precision, device), device=device
    )
    return arm, time.perf_counter() - start


def seed_inference_arm(precision: str, compiled: bool, batch, device: torch.device, steps: int):
    """The seed model's inference arm at ``precision`` and the seconds of its first call (warm-up, compilation)."""
    model = seed_model().to(device).eval()
    dtype = torch.bfloat16 if precision == "bf16-true" else torch.float32
    model = copy.deepcopy(model).to(dtype) if dtype != torch.float32 else model
    forward = torch.compile(model) if compiled else model
    values = batch["values"].to(dtype)

    def step() -> None:
        # Compiled as CompileModel does: without the fused transformer kernel, opaque to Inductor.
        with torch.inference_mode(), precision_context(precision, device), mha_fast_path(not compiled):
            forward(values, batch["days"], batch["mask"])

    start = time.perf_counter()
    step()
    synchronize(device)
    return rate(step, len(values), steps, device), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dates", type=int, default=50)
    parser.add_argument("--batch_size", type=int, help="training series per step (default: 512 on GPU, 32 on CPU)")
    parser.add_argument("--pixels", type=int, help="series per inference pass (default: 8192 on GPU, 128 on CPU)")
    parser.add_argument("--steps", type=int, help="steps per measurement (default: 20 on GPU, 2 on CPU)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile variants")
    args = parser.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    batch_size = args.batch_size or (512 if gpu else 32)
    pixels = args.pixels or (8192 if gpu else 128)
    steps = args.steps or (20 if gpu else 2)
    started = time.perf_counter()
    print(f"# GPU check\n\nMachine: {machine()}.\nDevice measured: **{device}**. At start: {load_average()}.\n")

    precisions = ["fp32", "tf32", "bf16-mixed"] if gpu else ["fp32", "bf16-mixed"]
    compiled_options = [False, True] if args.compile else [False]

    def on_device(batch):
        return {key: value.to(device) for key, value in batch.items()}

    train_batch = on_device(synthetic_batch(batch_size, args.dates))
    infer_batch = on_device(synthetic_batch(pixels, args.dates, seed=1))
    arms, warmup_s = {}, {}
    for compiled in compiled_options:
        for precision in precisions:
            key = ("training", precision, compiled)
            arms[key], warmup_s[key] = seed_training_arm(precision, compiled, train_batch, device, steps)
        for precision in [*precisions, "bf16-true"]:
            key = ("inference", precision, compiled)
            arms[key], warmup_s[key] = seed_inference_arm(precision, compiled, infer_batch, device, steps)
    rates = interleaved(arms, args.repeats)
    torch.set_float32_matmul_precision("highest")

    print(
        f"Seed model, {args.dates} dates; training batch {batch_size}, inference {pixels} pixels per pass; "
        f"{steps} steps per measurement, medians of {args.repeats} interleaved rounds.\n"
    )
    print("| mode | precision | compiled | samples or pixels/s | vs fp32 | first call (warm-up, compilation) |")
    print("|---|---|---|---|---|---|")
    for (mode, precision, compiled), values in rates.items():
        reference = statistics.median(rates[(mode, "fp32", False)])
        print(
            f"| {mode} | {precision} | {'yes' if compiled else 'no'} | {statistics.median(values):,.0f} | "
            f"{statistics.median(values) / reference:.2f}x | {warmup_s[(mode, precision, compiled)]:.1f} s |"
        )
    if gpu:
        print(f"\nPeak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB.")
    print("\n" + footer(started))


if __name__ == "__main__":
    main()
