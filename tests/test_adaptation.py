"""Adaptation to a target season's unlabelled series (cmap/ml/adaptation.py) on tiny data."""

import numpy as np
import torch
from torch import nn

from cmap.ml.adaptation import (
    SeasonAdaptation,
    adapt_batch_norm,
    batch_norms,
    class_proportions,
    estimate_shift,
    estimate_speed,
    proportions_table,
)
from cmap.ml.consistency import Consistency


class BandNorm(nn.Module):
    """The mean of each band over the valid dates, batch-normalised, then a linear layer."""

    def __init__(self, num_bands: int = 2) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(num_bands)
        self.linear = nn.Linear(num_bands, 3)

    def forward(self, values, days, mask):
        mean = (values * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
        return self.linear(self.norm(mean))


def batch(values: torch.Tensor, days: torch.Tensor | None = None) -> dict:
    num_series, num_dates = values.shape[:2]
    if days is None:
        days = torch.arange(num_dates).expand(num_series, num_dates) * 10
    return {"values": values, "days": days, "mask": torch.ones(num_series, num_dates, dtype=torch.bool)}


def test_adabn_sets_the_running_statistics_to_the_targets_and_leaves_the_weights():
    torch.manual_seed(0)
    model = BandNorm()
    model.train()
    for _ in range(50):  # source statistics: mean 0, variance 1
        model(**batch(torch.randn(64, 5, 2)))
    weights = {name: value.clone() for name, value in model.named_parameters()}
    target = [batch(torch.randn(64, 5, 2) * 3 + torch.tensor([5.0, -2.0])) for _ in range(4)]
    assert adapt_batch_norm(model, target) == 4
    features = torch.cat([(b["values"]).mean(1) for b in target])
    batch_means = torch.stack([b["values"].mean(1).mean(0) for b in target])
    batch_vars = torch.stack([b["values"].mean(1).var(0) for b in target])
    torch.testing.assert_close(model.norm.running_mean, batch_means.mean(0))
    torch.testing.assert_close(model.norm.running_var, batch_vars.mean(0))
    assert (model.norm.running_mean - torch.tensor([5.0, -2.0])).abs().max() < 0.2
    assert features.var(0).min() > 0.5  # the target's spread (3 / sqrt(5) per band), not the source's 1 / 5
    assert model.norm.momentum == 0.1 and model.training
    for name, value in model.named_parameters():
        torch.testing.assert_close(value, weights[name])


def test_adabn_without_batches_changes_nothing():
    model = BandNorm()
    before = model.norm.running_mean.clone()
    assert adapt_batch_norm(model, []) == 0
    torch.testing.assert_close(model.norm.running_mean, before)


class PeakTiming(nn.Module):
    """Two classes: a series whose bump is near day 100 (class 0) or day 200 (class 1); a class's logit
    is high only when the bump sits on its day, so a series shifted away from both days is uncertain."""

    def forward(self, values, days, mask):
        peak_day = days.gather(1, values[..., 0].argmax(1, keepdim=True)).squeeze(1).float()
        distance = torch.stack([peak_day - 100, peak_day - 200], dim=-1)
        return 5 * torch.exp(-((distance / 20) ** 2))


def bump_series(peaks: list[int], days: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.exp(-(((days - peak) / 20.0) ** 2)) for peak in peaks]).unsqueeze(-1)


def test_the_shift_estimate_recovers_a_known_shift_of_the_target():
    days = torch.arange(0, 360, 8)
    source_peaks = [100, 200] * 8
    shift = 24  # the target season runs 24 days later
    target = bump_series([peak + shift for peak in source_peaks], days.float())
    batches = [batch(target, days.expand(len(source_peaks), len(days)))]
    model = PeakTiming()
    best, entropies = estimate_shift(model, batches, range(-48, 49, 8))
    assert best == -shift
    assert entropies[-shift] < entropies[0] - 0.1
    source = batch(bump_series(source_peaks, days.float()), days.expand(len(source_peaks), len(days)))
    assert estimate_shift(model, [source], range(-48, 49, 8))[0] == 0


def test_the_speed_estimate_recovers_a_known_season_speed_of_the_target():
    days = torch.arange(0, 360, 2)  # a fine grid, so the model sees a bump's day to within 2 days
    pivot = (days[0] + days[-1]) / 2  # the resampling's pivot: the middle of the valid days
    source_peaks = [100, 200] * 8
    speed = 0.8  # the target's season is compressed towards its middle: its events at pivot + (day - pivot) * 0.8
    target = bump_series([float(pivot + (peak - pivot) * speed) for peak in source_peaks], days.float())
    batches = [batch(target, days.expand(len(source_peaks), len(days)))]
    model = PeakTiming()
    speeds = [round(0.7 + 0.05 * k, 2) for k in range(13)]
    best, entropies = estimate_speed(model, batches, speeds)
    assert best == speed and entropies[speed] < entropies[1.0] - 0.1
    source = batch(bump_series(source_peaks, days.float()), days.expand(len(source_peaks), len(days)))
    assert estimate_speed(model, [source], speeds)[0] == 1.0


def test_season_adaptation_keeps_its_estimates_in_checkpoints_and_gives_them_to_the_weak_views():
    adaptation = SeasonAdaptation(batch_norm=False, shift_days=16, speed=0.1)
    adaptation.shift, adaptation.speed = -8, 0.95
    restored = SeasonAdaptation(batch_norm=False, shift_days=16, speed=0.1)
    restored.load_state_dict(adaptation.state_dict())
    model = nn.Module()
    model.consistency = Consistency()
    restored.on_train_start(None, model)  # a resumed fit: the estimates go to the consistency again
    assert (model.consistency.weak_day_shift, model.consistency.weak_stretch) == (-8, 0.95)


def test_class_proportions_and_their_table():
    np.testing.assert_allclose(class_proportions(np.array([0, 0, 1, 3]), 4), [0.5, 0.25, 0.0, 0.25])
    table = proportions_table(["wheat", "maize"], np.array([0.8, 0.2]), np.array([0.5, 0.5]))
    lines = table.splitlines()
    assert "wheat" in lines[1] and "80.0%" in lines[1] and "50.0%" in lines[1] and "-30.0" in lines[1]
    assert "maize" in lines[2] and "+30.0" in lines[2]


def test_consistency_weak_view_takes_the_day_shift():
    consistency = Consistency(weak_noise=0.0)
    series = batch(torch.zeros(2, 4, 1), torch.tensor([[0, 10, 20, 30], [5, 15, 25, 35]]))
    assert torch.equal(consistency.weak(series)["days"], series["days"])
    consistency.weak_day_shift = -10
    torch.testing.assert_close(consistency.weak(series)["days"], torch.tensor([[0, 0, 10, 20], [0, 5, 15, 25]]))


def write_series_store(folder, num_series: int, labelled: bool, offset: float = 0.0) -> str:
    from cmap.data import PixelSeries, write_store

    generator = np.random.default_rng(len(str(folder)))
    values = generator.normal(offset, 1.0, (num_series, 12, 3)).astype(np.float32)
    labels = np.arange(num_series) % 3 if labelled else None
    values[:, 4, 0] += 3.0 * (labels if labelled else generator.integers(0, 3, num_series))
    days = np.tile(np.arange(12) * 16, (num_series, 1))
    write_store(folder, PixelSeries(values, days, labels, str(folder)), ["B1", "B2", "B3"], CLASSES if labelled else [])
    return str(folder)


CLASSES = ["soy", "maize", "pasture"]


def test_the_season_config_trains_with_the_new_seasons_store_and_prints_the_class_proportions(tmp_path, capsys):
    """``cmap fit --config configs/season_transfer.yaml`` with an unlabelled store: the documented path
    of docs/season.md, a few steps on tiny stores; AdaBN on, so last.ckpt holds the target's statistics."""
    from cmap.cli import main as cmap_main
    from cmap.ml.classifiers import Classifier

    train = write_series_store(tmp_path / "train", 96, labelled=True)
    target = write_series_store(tmp_path / "new_season", 64, labelled=False, offset=2.0)
    adaptation = (
        '{"class_path": "cmap.ml.adaptation.SeasonAdaptation", "init_args": {"batch_norm": true, '
        + '"shift_days": 32, "shift_step": 16, "shift_after": 0.5, "speed": 0.1, "speed_step": 0.05}}'
    )
    cmap_main([
        "fit", "--config", "configs/season_transfer.yaml", "--data", "cmap.data.SeriesStore",
        "--data.init_args.path", train, "--data.init_args.fold", "0", "--data.init_args.unlabelled", target,
        "--data.init_args.unlabelled_ratio", "1", "--trainer.max_steps", "4", "--trainer.default_root_dir",
        str(tmp_path / "runs"), "--trainer.enable_progress_bar", "false", f"--trainer.callbacks+={adaptation}",
    ])  # fmt: skip
    printed = capsys.readouterr().out
    assert "Class proportions, training series vs the 64 target series as predicted" in printed
    # TimeMatch's estimate at half the steps: one of the 5 shifts tried, each with its mean entropy.
    shift_line = next(line for line in printed.splitlines() if line.startswith("TimeMatch shift of the target"))
    assert shift_line.count(": ") == 1 + 5 and any(f"{k:+d} days" in shift_line for k in (-32, -16, 0, 16, 32))
    speed_line = next(line for line in printed.splitlines() if line.startswith("Season speed of the target"))
    assert speed_line.count(": ") == 1 + 5 and any(
        f"series: {k:.2f} (" in speed_line for k in (0.9, 0.95, 1, 1.05, 1.1)
    )
    table = printed.split("as predicted:\n", 1)[1].splitlines()[1:4]
    assert sorted(line.split()[0] for line in table) == sorted(CLASSES)
    for column in (1, 2):  # the source's shares, the target's predicted shares
        assert abs(sum(float(line.split()[column].rstrip("%")) for line in table) - 100) < 0.2
    checkpoint = next((tmp_path / "runs").glob("lightning_logs/version_*/checkpoints/last.ckpt"))
    model = Classifier.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=False)
    assert model.consistency is not None and model.consistency.threshold == 0.8
    # AdaBN: the first batch norm's running mean is the target's features' mean, not the source's.
    from cmap.data import SeriesDataset, open_store
    from cmap.data.dataset import batch_loader

    norm = batch_norms(model)[0]
    stats = norm.running_mean.clone()
    series = open_store(target)[0]
    adapt_batch_norm(model, batch_loader(SeriesDataset(series, np.arange(64), model.input_contract), 512))
    torch.testing.assert_close(norm.running_mean, stats)


def test_em_recovers_the_targets_class_proportions():
    """Probabilities of a calibrated model under source proportions (0.5, 0.3, 0.2), on a target drawn
    with (0.1, 0.3, 0.6): EM's estimate is near the target's, and the adjusted probabilities follow it."""
    from cmap.ml.adaptation import prior_adjusted, target_priors

    generator = torch.Generator().manual_seed(0)
    source, target = torch.tensor([0.5, 0.3, 0.2]), torch.tensor([0.1, 0.3, 0.6])
    labels = torch.multinomial(target, 20000, replacement=True, generator=generator)
    features = labels.float() + 0.8 * torch.randn(len(labels), generator=generator)  # 1-D, overlapping classes
    likelihood = torch.exp(-((features[:, None] - torch.arange(3.0)) ** 2) / (2 * 0.8**2))
    probabilities = likelihood * source / (likelihood * source).sum(-1, keepdim=True)  # Bayes under the source
    estimate = target_priors(probabilities, source)
    torch.testing.assert_close(estimate, target, atol=0.02, rtol=0)
    adjusted = prior_adjusted(probabilities, source, estimate)
    assert (adjusted.argmax(-1) == labels).float().mean() > (probabilities.argmax(-1) == labels).float().mean()


def test_the_season_config_is_the_default_recipe_plus_its_adaptation():
    """configs/season_transfer.yaml must follow configs/default.yaml: the same model, budget and callbacks,
    plus consistency and SeasonAdaptation only (and its own run folder)."""
    import yaml

    from .conftest import CONFIGS

    default = yaml.safe_load((CONFIGS / "default.yaml").read_text())
    season = yaml.safe_load((CONFIGS / "season_transfer.yaml").read_text())
    added = [c for c in season["trainer"]["callbacks"] if c["class_path"] == "cmap.ml.adaptation.SeasonAdaptation"]
    assert len(added) == 1
    season["trainer"]["callbacks"].remove(added[0])
    consistency = season["model"]["init_args"].pop("consistency")
    assert consistency == {"threshold": 0.8, "teacher_decay": 0.99}
    assert season["trainer"].pop("default_root_dir") == "runs/season"
    default["trainer"].pop("default_root_dir")
    assert season == default
