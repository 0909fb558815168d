"""Where is the sound? A trained run's heatmaps scored against the world's truth (``ambient localize``).

The field's sound-source localisation (Senocak et al. 2018; LVS, Chen et al. 2021; EZ-VSL) scores a heatmap
against a hand-drawn box; the generated world knows every object's pixels and which objects are heard at each
moment, so here the truth of a frame is the union of the masks of the objects whose own sound is audible then
(``FrameTruth.objects[i].audible``), on the network's input crop.

Conventions (``LocalizationSettings``, the literature's): a heatmap is binarised at its median (the pixels
strictly above it; LVS's and EZ-VSL's evaluation code), a frame's cIoU is that region's IoU with the truth
(the consensus IoU with one annotator), ``ciou`` is the share of frames whose cIoU >= 0.5, ``auc`` the area
under that share as the cIoU threshold runs over 0, 0.05, ..., 1, ``pointing`` the share of frames whose
heatmap peak lies on a sounding object (the pointing game, Zhang et al. 2016, without tolerance); a heatmap that
is zero everywhere points nowhere and scores 0 (``blank``: the share of such frames; Grad-CAM's is zero where
every gradient-weighted map is negative). ``mean_ciou`` is the mean of the frames' cIoU.

Frames fall into four kinds: ``visible`` (an audible source with at least ``min_source_pixels`` in the crop:
these are scored), ``offscreen`` (something is heard, but no source is in the crop: the negatives the field's
benchmarks lack), ``silent`` (nothing but the ambience is heard, objects in view) and ``empty`` (neither).
On every kind, each heatmap's raw peak and the share of its mass on objects not heard ("silent objects") are
kept, so that the negatives can be set against the frames with a visible source.

Pure parts (arrays in, figures out): ``binarize``, ``frame_ciou``, ``pointing_hit``, ``summarize``,
``center_prior``, ``frame_kind``, ``heat_shares``, ``truth_outline``. ``localize_run`` reads the run, the
world and the frames, and computes the heatmaps (model/units/predict.py) of the run's network, of the same
architecture untrained (the run's seed) and, given one, of the scene-trained control.
"""
from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from model.data import dataset as ds
from model.data import pool as pl
from model.data.frames import load_targets
from model.data.media import resize_center_crop
from model.network.run import RunFolder, center_crop, load_run
from model.settings import LOCALIZATION, LocalizationSettings
from model.units.predict import HEATMAP_METHODS, heatmap, heatmap_overlay, one_hot, png_bytes, upsample_heat

FRAME_KINDS = ("visible", "offscreen", "silent", "empty")


class NoTruth(ValueError):
    """The run's data was not ingested from a generated world, or the world given is not the one."""


# --- Scoring (pure)

def binarize(heat: np.ndarray) -> np.ndarray:
    """(H, W) bool: the pixels strictly above the heatmap's median (at most half of them; none for a flat map)."""
    return heat > np.median(heat)


def frame_ciou(heat: np.ndarray, mask: np.ndarray) -> float:
    """IoU of the binarised heatmap with the truth mask (cIoU with one annotator's binary truth)."""
    active = binarize(heat)
    union = (active | mask).sum()
    return float((active & mask).sum() / union) if union else 0.0


def pointing_hit(heat: np.ndarray, mask: np.ndarray) -> bool:
    """Whether the heatmap's peak (the first of equal maxima) is on the mask; a heatmap of zeros points nowhere."""
    if not heat.max() > 0:
        return False
    return bool(mask.flat[int(np.argmax(heat))])


def summarize(cious: Sequence[float], hits: Sequence[bool], settings: LocalizationSettings = LOCALIZATION,
              peaks: Sequence[float] | None = None) -> dict:
    """{ciou, auc, pointing, mean_ciou, frames} over frames (see the module docstring), and with the heatmaps'
    ``peaks`` ``blank``: the share of frames whose heatmap is zero everywhere; None figures for no frame."""
    cious, hits = np.asarray(cious, float), np.asarray(hits, bool)
    blank = {} if peaks is None else {"blank": float((np.asarray(peaks) <= 0).mean()) if len(cious) else None}
    if not len(cious):
        return {"ciou": None, "auc": None, "pointing": None, "mean_ciou": None, "frames": 0, **blank}
    thresholds = np.linspace(0, 1, settings.auc_steps)
    success = [(cious >= t).mean() for t in thresholds]
    return {"ciou": float((cious >= settings.success_ciou).mean()),
            "auc": float(np.sum((success[1:] + np.array(success[:-1])) / 2 * np.diff(thresholds))),
            "pointing": float(hits.mean()), "mean_ciou": float(cious.mean()), "frames": int(len(cious)), **blank}


def center_prior(size: int, sigma: float = LOCALIZATION.center_sigma) -> np.ndarray:
    """(size, size) float: a Gaussian at the crop's centre, ``sigma`` crop sides wide; its peak is the centre."""
    coords = np.arange(size) - (size - 1) / 2
    squared = coords[:, None] ** 2 + coords[None, :] ** 2
    return np.exp(-squared / (2 * (sigma * size) ** 2))


def frame_kind(sources: np.ndarray, heard: bool, silent: np.ndarray,
               settings: LocalizationSettings = LOCALIZATION) -> str:
    """One of ``FRAME_KINDS`` from a frame's truth on the crop: its heard sources' mask, whether anything is
    heard at all, and the mask of the objects in view that are not heard."""
    if sources.sum() >= settings.min_source_pixels:
        return "visible"
    if heard:
        return "offscreen"
    return "silent" if silent.any() else "empty"


def heat_shares(heat: np.ndarray, mask: np.ndarray) -> float:
    """The share of the heatmap's mass on ``mask`` (0 for a heatmap of zeros)."""
    total = float(heat.sum())
    return float(heat[mask].sum() / total) if total > 0 else 0.0


# --- Truth on the crop

@dataclass
class CropTruth:
    """A frame's truth on the network's input crop."""

    sources: np.ndarray            # (S, S) bool: objects whose own sound is heard
    silent: np.ndarray             # (S, S) bool: objects in view that are not heard
    categories: list[str]          # the heard sources' categories in the crop
    heard: bool                    # something is heard (on screen or off)
    kind: str


def crop_truth(truth, frame_size: int, input_size: int, settings: LocalizationSettings = LOCALIZATION) -> CropTruth:
    """A ``FrameTruth`` (masks in video pixels) -> its masks on the crop, scaled and cropped as the frames are."""
    top = (frame_size - input_size) // 2
    sources = np.zeros((input_size, input_size), bool)
    silent = np.zeros_like(sources)
    categories = set()
    for obj in truth.objects:
        mask = resize_center_crop(obj.mask, frame_size, nearest=True)[top:top + input_size, top:top + input_size]
        if obj.audible:
            sources |= mask
            if mask.sum():
                categories.add(obj.category)
        else:
            silent |= mask
    silent &= ~sources
    heard = bool(truth.audible)
    kind = frame_kind(sources, heard, silent, settings)
    return CropTruth(sources, silent, sorted(categories) if kind == "visible" else [], heard, kind)


def truth_outline(crop: np.ndarray, sources: np.ndarray, silent: np.ndarray) -> np.ndarray:
    """(S, S, 3) uint8: the crop with the heard sources outlined in green and the silent objects in white."""
    out = crop.copy()
    for mask, colour in ((silent, (255, 255, 255)), (sources, (0, 230, 0))):
        inner = mask.copy()
        inner[1:, :] &= mask[:-1, :]
        inner[:-1, :] &= mask[1:, :]
        inner[:, 1:] &= mask[:, :-1]
        inner[:, :-1] &= mask[:, 1:]
        out[mask & ~inner] = colour
    return out


def example_image(crop: np.ndarray, heat: np.ndarray, truth: CropTruth) -> np.ndarray:
    """The heatmap over the crop beside the truth's outline, 4 pixels apart."""
    peak = heat.max()
    overlay = heatmap_overlay(crop, heat / peak if peak > 0 else heat)
    gap = np.full((crop.shape[0], 4, 3), 255, np.uint8)
    return np.hstack([overlay, gap, truth_outline(crop, truth.sources, truth.silent)])


# --- The run, the world, the frames

def checked_world(run_dir: Path, data_dir: Path, world_dir: Path | None, records: Sequence[ds.FrameRecord]) -> Path:
    """The world whose truth scores the run: ``world_dir`` when given (refused, naming both, when it does not
    hold the truth of the data's videos or is another world than the one the data came from), else the data's."""
    from model.world.truth import SUMMARY, TRUTH_DIR, world_of_data

    recorded = world_of_data(data_dir)
    if world_dir is None:
        if recorded is None:
            raise NoTruth(f"{run_dir} was trained on {data_dir}, which was not ingested from a generated world: there "
                          f"is no truth to score its heatmaps against. Its heatmaps can still be looked at (`ambient "
                          f"predict {run_dir} IMAGE`, or Listen in the app), its units labelled with `ambient dissect "
                          f"--masks`; `ambient localize` needs a run trained on `ambient world`'s data (or --world "
                          f"WORLD_DIR if that world was moved)")
        return recorded
    world_dir = Path(world_dir)
    if not (world_dir / SUMMARY).exists():
        raise NoTruth(f"{world_dir} is not a generated world (no {SUMMARY}); {data_dir} was ingested from "
                      f"{recorded or 'videos that are not a generated world'}")
    missing = sorted({r.video for r in records if not (world_dir / TRUTH_DIR / f"{Path(r.video).stem}.json").exists()})
    if missing:
        raise NoTruth(f"{world_dir} does not match {data_dir}: it holds no truth of {len(missing)} of the data's "
                      f"videos (e.g. {missing[0]}); the data was ingested from {recorded or 'another world'}")
    if recorded is not None and recorded.resolve() != world_dir.resolve() \
            and (recorded / SUMMARY).read_text() != (world_dir / SUMMARY).read_text():
        raise NoTruth(f"{world_dir} does not match {data_dir}: the data was ingested from {recorded}, another world "
                      f"(their {SUMMARY} differ)")
    return world_dir


@dataclass
class Network:
    """A network to score: its name, module, input handling and each frame's true label (as logit weights)."""

    name: str
    module: torch.nn.Module
    info: object                   # RunInfo
    targets: torch.Tensor          # (frames, outputs) float


def _targets(data_dir: Path, kind: str, records: Sequence[ds.FrameRecord], rows: np.ndarray) -> torch.Tensor:
    """(len(rows), outputs) weights of each frame's true label: one-hot of its cluster (scene, texton), else its
    code's bits."""
    labels = load_targets(data_dir, kind, np.array([r.split for r in records]))
    targets = labels.targets[rows]
    return targets.float() if labels.multilabel else one_hot(targets, labels.num_outputs)


def _scene_network(scene_run: Path, data_dir: Path, records, rows, frame_size: int, crop_size: int,
                   device) -> Network:
    scene = RunFolder(scene_run)
    if scene.model_file is None:
        raise FileNotFoundError(f"{scene_run}: no trained network (model.pt or checkpoint.pt) for --scene-run")
    if scene.data_dir is None or Path(scene.data_dir).resolve() != data_dir.resolve():
        raise ValueError(f"--scene-run {scene_run} was trained on {scene.data_dir}, not on {data_dir}: "
                         f"its frames would be other frames")
    model, info = scene.network(device)
    if (info.frame_size, info.crop_size) != (frame_size, crop_size):
        raise ValueError(f"--scene-run {scene_run} sees {info.crop_size}-pixel crops of {info.frame_size}-pixel "
                         f"frames, the run {crop_size} of {frame_size}: their heatmaps would not line up")
    return Network("scene", model, info, _targets(data_dir, info.label_kind, records, rows))


def localize_run(run_dir: str | Path, world_dir: str | Path | None = None, split: str = "test",
                 scene_run: str | Path | None = None, device: str | torch.device = "cpu",
                 settings: LocalizationSettings = LOCALIZATION, show_progress: bool = True) -> dict:
    """Score RUN_DIR's heatmaps on its data's ``split`` against the world's truth (see the module docstring).
    NoTruth, FileNotFoundError or ValueError name bad input."""
    from model.world.truth import frame_truth

    run = RunFolder(run_dir)
    if run.model_file is None:
        raise FileNotFoundError(f"{run_dir}: not a trained run (no model.pt or checkpoint.pt); `ambient localize` "
                                f"scores the heatmaps of a network `ambient train` made on a world's data")
    if not run.data_dir or not ds.is_dataset(run.data_dir):
        raise FileNotFoundError(f"{run_dir}/run.json: its dataset {run.data_dir or '(none named)'} is not there")
    data_dir = Path(run.data_dir)
    records = ds.load_manifest(data_dir)
    rows = np.array([i for i, r in enumerate(records) if split == "all" or r.split == split], np.int64)
    if not len(rows):
        raise ValueError(f"{data_dir}: no frames in split {split!r}")
    chosen = [records[i] for i in rows]
    world = checked_world(run.path, data_dir, Path(world_dir) if world_dir else None, chosen)

    model, info = run.network(device)
    networks = [Network("sound", model, info, _targets(data_dir, info.label_kind, records, rows))]
    torch.manual_seed(int(run.info.get("config", {}).get("seed", 0)))
    networks.append(Network("untrained", info.build_model().to(device).eval(), info, networks[0].targets))
    if scene_run is not None:
        networks.append(_scene_network(Path(scene_run), data_dir, records, rows, info.frame_size, info.crop_size,
                                       device))

    size = info.crop_size
    truths = [crop_truth(frame_truth(world, r.video, r.time), info.frame_size, size, settings) for r in chosen]
    center = center_prior(size, settings.center_sigma)
    # Per network and heatmap ("gradcam", "cam", "activation", "gradcam_predicted"): per frame figures.
    figures: dict[str, dict[str, dict[str, list]]] = {}
    correct: list[bool] = []
    examples_at = _example_positions(truths, settings.examples)
    examples = []
    bar = tqdm(total=len(chosen), desc="localize", unit="frame", disable=not show_progress)
    for positions, frames in pl.stream_pool(data_dir, chosen, info.frame_size, settings.batch_size, device):
        for network in networks:
            x = network.info.prepare_images(frames)
            target = network.targets[positions].to(x.device)
            heats = {method: heatmap(network.module, settings.layer, x, target, method) for method in HEATMAP_METHODS}
            if network.name == "sound":
                with torch.no_grad():
                    predicted = network.module(x).argmax(dim=1)
                heats["gradcam_predicted"] = heatmap(network.module, settings.layer, x,
                                                     one_hot(predicted, target.shape[1]), "gradcam")
                correct += (target.argmax(dim=1) == predicted).tolist() if not network.info.multilabel else []
            for name, heat in heats.items():
                maps = upsample_heat(heat, size).cpu().numpy()
                table = figures.setdefault(network.name, {}).setdefault(name, {})
                for i, position in enumerate(positions.tolist()):
                    _score(table, maps[i], truths[position])
                if network.name == "sound" and name == settings.method:
                    crops = center_crop(frames, size).permute(0, 2, 3, 1).cpu().numpy()
                    for i, position in enumerate(positions.tolist()):
                        if position in examples_at:
                            examples.append(_example(chosen[position], crops[i], maps[i], truths[position]))
        bar.update(len(positions))
    bar.close()
    for position in range(len(chosen)):
        _score(figures.setdefault("center", {}).setdefault("prior", {}), center, truths[position])

    main = figures["sound"][settings.method]
    result = {
        "run_dir": str(run.path), "data_dir": str(data_dir), "world_dir": str(world), "split": split,
        "label_kind": info.label_kind, "layer": settings.layer, "method": settings.method,
        "convention": {"threshold": "median of the heatmap (pixels strictly above it)",
                       "success_ciou": settings.success_ciou,
                       "auc": f"over cIoU thresholds 0..1 in {settings.auc_steps} steps",
                       "pointing": "peak pixel on a heard source, no tolerance",
                       "min_source_pixels": settings.min_source_pixels, "center_sigma": settings.center_sigma},
        "kinds": {kind: sum(t.kind == kind for t in truths) for kind in FRAME_KINDS},
        **_report(main, truths, settings),
        "predicted": {**_overall(figures["sound"]["gradcam_predicted"], truths, settings),
                      "agrees_with_true": float(np.mean(correct)) if correct else None},
        "methods": {name: {method: _overall(figures[name][method], truths, settings) for method in HEATMAP_METHODS}
                    for name in (n.name for n in networks)},
        "baselines": {"center": _report(figures["center"]["prior"], truths, settings, negatives=False),
                      **{n.name: _report(figures[n.name][settings.method], truths, settings)
                         for n in networks[1:]}},
        "examples": examples,
    }
    return result


def _score(table: dict[str, list], heat: np.ndarray, truth: CropTruth) -> None:
    """One frame's figures into ``table``: cIoU and hit (visible frames), peak and mass shares (every frame)."""
    visible = truth.kind == "visible"
    table.setdefault("ciou", []).append(frame_ciou(heat, truth.sources) if visible else None)
    table.setdefault("hit", []).append(pointing_hit(heat, truth.sources) if visible else None)
    table.setdefault("peak", []).append(float(heat.max()))
    table.setdefault("silent_mass", []).append(heat_shares(heat, truth.silent))
    table.setdefault("source_mass", []).append(heat_shares(heat, truth.sources))


def _overall(table: dict[str, list], truths: Sequence[CropTruth], settings: LocalizationSettings,
             category: str | None = None) -> dict:
    chosen = [i for i, t in enumerate(truths) if t.kind == "visible" and (category is None or category in t.categories)]
    return summarize([table["ciou"][i] for i in chosen], [table["hit"][i] for i in chosen], settings,
                     [table["peak"][i] for i in chosen])


def _negatives(table: dict[str, list], truths: Sequence[CropTruth]) -> dict:
    """Per frame kind: the heatmaps' mean raw peak, and on frames with silent objects in view the mean share of
    the heatmap's mass on them beside the mean share of the crop they cover (what a flat heatmap would put there)."""
    out = {}
    for kind in ("visible", "offscreen", "silent"):
        chosen = [i for i, t in enumerate(truths) if t.kind == kind]
        with_silent = [i for i in chosen if truths[i].silent.any()]
        row = {"frames": len(chosen),
               "peak": float(np.mean([table["peak"][i] for i in chosen])) if chosen else None,
               "frames_with_silent_objects": len(with_silent),
               "silent_mass": float(np.mean([table["silent_mass"][i] for i in with_silent])) if with_silent else None,
               "silent_area": float(np.mean([truths[i].silent.mean() for i in with_silent])) if with_silent else None}
        if kind == "visible":
            row["source_mass"] = float(np.mean([table["source_mass"][i] for i in chosen])) if chosen else None
            row["source_area"] = float(np.mean([truths[i].sources.mean() for i in chosen])) if chosen else None
        out[kind] = row
    peak = out["visible"]["peak"]
    for kind in ("offscreen", "silent"):
        out[kind]["peak_vs_visible"] = out[kind]["peak"] / peak if peak and out[kind]["peak"] is not None else None
    return out


def _report(table: dict[str, list], truths: Sequence[CropTruth], settings: LocalizationSettings,
            negatives: bool = True) -> dict:
    categories = sorted({c for t in truths for c in t.categories})
    report = {"overall": _overall(table, truths, settings),
              "per_category": {c: _overall(table, truths, settings, c) for c in categories}}
    if negatives:
        report["negatives"] = _negatives(table, truths)
    return report


def _example_positions(truths: Sequence[CropTruth], count: int) -> set[int]:
    """``count`` visible frames evenly spaced over the split (not chosen by score)."""
    visible = [i for i, t in enumerate(truths) if t.kind == "visible"]
    if not visible or count < 1:
        return set()
    return {visible[int(j)] for j in np.linspace(0, len(visible) - 1, min(count, len(visible)))}


def _example(record: ds.FrameRecord, crop: np.ndarray, heat: np.ndarray, truth: CropTruth) -> dict:
    png = png_bytes(example_image(crop, heat, truth))
    return {"frame_id": record.frame_id, "image": record.image, "video": record.video, "time": record.time,
            "categories": truth.categories, "ciou": frame_ciou(heat, truth.sources),
            "hit": pointing_hit(heat, truth.sources),
            "png": "data:image/png;base64," + base64.b64encode(png).decode("ascii")}


def format_table(result: dict) -> str:
    """A Markdown table: overall and per category, the run's network against its baselines."""
    names = ["sound", *result["baselines"]]
    reports = {"sound": result, **result["baselines"]}
    header = "| frames | n | " + " | ".join(f"{n} pointing | {n} AUC | {n} cIoU" for n in names) + " |"
    lines = [header, "|" + "---|" * (2 + 3 * len(names))]

    def cells(report: dict, key: str | None) -> str:
        row = report["overall"] if key is None else report["per_category"].get(key, {})
        return " | ".join("–" if row.get(f) is None else f"{row[f]:.2f}" for f in ("pointing", "auc", "ciou"))

    rows = [("all", None, result["overall"]["frames"])] + [(c, c, r["frames"])
                                                          for c, r in result["per_category"].items()]
    for label, key, frames in rows:
        lines.append(f"| {label} | {frames} | " + " | ".join(cells(reports[n], key) for n in names) + " |")
    return "\n".join(lines)
