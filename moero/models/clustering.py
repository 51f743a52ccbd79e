"""Clustering of token histograms for BranchNav (eq. (9)): cosine similarities, spherical
k-means, the Hungarian match of refitted centres and the biases of a balanced split.

Everything here is a pure function of its tensors: computed in float64 on CPU where it decides a route, so the
same input gives the same bytes on every rank.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["cosine_similarities", "cosine_assign", "centre_similarity", "match_centres", "balanced_biases",
           "spherical_kmeans"]


def cosine_similarities(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Cosine similarity ``(N, K)`` of each row of ``x`` ``(N, D)`` to each centre ``(K, D)`` (norms ignored)."""
    return F.normalize(x.to(centres.dtype), dim=1, eps=1e-12) @ F.normalize(centres, dim=1, eps=1e-12).t()


def cosine_assign(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Index of the centre of highest cosine similarity for each row of ``x`` ``(N, D)`` (lowest index on ties)."""
    return cosine_similarities(x, centres).argmax(dim=1)


def centre_similarity(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Cosine similarity ``(N,)`` of each row of ``x`` to its nearest centre (the tightness k-means maximises)."""
    return cosine_similarities(x, centres).max(dim=1).values


def match_centres(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """Permutation ``perm`` ``(K,)`` such that ``new[perm]`` keeps the identities of ``old``: slot j gets the new
    centre of the Hungarian assignment that maximises the summed cosine similarity of new to old centres."""
    from scipy.optimize import linear_sum_assignment

    sims = cosine_similarities(new.double().cpu(), old.double().cpu()).numpy()
    rows, cols = linear_sum_assignment(sims, maximize=True)
    perm = torch.empty(old.shape[0], dtype=torch.long)
    perm[torch.as_tensor(cols, dtype=torch.long)] = torch.as_tensor(rows, dtype=torch.long)
    return perm


@torch.no_grad()
def balanced_biases(sims: torch.Tensor, max_rounds: int = 200, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Per-centre biases ``b`` ``(K,)`` such that ``argmax_j sims[i, j] + b_j`` gives no centre more than
    ``ceil(N / K)`` of the ``N`` rows of ``sims`` ``(N, K)`` (an equal split, as the equipartition of balanced
    clustering).

    The biases are the dual prices of the capacity constraints of the balanced transport problem (maximise the
    summed similarity with at most ``ceil(N / K)`` rows per centre; a linear programme, scipy's HiGHS). Rows
    tied at a boundary of the dual solution can overfill a centre by a few, so up to ``max_rounds`` repair
    rounds lower the fullest centre's bias to midway between the margins of its last surplus row and its first
    kept row. Computed in float64, every round on biases rounded to ``dtype`` (the precision they are stored in,
    so the split holds for the stored biases); deterministic. Returns the best biases found (smallest largest
    count), as float64 values of ``dtype``."""
    from scipy import sparse
    from scipy.optimize import linprog

    if sims.ndim != 2 or sims.shape[0] < 1:
        raise ValueError(f"sims must be (N, K) with N >= 1, got shape {tuple(sims.shape)}")
    s = sims.detach().to("cpu", torch.float64)
    n, k = s.shape
    target = -(-n // k)
    if k == 1:
        return torch.zeros(1, dtype=torch.float64)
    one_each = sparse.kron(sparse.eye(n), np.ones((1, k)))  # every row goes somewhere
    capacity = sparse.kron(np.ones((1, n)), sparse.eye(k))  # at most ``target`` rows per centre
    lp = linprog(-s.numpy().ravel(), A_ub=capacity, b_ub=np.full(k, target), A_eq=one_each, b_eq=np.ones(n),
                 bounds=(0, 1), method="highs")
    bias = torch.from_numpy(np.asarray(lp.ineqlin.marginals, dtype=np.float64)) if lp.status == 0 else \
        torch.zeros(k, dtype=torch.float64)
    best, best_max = bias.clone(), n + 1
    for _ in range(max_rounds):
        bias = bias.to(dtype).double()
        scores = s + bias
        labels = scores.argmax(dim=1)
        counts = torch.bincount(labels, minlength=k)
        fullest = int(counts.argmax())
        if int(counts[fullest]) < best_max:
            best, best_max = bias.clone(), int(counts[fullest])
        if int(counts[fullest]) <= target:
            break
        rows = torch.nonzero(labels == fullest).flatten()
        others = scores[rows].clone()
        others[:, fullest] = float("-inf")
        margins = (scores[rows, fullest] - others.max(dim=1).values).sort().values
        surplus = int(counts[fullest]) - target  # the surplus rows have the smallest margins
        low = float(margins[surplus - 1])
        high = float(margins[surplus]) if surplus < margins.numel() else low + 1e-6
        bias[fullest] -= max((low + high) / 2, low + 1e-12)
    return best


@torch.no_grad()
def spherical_kmeans(
    x: torch.Tensor, k: int, restarts: int = 8, max_iter: int = 100, seed: int = 42
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """k-means with cosine similarity on the rows of ``x`` ``(N, D)``; returns ``(centres, labels, score)``.

    Rows and centres live on the unit sphere; each iteration assigns every row to the centre of
    highest cosine similarity and moves each centre to the normalised mean of its rows. Every restart
    starts from a k-means++ draw (distance ``1 - cos``) of a ``torch.Generator`` seeded by ``seed``;
    the restart with the largest total similarity ``score = sum_i max_j cos(x_i, c_j)`` wins. An
    empty cluster is re-seeded with the row least similar to its current centre. Computed in float64
    on CPU, so the same ``x`` and ``seed`` give the same bytes on every rank.
    """
    if x.ndim != 2:
        raise ValueError(f"x must be (N, D), got shape {tuple(x.shape)}")
    if k < 1 or k > x.shape[0]:
        raise ValueError(f"k must lie in [1, N={x.shape[0]}], got {k}")
    if restarts < 1:
        raise ValueError(f"restarts must be >= 1, got {restarts}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    data = F.normalize(x.detach().to("cpu", torch.float64), dim=1, eps=1e-12)
    n = data.shape[0]
    gen = torch.Generator().manual_seed(seed)
    best: tuple[torch.Tensor, torch.Tensor, float] | None = None
    for _ in range(restarts):
        # k-means++ seeding with the cosine distance 1 - cos
        first = int(torch.randint(0, n, (1,), generator=gen))
        centres = [data[first]]
        dist_min = (1.0 - data @ data[first]).clamp_min(0.0)
        for _ in range(1, k):
            total = float(dist_min.sum())
            if total <= 0.0:  # all rows coincide with chosen centres: pick uniformly
                nxt = int(torch.randint(0, n, (1,), generator=gen))
            else:
                nxt = int(torch.multinomial(dist_min / total, 1, generator=gen))
            centres.append(data[nxt])
            dist_min = torch.minimum(dist_min, (1.0 - data @ data[nxt]).clamp_min(0.0))
        c = torch.stack(centres)
        labels = torch.full((n,), -1, dtype=torch.long)
        for _ in range(max_iter):
            sims = data @ c.t()
            new_labels = sims.argmax(dim=1)
            if torch.equal(new_labels, labels):
                break
            labels = new_labels
            sums = torch.zeros_like(c).index_add_(0, labels, data)
            counts = torch.bincount(labels, minlength=k)
            for j in torch.nonzero(counts == 0).flatten().tolist():
                # re-seed an empty cluster with the row worst served by its centre
                worst = int((sims.gather(1, labels[:, None]).squeeze(1)).argmin())
                sums[j] = data[worst]
                labels[worst] = j
                sims[worst] = float("inf")  # not picked twice in this pass
            c = F.normalize(sums, dim=1, eps=1e-12)
        sims = data @ c.t()
        labels = sims.argmax(dim=1)
        score = float(sims.max(dim=1).values.sum())
        if best is None or score > best[2]:
            best = (c, labels, score)
    assert best is not None
    return best
