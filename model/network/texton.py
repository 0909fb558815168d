"""Visual texton histograms of frames: the hand-made *visual* features of the paper's Texton-CNN control (4.2).

A bank of oriented filters (Leung & Malik 2001; SUN's parameters: 8 orientations, 2 scales, first and
second derivatives of an elongated Gaussian, plus centre-surround filters) is applied to each grey
frame; the responses of training pixels are clustered by k-means into ``textons``; a frame's feature is
the histogram of its pixels' nearest textons. ``ambient labels --kind texton`` clusters these histograms
the way sound textures are clustered, so a network can be trained to predict them instead of sound.

Entry point: ``frame_texton_histograms``. The filtering and assignment are pure torch functions.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from model.data.frames import stream_frames
from model.kmeans import cluster_labels
from model.settings import LABELS, TEXTON, LabelSettings, TextonSettings

ASSIGN_ROWS = 65_536          # pixels per nearest-texton computation: bounds its (rows, textons) matrix


def filter_bank(settings: TextonSettings = TEXTON) -> torch.Tensor:
    """(F, 1, S, S) float32 filters: per scale, ``orientations`` first and second derivatives of an
    elongated Gaussian, and a Laplacian of Gaussian; each zero-mean with unit L1 norm."""
    half = int(math.ceil(3 * settings.elongation * max(settings.sigmas)))
    y, x = torch.meshgrid(torch.arange(-half, half + 1.0), torch.arange(-half, half + 1.0), indexing="ij")
    filters = []
    for sigma in settings.sigmas:
        for i in range(settings.orientations):
            angle = math.pi * i / settings.orientations
            across = x * math.cos(angle) + y * math.sin(angle)       # derivatives are taken across the edge
            along = -x * math.sin(angle) + y * math.cos(angle)
            envelope = torch.exp(-across ** 2 / (2 * sigma ** 2) - along ** 2 / (2 * (settings.elongation * sigma) ** 2))
            filters.append(-across / sigma ** 2 * envelope)                              # edge
            filters.append((across ** 2 / sigma ** 4 - 1 / sigma ** 2) * envelope)       # bar
        radius_sq = x ** 2 + y ** 2
        filters.append((radius_sq / (2 * sigma ** 4) - 1 / sigma ** 2) * torch.exp(-radius_sq / (2 * sigma ** 2)))
    bank = torch.stack(filters)
    bank = bank - bank.mean((1, 2), keepdim=True)
    bank = bank / bank.abs().sum((1, 2), keepdim=True)
    return bank.unsqueeze(1).float()


def filter_responses(images: torch.Tensor, bank: torch.Tensor, stride: int = TEXTON.stride) -> torch.Tensor:
    """uint8 (B, 3, H, W) frames -> (B, h, w, F) responses of their grey levels, every ``stride`` pixels.

    Each frame's grey levels are centred and scaled to unit variance first, so textons describe the
    pattern rather than the exposure.
    """
    grey = images.float().mean(1, keepdim=True)
    grey = (grey - grey.mean((2, 3), keepdim=True)) / grey.std((2, 3), keepdim=True).clamp_min(1.0)
    pad = bank.shape[-1] // 2
    padded = torch.nn.functional.pad(grey, (pad, pad, pad, pad), mode="reflect")
    return torch.nn.functional.conv2d(padded, bank.to(images.device), stride=stride).permute(0, 2, 3, 1)


def nearest_textons(responses: torch.Tensor, textons: torch.Tensor) -> torch.Tensor:
    """(M, F) responses -> (M,) index of each one's nearest texton (Euclidean), in chunks."""
    textons_sq = (textons * textons).sum(1)
    return torch.cat([torch.addmm(textons_sq, chunk, textons.T, alpha=-2.0).argmin(1)
                      for chunk in responses.split(ASSIGN_ROWS)])


def texton_histogram(responses: torch.Tensor, textons: torch.Tensor) -> torch.Tensor:
    """(B, h, w, F) responses -> (B, textons) float32 histograms that sum to 1."""
    index = nearest_textons(responses.reshape(-1, responses.shape[-1]), textons).view(len(responses), -1)
    counts = torch.zeros(len(responses), len(textons), device=responses.device)
    counts.scatter_add_(1, index, torch.ones_like(index, dtype=counts.dtype))
    return counts / index.shape[1]


def learn_textons(image_paths: list[Path], settings: TextonSettings = TEXTON, device: torch.device | str = "cpu",
                  progress: bool = False) -> torch.Tensor:
    """(textons, F) k-means centres of filter responses sampled evenly from the frames at ``image_paths``."""
    bank = filter_bank(settings).to(device)
    generator = torch.Generator().manual_seed(settings.seed)
    per_frame = max(1, -(-settings.learn_pixels // len(image_paths)))
    samples = []
    for _, images in tqdm(stream_frames(image_paths, settings.frame_size, settings.batch_size, device),
                          total=-(-len(image_paths) // settings.batch_size), desc="texton responses",
                          unit="batch", disable=not progress, leave=False):
        responses = filter_responses(images, bank, settings.stride).flatten(1, 2)     # (B, h*w, F)
        pick = torch.randint(responses.shape[1], (len(responses), per_frame), generator=generator)
        samples.append(torch.gather(responses, 1, pick.to(device)[..., None].expand(-1, -1, responses.shape[2]))
                       .flatten(0, 1))
    samples = torch.cat(samples)
    if len(samples) < settings.textons:
        raise ValueError(f"{len(samples)} sampled responses cannot make {settings.textons} textons")
    # One restart: textons only need to tile the response space, not to be the best of several tilings.
    result = cluster_labels(samples.cpu().numpy(), np.ones(len(samples), bool), settings.textons,
                            settings.seed, restarts=1, settings=LABELS, device=torch.device(device))
    return torch.as_tensor(result.centroids, device=device)


def frame_texton_histograms(image_paths: list[Path], train_mask: np.ndarray, settings: TextonSettings = TEXTON,
                            device: torch.device | str = "cpu",
                            progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(histograms (N, textons) float32, textons (textons, F)) of the frames at ``image_paths``;
    the textons are learnt from the frames where ``train_mask`` is set."""
    train_mask = np.asarray(train_mask, bool)
    if not train_mask.any():
        raise ValueError("the training split is empty: no frames to learn textons from")
    textons = learn_textons([p for p, train in zip(image_paths, train_mask) if train], settings, device, progress)
    bank = filter_bank(settings).to(device)
    histograms = np.zeros((len(image_paths), settings.textons), np.float32)
    for rows, images in tqdm(stream_frames(image_paths, settings.frame_size, settings.batch_size, device),
                             total=-(-len(image_paths) // settings.batch_size), desc="texton histograms",
                             unit="batch", disable=not progress, leave=False):
        histograms[rows] = texton_histogram(filter_responses(images, bank, settings.stride), textons).cpu().numpy()
    return histograms, textons.cpu().numpy()


def texton_labels(image_paths: list[Path], train_mask: np.ndarray, k: int, label_settings: LabelSettings = LABELS,
                  device: torch.device | str = "cpu", progress: bool = False,
                  settings: TextonSettings | None = None) -> dict:
    """``labels/texton.npz``'s arrays: k-means of the frames' texton histograms, as sound textures are
    clustered (labels, centroids, distances, keep, k), plus the textons and histograms (``settings``: TEXTON)."""
    histograms, textons = frame_texton_histograms(image_paths, train_mask, settings or TEXTON, device, progress)
    # Square roots (the Hellinger embedding): Euclidean k-means then compares histograms sensibly.
    result = cluster_labels(np.sqrt(histograms), train_mask, k, label_settings.seed, label_settings.restarts,
                            label_settings, torch.device(device), progress)
    return dict(labels=result.labels, centroids=result.centroids, distances=result.distances, keep=result.keep,
                k=k, textons=textons, histograms=histograms)
