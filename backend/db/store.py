"""What ``ambient publish`` (backend/publish.py) writes into the database. Callers own the transaction
(``session.begin()``), so each write commits whole or leaves the database as it was."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from backend.db.models import (Annotation, Category, Dataset, Frame, Layer, Run, SoundCluster,
                               SoundClusterMember, SoundJudgement, Unit, UnitImage, UnitSample, Video)
from model.categories import Category as CategoryInfo
from model.data.dataset import FrameRecord

if TYPE_CHECKING:      # numpy is imported where used: the web app, which seeds categories here, starts without it
    import numpy as np

    from model.sound.groups import SoundGroup


@dataclass(frozen=True)
class UnitImageRecord:
    row: int                 # the frame's line in the pool's manifest.jsonl
    activation: float
    masked_jpeg: bytes


@dataclass(frozen=True)
class UnitRecord:
    index: int
    images: Sequence[UnitImageRecord]     # best first


@dataclass(frozen=True)
class UnitSampleRecord:
    quantile: float
    row: int                 # the frame's line in the pool's manifest.jsonl
    activation: float
    masked_jpeg: bytes


@dataclass(frozen=True)
class UnitViewRecord:
    """What the unit page shows beyond the top images: the pool's activation histogram and the samples."""

    index: int
    histogram: dict                       # {"counts": [...], "edges": [...]}
    samples: Sequence[UnitSampleRecord]   # per quantile, strongest first


@dataclass(frozen=True)
class LayerRecord:
    name: str
    num_units: int
    input_size: int
    rf_size: float
    rf_radius: float
    units_digest: str | None = None


@dataclass(frozen=True)
class AutoLabel:
    unit: int
    category: str | None               # the paper's score: precision over the unit's top images
    precision: float
    iou: float
    netdissect_category: str | None = None    # Network Dissection's: best IoU over the pool (masks only)
    netdissect_iou: float | None = None


def seed_categories(session: Session, categories: Iterable[CategoryInfo]) -> None:
    """Add the categories the table lacks (by name); existing rows keep their ids and annotations."""
    known = set(session.scalars(select(Category.name)))
    missing = [{"name": c.name, "synonyms": ";".join(c.synonyms), "stuff": c.stuff,
                "characteristic_sound": c.characteristic_sound} for c in categories if c.name not in known]
    if missing:     # one bulk INSERT: the ORM's objects took 4x as long (every test's database and the app's start)
        session.execute(insert(Category), missing)


def register_dataset(session: Session, data_dir: Path, records: Sequence[FrameRecord],
                     textures: np.ndarray | None, videos_dir: str | None) -> Dataset:
    """The dataset of ``data_dir`` with all its videos and frames (only missing rows are added).

    Still images (``clip == ""``, model/data/pool.py) have no video or clip. Their rows are places in a folder's
    sorted image list: rows already stored under other images mean the folder changed, and are refused.
    """
    import numpy as np

    data_dir = Path(data_dir).resolve()
    dataset = session.scalar(select(Dataset).where(Dataset.data_dir == str(data_dir)))
    if dataset is None:
        dataset = Dataset(name=data_dir.name, data_dir=str(data_dir), videos_dir=videos_dir)
        session.add(dataset)
        session.flush()
    videos = dict(session.execute(select(Video.key, Video.id).where(Video.dataset_id == dataset.id)).all())
    new_videos = {r.video_id: r.video for r in records if r.clip and r.video_id not in videos}
    if new_videos:
        session.execute(insert(Video), [{"dataset_id": dataset.id, "key": key, "path": path}
                                        for key, path in new_videos.items()])
        videos = dict(session.execute(select(Video.key, Video.id).where(Video.dataset_id == dataset.id)).all())
    stored = dict(session.execute(select(Frame.row, Frame.image_path).where(Frame.dataset_id == dataset.id)).all())
    moved = [r for r in records if not r.clip and stored.get(r.frame_id, r.image) != r.image]
    if moved:
        raise ValueError(f"{data_dir}: image {moved[0].image} is row {moved[0].frame_id}, which the database holds as "
                         f"{stored[moved[0].frame_id]}: the folder's images changed since it was first published; "
                         f"publish the new images from another folder")
    rows = set(stored)
    new_frames = [{"dataset_id": dataset.id, "video_id": videos[r.video_id] if r.clip else None, "row": r.frame_id,
                   "frame_index": r.frame_index, "time": r.time, "image_path": r.image, "clip_path": r.clip or None,
                   "split": r.split, "silent": r.silent,
                   "texture": None if textures is None else textures[r.frame_id].astype(np.float32).tobytes()}
                  for r in records if r.frame_id not in rows]
    if new_frames:
        session.execute(insert(Frame), new_frames)
    return dataset


def upsert_run(session: Session, run_dir: Path, model_kind: str, labels_kind: str | None,
               metrics: dict, dataset: Dataset | None, name: str | None = None) -> Run:
    """The run of `run_dir`, added (called `name`, else its folder's name) or updated; an existing run
    keeps its name, which an admin may have changed."""
    run_dir = Path(run_dir).resolve()
    run = session.scalar(select(Run).where(Run.run_dir == str(run_dir)))
    if run is None:
        run = Run(run_dir=str(run_dir), name=(name or run_dir.name)[:200], model_kind=model_kind)
        session.add(run)
    run.model_kind, run.labels_kind, run.metrics = model_kind, labels_kind, metrics
    run.dataset_id = dataset.id if dataset is not None else None
    session.flush()
    return run


def record_model_files(session: Session, run: Run, digests: dict[str, str]) -> None:
    """The SHA-256 of each model file the run's network loads from ({resolved path: hex digest}), as
    published: the server loads those files only while they still have it (backend/app/listen.py)."""
    run.model_files = dict(digests)
    session.flush()


def find_run(session: Session, run_dir: Path) -> Run | None:
    return session.scalar(select(Run).where(Run.run_dir == str(Path(run_dir).resolve())))


def find_layer(session: Session, run: Run, name: str) -> Layer | None:
    return session.scalar(select(Layer).where(Layer.run_id == run.id, Layer.name == name))


def layer_work(session: Session, layer: Layer) -> int:
    """How many annotations and sound judgements people have given the layer's units (marks belong to annotations)."""
    units = select(Unit.id).where(Unit.layer_id == layer.id)
    images = select(UnitImage.id).where(UnitImage.unit_id.in_(units))
    return (session.scalar(select(func.count()).select_from(Annotation).where(Annotation.unit_id.in_(units)))
            + session.scalar(select(func.count()).select_from(SoundJudgement)
                             .where(SoundJudgement.unit_image_id.in_(images))))


def frame_ids(session: Session, dataset: Dataset) -> dict[int, int]:
    """Manifest row -> Frame id for the dataset's frames."""
    return dict(session.execute(select(Frame.row, Frame.id).where(Frame.dataset_id == dataset.id)).all())


def replace_units(session: Session, run: Run, dataset: Dataset, layer: LayerRecord,
                  units: Iterable[UnitRecord]) -> Layer:
    """Replace the run's units of ``layer`` (their images and annotations go with them).

    ``units`` may be a generator that computes as it goes: nothing is committed here.
    """
    session.execute(delete(Layer).where(Layer.run_id == run.id, Layer.name == layer.name))
    row = Layer(run_id=run.id, name=layer.name, num_units=layer.num_units, input_size=layer.input_size,
                rf_size=layer.rf_size, rf_radius=layer.rf_radius, units_digest=layer.units_digest)
    session.add(row)
    session.flush()
    ids = frame_ids(session, dataset)
    for unit in units:
        unit_id = session.scalar(insert(Unit).values(layer_id=row.id, index=unit.index).returning(Unit.id))
        if unit.images:
            session.execute(insert(UnitImage), [
                {"unit_id": unit_id, "rank": rank, "activation": image.activation,
                 "masked_jpeg": image.masked_jpeg, "frame_id": ids[image.row]}
                for rank, image in enumerate(unit.images)])
    return row


def replace_unit_views(session: Session, layer: Layer, dataset: Dataset, views: Iterable[UnitViewRecord]) -> int:
    """Replace the histograms and lower-quantile samples of ``layer``'s units (nobody annotates these:
    they are replaced whenever the run is published); returns how many units got them."""
    units = dict(session.execute(select(Unit.index, Unit.id).where(Unit.layer_id == layer.id)).all())
    session.execute(delete(UnitSample).where(UnitSample.unit_id.in_(units.values())))
    ids = frame_ids(session, dataset)
    count = 0
    for view in views:
        unit_id = units[view.index]
        session.execute(update(Unit).where(Unit.id == unit_id).values(histogram=view.histogram))
        ranks: dict[float, int] = {}
        rows = []
        for sample in view.samples:
            rank = ranks[sample.quantile] = ranks.get(sample.quantile, -1) + 1
            rows.append({"unit_id": unit_id, "quantile": sample.quantile, "rank": rank,
                         "activation": sample.activation, "masked_jpeg": sample.masked_jpeg,
                         "frame_id": ids[sample.row]})
        if rows:
            session.execute(insert(UnitSample), rows)
        count += 1
    return count


def write_auto_labels(session: Session, run_dir: Path, layer: str, labels: Iterable[AutoLabel]) -> int:
    """Store automatic labels on the run's units; returns how many units were labelled (the paper's score)."""
    run = find_run(session, run_dir)
    if run is None:
        raise LookupError(f"{run_dir}: no such run in the database; run `ambient units` with this --db first")
    layer_row = find_layer(session, run, layer)
    if layer_row is None:
        raise LookupError(f"{run_dir}: the database has no units of layer {layer!r}")
    categories = dict(session.execute(select(Category.name, Category.id)).all())
    units = {u.index: u for u in session.scalars(select(Unit).where(Unit.layer_id == layer_row.id))}
    count = 0
    for label in labels:
        unit = units[label.unit]
        unit.auto_category_id = categories.get(label.category) if label.category else None
        unit.auto_precision, unit.auto_iou = label.precision, label.iou
        unit.auto_netdissect_category_id = categories.get(label.netdissect_category)
        unit.auto_netdissect_iou = label.netdissect_iou
        count += unit.auto_category_id is not None
    session.flush()
    return count


def replace_sound_clusters(session: Session, run: Run, dataset: Dataset, groups: Sequence[SoundGroup]) -> int:
    """Replace the run's sound clusters (or code bits) with ``groups`` over ``dataset``'s frames; the names
    admins gave them stay with their index."""
    import numpy as np

    given = dict(session.execute(select(SoundCluster.index, SoundCluster.given_name)
                                 .where(SoundCluster.run_id == run.id, SoundCluster.given_name.is_not(None))).all())
    session.execute(delete(SoundCluster).where(SoundCluster.run_id == run.id))
    ids = frame_ids(session, dataset)
    for group in groups:
        cluster_id = session.scalar(insert(SoundCluster).values(
            run_id=run.id, index=group.index, name=group.name, given_name=given.get(group.index),
            size=group.size, share=group.share,
            texture=np.asarray(group.texture, np.float32).tobytes(),
            contrast=None if group.contrast is None else np.asarray(group.contrast, np.float32).tobytes(),
            sources=group.sources, closest_frame_ids=[ids[row] for row in group.closest_rows]).returning(SoundCluster.id))
        if group.size:
            session.execute(insert(SoundClusterMember), [{"cluster_id": cluster_id, "frame_id": ids[int(row)]}
                                                         for row in group.members])
    return len(groups)


def write_run_analyses(session: Session, run: Run, emergence: dict | None, ablation: dict | None,
                       localization: dict | None = None) -> None:
    """The run's emergence, ablation and localisation results (None: not computed; the stored ones are cleared)."""
    run.emergence = emergence
    run.localization = localization
    run.ablation = None if ablation is None else {key: value for key, value in ablation.items()
                                                  if key != "single_units"}
    session.flush()


def write_ablation_links(session: Session, run: Run, layer: Layer | None, helps: dict[int, list[dict]],
                         depends: dict[int, list[dict]]) -> None:
    """Each unit's "sounds it helps predict" and each sound cluster's units it depends on most (issue 28);
    units and clusters without any are cleared."""
    if layer is not None:
        for unit in session.scalars(select(Unit).where(Unit.layer_id == layer.id)):
            unit.helps_predict = helps.get(unit.index)
    for cluster in session.scalars(select(SoundCluster).where(SoundCluster.run_id == run.id)):
        cluster.depends_on = [{"layer": layer.name, **link} for link in depends.get(cluster.index, [])] \
            if layer is not None and cluster.index in depends else None
    session.flush()


def write_unit_explorations(session: Session, layer: Layer, visualizations: dict[int, bytes],
                            similar: dict[int, list[dict]] | None) -> None:
    """Each unit's feature visualisation (PNG) and similar units (issue 38); units without are cleared
    (``similar`` None: the units file has no pool maxima, so the units keep none)."""
    for unit in session.scalars(select(Unit).where(Unit.layer_id == layer.id)):
        unit.visualization_png = visualizations.get(unit.index)
        unit.similar = similar.get(unit.index) if similar is not None else None
    session.flush()


def write_cluster_visualizations(session: Session, run: Run, visualizations: dict[int, bytes]) -> None:
    """Each sound cluster's feature visualisation (PNG); clusters without are cleared."""
    for cluster in session.scalars(select(SoundCluster).where(SoundCluster.run_id == run.id)):
        cluster.visualization_png = visualizations.get(cluster.index)
    session.flush()
