"""What the benchmark scripts share: paths, the seed and UCR Crop models, synthetic batches, training
arms, interleaved timing, the machine.

Scripts run as ``python benchmarks/<name>.py``, so this module is importable as ``common``.
"""

import contextlib
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import torch

from cmap.ml.classifiers import Classifier
from cmap.ml.decoders import MultiClassClassification
from cmap.ml.embeddings import PixelEncoding, PositionalEncoding
from cmap.ml.encoders import ExchangerEncoder, TransformerEncoder

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
#: The Sinop MODIS cube (12 NDVI JPEG2000 images) and the band and date pattern of its file names.
SINOP_CUBE = SHARED_DATA / "sits_sinop_modis_cube"
SINOP_PATTERN = r"_(?P<band>NDVI)_(?P<date>\d{4}-\d{2}-\d{2})"

SEED_CLASSES = ["other", "ble_tendre", "mais", "orge", "colza", "tournesol", "ble_dur"]
SEED_BANDS = 9
UCR_CROP_CLASSES = 24


def build_encoder(
    encoder: str,
    position: PositionalEncoding,
    bands: PixelEncoding,
    heads: int,
    depth: int,
    n_groups: int,
    dim_feedforward: int | None = None,
) -> TransformerEncoder | ExchangerEncoder:
    """A transformer (``depth`` layers) or Exchanger (``depth`` blocks, ``n_groups`` group tokens)
    encoder at the width of its embeddings, dropout 0.1."""
    d_model = position.d_model
    if encoder == "transformer":
        return TransformerEncoder(
            heads,
            depth,
            dim_feedforward,
            position_encoder=position,
            bands_encoder=bands,
            d_model=d_model,
            dropout_p=0.1,
        )
    if encoder == "exchanger":
        return ExchangerEncoder(
            n_groups, heads, depth, position_encoder=position, bands_encoder=bands, d_model=d_model, dropout_p=0.1
        )
    raise ValueError(f"encoder must be transformer or exchanger, got {encoder!r}")


def seed_model(
    encoder: str = "transformer", d_model: int = 256, depth: int = 4, heads: int = 8, n_groups: int = 16
) -> Classifier:
    """The seed classifier (``../shared/seed/classifier.yaml``: d_model 256, 8 heads, 4 layers, band
    MLP 9-32-64-128-256, 7 classes), or the Exchanger encoder at the same width and depth."""
    position = PositionalEncoding(d_model, 10000, 10000)
    bands = PixelEncoding([SEED_BANDS, 32, 64, 128, d_model])
    layers = build_encoder(encoder, position, bands, heads, depth, n_groups)
    decoder = MultiClassClassification(hidden=d_model, num_classes=len(SEED_CLASSES))
    return Classifier(layers, decoder, class_names=SEED_CLASSES)


def ucr_crop_encoder(
    d_model: int = 96, encoder: str = "transformer", heads: int = 4, depth: int = 3, n_groups: int = 8
) -> TransformerEncoder | ExchangerEncoder:
    """The encoder of ``configs/ucr_crop_transformer.yaml`` (d_model 96, 4 heads, 3 layers, feed-forward
    2 x d_model, band MLP 1-32-d_model, days below 1000), or the Exchanger at the same width and depth."""
    position = PositionalEncoding(d_model, 1000, 1000)
    bands = PixelEncoding([1, 32, d_model])
    return build_encoder(encoder, position, bands, heads, depth, n_groups, 2 * d_model)


def ucr_crop_model(
    d_model: int = 96,
    encoder: str = "transformer",
    heads: int = 4,
    depth: int = 3,
    n_groups: int = 8,
    **classifier_options,
) -> Classifier:
    """The classifier of ``configs/ucr_crop_transformer.yaml``: :func:`ucr_crop_encoder` and a 24-class
    decoder (dropout 0.1); ``classifier_options`` go to :class:`Classifier` (learning rates, loss)."""
    return Classifier(
        ucr_crop_encoder(d_model, encoder, heads, depth, n_groups),
        MultiClassClassification(hidden=d_model, num_classes=UCR_CROP_CLASSES, dropout_p=0.1),
        **classifier_options,
    )


def quiet_trainer(**kwargs) -> L.Trainer:
    """A Lightning trainer without logger, checkpoints, progress bar or model summary."""
    return L.Trainer(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, **kwargs
    )


def synthetic_batch(
    batch_size: int, num_dates: int, num_bands: int = SEED_BANDS, cloud_fraction: float = 0.2, seed: int = 0
) -> dict[str, torch.Tensor]:
    """A normalised batch in the :class:`cmap.data.Batch` layout: irregular days within a year (or
    more, for long series), ``cloud_fraction`` of the dates masked (the first date always valid)."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.rand(batch_size, num_dates, generator=generator) >= cloud_fraction
    mask[:, 0] = True
    values = torch.randn(batch_size, num_dates, num_bands, generator=generator) * mask.unsqueeze(-1)
    steps = torch.randint(1, 8, (batch_size, num_dates), generator=generator)
    days = (steps.cumsum(dim=1) - steps[:, :1]).clamp_max(9999)
    labels = torch.randint(0, len(SEED_CLASSES), (batch_size,), generator=generator)
    return {"values": values, "days": days, "mask": mask, "label": labels}


@contextmanager
def mha_fast_path(enabled: bool) -> Iterator[None]:
    """Switch PyTorch's fused transformer inference kernel (a global flag) on or off, then restore it.

    Off for quantised models (their linears do not fit the kernel) and compiled ones (as
    :class:`cmap.ml.compile.CompileModel` does: the kernel is opaque to Inductor).
    """
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(enabled)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def interleaved(arms: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Call every arm once per round, ``repeats`` rounds, arms in turn; each call returns a rate.

    On a shared machine the load drifts over minutes: interleaving gives every arm the same
    conditions on average, and ratios taken within a round cancel most of the drift.
    """
    rates: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(repeats):
        for name, arm in arms.items():
            rates[name].append(arm())
    return rates


def synchronize(device: torch.device | None) -> None:
    """Wait for the work queued on a CUDA ``device``; nothing on the CPU."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(
    function: Callable[[], object], items: float, calls: int = 1, device: torch.device | None = None
) -> Callable[[], float]:
    """An arm: items per second over ``calls`` calls of ``function`` (a CUDA ``device`` drained before
    and after)."""

    def measure() -> float:
        synchronize(device)
        start = time.perf_counter()
        for _ in range(calls):
            function()
        synchronize(device)
        return calls * items / (time.perf_counter() - start)

    return measure


def training_step(
    model: Classifier,
    batch: dict[str, torch.Tensor],
    forward: Callable[..., torch.Tensor] | None = None,
    precision: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> Callable[[], None]:
    """One plain PyTorch training step of ``model`` on ``batch`` per call: forward, the model's loss,
    zero_grad, backward, AdamW (lr 1e-4, its own optimizer).

    ``forward``: what runs the model (e.g. ``torch.compile(model)``); ``precision``: a fresh context
    around forward and loss at each step (e.g. autocast).
    """
    optimizer = torch.optim.AdamW(model.parameters(), 1e-4)
    forward = forward or model

    def step() -> None:
        with precision():
            loss = model.criterion(forward(batch["values"], batch["days"], batch["mask"]), batch["label"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def training_arm(
    model: Classifier,
    batch: dict[str, torch.Tensor],
    steps: int = 1,
    threads: int | None = None,
    forward: Callable[..., torch.Tensor] | None = None,
    precision: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    device: torch.device | None = None,
) -> Callable[[], float]:
    """An arm: training samples/s over ``steps`` :func:`training_step` calls, after one untimed step
    (AdamW's state; kernels and compilation on a first call).

    ``threads``: torch's thread count, set before the warm-up and at the start of every measurement.
    """
    step = training_step(model, batch, forward, precision)

    def run() -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        for _ in range(steps):
            step()

    if threads is not None:
        torch.set_num_threads(threads)
    step()
    synchronize(device)
    return rate(run, steps * len(batch["label"]), device=device)


def median_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median of the per-round ratios (robust to a round slowed by another job)."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def machine() -> str:
    """One line: CPU (or GPU), cores, torch build and threads, bf16 support."""
    flags = cpu_flags()
    isa = ", ".join(flag for flag in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if flag in flags) or "?"
    line = (
        f"{cpu_model()}, {os.cpu_count()} cores ({isa}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}"
    )
    if torch.cuda.is_available():
        line += f"; GPU {torch.cuda.get_device_name()}"
    return line


def load_average() -> str:
    """The 1-minute load average over the core count: above 1 the machine is shared."""
    return f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"


def header(title: str) -> str:
    """A report's first lines: its title, the machine and the load at start."""
    return f"# {title}\n\nMachine: {machine()}.\nAt start: {load_average()}.\n"


def footer(started: float) -> str:
    """A report's last line: the load at end and the time since ``started`` (``time.perf_counter()``)."""
    return f"At end: {load_average()}. Total {time.perf_counter() - started:.0f} s."
