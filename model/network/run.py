"""A training run's directory and checkpoint format, and ``load_run`` for later stages.

Layout of RUN_DIR (written by ``ambient train``, rank 0 only)::

    run.json        RunInfo below plus "config" (the TrainSettings used), "data_dir", "preset", "world_size",
                    "cpu_capability", "cpu_threads" and "portable_kernels" (the CPU kernels that made it: model/cpu.py)
    metrics.jsonl   one JSON object per evaluation: step, epoch, loss, test_accuracy, chance, majority, ...;
                    streaming from shards also "skipped_shards" (every shard skipped so far: shard, reason, rank)
    stream.jsonl    streaming from shards: one JSON object per evaluation, {"step", "epoch", "ranks": [{"rank",
                    "shards" (opened since the previous evaluation), "faults"}, ...]}
    checkpoint.pt   latest training state (written atomically: tmp file + rename), a dict with
                    "model" (state_dict), "optimizer", "scheduler", "step", "epoch", "steps_per_epoch",
                    "rng" (torch CPU and CUDA RNG states; data order and crops follow from the step),
                    "run" (RunInfo as dict)
    model.pt        final weights: {"model": state_dict, "run": RunInfo as dict, "step": int}
    checkpoints/step_<step>.pt  with --keep-checkpoints N: the weights at N evenly spaced steps, as model.pt

Written by ``ambient units`` and ``ambient dissect`` (the same layout for any analysed network)::

    units_<layer>.npz   each unit's top images: scores, frame_ids (manifest rows of the pool, -1 = none),
                        maps (their activation maps), meta (JSON: pool, geometry, network), and their
                        masked JPEGs: jpegs (all bytes end to end), offsets, counts (images per unit);
                        pool_frame_ids (images,) and pool_maxima (images, units) float32: every pool image's
                        spatial maxima (the similar units, ``ambient compare``)
    dissection.json     automatic labels: [{"unit", "category", "precision", "iou", "sounding", "layer"}, ...];
                        from masks also "netdissect_category", "netdissect_iou" (model/units/dissect.py)
    dissection_<layer>.npz  from masks: both scores of every unit and class: classes (names),
                        class_indices, class_sounds (characteristic sound flags), precision (units, classes),
                        iou (units, classes), top_with_masks (units,)

Written by ``ambient ablate`` (model/units/ablate.py)::

    ablation_<layer>.json  units switched off: layer, label_kind, test_frames, units_in_layer, random_repeats,
                        seed, world_truth, baseline {accuracy, per_label, true_probability}, ablations [{units,
                        category, accuracy, per_label, true_probability, random {accuracy, accuracy_std, repeats,
                        true_probability}, truth {own_drop, own_drop_random,
                        own_drop_random_std, other_drop, other_drop_random, own_frames, other_frames, ...}}],
                        with --each-unit also single_units [{unit, accuracy, per_label}]

Written by ``ambient localize`` (model/units/localize.py)::

    localization.json   heatmaps against the world's truth: convention, kinds (frames of each kind), overall
                        {ciou, auc, pointing, mean_ciou, frames}, per_category, negatives, predicted, methods,
                        baselines {center, untrained[, scene]} (each overall, per_category[, negatives]), examples

Written by ``ambient visualize`` (model/units/visualize.py)::

    visualizations/index.json  {"units": [{"layer", "unit", "file", "activation", "top_activation", "ratio", "seed"}],
                        "clusters": [{"cluster", "file", "probability", "seed"}], "settings": {...}}: each image's
                        spatial maximum of its unit beside the unit's top pool image's (``ratio``), or its cluster's
                        probability; later runs of the command add to it (an image of the same unit replaced)
    visualizations/<layer>_unit<NNNN>.png, visualizations/cluster<NN>.png  the optimised images

Written by ``ambient compare RUN_DIR RUN_B`` (model/units/compare.py)::

    compare_<A>_<B>.json  run_a, run_b, layer, pool, pool_images, matching, match_r, median_r, identity,
                        units [{unit, match, r, best, best_r, label_a, label_b, same_detector, silent}],
                        summary {detectors_a, recurring, categories {category: {detectors, recurring}}}

Written by ``ambient probe`` (model/units/probe.py)::

    probe_<dataset>.json  linear-probe results (Table 2): dataset, format, layers, tasks, networks
                          [{"name", "run_dir", "label_kind", "k", "trained", "results": {task: {layer: {"score", ...}}}}]

This module owns every path in RUN_DIR and every reader of these files; ``ambient publish`` loads them
into the database. It imports torch only where a checkpoint is read or written or images are resized: the
web app reads run files without loading torch.

State dicts are saved from the bare ``CaffeNetBN`` (never the DDP or torch.compile wrapper), so
``CaffeNetBN(info.num_outputs, info.crop_size, info.fc_width).load_state_dict(...)`` always works.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from model.cpu import kernels_record
from model.data.dataset import atomic_file, labels_file, write_json_atomic
from model.network.modelfiles import model_source

if TYPE_CHECKING:
    import numpy as np      # imported where used, as torch is: the web app reads run files here without them
    import torch

    from model.network.caffenet import CaffeNetBN

RUN_JSON = "run.json"
METRICS = "metrics.jsonl"
STREAM = "stream.jsonl"
CHECKPOINT = "checkpoint.pt"
FINAL_MODEL = "model.pt"
DISSECTION = "dissection.json"
KEPT_CHECKPOINTS = "checkpoints"
EMERGENCE = "emergence.json"
LOCALIZATION = "localization.json"
VISUALIZATIONS = "visualizations"


@dataclass(frozen=True)
class RunInfo:
    """What a consumer needs to rebuild the network and feed it images."""

    label_kind: str            # "cluster", "binary" or "spectrum"
    num_outputs: int           # k clusters or code bits
    multilabel: bool           # True: independent sigmoids (binary codes); False: softmax over clusters
    frame_size: int            # frames are resized to this square side ...
    crop_size: int             # ... then centre-cropped to the network's input side
    fc_width: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_dict(cls, d: dict) -> "RunInfo":
        values = {f.name: d[f.name] for f in fields(cls)}
        values["mean"], values["std"] = tuple(values["mean"]), tuple(values["std"])
        return cls(**values)

    def build_model(self) -> CaffeNetBN:
        from model.network.caffenet import CaffeNetBN

        return CaffeNetBN(self.num_outputs, input_size=self.crop_size, fc_width=self.fc_width)

    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) frames -> the network's normalised centre crops, as at test time."""
        from model.network.caffenet import normalize_images

        return normalize_images(center_crop(resize_frames(images, self.frame_size), self.crop_size),
                                self.mean, self.std)


def resize_frames(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> uint8 (N, 3, size, size), antialiased; a no-op at the same size."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    import torch

    resized = torch.nn.functional.interpolate(images.float(), size=(size, size), mode="bilinear",
                                              antialias=True, align_corners=False)
    return resized.round().clamp(0, 255).to(torch.uint8)


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    top = (images.shape[-2] - size) // 2
    left = (images.shape[-1] - size) // 2
    return images[..., top:top + size, left:left + size]


def save_atomic(obj, path: Path) -> None:
    """torch.save so that a kill -9 leaves either the old file or the whole new one."""
    import torch

    with atomic_file(path) as file:
        torch.save(obj, file)


def write_run_json(run_dir: Path, info: RunInfo, extra: dict) -> None:
    # A run says which CPU kernels made it: training's float sums, hence its figures, depend on them.
    write_json_atomic(run_dir / RUN_JSON, {**asdict(info), **kernels_record(), **extra})


def read_run_json(run_dir: str | Path) -> dict:
    """RUN_DIR/run.json, or {} for a folder no training wrote (an analysis of another network)."""
    path = Path(run_dir) / RUN_JSON
    return json.loads(path.read_text()) if path.exists() else {}


def read_metrics(run_dir: str | Path, limit: int | None = None) -> list[dict]:
    """The evaluations in RUN_DIR/metrics.jsonl, oldest first (the last ``limit`` of them).

    Training appends while others read: a half-written last line is not an evaluation yet.
    """
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            break
    return rows[-limit:] if limit else rows


def last_metrics(run_dir: str | Path) -> dict:
    rows = read_metrics(run_dir, 1)
    return rows[-1] if rows else {}


def units_file(run_dir: str | Path, layer: str | None) -> Path:
    return Path(run_dir) / f"units_{layer or 'output'}.npz"


def analysed_layers(run_dir: str | Path) -> list[str]:
    """The layers ``ambient units`` has finished in RUN_DIR."""
    return sorted(path.stem.removeprefix("units_") for path in Path(run_dir).glob("units_*.npz")
                  if not path.name.endswith(".tmp.npz"))


def read_units_meta(path: Path) -> dict:
    """A units file's meta: the pool's data_dir, layer, network kind and labels, geometry, mask settings."""
    import numpy as np

    with np.load(path) as data:
        return json.loads(str(data["meta"]))


def dissection_file(run_dir: str | Path) -> Path:
    return Path(run_dir) / DISSECTION


def dissection_scores_file(run_dir: str | Path, layer: str | None) -> Path:
    return Path(run_dir) / f"dissection_{layer or 'output'}.npz"


def read_dissection(run_dir: str | Path) -> list[dict]:
    return json.loads(dissection_file(run_dir).read_text())


def ablation_file(run_dir: str | Path, layer: str) -> Path:
    return Path(run_dir) / f"ablation_{layer}.json"


def read_ablation(run_dir: str | Path, layer: str) -> dict | None:
    """RUN_DIR/ablation_<layer>.json, or None when ``ambient ablate`` has not written it (or it does not parse)."""
    path = ablation_file(run_dir, layer)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def probe_file(run_dir: str | Path, dataset: str) -> Path:
    """RUN_DIR/probe_<dataset>.json; ``dataset`` is reduced to letters, digits, '-' and '_'."""
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in dataset) or "dataset"
    return Path(run_dir) / f"probe_{name}.json"


def write_probe(run_dir: str | Path, result: dict) -> Path:
    """Store a probe result as RUN_DIR/probe_<its dataset>.json (atomically); returns the path."""
    path = probe_file(run_dir, result["dataset"])
    write_json_atomic(path, result)
    return path


def read_probes(run_dir: str | Path) -> list[dict]:
    """Every probe result in RUN_DIR, by dataset name; a file that does not parse is skipped."""
    results = []
    for path in sorted(Path(run_dir).glob("probe_*.json")):
        try:
            results.append(json.loads(path.read_text()))
        except ValueError:
            continue
    return results


def save_npz_atomic(path: Path, **arrays) -> None:
    """np.savez so that a reader sees either the old file or the whole new one."""
    import numpy as np

    with atomic_file(path) as file:
        np.savez(file, **arrays)


def pack_jpegs(jpegs: list[list[bytes]]) -> dict[str, np.ndarray]:
    """Each unit's masked JPEGs (best first) as arrays for an npz: the bytes end to end and where each starts."""
    import numpy as np

    flat = [image for unit in jpegs for image in unit]
    offsets = np.zeros(len(flat) + 1, np.int64)
    offsets[1:] = np.cumsum([len(image) for image in flat])
    counts = np.array([len(unit) for unit in jpegs], np.int64)
    return {"jpegs": np.frombuffer(b"".join(flat), np.uint8), "offsets": offsets, "counts": counts}


def load_unit_images(path: Path) -> list[list[bytes]]:
    """The masked JPEGs of a units file, per unit, best first."""
    import numpy as np

    with np.load(path) as data:
        blob, offsets, counts = data["jpegs"].tobytes(), data["offsets"], data["counts"]
    images = [blob[start:end] for start, end in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
    ends = np.cumsum(counts).tolist()
    return [images[start:end] for start, end in zip([0, *ends[:-1]], ends)]


def kept_checkpoint_file(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / KEPT_CHECKPOINTS / f"step_{step:07d}.pt"


def kept_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of the weights ``ambient train --keep-checkpoints`` kept, by step."""
    kept = []
    for path in (Path(run_dir) / KEPT_CHECKPOINTS).glob("step_*.pt"):
        step = path.stem.removeprefix("step_")
        if step.isdigit():
            kept.append((int(step), path))
    return sorted(kept)


def emergence_file(run_dir: str | Path) -> Path:
    return Path(run_dir) / EMERGENCE


def read_emergence(run_dir: str | Path) -> dict | None:
    """RUN_DIR/emergence.json (``ambient dissect --checkpoints``), or None when absent or unreadable."""
    try:
        return json.loads(emergence_file(run_dir).read_text())
    except (OSError, ValueError):
        return None


def localization_file(run_dir: str | Path) -> Path:
    return Path(run_dir) / LOCALIZATION


def read_localization(run_dir: str | Path) -> dict | None:
    """RUN_DIR/localization.json (``ambient localize``), or None when absent or unreadable."""
    try:
        return json.loads(localization_file(run_dir).read_text())
    except (OSError, ValueError):
        return None

def visualizations_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / VISUALIZATIONS


def unit_visualization_file(run_dir: str | Path, layer: str, unit: int) -> Path:
    return visualizations_dir(run_dir) / f"{layer}_unit{unit:04d}.png"


def cluster_visualization_file(run_dir: str | Path, cluster: int) -> Path:
    return visualizations_dir(run_dir) / f"cluster{cluster:02d}.png"


def read_comparisons(run_dir: str | Path) -> dict[str, dict]:
    """RUN_DIR/compare_<A>_<B>.json (``ambient compare``) by file name; a file that does not parse is skipped."""
    found = {}
    for path in sorted(Path(run_dir).glob("compare_*.json")):
        try:
            found[path.name] = json.loads(path.read_text())
        except ValueError:
            continue
    return found


def read_visualizations(run_dir: str | Path) -> dict:
    """RUN_DIR/visualizations/index.json; empty lists when ``ambient visualize`` has not run (or it does not parse)."""
    try:
        index = json.loads((visualizations_dir(run_dir) / "index.json").read_text())
    except (OSError, ValueError):
        return {"units": [], "clusters": []}
    return {"units": index.get("units", []), "clusters": index.get("clusters", []), "settings": index.get("settings")}


def run_model_file(run_dir: str | Path) -> Path | None:
    """The weights ``load_run`` reads by default: the final ones, else the latest checkpoint; None: neither."""
    return next((path for path in (Path(run_dir) / FINAL_MODEL, Path(run_dir) / CHECKPOINT) if path.exists()), None)


def load_run(run_dir: str | Path, device: str | torch.device = "cpu",
             checkpoint: str | Path | None = None,
             digests: Mapping[str, str] | None = None) -> tuple[CaffeNetBN, RunInfo]:
    """The trained network of RUN_DIR in eval mode on ``device`` (final weights, else the latest checkpoint;
    ``checkpoint``: that file's weights, e.g. a kept one; ``digests``: the file must have its recorded
    SHA-256, model/network/modelfiles.py)."""
    run_dir = Path(run_dir)
    path = Path(checkpoint) if checkpoint is not None else run_model_file(run_dir)
    if checkpoint is not None and not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    if path is None:
        raise FileNotFoundError(f"{run_dir}: no {FINAL_MODEL} or {CHECKPOINT}; run `ambient train` first")
    import torch

    # A pickle may run code: tensors and plain types only.
    state = torch.load(model_source(path, digests), map_location="cpu", weights_only=True)
    info = RunInfo.from_dict(state["run"])
    model = info.build_model()
    model.load_state_dict(state["model"])
    return model.to(device).eval(), info


class RunFolder:
    """The one reader of a RUN_DIR: what training, ``ambient units``, ``ambient dissect`` and ``ambient ablate``
    wrote there, each file read once and handed out (no torch until the network is asked for).

    Predict, units, dissect, ablate and publish take a run's pieces from here rather than each deriving
    them from the folder: its run.json (``info``), weights (``network``), labels and textures (through the
    ``data_dir`` it was trained on), units files and their meta per layer, dissection, ablation, emergence.
    """

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir)
        self._units_meta: dict[str, dict] = {}

    @classmethod
    def of(cls, run: RunFolder | str | Path) -> RunFolder:
        """``run`` itself when it is a reader already (its files stay read once), else a reader of RUN_DIR ``run``."""
        return run if isinstance(run, RunFolder) else cls(run)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @cached_property
    def info(self) -> dict:
        """run.json, or {} for a folder no training wrote (an analysis of another network)."""
        return read_run_json(self.path)

    @property
    def data_dir(self) -> str | None:
        """The DATA_DIR the run was trained on (run.json), None when it names none."""
        return self.info.get("data_dir")

    def labels_file(self, kind: str) -> Path | None:
        """The ``kind`` labels of the run's DATA_DIR (their centroids or codes give its textures); None: no data_dir."""
        return labels_file(self.data_dir, kind) if self.data_dir else None

    @property
    def model_file(self) -> Path | None:
        """Our run's weights (final, else the latest checkpoint); None: not a trained run."""
        return run_model_file(self.path)

    def network(self, device: str | torch.device = "cpu", checkpoint: str | Path | None = None,
                digests: Mapping[str, str] | None = None) -> tuple[CaffeNetBN, RunInfo]:
        """Our trained network in eval mode (``load_run``)."""
        return load_run(self.path, device, checkpoint, digests)

    @property
    def layers(self) -> list[str]:
        """The layers ``ambient units`` has finished here."""
        return analysed_layers(self.path)

    def units_file(self, layer: str | None) -> Path:
        return units_file(self.path, layer)

    def units_meta(self, layer: str) -> dict:
        """The meta of a layer's units file (pool, geometry, network), read once."""
        if layer not in self._units_meta:
            self._units_meta[layer] = read_units_meta(self.units_file(layer))
        return self._units_meta[layer]

    @cached_property
    def dissection(self) -> list[dict] | None:
        """dissection.json's automatic labels; None when ``ambient dissect`` has not written it."""
        return read_dissection(self.path) if dissection_file(self.path).exists() else None

    def ablation(self, layer: str) -> dict | None:
        return read_ablation(self.path, layer)

    def emergence(self) -> dict | None:
        return read_emergence(self.path)

    def localization(self) -> dict | None:
        return read_localization(self.path)

    def comparisons(self) -> dict[str, dict]:
        """compare_<A>_<B>.json files (``ambient compare``) by name."""
        return read_comparisons(self.path)

    def visualizations(self) -> dict:
        """visualizations/index.json (``ambient visualize``): {"units": [...], "clusters": [...]}, empty when absent."""
        return read_visualizations(self.path)

    def last_metrics(self) -> dict:
        return last_metrics(self.path)
