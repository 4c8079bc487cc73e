"""Active learning against random selection (``benchmarks/samples.py``'s second part).

From 10 labels per class, 5 rounds each adding 5 x classes labels, the same classifier retrained
each round (:mod:`samples_data`): ``random`` (uniform from the pool) against a strategy of
:mod:`cmap.labelling.selection` scoring the classifier's probabilities of the pool, its diversity
counted in the embedding: the pool's MiniRocket features reduced to 64 principal components (no labels
used; for ``gradients`` the classifier's own 10,000 features measured worse on Mato Grosso, +1.83
against +2.62, and 128 components worse on UCR Crop, +1.32 against +2.04):

- ``gradients`` (``cmap suggest``'s default, BADGE): k-means++ seeding in the gradient embedding
  (p - onehot(predicted)) x embedding, as if a last layer read the embedding;
- ``margin + clusters``: margin, the most uncertain of each k-means cluster of the 10 N most
  uncertain;
- ``margin + distance + balanced``: margin, a minimum distance in that embedding chosen from the
  data, at most N / classes per predicted class (``--diversity distance --balanced``);
- ``margin``, ``entropy``: the N most uncertain alone.

Mean of the draws, 3 by default (the draw seeds the first labels, random's and the gradients' draws, and k-means).
"""

import numpy as np
from samples_data import Prepared

from cmap.data.splits import per_class_subset
from cmap.labelling.peer import logistic
from cmap.labelling.selection import auto_distance, cluster_select, gradient_select, select, uncertainty

STRATEGIES = ("random", "gradients", "margin + clusters", "margin + distance + balanced", "margin", "entropy")


def choose(strategy: str, probabilities: np.ndarray, embedding: np.ndarray, n: int, rng, draw: int) -> np.ndarray:
    """Indices of ``n`` of the candidates (rows of ``probabilities`` and ``embedding``)."""
    if strategy == "random":
        return rng.choice(len(probabilities), n, replace=False)
    if strategy == "gradients":
        return gradient_select(probabilities, embedding, n, seed=rng)
    scores = uncertainty(probabilities, strategy.split(" ")[0])
    if strategy.endswith("clusters"):
        return cluster_select(scores, n, embedding, seed=draw)
    if strategy.endswith("balanced"):
        distance = auto_distance(embedding, scores, n)
        return select(scores, n, embedding, distance, probabilities.argmax(axis=1), probabilities.shape[1])
    return np.argsort(-scores, kind="stable")[:n]


def active_learning(
    data: Prepared, draws, strategies, rounds: int = 5, start: int = 10, step: int = 5, components: int = 64
) -> dict:
    """OA per round (draws x rounds+1) of each strategy over the ``draws`` (seeds); diversity counted in
    ``components`` principal components of the classifier's features."""
    from sklearn.decomposition import PCA

    k, pool = data.num_classes, data.labels
    embedding = PCA(components, random_state=0).fit_transform(data.rocket)  # the pool's own, no labels used
    curves = {s: [] for s in strategies}
    for draw in draws:
        first = per_class_subset(pool, start, draw)
        for strategy, curve in curves.items():
            rng, labelled, scores = np.random.default_rng(draw), first.copy(), []
            for round_ in range(rounds + 1):
                model = logistic().fit(data.rocket[labelled], pool[labelled])
                scores.append(float((model.predict(data.rocket_test) == data.test_labels).mean()))
                if round_ == rounds:
                    break
                candidates = np.setdiff1d(np.arange(len(pool)), labelled)
                probabilities = np.zeros((len(candidates), k))
                probabilities[:, model.classes_] = model.predict_proba(data.rocket[candidates])
                new = choose(strategy, probabilities, embedding[candidates], step * k, rng, draw)
                labelled = np.concatenate([labelled, candidates[new]])
            curve.append(scores)
            print(
                f"{data.name} {strategy} draw {draw}: OA per round {' '.join(f'{s:.4f}' for s in scores)}", flush=True
            )
    return {
        "name": data.name,
        "draws": list(draws),
        "classes": k,
        "start": start,
        "step": step,
        "curves": {s: np.array(c) for s, c in curves.items()},
    }


def learning_report(results: list[dict], picture) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [
        "## Active learning against random selection",
        "",
        "Test OA of the classifier after each round (mean of the draws; labels = labelled series); gain: the "
        "strategy's final OA minus random's, same draws, same final label budget.",
        "",
    ]
    figure, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4))
    for axis, result in zip(np.atleast_1d(axes), results, strict=True):
        budget = [result["start"] * result["classes"] + i * result["step"] * result["classes"] for i in range(6)]
        random_final = result["curves"]["random"][:, -1]
        seeds = ", ".join(str(d) for d in result.get("draws", range(len(random_final))))
        lines += [
            f"**{result['name']}** ({result['classes']} classes; draws {seeds})",
            "",
            "| strategy | " + " | ".join(f"{n} labels" for n in budget) + " | final gain (per draw) |",
            "|---" * 8 + "|",
        ]
        for strategy, curve in result["curves"].items():
            mean, gain = curve.mean(axis=0), (curve[:, -1] - random_final) * 100
            per_draw = "" if strategy == "random" else f"{gain.mean():+.2f} ({', '.join(f'{g:+.2f}' for g in gain)})"
            lines.append(f"| {strategy} | " + " | ".join(f"{v:.4f}" for v in mean) + f" | {per_draw} |")
            if strategy in ("random", "gradients", "margin + clusters"):
                axis.plot(budget, mean, marker="o", label=strategy)
        axis.set(title=result["name"], xlabel="labelled series", ylabel="test OA (mean of draws)")
        axis.legend()
        lines.append("")
    figure.tight_layout()
    figure.savefig(picture, dpi=100)
    return lines + [f"![active learning curves]({picture.name})", ""]
