"""Linear probes of a network's representation (paper 4.2, Table 2; Fig. A1a).

Features of the top layers -- ``max5`` (conv5 max-pooled over space, one value per unit), ``pool5``,
``fc6``, ``fc7`` -- are extracted from centre crops of frames resized to the run's square frame size,
and linear SVMs (scikit-learn's ``LinearSVC`` on standardised features, C chosen by 3-fold
cross-validation from the paper's grid) are fitted on them. Three kinds of task:

- ``voc2007``: PASCAL VOC 2007's layout (``JPEGImages``, ``ImageSets/Main/<class>_{trainval,test}.txt``);
  20 one-vs-rest SVMs, mean average precision with per-class AP (Table 2a, 2c).
- ``imagefolder``: one folder per class; accuracy, with ``per_class`` training images per class over
  ``splits`` random splits (SUN397's protocol: 20 per class, 3 splits).
- ``world``: the generated demo world's truth on the held-out videos' frames: the scene (accuracy) and
  which objects are on screen (multi-label, mAP); the videos are split in halves, 3 times.

Metrics are scikit-learn's (``average_precision_score``: the area under the precision-recall curve,
not VOC 2007's 11-point interpolation). Entry points: ``probe_voc2007``, ``probe_imagefolder``,
``probe_world``; each returns the JSON ``model/network/run.py``'s ``write_probe`` stores in RUN_DIR.
"""
from __future__ import annotations

import datetime
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from joblib import Parallel, delayed
from sklearn.metrics import accuracy_score, average_precision_score, make_scorer
from sklearn.model_selection import GridSearchCV, GroupKFold, GroupShuffleSplit, KFold, StratifiedKFold
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from tqdm import tqdm

from model.data import dataset as ds
from model.data.frames import stream_frames
from model.network.caffenet import CaffeNetBN
from model.network.run import RunInfo, load_run, read_run_json
from model.settings import PROBE, ProbeSettings

PROBE_LAYERS = ("max5", "pool5", "fc6", "fc7")
VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


# ---------------------------------------------------------------- networks and features

@dataclass
class ProbedNetwork:
    """A network to probe and what it was trained on (the table's row)."""

    name: str                   # "sound (cluster)", "untrained", ...
    model: CaffeNetBN
    info: RunInfo
    run_dir: str | None         # None: built here (the untrained copy)
    label_kind: str
    k: int                      # clusters or code bits: Fig. A1a's x axis
    trained: bool


def network_name(label_kind: str, trained: bool) -> str:
    if not trained:
        return "untrained"
    return {"cluster": "sound (cluster)", "binary": "sound (binary)", "spectrum": "sound (spectrum)",
            "texton": "texton", "scene": "scene-trained"}.get(label_kind, label_kind)


def load_probed(run_dir: str | Path, device: torch.device | str = "cpu") -> ProbedNetwork:
    """RUN_DIR's trained network; a run saved with ``--epochs 0`` is the untrained control."""
    model, info = load_run(run_dir, device)
    trained = read_run_json(run_dir).get("config", {}).get("epochs", 1) > 0
    return ProbedNetwork(network_name(info.label_kind, trained), model, info, str(Path(run_dir).resolve()),
                         info.label_kind, info.num_outputs, trained)


def untrained_copy(network: ProbedNetwork, seed: int = PROBE.seed,
                   device: torch.device | str = "cpu") -> ProbedNetwork:
    """The same architecture and input handling with its initial random weights (the paper's
    "random init." row): what the features are worth before any training."""
    torch.manual_seed(seed)
    model = network.info.build_model().to(device).eval()
    return ProbedNetwork("untrained", model, network.info, None, network.label_kind, network.k, False)


@torch.inference_mode()
def layer_features(model: CaffeNetBN, inputs: torch.Tensor, layers: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Normalised crops (B, 3, S, S) -> {layer: (B, D)} for layers among ``PROBE_LAYERS``, in one pass."""
    conv5 = model.forward_features(inputs, "conv5")
    pool5 = model.pool5(conv5)
    fc6 = model.fc6(torch.flatten(pool5, 1))
    values = {"max5": conv5.amax((2, 3)), "pool5": torch.flatten(pool5, 1), "fc6": fc6, "fc7": model.fc7(fc6)}
    return {layer: values[layer] for layer in layers}


def extract_features(network: ProbedNetwork, image_paths: list[Path], layers: tuple[str, ...],
                     device: torch.device | str = "cpu", settings: ProbeSettings = PROBE,
                     progress: bool = False) -> dict[str, np.ndarray]:
    """{layer: (N, D) float32} of the images at ``image_paths``, resized to the run's frame size and
    centre-cropped as at test time."""
    unknown = [layer for layer in layers if layer not in PROBE_LAYERS]
    if unknown:
        raise ValueError(f"unknown layer {unknown[0]!r}; choose from {', '.join(PROBE_LAYERS)}")
    features: dict[str, np.ndarray] = {}
    batches = stream_frames(image_paths, network.info.frame_size, settings.batch_size, device)
    for rows, frames in tqdm(batches, total=-(-len(image_paths) // settings.batch_size),
                             desc=f"features ({network.name})", unit="batch", disable=not progress, leave=False):
        for layer, values in layer_features(network.model, network.info.prepare_images(frames), layers).items():
            if layer not in features:
                features[layer] = np.zeros((len(image_paths), values.shape[1]), np.float32)
            features[layer][rows] = values.float().cpu().numpy()
    return features


# ---------------------------------------------------------------- metrics and SVMs

def mean_average_precision(truth: np.ndarray, scores: np.ndarray, ignore: np.ndarray | None = None) -> tuple[float, list[float | None]]:
    """(mAP, per-class AP) of (N, C) binary truth against (N, C) scores with scikit-learn's
    ``average_precision_score``; ``ignore`` (N, C) bool drops entries (VOC's "difficult" images).
    A class without both a positive and a negative has no AP (None) and is left out of the mean."""
    # One label: scikit-learn's one-vs-rest returns a column vector's scores as 1-d.
    truth, scores = truth.reshape(len(truth), -1), scores.reshape(len(scores), -1)
    per_class: list[float | None] = []
    for c in range(truth.shape[1]):
        keep = ~ignore[:, c] if ignore is not None else slice(None)
        y = truth[keep, c]
        per_class.append(float(average_precision_score(y, scores[keep, c])) if 0 < y.sum() < len(y) else None)
    defined = [ap for ap in per_class if ap is not None]
    if not defined:
        raise ValueError("no class has both positive and negative examples: mAP is undefined")
    return float(np.mean(defined)), per_class


def _map_score(truth: np.ndarray, scores: np.ndarray) -> float:
    """Cross-validation's score: NaN for a fold whose labels are all one value (GridSearchCV ranks it last)."""
    try:
        return mean_average_precision(truth, scores)[0]
    except ValueError:
        return float("nan")


def _svm(settings: ProbeSettings):
    # Standardised features: one C grid then suits layers whose activations differ in scale by orders of magnitude.
    # The primal solver (dual=False): the same optimum, found 2-3x faster at the grid's large C on these features.
    return make_pipeline(StandardScaler(), LinearSVC(dual=False, max_iter=settings.max_iter,
                                                     random_state=settings.seed))


def fit_multiclass(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                   groups: np.ndarray | None = None, settings: ProbeSettings = PROBE) -> dict:
    """A linear SVM (one-vs-rest over classes), C by ``settings.folds``-fold cross-validated accuracy
    (folds by ``groups`` when given: frames of one video stay together); its test accuracy."""
    cv = (GroupKFold(settings.folds) if groups is not None
          else StratifiedKFold(settings.folds, shuffle=True, random_state=settings.seed))
    search = GridSearchCV(_svm(settings), {"linearsvc__C": list(settings.c_grid)}, scoring="accuracy", cv=cv,
                          error_score="raise")
    search.fit(train_x, train_y, groups=groups)
    return {"score": float(accuracy_score(test_y, search.predict(test_x))),
            "C": float(search.best_params_["linearsvc__C"]), "cv_score": float(search.best_score_)}


def fit_multilabel(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                   test_ignore: np.ndarray | None = None, groups: np.ndarray | None = None,
                   settings: ProbeSettings = PROBE) -> dict:
    """One linear SVM per label (one-vs-rest), one C for all by cross-validated mAP; test mAP and per-class AP."""
    cv = GroupKFold(settings.folds) if groups is not None else KFold(settings.folds, shuffle=True,
                                                                      random_state=settings.seed)
    scorer = make_scorer(_map_score, response_method="decision_function")
    svms = make_pipeline(StandardScaler(), OneVsRestClassifier(LinearSVC(dual=False, max_iter=settings.max_iter,
                                                                         random_state=settings.seed)))
    search = GridSearchCV(svms, {"onevsrestclassifier__estimator__C": list(settings.c_grid)}, scoring=scorer,
                          cv=cv, error_score="raise")
    with warnings.catch_warnings():
        # A fold without a rare label's positives: its SVM is a constant and its AP is left out of that fold's mean.
        warnings.filterwarnings("ignore", message="Label not .* is present in all training examples")
        search.fit(train_x, train_y, groups=groups)
    score, per_class = mean_average_precision(test_y, search.decision_function(test_x), test_ignore)
    return {"score": score, "per_class": per_class, "C": float(search.best_params_["onevsrestclassifier__estimator__C"]),
            "cv_score": float(search.best_score_)}


# ---------------------------------------------------------------- datasets

@dataclass
class VocSet:
    """PASCAL VOC 2007 classification: images and labels (1 present, -1 absent, 0 only "difficult")."""

    trainval: list[Path]
    test: list[Path]
    trainval_labels: np.ndarray      # (N, 20) int8
    test_labels: np.ndarray
    classes: tuple[str, ...] = VOC_CLASSES


def _read_image_set(root: Path, split: str) -> tuple[list[str], np.ndarray]:
    ids, labels = None, []
    for name in VOC_CLASSES:
        path = root / "ImageSets" / "Main" / f"{name}_{split}.txt"
        if not path.is_file():
            raise FileNotFoundError(f"{root}: no {path.relative_to(root)} (not PASCAL VOC 2007's layout)")
        rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
        try:
            column = {image: int(flag) for image, flag in rows}
        except ValueError as error:
            raise ValueError(f"{path}: lines must be '<image id> <-1|0|1>' ({error})") from None
        if ids is None:
            ids = [image for image, _ in rows]
        elif set(column) != set(ids):
            raise ValueError(f"{path}: lists other images than {VOC_CLASSES[0]}_{split}.txt")
        labels.append([column[image] for image in ids])
    return ids, np.array(labels, np.int8).T


def read_voc2007(root: str | Path) -> VocSet:
    """The trainval and test images of a VOC 2007 folder and each class's labels, from ImageSets/Main."""
    root = Path(root)
    splits = {}
    for split in ("trainval", "test"):
        ids, labels = _read_image_set(root, split)
        paths = [root / "JPEGImages" / f"{image}.jpg" for image in ids]
        missing = [path for path in paths if not path.is_file()]
        if missing:
            raise FileNotFoundError(f"{root}: {len(missing)} {split} images are missing, e.g. {missing[0]}")
        splits[split] = (paths, labels)
    return VocSet(splits["trainval"][0], splits["test"][0], splits["trainval"][1], splits["test"][1])


def read_imagefolder(root: str | Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """(image paths, class index of each, class names): one sub-folder per class, sorted by name."""
    root = Path(root)
    classes = sorted(path.name for path in root.iterdir() if path.is_dir())
    paths, labels = [], []
    for index, name in enumerate(classes):
        images = sorted(path for path in (root / name).rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES)
        paths += images
        labels += [index] * len(images)
    if len(classes) < 2 or not paths:
        raise ValueError(f"{root}: needs at least two class folders with images ({', '.join(IMAGE_SUFFIXES)})")
    return paths, np.array(labels, np.int64), classes


def per_class_splits(labels: np.ndarray, per_class: int, splits: int, seed: int = PROBE.seed) -> list[tuple[np.ndarray, np.ndarray]]:
    """``splits`` random (train, test) index pairs: ``per_class`` training images of every class, the
    rest for testing (SUN397's protocol with 20)."""
    counts = np.bincount(labels)
    if counts.min() <= per_class:
        raise ValueError(f"class {int(counts.argmin())} has {counts.min()} images: needs more than "
                         f"--per-class {per_class}")
    rng = np.random.default_rng(seed)
    result = []
    for _ in range(splits):
        train = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in range(len(counts))])
        result.append((np.sort(train), np.setdiff1d(np.arange(len(labels)), train)))
    return result


@dataclass
class WorldTasks:
    """The world's truth for probing: the held-out frames, their scene and which objects they show."""

    image_paths: list[Path]
    videos: np.ndarray               # (N,) video of each frame (frames of one video stay on one side)
    scenes: np.ndarray               # (N,) scene index
    scene_names: list[str]
    objects: np.ndarray              # (N, C) bool: category on screen (at least MIN_PIXELS visible)
    object_names: list[str]


def world_tasks(data_dir: str | Path, world_dir: str | Path, split: str = "test") -> WorldTasks:
    """Scene and object presence of DATA_DIR's ``split`` frames, from the truth of the world they came from."""
    from model.world.scenes import SCENES
    from model.world.truth import frame_truth

    records = [r for r in ds.load_manifest(data_dir) if r.split == split]
    if not records:
        raise ValueError(f"{data_dir}: no {split} frames to probe")
    scene_names = [scene.name for scene in SCENES]
    truths = [frame_truth(world_dir, r.video, r.time) for r in records]
    object_names = sorted({o.category for truth in truths for o in truth.objects})
    column = {name: i for i, name in enumerate(object_names)}
    objects = np.zeros((len(records), len(object_names)), bool)
    for row, truth in enumerate(truths):
        objects[row, [column[o.category] for o in truth.objects]] = True
    return WorldTasks([Path(data_dir) / r.image for r in records], np.array([r.video for r in records]),
                      np.array([scene_names.index(t.scene) for t in truths]), scene_names, objects, object_names)


def _video_counts(present: np.ndarray, videos: np.ndarray) -> np.ndarray:
    """(2, C): per category, the number of videos with and without it on screen (a video shows it if any
    of its frames does)."""
    names, index = np.unique(videos, return_inverse=True)
    shown = np.zeros((len(names), present.shape[1]), bool)
    np.logical_or.at(shown, index, present)
    return np.stack([shown.sum(0), (~shown).sum(0)])


def video_splits(videos: np.ndarray, settings: ProbeSettings = PROBE) -> list[tuple[np.ndarray, np.ndarray]]:
    """``settings.splits`` random halvings of the frames by video."""
    splitter = GroupShuffleSplit(settings.splits, test_size=settings.world_test_fraction, random_state=settings.seed)
    return list(splitter.split(videos, groups=videos))


# ---------------------------------------------------------------- the three protocols

def _summary(runs: list[dict], classes: list[str] | None = None) -> dict:
    """Mean over splits of each split's score (and per-class AP)."""
    out = {"score": float(np.mean([r["score"] for r in runs])), "splits": runs}
    if classes is not None and "per_class" in runs[0]:
        out["per_class"] = {}
        for c, name in enumerate(classes):
            values = [r["per_class"][c] for r in runs if r["per_class"][c] is not None]
            out["per_class"][name] = float(np.mean(values)) if values else None
    return out


def _network_row(network: ProbedNetwork) -> dict:
    return {"name": network.name, "run_dir": network.run_dir, "label_kind": network.label_kind, "k": network.k,
            "trained": network.trained}


def network_rows(networks: list[ProbedNetwork], image_paths: list[Path], layers: tuple[str, ...],
                 score: Callable[[np.ndarray], dict[str, dict]], device: torch.device | str, settings: ProbeSettings,
                 progress: bool, log: Callable[[str], None]) -> list[dict]:
    """Each network's row of the table: its features of ``image_paths``, then ``score(features) -> {task:
    summary}`` for each layer. With ``settings.jobs`` > 1 the (network, layer) pairs are probed that many at
    a time, each in its own process (which runs the network again: a forward pass costs little next to the SVMs)."""
    def probe_layers(network: ProbedNetwork, chosen: tuple[str, ...]) -> dict[str, dict[str, dict]]:
        features = extract_features(network, image_paths, chosen, device, settings, progress and settings.jobs == 1)
        scored = {}
        for layer in chosen:
            scored[layer] = score(features[layer])
            log(f"{network.name:>18} {layer:>5}: " + ", ".join(f"{task} {summary['score']:.3f}"
                                                               for task, summary in scored[layer].items()))
        return scored

    if settings.jobs == 1:
        scored = [probe_layers(network, layers) for network in networks]
    else:
        pairs = [(network, layer) for network in networks for layer in layers]
        flat = Parallel(n_jobs=settings.jobs)(delayed(probe_layers)(network, (layer,)) for network, layer in pairs)
        scored = [{layer: part[layer] for part in flat[i * len(layers):(i + 1) * len(layers)] for layer in part}
                  for i in range(len(networks))]
    rows = []
    for network, by_layer in zip(networks, scored):
        results: dict[str, dict] = {}
        for layer in layers:
            for task, summary in by_layer[layer].items():
                results.setdefault(task, {})[layer] = summary
        rows.append({**_network_row(network), "results": results})
    return rows


def _document(dataset: str, fmt: str, source: str | Path, layers: tuple[str, ...], tasks: list[dict],
              rows: list[dict], settings: ProbeSettings) -> dict:
    return {"dataset": dataset, "format": fmt, "source": str(source), "layers": list(layers), "tasks": tasks,
            "networks": rows, "c_grid": list(settings.c_grid), "folds": settings.folds,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def probe_world(networks: list[ProbedNetwork], data_dir: str | Path, world_dir: str | Path,
                layers: tuple[str, ...] = PROBE_LAYERS, device: torch.device | str = "cpu",
                settings: ProbeSettings = PROBE, progress: bool = False,
                log: Callable[[str], None] = lambda line: None) -> dict:
    """Scene accuracy and object-presence mAP of each network's layers on the world's held-out frames."""
    tasks = world_tasks(data_dir, world_dir)
    splits = video_splits(tasks.videos, settings)
    # Objects shown and not shown in at least world_min_videos videos on both sides of every split: the AP of
    # a category seen in one or two videos would be noise (and undefined where it is missing).
    seen = np.all([_video_counts(tasks.objects[side], tasks.videos[side]).min(0) >= settings.world_min_videos
                   for split in splits for side in split], axis=0)
    if not seen.any():
        raise ValueError(f"{data_dir}: no object category is on screen (and off screen) in at least "
                         f"{settings.world_min_videos} held-out videos on each side of every split")
    objects, object_names = tasks.objects[:, seen], [n for n, s in zip(tasks.object_names, seen) if s]
    scene_counts = np.bincount(tasks.scenes, minlength=len(tasks.scene_names))
    task_rows = [
        {"task": "scene", "metric": "accuracy", "classes": tasks.scene_names, "frames": len(tasks.scenes),
         "chance": 1.0 / int((scene_counts > 0).sum()), "majority": float(scene_counts.max() / scene_counts.sum())},
        {"task": "objects", "metric": "mAP", "classes": object_names, "frames": len(tasks.scenes),
         "chance": float(objects.mean(0).mean()), "positives": objects.sum(0).astype(int).tolist()},
    ]

    def score(x: np.ndarray) -> dict[str, dict]:
        scene = [fit_multiclass(x[train], tasks.scenes[train], x[test], tasks.scenes[test], tasks.videos[train],
                                settings) for train, test in splits]
        present = [fit_multilabel(x[train], objects[train], x[test], objects[test], None, tasks.videos[train],
                                  settings) for train, test in splits]
        return {"scene": _summary(scene), "objects": _summary(present, object_names)}

    rows = network_rows(networks, tasks.image_paths, layers, score, device, settings, progress, log)
    return _document("world", "world", world_dir, layers, task_rows, rows, settings)


def probe_voc2007(networks: list[ProbedNetwork], root: str | Path, layers: tuple[str, ...] = PROBE_LAYERS,
                  device: torch.device | str = "cpu", settings: ProbeSettings = PROBE, progress: bool = False,
                  log: Callable[[str], None] = lambda line: None) -> dict:
    """Table 2a/2c: VOC 2007 classification mAP (per-class AP) of one-vs-rest SVMs on trainval, scored on test."""
    voc = read_voc2007(root)
    # "Difficult" (0): a positive for training, ignored when scoring, as VOC's evaluation does.
    train_y, test_y = voc.trainval_labels >= 0, voc.test_labels > 0
    def score(x: np.ndarray) -> dict[str, dict]:
        fit = fit_multilabel(x[:len(voc.trainval)], train_y, x[len(voc.trainval):], test_y, voc.test_labels == 0,
                             None, settings)
        return {"classification": _summary([fit], list(voc.classes))}

    rows = network_rows(networks, voc.trainval + voc.test, layers, score, device, settings, progress, log)
    task = {"task": "classification", "metric": "mAP", "classes": list(voc.classes),
            "train_images": len(voc.trainval), "test_images": len(voc.test)}
    return _document(Path(root).name, "voc2007", root, layers, [task], rows, settings)


def probe_imagefolder(networks: list[ProbedNetwork], root: str | Path, layers: tuple[str, ...] = PROBE_LAYERS,
                      per_class: int | None = PROBE.per_class, splits: int = PROBE.splits,
                      device: torch.device | str = "cpu", settings: ProbeSettings = PROBE, progress: bool = False,
                      log: Callable[[str], None] = lambda line: None) -> dict:
    """Scene classification accuracy, SUN397's protocol: ``per_class`` training images of each class,
    the rest tested, averaged over ``splits`` random splits (``per_class`` None: stratified halves)."""
    paths, labels, classes = read_imagefolder(root)
    if per_class is None:
        index_splits = [next(StratifiedKFold(2, shuffle=True, random_state=settings.seed + s).split(paths, labels))
                        for s in range(splits)]
    else:
        index_splits = per_class_splits(labels, per_class, splits, settings.seed)
    def score(x: np.ndarray) -> dict[str, dict]:
        return {"classification": _summary([fit_multiclass(x[train], labels[train], x[test], labels[test], None,
                                                           settings) for train, test in index_splits])}

    rows = network_rows(networks, paths, layers, score, device, settings, progress, log)
    task = {"task": "classification", "metric": "accuracy", "classes": classes, "images": len(paths),
            "per_class": per_class, "splits": splits, "chance": 1.0 / len(classes)}
    return _document(Path(root).name, "imagefolder", root, layers, [task], rows, settings)


def format_table(result: dict) -> str:
    """A probe result as a Markdown table shaped like Table 2a: a row per network, a column per task and layer
    (percentages)."""
    layers, tasks = result["layers"], result["tasks"]
    header = ["network"] + [f"{t['task']} {t['metric']} {layer}" for t in tasks for layer in layers]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in result["networks"]:
        cells = [row["name"] + (f" (k={row['k']})" if row["label_kind"] == "cluster" and row["trained"] else "")]
        cells += [f"{100 * row['results'][t['task']][layer]['score']:.1f}" for t in tasks for layer in layers]
        lines.append("| " + " | ".join(cells) + " |")
    chance = [f"{t['task']} chance {100 * t['chance']:.1f}%" for t in tasks if "chance" in t]
    return "\n".join(lines) + ("\n" + ", ".join(chance) if chance else "")
