"""A units pool: an ingested dataset (DATA_DIR, its frames) or a folder of still images.

A folder of still images (JPEG/PNG, found recursively) needs no ingest: its images are listed in
sorted order of their relative paths, and an image's place in that list is its row (what a dataset's
manifest line is for a frame). Still images have no video and no clip (``FrameRecord.clip == ""``):
the sound task skips them. Each image is scaled so its short side is the network's frame size and
centre-cropped, as ingest does to video frames (``model.data.media.resize_center_crop``); label-map masks
(model/units/segmentation.py) get the same geometry, nearest-neighbour.

Entry points: ``load_pool`` (every record of a pool), ``pool_records`` (those of a split) and
``stream_pool`` (decoded frames in batches).
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from model.data import dataset as ds
from model.data.frames import _ahead, stream_frames
from model.data.media import resize_center_crop

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
STILL_SPLIT = "test"          # still images were never trained on: every split of an image folder is all of it


def is_image_folder(path: str | Path) -> bool:
    """A folder that is not a dataset; whether it holds images is for ``still_image_records`` to say."""
    return Path(path).is_dir() and not ds.is_dataset(path)


def is_still(record: ds.FrameRecord) -> bool:
    return record.clip == ""


def image_paths(folder: str | Path) -> list[str]:
    """The JPEG/PNG files under ``folder`` (recursive), as sorted POSIX paths relative to it."""
    folder = Path(folder)
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*")
                  if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())


def still_image_records(folder: str | Path) -> list[ds.FrameRecord]:
    """One record per image of ``folder``, row = place in the sorted list; ValueError when there is none."""
    paths = image_paths(folder)
    if not paths:
        raise ValueError(f"{folder}: no {'/'.join(IMAGE_SUFFIXES)} images in this folder or below, and no "
                         f"{ds.MANIFEST} (not a dataset)")
    return [ds.FrameRecord(frame_id=row, video_id="", video="", frame_index=0, time=0.0, image=path, clip="",
                           split=STILL_SPLIT, silent=False) for row, path in enumerate(paths)]


def load_pool(path: str | Path) -> list[ds.FrameRecord]:
    """Every record of a pool in row order: a dataset's manifest, else the folder's still images."""
    return ds.load_manifest(path) if ds.is_dataset(path) else still_image_records(path)


def pool_records(path: str | Path, split: str) -> list[ds.FrameRecord]:
    """The records of ``split`` ("test", "train" or "all") in row order; an image folder is one split."""
    records = load_pool(path)
    pool = [r for r in records if split == "all" or r.split == split or is_still(r)]
    if not pool:
        raise ValueError(f"{path}: no frames in split {split!r}")
    return pool


def pool_digest(records: Sequence[ds.FrameRecord]) -> str:
    """SHA-256 of the pool's image paths in row order: rows mean the same images only while it is unchanged."""
    return hashlib.sha256("\n".join(r.image for r in records).encode()).hexdigest()


def read_still(path: Path, frame_size: int) -> np.ndarray:
    """(frame_size, frame_size, 3) uint8: the image's short side scaled to ``frame_size``, centre-cropped."""
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except (OSError, UnidentifiedImageError) as error:
        raise ValueError(f"{path}: not a readable JPEG/PNG image ({error})") from error
    return np.asarray(resize_center_crop(rgb, frame_size))


def stream_pool(root: str | Path, records: Sequence[ds.FrameRecord], frame_size: int, batch_size: int,
                device: torch.device | str, depth: int = 2) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """(positions in ``records``, uint8 (B, 3, frame_size, frame_size) frames on ``device``) per batch, in order.

    A dataset's frames go through the project's one JPEG decoder (model.data.frames), the pixels training
    saw; still images through PIL (JPEG and PNG, any size), read ``depth`` batches ahead by threads.
    """
    root = Path(root)
    if not any(is_still(r) for r in records):
        yield from stream_frames([root / r.image for r in records], frame_size, batch_size, device, depth=depth)
        return
    batches = (np.arange(start, min(start + batch_size, len(records))) for start in range(0, len(records), batch_size))

    def load(rows: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
        images = np.stack([read_still(root / records[i].image, frame_size) for i in rows])
        return rows, torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)

    yield from _ahead(batches, load, depth)
