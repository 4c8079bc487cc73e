"""Inference speed of the seed model against the machine's matmul roofline, and faster variants.

    python benchmarks/inference.py                      # seed model + UCR Crop accuracy of each variant
    python benchmarks/inference.py --no_compile         # without the torch.compile arms (~1 min less)
    python benchmarks/inference.py --checkpoint runs/ucr_crop_transformer/lightning_logs/version_0/checkpoints/last.ckpt

1. FLOPs per pixel of the seed model's forward pass, counted by ``torch.utils.flop_counter``.
2. Pixels/s of the seed model (``--pixels`` series of ``--dates`` dates, 20 % clouded) in fp32 and in
   the faster variants, with the machine's fp32 and bf16 matmul GFLOP/s, all measured in rounds that
   interleave every arm; efficiency = pixels/s x FLOPs/pixel / matmul FLOP/s of the same round.
3. Where the fp32 time goes: one profiled forward pass, matrix products vs everything else.
4. Accuracy of every variant on the UCR Crop test set (16,800 series) with a trained checkpoint,
   and its pixels/s on those series.

Variants (each the way Lightning or cmap runs it):
- ``fp32``: eval mode under ``torch.inference_mode`` (PyTorch's fused transformer fast path);
- ``bf16-mixed``: ``torch.autocast`` (Lightning's ``precision="bf16-mixed"``);
- ``bf16-true``: the model cast to bf16 (Lightning's ``precision="bf16-true"``);
- ``int8-dynamic``: ``torch.ao.quantization.quantize_dynamic`` of every ``nn.Linear`` (int8
  weights, activations quantised per batch);
- ``... compiled``: ``torch.compile`` with Inductor's ``freezing`` (weights folded as constants,
  prepacked for oneDNN), as ``cmap map --compile`` runs it; compilation time printed.
"""

import argparse
import copy
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch._inductor.config
from common import (
    footer,
    header,
    interleaved,
    median_ratio,
    mha_fast_path,
    rate,
    seed_model,
    synthetic_batch,
)
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

UCR_CHECKPOINT = "runs/ucr_crop_transformer/lightning_logs/version_0/checkpoints/last.ckpt"
# aten ops that are matrix products (oneDNN / BLAS GEMMs); everything else is "other".
FFN_MATMUL = "matmul fp32, FFN shape"
GEMM_OPS = ("aten::addmm", "aten::mm", "aten::bmm", "aten::_addmm_activation", "aten::baddbmm", "aten::matmul")


class Variant:
    """A way of running a trained model: ``prepare`` makes the model to call, ``inputs`` adapts a batch."""

    def __init__(self, name: str, dtype: torch.dtype = torch.float32, autocast: bool = False) -> None:
        self.name, self.dtype, self.autocast = name, dtype, autocast
        self.compile_s: float | None = None

    def prepare(self, model: nn.Module) -> nn.Module:
        return model if self.dtype == torch.float32 else copy.deepcopy(model).to(self.dtype)

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        values = batch["values"].to(self.dtype)
        with torch.autocast("cpu", torch.bfloat16, enabled=self.autocast):
            return model(values, batch["days"], batch["mask"]).float()


class Int8Dynamic(Variant):
    def prepare(self, model: nn.Module) -> nn.Module:
        with warnings.catch_warnings():  # deprecated in favour of torchao, still the CPU path in torch 2.13
            warnings.simplefilter("ignore")
            return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        # Quantised linears do not fit the fused transformer kernel: take the unfused path.
        with mha_fast_path(False):
            return super().forward(model, batch)


class Compiled(Variant):
    """Another variant compiled as ``cmap map --compile`` / :class:`cmap.ml.compile.CompileModel` do
    when predicting (Inductor, ``freezing``); compiled on the first batch, whose time is recorded."""

    def __init__(self, base: Variant) -> None:
        super().__init__(f"{base.name} compiled", base.dtype, base.autocast)
        self.base = base

    def prepare(self, model: nn.Module) -> nn.Module:
        model = copy.deepcopy(self.base.prepare(model))
        model.compile(options={"freezing": True})
        return model

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with mha_fast_path(False):  # as CompileModel: Inductor fuses the transformer's ops itself
            if self.compile_s is None:
                start = time.perf_counter()
                self.base.forward(model, batch)
                self.compile_s = time.perf_counter() - start
            return self.base.forward(model, batch)


def variants(compile_arms: bool) -> list[Variant]:
    fp32, bf16_true = Variant("fp32"), Variant("bf16-true", torch.bfloat16)
    arms = [fp32, Variant("bf16-mixed", autocast=True), bf16_true, Int8Dynamic("int8-dynamic")]
    return arms + ([Compiled(fp32), Compiled(bf16_true)] if compile_arms else [])


def flops_per_pixel(model: nn.Module, batch: dict[str, torch.Tensor]) -> float:
    """FLOPs of one forward pass per series. The fused fast-path kernel is opaque to the counter, so
    the count runs the unfused path (the same matrix products)."""
    # Grad mode on: the counter's module tracker hooks autograd (it fails on some modules without it).
    with mha_fast_path(False), FlopCounterMode(display=False) as counter:
        model(batch["values"], batch["days"], batch["mask"])
    return counter.get_total_flops() / len(batch["values"])


def matmul_arm(size: tuple[int, int, int], dtype: torch.dtype) -> Callable[[], float]:
    """GFLOP/s of one (m x k) @ (k x n) product."""
    m, k, n = size
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    a @ b
    return rate(lambda: a @ b, 2 * m * k * n / 1e9)


def profile_forward(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[float, float, list[tuple[str, float]]]:
    """One fp32 forward pass under torch.profiler: seconds in matrix products, seconds in total (self
    CPU time), and the top ops with their share."""
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as profiler:
        model(batch["values"], batch["days"], batch["mask"])
    events = profiler.key_averages()
    total = sum(event.self_cpu_time_total for event in events)
    gemm = sum(event.self_cpu_time_total for event in events if event.key in GEMM_OPS)
    top = sorted(((event.key, event.self_cpu_time_total / total) for event in events), key=lambda kv: -kv[1])
    return gemm / 1e6, total / 1e6, top[:8]


def ucr_crop(checkpoint: str, batch_size: int):
    """The trained model and the UCR Crop test set as in-memory batches (normalised with the checkpoint's
    statistics), so that data loading is not timed."""
    from cmap.data import UCRCrop
    from cmap.predictions import load_classifier

    model = load_classifier(checkpoint)
    data = UCRCrop(batch_size=batch_size)
    data.setup("test")
    data.adopt(model.input_contract, checkpoint)  # normalised as in training: data -> checkpoint -> here
    return model, list(data.test_dataloader())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pixels", type=int, default=256, help="series per forward pass (seed model)")
    parser.add_argument("--dates", type=int, default=50, help="dates per series (seed model)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds (medians are reported)")
    parser.add_argument("--matmul_size", type=int, default=2048, help="side of the square roofline matmul")
    parser.add_argument("--no_compile", action="store_true", help="skip the torch.compile arms")
    parser.add_argument("--checkpoint", default=UCR_CHECKPOINT, help="a UCR Crop Classifier checkpoint ('' to skip)")
    parser.add_argument("--ucr_batch", type=int, default=1200, help="series per batch on UCR Crop (16,800 = 14 x 1200)")
    args = parser.parse_args()
    torch.manual_seed(0)
    # Compilation times as a first run sees them: no kernels from Inductor's on-disk cache.
    torch._inductor.config.force_disable_caches = True
    started = time.perf_counter()
    print(header("Inference benchmark"))

    # 1. FLOPs per pixel.
    model = seed_model().eval()
    batch = synthetic_batch(args.pixels, args.dates)
    flops = flops_per_pixel(model, batch)
    print(
        f"Seed model (d_model 256, 8 heads, 4 layers, 9 bands), {args.dates} dates (20 % clouded), "
        f"{args.pixels} pixels per forward pass: **{flops / 1e9:.3f} GFLOP per pixel** "
        "(counted by torch.utils.flop_counter).\n"
    )

    # 2. Pixels/s of every variant and the matmul roofline, interleaved.
    arms_list = variants(not args.no_compile)
    prepared = {arm.name: arm.prepare(model) for arm in arms_list}
    with torch.inference_mode():
        reference = arms_list[0].forward(model, batch)
        worst_error = {}
        for arm in arms_list:
            worst_error[arm.name] = (arm.forward(prepared[arm.name], batch) - reference).abs().max().item()
        s = args.matmul_size
        arms = {
            "matmul fp32": matmul_arm((s, s, s), torch.float32),
            "matmul bf16": matmul_arm((s, s, s), torch.bfloat16),
            # The model's largest product: every date of every pixel through the 256 -> 1024 feed-forward.
            FFN_MATMUL: matmul_arm((args.pixels * args.dates, 256, 1024), torch.float32),
        }
        for arm in arms_list:
            arms[arm.name] = rate(lambda arm=arm: arm.forward(prepared[arm.name], batch), args.pixels)
        rates = interleaved(arms, args.repeats)
    gflops = {name: [r * flops / 1e9 for r in rates[name]] for name in rates if not name.startswith("matmul")}
    print(
        f"Matmul roofline ({s} x {s} x {s}): fp32 {statistics.median(rates['matmul fp32']):.1f} GFLOP/s, "
        f"bf16 {statistics.median(rates['matmul bf16']):.1f} GFLOP/s; the model's FFN product "
        f"({args.pixels * args.dates} x 256 x 1024, fp32): "
        f"{statistics.median(rates[FFN_MATMUL]):.1f} GFLOP/s. "
        f"Medians of {args.repeats} interleaved rounds.\n"
    )
    print(
        "| variant | pixels/s | speed-up vs fp32 | model GFLOP/s | efficiency vs matmul roofline "
        "| max abs logit change | compile time |"
    )
    print("|---|---|---|---|---|---|---|")
    for arm in arms_list:
        if isinstance(arm, Int8Dynamic):
            efficiency = "-"  # no int8 roofline measured
        else:
            roofline = "matmul bf16" if arm.dtype == torch.bfloat16 or arm.autocast else "matmul fp32"
            efficiency = f"{median_ratio(gflops[arm.name], rates[roofline]):.2f} of {roofline}"
        compile_s = "-" if arm.compile_s is None else f"{arm.compile_s:.0f} s"
        print(
            f"| {arm.name} | {statistics.median(rates[arm.name]):.0f} | "
            f"{median_ratio(rates[arm.name], rates['fp32']):.2f}x | {statistics.median(gflops[arm.name]):.1f} | "
            f"{efficiency} | {worst_error[arm.name]:.4f} | {compile_s} |"
        )
    print(
        "\nSpeed-ups and efficiencies are medians of per-round ratios. Efficiency of the fp32 arm against "
        f"the model-shaped matmul instead of the square one: "
        f"{median_ratio(gflops['fp32'], rates[FFN_MATMUL]):.2f}.\n"
    )

    # 3. Where the fp32 time goes.
    gemm_s, total_s, top = profile_forward(model, batch)
    print(
        f"Profile of one fp32 forward pass (torch.profiler, self CPU time): matrix products "
        f"{100 * gemm_s / total_s:.0f} % of the time, at {flops * args.pixels / gemm_s / 1e9:.1f} GFLOP/s "
        f"(the counted FLOPs are all in them); other ops {100 * (1 - gemm_s / total_s):.0f} %. Top ops: "
        + ", ".join(f"{name} {100 * part:.0f} %" for name, part in top)
        + ".\n"
    )

    # 4. UCR Crop: accuracy of each variant, and pixels/s on those series.
    if args.checkpoint and Path(args.checkpoint).is_file():
        ucr_model, batches = ucr_crop(args.checkpoint, args.ucr_batch)
        labels = torch.cat([b["label"] for b in batches])
        arms_list = variants(not args.no_compile)
        prepared = {arm.name: arm.prepare(ucr_model) for arm in arms_list}
        accuracy, timing = {}, {}
        with torch.inference_mode():
            for arm in arms_list:
                predictions = torch.cat([arm.forward(prepared[arm.name], b).argmax(-1) for b in batches])
                accuracy[arm.name] = (predictions == labels).double().mean().item()
                timing[arm.name] = rate(lambda arm=arm: arm.forward(prepared[arm.name], batches[0]), args.ucr_batch)
            ucr_rates = interleaved(timing, 3)
        print(
            f"UCR Crop test set ({len(labels):,} series, 46 dates, 1 band), checkpoint `{args.checkpoint}`; "
            f"pixels/s over {args.ucr_batch:,} series, medians of 3 interleaved rounds:\n"
        )
        print("| variant | test accuracy | change (points) | pixels/s | speed-up vs fp32 |")
        print("|---|---|---|---|---|")
        for arm in arms_list:
            change = 100 * (accuracy[arm.name] - accuracy["fp32"])
            speed_up = median_ratio(ucr_rates[arm.name], ucr_rates["fp32"])
            print(
                f"| {arm.name} | {accuracy[arm.name]:.4f} | {change:+.2f} | "
                f"{statistics.median(ucr_rates[arm.name]):.0f} | {speed_up:.2f}x |"
            )
        print()
    else:
        print(f"(No UCR Crop checkpoint at `{args.checkpoint}`: accuracy not measured.)\n")
    print(footer(started))


if __name__ == "__main__":
    main()
