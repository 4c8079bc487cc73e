"""Consistency training on unlabelled series (issue 18): the views, the loss, the EMA teacher, the
store's unlabelled batches, and a Classifier trained with them (Python and ``cmap fit``), resumed
from a checkpoint with its running state."""

import dataclasses
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from torch.utils.data import DistributedSampler

from cmap.data import SeriesStore, StreamingSeriesStore, open_store, write_store
from cmap.data.convert import read_mato_grosso
from cmap.data.perturbations import Augmentation, SeriesViews, season_resampled, time_stretched
from cmap.data.sampling import RowDataset, RowStream
from cmap.ml.consistency import RUNNING_MEANS, Consistency, Teacher, concat_batches

from .conftest import (
    REPO,
    SHARED_DATA,
    padded_batch,
    quiet_trainer,
    require,
    tiny_classifier,
    tiny_classifier_config,
    tiny_encoder_config,
)

BANDS = 6  # Mato Grosso's


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory):
    """Mato Grosso as a labelled store, and its inputs again as an unlabelled store (no labels.npy)."""
    converted = read_mato_grosso(require(SHARED_DATA / "sits_matogrosso_mod13q1") / "br_mt_1_8K_9classes_6bands.rda")
    folder = tmp_path_factory.mktemp("stores")
    write_store(folder / "labelled", converted.series, converted.band_names, converted.class_names)
    inputs = dataclasses.replace(converted.series, labels=None)
    write_store(folder / "area", inputs, converted.band_names, [])
    return folder / "labelled", folder / "area", converted.class_names


def few_labels(labelled, area, **options) -> SeriesStore:
    return SeriesStore(str(labelled), fold=0, labels_per_class=4, batch_size=8, unlabelled=str(area), **options)


def test_views_keep_invalid_dates_hidden_and_the_loss_counts_confident_pseudo_labels():
    values, mask = padded_batch(64)
    values = values.masked_fill(~mask.unsqueeze(-1), 0.0)
    batch = {"values": values, "days": torch.arange(10).expand(64, 10) * 16, "mask": mask}
    consistency = Consistency(threshold=0.6, min_crop=0.5, date_dropout=0.3)
    weak, strong = consistency.weak(batch), consistency.strong(batch)
    assert torch.equal(weak["mask"], mask) and not torch.equal(weak["values"], values)
    assert torch.equal(weak["values"][~mask], values[~mask])  # no noise on padding or clouds
    assert not (strong["mask"] & ~mask).any() and strong["mask"].any(dim=1).all()
    assert (strong["values"][~strong["mask"]] == 0).all() and strong["mask"].sum() < mask.sum()

    confident = torch.tensor([[5.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # p = 0.99 and 1/3
    student = torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, 9.0]], requires_grad=True)
    loss, kept = consistency.loss(confident, student)
    expected = torch.nn.functional.cross_entropy(student[:1], torch.tensor([0])) / 2  # the mean over both
    assert kept.item() == 0.5 and torch.allclose(loss, expected)
    loss.backward()
    assert student.grad[1].abs().sum() == 0  # the unconfident series teaches nothing
    with pytest.raises(ValueError, match="threshold"):
        Consistency(threshold=1.0)


def test_distribution_alignment_takes_confidence_from_the_class_the_model_always_predicts():
    always_first = torch.tensor([[3.0, 0.0, 0.0]]).repeat(8, 1)  # p = 0.91 for class 0, every series
    plain, aligned = Consistency(threshold=0.6), Consistency(threshold=0.6, distribution_alignment=True)
    assert plain.loss(always_first, torch.zeros(8, 3))[1].item() == 1.0
    assert aligned.loss(always_first, torch.zeros(8, 3))[1].item() == 0.0  # divided by its mean: uniform
    mixed = torch.tensor([[3.0, 0.0, 0.0]] * 6 + [[0.0, 3.0, 0.0]] * 2)
    _, kept = aligned.loss(mixed, torch.zeros(8, 3))  # class 1, rarer than class 0 so far, keeps its confidence
    assert 0 < kept.item() < 1


def test_adaptive_thresholds_start_low_and_follow_the_confidence_per_class():
    adaptive = Consistency(adaptive_threshold="freematch", adaptive_momentum=0.5)
    unsure = torch.zeros(4, 4)  # p = 1/4 everywhere: the first level is 1/4, reached
    assert adaptive.loss(unsure, torch.zeros(4, 4))[1].item() == 1.0
    first_confident = torch.tensor([[4.0, 0.0, 0.0, 0.0]]).repeat(8, 1)
    for _ in range(10):  # the level rises towards class 0's confidence (0.95), other classes' stay low
        adaptive.loss(first_confident, torch.zeros(8, 4))
    thresholds = adaptive.adaptive_thresholds(torch.softmax(first_confident, dim=-1))
    assert 0.9 < thresholds[0] < 0.95 and (thresholds[1:] < 0.1).all()
    second_mild = torch.tensor([[0.0, 1.0, 0.0, 0.0]])  # p = 0.48 for class 1: over its low threshold
    assert adaptive.loss(second_mild, torch.zeros(1, 4))[1].item() == 1.0
    assert Consistency(threshold=0.6).loss(second_mild, torch.zeros(1, 4))[1].item() == 0.0


def test_the_global_adaptive_threshold_starts_at_the_threshold_and_follows_the_mean_confidence():
    adaptive = Consistency(threshold=0.6, adaptive_threshold="global", adaptive_momentum=0.5)
    mild = torch.tensor([[1.5, 0.0, 0.0]])  # p = 0.69: over the first level (0.6 -> 0.65), kept
    assert adaptive.loss(mild, torch.zeros(1, 3))[1].item() == 1.0
    sure = torch.tensor([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0]])  # p = 0.987
    for _ in range(10):  # an area the model is sure of: the level rises to its confidence, every class alike
        adaptive.loss(sure, torch.zeros(2, 3))
    assert torch.allclose(adaptive.adaptive_level, torch.softmax(sure[0], dim=-1)[0], atol=1e-3)
    assert adaptive.loss(mild, torch.zeros(1, 3))[1].item() == 0.0  # now under it
    with pytest.raises(ValueError, match="adaptive_threshold"):
        Consistency(adaptive_threshold="local")


def test_soft_targets_are_the_sharpened_weak_probabilities():
    weak = torch.tensor([[2.0, 1.0, 0.0]])
    student = torch.tensor([[0.0, 1.0, 0.0]], requires_grad=True)
    loss, _ = Consistency(threshold=0.5, temperature=0.5).loss(weak, student)
    sharpened = torch.softmax(weak * 2, dim=-1)  # p ** (1 / 0.5), renormalised
    assert torch.allclose(loss, -(sharpened * torch.log_softmax(student, dim=-1)).sum())
    hard, _ = Consistency(threshold=0.5).loss(weak, student)
    assert not torch.allclose(loss, hard)


def test_the_shifted_view_moves_values_and_masks_what_comes_in():
    values, mask = torch.arange(1.0, 13.0).reshape(2, 6, 1), torch.ones(2, 6, dtype=torch.bool)
    mask[1, 5] = False  # a cloudy date stays hidden wherever it goes
    batch = {"values": values, "days": torch.arange(6).expand(2, 6), "mask": mask}
    moved = 0
    for _ in range(20):
        view = Consistency(max_shift=2, date_dropout=0.0, band_noise=0.0, scale=0.0).strong(batch)
        moved += not torch.equal(view["values"], values.masked_fill(~mask.unsqueeze(-1), 0.0))
        for series in range(2):
            visible = view["values"][series, view["mask"][series], 0]
            assert len(visible) >= mask[series].sum() - 2 and (visible.diff() == 1).all()  # a run, in order
            assert set(visible.tolist()) <= set(values[series, mask[series], 0].tolist())
            assert (view["values"][series, ~view["mask"][series]] == 0).all()
        assert torch.equal(view["days"], batch["days"])  # the season moves, the calendar does not
    assert moved >= 10  # 24 in 25 draws of two series move at least one
    with pytest.raises(ValueError, match="max_shift >= 0"):
        Consistency(max_shift=-1)


def linear_batch(num_series: int = 64) -> dict[str, torch.Tensor]:
    """Series whose two bands are their day and twice it (days 16 apart, from day 5 on), with padding,
    clouds, a leading cloud and valid dates out of day order: linear interpolation of them is exact."""
    days = 5 + 16 * torch.arange(10).expand(num_series, 10).clone()
    days[1::4] = days[1::4].flip(1)  # valid dates need not be in day order
    values = torch.stack([days, 2 * days], dim=-1).float()
    _, mask = padded_batch(num_series)  # dates 7-9 padding, date 2 of every third series a cloud
    mask[1::4] = mask[1::4].flip(1)
    mask[2::4, 0] = False
    return {"values": values.masked_fill(~mask.unsqueeze(-1), 0.0), "days": days, "mask": mask}


def test_the_time_stretch_resamples_each_season_faster_or_slower_around_its_middle_days_unmoved():
    batch, stretch = linear_batch(), 0.3
    values, mask = time_stretched(batch["values"], batch["mask"], batch["days"], stretch)
    assert not (mask & ~batch["mask"]).any() and mask.any(dim=1).all()  # no cloud or padding comes in
    assert (values[~mask] == 0).all()
    factors = []
    for series in range(len(mask)):
        valid_days = batch["days"][series, batch["mask"][series]].float()
        pivot = (valid_days.min() + valid_days.max()) / 2
        day = batch["days"][series, mask[series]].float()
        source = values[series, mask[series], 0]  # a linear series: its value is the day it was read at
        assert torch.allclose(values[series, mask[series], 1], 2 * source)  # the bands move together
        assert (source >= valid_days.min() - 1e-3).all() and (source <= valid_days.max() + 1e-3).all()
        farthest = (day - pivot).abs().argmax()
        factor = (source[farthest] - pivot) / (day[farthest] - pivot)
        assert torch.allclose(source - pivot, factor * (day - pivot), atol=1e-3), series  # one factor per series
        assert 1 - stretch - 1e-4 <= factor <= 1 + stretch + 1e-4
        factors.append(factor.item())
        if factor > 1.01:  # a faster season: its first and last valid dates read outside it, masked
            assert mask[series].sum() < batch["mask"][series].sum()
        if factor < 1:  # a slower one: every valid date reads inside it
            assert torch.equal(mask[series], batch["mask"][series])
    assert min(factors) < 0.85 and max(factors) > 1.15


def test_a_season_resampled_by_a_given_factor_is_read_around_its_middle_and_unchanged_by_one():
    batch = linear_batch()
    same_values, same_mask = season_resampled(batch["values"], batch["mask"], batch["days"], 1.0)
    assert torch.equal(same_values, batch["values"]) and torch.equal(same_mask, batch["mask"])
    factor = torch.where(torch.arange(len(same_mask)) % 2 == 0, 0.5, 2.0).unsqueeze(1)  # slower, faster
    values, mask = season_resampled(batch["values"], batch["mask"], batch["days"], factor)
    valid_days = (
        torch.where(batch["mask"], batch["days"], 10**6).amin(1),
        torch.where(batch["mask"], batch["days"], -1).amax(1),
    )
    pivot = ((valid_days[0] + valid_days[1]) / 2).unsqueeze(1)
    expected = pivot + (batch["days"] - pivot) * factor
    torch.testing.assert_close(values[..., 0][mask], expected[mask])
    assert torch.equal(mask[::2], batch["mask"][::2]) and (mask[1::2].sum(1) < batch["mask"][1::2].sum(1)).all()


def test_the_weak_view_reads_the_season_at_the_speed_it_is_given():
    batch, consistency = linear_batch(), Consistency(weak_noise=0.0)
    assert all(torch.equal(consistency.weak(batch)[key], batch[key]) for key in batch)  # by default: unchanged
    consistency.weak_stretch = 0.9
    weak = consistency.weak(batch)
    expected = season_resampled(batch["values"], batch["mask"], batch["days"], 0.9)
    assert torch.equal(weak["values"], expected[0]) and torch.equal(weak["mask"], expected[1])
    assert torch.equal(weak["days"], batch["days"]) and not torch.equal(weak["values"], batch["values"])


def test_the_time_stretch_keeps_one_date_of_every_series_and_masks_empty_ones():
    days = torch.tensor([[0, 10, 20], [0, 10, 20], [0, 10, 20]])
    values = torch.tensor([[1.0, 2.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 0.0]]).unsqueeze(-1)
    mask = torch.tensor([[True, True, False], [False, True, False], [False, False, False]])
    for _ in range(20):  # two dates read outside whenever the season runs faster: the first stays
        stretched, kept = time_stretched(values, mask, days, 0.5)
        assert kept[0, 0] and not kept[0, 2] and kept[1].tolist() == [False, True, False] and not kept[2].any()
        assert stretched[1, 1, 0] == 5.0 and stretched[0, 0, 0] >= 1.0 and (stretched[2] == 0).all()


def test_the_time_stretch_option_changes_nothing_by_default_and_checks_its_range():
    batch = linear_batch()
    plain = Augmentation()(batch)  # the default: the same tensors, bit for bit
    assert not Augmentation().active and all(torch.equal(plain[key], batch[key]) for key in batch)
    torch.manual_seed(1)
    noisy = Augmentation(band_noise=0.1)(batch)  # no random draw of its own: the same noise as before
    torch.manual_seed(1)
    expected = batch["values"] + 0.1 * torch.randn_like(batch["values"]) * batch["mask"].unsqueeze(-1)
    assert torch.equal(noisy["values"], expected) and torch.equal(noisy["mask"], batch["mask"])
    torch.manual_seed(2)
    strong = Consistency().strong(batch)
    torch.manual_seed(2)
    values, mask = SeriesViews(min_crop=1.0, date_dropout=0.1, band_noise=0.05)(batch["values"], batch["mask"])
    values = values * (1 + 0.1 * (2 * torch.rand(len(values), 1, 1) - 1))
    assert torch.equal(strong["values"], values) and torch.equal(strong["mask"], mask)

    stretched = Augmentation(time_stretch=0.2)
    assert stretched.active
    view = stretched(batch)
    assert not torch.equal(view["values"], batch["values"]) and torch.equal(view["days"], batch["days"])
    assert not (view["mask"] & ~batch["mask"]).any()
    strong = Consistency(time_stretch=0.2, date_dropout=0.0, band_noise=0.0, scale=0.0).strong(batch)
    assert not torch.equal(strong["values"], batch["values"]) and torch.equal(strong["days"], batch["days"])
    assert not (strong["mask"] & ~batch["mask"]).any()
    with pytest.raises(ValueError, match="time_stretch"):
        Augmentation(time_stretch=1.0)
    with pytest.raises(ValueError, match="time_stretch"):
        Consistency(time_stretch=-0.1)


def test_estimated_alignment_follows_the_target_proportions_over_the_source_ones():
    """Source: class 2 common (60 %), target: class 2 absent. Uniform alignment pushes pseudo-labels
    onto class 2 (rare in the predictions); the estimated prior over the source prior does not."""
    labels = torch.tensor([0, 1, 2, 2, 2])  # 20 %, 20 %, 60 %
    weak = torch.log(torch.tensor([[0.6, 0.3, 0.1]] * 6 + [[0.3, 0.6, 0.1]] * 2 + [[0.45, 0.1, 0.45]] * 2))
    probabilities = torch.softmax(weak, dim=-1)
    uniform = Consistency(distribution_alignment="uniform").aligned(probabilities, labels)
    assert torch.equal(uniform, Consistency(distribution_alignment=True).aligned(probabilities, None))
    assert (uniform.argmax(dim=-1) == 2).sum() == 2  # the two undecided series become class 2
    estimated = Consistency(distribution_alignment="estimated")
    aligned = estimated.aligned(probabilities, labels)
    target, source = probabilities.mean(dim=0), (torch.full((3,), 1 / 3) + torch.tensor([0.2, 0.2, 0.6])) / 2
    expected = probabilities * target / source  # Saerens et al.'s correction, a uniform prior as the first batch
    torch.testing.assert_close(aligned, expected / expected.sum(dim=-1, keepdim=True))
    assert (aligned.argmax(dim=-1) == 2).sum() == 0 and (aligned.argmax(dim=-1)[:8] == weak.argmax(dim=-1)[:8]).all()
    for _ in range(98):  # the source prior: the mean frequency over the batches, the uniform prior's share shrinking
        estimated.aligned(probabilities, labels)
    torch.testing.assert_close(
        estimated.source_class_mean, (torch.full((3,), 1 / 3) + 99 * labels.bincount() / 5) / 100
    )
    assert estimated.source_batches.item() == 100
    with pytest.raises(ValueError, match="labels"):
        estimated.loss(weak, torch.zeros(10, 3))
    with pytest.raises(ValueError, match="distribution_alignment"):
        Consistency(distribution_alignment="em")


def test_the_adaptation_options_parse_from_the_command_line():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(Consistency, "consistency")
    parser.add_class_arguments(Augmentation, "augmentation")
    for given, expected in [("estimated", "estimated"), ("uniform", "uniform"), ("true", True), ("false", False)]:
        parsed = parser.parse_args(["--consistency.distribution_alignment", given, "--consistency.time_stretch", "0.1"])
        assert parsed.consistency.distribution_alignment == expected and parsed.consistency.time_stretch == 0.1
    assert parser.parse_args(["--augmentation.time_stretch", "0.1"]).augmentation.time_stretch == 0.1
    with pytest.raises(Exception, match="distribution_alignment"):
        parser.parse_args(["--consistency.distribution_alignment", "em"])


def test_concatenated_batches_pad_the_shorter_with_masked_dates():
    def batch(size, dates):
        return {"values": torch.ones(size, dates, 1), "days": torch.ones(size, dates).long(),
                "mask": torch.ones(size, dates).bool()}  # fmt: skip

    both = concat_batches(batch(2, 3), batch(4, 5))
    assert both["values"].shape == (6, 5, 1) and both["mask"][:2, 3:].sum() == 0 and both["mask"][2:].all()
    assert both["values"][:2, 3:].sum() == 0 and both["days"][:2, 3:].sum() == 0


def test_the_teacher_is_a_moving_average_of_the_model():
    model = tiny_classifier(num_classes=3)
    teacher = Teacher(model.encoder, model.decoder, decay=0.9)
    start = teacher.modules["decoder"].state_dict()
    first = {k: v.clone() for k, v in start.items()}
    with torch.no_grad():
        for parameter in model.decoder.parameters():
            parameter.add_(1.0)
    teacher.update(model.encoder, model.decoder)
    for name, value in teacher.modules["decoder"].state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(value, first[name] + 0.1 * (model.decoder.state_dict()[name] - first[name]))
    assert not any(p.requires_grad for p in teacher.modules.parameters())


def streaming(labelled, area, **options) -> StreamingSeriesStore:
    """A StreamingSeriesStore of the labelled store (no labels_per_class: every training series)."""
    return StreamingSeriesStore(str(labelled), fold=0, batch_size=64, unlabelled=str(area), **options)


@pytest.mark.parametrize("module", [few_labels, streaming])
def test_the_store_gives_unlabelled_batches_alongside_the_labelled_ones(stores, module):
    labelled, area, class_names = stores
    data = module(labelled, area, unlabelled_ratio=3)
    data.setup("fit")
    loader = data.train_dataloader()
    steps = [step for step, _, _ in loader]  # a CombinedLoader yields (batch, batch index, loader index)
    assert len(steps) == len(data.train_dataloader().flattened[0])  # one unlabelled batch per labelled one
    for step in steps:
        assert set(step) == {"labelled", "unlabelled"} and "label" not in step["unlabelled"]
        assert len(step["unlabelled"]["values"]) == 3 * len(step["labelled"]["values"])
    assert data.datasets["unlabelled"].contract is data.input_contract  # normalised as the labelled series
    with pytest.raises(ValueError, match="bands"):
        type(data)(str(labelled), fold=0, unlabelled=str(wrong_bands(area.parent, class_names)))
    with pytest.raises(ValueError, match="unlabelled_ratio"):
        module(labelled, area, unlabelled_ratio=0)


def test_the_streaming_store_draws_every_unlabelled_series_once_before_any_again(stores):
    """Without an index or order in memory (RowStream), across epochs, and again when resumed (set_epoch)."""
    labelled, area, _ = stores
    data = streaming(labelled, area, unlabelled_ratio=2)
    data.setup("fit")
    sampler = data.train_dataloader().flattened[1].sampler
    assert len(sampler) == 2 * len(data.datasets["train"]) and isinstance(data.datasets["unlabelled"], RowDataset)
    epochs = [list(sampler) for _ in range(3)]  # 3 epochs of 2 * (about 1,360) rows from a store of 1,892
    stream = np.concatenate(epochs)
    for start in range(0, len(stream) - 1892, 1892):  # each pass over the store a permutation of it
        assert sorted(stream[start : start + 1892].tolist()) == list(range(1892))
    assert not np.array_equal(stream[:1892], stream[1892 : 2 * 1892])  # a new order at each pass
    sampler.set_epoch(1)
    assert list(sampler) == epochs[1]
    # The first unlabelled batch (a new loader's: epoch 0) holds its rows' inputs, normalised as the labelled series.
    step, _, _ = next(iter(data.train_dataloader()))
    area_series = open_store(area)[0]
    expected, _ = data.input_contract.model_inputs(area_series.values[np.array(epochs[0][: 2 * 64])])
    np.testing.assert_allclose(step["unlabelled"]["values"].numpy(), expected, rtol=1e-6, atol=1e-6)


def test_each_process_draws_its_share_of_the_unlabelled_series_and_a_new_one_each_epoch():
    """Under DDP each of W processes draws ceil(length / W) rows an epoch (RowStream is a
    DistributedSampler: Lightning leaves it as it is), the consecutive shares of the one-process
    epoch's rows, so different rows in each process, a new draw each epoch (set_epoch)."""
    num_rows, length, seed = 50, 42, (3, 0)
    single = RowStream(num_rows, length, seed)
    one_process = [list(single) for _ in range(3)]
    shares = [RowStream(num_rows, length, seed, num_replicas=3, rank=rank) for rank in range(3)]
    assert all(isinstance(share, DistributedSampler) and len(share) == 14 for share in shares)
    for epoch in (2, 0, 1):  # Lightning sets each epoch before its pass, in any order (resumed fits)
        draws = []
        for share in shares:
            share.set_epoch(epoch)
            draws.append(list(share))
        assert [len(draw) for draw in draws] == [14, 14, 14] and sum(draws, []) == one_process[epoch]
        if epoch == 0:  # within one pass over the store: no row in two processes
            assert len(set(sum(draws, []))) == length
    assert one_process[0] != one_process[1] != one_process[2]
    stream = sum(one_process, [])  # every row once before any again, across epochs
    assert sorted(stream[:num_rows]) == sorted(stream[num_rows : 2 * num_rows]) == list(range(num_rows))
    uneven = [RowStream(num_rows, length, seed, num_replicas=4, rank=rank) for rank in range(4)]
    assert [len(share) for share in uneven] == [11] * 4  # ceil(42 / 4), the last share running on into the stream
    assert sum((list(share) for share in uneven), []) == list(RowStream(num_rows, 44, seed))
    with pytest.raises(ValueError, match="rank"):
        RowStream(num_rows, length, seed, num_replicas=2, rank=2)


class TwoProcessGroup:
    """A stand-in for a 2-process group (``torch.distributed``'s default one): 2 threads, whose
    ``all_reduce`` sums their tensors in place, as gloo's."""

    def __init__(self) -> None:
        self.barrier, self.local, self.tensors = threading.Barrier(2, timeout=30), threading.local(), {}

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
        monkeypatch.setattr(torch.distributed, "get_world_size", lambda group=None: 2)
        monkeypatch.setattr(torch.distributed, "all_reduce", self.all_reduce)

    def all_reduce(self, tensor: torch.Tensor, op=None, group=None, async_op=False) -> None:
        assert op in (None, torch.distributed.ReduceOp.SUM) and not async_op
        self.tensors[self.local.rank] = tensor.clone()
        self.barrier.wait()
        tensor.copy_(self.tensors[0] + self.tensors[1])
        self.barrier.wait()

    def run(self, work) -> list:
        """``work(rank)`` in each of the 2 "processes"; their results."""
        results, errors = [None, None], []

        def process(rank: int) -> None:
            self.local.rank = rank
            try:
                results[rank] = work(rank)
            except BaseException as error:  # the test's failure, raised in the test's thread
                errors.append(error)
                self.barrier.abort()  # and the other "process" no longer waits for this one

        threads = [threading.Thread(target=process, args=(rank,)) for rank in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return results


def test_the_running_means_follow_every_process_batch(monkeypatch):
    """With a process group (DDP), distribution alignment's (the labelled batches' class frequencies
    too) and the adaptive thresholds' running means follow the mean over every process's batch: every
    process holds the same state, the one-process state of the whole global batch (so rank 0's
    checkpoint holds every process's state)."""
    generator = torch.Generator().manual_seed(0)
    logits = [torch.randn(8, 5, generator=generator) * 3 for _ in range(3)]
    labels = [torch.randint(5, (6,), generator=generator) for _ in range(3)]
    for step, classes in zip(logits, labels, strict=True):
        step[:4, 0] += 5  # process 0's half of each step: class 0 over and again; process 1's: any class
        classes[:3] = 0  # process 0's labelled half: class 0 only

    def settings() -> Consistency:
        return Consistency(threshold=0.0, distribution_alignment="estimated", adaptive_threshold="freematch")

    def fit(rank: int) -> dict[str, torch.Tensor]:
        consistency = settings()
        for step, classes in zip(logits, labels, strict=True):
            consistency.loss(step[rank * 4 : (rank + 1) * 4], torch.zeros(4, 5), classes[rank * 3 : (rank + 1) * 3])
        return consistency.state_dict()

    alone, whole = fit(0), settings()  # no process group: its own batches' means; the global batch's
    for step, classes in zip(logits, labels, strict=True):
        whole.loss(step, torch.zeros(8, 5), classes)
    group = TwoProcessGroup()
    group.install(monkeypatch)
    first, second = group.run(fit)
    assert first.keys() == second.keys() == whole.state_dict().keys() == {*RUNNING_MEANS}
    for name, value in whole.state_dict().items():
        assert torch.equal(first[name], second[name]), name
        torch.testing.assert_close(first[name], value, rtol=0, atol=1e-6, msg=name)
        if name != "source_batches":  # a count of steps, the same in one process or two
            assert not torch.allclose(alone[name], value, atol=1e-3), name


class RecordShares(L.Callback):
    """Test helper for a multi-process ``cmap fit``: each process writes ``folder/rank<r>.json``: its
    steps and unlabelled series per epoch, its samplers, the unlabelled rows of each epoch and its
    consistency running means."""

    def __init__(self, folder: str) -> None:
        self.folder, self.steps, self.unlabelled = folder, {}, {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        epoch = trainer.current_epoch
        self.steps[epoch] = self.steps.get(epoch, 0) + 1
        self.unlabelled[epoch] = self.unlabelled.get(epoch, 0) + len(batch["unlabelled"]["values"])

    def on_train_end(self, trainer, pl_module) -> None:
        loaders = trainer.train_dataloader  # the CombinedLoader's, as Lightning prepared them
        sampler = loaders["unlabelled"].sampler
        rows = []
        for epoch in range(trainer.current_epoch):  # each epoch's draw again (set_epoch, as Lightning's)
            sampler.set_epoch(epoch)
            rows.append(list(sampler))
        record = {
            "steps": list(self.steps.values()), "unlabelled": list(self.unlabelled.values()),
            "labelled_share": len(loaders["labelled"].sampler), "sampler": type(sampler).__name__, "rows": rows,
            "means": {name: value.tolist() for name, value in pl_module.consistency.state_dict().items()},
        }  # fmt: skip
        (Path(self.folder) / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def test_a_two_process_fit_takes_every_labelled_series_and_its_unlabelled_share(stores, tmp_path):
    """``cmap fit`` on 2 CPU processes (Lightning DDP, gloo), every labelled training series (1,360)
    in batches of 64 and 4 unlabelled series per labelled one, from a store of 1,892: each process
    takes its 680 labelled series (10 steps) and 2,720 unlabelled ones an epoch, different ones in
    each process and each epoch; both end with the same running means. (Lightning's replacement of a
    ``RandomSampler(num_samples=...)`` gave each process 946 unlabelled series an epoch, 3 steps,
    where the ``CombinedLoader`` stopped: 30 % of the labelled series; and each process its own means.)"""
    labelled, area, class_names = stores
    consistency = {"threshold": 0.0, "distribution_alignment": "estimated", "adaptive_threshold": "freematch"}
    model = tiny_classifier_config(
        len(class_names), tiny_encoder_config(BANDS, max_len=400, dim_feedforward=32), consistency=consistency
    )
    data = {"path": str(labelled), "fold": 0, "batch_size": 64, "unlabelled": str(area), "unlabelled_ratio": 4}
    record = {"class_path": "tests.test_consistency.RecordShares", "init_args": {"folder": str(tmp_path)}}
    trainer = {
        "strategy": "ddp", "accelerator": "cpu", "devices": 2, "max_epochs": 2, "limit_val_batches": 0,
        "enable_checkpointing": False, "enable_progress_bar": False,
        "enable_model_summary": False, "default_root_dir": str(tmp_path / "run"), "callbacks": [record],
    }  # fmt: skip
    config = {
        "seed_everything": 0, "trainer": trainer, "model": model,
        "data": {"class_path": "cmap.data.SeriesStore", "init_args": data},
        "attention_maps": {"first_epoch": 1000}, "embeddings": {"first_epoch": 1000},
    }  # fmt: skip
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    # Same number of threads as this process; run from the repository, so tests.test_consistency imports.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "cmap.cli", "fit", "--config", str(tmp_path / "config.yaml")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    first, second = (json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2))
    for process in (first, second):
        assert process["sampler"] == "RowStream"  # the data module's: Lightning left it as it is
        assert process["labelled_share"] == 680 and process["steps"] == [10, 10]  # 680 // 64
        assert process["unlabelled"] == [10 * 4 * 64] * 2 and [len(rows) for rows in process["rows"]] == [2720] * 2
    assert first["rows"][0] != second["rows"][0] and first["rows"][0] != first["rows"][1]
    stream = first["rows"][0] + second["rows"][0] + first["rows"][1] + second["rows"][1]
    for start in range(0, len(stream) - 1892, 1892):  # every unlabelled series once before any again
        assert sorted(stream[start : start + 1892]) == list(range(1892))
    assert first["means"].keys() == {*RUNNING_MEANS}
    assert first["means"] == second["means"]  # all-reduced: rank 0's checkpoint holds every process's state


def test_a_classifier_trains_with_consistency_on_a_streaming_store(stores):
    labelled, area, class_names = stores
    encoder = tiny_encoder_config(BANDS, max_len=400, dim_feedforward=32)
    consistency = Consistency(threshold=0.0, teacher_decay=0.5, adaptive_threshold="global")
    model = tiny_classifier(len(class_names), encoder, consistency=consistency)
    trainer = quiet_trainer(max_steps=2, limit_val_batches=1)
    trainer.fit(model, streaming(labelled, area, unlabelled_ratio=2))
    metrics = trainer.callback_metrics
    assert trainer.global_step == 2 and metrics["train/pseudo_label_fraction"].item() == 1.0
    assert 0 < metrics["train/pseudo_label_threshold"].item() < 0.1  # from 0, 1 % of the way to ~1/9 per step
    assert np.isfinite(metrics["train/loss"].item()) and metrics["train/consistency_loss"].item() > 0


def wrong_bands(folder, class_names):
    from cmap.data.series import PixelSeries

    path = folder / "two_bands"
    if not path.exists():
        series = PixelSeries(np.zeros((4, 3, 2), np.float32), np.tile(np.arange(3) * 16, (4, 1)), None, "two bands")
        write_store(path, series, ["a", "b"], [])
    return path


def test_a_classifier_trains_on_labelled_and_unlabelled_series_and_needs_them(stores):
    labelled, area, class_names = stores
    encoder = tiny_encoder_config(BANDS, max_len=400, dim_feedforward=32)
    model = tiny_classifier(len(class_names), encoder, consistency=Consistency(threshold=0.0, teacher_decay=0.5))
    before = [p.detach().clone() for p in model.parameters()]
    trainer = quiet_trainer(max_steps=4, limit_val_batches=1)
    trainer.fit(model, few_labels(labelled, area))
    metrics = trainer.callback_metrics
    assert np.isfinite(metrics["train/loss"].item()) and metrics["train/pseudo_label_fraction"].item() == 1.0
    assert metrics["train/consistency_loss"].item() > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert "teacher" not in "".join(model.state_dict())  # not among the weights (checkpoints carry it apart)
    data = few_labels(labelled, area)
    data.setup("fit")
    step, _, _ = next(iter(data.train_dataloader()))
    step["unlabelled"]["days"][0, 0] = 10_000  # beyond the date encoding: checked on the CPU, as a plain batch
    with pytest.raises(ValueError, match="day offsets"):
        model.on_before_batch_transfer(step, 0)

    plain = SeriesStore(str(labelled), fold=0, labels_per_class=4, batch_size=8)
    with pytest.raises(ValueError, match="unlabelled"):
        quiet_trainer(max_steps=1, limit_val_batches=0).fit(
            tiny_classifier(len(class_names), encoder, consistency=Consistency()), plain
        )
    with pytest.raises(ValueError, match="mixing and consistency"):
        from cmap.data.perturbations import SeriesMixing

        tiny_classifier(len(class_names), encoder, consistency=Consistency(), mixing=SeriesMixing())


def test_cmap_fit_reads_consistency_and_the_unlabelled_store_from_a_config(stores, tmp_path):
    from cmap.cli import main as cmap_main

    labelled, area, class_names = stores
    model = tiny_classifier_config(
        len(class_names), tiny_encoder_config(BANDS, max_len=400, dim_feedforward=32), max_lr=0.001,
        consistency={"threshold": 0.5, "date_dropout": 0.1},
    )  # fmt: skip
    data = {
        "class_path": "cmap.data.SeriesStore",
        "init_args": {"path": str(labelled), "fold": 0, "labels_per_class": 4, "batch_size": 8,
                      "unlabelled": str(area), "unlabelled_ratio": 2},
    }  # fmt: skip
    config = {
        "trainer": {"max_steps": 2, "default_root_dir": str(tmp_path), "enable_progress_bar": False,
                    "limit_val_batches": 1},
        "model": model, "data": data,
    }  # fmt: skip
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    cmap_main(["fit", "--config", str(tmp_path / "config.yaml")])
    checkpoint = next(tmp_path.glob("lightning_logs/version_*/checkpoints/*.ckpt"))
    hparams = torch.load(checkpoint, map_location="cpu", weights_only=False)["hyper_parameters"]
    # the config's block, saved as given; the run's steps used it as a Consistency (a dict has no views)
    assert hparams["consistency"]["threshold"] == 0.5 and hparams["consistency"]["date_dropout"] == 0.1


def test_the_few_labels_config_trains_on_ucr_crop_stores(ucr_root, tmp_path):
    """configs/few_labels_ucr_crop.yaml as written, on small stores of UCR Crop's training and test series."""
    from cmap.data.convert import read_ucr
    from cmap.lightning_cli import CMapCLI

    from .conftest import CONFIGS

    stores = {}
    for split, size in (("TRAIN", 24 * 20), ("TEST", 300)):
        converted = read_ucr(ucr_root / f"Crop_{split}.tsv")
        rows = np.random.default_rng(0).choice(len(converted.series), size, replace=False)
        stores[split] = tmp_path / split
        write_store(stores[split], converted.series.subset(np.sort(rows)), converted.band_names, converted.class_names)
    cli = CMapCLI(
        args=["fit", "--config", str(CONFIGS / "few_labels_ucr_crop.yaml"), "--trainer.fast_dev_run", "2",
              "--data.init_args.path", str(stores["TRAIN"]), "--data.init_args.test_path", str(stores["TEST"]),
              "--data.init_args.unlabelled", str(stores["TEST"]), "--trainer.default_root_dir", str(tmp_path),
              "--trainer.enable_progress_bar", "false"]
    )  # fmt: skip
    assert cli.trainer.global_step == 2
    assert cli.model.consistency.threshold == 0.6 and cli.datamodule.hparams.labels_per_class == 10
    assert "train/pseudo_label_fraction" in cli.trainer.callback_metrics


class RecordRunningState(L.Callback):
    """The consistency state a fit starts its training with (after a checkpoint's is restored)."""

    def on_train_start(self, trainer, pl_module) -> None:
        teacher = pl_module.__dict__.get("teacher")
        self.state = {name: value.clone() for name, value in pl_module.consistency.state_dict().items()}
        self.teacher = None if teacher is None else {k: v.clone() for k, v in teacher.state_dict().items()}


def consistency_fit(config, root, *extra: str):
    from cmap.lightning_cli import CMapCLI

    quiet = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    record = "--trainer.callbacks+=" + json.dumps({"class_path": "tests.test_consistency.RecordRunningState"})
    root_dir = ["--trainer.default_root_dir", str(root)]
    return CMapCLI(args=["fit", "--config", str(config), *root_dir, *quiet, record, *extra])


def final_consistency_state(cli) -> dict[str, torch.Tensor]:
    model = cli.model
    state = {f"model.{k}": v.clone() for k, v in model.state_dict().items()}
    state |= {f"teacher.{k}": v.clone() for k, v in model.__dict__["teacher"].state_dict().items()}
    return state | {f"means.{k}": v.clone() for k, v in model.consistency.state_dict().items()}


@pytest.mark.parametrize("module", ["SeriesStore", "StreamingSeriesStore"])
def test_a_resumed_consistency_fit_restores_its_teacher_and_running_means(stores, tmp_path, module):
    """A fit resumed from its epoch-0 checkpoint ends as the uninterrupted fit (as the SIGKILL test of
    tests/test_reliability.py); from the same checkpoint without the state (one written before it
    was saved), it still resumes, but the teacher starts from the model and the means afresh."""
    from cmap.ml.classifiers import CONSISTENCY_KEY

    labelled, area, class_names = stores
    # SeriesStore: issue 29's options too (the labelled classes' running state, random phenology stretches)
    alignment, stretch = ("estimated", 0.1) if module == "SeriesStore" else (True, 0.0)
    consistency = {"teacher_decay": 0.9, "distribution_alignment": alignment, "adaptive_threshold": "freematch",
                   "time_stretch": stretch}  # fmt: skip
    model = tiny_classifier_config(
        len(class_names), tiny_encoder_config(BANDS, max_len=400, dim_feedforward=32), max_lr=0.01,
        consistency=consistency,
    )  # fmt: skip
    init_args = {"path": str(labelled), "fold": 0, "batch_size": 8, "unlabelled": str(area), "unlabelled_ratio": 2,
                 "augmentation": {"band_noise": 0.05, "time_stretch": stretch}}  # fmt: skip
    if module == "SeriesStore":
        init_args["labels_per_class"] = 4  # 36 labelled series in batches of 8: 4 steps an epoch
    trainer = {"max_epochs": 2, "limit_train_batches": 4, "limit_val_batches": 1, "deterministic": True}
    every_epoch = {"class_path": "ModelCheckpoint", "init_args": {"save_top_k": -1, "every_n_epochs": 1}}
    config = {
        "seed_everything": 0,
        "trainer": {**trainer, "callbacks": [every_epoch]},
        "model": model, "data": {"class_path": f"cmap.data.{module}", "init_args": init_args},
        "attention_maps": {"first_epoch": 1000}, "embeddings": {"first_epoch": 1000},
    }  # fmt: skip
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    uninterrupted = consistency_fit(tmp_path / "config.yaml", tmp_path / "uninterrupted")
    steps = uninterrupted.trainer.global_step
    assert steps == 8
    expected = final_consistency_state(uninterrupted)
    checkpoint_path = tmp_path / "uninterrupted/lightning_logs/version_0/checkpoints/epoch=0-step=4.ckpt"
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)  # plain tensors
    saved = checkpoint[CONSISTENCY_KEY]
    source_prior = {"source_class_mean", "source_batches"} if alignment == "estimated" else set()
    assert set(saved) == {"class_mean", "adaptive_level", "adaptive_class_mean", "teacher"} | source_prior
    assert not any("teacher" in key for key in checkpoint["state_dict"])  # the weights are a Classifier's

    resumed = consistency_fit(tmp_path / "config.yaml", tmp_path / "resumed", "--ckpt_path", str(checkpoint_path))
    record = next(c for c in resumed.trainer.callbacks if isinstance(c, RecordRunningState))
    assert record.state.keys() == {k: v for k, v in saved.items() if k != "teacher"}.keys()
    for name, value in record.state.items():
        assert torch.equal(value, saved[name]), name
    assert record.teacher.keys() == saved["teacher"].keys()
    for name, value in record.teacher.items():
        assert torch.equal(value, saved["teacher"][name]), name
    assert resumed.trainer.global_step == steps
    # Same batches, views and pseudo-labels: the same end, to float precision.
    state = final_consistency_state(resumed)
    assert state.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(state[name], value, rtol=0, atol=1e-6, msg=name)

    del checkpoint[CONSISTENCY_KEY]
    torch.save(checkpoint, tmp_path / "old.ckpt")
    old = consistency_fit(tmp_path / "config.yaml", tmp_path / "old", "--ckpt_path", str(tmp_path / "old.ckpt"))
    record = next(c for c in old.trainer.callbacks if isinstance(c, RecordRunningState))
    assert record.state == {} and record.teacher is None  # made afresh at the first step
    assert old.trainer.global_step == steps
    state = final_consistency_state(old)
    assert any(not torch.allclose(state[name], value, atol=1e-6) for name, value in expected.items())


def test_checkpoints_of_a_classifier_without_consistency_hold_no_consistency_state():
    from cmap.ml.classifiers import CONSISTENCY_KEY

    checkpoint = {}
    tiny_classifier(3).on_save_checkpoint(checkpoint)
    assert CONSISTENCY_KEY not in checkpoint
    checkpoint = {}
    tiny_classifier(3, consistency=Consistency()).on_save_checkpoint(checkpoint)
    assert checkpoint[CONSISTENCY_KEY] == {}  # before the first step: nothing to restore
