"""Probes of the few-labels gap (issue 18): why consistency training on the area's series stops
near +3 points over training from scratch on UCR Crop at 10 labels per class (target +5).

Each probe trains the ``scratch_fm`` arm of ``pretraining.py`` (TempCNN from scratch, FixMatch on
the area's 24,000 series, labels never read), or a variant of it, on one label draw and prints
its figures; every option of ``pretraining.py`` (``--threshold``, ``--label_smoothing``, ...)
applies. The models' predictions are cached in ``--workdir`` under ``--tag``: give the ``ensemble``,
``agreement`` or ``readout`` probe other training options with another ``--tag``. Figures:
``benchmarks/results/pretraining.md``.

- ``ensemble``: one model per ``--seeds`` on the same labels; the test accuracy of each, of the
  mean probabilities of every k of them, and the coverage and accuracy of the ensemble's
  pseudo-labels at ``--thresholds``. Is the model's variance what limits it?
- ``agreement``: MultiRocket (aeon) on the same labels beside the model of seed ``--draw``: how
  often they agree and how right they are then (co-training's pseudo-labels).
- ``readout``: the model's hidden layer (TempCNN's dense layer, after ReLU) as an embedding: the
  test accuracy of the labelled series as anchors (k nearest, or a softmax over cosine
  similarities), of that mixed with the model, and of the model's probabilities averaged over
  each series' nearest series of the area (transductive smoothing). ``--arm scratch`` for the
  model trained on the labels alone.
- ``simmatch``: SimMatch (Zheng et al. 2022) on top of FixMatch: labelled embeddings in a queue as
  anchors; the pseudo-label is the weak view's probabilities times its similarity to each class's
  anchors (``--propagate``), and the strong view's similarities are trained towards the weak
  view's (``--instance_weight``).
- ``warp``: the strong view also magnitude-warped (values times a smooth random curve, sigma
  ``--magnitude``) and time-warped (resampled along a smooth random time axis, sigma
  ``--time_warp``; Um et al. 2017).

    OMP_NUM_THREADS=1 python benchmarks/few_labels_probes.py ensemble --draw 0 --seeds 0 1 2 3 --threads 1
    OMP_NUM_THREADS=1 python benchmarks/few_labels_probes.py simmatch --draw 0 --threshold 0.8 --threads 1
"""

import argparse
import itertools
import time
from dataclasses import dataclass, fields
from pathlib import Path

import lightning as L
import numpy as np
import pretraining
import torch
import torch.nn.functional as F
from peers import estimator, interpolated
from torch import Tensor, nn

from cmap.data.batch import Batch
from cmap.data.dataset import SeriesDataset, batch_loader
from cmap.ml.classifiers import Classifier
from cmap.ml.consistency import Consistency, concat_batches
from cmap.ml.tempcnn import FlattenClassification

PROBES = ("ensemble", "agreement", "readout", "simmatch", "warp")


def hidden_layer(model: Classifier) -> list[Tensor]:
    """A list that receives the output of TempCNN's dense layer (after batch norm and ReLU) at each forward."""
    if not isinstance(model.decoder, FlattenClassification):
        raise ValueError("the probes read TempCNN's dense layer: --encoder tempcnn")
    outputs: list[Tensor] = []
    model.decoder.norm.register_forward_hook(lambda module, inputs, output: outputs.append(F.relu(output)))
    return outputs


@torch.inference_mode()
def predict(model: Classifier, area: pretraining.Area) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and hidden-layer embeddings of every series of the area."""
    model.eval()
    hidden = hidden_layer(model)
    probabilities = [
        model(batch["values"], batch["days"], batch["mask"]).softmax(-1)
        for batch in batch_loader(SeriesDataset(area.series, np.arange(len(area.series)), area.contract), 2048)
    ]  # fmt: skip
    return torch.cat(probabilities).numpy(), torch.cat(hidden).numpy()


def trained(area: pretraining.Area, args: argparse.Namespace, seed: int, consistency: bool | Consistency = True,
            classifier_type: type[Classifier] = Classifier) -> Classifier:  # fmt: skip
    """The ``scratch_fm`` arm (``scratch`` without ``consistency``) on draw ``args.draw``'s labels, seed ``seed``."""
    rows = pretraining.labelled_rows(area, args.labels, args.draw)
    L.seed_everything(seed)
    return pretraining.train_classifier(
        area, rows, area.series.labels[rows], args.encoder, args.d_model, None, args, consistency, classifier_type
    )


def predictions(area: pretraining.Area, args: argparse.Namespace, seed: int, arm: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`predict` of the arm's model of ``seed``, cached in ``--workdir`` (probes share them) by
    dataset, labels, draw, seed, arm and ``--tag``: other training options want another ``--tag``."""
    tag = f"_{args.tag}" if args.tag else ""
    path = args.workdir / f"probe_{area.name}_{args.labels}_d{args.draw}_s{seed}_{arm}{tag}.npz"
    if not path.exists():
        probabilities, hidden = predict(trained(area, args, seed, consistency=arm == "scratch_fm"), area)
        np.savez(path, probabilities=probabilities, hidden=hidden)
    cached = np.load(path)
    return cached["probabilities"], cached["hidden"]


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float((probabilities.argmax(-1) == labels).mean())


def ensemble(area: pretraining.Area, args: argparse.Namespace) -> None:
    test = area.split(args.draw)[1]
    labels = area.series.labels[test]
    members = {seed: predictions(area, args, seed, "scratch_fm")[0][test] for seed in args.seeds}
    for seed, probabilities in members.items():
        print(f"seed {seed}: {accuracy(probabilities, labels):.4f}")
    for size in range(1, len(members) + 1):
        scores = [accuracy(sum(members[s] for s in chosen), labels) for chosen in itertools.combinations(members, size)]
        print(f"mean of {size} member(s), over the {len(scores)} choices: {np.mean(scores):.4f}")
    mean = sum(members.values()) / len(members)
    for threshold in args.thresholds:
        kept = mean.max(-1) >= threshold
        print(f"pseudo-labels >= {threshold}: {kept.mean():.1%} of the test series, "
              f"{accuracy(mean[kept], labels[kept]):.4f} right")  # fmt: skip


def agreement(area: pretraining.Area, args: argparse.Namespace) -> None:
    rows = pretraining.labelled_rows(area, args.labels, args.draw)
    test = area.split(args.draw)[1]
    labels = area.series.labels[test]
    model = predictions(area, args, args.draw, "scratch_fm")[0][test]
    training, tested = area.series.subset(rows), area.series.subset(test)
    band_mean = np.nanmean(np.array(training.values[:]), axis=(0, 1))
    peer = estimator("multirocket", args.draw).fit(interpolated(training, band_mean), training.labels)
    inputs = interpolated(tested, band_mean)
    peer_labels = np.concatenate([peer.predict(inputs[i : i + 2000]) for i in range(0, len(inputs), 2000)])
    peer_labels = peer_labels.astype(np.int64)
    model_labels, confidence = model.argmax(-1), model.max(-1)
    agree = model_labels == peer_labels
    print(f"model {accuracy(model, labels):.4f}, MultiRocket {(peer_labels == labels).mean():.4f}, "
          f"either right {((model_labels == labels) | (peer_labels == labels)).mean():.4f}")  # fmt: skip
    print(f"agree on {agree.mean():.1%}, right there {(model_labels[agree] == labels[agree]).mean():.4f}; "
          f"where not: model {(model_labels[~agree] == labels[~agree]).mean():.4f}, "
          f"MultiRocket {(peer_labels[~agree] == labels[~agree]).mean():.4f}")  # fmt: skip
    for threshold in args.thresholds:
        alone, both = confidence >= threshold, agree & (confidence >= threshold)
        print(f"model >= {threshold}: {alone.mean():.1%} at {(model_labels[alone] == labels[alone]).mean():.4f}; "
              f"and agreeing: {both.mean():.1%} at {(model_labels[both] == labels[both]).mean():.4f}")  # fmt: skip


def anchor_readout(similarity: Tensor, anchor_labels: Tensor, num_classes: int, temperature: float) -> Tensor:
    """Class probabilities of each row: the softmax of its cosine similarities to the anchors (over
    ``temperature``), summed per anchor class."""
    weights = (similarity / temperature).softmax(-1)
    return weights @ F.one_hot(anchor_labels, num_classes).to(weights.dtype)


def readout(area: pretraining.Area, args: argparse.Namespace) -> None:
    rows = pretraining.labelled_rows(area, args.labels, args.draw)
    test = area.split(args.draw)[1]
    labels = area.series.labels[test]
    probabilities, hidden = predictions(area, args, args.draw, args.arm)
    embeddings = F.normalize(torch.from_numpy(hidden), dim=1)
    model = probabilities[test]
    num_classes = len(area.class_names)
    print(f"{args.arm} model: {accuracy(model, labels):.4f}")
    anchors = embeddings[test] @ embeddings[rows].T
    anchor_labels = torch.from_numpy(area.series.labels[rows])
    for k in (1, 5, 10):
        nearest = anchor_labels[anchors.topk(k, dim=1).indices]
        votes = F.one_hot(nearest, num_classes).sum(1).float() + 1e-3 * torch.from_numpy(model)  # ties: the model
        print(f"{k} nearest labelled series: {accuracy(votes.numpy(), labels):.4f}")
    for temperature in (0.05, 0.1, 0.2):
        soft = anchor_readout(anchors, anchor_labels, num_classes, temperature).numpy()
        mixes = ", ".join(f"{share} model: {accuracy(share * model + (1 - share) * soft, labels):.4f}"
                          for share in (0.25, 0.5, 0.75))  # fmt: skip
        print(f"anchors, temperature {temperature}: {accuracy(soft, labels):.4f}; mixed with {mixes}")
    area_similarity = embeddings[test] @ embeddings.T
    for k in (5, 10, 20):
        nearest = area_similarity.topk(k + 1, dim=1).indices.numpy()  # the series itself and its k nearest
        print(f"mean over the {k} nearest series of the area: {accuracy(probabilities[nearest].mean(1), labels):.4f}")


class SimMatchClassifier(Classifier):
    """Classifier + SimMatch's label propagation and instance consistency through labelled anchors:
    a projection of TempCNN's dense layer, the last ``bank_size`` labelled series' embeddings
    (detached) as anchors."""

    def __init__(self, *args, instance_weight: float = 1.0, similarity_temperature: float = 0.1,
                 propagate: bool = True, bank_size: int = 256, **kwargs) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        self.instance_weight, self.similarity_temperature = instance_weight, similarity_temperature
        self.propagate, self.bank_size = propagate, bank_size
        width = self.decoder.hidden
        self.projection = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 64))
        self.bank: Tensor | None = None
        self.bank_labels: Tensor | None = None

    def setup(self, stage: str) -> None:
        super().setup(stage)
        self.hidden = hidden_layer(self)

    def embedded(self, batch: Batch) -> tuple[Tensor, Tensor]:
        self.hidden.clear()
        logits = self(batch["values"], batch["days"], batch["mask"])
        return logits, F.normalize(self.projection(self.hidden[-1]), dim=1)

    def _consistency_step(self, labelled: Batch, unlabelled: Batch) -> Tensor:
        consistency = self.consistency
        with torch.no_grad():
            weak_logits, weak_embeddings = self.embedded(consistency.weak(unlabelled))
        logits, embeddings = self.embedded(concat_batches(labelled, consistency.strong(unlabelled)))
        size = len(labelled["label"])
        kept_embeddings = embeddings[:size].detach()
        self.bank = kept_embeddings if self.bank is None else torch.cat([kept_embeddings, self.bank])[: self.bank_size]
        self.bank_labels = labelled["label"] if self.bank_labels is None else torch.cat(
            [labelled["label"], self.bank_labels])[: self.bank_size]  # fmt: skip
        weak = weak_logits.float().softmax(-1)
        anchors = (weak_embeddings @ self.bank.T / self.similarity_temperature).softmax(-1)  # (U, K)
        classes = F.one_hot(self.bank_labels, weak.shape[-1]).to(weak.dtype)  # (K, C)
        target = weak * (anchors @ classes) if self.propagate else weak
        target = target / target.sum(-1, keepdim=True).clamp_min(1e-12)
        unsupervised, kept = consistency.loss(target.clamp_min(1e-12).log(), logits[size:])
        supervised = self.criterion(logits[:size], labelled["label"])
        self.train_metrics.update(logits[:size], labelled["label"])
        self.log_loss("train", supervised, size)
        loss = supervised + unsupervised
        if self.instance_weight:
            instance = anchors * (weak @ classes.T)
            instance = instance / instance.sum(-1, keepdim=True).clamp_min(1e-12)
            strong = F.log_softmax(embeddings[size:] @ self.bank.T / self.similarity_temperature, dim=-1)
            loss = loss + self.instance_weight * -(instance * strong).sum(-1).mean()
        self.log("train/pseudo_label_fraction", kept, batch_size=size, on_step=False, on_epoch=True)
        return loss


@dataclass
class WarpedConsistency(Consistency):
    """Consistency whose strong view is also magnitude- and time-warped (smooth curves through 6
    knots of mean 1 and these standard deviations; 0: none)."""

    magnitude: float = 0.0
    time_warp: float = 0.0

    def strong(self, batch: Batch) -> Batch:
        batch = super().strong(batch)
        values, mask = batch["values"], batch["mask"]
        num_series, num_dates = mask.shape
        if self.time_warp:
            speed = smooth_curve(num_series, num_dates, self.time_warp, values.device).clamp_min(0.1)
            position = speed.cumsum(1) - speed[:, :1]
            position = position / position[:, -1:] * (num_dates - 1)
            low = position.floor().long().clamp(0, num_dates - 1)
            high = (low + 1).clamp(max=num_dates - 1)
            weight = (position - low).unsqueeze(-1)

            def at(index: Tensor) -> Tensor:
                return values.gather(1, index.unsqueeze(-1).expand(-1, -1, values.shape[-1]))

            values = at(low) * (1 - weight) + at(high) * weight
            mask = mask.gather(1, low) & mask.gather(1, high)
            values = values.masked_fill(~mask.unsqueeze(-1), 0.0)
        if self.magnitude:
            values = values * smooth_curve(num_series, num_dates, self.magnitude, values.device).unsqueeze(-1)
        return {**batch, "values": values, "mask": mask}


def smooth_curve(num_series: int, length: int, sigma: float, device: torch.device) -> Tensor:
    """(num_series, length) curves through 6 random knots N(1, sigma), linearly interpolated."""
    knots = 1 + sigma * torch.randn(num_series, 1, 6, device=device)
    return F.interpolate(knots, size=length, mode="linear", align_corners=True).squeeze(1)


def variant(area: pretraining.Area, args: argparse.Namespace) -> None:
    """``simmatch`` or ``warp``: the variant's test accuracy on draw ``--draw`` (seed ``--draw``)."""
    began = time.perf_counter()
    base = pretraining.consistency_of(args)
    if args.probe == "warp":
        settings = {field.name: getattr(base, field.name) for field in fields(base)}
        model = trained(area, args, args.draw, WarpedConsistency(**settings, magnitude=args.magnitude,
                                                                 time_warp=args.time_warp))  # fmt: skip
        described = f"magnitude {args.magnitude}, time warp {args.time_warp}"
    else:
        model = trained(area, args, args.draw, base, simmatch_type(args))
        described = f"propagate {args.propagate}, instance weight {args.instance_weight}"
    probabilities, _ = predict(model, area)
    test = area.split(args.draw)[1]
    score = accuracy(probabilities[test], area.series.labels[test])
    print(f"{args.probe} ({described}, threshold {args.threshold}) draw {args.draw}: {score:.4f} "
          f"({time.perf_counter() - began:.0f} s)")  # fmt: skip


def simmatch_type(args: argparse.Namespace) -> type[Classifier]:
    """SimMatchClassifier with the options' settings (train_classifier builds it with the usual arguments)."""

    class Configured(SimMatchClassifier):
        def __init__(self, *positional, **kwargs) -> None:
            super().__init__(*positional, instance_weight=args.instance_weight, propagate=args.propagate,
                             similarity_temperature=args.similarity_temperature, **kwargs)  # fmt: skip

    return Configured


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, parents=[pretraining.argument_parser()], conflict_handler="resolve",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("probe", choices=PROBES)
    parser.add_argument("--draw", type=int, default=0, help="the label draw (and the seed of its model)")
    parser.add_argument("--labels", type=int, default=10, help="labelled series per class")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3], help="ensemble: the members' seeds")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.6, 0.7, 0.8])
    parser.add_argument("--arm", choices=["scratch_fm", "scratch"], default="scratch_fm", help="readout: the model")
    parser.add_argument("--instance_weight", type=float, default=1.0, help="simmatch: 0 for label propagation only")
    parser.add_argument("--similarity_temperature", type=float, default=0.1, help="simmatch")
    parser.add_argument("--propagate", action=argparse.BooleanOptionalAction, default=True, help="simmatch")
    parser.add_argument("--magnitude", type=float, default=0.0, help="warp: magnitude warping's sigma")
    parser.add_argument("--time_warp", type=float, default=0.0, help="warp: time warping's sigma")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.workdir = Path(args.workdir)
    args.workdir.mkdir(parents=True, exist_ok=True)
    area = pretraining.ucr_crop_area(args.root) if args.dataset == "ucr_crop" else pretraining.mato_grosso_area()
    {"ensemble": ensemble, "agreement": agreement, "readout": readout}.get(args.probe, variant)(area, args)


if __name__ == "__main__":
    main()
