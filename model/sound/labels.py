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

from model.data import dataset
from model.data.dataset import LABEL_KINDS
from model.device import resolve_device
from model.kmeans import cluster_labels
from model.settings import LABELS, LabelSettings
from model.sound import texture as audio


@dataclass
class BinaryCodes:
    codes: np.ndarray        # (N, bits) uint8: sign of each centred projection
    components: np.ndarray   # (bits, D) principal axes of the training split, largest variance first
    mean: np.ndarray         # (D,) training mean


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
    if kind not in LABEL_KINDS:
        raise ValueError(f"unknown label kind {kind!r}; choose one of {', '.join(LABEL_KINDS)}")
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
