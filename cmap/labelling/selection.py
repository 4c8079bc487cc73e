"""Which series to label next: uncertainty (as R sits' ``sits_uncertainty_sampling``: entropy,
margin, least confidence) with diversity (a minimum distance between the chosen series, in the
model's embedding or in space, so the N are not N pixels of one field), class-balanced on request.

Three ways to keep the N diverse:

- :func:`gradient_select` (BADGE, Ash et al., ICLR 2020; the default of ``cmap suggest``): k-means++
  seeding in the gradient embedding of the classifier's last layer, (p - onehot(predicted)) x the
  layer's input features: a series far from those taken *and* uncertain (a large gradient) is likely
  to be taken, with no uncertainty measure or pool size to choose.
- :func:`cluster_select`: the 10 N most uncertain candidates are grouped into N clusters by k-means
  weighted by uncertainty, and each cluster gives its most uncertain series ("diverse mini-batch
  active learning", Zhdanov 2019); it works in space too (a map's pixels).
  Both beat random selection by about 2 OA points on UCR Crop and Mato Grosso (uncertainty alone:
  +0.42 on UCR Crop) and are not told apart over ten draws (``benchmarks/results/samples.md``).
- :func:`select`: greedy, most uncertain first: a candidate is taken unless it lies closer than
  ``min_distance`` to one already taken (or its predicted class has its share, with ``balanced``);
  when the constraints leave fewer than N, the distance and then the balance are relaxed, in that
  order, so N are always returned. It keeps a distance the user can state (metres, degrees).
"""

import numpy as np

MEASURES = ("entropy", "margin", "least_confidence")


def uncertainty(probabilities: np.ndarray, measure: str = "entropy") -> np.ndarray:
    """(N,) higher = more uncertain: Shannon entropy (nats), 1 - (p1 - p2) (margin), or 1 - p1."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, 1.0)
    if measure == "entropy":
        return -(p * np.log(p)).sum(axis=1)
    top = np.sort(p, axis=1)[:, ::-1]
    if measure == "margin":
        return 1.0 - (top[:, 0] - top[:, 1]) if p.shape[1] > 1 else 1.0 - top[:, 0]
    if measure == "least_confidence":
        return 1.0 - top[:, 0]
    raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")


def auto_distance(points: np.ndarray, scores: np.ndarray, n: int, seed: int = 0) -> float:
    """A minimum distance from the data: the median distance from each of the 10 N most uncertain
    candidates (at most 2,000) to its nearest neighbour among them: near-duplicates (one field's
    pixels) fall under it, distinct fields above."""
    pool = np.argsort(-scores, kind="stable")[: min(len(scores), max(10 * n, 20), 2000)]
    x = points[pool].astype(np.float64)
    squared = (x**2).sum(axis=1)
    distances = np.sqrt(np.maximum(squared[:, None] + squared[None, :] - 2 * x @ x.T, 0.0))
    np.fill_diagonal(distances, np.inf)
    return float(np.median(distances.min(axis=1))) if len(pool) > 1 else 0.0


def gradient_select(
    probabilities: np.ndarray,
    features: np.ndarray,
    n: int,
    seed: int | np.random.Generator = 0,
    components: int = 0,
) -> np.ndarray:
    """Indices of ``n`` candidates by k-means++ seeding (the first: the largest gradient; each next drawn
    with probability proportional to its squared distance to the nearest taken) in the gradient
    embedding g = (p - onehot(argmax p)) (K,) x ``features`` (D,) of the last layer's cross-entropy at
    the predicted label. ``probabilities`` (N, K), ``features`` (N, D): the last linear layer's inputs,
    reduced first to their ``components`` principal components over the candidates (as they are for 0,
    or when they have no more features, or there are no more candidates, than ``components``);
    ``seed``: a number or a generator to draw from. The (N, K*D) embedding is never built: the inner
    product of two outer products is (a_i . a_j)(h_i . h_j)."""
    if n > len(probabilities):
        raise ValueError(f"{n} series asked for but only {len(probabilities)} candidates")
    a = np.array(probabilities, dtype=np.float64)
    a[np.arange(len(a)), a.argmax(axis=1)] -= 1.0
    h = np.asarray(features, dtype=np.float64)
    if 0 < components < min(h.shape):
        from sklearn.decomposition import PCA

        h = PCA(components, random_state=0).fit_transform(h)
    squared_norm = (a**2).sum(axis=1) * (h**2).sum(axis=1)

    def squared_distance(row: int) -> np.ndarray:
        return np.maximum(squared_norm + squared_norm[row] - 2.0 * (a @ a[row]) * (h @ h[row]), 0.0)

    rng = np.random.default_rng(seed)
    chosen = [int(np.argmax(squared_norm))]
    nearest = squared_distance(chosen[0])
    while len(chosen) < n:
        total = nearest.sum()
        if total > 0:
            row = int(rng.choice(len(nearest), p=nearest / total))
        else:  # every candidate left duplicates one taken: the largest gradients fill the rest
            left = np.setdiff1d(np.arange(len(nearest)), chosen)
            row = int(left[np.argmax(squared_norm[left])])
        chosen.append(row)
        nearest = np.minimum(nearest, squared_distance(row))
        nearest[chosen] = 0.0
    return np.array(chosen, dtype=np.int64)


def cluster_select(scores: np.ndarray, n: int, points: np.ndarray, pool_factor: int = 10, seed: int = 0) -> np.ndarray:
    """Indices of ``n`` candidates, most uncertain first: the most uncertain of each of n k-means
    clusters (weighted by ``scores``) of the ``pool_factor`` n most uncertain ``points`` (N, D); when
    clusters are fewer than n (duplicate points), the next most uncertain fill the rest."""
    from sklearn.cluster import KMeans

    if n > len(scores):
        raise ValueError(f"{n} series asked for but only {len(scores)} candidates")
    pool = np.argsort(-scores, kind="stable")[: min(len(scores), pool_factor * n)]
    weights = np.asarray(scores, dtype=np.float64)[pool] + 1e-9  # k-means needs a positive weight
    clusters = KMeans(n, n_init=1, random_state=seed).fit(points[pool], sample_weight=weights).labels_
    _, first = np.unique(clusters, return_index=True)  # pool is sorted: a cluster's first is its most uncertain
    taken = np.zeros(len(pool), dtype=bool)
    taken[first] = True
    taken[np.flatnonzero(~taken)[: n - taken.sum()]] = True
    return pool[taken]


def select(
    scores: np.ndarray,
    n: int,
    points: np.ndarray | None = None,
    min_distance: float = 0.0,
    predicted: np.ndarray | None = None,
    num_classes: int | None = None,
) -> np.ndarray:
    """Indices of ``n`` candidates, most uncertain first, at least ``min_distance`` apart in
    ``points`` (N, D); with ``predicted`` (N,) class indices, at most ceil(n / classes predicted) of
    each predicted class (class-balanced)."""
    if n > len(scores):
        raise ValueError(f"{n} series asked for but only {len(scores)} candidates")
    order = np.argsort(-scores, kind="stable")
    share = None
    if predicted is not None:
        share = -(-n // len(np.unique(predicted)))
        num_classes = num_classes or int(predicted.max()) + 1
    for use_distance, use_share in ((True, True), (False, True), (False, False)):
        chosen = _greedy(
            order,
            n,
            points if use_distance else None,
            min_distance,
            predicted if use_share else None,
            share,
            num_classes,
        )
        if len(chosen) == n:
            return np.array(chosen, dtype=np.int64)
        order = np.concatenate([chosen, order[~np.isin(order, chosen)]])  # keep those taken, relax for the rest
    raise AssertionError("unreachable: the last pass takes every candidate in order")


def _greedy(order, n, points, min_distance, predicted, share, num_classes) -> list[int]:
    chosen: list[int] = []
    taken = np.zeros(num_classes or 1, dtype=np.int64)
    nearest = np.full(len(order) if points is None else len(points), np.inf)  # distance to the closest chosen
    for candidate in order:
        if predicted is not None and taken[predicted[candidate]] >= share:
            continue
        if points is not None and min_distance > 0 and nearest[candidate] < min_distance:
            continue
        chosen.append(int(candidate))
        if predicted is not None:
            taken[predicted[candidate]] += 1
        if points is not None and min_distance > 0:
            nearest = np.minimum(nearest, np.sqrt(((points - points[candidate]) ** 2).sum(axis=1)))
        if len(chosen) == n:
            break
    return chosen
