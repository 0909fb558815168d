"""Every setting of the pipeline, in one typed place.

Each stage reads its own frozen dataclass; CLI flags override fields with
``dataclasses.replace``. Defaults are the paper's unless a comment says why not.
"""
from __future__ import annotations

from dataclasses import dataclass

# Paper 4.1: a unit is a detector when >= 60% of its top images contain its object (human or automatic label).
DETECTOR_PRECISION = 0.6


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
    device: str = "auto"               # sound textures: "cpu" (numpy/scipy), "cuda" (torch), "auto": cuda if present


TEXTURE = TextureSettings()
INGEST = IngestSettings()


@dataclass(frozen=True)
class LabelSettings:
    """Sound labels (paper 3.2): k-means clusters or a binary code from PCA projections."""

    clusters: int = 30                 # paper: k = 30
    restarts: int = 3                  # k-means++ restarts; the lowest inertia wins
    max_iterations: int = 100
    tolerance: float = 1e-4            # stop when the inertia improves by less than this fraction
    bits: int = 30                     # binary code length (top principal components)
    seed: int = 0
    chunk_rows: int = 65_536           # distance computations in chunks, so 1.8M x 502 fits in memory
    init_sample: int = 100_000         # k-means++ seeding runs on at most this many random training rows


@dataclass(frozen=True)
class TrainSettings:
    """CaffeNet-BN training. The defaults are the paper preset; see TRAIN_PRESETS."""

    frame_size: int = 256              # frames are resized to this before random crops
    crop_size: int = 227
    fc_width: int = 4096
    batch_size: int = 256              # paper: 256 (global, split across DDP processes)
    epochs: int = 45                   # paper: 320,000 iterations x 256 = ~45 epochs of 1.8M frames
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_fraction: float = 0.02      # linear warm-up, then cosine decay to zero
    evals_per_epoch: int = 1
    checkpoint_steps: int = 500        # also checkpointed after every evaluation
    cache_bytes: int = 8 << 30         # decoded frames kept in memory if they fit; else streamed from tar shards
    shuffle_buffer: int = 2000         # streaming: frames shuffled in a buffer of this many JPEGs (~30 MB at 256 px)
    compile: bool = True               # torch.compile the model (CUDA only; compiling on a CPU costs more than it saves)
    seed: int = 0
    keep_checkpoints: int = 0          # weights kept at this many evenly spaced steps (the last always): emergence


LABELS = LabelSettings()
# Frames per tar shard (model/data/shards.py): ~15 MB of 256 px frames; 1.8 M frames make ~1,800 shards, enough for
# many DDP ranks to read disjoint ones.
SHARD_FRAMES = 1000
# `ambient train` warns below this many optimiser steps: the demo network needs about this many to learn.
FEW_STEPS = 200
TRAIN_PRESETS = {
    "paper": TrainSettings(),
    # The demo world (8,000 frames) on a 2-core CPU in minutes: small frames and fc layers, 6 epochs in
    # batches of 32 (~3,200 kept training frames: ~600 steps). Chosen on world seed 6 (not one of
    # make science's seeds 0-4), 400 -> 800 videos and lr 0.01 -> 0.02: 20 -> 26 -> 62 detectors,
    # 13.7% -> 17.6% -> 17.5% held-out accuracy; 12 epochs on 400 videos gave 16 (the network memorises).
    "demo": TrainSettings(frame_size=144, crop_size=128, fc_width=1024, batch_size=32, epochs=6,
                          lr=0.02, checkpoint_steps=50),
    # Tests: seconds per run.
    "tiny": TrainSettings(frame_size=80, crop_size=67, fc_width=64, batch_size=8, epochs=2,
                          lr=0.01, checkpoint_steps=2, warmup_fraction=0.0),
}


@dataclass(frozen=True)
class AnnotationSettings:
    """Human labelling of units, as in the paper's section 4.1 (there: Mechanical Turk)."""

    annotators_per_unit: int = 3       # different people label each unit
    reservation_minutes: int = 30      # a unit handed to an annotator is held for them this long
    sound_clips_per_unit: int = 30     # clips judged for audibility per detector (Table 1 rows 3-4)
    top_images: int = 60               # images shown per unit: its 60 largest activations


ANNOTATION = AnnotationSettings()


@dataclass(frozen=True)
class WorldPreset:
    videos: int
    duration_s: float


@dataclass(frozen=True)
class WorldSettings:
    """The generated demo world (model/world): sizes, rates and how loosely sound follows sight."""

    width: int = 320                   # ingest resizes the short side to 256 and centre-crops
    height: int = 256
    fps: int = 10
    sample_rate: int = 22_050
    # P(0, 1, 2, 3 objects). Empty videos are few: their "nothing audible" frames were the majority
    # cluster (14% of seed 0's kept training frames at 10%; 5.0% now), a label no picture can predict.
    object_count_weights: tuple[float, ...] = (0.05, 0.4, 0.35, 0.2)
    # Share of videos (with objects) filmed around a subject that makes a sound, as personal videos
    # are (the paper's Flickr videos: people, babies, pets, traffic, waterfalls). The subject is always
    # heard: a category with a synthesised voice, or a stamp that comes with its recording.
    subject_probability: float = 1.0
    # The subject is filmed from nearer than other objects: its height is drawn between the middle of
    # its category's range and this multiple of the range's top (people film what they record close up).
    subject_zoom: float = 1.3
    audible_on_s: tuple[float, float] = (3.0, 6.0)        # a sounding object's bursts of sound ...
    audible_off_s: tuple[float, float] = (0.5, 1.5)       # ... and its pauses: heard ~80% of the time
    offscreen_probability: float = 0.15                   # chance a video also hears an unseen source
    object_rms: tuple[float, float] = (0.06, 0.15)        # loudness of a sound source
    ambience_rms: tuple[float, float] = (0.008, 0.02)     # scene ambience stays well below the sources
    # The camera pans linearly (random direction) over a canvas this much wider than the frame, as a
    # fraction of the frame width over the whole video; the frames ingest samples (the middle
    # duration - 3.75 s) then differ: a 6 s video's sampled span moves 15-23% of the frame width.
    pan_fraction: tuple[float, float] = (0.4, 0.6)
    workers: int = 2


WORLD = WorldSettings()
OBJECT_MODES = ("auto", "procedural", "tuxpaint")   # where the world's objects come from (model/world)
WORLD_PRESETS = {
    "tiny": WorldPreset(videos=4, duration_s=6.0),        # tests: seconds
    "demo": WorldPreset(videos=800, duration_s=6.0),      # ~1 min here; ~8,000 frames after ingest
    "large": WorldPreset(videos=5000, duration_s=10.0),   # for GPU runs
}


@dataclass(frozen=True)
class UnitSettings:
    """Unit visualisation (paper 4.1, after Zhou et al. 2015) and its truth-based dissection."""

    layer: str = "conv5"
    top: int = 60                      # paper: each unit's 60 most activating images
    split: str = "test"                # the pool: the paper sampled its Flickr test set
    batch_size: int = 128
    workers: int = 4                   # batches read and decoded ahead by threads (model.data.frames.stream_frames)
    cluster_part_batches: int = 16     # on a Ray cluster (--ray): at most this many batches of the pool per task
    activation_fraction: float = 0.5   # paper: positions with at least half the image's maximum
    # Zhou et al. 2015 ("Object detectors emerge in deep scene CNNs", Table 2) measure the empirical
    # receptive field at pool5 as about a third of the theoretical one; the circle's diameter is that size.
    empirical_rf_fraction: float = 1.0 / 3.0
    darken: float = 0.2                # brightness kept outside the receptive-field circles
    jpeg_quality: int = 85
    # Dissection: an image contains a category when the category's pixels and the unit's region
    # overlap by at least this fraction of the smaller of the two (see model/units/dissect.py).
    overlap_fraction: float = 0.5
    # Network Dissection (Bau et al. 2017): a unit's activation threshold is its top 0.5% quantile over the
    # whole pool, and the unit is labelled with its best class when that class's IoU exceeds 0.04.
    top_quantile: float = 0.005
    min_iou: float = 0.04
    # The streaming quantile's relative error (model.units.activations.RunningQuantile): fixed memory per unit.
    quantile_error: float = 0.005
    # Beyond the top images (Gale et al. 2020: a precise unit can still fire on much else): a histogram of
    # each pool image's spatial maximum, and the images nearest these quantiles of it, masked the same way.
    sample_quantiles: tuple[float, ...] = (0.99, 0.9, 0.5)
    samples_per_quantile: int = 10
    histogram_bins: int = 40
    similar_units: int = 8             # the unit page lists this many units whose pool maxima correlate most


UNITS = UnitSettings()


@dataclass(frozen=True)
class VisualizeSettings:
    """Feature visualisation by optimisation (``ambient visualize``; Olah et al. 2017, Lucid's defaults)."""

    layer: str = "conv5"
    steps: int = 128                   # Adam steps per image; readable at 128 on the demo network, 512 in Lucid
    size: int = 96                     # image side for conv units (a cluster's image is the network's input side)
    lr: float = 0.05
    batch: int = 64                    # images optimised together (one forward pass per step)
    decay_power: float = 1.0           # the Fourier parameterisation's 1/f^p scale: natural-image spectra
    pad: int = 12                      # transforms each step: pad, then jitter, scale and rotate at random
    jitter: int = 8
    scales: tuple[float, float] = (0.9, 1.1)
    max_degrees: float = 10.0
    seed: int = 0


VISUALIZE = VisualizeSettings()


@dataclass(frozen=True)
class AblationSettings:
    """Units switched off in the forward pass (``ambient ablate``, model/units/ablate.py)."""

    layer: str = "conv5"
    random_repeats: int = 20           # random unit sets of the same size per ablation: the control's spread
    seed: int = 0                      # of those random draws
    batch_size: int = 128              # test frames per forward pass
    helps_predict: int = 5             # the unit page's "sounds this unit helps predict": this many clusters


ABLATION = AblationSettings()


@dataclass(frozen=True)
class LocalizationSettings:
    """Where the sound comes from, scored against the world's truth (``ambient localize``, model/units/localize.py).

    The literature's convention (LVS, Chen et al. 2021, and EZ-VSL's evaluation code): each heatmap is
    binarised at its median (the pixels strictly above it, at most half the picture), a frame's cIoU is that
    region's IoU with the truth, ``ciou`` the share of frames with cIoU >= ``success_ciou`` and ``auc`` the
    area under that share as the cIoU threshold runs from 0 to 1 in ``auc_steps`` steps."""

    layer: str = "conv5"
    method: str = "gradcam"            # the heatmap of the main figures; every method is also compared
    success_ciou: float = 0.5
    auc_steps: int = 21                # cIoU thresholds 0, 0.05, ..., 1
    min_source_pixels: int = 16        # a source with fewer pixels in the network's crop is not on screen
    center_sigma: float = 0.25         # the centre prior: a Gaussian of this many crop sides
    batch_size: int = 64
    examples: int = 4                  # example frames (heatmap beside the truth) for the results page


LOCALIZATION = LocalizationSettings()
POOL_SPLITS = ("test", "train", "all")   # which frames of a dataset form a units pool


@dataclass(frozen=True)
class MediaLimits:
    """Videos ingest refuses (see model/data/ingest.py): the first two from the header alone, before decoding."""

    # 8K DCI: a bigger frame is more likely a decompression bomb than footage (one RGB frame is > 100 MB).
    max_video_pixels: int = 8192 * 4320
    min_video_side: int = 32           # below this the 256x256 crop is nothing but interpolation
    # A file cut short keeps its header's duration: audio or frames that stop this long before the
    # time asked for mean the data is missing (a clip is not padded with silence, a frame not frozen).
    max_missing_audio_s: float = 0.1
    max_frame_gap_s: float = 1.0
    # Streams whose data ends this much before the end their header promises are reported (file cut short?).
    max_short_of_header_s: float = 1.5
    # Where each stream's data ends is read from this long before the promised end (seek, then read on).
    tail_seek_s: float = 3.0


MEDIA_LIMITS = MediaLimits()
# The files ingest reads as videos (and the job forms offer as folders of videos); here, not in
# model/data/media.py, so that the web app tells a folder of videos without importing PyAV.
VIDEO_SUFFIXES = {".mp4", ".m4v", ".webm", ".mkv", ".mov", ".avi", ".ogv", ".mpg", ".mpeg", ".3gp"}


@dataclass(frozen=True)
class TextonSettings:
    """Visual texton histograms (the paper's Texton-CNN control, 4.2; Leung & Malik 2001, SUN's parameters)."""

    frame_size: int = 128              # frames are filtered at this side (texture needs no more)
    orientations: int = 8              # SUN (Xiao et al. 2010): 8 orientations ...
    sigmas: tuple[float, ...] = (1.0, 2.0)   # ... and 2 scales of oriented first and second Gaussian derivatives
    elongation: float = 3.0            # the filters are this much longer along their orientation
    textons: int = 512                 # paper: 512-dimensional texton histograms
    stride: int = 2                    # responses sampled every 2 pixels for the histograms
    learn_pixels: int = 100_000        # texton k-means runs on this many responses from training frames
    batch_size: int = 32
    seed: int = 0


TEXTON = TextonSettings()


@dataclass(frozen=True)
class ProbeSettings:
    """Linear probes of a network's layers (paper 4.2, Table 2)."""

    layers: tuple[str, ...] = ("max5", "pool5", "fc6", "fc7")
    c_grid: tuple[float, ...] = tuple(0.5 ** k for k in range(4, 20))   # paper: {0.5^k | 4 <= k < 20}
    folds: int = 3                     # C by 3-fold cross-validation
    per_class: int = 20                # imagefolder: SUN397's 20 training images per class ...
    splits: int = 3                    # ... over 3 splits
    world_test_fraction: float = 0.5   # world tasks: this share of the held-out videos scores the SVMs
    world_min_videos: int = 3          # world objects: scored where on (and off) screen in this many videos a side
    # Train jobs probe a world's data from this many held-out videos: with 16 (an 80-video world) no object
    # was on and off screen in 3 videos on both sides of every split, and the probe could not be scored.
    world_min_test_videos: int = 40
    batch_size: int = 64
    max_iter: int = 10_000             # LinearSVC iterations
    jobs: int = 1                      # (network, layer) pairs probed at a time, each in its own process
    seed: int = 0


PROBE = ProbeSettings()
