"""Generate the demo world: videos of scenes with objects and loosely tied sounds, plus their truth."""
from __future__ import annotations

import multiprocessing
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from model.categories import category_by_name
from model.data.dataset import write_json_atomic
from model.data.media import fill_fresh_memory, write_video
from model.settings import OBJECT_MODES, WORLD, WORLD_PRESETS, WorldSettings
from model.world import sounds, tuxpaint
from model.world.objects import DRAWERS
from model.world.scenes import LAYOUT, SCENES, Scene, place, render_background
from model.world.truth import MIN_PIXELS, SUMMARY, TRUTH_DIR, VIDEOS_DIR, camera_x, write_truth

MIN_VISIBLE = 0.5        # an object hidden more than this by nearer ones is left out of the picture


@dataclass
class WorldSummary:
    out_dir: str
    preset: str
    seed: int
    objects: str                       # "procedural" or "tuxpaint" (what was actually used)
    videos: int
    duration_s: float
    seconds: float                     # generation wall time
    object_counts: dict[str, int]      # instances on screen, per category
    sound_counts: dict[str, int]       # sound sources, per category (on and off screen)
    offscreen_sounds: int


@dataclass
class _Job:
    index: int
    seed: int
    duration_s: float
    mode: str
    out_dir: str
    settings: WorldSettings


def _drawable(category: str, stamps: dict[str, list[tuxpaint.Stamp]]) -> bool:
    return category in DRAWERS or category in stamps


def _voiced_stamps(category: str, stamps: dict[str, list[tuxpaint.Stamp]]) -> list[tuxpaint.Stamp]:
    """The category's stamps that come with their own recording."""
    return [stamp for stamp in stamps.get(category, []) if stamp.sound is not None]


def _has_voice(category: str, stamp: tuxpaint.Stamp | None) -> bool:
    return (stamp is not None and stamp.sound is not None) or category in sounds.SOURCE_SYNTHS


def _render_voice(category: str, stamp: tuxpaint.Stamp | None, rng: np.random.Generator,
                  n: int, sr: int) -> tuple[np.ndarray | None, str]:
    """(waveform, origin): the stamp's own recording when it has one, else the category's synth."""
    if stamp is not None and stamp.sound is not None:
        clip = tuxpaint.recording(stamp.sound, sr)
        if clip is not None:
            return sounds.loop_to_length(clip, n, rng, sr), f"recording:{stamp.sound.relative_to(tuxpaint.STAMPS_DIR)}"
    if category in sounds.SOURCE_SYNTHS:
        return sounds.SOURCE_SYNTHS[category](rng, n, sr), "synth"
    return None, ""


def _compose(scene: Scene, rng: np.random.Generator, cfg: WorldSettings, stamps,
             canvas_width: int) -> tuple[np.ndarray, list[dict], np.ndarray]:
    """Draw the canvas the camera pans over: (H x canvas_width x 3 uint8 image, object records, visible masks)."""
    background, horizon = render_background(scene, rng, canvas_width, cfg.height)
    choices = [c for c in scene.objects if _drawable(c, stamps)]
    count = int(rng.choice(len(cfg.object_count_weights), p=cfg.object_count_weights))
    categories = [str(c) for c in rng.choice(choices, size=count)]
    # Personal videos are mostly filmed because something is happening: the first object is then
    # the subject, a thing that makes a sound, nearer the camera and near the middle of the pan.
    flags = category_by_name()
    # A subject is something the world can make heard: a synthesised voice or a stamp with its recording.
    audible_kinds = [c for c in choices if flags[c].characteristic_sound
                     and (c in sounds.SOURCE_SYNTHS or _voiced_stamps(c, stamps))]
    has_subject = bool(categories) and bool(audible_kinds) and rng.random() < cfg.subject_probability
    if has_subject:
        categories[0] = str(rng.choice(audible_kinds))
    layer = {"horizon": 0, "wall": 0, "ground": 1, "sky": 2}
    placed = []
    for k, category in enumerate(categories):
        subject = has_subject and k == 0
        size_range, anchor = LAYOUT[category]
        low, high = size_range
        height = int((rng.uniform((low + high) / 2, high * cfg.subject_zoom) if subject
                      else rng.uniform(low, high)) * cfg.height)
        stamp = None
        # Few stamps of a category would repeat one photo; mix in procedural ones there for variety.
        if subject and category not in sounds.SOURCE_SYNTHS:      # the subject is heard: its own recording
            voiced = _voiced_stamps(category, stamps)
            stamp = voiced[rng.integers(len(voiced))]
            sprite = tuxpaint.sprite(stamp, rng, height)
        elif category in stamps and (len(stamps[category]) >= 3 or category not in DRAWERS or rng.random() < 0.5):
            stamp = stamps[category][rng.integers(len(stamps[category]))]
            sprite = tuxpaint.sprite(stamp, rng, height)
        else:
            sprite = DRAWERS[category](rng, height)
        if sprite.width > 0.6 * cfg.width:                      # wide things: keep them in the frame
            sprite = sprite.resize((int(0.6 * cfg.width), max(2, int(sprite.height * 0.6 * cfg.width / sprite.width))))
        x, y = place(anchor, rng, sprite.width, sprite.height, canvas_width, cfg.height, horizon,
                     centre=(0.35, 0.65) if subject else (0.1, 0.9))
        placed.append((layer[anchor], y + sprite.height, category, stamp, sprite, x, y, subject))
    placed.sort(key=lambda p: (p[0], p[1]))                     # far before near: painter's order

    canvas = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8)).convert("RGBA")
    drawn = []
    for _, _, category, stamp, sprite, x, y, subject in placed:
        layer_image = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
        layer_image.paste(sprite, (x, y))
        alpha = np.asarray(layer_image)[..., 3] > 127
        if alpha.sum() < MIN_PIXELS:                            # fell outside the canvas
            continue
        drawn.append((category, stamp, layer_image, alpha, subject))

    # Visible mask = own pixels not covered by anything drawn later; drop mostly hidden objects.
    while True:
        covered = np.zeros((cfg.height, canvas_width), bool)
        visible = []
        for _, _, _, alpha, _ in reversed(drawn):
            visible.append(alpha & ~covered)
            covered |= alpha
        visible.reverse()
        hidden = [i for i, (d, v) in enumerate(zip(drawn, visible)) if v.sum() < MIN_VISIBLE * d[3].sum()]
        if not hidden:
            break
        del drawn[hidden[0]]

    for _, _, layer_image, _, _ in drawn:
        canvas.alpha_composite(layer_image)
    image = np.asarray(canvas.convert("RGB")).astype(np.float32)
    image = image * rng.uniform(0.85, 1.1) + rng.normal(0, 1.5, image.shape)   # exposure + sensor noise
    records = []
    for k, ((category, stamp, _, _, subject), mask) in enumerate(zip(drawn, visible)):
        rows, cols = np.nonzero(mask)
        records.append({"id": k, "category": category, "mask": k, "subject": subject,
                        "bbox": [int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1],
                        "source": str(stamp.image.relative_to(tuxpaint.STAMPS_DIR)) if stamp else "procedural",
                        "_stamp": stamp})
    masks = np.stack(visible) if visible else np.zeros((0, cfg.height, canvas_width), bool)
    return np.clip(image, 0, 255).astype(np.uint8), records, masks


def _soundtrack(scene: Scene, objects: list[dict], rng: np.random.Generator, cfg: WorldSettings,
                duration_s: float, stamps) -> tuple[np.ndarray, list[dict]]:
    """Mix sources (gated to their audible intervals, louder when nearer/bigger) over the ambience."""
    sr, n = cfg.sample_rate, int(round(duration_s * cfg.sample_rate))
    flags = category_by_name()
    mix = sounds.AMBIENCES[scene.ambience](rng, n, sr) * rng.uniform(*cfg.ambience_rms)
    sources = []
    for obj in objects:
        if flags[obj["category"]].characteristic_sound and _has_voice(obj["category"], obj["_stamp"]):
            x0, y0, x1, y1 = obj["bbox"]
            nearness = np.clip((y1 - y0) / (0.4 * cfg.height), 0.6, 1.4)
            sources.append((obj["category"], obj["id"], obj["_stamp"], rng.uniform(*cfg.object_rms) * nearness))
    on_screen = {o["category"] for o in objects}
    # Off screen: something that belongs in this scene is heard but not seen.
    unseen = {c: _voiced_stamps(c, stamps) for c in scene.objects
              if flags[c].characteristic_sound and c not in on_screen}
    unseen = {c: voiced for c, voiced in unseen.items() if voiced or c in sounds.SOURCE_SYNTHS}
    if unseen and rng.random() < cfg.offscreen_probability:
        category = str(rng.choice(sorted(unseen)))
        stamp = unseen[category][rng.integers(len(unseen[category]))] if unseen[category] else None
        sources.append((category, None, stamp, rng.uniform(*cfg.object_rms) * 0.6))   # unseen: farther away

    records = []
    for category, object_id, stamp, rms in sources:
        waveform, origin = _render_voice(category, stamp, rng, n, sr)
        if waveform is None:
            continue
        intervals = sounds.audible_intervals(rng, duration_s, cfg.audible_on_s, cfg.audible_off_s)
        mix += waveform * sounds.gate(intervals, n, sr) * rms
        records.append({"category": category, "object": object_id, "on_screen": object_id is not None,
                        "origin": origin, "rms": round(float(rms), 4), "intervals": [list(i) for i in intervals]})
    peak = np.abs(mix).max()
    if peak > 0.95:                    # scale the whole mix (not clip) so every sound keeps its texture
        mix *= 0.95 / peak
    return mix.astype(np.float32), records


def _stem(index: int) -> str:
    return f"world_{index:05d}"


def generate_video(job: _Job) -> dict:
    """Write one video and its truth; return its truth record."""
    cfg = job.settings
    rng = np.random.default_rng([job.seed, job.index])
    stamps = tuxpaint.index_stamps() if job.mode == "tuxpaint" else {}
    scene = SCENES[rng.integers(len(SCENES))]
    pan = int(round(rng.uniform(*cfg.pan_fraction) * cfg.width))
    x_start, x_end = (0, pan) if rng.random() < 0.5 else (pan, 0)
    image, objects, masks = _compose(scene, rng, cfg, stamps, cfg.width + pan)
    audio, sound_records = _soundtrack(scene, objects, rng, cfg, job.duration_s, stamps)
    flags = category_by_name()
    out_dir, stem = Path(job.out_dir), _stem(job.index)
    for obj in objects:
        obj["sounding"] = flags[obj["category"]].characteristic_sound
        del obj["_stamp"]
    record = {"video": f"{VIDEOS_DIR}/{stem}.mp4", "scene": scene.name, "ambience": scene.ambience,
              "duration": job.duration_s, "width": cfg.width, "height": cfg.height, "fps": cfg.fps,
              "sample_rate": cfg.sample_rate,
              "camera": {"canvas_width": cfg.width + pan, "x_start": x_start, "x_end": x_end},
              "objects": objects, "sounds": sound_records, "masks": f"{stem}_masks.npz"}
    lefts = [camera_x(record, i / cfg.fps) for i in range(int(round(job.duration_s * cfg.fps)))]
    frames = np.stack([image[:, left:left + cfg.width] for left in lefts])
    write_video(out_dir / VIDEOS_DIR / f"{stem}.mp4", frames, cfg.fps, audio, cfg.sample_rate)
    write_truth(out_dir, stem, record, masks)
    return record


def resolve_mode(objects: str) -> str:
    if objects not in OBJECT_MODES:
        raise ValueError(f"objects must be one of {OBJECT_MODES}, not {objects!r}")
    if objects == "auto":
        return "tuxpaint" if tuxpaint.available() else "procedural"
    if objects == "tuxpaint" and not tuxpaint.available():
        raise FileNotFoundError(f"no tuxpaint stamps in {tuxpaint.STAMPS_DIR}; "
                                "apt-get install tuxpaint-stamps-default, or use --objects procedural")
    return objects


def encoding_pool(workers: int) -> ProcessPoolExecutor:
    """Processes to encode world videos in. Same world, same bytes: they fill the memory they are given
    (fill_fresh_memory), also for one worker, so the caller's process keeps its ordinary allocator. Started from a
    fork server, never a plain fork of the caller: forking a threaded process (pytest, the app) can deadlock a child."""
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"),
                               initializer=fill_fresh_memory)


def generate_world(out_dir: str | Path, videos: int | None = None, seed: int = 0, preset: str = "demo",
                   objects: str = "auto", workers: int | None = None, progress: bool = True,
                   settings: WorldSettings = WORLD) -> WorldSummary:
    """Generate `videos` videos (default: the preset's count) with truth into `out_dir`."""
    if preset not in WORLD_PRESETS:
        raise ValueError(f"preset must be one of {sorted(WORLD_PRESETS)}, not {preset!r}")
    mode = resolve_mode(objects)
    spec = WORLD_PRESETS[preset]
    count = spec.videos if videos is None else videos
    if count < 1:
        raise ValueError(f"videos must be at least 1, not {count}")
    settings = replace(settings, workers=workers or settings.workers)
    out = Path(out_dir)
    (out / VIDEOS_DIR).mkdir(parents=True, exist_ok=True)
    (out / TRUTH_DIR).mkdir(exist_ok=True)
    # A new world replaces an old one here; world.json is written last, so it marks a finished world.
    (out / SUMMARY).unlink(missing_ok=True)
    for stale in [*(out / VIDEOS_DIR).glob("world_*.mp4"), *(out / TRUTH_DIR).glob("world_*")]:
        stale.unlink()
    jobs = [_Job(i, seed, spec.duration_s, mode, str(out), settings) for i in range(count)]
    started = time.perf_counter()
    n_workers = max(1, min(settings.workers, count, os.cpu_count() or 1))
    bar = tqdm(total=count, desc="world", unit="video", disable=not progress)
    records = []
    with encoding_pool(n_workers) as pool:
        for record in pool.map(generate_video, jobs, chunksize=4):
            records.append(record)
            bar.update()
    bar.close()
    summary = WorldSummary(
        out_dir=str(out), preset=preset, seed=seed, objects=mode, videos=count, duration_s=spec.duration_s,
        seconds=round(time.perf_counter() - started, 2),
        object_counts=dict(sorted(Counter(o["category"] for r in records for o in r["objects"]).items())),
        sound_counts=dict(sorted(Counter(s["category"] for r in records for s in r["sounds"]).items())),
        offscreen_sounds=sum(not s["on_screen"] for r in records for s in r["sounds"]))
    write_json_atomic(out / SUMMARY, {**asdict(summary), "scenes": dict(Counter(r["scene"] for r in records))})
    return summary
