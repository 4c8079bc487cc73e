"""What the benchmark scripts share: the seed model, synthetic batches, interleaved timing, the machine.

Scripts run as ``python benchmarks/<name>.py``, so this module is importable as ``common``.
"""

import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from cmap.ml.classifiers import Classifier
from cmap.ml.decoders import MultiClassClassification
from cmap.ml.embeddings import PixelEncoding, PositionalEncoding
from cmap.ml.encoders import ExchangerEncoder, TransformerEncoder

SEED_CLASSES = ["other", "ble_tendre", "mais", "orge", "colza", "tournesol", "ble_dur"]
SEED_BANDS = 9


def seed_model(
    encoder: str = "transformer", d_model: int = 256, depth: int = 4, heads: int = 8, n_groups: int = 16
) -> Classifier:
    """The seed classifier (``../shared/seed/classifier.yaml``: d_model 256, 8 heads, 4 layers, band
    MLP 9-32-64-128-256, 7 classes), or the Exchanger encoder at the same width and depth."""
    position = PositionalEncoding(d_model, 10000, 10000)
    bands = PixelEncoding([SEED_BANDS, 32, 64, 128, d_model])
    if encoder == "transformer":
        layers = TransformerEncoder(position, bands, d_model, heads, depth, 0.1)
    elif encoder == "exchanger":
        layers = ExchangerEncoder(position, bands, d_model, n_groups, heads, depth, 0.1)
    else:
        raise ValueError(f"encoder must be transformer or exchanger, got {encoder!r}")
    return Classifier(layers, MultiClassClassification(d_model, len(SEED_CLASSES)), class_names=SEED_CLASSES)


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


def rate(function: Callable[[], object], items: float) -> Callable[[], float]:
    """An arm: items per second of one call of ``function``."""

    def measure() -> float:
        start = time.perf_counter()
        function()
        return items / (time.perf_counter() - start)

    return measure


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
