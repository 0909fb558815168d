"""``ambient publish RUN_DIR``: the one step that loads a run's files into the database.

The pipeline (model/) writes only files; this reads them through model/network/run.py and model/data/dataset.py
and writes the database in short transactions, so annotators keep submitting while a run is
published (SQLite has one write lock):

1. categories, then the pool's and the training set's frames, a chunk of frames per transaction (a
   folder of still images is registered as a dataset whose frames have no video or clip);
2. the run row (kind, labels, last metrics);
3. each analysed layer's units with their masked images, one transaction per layer. A layer whose
   units file is unchanged (same digest) is left alone, with its annotations; a changed one replaces
   the old units only while nobody has annotated them, else publishing stops and says why;
   Then each layer's activation histograms and lower-quantile samples (for the unit pages), replaced
   every time;
4. the automatic labels of dissection.json (the paper's and, from masks, Network Dissection's; a
   mask class the categories table lacks is added, with its characteristic-sound flag);
5. the sound clusters (or code bits) of the run's labels, with their member frames;
6. emergence.json (``dissect --checkpoints``), localization.json (``ambient localize``) and
   ablation_<layer>.json (``ambient ablate``) onto the run, and
   from the latter's single units each unit's "sounds it helps predict" and each cluster's units it depends on.
7. each unit's similar units (the correlation of the pool maxima its units file keeps), the feature
   visualisations of RUN_DIR/visualizations/ (``ambient visualize``), of units and of sound clusters, and the
   run's comparisons with others (compare_<A>_<B>.json, ``ambient compare``).

Publishing is idempotent: the same files give the same database.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from backend.data_roots import OutsideRoots, check_run_paths, data_roots
from backend.db import store
from backend.db.models import Category, Dataset, Frame, Run, SoundCluster, Video
from backend.db.session import session_factory
from model.data import dataset as ds
from model.data import pool as pl
from model.network import run as rd
from model.categories import Category as CategoryInfo
from model.categories import load_categories
from model.sound.groups import BROWSABLE_KINDS, dataset_sound_groups
from model.network.modelfiles import file_sha256
from model.settings import UNITS
from model.units.compare import read_pool_maxima, similar_units
from model.units.top_images import read_unit_views

FRAMES_PER_TRANSACTION = 20_000


class PublishError(Exception):
    """A run that cannot be published as asked; the message names the run and what to do."""


@dataclass
class PublishSummary:
    run_id: int
    layers: dict[str, str] = field(default_factory=dict)    # layer -> "published" | "unchanged"
    auto_labels: int | None = None                          # units given an automatic label, if dissected
    sound_groups: int | None = None
    notes: list[str] = field(default_factory=list)


def units_digest(path: Path) -> str:
    """SHA-256 of what a units file says about its units: top frames, scores and masked images."""
    digest = hashlib.sha256()
    with np.load(path) as data:
        for key in ("frame_ids", "scores", "offsets", "jpegs"):
            digest.update(np.ascontiguousarray(data[key]).tobytes())
    return digest.hexdigest()


def model_file_digests(run_dir: Path | rd.RunFolder) -> dict[str, str]:
    """{resolved path: SHA-256} of each model file the run's network loads from (``network_files``; one that
    is not there is left out, and the server then says it cannot load the network)."""
    from model.units.predict import network_files

    return {str(path.resolve()): file_sha256(path) for path in network_files(run_dir) if path.is_file()}


def _register_frames(sessions, data_dir: Path) -> int:
    """The dataset of DATA_DIR (or the image folder) with all its frames, added a chunk per transaction;
    returns its id."""
    try:
        records = pl.load_pool(data_dir)
    except ValueError as error:      # e.g. a manifest path leaving the folder
        raise PublishError(str(error)) from None
    textures = np.load(Path(data_dir) / ds.TEXTURES, mmap_mode="r") if (Path(data_dir) / ds.TEXTURES).exists() \
        else None
    videos_dir = ds.read_report(data_dir).get("videos_dir")
    dataset_id = None
    for start in range(0, max(len(records), 1), FRAMES_PER_TRANSACTION):
        try:
            with sessions.begin() as session:
                dataset = store.register_dataset(session, data_dir, records[start:start + FRAMES_PER_TRANSACTION],
                                                 textures, videos_dir)
                dataset_id = dataset.id
        except ValueError as error:
            raise PublishError(str(error)) from None
    return dataset_id


def _layer_units(path: Path) -> tuple[dict, list[store.UnitRecord]]:
    meta = rd.read_units_meta(path)
    images = rd.load_unit_images(path)
    with np.load(path) as data:
        frame_ids, scores = data["frame_ids"], data["scores"]
    units = [store.UnitRecord(unit, [store.UnitImageRecord(int(row), float(score), jpeg)
                                     for row, score, jpeg in zip(frame_ids[unit][frame_ids[unit] >= 0].tolist(),
                                                                 scores[unit].tolist(), images[unit])])
             for unit in range(len(images))]
    return meta, units


def run_name(run_dir: Path, model_kind: str, run_json: dict, published: datetime) -> str:
    """A name that says what the run is, for a run published the first time: its folder's last two parts
    (jobs' runs are all called "run"), the network, what it was trained on (labels, how many, preset) and
    when, e.g. "jobs/7/run · caffenet-bn on 30 sound clusters, demo preset · 2026-12-03 09:30"."""
    what = model_kind
    if run_json:
        noun = {"cluster": "sound clusters", "binary": "sound-code bits", "spectrum": "spectrum bins",
                "scene": "scene classes", "texton": "texton classes"}.get(run_json.get("label_kind"), f"{run_json.get('label_kind')} labels")
        what += f" on {run_json.get('num_outputs')} {noun}"
        if run_json.get("preset"):
            what += f", {run_json['preset']} preset"
    else:
        what += " (not trained here)"
    folder = "/".join(Path(run_dir).parts[-3:] if Path(run_dir).name == "run" else Path(run_dir).parts[-2:])
    return f"{folder} · {what} · {published:%Y-%m-%d %H:%M}"


def publish_run(run_dir: str | Path, engine: Engine, replace: bool = False,
                progress: Callable[[str], None] = lambda message: None,
                roots: list[Path] | None = None) -> PublishSummary:
    """Load RUN_DIR's units, automatic labels and sound clusters into the database (see the module doc).
    RUN_DIR and every path its files name lie under ``roots`` (None: AMBIENT_DATA_ROOTS, else the jobs
    folder and ./demo), else nothing is published."""
    run_dir = Path(run_dir).resolve()
    try:
        check_run_paths(run_dir, data_roots() if roots is None else roots)
    except OutsideRoots as error:
        raise PublishError(str(error)) from None
    folder = rd.RunFolder(run_dir)
    layers = folder.layers
    if not layers:
        raise PublishError(f"{run_dir}: no units to publish; run `ambient units {run_dir} --pool DATA_DIR` first")
    sessions = session_factory(engine)
    metas = {layer: folder.units_meta(layer) for layer in layers}
    pool_dir = Path(metas[layers[0]]["data_dir"])
    if any(Path(meta["data_dir"]) != pool_dir for meta in metas.values()):
        raise PublishError(f"{run_dir}: its layers were analysed on different pools; publish one pool per run folder")
    if metas[layers[0]].get("pool") == "images":
        if not pool_dir.is_dir() or pl.pool_digest(pl.load_pool(pool_dir)) != metas[layers[0]].get("pool_digest"):
            raise PublishError(f"{run_dir}: its units come from the image folder {pool_dir}, whose images have "
                               f"changed since (or which is gone); run `ambient units` again")
    elif not ds.is_dataset(pool_dir):
        raise PublishError(f"{run_dir}: its units come from {pool_dir}, which is no longer a dataset folder")

    with sessions.begin() as session:
        store.seed_categories(session, load_categories())
    progress(f"frames of {pool_dir}")
    pool_id = _register_frames(sessions, pool_dir)
    first = metas[layers[0]]
    model_files = model_file_digests(folder)       # hashed before the transaction: it only writes
    with sessions.begin() as session:
        run = store.upsert_run(session, run_dir, first["kind"], first.get("labels_kind"), folder.last_metrics(),
                               session.get(Dataset, pool_id),
                               name=run_name(run_dir, first["kind"], folder.info, datetime.now()))
        store.record_model_files(session, run, model_files)
        summary = PublishSummary(run.id)

    for layer in layers:
        path = folder.units_file(layer)
        digest = units_digest(path)
        with sessions() as session:
            run = store.find_run(session, run_dir)
            existing = store.find_layer(session, run, layer)
            if existing is not None and existing.units_digest == digest:
                summary.layers[layer] = "unchanged"
                continue
            work = store.layer_work(session, existing) if existing is not None else 0
        if work and not replace:
            raise PublishError(f"{run_dir}: layer {layer} is already published with {work} annotations and sound "
                               f"judgements, and its units have changed since; publishing would discard them. "
                               f"Pass --replace to do so, or analyse into another run folder")
        meta, units = _layer_units(path)      # decoded before the transaction: it only writes
        progress(f"{len(units)} units of {layer}")
        record = store.LayerRecord(layer, len(units), meta["input_size"], meta["rf_size"], meta["rf_radius"], digest)
        with sessions.begin() as session:
            run = store.find_run(session, run_dir)
            store.replace_units(session, run, session.get(Dataset, pool_id), record, units)
        summary.layers[layer] = "published"

    for layer in layers:    # the unit pages' histograms and samples: nobody annotates them, so always replaced
        views = read_unit_views(folder.units_file(layer))
        if views is None:
            summary.notes.append(f"layer {layer}: no activation histograms or lower-quantile samples in its units "
                                 f"file (made before they were saved); run `ambient units` again to add them")
            continue
        with sessions.begin() as session:
            store.replace_unit_views(session, store.find_layer(session, store.find_run(session, run_dir), layer),
                                     session.get(Dataset, pool_id), [
                store.UnitViewRecord(unit, {"counts": view.histogram_counts, "edges": view.histogram_edges},
                                     [store.UnitSampleRecord(*sample) for sample in view.samples])
                for unit, view in enumerate(views)])

    summary.auto_labels = _publish_auto_labels(sessions, folder, layers)
    summary.sound_groups = _publish_sound_groups(sessions, folder, first.get("labels_kind"), pool_dir, pool_id,
                                                 summary, progress)
    _publish_analyses(sessions, folder, layers)
    _publish_explorations(sessions, folder, layers)
    return summary


def _publish_explorations(sessions, folder: rd.RunFolder, layers: list[str]) -> None:
    """Similar units per layer (model/units/compare.py) and the visualisations' PNGs (model/units/visualize.py)."""
    index = folder.visualizations()
    images = folder.path / rd.VISUALIZATIONS
    for layer in layers:
        saved = read_pool_maxima(folder.units_file(layer))
        similar = None
        if saved is not None:
            similar = {unit: [{"layer": layer, "unit": other, "r": round(r, 4)} for other, r in row]
                       for unit, row in enumerate(similar_units(saved[1], UNITS.similar_units))}
        pngs = {entry["unit"]: (images / entry["file"]).read_bytes() for entry in index["units"]
                if entry["layer"] == layer and (images / entry["file"]).is_file()}
        with sessions.begin() as session:
            layer_row = store.find_layer(session, store.find_run(session, folder.path), layer)
            store.write_unit_explorations(session, layer_row, pngs, similar)
    pngs = {entry["cluster"]: (images / entry["file"]).read_bytes() for entry in index["clusters"]
            if (images / entry["file"]).is_file()}
    comparisons = folder.comparisons()
    with sessions.begin() as session:
        run = store.find_run(session, folder.path)
        store.write_cluster_visualizations(session, run, pngs)
        run.comparisons = comparisons or None


def _publish_analyses(sessions, folder: rd.RunFolder, layers: list[str]) -> None:
    """Emergence, localisation and ablation results (those of the first analysed layer that has any)."""
    from model.units.ablate import single_unit_links

    ablated = next((layer for layer in layers if folder.ablation(layer) is not None), None)
    ablation = folder.ablation(ablated) if ablated else None
    helps, depends = single_unit_links(ablation) if ablation else ({}, {})
    with sessions.begin() as session:
        run = store.find_run(session, folder.path)
        store.write_run_analyses(session, run, folder.emergence(), ablation, folder.localization())
        store.write_ablation_links(session, run, store.find_layer(session, run, ablated) if ablated else None,
                                   helps, depends)


def _publish_auto_labels(sessions, folder: rd.RunFolder, layers: list[str]) -> int | None:
    labels = folder.dissection
    if labels is None:
        return None
    layer = labels[0].get("layer", layers[0]) if labels else layers[0]
    if layer not in layers:
        return None
    scores = rd.dissection_scores_file(folder.path, layer)
    mask_classes = []
    if scores.exists():
        with np.load(scores) as data:
            mask_classes = [CategoryInfo(str(name), (), False, bool(sound))
                            for name, sound in zip(data["classes"].tolist(), data["class_sounds"].tolist())]
    with sessions.begin() as session:
        store.seed_categories(session, mask_classes)
        return store.write_auto_labels(session, folder.path, layer, [
            store.AutoLabel(row["unit"], row["category"], row["precision"], row["iou"],
                            row.get("netdissect_category"), row.get("netdissect_iou")) for row in labels])


def _publish_sound_groups(sessions, folder: rd.RunFolder, labels_kind: str | None, pool_dir: Path, pool_id: int,
                          summary: PublishSummary, progress) -> int | None:
    """The clusters of the labels the run was trained on (from its training set, which may not be the pool)."""
    if labels_kind not in BROWSABLE_KINDS:
        return None
    data_dir = Path(folder.data_dir or pool_dir)
    try:
        groups = dataset_sound_groups(data_dir, labels_kind)
    except (FileNotFoundError, ValueError) as error:
        summary.notes.append(f"no sound clusters published: {error}")
        return None
    dataset_id = pool_id if data_dir.resolve() == pool_dir.resolve() else _register_frames(sessions, data_dir)
    progress(f"{len(groups)} sound groups of {data_dir}")
    with sessions.begin() as session:
        run = store.find_run(session, folder.path)
        count = store.replace_sound_clusters(session, run, session.get(Dataset, dataset_id), groups)
        describe_sound_clusters(session, run)
        return count


# A cluster's description names its true sources heard in at least this share of its frames, the most heard
# first, at most SOURCES_NAMED of them; without a truth, the videos of its SOURCE_CLIPS nearest clips.
SOURCE_SHARE = 0.1
SOURCES_NAMED = 3
SOURCE_CLIPS = 3


def sound_cluster_description(size: int, sources: dict[str, int], clip_videos: list[str]) -> str | None:
    """What a sound cluster is, where the data says: on a generated world the true sources its frames hear
    ("traffic 62%, crowd 20%"), else the videos its nearest clips come from ("like street_01, market_03")."""
    heard = sorted(((count / size, name) for name, count in sources.items() if size and count), reverse=True)
    named = [f"{name} {share:.0%}" for share, name in heard[:SOURCES_NAMED] if share >= SOURCE_SHARE] or \
        [f"{name} {share:.0%}" for share, name in heard[:1]]
    if named:
        return ", ".join(named)[:200]
    videos = list(dict.fromkeys(Path(video).stem for video in clip_videos))[:SOURCE_CLIPS]
    return f"like {', '.join(videos)}"[:200] if videos else None


def describe_sound_clusters(session: Session, run: Run) -> None:
    """Store each of the run's sound clusters' description (`sound_cluster_description`)."""
    for cluster in session.scalars(select(SoundCluster).where(SoundCluster.run_id == run.id)):
        closest = list(cluster.closest_frame_ids)[:SOURCE_CLIPS]
        paths = dict(session.execute(select(Frame.id, Video.path).join(Video, Frame.video_id == Video.id)
                                     .where(Frame.id.in_(closest))).all())
        cluster.description = sound_cluster_description(cluster.size, dict(cluster.sources),
                                                        [paths[i] for i in closest if i in paths])


def characteristic_sounds(session: Session) -> dict[str, bool]:
    """The categories' characteristic-sound flags as the database has them (admins may edit them)."""
    return dict(session.execute(select(Category.name, Category.characteristic_sound)).all())
