"""Every setting of the pipeline, in one typed place.

Each stage reads its own frozen dataclass; CLI flags override fields with
``dataclasses.replace``. Defaults are the paper's unless a comment says why not.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TextureSettings:
    """McDermott & Simoncelli (2011) sound texture statistics, as in the paper's A3."""

    sample_rate: int = 20_000          # audio is resampled to this before filtering
    n_cochlear: int = 30               # half-cosine ERB filters (+ low-pass and high-pass = 32)
    low_hz: float = 20.0
    high_hz: float = 10_000.0
    compression: float = 0.3           # envelope ** 0.3 mimics cochlear compression
    envelope_rate: int = 400           # envelopes resampled to 400 Hz
    n_modulation: int = 10             # modulation bands, log-spaced
    mod_low_hz: float = 0.5
    mod_high_hz: float = 200.0
    mod_q: float = 1.0
    correlation_offsets: tuple[int, ...] = (1, 2, 3, 5)
    clip_seconds: float = 3.75         # the paper's texture window
    spectrum_seconds: float = 1.0 / 30.0   # "Spectrum" model: 33.3 ms around the frame
    silence_rms: float = 1e-4          # below this RMS a clip is flagged silent


@dataclass(frozen=True)
class IngestSettings:
    frames_per_video: int = 10         # paper: 10 frames per video
    frame_size: int = 256              # frames stored as 256x256 JPEGs
    jpeg_quality: int = 90
    test_fraction: float = 0.2         # train/test split by video, deterministic by hash
    clip_format: str = "mp3"           # every browser plays mp3
    clip_sample_rate: int = 22_050


TEXTURE = TextureSettings()
INGEST = IngestSettings()
