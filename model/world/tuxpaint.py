"""Real media from Debian's tuxpaint-stamps-default: photo cut-outs (alpha = exact mask) and their sounds."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from math import gcd
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import signal

from model.data.media import MediaError, read_audio

STAMPS_DIR = Path("/usr/share/tuxpaint/stamps")

# Stamp files (globs under STAMPS_DIR) -> our category. Chosen by hand from the package's
# folders; symbols and most cartoons are left out so the objects look like the real thing.
STAMP_CATEGORIES: tuple[tuple[str, str], ...] = (
    ("animals/birds/*.png", "bird"),
    ("animals/mammals/dogs/dog.png", "dog"),
    ("animals/mammals/dogs/dingo.png", "dog"),
    ("animals/mammals/bovines/cow*.png", "cow"),
    ("animals/mammals/bovines/bull.png", "cow"),
    ("animals/mammals/equines/horse.png", "horse"),
    ("vehicles/auto/beetle.png", "car"),
    ("vehicles/auto/sedan.png", "car"),
    ("vehicles/auto/sportscar2.png", "car"),
    ("vehicles/emergency/sedan_police*.png", "car"),
    ("vehicles/auto/truck.png", "truck"),
    ("vehicles/garbagetruck.png", "truck"),
    ("vehicles/construction/dumper*.png", "truck"),
    ("vehicles/emergency/firetruck.png", "truck"),
    ("vehicles/masstransit/green_korean_bus.png", "bus"),
    ("hobbies/music/*/*.png", "musical instrument"),
    ("plants/trees/birch.png", "tree"),
    ("plants/trees/holm_oak.png", "tree"),
    ("plants/trees/tree336.png", "tree"),
    ("plants/flowers/*.png", "flower"),
    ("people/fireman*.png", "person"),
    ("town/houses/cartoon/*home.png", "house"),
    ("town/houses/cartoon/wooden_cottage.png", "house"),
    ("vehicles/ship/walnutBoat.png", "boat"),
    ("vehicles/ship/chineseJunk.png", "boat"),
)


@dataclass(frozen=True)
class Stamp:
    category: str
    image: Path
    sound: Path | None          # the object's own recorded sound effect, when the package has one


def available(root: Path = STAMPS_DIR) -> bool:
    return root.is_dir() and any(root.glob("animals/**/*.png"))


@lru_cache(maxsize=4)
def index_stamps(root: Path = STAMPS_DIR) -> dict[str, list[Stamp]]:
    """Every usable stamp under `root`, by category (empty when the package is absent)."""
    stamps: dict[str, list[Stamp]] = {}
    if not root.is_dir():
        return stamps
    for pattern, category in STAMP_CATEGORIES:
        for image in sorted(root.glob(pattern)):
            # Sound effects sit beside the image as <name>.ogg/.wav; <name>_desc*.ogg are spoken names.
            sound = next((p for p in (image.with_suffix(".ogg"), image.with_suffix(".wav")) if p.exists()), None)
            stamps.setdefault(category, []).append(Stamp(category, image, sound))
    return stamps


@lru_cache(maxsize=256)
def _original(path: Path) -> Image.Image:
    image = Image.open(path).convert("RGBA")
    return image.crop(image.getbbox() or (0, 0, *image.size))     # trim transparent margins


def sprite(stamp: Stamp, rng: np.random.Generator, height: int) -> Image.Image:
    """The stamp scaled to `height` px, randomly mirrored and re-lit, as RGBA."""
    image = _original(stamp.image)
    width = max(2, round(image.width * height / image.height))
    image = image.resize((width, max(2, height)), Image.Resampling.LANCZOS)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    rgba = np.asarray(image).astype(np.float32)
    rgba[..., :3] *= rng.uniform(0.8, 1.15) * rng.uniform(0.93, 1.07, 3)
    return Image.fromarray(np.clip(rgba, 0, 255).astype(np.uint8), "RGBA")


@lru_cache(maxsize=128)
def recording(path: Path, sample_rate: int) -> np.ndarray | None:
    """The stamp's sound at `sample_rate`, trimmed of leading/trailing silence; None if unreadable."""
    try:
        waveform, rate = read_audio(path)
    except MediaError:
        return None
    if rate != sample_rate:
        g = gcd(rate, sample_rate)
        waveform = signal.resample_poly(waveform, sample_rate // g, rate // g).astype(np.float32)
    loud = np.flatnonzero(np.abs(waveform) > 0.02 * np.abs(waveform).max(initial=1e-9))
    return waveform[loud[0]:loud[-1] + 1] if loud.size else None
