"""Few labels: does pretraining on the pixels to be mapped pay off? (UCR Crop, Mato Grosso)

Protocol (issue 18):

- **Pretraining** of the encoder without labels (``--objective``: masked reconstruction with an
  AutoEncoder and one of its maskings, per date or through TempCNN's dense head (``bottleneck``),
  or ContrastivePretraining), once per dataset and arm, then cached in ``--workdir`` and reused by
  every draw:

  - ``area`` (the *mapping setting*): on every series of the area, labels never read. UCR Crop:
    the inputs of the 7,200 training and the 16,800 test series; Mato Grosso: the 1,892 samples.
  - ``train``: on the inputs of the training series only (UCR Crop's 7,200).

- **Fine-tuning** on ``--labels`` labelled series per class, for ``--draws`` label draws; draw ``d``
  draws its labelled subset of the training series with seed ``d`` and trains with seed ``d``.
  UCR Crop: the subset comes from the 7,200 training series, the test set is the 16,800 test
  series. Mato Grosso: draw ``d`` uses cross-validation fold ``d % 5`` as in the results table
  (5 folds, stratified, seed 0): the subset comes from the other four folds, the test set is the
  fold.
- **Budget**, the same rule for every arm (a budget that grows with the label count, since there
  is no label to spare for early stopping): ``max(--min_steps, --min_epochs epochs)`` optimiser
  steps of batch ``--batch_size``, one-cycle LR. The pretrained arms may keep the encoder frozen
  for the first ``--freeze_fraction`` of those steps (linear probing, then fine-tuning).
- **From scratch**: the same classifier, randomly initialised.
- **Self-training** (arms ``area_st``, ``scratch_st``): the fine-tuned classifier labels the area's
  other series, the ``--pseudo_labels`` most confident of each predicted class join the labels, and
  a second classifier is trained on both from the same start.
- **Peers** on the same labelled series, scored on the same test set: MiniRocket, MultiRocket
  (aeon's defaults) and a random forest (300 trees), one job each (``benchmarks/peers.py``).

Every score (test overall accuracy) is appended to ``<workdir>/<dataset>_scores.jsonl`` as it is
measured and skipped when already there, so a run stopped midway resumes where it stopped; the
report (``--output``, Markdown) is rebuilt from that file: mean ± std over the draws.

    OMP_NUM_THREADS=1 python benchmarks/pretraining.py --dataset ucr_crop --threads 1
    OMP_NUM_THREADS=1 python benchmarks/pretraining.py --dataset mato_grosso --labels 10 \\
        --arms scratch area --threads 1
"""

import argparse
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from common import SHARED_DATA, machine, quiet_trainer, ucr_crop_encoder
from lightning.pytorch.utilities import CombinedLoader
from peers import TITLES, fit_predict
from torch import Tensor
from torch.utils.data import DataLoader, RandomSampler

from cmap.data import UCRCrop
from cmap.data.contract import InputContract
from cmap.data.convert import read_mato_grosso
from cmap.data.dataset import SeriesDataset, batch_loader
from cmap.data.perturbations import Augmentation, ContiguousDates, NoiseContamination, RandomDates
from cmap.data.series import PixelSeries
from cmap.data.splits import kfold_split, per_class_subset
from cmap.data.statistics import normalisation_statistics
from cmap.ml.autoencoders import AutoEncoder
from cmap.ml.classifiers import Classifier
from cmap.ml.consistency import Consistency
from cmap.ml.contrastive import ContrastivePretraining
from cmap.ml.decoders import BandReconstruction, MultiClassClassification, ProjectionHead
from cmap.ml.embeddings import PixelEncoding, PositionalEncoding
from cmap.ml.encoders import TempCNNEncoder
from cmap.ml.tempcnn import FlattenClassification

MASKINGS = {  # name -> (strategy class, default ratio of hidden or contaminated dates)
    "random_dates": (RandomDates, 0.5),
    "contiguous_dates": (ContiguousDates, 0.5),
    "noise": (NoiseContamination, 0.15),
}
#: masked reconstruction (AutoEncoder) per date, or through TempCNN's dense head ("bottleneck"), or contrastive
OBJECTIVES = [*MASKINGS, "bottleneck", "contrastive"]
#: Deep arms: from scratch, or pretrained on the area's series (the mapping setting) or the training series;
#: ``_st``: then self-training on the area's series (pseudo-labels); ``_fm``: trained with consistency
#: (FixMatch) on the area's series alongside the labels.
DEEP_ARMS = ("scratch", "area", "train", "scratch_st", "area_st", "scratch_fm", "area_fm")
PEER_ARMS = ("minirocket", "multirocket", "forest")
ARM_TITLES = {
    "scratch": "from scratch",
    "area": "pretrained, mapping setting",
    "train": "pretrained, training inputs",
    "scratch_st": "from scratch + pseudo-labels",
    "area_st": "pretrained, mapping setting, + pseudo-labels",
    "scratch_fm": "from scratch + consistency on the area",
    "area_fm": "pretrained, mapping setting, + consistency on the area",
    **{peer: TITLES[peer] for peer in PEER_ARMS},
}
MATO_GROSSO_FOLDS = 5
MATO_GROSSO_RDA = SHARED_DATA / "sits_matogrosso_mod13q1" / "br_mt_1_8K_9classes_6bands.rda"


@dataclass
class Area:
    """One dataset as this benchmark sees it: the series, their classes and normalisation."""

    name: str
    band_names: list[str]
    class_names: list[str]
    #: every labelled series the draws split into training and test
    series: PixelSeries
    #: the training and test rows of each draw (draw d -> split d % len(splits))
    splits: list[tuple[np.ndarray, np.ndarray]]
    #: rows whose inputs the ``train`` pretraining arm sees (None: that arm does not apply)
    pretraining_train_rows: np.ndarray | None
    contract: InputContract

    @property
    def num_dates(self) -> int:
        return self.series.values.shape[1]

    def split(self, draw: int) -> tuple[np.ndarray, np.ndarray]:
        return self.splits[draw % len(self.splits)]


def contract_of(series: PixelSeries, rows: np.ndarray, band_names: list[str], class_names: list[str]) -> InputContract:
    """Normalisation by the statistics of ``rows`` (inputs only: no label is read)."""
    mean, std = normalisation_statistics(series, rows)
    return InputContract(band_names, mean, std, class_names=class_names)


def ucr_crop_area(root: str | None) -> Area:
    """UCR Crop: the 7,200 training series then the 16,800 test series, one fixed split;
    normalisation by the training series (as :class:`~cmap.data.UCRCrop`)."""
    data = UCRCrop(root=root)
    train, test = data.load_train(), data.load_test()
    series = PixelSeries(
        np.concatenate([train.values, test.values]),
        np.concatenate([train.days, test.days]),
        np.concatenate([train.labels, test.labels]),
        f"{train.source} + {test.source}",
    )
    train_rows, test_rows = np.arange(len(train)), np.arange(len(train), len(series))
    contract = contract_of(series, train_rows, data.band_names, data.source_class_names)
    return Area("ucr_crop", data.band_names, data.source_class_names, series, [(train_rows, test_rows)], train_rows,
                contract)  # fmt: skip


def mato_grosso_area(path: Path = MATO_GROSSO_RDA) -> Area:
    """Mato Grosso: the 1,892 samples, 5 stratified folds (seed 0, as ``benchmarks/accuracy.py``'s
    store); normalisation by all samples (inputs only). No ``train`` pretraining arm: its training
    inputs change with the fold."""
    converted = read_mato_grosso(path)
    series = converted.series
    splits = [kfold_split(series, MATO_GROSSO_FOLDS, fold, 0) for fold in range(MATO_GROSSO_FOLDS)]
    contract = contract_of(series, np.arange(len(series)), converted.band_names, converted.class_names)
    return Area("mato_grosso", converted.band_names, converted.class_names, series, splits, None, contract)


class FlattenReconstruction(FlattenClassification):
    """Masked reconstruction through TempCNN's head: the visible dates' features, flattened, pass
    :class:`~cmap.ml.tempcnn.FlattenClassification`'s dense layer, batch norm, ReLU and dropout
    (a 256-wide code of the whole series), then a linear layer predicts every date's bands.

    Why: with few labels, TempCNN's head is most of the classifier (46 dates x 64 features x 256
    weights on UCR Crop against 61,000 in the convolutions), and a per-date reconstruction
    pretrains the convolutions only. Here the dense layer and its batch norm are pretrained too
    (named as in the classifier, so :func:`load_head` copies them).
    """

    def __init__(self, num_dates: int, num_bands: int, hidden: int = 256, dropout_p: float = 0.2) -> None:
        super().__init__(num_dates, num_classes=num_dates * num_bands, hidden=hidden, dropout_p=dropout_p)
        self.num_bands = num_bands

    def forward(self, features: Tensor, mask: Tensor) -> Tensor:
        return super().forward(features, mask).view(len(features), self.num_dates, self.num_bands)


def load_head(model: Classifier, path: Path) -> bool:
    """Copy a :class:`FlattenReconstruction` pretraining's dense layer and batch norm into ``model``'s
    :class:`~cmap.ml.tempcnn.FlattenClassification` head; False when ``path`` has none."""
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    head = {key.removeprefix("decoder."): value for key, value in state.items()
            if key.startswith(("decoder.dense.", "decoder.norm."))}  # fmt: skip
    if not head or not isinstance(model.decoder, FlattenClassification):
        return False
    missing, unexpected = model.decoder.load_state_dict(head, strict=False)
    if unexpected or any(key.startswith(("dense.", "norm.")) for key in missing):
        raise ValueError(f"{path}: the pretrained head does not fit the classifier's ({missing}, {unexpected})")
    return True


def tempcnn_encoder(num_bands: int, d_model: int = 64) -> TempCNNEncoder:
    """The encoder of ``configs/ucr_crop_tempcnn.yaml``: three convolutions of ``d_model`` filters
    (kernel 5, batch norm, ReLU, dropout 0.2) over a linear band embedding plus the date encoding."""
    return TempCNNEncoder(
        n_layers=3,
        kernel_size=5,
        dropout_p=0.2,
        position_encoder=PositionalEncoding(d_model, 1000, 1000),
        bands_encoder=PixelEncoding([num_bands, d_model]),
        d_model=d_model,
    )


def build_encoder(encoder: str, num_bands: int, d_model: int):
    if encoder == "tempcnn":
        return tempcnn_encoder(num_bands, d_model)
    if num_bands != 1:
        raise ValueError(f"the transformer encoder here is UCR Crop's (one band), got {num_bands} bands")
    return ucr_crop_encoder(d_model)


def build_classifier(area: Area, encoder: str, d_model: int, label_smoothing: float = 0.1,
                     classifier_type: type[Classifier] = Classifier, **options) -> Classifier:  # fmt: skip
    """TempCNN: its flatten + dense head (fixed date grid; 0.784 with UCR Crop's 7,200 labels);
    transformer: the masked-mean head of ``configs/ucr_crop_transformer.yaml``. ``classifier_type``:
    a Classifier subclass (a probe's variant, ``few_labels_probes.py``)."""
    num_classes = len(area.class_names)
    if encoder == "tempcnn":
        decoder = FlattenClassification(area.num_dates, num_classes, hidden=256, dropout_p=0.2)
    else:
        decoder = MultiClassClassification(hidden=d_model, num_classes=num_classes, dropout_p=0.1)
    model = classifier_type(
        build_encoder(encoder, len(area.band_names), d_model), decoder, focal_gamma=0.0,
        label_smoothing=label_smoothing, class_names=area.class_names, **options,
    )  # fmt: skip
    model.set_input_contract(area.contract)
    return model


def pretrain(area: Area, rows: np.ndarray, encoder: str, d_model: int, objective: str, epochs: int, output: Path,
             mask_ratio: float | None = None) -> Path:  # fmt: skip
    """Pretrain an encoder on the inputs of ``rows`` (labels dropped before anything reads them)."""
    L.seed_everything(0)
    inputs = PixelSeries(area.series.values, area.series.days, None, area.series.source)
    dataset = SeriesDataset(inputs, rows, area.contract)
    num_bands = len(area.band_names)
    if objective == "contrastive":
        # Negatives come from the batch: a larger one than reconstruction needs.
        model = ContrastivePretraining(
            build_encoder(encoder, num_bands, d_model), ProjectionHead([d_model, d_model, 32]), max_lr=2e-3
        )
        batch_size = 256
    elif objective == "bottleneck":
        if encoder != "tempcnn":
            raise ValueError(f"the bottleneck objective pretrains TempCNN's head, not a {encoder}'s")
        model = AutoEncoder(
            build_encoder(encoder, num_bands, d_model), FlattenReconstruction(area.num_dates, num_bands),
            RandomDates(mask_ratio or 0.5), max_lr=2e-3,
        )  # fmt: skip
        batch_size = 128
    else:
        strategy, default_ratio = MASKINGS[objective]
        model = AutoEncoder(
            build_encoder(encoder, num_bands, d_model), BandReconstruction([d_model, num_bands]),
            strategy(mask_ratio or default_ratio), max_lr=2e-3,
        )  # fmt: skip
        batch_size = 128
    model.set_input_contract(area.contract)
    trainer = quiet_trainer(max_epochs=epochs)
    loader = batch_loader(dataset, min(batch_size, len(rows)), shuffle=True, drop_last=True)
    fit_without_validation(trainer, model, loader)
    temporary = output.with_name(output.name + ".tmp")
    trainer.save_checkpoint(temporary)
    os.replace(temporary, output)
    return output


def budget_steps(num_labelled: int, batch_size: int, min_steps: int, min_epochs: int) -> int:
    """Optimiser steps of one fine-tuning: at least ``min_steps``, and at least ``min_epochs`` passes
    over the labelled series (so the budget grows with the label count)."""
    steps_per_epoch = -(-num_labelled // batch_size)
    return max(min_steps, min_epochs * steps_per_epoch)


def labelled_rows(area: Area, labels_per_class: int, draw: int) -> np.ndarray:
    """The labelled training rows of ``draw``: ``labels_per_class`` per class, drawn with seed ``draw``."""
    train_rows, _ = area.split(draw)
    return train_rows[per_class_subset(area.series.labels[train_rows], labels_per_class, draw)]


@torch.inference_mode()
def overall_accuracy(model: Classifier, area: Area, rows: np.ndarray, batch_size: int = 2048) -> float:
    model.eval()
    correct = 0
    for batch in batch_loader(SeriesDataset(area.series, rows, area.contract), batch_size):
        predicted = model(batch["values"], batch["days"], batch["mask"]).argmax(-1)
        correct += int((predicted == batch["label"]).sum())
    return correct / len(rows)


@torch.inference_mode()
def pseudo_labels(model: Classifier, area: Area, rows: np.ndarray, per_class: int,
                  batch_size: int = 2048) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The ``per_class`` series of ``rows`` predicted with the highest probability for each class,
    and those predictions: class-balanced, so that the classes the model favours do not crowd out the others."""
    model.eval()
    inputs = PixelSeries(area.series.values, area.series.days, None, area.series.source)  # labels never read
    probabilities = torch.cat([
        model(batch["values"], batch["days"], batch["mask"]).softmax(-1)
        for batch in batch_loader(SeriesDataset(inputs, rows, area.contract), batch_size)
    ])  # fmt: skip
    confidence, predicted = probabilities.max(-1)
    chosen = []
    for label in range(len(area.class_names)):
        members = torch.nonzero(predicted == label).squeeze(1)
        chosen.append(members[confidence[members].argsort(descending=True)[:per_class]])
    chosen = torch.cat(chosen).numpy()
    return rows[chosen], predicted.numpy()[chosen]


def finetune(area: Area, labels_per_class: int, draw: int, encoder: str, d_model: int, encoder_from: Path | None,
             args: argparse.Namespace, self_training: bool = False, consistency: bool = False) -> float:  # fmt: skip
    """Test overall accuracy of a classifier trained on ``draw``'s labelled series (from ``encoder_from``
    or from scratch) under the budget rule.

    ``self_training``: then label ``--pseudo_labels`` series per class among the area's other series
    with that classifier (the most confident of each predicted class), and train a second one, from
    ``encoder_from`` again, on the labelled and pseudo-labelled series (the budget rule on their
    count). The test series are part of the area (their inputs, never their labels), as every
    pixel of a map is.

    ``consistency``: train with :class:`~cmap.ml.consistency.Consistency` (FixMatch) on all the
    area's series (labels never read) alongside the labelled ones.
    """
    L.seed_everything(draw)
    rows = labelled_rows(area, labels_per_class, draw)
    model = train_classifier(area, rows, area.series.labels[rows], encoder, d_model, encoder_from, args, consistency)
    if self_training:
        others = np.setdiff1d(np.arange(len(area.series)), rows)
        extra_rows, extra_labels = pseudo_labels(model, area, others, args.pseudo_labels)
        L.seed_everything(draw)
        model = train_classifier(
            area, np.concatenate([rows, extra_rows]), np.concatenate([area.series.labels[rows], extra_labels]),
            encoder, d_model, encoder_from, args,
        )  # fmt: skip
    return overall_accuracy(model, area, area.split(draw)[1])


def train_classifier(area: Area, rows: np.ndarray, labels: np.ndarray, encoder: str, d_model: int,
                     encoder_from: Path | None, args: argparse.Namespace, consistency: bool | Consistency = False,
                     classifier_type: type[Classifier] = Classifier) -> Classifier:  # fmt: skip
    """A classifier trained on the series ``rows`` with ``labels`` under the budget rule; with
    ``consistency`` (True: the options' :class:`Consistency`, or one given), each step also takes
    ``--mu`` times as many of the area's series, unlabelled."""
    training = PixelSeries(area.series.values[rows], area.series.days[rows], labels, area.series.source)
    steps = budget_steps(len(rows), args.batch_size, args.min_steps, args.min_epochs)
    steps_per_epoch = -(-len(rows) // args.batch_size)
    pretrained = encoder_from is not None
    model = build_classifier(
        area, encoder, d_model, min_lr=1e-5, max_lr=args.max_lr,
        init_encoder_from=str(encoder_from) if pretrained else None,
        encoder_lr_factor=args.encoder_lr_factor if pretrained else 1.0,
        freeze_encoder_epochs=round(args.freeze_fraction * steps / steps_per_epoch) if pretrained else 0,
        consistency=(consistency_of(args) if consistency is True else consistency) or None,
        label_smoothing=args.label_smoothing, classifier_type=classifier_type,
    )  # fmt: skip
    if pretrained:
        load_head(model, encoder_from)  # a bottleneck pretraining's dense layer; none for the others
    augmentation = Augmentation(band_noise=args.band_noise)
    dataset = SeriesDataset(training, np.arange(len(rows)), area.contract, augmentation)
    trainer = quiet_trainer(max_steps=steps, max_epochs=-1, limit_val_batches=0)
    loader = batch_loader(dataset, args.batch_size, shuffle=True)
    if consistency:
        loader = CombinedLoader({"labelled": loader, "unlabelled": unlabelled_loader(area, len(rows), args)})
    # Lightning calls the model's setup, which loads the pretrained encoder weights.
    fit_without_validation(trainer, model, loader)
    return model


def consistency_of(args: argparse.Namespace) -> Consistency:
    return Consistency(
        threshold=args.threshold, weight=args.consistency_weight, weak_noise=args.band_noise,
        min_crop=args.strong_crop, date_dropout=args.strong_dropout, band_noise=args.strong_noise,
        scale=args.strong_scale, teacher_decay=args.teacher_decay, distribution_alignment=args.distribution_alignment,
        adaptive_threshold=args.adaptive_threshold, adaptive_momentum=args.adaptive_momentum,
        temperature=args.temperature, max_shift=args.strong_shift,
    )  # fmt: skip


def unlabelled_loader(area: Area, num_labelled: int, args: argparse.Namespace) -> DataLoader:
    """Every series of the area, labels dropped, in batches ``--mu`` times the labelled ones: as many
    batches per epoch as the labelled series give (``--mu`` x their count, drawn without replacement)."""
    inputs = PixelSeries(area.series.values, area.series.days, None, area.series.source)
    dataset = SeriesDataset(inputs, np.arange(len(inputs)), area.contract)
    sampler = RandomSampler(dataset, num_samples=args.mu * num_labelled)
    return batch_loader(dataset, args.mu * args.batch_size, sampler=sampler)


def fit_without_validation(trainer: L.Trainer, model: L.LightningModule, loader: DataLoader) -> None:
    """``trainer.fit`` on ``loader`` alone: pretraining has no labels to validate on and fine-tuning
    spares none of its few, so Lightning's warning about the missing validation loader is expected."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "You defined a `validation_step` but have no `val_dataloader`")
        trainer.fit(model, train_dataloaders=loader)


def peer_accuracy(area: Area, labels_per_class: int, draw: int, peer: str) -> float:
    train_rows, test_rows = area.split(draw)
    rows = labelled_rows(area, labels_per_class, draw)
    run = fit_predict(peer, area.series.subset(rows), area.series.subset(test_rows), seed=draw)
    return float((run.predictions == area.series.labels[test_rows]).mean())


def record_key(record: dict) -> tuple:
    return record["labels_per_class"], record["draw"], record["arm"]


def read_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_record(path: Path, record: dict) -> None:
    """One JSON line per score; a line is appended whole (flushed and synced) or not at all."""
    with path.open("a") as file:
        file.write(json.dumps(record) + "\n")
        file.flush()
        os.fsync(file.fileno())


def report(records: list[dict], settings: str) -> str:
    """Markdown: one row per label count, one column per arm (mean ± std over the draws, with their
    count), and the gains of the arms that use the area's unlabelled series over scratch and over the
    best peer."""
    arms = [arm for arm in (*DEEP_ARMS, *PEER_ARMS) if any(r["arm"] == arm for r in records)]
    gainers = [arm for arm in ("area", "scratch_fm", "area_fm") if arm in arms]
    gains = [f"{arm} - {other}" for arm in gainers for other in ("scratch", "best peer")]
    header = ["labels per class", *(ARM_TITLES[arm] for arm in arms), *gains]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for labels in sorted({r["labels_per_class"] for r in records}):
        scores = {
            arm: np.array([r["accuracy"] for r in records if r["labels_per_class"] == labels and r["arm"] == arm])
            for arm in arms
        }
        cells = [f"{s.mean():.4f} ± {s.std():.4f} ({len(s)})" if len(s) else "-" for s in scores.values()]
        scratch = scores.get("scratch", np.array([]))
        peers = [scores[arm].mean() for arm in PEER_ARMS if arm in scores and len(scores[arm])]
        for arm in gainers:
            mine = scores[arm]
            cells.append(f"{100 * (mine.mean() - scratch.mean()):+.1f}" if len(mine) and len(scratch) else "-")
            cells.append(f"{100 * (mine.mean() - max(peers)):+.1f}" if len(mine) and peers else "-")
        lines.append(f"| {labels} | " + " | ".join(cells) + " |")
    return "\n".join([settings, "", *lines])


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=["ucr_crop", "mato_grosso"], default="ucr_crop")
    parser.add_argument("--root", default=None, help="UCR Crop: folder with Crop_TRAIN.tsv / Crop_TEST.tsv")
    parser.add_argument("--labels", type=int, nargs="+", default=[10, 30, 100], help="labelled series per class")
    parser.add_argument("--draws", type=int, default=5, help="label draws (seeds 0..draws-1)")
    parser.add_argument("--arms", nargs="+", choices=[*DEEP_ARMS, *PEER_ARMS], default=[*DEEP_ARMS, *PEER_ARMS])
    parser.add_argument("--train_arm_labels", type=int, nargs="+", default=None,
                        help="label counts at which the `train` pretraining arm runs (default: all)")  # fmt: skip
    parser.add_argument("--encoder", choices=["tempcnn", "transformer"], default="tempcnn")
    parser.add_argument("--d_model", type=int, default=64)
    parser.add_argument("--objective", choices=OBJECTIVES, default="random_dates", help="masking, or contrastive")
    parser.add_argument("--mask_ratio", type=float, default=None, help="masking objectives: 0.5 (dates), 0.15 (noise)")
    parser.add_argument("--pretrain_epochs", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=32, help="fine-tuning batch")
    parser.add_argument("--min_steps", type=int, default=500, help="budget: at least this many steps")
    parser.add_argument("--min_epochs", type=int, default=20, help="budget: at least this many epochs")
    parser.add_argument("--max_lr", type=float, default=3e-3)
    parser.add_argument("--band_noise", type=float, default=0.03, help="fine-tuning augmentation")
    parser.add_argument("--label_smoothing", type=float, default=0.1, help="fine-tuning loss")
    parser.add_argument("--encoder_lr_factor", type=float, default=1.0, help="pretrained encoder's LR fraction")
    parser.add_argument("--freeze_fraction", type=float, default=0.0,
                        help="pretrained arms: encoder frozen for this fraction of the steps (in epochs)")  # fmt: skip
    parser.add_argument("--pseudo_labels", type=int, default=50, help="self-training arms: pseudo-labels per class")
    parser.add_argument("--st_labels", type=int, nargs="+", default=None,
                        help="label counts at which the self-training arms run (default: all)")  # fmt: skip
    parser.add_argument("--mu", type=int, default=4, help="consistency arms: unlabelled series per labelled one")
    parser.add_argument("--threshold", type=float, default=0.6, help="consistency arms: pseudo-label confidence")
    parser.add_argument("--consistency_weight", type=float, default=1.0, help="consistency arms: lambda_u")
    parser.add_argument("--strong_crop", type=float, default=1.0, help="strong view: shortest run of dates kept")
    parser.add_argument("--strong_dropout", type=float, default=0.1, help="strong view: date dropout")
    parser.add_argument("--strong_noise", type=float, default=0.05, help="strong view: band noise")
    parser.add_argument("--strong_scale", type=float, default=0.1, help="strong view: amplitude scaling +-")
    parser.add_argument("--teacher_decay", type=float, default=0.0,
                        help="consistency arms: pseudo-labels of an EMA teacher, this decay (0: none)")  # fmt: skip
    parser.add_argument("--distribution_alignment", action="store_true", help="consistency arms: ReMixMatch's DA")
    parser.add_argument(
        "--adaptive_threshold",
        choices=["global", "freematch"],
        default=None,
        help="consistency arms: the threshold follows the model's mean confidence from --threshold (global), or "
        "FreeMatch's self-adaptive thresholds (freematch)",
    )
    parser.add_argument("--adaptive_momentum", type=float, default=0.99, help="adaptive thresholds' running means")
    parser.add_argument("--strong_shift", type=int, default=0, help="strong view: date positions moved +-")
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.0,
        help="consistency arms: soft targets sharpened at this temperature (0: hard pseudo-labels)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--workdir", type=Path, default=Path("runs/pretraining"))
    parser.add_argument("--tag", default="", help="suffix of the scores file: a variant's scores kept apart")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="report: arms this file lacks (scratch, peers) from this scores file")  # fmt: skip
    parser.add_argument("--output", type=Path, default=None, help="Markdown report (default: print only)")
    parser.add_argument("--report_only", action="store_true", help="no pretraining nor run: the table of the scores")
    return parser


def main() -> None:
    args = argument_parser().parse_args()
    torch.set_float32_matmul_precision("high")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    area = ucr_crop_area(args.root) if args.dataset == "ucr_crop" else mato_grosso_area()
    start = time.perf_counter()

    ratio = f"_ratio{args.mask_ratio}" if args.mask_ratio else ""
    checkpoints = {}
    for arm in ("area", "train"):
        rows = np.arange(len(area.series)) if arm == "area" else area.pretraining_train_rows
        if not {arm, f"{arm}_st", f"{arm}_fm"} & set(args.arms) or rows is None or args.report_only:
            continue
        name = f"{area.name}_{arm}_{args.encoder}{args.d_model}_{args.objective}{ratio}_{args.pretrain_epochs}ep.ckpt"
        checkpoints[arm] = args.workdir / name
        if checkpoints[arm].exists():
            print(f"pretraining {arm}: reused {checkpoints[arm]}", flush=True)
            continue
        began = time.perf_counter()
        pretrain(area, rows, args.encoder, args.d_model, args.objective, args.pretrain_epochs, checkpoints[arm],
                 args.mask_ratio)  # fmt: skip
        print(f"pretraining {arm} ({len(rows)} series): {(time.perf_counter() - began) / 60:.1f} min", flush=True)

    suffix = f"_{args.tag}" if args.tag else ""
    scores = args.workdir / f"{area.name}_{args.encoder}{args.d_model}_{args.objective}{ratio}{suffix}_scores.jsonl"
    done = {record_key(r) for r in read_records(scores)}
    for labels in [] if args.report_only else args.labels:
        for draw in range(args.draws):
            for arm in args.arms:
                source = arm.removesuffix("_st").removesuffix("_fm")  # where the encoder starts
                if (labels, draw, arm) in done or (source in ("area", "train") and source not in checkpoints):
                    continue
                if arm == "train" and args.train_arm_labels is not None and labels not in args.train_arm_labels:
                    continue
                if arm.endswith("_st") and args.st_labels is not None and labels not in args.st_labels:
                    continue
                began = time.perf_counter()
                if arm in PEER_ARMS:
                    accuracy = peer_accuracy(area, labels, draw, arm)
                else:
                    accuracy = finetune(area, labels, draw, args.encoder, args.d_model, checkpoints.get(source), args,
                                        self_training=arm.endswith("_st"), consistency=arm.endswith("_fm"))  # fmt: skip
                seconds = time.perf_counter() - began
                append_record(scores, {"labels_per_class": labels, "draw": draw, "arm": arm, "accuracy": accuracy,
                                       "seconds": round(seconds, 1)})  # fmt: skip
                print(f"{area.name} labels/class {labels} draw {draw} {arm}: {accuracy:.4f} ({seconds:.0f} s)",
                      flush=True)  # fmt: skip

    records = own = read_records(scores)
    if args.baseline is not None:
        arms = {r["arm"] for r in records}
        records = own + [r for r in read_records(args.baseline) if r["arm"] not in arms and r["labels_per_class"] in
                    {r["labels_per_class"] for r in records}]  # fmt: skip
    settings = (
        f"{area.name}: encoder {args.encoder} d_model {args.d_model}; pretraining `{args.objective}`{ratio}, "
        f"{args.pretrain_epochs} epochs; fine-tuning batch {args.batch_size}, max({args.min_steps} steps, "
        f"{args.min_epochs} epochs), max_lr {args.max_lr}, band noise {args.band_noise}, label smoothing "
        f"{args.label_smoothing}, pretrained encoder LR x{args.encoder_lr_factor}, frozen for the first "
        f"{args.freeze_fraction:.0%}. Scores: `{scores}` "
        f"(seconds per run summed: {sum(r['seconds'] for r in own) / 60:.1f} min; this call "
        f"{(time.perf_counter() - start) / 60:.1f} min; {machine()})."
        + (
            f" Consistency arms: mu {args.mu}, threshold {args.threshold}, lambda_u {args.consistency_weight}, "
            f"strong view: crop >= {args.strong_crop}, date dropout {args.strong_dropout}, band noise "
            f"{args.strong_noise}, scale +-{args.strong_scale}, shift +-{args.strong_shift}; "
            f"EMA teacher decay {args.teacher_decay}"
            f"{'; distribution alignment' if args.distribution_alignment else ''}"
            f"{f'; adaptive threshold {args.adaptive_threshold}' if args.adaptive_threshold else ''}"
            f"{f', momentum {args.adaptive_momentum}' if args.adaptive_threshold else ''}"
            f"{f'; soft targets, temperature {args.temperature}' if args.temperature else ''}."
            if any(r["arm"].endswith("_fm") for r in own)
            else ""
        )
        + (f" Arms not in it from `{args.baseline}`." if args.baseline is not None else "")
    )
    table = report(records, settings)
    print(table)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        temporary = args.output.with_name(args.output.name + ".tmp")
        temporary.write_text(table + "\n")
        os.replace(temporary, args.output)


if __name__ == "__main__":
    main()
