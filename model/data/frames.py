"""Training data: frames as uint8 tensors on the training device, sound-label targets, and GPU-friendly
augmentation (random crop + flip as one gather, so the same code runs on CPU and GPU).

Frames are decoded once into an in-memory uint8 cache (``FrameSource``) when they fit ``cache_bytes``;
otherwise training streams them from the dataset's tar shards (``model/data/shards.py``) and each batch is
decoded on the device (``decode_ahead``: ``torchvision.io.decode_jpeg(device="cuda")`` on a GPU).
``decode_frames`` is the one JPEG decoder of the project: training and unit extraction both use it.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_jpeg, read_file
from tqdm import tqdm

from model.data import dataset
from model.data.dataset import LABEL_KINDS, labels_file
from model.network.run import resize_frames

DECODE_BATCH = 256


@dataclass
class LabelTargets:
    """Targets of every frame plus which frames train and test on."""

    kind: str
    targets: torch.Tensor        # (N,) int64 cluster ids or (N, bits) float32 codes
    train_index: np.ndarray      # frames to train on (cluster: only those within the median distance)
    test_index: np.ndarray
    num_outputs: int

    @property
    def multilabel(self) -> bool:
        return self.targets.ndim == 2

    def chance(self) -> float:
        return 0.5 if self.multilabel else 1.0 / self.num_outputs

    def majority(self) -> float:
        """Accuracy on the test split of always predicting the most common training label (per bit)."""
        train, test = self.targets[self.train_index], self.targets[self.test_index]
        if self.multilabel:
            majority_bits = (train.mean(0) >= 0.5).float()
            return float((test == majority_bits).float().mean())
        most_common = torch.bincount(train, minlength=self.num_outputs).argmax()
        return float((test == most_common).float().mean())


def load_targets(data_dir: str | Path, kind: str, splits: np.ndarray) -> LabelTargets:
    """The labels of ``kind`` for every manifest row; ``splits``: each row's split (``dataset.load_splits``)."""
    if kind not in LABEL_KINDS:
        raise ValueError(f"unknown label kind {kind!r}; choose one of {', '.join(LABEL_KINDS)}")
    path = labels_file(data_dir, kind)
    if not path.exists():
        raise FileNotFoundError(f"{data_dir}: no {kind} labels ({path}); run `ambient labels {data_dir} --kind {kind}`")
    saved = np.load(path)
    split = np.asarray(splits)
    if kind in ("cluster", "scene", "texton"):   # one class per frame (scene, texton: controls, see model/sound/labels.py)
        targets = torch.as_tensor(saved["labels"], dtype=torch.long)
        train_mask, num_outputs = saved["keep"], int(saved["k"])
    else:
        targets = torch.as_tensor(saved["codes"], dtype=torch.float32)
        train_mask, num_outputs = split == "train", targets.shape[1]
    if len(targets) != len(split):
        raise ValueError(f"{path} labels {len(targets)} frames but the manifest has {len(split)}; "
                         f"rerun `ambient labels`")
    train_index, test_index = np.flatnonzero(train_mask), np.flatnonzero(split == "test")
    for name, index in (("train", train_index), ("test", test_index)):
        if len(index) == 0:
            raise ValueError(f"{data_dir}: the {name} split is empty")
    return LabelTargets(kind, targets, train_index, test_index, num_outputs)


def decode_frames(jpegs: list[torch.Tensor], frame_size: int, device: torch.device | str,
                  names: list | None = None) -> torch.Tensor:
    """uint8 (B, 3, frame_size, frame_size) on ``device`` from encoded JPEG bytes (uint8 1-D tensors).

    One batched call: nvJPEG on a GPU, libjpeg-turbo on the CPU. A JPEG that does not decode raises
    ValueError naming it (``names``: the files the bytes came from).
    """
    try:
        images = decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=device)
    except RuntimeError as error:          # find the file: torchvision's message does not name it
        for jpeg, name in zip(jpegs, names or range(len(jpegs))):
            try:
                decode_jpeg(jpeg, mode=ImageReadMode.RGB)
            except RuntimeError as bad:
                raise ValueError(f"{name}: not a decodable JPEG ({bad})") from bad
        raise error
    if len({image.shape for image in images}) == 1:
        return resize_frames(torch.stack(images), frame_size)
    return torch.cat([resize_frames(image[None], frame_size) for image in images])   # mixed sizes


def stream_frames(paths: list[Path], frame_size: int, batch_size: int, device: torch.device | str,
                  depth: int = 4) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """(positions in ``paths``, decoded frames) per batch, in order; files are read and decoded
    ``depth`` batches ahead by threads, so memory does not grow with the number of paths."""
    batches = (np.arange(start, min(start + batch_size, len(paths))) for start in range(0, len(paths), batch_size))

    def load(rows: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
        names = [paths[i] for i in rows]
        return rows, decode_frames([read_file(str(name)) for name in names], frame_size, device, names)

    yield from _ahead(batches, load, depth)


def _ahead(items: Iterator, work, depth: int) -> Iterator:
    """``work(item)`` for each item, in order, computed up to ``depth`` items ahead by threads."""
    with ThreadPoolExecutor(depth) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(work, item))
            if len(pending) >= depth:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


class FrameSource:
    """Every frame of ``records`` decoded once into a uint8 (N, 3, S, S) cache on ``device``; ``get(rows)``
    takes a batch from it. Training uses it when the frames fit ``TrainSettings.cache_bytes``."""

    def __init__(self, data_dir: str | Path, records: list[dataset.FrameRecord], frame_size: int,
                 device: torch.device, progress: bool = True):
        self.frame_size, self.device = frame_size, device
        self.paths = [Path(data_dir) / r.image for r in records]
        jpegs = [read_file(str(path))
                 for path in tqdm(self.paths, desc="reading frames", disable=not progress, leave=False)]
        self.cache = torch.cat([
            decode_frames([jpegs[i] for i in rows], frame_size, device, [self.paths[i] for i in rows])
            for rows in tqdm([range(start, min(start + DECODE_BATCH, len(records)))
                              for start in range(0, len(records), DECODE_BATCH)],
                             desc="decoding frames", disable=not progress, leave=False)])

    def get(self, rows: np.ndarray) -> torch.Tensor:
        return self.cache[torch.as_tensor(rows, device=self.device)]


def random_crop_flip(images: torch.Tensor, crop: int, generator: torch.Generator) -> torch.Tensor:
    """A random ``crop`` x ``crop`` window per image, mirrored with probability 1/2, in one gather.

    Returns (B, 3, crop, crop) uint8 in channels_last memory layout (what cuDNN convolutions prefer).
    """
    batch, _, height, width = images.shape
    top = torch.randint(0, height - crop + 1, (batch, 1), generator=generator)
    left = torch.randint(0, width - crop + 1, (batch, 1), generator=generator)
    flip = torch.rand(batch, 1, generator=generator) < 0.5
    offsets = torch.arange(crop).unsqueeze(0)
    rows = (top + offsets).to(images.device)
    cols = torch.where(flip, left + crop - 1 - offsets, left + offsets).to(images.device)
    batch_index = torch.arange(batch, device=images.device)[:, None, None]
    # Advanced indices around a slice put the indexed dims first: (B, crop, crop, 3).
    return images[batch_index, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def decode_ahead(batches: Iterator[tuple[np.ndarray, list[bytes], list[str]]], frame_size: int,
                 device: torch.device, depth: int = 4) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """(rows, decoded frames) for each (rows, JPEG bytes, their names) batch, decoded ``depth`` batches
    ahead by threads, so decoding (nvJPEG's CPU stages and the GPU) overlaps with training.

    On a GPU each worker decodes on its own CUDA stream; the consumer's stream waits for it before using a batch.
    """
    cuda = device.type == "cuda"

    def load(batch: tuple[np.ndarray, list[bytes], list[str]]):
        rows, jpegs, names = batch
        encoded = [torch.frombuffer(bytearray(jpeg), dtype=torch.uint8) for jpeg in jpegs]
        if not cuda:
            return rows, decode_frames(encoded, frame_size, device, names), None
        stream = torch.cuda.Stream(device)
        with torch.cuda.stream(stream):
            return rows, decode_frames(encoded, frame_size, device, names), stream

    for loaded in _ahead(batches, load, depth):
        yield _ready(*loaded)


def _ready(rows: np.ndarray, images: torch.Tensor, stream) -> tuple[np.ndarray, torch.Tensor]:
    if stream is not None:
        consumer = torch.cuda.current_stream(images.device)
        consumer.wait_stream(stream)
        images.record_stream(consumer)   # keep the caching allocator from reusing it too early
    return rows, images
