"""Sound labels (paper 3.2): k-means clusters of sound textures, or binary codes from PCA projections.

Fitted on the training split only; every frame (train and test) gets a label. Runs in torch on the
GPU when present. Written to ``DATA_DIR/labels/<kind>.npz``:

    cluster:          kind, k, labels (N,) int64, centroids (k, 502) in weighted space, distances (N,),
                      keep (N,) bool (train frames within the median distance), weights (502,)
    binary/spectrum:  kind, bits, codes (N, bits) uint8, components (bits, D), mean (D,), weights (D,)
    scene:            kind, k, labels (N,) int64, keep (N,) bool (the cluster labels' training frames if
                      there are cluster labels, else every training frame), names (k,):
                      not a sound label but the control the paper compares with (a scene-trained network,
                      Places): each frame's scene from the generated world's truth, trained like clusters.
    texton:           as cluster, k-means of visual texton histograms (model/network/texton.py) instead of sound:
                      the paper's Texton-CNN control; also textons (512, F), histograms (N, 512)
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from model.sound import texture as audio
from model.data import dataset
from model.device import resolve_device
from model.settings import LABELS, LabelSettings

KINDS = ("cluster", "binary", "spectrum", "scene", "texton")


@dataclass
class ClusterLabels:
    labels: np.ndarray       # (N,) nearest centroid of every frame
    centroids: np.ndarray    # (k, D)
    distances: np.ndarray    # (N,) Euclidean distance to the nearest centroid
    keep: np.ndarray         # (N,) bool: training frames no farther than the median training distance
    inertia: float           # sum of squared training distances


@dataclass
class BinaryCodes:
    codes: np.ndarray        # (N, bits) uint8: sign of each centred projection
    components: np.ndarray   # (bits, D) principal axes of the training split, largest variance first
    mean: np.ndarray         # (D,) training mean


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


def binary_codes(features: np.ndarray, train_mask: np.ndarray, bits: int = LABELS.bits,
                 device: torch.device | None = None) -> BinaryCodes:
    """Project onto the top ``bits`` principal components of the training rows; threshold at zero."""
    train_mask = np.asarray(train_mask, dtype=bool)
    n_train, dim = int(train_mask.sum()), features.shape[1]
    if n_train < 2:
        raise ValueError(f"need at least 2 training frames for PCA, got {n_train}")
    if bits > dim:
        raise ValueError(f"cannot make {bits} bits from {dim}-d features")
    device = device or resolve_device()
    x_all = torch.as_tensor(features, dtype=torch.float32, device=device)
    x_train = x_all[torch.as_tensor(train_mask, device=device)]
    # Sums in float64, chunk by chunk: 1.8M rows' covariance in float32 loses the small components,
    # and a whole float64 copy would not fit beside the data.
    chunks = x_train.split(LABELS.chunk_rows)
    mean = sum(chunk.double().sum(0) for chunk in chunks) / n_train
    covariance = sum((chunk.double() - mean).T @ (chunk.double() - mean) for chunk in chunks) / (n_train - 1)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    components = eigenvectors[:, eigenvalues.argsort(descending=True)[:bits]].T.float()
    # An eigenvector's sign is arbitrary: fix it so each component's largest entry is positive.
    largest = components.abs().argmax(1)
    components *= torch.sign(components[torch.arange(bits), largest]).unsqueeze(1)
    mean = mean.float()
    codes = torch.cat([(chunk - mean) @ components.T > 0 for chunk in x_all.split(LABELS.chunk_rows)])
    return BinaryCodes(codes=codes.to(torch.uint8).cpu().numpy(), components=components.cpu().numpy(),
                       mean=mean.cpu().numpy())


def checked_texture_scale(dim: int) -> np.ndarray:
    """audio.texture_scale(), checked against the textures' dimension."""
    w = audio.texture_scale()
    if w.shape != (dim,):
        raise ValueError(f"texture weights have shape {w.shape}, textures have {dim} dimensions")
    return w


def scene_labels(data_dir: str | Path, records: list[dataset.FrameRecord]) -> tuple[np.ndarray, list[str]]:
    """(scene index of every frame, scene names) from the truth of the world DATA_DIR was ingested from."""
    from model.world.scenes import SCENES
    from model.world.truth import find_world_dir, video_truth

    report_path = Path(data_dir) / dataset.REPORT
    videos_dir = json.loads(report_path.read_text()).get("videos_dir") if report_path.exists() else None
    if not videos_dir:
        raise FileNotFoundError(f"{report_path}: records no videos folder; scene labels need a generated world")
    world_dir = find_world_dir(videos_dir)
    names = [scene.name for scene in SCENES]
    index = {name: i for i, name in enumerate(names)}
    return np.array([index[video_truth(world_dir, r.video)[0]["scene"]] for r in records], np.int64), names


def make_labels(data_dir: str | Path, kind: str, k: int = LABELS.clusters,
                settings: LabelSettings = LABELS, device: torch.device | None = None,
                progress: bool = False) -> Path:
    """Compute ``kind`` labels for DATA_DIR and write ``labels/<kind>.npz``; returns its path."""
    if kind not in KINDS:
        raise ValueError(f"unknown label kind {kind!r}; choose one of {', '.join(KINDS)}")
    records = dataset.load_manifest(data_dir)
    textures, spectrum = dataset.load_features(data_dir)
    if len(records) == 0:
        raise ValueError(f"{data_dir}: the manifest lists no frames")
    train_mask = np.array([r.split == "train" for r in records])
    if kind == "scene":
        scenes, names = scene_labels(data_dir, records)
        # The sound network's training frames when there are cluster labels: the same images and steps,
        # only the target differs.
        clusters = dataset.labels_file(data_dir, "cluster")
        keep = np.load(clusters)["keep"] if clusters.exists() else train_mask
        return _save(data_dir, kind, dict(labels=scenes, keep=keep, k=len(names), names=np.array(names)))
    if kind == "texton":
        from model.network.texton import texton_labels

        paths = [Path(data_dir) / r.image for r in records]
        return _save(data_dir, kind, texton_labels(paths, train_mask, k, settings, device or resolve_device(), progress))
    if kind == "spectrum":
        features, weights = spectrum, np.ones(spectrum.shape[1], dtype=np.float32)
    else:
        features, weights = textures, checked_texture_scale(textures.shape[1])
    weighted = features * weights
    if kind == "cluster":
        result = cluster_labels(weighted, train_mask, k, settings.seed, settings.restarts, settings, device,
                                progress)
        arrays = dict(labels=result.labels, centroids=result.centroids, distances=result.distances,
                      keep=result.keep, k=k)
    else:
        result = binary_codes(weighted, train_mask, settings.bits, device)
        arrays = dict(codes=result.codes, components=result.components, mean=result.mean, bits=settings.bits)
    return _save(data_dir, kind, dict(weights=weights, **arrays))


def _save(data_dir: str | Path, kind: str, arrays: dict) -> Path:
    path = dataset.labels_file(data_dir, kind)
    path.parent.mkdir(exist_ok=True)
    with dataset.atomic_file(path) as file:
        np.savez(file, kind=kind, **arrays)
    return path
