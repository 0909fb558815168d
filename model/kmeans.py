"""k-means on the rows of a matrix, in torch (GPU when present): k-means++ seeding on a sample, Lloyd's
iterations, the best of several restarts, and the paper's median-distance cut of the training rows.

Shared by the sound labels (model/sound/labels.py: textures) and the visual control (model/network/texton.py:
filter responses and texton histograms).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from model.device import resolve_device
from model.settings import LABELS, LabelSettings

@dataclass
class ClusterLabels:
    labels: np.ndarray       # (N,) nearest centroid of every frame
    centroids: np.ndarray    # (k, D)
    distances: np.ndarray    # (N,) Euclidean distance to the nearest centroid
    keep: np.ndarray         # (N,) bool: training frames no farther than the median training distance
    inertia: float           # sum of squared training distances


def _nearest(x: torch.Tensor, x_sq: torch.Tensor, centroids: torch.Tensor,
             chunk_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(index, squared distance) of each row's nearest centroid, in chunks to bound memory.

    ``x_sq`` holds the rows' squared norms, computed once: ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2.
    """
    c_sq = (centroids * centroids).sum(1)
    index = torch.empty(len(x), dtype=torch.long, device=x.device)
    dist_sq = torch.empty(len(x), dtype=x.dtype, device=x.device)
    for start in range(0, len(x), chunk_rows):
        rows = slice(start, start + chunk_rows)
        d = torch.addmm(c_sq, x[rows], centroids.T, alpha=-2.0).add_(x_sq[rows, None])
        dist_sq[rows], index[rows] = d.clamp_min_(0).min(1)
    return index, dist_sq


def _kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator, settings: LabelSettings) -> torch.Tensor:
    # On a random sample: seeding needs k passes, and a sample of 100k places centres as well as 1.8M rows do.
    if len(x) > settings.init_sample:
        x = x[torch.randperm(len(x), generator=generator, device=x.device)[:settings.init_sample]]
    x_sq = (x * x).sum(1)
    centroids = x[torch.randint(len(x), (1,), generator=generator, device=x.device)]
    _, closest_sq = _nearest(x, x_sq, centroids, settings.chunk_rows)
    for _ in range(1, k):
        # Sample the next centre proportionally to squared distance; uniform if every point is a centre.
        weights = closest_sq if closest_sq.sum() > 0 else torch.ones_like(closest_sq)
        pick = x[torch.multinomial(weights, 1, generator=generator)]
        centroids = torch.cat([centroids, pick])
        closest_sq = torch.minimum(closest_sq, _nearest(x, x_sq, pick, settings.chunk_rows)[1])
    return centroids


def _lloyd(x: torch.Tensor, x_sq: torch.Tensor, centroids: torch.Tensor,
           settings: LabelSettings) -> tuple[torch.Tensor, float]:
    previous = None
    for _ in range(settings.max_iterations):
        index, dist_sq = _nearest(x, x_sq, centroids, settings.chunk_rows)
        inertia = float(dist_sq.sum())
        sums = torch.zeros_like(centroids).index_add_(0, index, x)
        counts = torch.bincount(index, minlength=len(centroids)).to(x.dtype)
        empty = counts == 0
        centroids = sums / counts.clamp_min(1).unsqueeze(1)
        if empty.any():
            # Re-seed empty clusters with the points worst served by their centroid.
            worst = dist_sq.topk(int(empty.sum())).indices
            centroids[empty] = x[worst]
        if previous is not None and previous - inertia <= settings.tolerance * previous and not empty.any():
            break
        previous = inertia
    _, dist_sq = _nearest(x, x_sq, centroids, settings.chunk_rows)
    return centroids, float(dist_sq.sum())


def cluster_labels(textures: np.ndarray, train_mask: np.ndarray, k: int = LABELS.clusters,
                   seed: int = LABELS.seed, restarts: int = LABELS.restarts,
                   settings: LabelSettings = LABELS, device: torch.device | None = None,
                   progress: bool = False) -> ClusterLabels:
    """k-means (k-means++ init, best of ``restarts``) on the training rows of (already weighted) textures."""
    train_mask = np.asarray(train_mask, dtype=bool)
    n_train = int(train_mask.sum())
    if n_train == 0:
        raise ValueError("the training split is empty: no frames to cluster")
    if k < 1 or k > n_train:
        raise ValueError(f"cannot make {k} clusters from {n_train} training frames")
    device = device or resolve_device()
    x_all = torch.as_tensor(textures, dtype=torch.float32, device=device)
    x_train = x_all[torch.as_tensor(train_mask, device=device)]
    train_sq = (x_train * x_train).sum(1)
    generator = torch.Generator(device=device).manual_seed(seed)
    best, best_inertia = None, float("inf")
    for _ in tqdm(range(restarts), desc=f"k-means (k={k})", unit="restart", disable=not progress):
        centroids, inertia = _lloyd(x_train, train_sq, _kmeans_plus_plus(x_train, k, generator, settings), settings)
        if inertia < best_inertia:
            best, best_inertia = centroids, inertia
    labels, _ = _nearest(x_all, (x_all * x_all).sum(1), best, settings.chunk_rows)
    # The distances the median cut uses, from the differences: the expansion above loses ~1e-4 in float32.
    distances = torch.cat([(x_all[rows] - best[labels[rows]]).norm(dim=1)
                           for rows in torch.arange(len(x_all), device=device).split(settings.chunk_rows)])
    distances = distances.cpu().numpy()
    # Paper: training drops examples farther from their centroid than the median distance.
    keep = train_mask & (distances <= np.median(distances[train_mask]))
    return ClusterLabels(labels=labels.cpu().numpy(), centroids=best.cpu().numpy(), distances=distances,
                         keep=keep, inertia=best_inertia)
