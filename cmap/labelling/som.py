"""Doubtful labels by a self-organising map of the samples, as R sits' ``sits_som_clean_samples``
(Santos et al., ISPRS J. 2021): similar series fall on the same or neighbouring neurons, so a
sample whose label is rare among its neuron's samples is doubtful.

The map (minisom) is trained on the standardised band values of every labelled sample; each
sample gets, for its given label, the share of its neuron's samples carrying that label (sits'
prior) and that share over the neuron (weight 2) and its 8 neighbours on the grid (a
neighbourhood-smoothed posterior, where sits smooths with a Bayesian estimate over the neighbours). A sample is flagged
when both are under ``threshold``; its suggested label is the neighbourhood's most frequent one.

Why the map and not only confident learning: it needs no cross-validated classifier (seconds on
thousands of samples), and on the shared data it flagged the flipped labels with higher precision
at the same recall (``benchmarks/results/samples.md``).
"""

import numpy as np

#: Flag a sample when its label's share on its neuron and neighbourhood are both under this.
THRESHOLD = 0.5


def grid_side(num_samples: int) -> int:
    """Side of the square grid: about 5 sqrt(N) neurons (Vesanto's rule of thumb, as kohonen's)."""
    return max(2, int(np.ceil(np.sqrt(5 * np.sqrt(num_samples)))))


def som_issues(
    points: np.ndarray, labels: np.ndarray, num_classes: int, seed: int = 0, threshold: float = THRESHOLD
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flagged indices (ranked: lowest neighbourhood share of the given label first), the label
    shares (N, K) of each sample's neighbourhood and of its own neuron, for ``points`` (N, D)
    labelled ``labels`` (N,)."""
    from minisom import MiniSom

    x = np.asarray(points, dtype=np.float64)
    x = (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), 1e-6)
    side = grid_side(len(x))
    som = MiniSom(side, side, x.shape[1], sigma=1.0, learning_rate=0.5, random_seed=seed)
    som.pca_weights_init(x)
    som.train(x, 10 * len(x), random_order=True)
    winners = np.array([som.winner(p) for p in x])
    neuron = winners[:, 0] * side + winners[:, 1]
    counts = np.zeros((side * side, num_classes))
    np.add.at(counts, (neuron, labels), 1)
    padded = np.pad(counts.reshape(side, side, num_classes), ((1, 1), (1, 1), (0, 0)))
    around = sum(padded[i : i + side, j : j + side] for i in range(3) for j in range(3)).reshape(-1, num_classes)
    own = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    around = around + counts  # the neuron's own samples weigh twice its neighbours'
    shares = around / np.maximum(around.sum(axis=1, keepdims=True), 1)
    given_own, given_around = own[neuron, labels], shares[neuron, labels]
    flagged = np.flatnonzero((given_own < threshold) & (given_around < threshold))
    return flagged[np.argsort(given_around[flagged], kind="stable")], shares[neuron], own[neuron]
