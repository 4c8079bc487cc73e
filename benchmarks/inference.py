"""Inference speed of the seed model against the machine's matmul roofline, and faster variants.

    python benchmarks/inference.py                      # seed model + UCR Crop accuracy of each variant
    python benchmarks/inference.py --no_compile         # without the torch.compile arms (~1 min less)
    python benchmarks/inference.py --checkpoint runs/ucr_crop_transformer/lightning_logs/version_0/checkpoints/last.ckpt
    python benchmarks/inference.py --model default --checkpoint UCR_DEFAULT.ckpt   # the default recipe's TempCNN

``--model default`` (one thread): the default recipe's TempCNN on a Sentinel-2-like map batch (8,192
pixels, 30 dates, 10 bands), reference path against each step of its inference form
(:mod:`cmap.ml.inference`), fp32 and bf16, against the fp32 matmul roofline of the same rounds (best of
the interleaved rounds, and the median per-round ratio); a profile of each; with ``--checkpoint`` (a
default-recipe model trained on UCR Crop) the accuracy of each path on the UCR Crop test set.

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
import torch.nn.functional as F
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

from cmap.data.contract import DateGrid
from cmap.ml.classifiers import Classifier
from cmap.ml.decoders import DateGridClassification
from cmap.ml.embeddings import PixelEncoding
from cmap.ml.encoders import TempCNNEncoder
from cmap.ml.inference import FoldedConv, FoldedTempCNN, inference_form

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


# ---------------------------------------------------------------------------------------------
# --model default: the default recipe's TempCNN and its inference form (cmap.ml.inference)
# ---------------------------------------------------------------------------------------------

S2_BANDS, S2_DATES, S2_STEP, S2_CLASSES = 10, 30, 5, 10


def default_model(seed: int = 0) -> Classifier:
    """The default recipe's model (configs/default.yaml: TempCNN, 64 filters, kernel 5, 3 layers;
    DateGridClassification, hidden 256) for a Sentinel-2-like season (30 dates every 5 days, 10 bands),
    its batch norms holding the statistics of a training-mode batch (fresh ones would be identities)."""
    torch.manual_seed(seed)
    encoder = TempCNNEncoder(d_model=64, bands_encoder=PixelEncoding([S2_BANDS, 64]))
    decoder = DateGridClassification(S2_CLASSES, date_grid=DateGrid(S2_STEP, S2_DATES), in_features=64)
    model = Classifier(encoder, decoder, class_names=[f"class{i}" for i in range(S2_CLASSES)])
    for module in model.modules():
        if isinstance(module, nn.BatchNorm1d):
            module.momentum = None  # one batch sets the running statistics
    with torch.no_grad():
        model.train()(*s2_batch(4096, seed=seed + 1))
    return model.eval()


def s2_batch(pixels: int, cloud_fraction: float = 0.2, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Values, days and mask of a map's batch: every pixel on the same 30 dates, ``cloud_fraction`` of
    them clouded (masked) at random."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.rand(pixels, S2_DATES, generator=generator) >= cloud_fraction
    values = torch.randn(pixels, S2_DATES, S2_BANDS, generator=generator) * mask.unsqueeze(-1)
    days = (torch.arange(S2_DATES) * S2_STEP).expand(pixels, -1).contiguous()
    return values, days, mask


class Conv1dLayout(nn.Module):
    """A :class:`~cmap.ml.inference.FoldedConv` run as ``nn.Conv1d`` runs: on (B, D, T), transposed there and back."""

    def __init__(self, folded: FoldedConv) -> None:
        super().__init__()
        self.weight, self.bias, self.padding = folded.weight.squeeze(2).contiguous(), folded.bias, folded.padding[1]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.conv1d(features.transpose(1, 2), self.weight, self.bias, padding=self.padding).transpose(1, 2)


def inference_steps(model: Classifier) -> dict[str, nn.Module]:
    """The inference form built up one step at a time (each entry adds one step to the one before)."""
    folded = FoldedTempCNN(model)
    folded.chunk_size = 1 << 30  # the whole batch at once
    conv1d = copy.deepcopy(folded)
    conv1d.convs = nn.ModuleList(Conv1dLayout(conv) for conv in folded.convs)
    binning = copy.deepcopy(conv1d)
    binning.date_of_step = lambda days: None  # the head's own binning (scatter, gather)
    channels_last = copy.deepcopy(folded)
    channels_last.date_of_step = lambda days: None
    chunked = FoldedTempCNN(model)
    return {
        "+ batch norms folded (conv1d layout, head by binning)": binning,
        "+ dense-grid head (two row selections)": conv1d,
        "+ channels-last convolutions": folded,
        f"+ chunks of {chunked.chunk_size} pixels (the inference form)": chunked,
        "(channels-last, whole batch, head by binning)": channels_last,
    }


def default_model_benchmark(args: argparse.Namespace) -> None:
    """Section of ``--model default``: pixels/s of the reference path and of every step of the inference
    form, fp32 and bf16, against the matmul roofline of the same rounds; profiles; UCR Crop accuracy."""
    model = default_model()
    values, days, mask = s2_batch(args.pixels)
    with FlopCounterMode(display=False) as counter:
        model(values[:512], days[:512], mask[:512])
    flops = counter.get_total_flops() / 512
    print(
        f"Default recipe's model (TempCNN 3 x 64 filters, kernel 5; DateGridClassification, hidden 256), "
        f"Sentinel-2-like input: {S2_DATES} dates x {S2_BANDS} bands, 20 % clouded, the same days for every "
        f"pixel (a map's batch), {args.pixels:,} pixels per forward pass, one thread: **{flops / 1e6:.2f} MFLOP "
        "per pixel** (torch.utils.flop_counter on the reference model).\n"
    )
    steps = inference_steps(model)
    form = list(steps.values())[3]
    bf16_form = copy.deepcopy(form).to(torch.bfloat16)
    calls: dict[str, Callable[[], torch.Tensor]] = {"reference (Classifier, eval)": lambda: model(values, days, mask)}
    calls.update({name: (lambda step=step: step(values, days, mask)) for name, step in steps.items()})
    calls["inference form, bf16 (cast, as bf16-true)"] = lambda: bf16_form(values.bfloat16(), days, mask)

    def autocast_form() -> torch.Tensor:
        with torch.autocast("cpu", torch.bfloat16):
            return form(values, days, mask)

    calls["inference form, bf16 (autocast, as bf16-mixed)"] = autocast_form
    if not args.no_compile:
        compiled = copy.deepcopy(form)
        compiled.compile(options={"freezing": True})
        start = time.perf_counter()
        with torch.inference_mode():
            compiled(values, days, mask)
        compile_s = time.perf_counter() - start
        calls[f"inference form, torch.compile (freezing; compiled in {compile_s:.0f} s)"] = lambda: compiled(
            values, days, mask
        )
    with torch.inference_mode():
        reference = model(values, days, mask)
        outputs = {name: call().float() for name, call in calls.items()}
        change = {name: (out - reference).abs().max().item() for name, out in outputs.items()}
        agree = {name: (out.argmax(-1) == reference.argmax(-1)).double().mean().item() for name, out in outputs.items()}
        s = args.matmul_size
        conv_shape = (FoldedTempCNN.chunk_size * S2_DATES, 5 * 64, 64)  # a chunk's convolution as one product
        arms = {
            "matmul fp32": matmul_arm((s, s, s), torch.float32),
            "matmul bf16": matmul_arm((s, s, s), torch.bfloat16),
            "matmul fp32, conv shape": matmul_arm(conv_shape, torch.float32),
        }
        arms.update({name: rate(call, args.pixels) for name, call in calls.items()})
        rates = interleaved(arms, args.repeats)
    best = {name: max(values_) for name, values_ in rates.items()}
    print(
        f"Matmul roofline ({s}^3), best of {args.repeats} interleaved rounds: fp32 **{best['matmul fp32']:.1f} "
        f"GFLOP/s**, bf16 {best['matmul bf16']:.1f} GFLOP/s (medians {statistics.median(rates['matmul fp32']):.1f}"
        f", {statistics.median(rates['matmul bf16']):.1f}); a chunk's convolution as one torch.mm ({conv_shape[0]} x "
        f"{conv_shape[1]} x {conv_shape[2]}, fp32): {best['matmul fp32, conv shape']:.1f} GFLOP/s. On a shared "
        "machine, read the per-round median ratios too (each round's arms ran within seconds of each other).\n"
    )
    print(
        "| path | pixels/s (best) | GFLOP/s | of fp32 roofline (best / median per round) | vs reference "
        "| vs fp32 form (best / median per round) | max abs logit change | classes equal |"
    )
    print("|---|---|---|---|---|---|---|---|")
    fp32_form = list(calls)[4]
    for name in calls:
        gflops = [r * flops / 1e9 for r in rates[name]]
        print(
            f"| {name} | {best[name]:,.0f} | {max(gflops):.1f} | {max(gflops) / best['matmul fp32']:.2f} / "
            f"{median_ratio(gflops, rates['matmul fp32']):.2f} | {best[name] / best[list(calls)[0]]:.2f}x | "
            f"{best[name] / best[fp32_form]:.2f}x / {median_ratio(rates[name], rates[fp32_form]):.2f}x | "
            f"{change[name]:.1e} | {100 * agree[name]:.2f} % |"
        )
    print()
    for name, module in (("reference", model), ("inference form", form)):
        gemm_s, total_s, top = profile_forward(module, {"values": values, "days": days, "mask": mask})
        print(
            f"Profile, {name}, one batch (self CPU time): "
            + ", ".join(f"{op} {100 * part:.0f} %" for op, part in top)
            + ".\n"
        )
    if args.checkpoint and Path(args.checkpoint).is_file():
        default_model_on_ucr_crop(args)


def default_model_on_ucr_crop(args: argparse.Namespace) -> None:
    """Accuracy and classes of the reference path, the inference form and its bf16 cast on the UCR Crop
    test set, with a default-recipe checkpoint trained on UCR Crop."""
    ucr_model, batches = ucr_crop(args.checkpoint, args.ucr_batch)
    labels = torch.cat([b["label"] for b in batches])
    form = inference_form(ucr_model)
    if form is None:
        raise SystemExit(f"{args.checkpoint}: not a TempCNN classifier of the default recipe (no inference form)")
    paths = {"reference": lambda b: ucr_model(b["values"], b["days"], b["mask"]),
             "inference form fp32": lambda b: form(b["values"], b["days"], b["mask"])}  # fmt: skip
    bf16 = copy.deepcopy(form).to(torch.bfloat16)
    paths["inference form bf16"] = lambda b: bf16(b["values"].bfloat16(), b["days"], b["mask"])
    with torch.inference_mode():
        logits = {name: torch.cat([path(b).float() for b in batches]) for name, path in paths.items()}
    print(f"UCR Crop test set ({len(labels):,} series, 46 dates, 1 band), checkpoint `{args.checkpoint}`:\n")
    print("| path | test accuracy | change (points) | classes equal to the reference's | max abs logit change |")
    print("|---|---|---|---|---|")
    accuracy = {name: (out.argmax(-1) == labels).double().mean().item() for name, out in logits.items()}
    for name, out in logits.items():
        same = (out.argmax(-1) == logits["reference"].argmax(-1)).double().mean().item()
        print(
            f"| {name} | {accuracy[name]:.4f} | {100 * (accuracy[name] - accuracy['reference']):+.2f} | "
            f"{100 * same:.2f} % | {(out - logits['reference']).abs().max().item():.1e} |"
        )
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model",
        choices=["seed", "default"],
        default="seed",
        help="the seed transformer, or the default recipe's TempCNN and its inference form (cmap.ml.inference)",
    )
    parser.add_argument("--pixels", type=int, help="series per forward pass (default: 256 seed, 8192 default)")
    parser.add_argument("--dates", type=int, default=50, help="dates per series (seed model)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds (medians are reported)")
    parser.add_argument("--matmul_size", type=int, default=2048, help="side of the square roofline matmul")
    parser.add_argument("--no_compile", action="store_true", help="skip the torch.compile arms")
    parser.add_argument(
        "--checkpoint",
        help="a UCR Crop Classifier checkpoint (seed default: the transformer's; "
        "--model default: a default-recipe model trained on UCR Crop, none by default)",
    )
    parser.add_argument("--ucr_batch", type=int, default=1200, help="series per batch on UCR Crop (16,800 = 14 x 1200)")
    args = parser.parse_args()
    torch.manual_seed(0)
    # Compilation times as a first run sees them: no kernels from Inductor's on-disk cache.
    torch._inductor.config.force_disable_caches = True
    started = time.perf_counter()
    print(header("Inference benchmark"))
    if args.model == "default":
        torch.set_num_threads(1)
        args.pixels = args.pixels or 8192
        default_model_benchmark(args)
        print(footer(started))
        return
    args.pixels = args.pixels or 256
    args.checkpoint = UCR_CHECKPOINT if args.checkpoint is None else args.checkpoint

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
