"""The database schema, one source of truth (the Alembic revisions are generated from it).

Rows that belong to a parent are deleted with it (ON DELETE CASCADE), so replacing a run's units
also removes their images and annotations.
"""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (JSON, BigInteger, CheckConstraint, DateTime, Float, ForeignKey, Index, Integer, LargeBinary,
                        MetaData, String, Text, UniqueConstraint, func)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from annotation.aggregate import ANSWERS, AUDIBLE

GOLD_SOURCES = ("truth", "settled", "typed")   # where a gold unit's answer came from

# Stable constraint names so that migrations can alter them (SQLite batch mode needs names).
NAMING = {"ix": "ix_%(column_0_label)s", "uq": "uq_%(table_name)s_%(column_0_name)s",
          "ck": "ck_%(table_name)s_%(constraint_name)s",
          "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s", "pk": "pk_%(table_name)s"}



def _now() -> datetime:
    return datetime.now(timezone.utc)


def _parent(table: str) -> Mapped[int]:
    return mapped_column(ForeignKey(f"{table}.id", ondelete="CASCADE"), index=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Dataset(Base):
    __tablename__ = "datasets"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    data_dir: Mapped[str] = mapped_column(String(1000), unique=True)     # absolute DATA_DIR
    videos_dir: Mapped[str | None] = mapped_column(String(1000))         # where the source videos were
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Video(Base):
    __tablename__ = "videos"
    __table_args__ = (UniqueConstraint("dataset_id", "key"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = _parent("datasets")
    key: Mapped[str] = mapped_column(String(200))            # FrameRecord.video_id
    path: Mapped[str] = mapped_column(String(1000))          # relative to the videos folder


class Frame(Base):
    """A frame and its 3.75 s clip; ``row`` is its line in the dataset's manifest.jsonl.

    A still image of an image-folder pool (model/data/pool.py) has no video and no clip; ``row`` is its
    place in the folder's sorted image list."""

    __tablename__ = "frames"
    __table_args__ = (UniqueConstraint("dataset_id", "row"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = _parent("datasets")
    video_id: Mapped[int | None] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"), index=True)
    row: Mapped[int] = mapped_column(Integer)
    frame_index: Mapped[int] = mapped_column(Integer)
    time: Mapped[float] = mapped_column(Float)
    image_path: Mapped[str] = mapped_column(String(1000))    # relative to DATA_DIR (or the image folder)
    clip_path: Mapped[str | None] = mapped_column(String(1000))     # relative to DATA_DIR; None: a still image
    split: Mapped[str] = mapped_column(String(10))
    silent: Mapped[bool]
    texture: Mapped[bytes | None] = mapped_column(LargeBinary)   # float32 (502,) sound texture

    video: Mapped[Video | None] = relationship()


class Run(Base):
    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    run_dir: Mapped[str] = mapped_column(String(1000), unique=True)      # absolute RUN_DIR
    model_kind: Mapped[str] = mapped_column(String(200))    # "caffenet-bn", "torchvision:alexnet", ...
    labels_kind: Mapped[str | None] = mapped_column(String(50))          # "cluster", "binary", ...
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    # RUN_DIR/emergence.json (``ambient dissect --checkpoints``): per kept step, accuracy and detectors.
    emergence: Mapped[dict | None] = mapped_column(JSON)
    # RUN_DIR/ablation_<layer>.json (``ambient ablate``) without its per-unit part: baseline and ablations.
    ablation: Mapped[dict | None] = mapped_column(JSON)
    # RUN_DIR/localization.json (``ambient localize``): heatmaps against the world's truth, with baselines.
    localization: Mapped[dict | None] = mapped_column(JSON)
    # {resolved path: SHA-256} of the model files its network loads from, recorded when it was published:
    # the server loads only those bytes (None: published before this was recorded, so nothing is loaded).
    model_files: Mapped[dict | None] = mapped_column(JSON)
    # ``ambient compare RUN_DIR B``: this run's units matched to another run's, {file name: compare_<A>_<B>.json},
    # deferred: only the Compare page reads them.
    comparisons: Mapped[dict | None] = mapped_column(JSON, deferred=True)


class Layer(Base):
    __tablename__ = "layers"
    __table_args__ = (UniqueConstraint("run_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = _parent("runs")
    name: Mapped[str] = mapped_column(String(200))
    num_units: Mapped[int]
    input_size: Mapped[int]          # side of the (square) network input the masks are drawn on
    rf_size: Mapped[float]           # theoretical receptive field, pixels
    rf_radius: Mapped[float]         # radius of the circles drawn in the masks, pixels
    # SHA-256 of the published units file's top images: publishing the same analysis again changes nothing.
    units_digest: Mapped[str | None] = mapped_column(String(64))


class Unit(Base):
    __tablename__ = "units"
    __table_args__ = (UniqueConstraint("layer_id", "index"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    layer_id: Mapped[int] = _parent("layers")
    index: Mapped[int]
    # Automatic label (``ambient dissect --truth`` or ``--masks``), beside the human ones: the paper's score.
    auto_category_id: Mapped[int | None] = mapped_column(ForeignKey("categories.id", ondelete="SET NULL"))
    auto_precision: Mapped[float | None]
    auto_iou: Mapped[float | None]
    # Network Dissection's label (``ambient dissect --masks``): the class of best IoU over the pool, when > 0.04.
    auto_netdissect_category_id: Mapped[int | None] = mapped_column(ForeignKey("categories.id", ondelete="SET NULL"))
    auto_netdissect_iou: Mapped[float | None]
    # The pool's histogram of the unit's spatial maxima, {"counts": [...], "edges": [...]} (``ambient units``).
    histogram: Mapped[dict | None] = mapped_column(JSON)
    # ``ambient ablate --each-unit``: the sound labels that lose most with this unit alone off, [{"index": label
    # index, "probability_drop": true-label probability drop, "drop": accuracy drop}, ...] largest first.
    helps_predict: Mapped[list | None] = mapped_column(JSON)
    # ``ambient visualize``: a PNG optimised to excite the unit (model/units/visualize.py).
    visualization_png: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    # The units of the run whose spatial maxima over the pool correlate most with this one's (``ambient units``
    # saves the maxima): [{"layer": name, "unit": index, "r": Pearson r}, ...] largest first.
    similar: Mapped[list | None] = mapped_column(JSON)

    layer: Mapped[Layer] = relationship()
    auto_category: Mapped[Category | None] = relationship(foreign_keys=[auto_category_id])
    auto_netdissect_category: Mapped[Category | None] = relationship(foreign_keys=[auto_netdissect_category_id])
    images: Mapped[list[UnitImage]] = relationship(order_by="UnitImage.rank", back_populates="unit",
                                                   passive_deletes=True)


class UnitImage(Base):
    """One of a unit's top images: rank 0 is its strongest."""

    __tablename__ = "unit_images"
    __table_args__ = (UniqueConstraint("unit_id", "rank"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    unit_id: Mapped[int] = _parent("units")
    rank: Mapped[int]
    activation: Mapped[float]                               # the spatial maximum of the unit's map
    masked_jpeg: Mapped[bytes] = mapped_column(LargeBinary)  # network input with the outside darkened
    frame_id: Mapped[int] = _parent("frames")               # the unmasked frame and its clip

    unit: Mapped[Unit] = relationship(back_populates="images")
    frame: Mapped[Frame] = relationship()


class UnitSample(Base):
    """An image near a lower quantile of the unit's activations over the pool, masked like its top images
    (the unit page: what the unit fires on beyond its top images); rank 0 is the strongest of its quantile."""

    __tablename__ = "unit_samples"
    __table_args__ = (UniqueConstraint("unit_id", "quantile", "rank"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    unit_id: Mapped[int] = _parent("units")
    quantile: Mapped[float]                                 # 0.99, 0.9, 0.5 (UnitSettings.sample_quantiles)
    rank: Mapped[int]
    activation: Mapped[float]
    masked_jpeg: Mapped[bytes] = mapped_column(LargeBinary)
    frame_id: Mapped[int] = _parent("frames")

    frame: Mapped[Frame] = relationship()


class SoundCluster(Base):
    """One sound cluster (or code bit) of a run's labels, as ``ambient publish`` found it (model/sound/groups.py)."""

    __tablename__ = "sound_clusters"
    __table_args__ = (UniqueConstraint("run_id", "index"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = _parent("runs")
    index: Mapped[int]
    name: Mapped[str] = mapped_column(String(100))           # "Cluster 3", "Bit 7"
    # What it is, as the data says at publish: "traffic 62%, crowd 20%" (the world's truth), else its
    # nearest clips' videos; and the name an admin gave it (kept when the run is published again).
    description: Mapped[str | None] = mapped_column(String(200))
    given_name: Mapped[str | None] = mapped_column(String(100))
    size: Mapped[int]                                       # frames in the group, all splits
    share: Mapped[float]                                    # of all the dataset's frames
    texture: Mapped[bytes] = mapped_column(LargeBinary)     # float32 (502,) centroid / mean texture
    contrast: Mapped[bytes | None] = mapped_column(LargeBinary)   # binary: mean texture with the bit off
    sources: Mapped[dict] = mapped_column(JSON, default=dict)     # demo world: true source -> frames hearing it
    closest_frame_ids: Mapped[list] = mapped_column(JSON, default=list)   # Frame ids, nearest test frames first
    # ``ambient ablate --each-unit``: the units whose ablation costs this label most,
    # [{"layer": name, "unit": index, "probability_drop", "drop"}, ...] largest first.
    depends_on: Mapped[list | None] = mapped_column(JSON)
    # ``ambient visualize --clusters``: a PNG optimised for the cluster's probability.
    visualization_png: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)


class SoundClusterMember(Base):
    """A frame in a sound cluster (or with a code bit on)."""

    __tablename__ = "sound_cluster_members"
    cluster_id: Mapped[int] = mapped_column(ForeignKey("sound_clusters.id", ondelete="CASCADE"), primary_key=True)
    frame_id: Mapped[int] = mapped_column(ForeignKey("frames.id", ondelete="CASCADE"), primary_key=True, index=True)


class Category(Base):
    __tablename__ = "categories"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)      # SUN name
    synonyms: Mapped[str] = mapped_column(String(1000), default="")  # ";"-separated
    stuff: Mapped[bool] = mapped_column(default=False)
    characteristic_sound: Mapped[bool] = mapped_column(default=False)


class Annotator(Base):
    __tablename__ = "annotators"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    password_hash: Mapped[str] = mapped_column(String(500))
    is_admin: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    # Undo reaches only answers given after the last undo: one step back, never a walk through the history.
    last_undo_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A disabled account cannot log in; disabling it ended its sessions and revoked its API tokens.
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# Account names are unique whatever their case: "BOSS" beside "boss" would pass for the admin.
Index("uq_annotators_lower_name", func.lower(Annotator.name), unique=True)


class Campaign(Base):
    """An annotation campaign: one run's layer put before annotators (backend/app/campaign.py).

    Answers, marks, settlements, skips, reservations and sound judgements belong to a campaign, so the
    same unit may be judged again in another campaign of its run. A run's default campaign is the one
    its results page shows when none is named (at most one per run, kept so by backend/app/campaign.py)."""

    __tablename__ = "campaigns"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    run_id: Mapped[int] = _parent("runs")
    layer: Mapped[str] = mapped_column(String(200))           # a Layer.name of the run
    judges: Mapped[int] = mapped_column(Integer)              # annotators per unit
    blind: Mapped[bool] = mapped_column(default=True)         # False: annotators see its units' results
    # {question key: {"instructions": ..., "example": ...}}; blank parts fall back to the global ones.
    instructions: Mapped[dict] = mapped_column(JSON, default=dict)
    everyone: Mapped[bool] = mapped_column(default=True)      # False: only its CampaignMember annotators
    is_open: Mapped[bool] = mapped_column(default=False)
    is_default: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Share of each annotator's units that are gold (GoldUnit: answer known), 0 to 0.5.
    gold_rate: Mapped[float] = mapped_column(Float, default=0.0)
    # Two judges per unit, the full `judges` only when they disagree or one is doubtful on gold (annotation/quality.py).
    adaptive: Mapped[bool] = mapped_column(default=False)

    run: Mapped[Run] = relationship()


class CampaignMember(Base):
    """An annotator named to take part in a campaign that is not open to everyone."""

    __tablename__ = "campaign_members"
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id", ondelete="CASCADE"), primary_key=True,
                                              index=True)


class GoldUnit(Base):
    """A unit of a campaign whose answer is known: handed to each annotator at most once, at the campaign's
    gold rate, to score them; never counted in the campaign's verdicts (backend/app/gold.py)."""

    __tablename__ = "gold_units"
    __table_args__ = (UniqueConstraint("campaign_id", "unit_id"), CheckConstraint(f"answer IN {ANSWERS}", name="answer"),
                      CheckConstraint(f"source IN {GOLD_SOURCES}", name="source"))
    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = _parent("campaigns")
    unit_id: Mapped[int] = _parent("units")
    answer: Mapped[str] = mapped_column(String(10))
    category_id: Mapped[int | None] = mapped_column(ForeignKey("categories.id", ondelete="SET NULL"))
    marked: Mapped[list | None] = mapped_column(JSON)        # image ranks known to show the object, where known
    source: Mapped[str] = mapped_column(String(10))          # GOLD_SOURCES
    admin_id: Mapped[int | None] = mapped_column(ForeignKey("annotators.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class CampaignExclusion(Base):
    """An annotator an admin took out of a campaign: their answers stay stored but leave every verdict, and
    the queue hands them nothing there; deleting the row includes them again."""

    __tablename__ = "campaign_exclusions"
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id", ondelete="CASCADE"), primary_key=True,
                                              index=True)
    admin_id: Mapped[int | None] = mapped_column(ForeignKey("annotators.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Annotation(Base):
    """One annotator's answer for one unit in one campaign (paper 4.1's questions)."""

    __tablename__ = "annotations"
    __table_args__ = (UniqueConstraint("campaign_id", "unit_id", "annotator_id"),
                      CheckConstraint(f"answer IN {ANSWERS}", name="answer"))
    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = _parent("campaigns")
    unit_id: Mapped[int] = _parent("units")
    annotator_id: Mapped[int] = _parent("annotators")
    answer: Mapped[str] = mapped_column(String(10))
    category_id: Mapped[int | None] = mapped_column(ForeignKey("categories.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    seconds: Mapped[float | None] = mapped_column(Float)    # from the unit handed out to this answer (quality)

    marks: Mapped[list[ImageMark]] = relationship(back_populates="annotation", cascade="all, delete-orphan",
                                                  passive_deletes=True)


class ImageMark(Base):
    """An image the annotator marked as showing the object."""

    __tablename__ = "image_marks"
    __table_args__ = (UniqueConstraint("annotation_id", "unit_image_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    annotation_id: Mapped[int] = _parent("annotations")
    unit_image_id: Mapped[int] = _parent("unit_images")

    annotation: Mapped[Annotation] = relationship(back_populates="marks")


class UnitSkip(Base):
    """An annotator's "can't tell" for a unit of a campaign: not a judgement; the unit goes to someone else
    and is never offered to them again in that campaign (skip rates per annotator come from these rows)."""

    __tablename__ = "unit_skips"
    __table_args__ = (UniqueConstraint("campaign_id", "unit_id", "annotator_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = _parent("campaigns")
    unit_id: Mapped[int] = _parent("units")
    annotator_id: Mapped[int] = _parent("annotators")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class SoundJudgement(Base):
    __tablename__ = "sound_judgements"
    __table_args__ = (UniqueConstraint("campaign_id", "annotator_id", "unit_image_id"),
                      CheckConstraint(f"audible IN {AUDIBLE}", name="audible"))
    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = _parent("campaigns")
    annotator_id: Mapped[int] = _parent("annotators")
    unit_image_id: Mapped[int] = _parent("unit_images")
    audible: Mapped[str] = mapped_column(String(10))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class LoginSession(Base):
    """A logged-in browser: its cookie carries a random token, this row only the token's SHA-256.

    Logging out deletes the row, so a copy of the cookie is worthless afterwards; so does a password
    change (all of the account's rows) and removing the account (ON DELETE CASCADE)."""

    __tablename__ = "login_sessions"
    id: Mapped[int] = mapped_column(primary_key=True)
    annotator_id: Mapped[int] = _parent("annotators")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)     # hex SHA-256 of the cookie's token
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)   # for the idle timeout


TOKEN_SCOPES = ("read", "admin")


class ApiToken(Base):
    """A personal API token, sent as ``Authorization: Bearer TOKEN``; this row holds only its SHA-256.

    "read" tokens make GET requests only; "admin" tokens (admins' only) may also call the admin endpoints
    and change things. A token is refused after ``expires_at``. Revoking deletes the row; so do a new
    password for the account, disabling it, and removing it (ON DELETE CASCADE)."""

    __tablename__ = "api_tokens"
    __table_args__ = (CheckConstraint(f"scope IN {TOKEN_SCOPES}", name="scope"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    annotator_id: Mapped[int] = _parent("annotators")
    name: Mapped[str] = mapped_column(String(100))                      # what the owner calls it
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)     # hex SHA-256 of the token
    scope: Mapped[str] = mapped_column(String(10))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class UnitReservation(Base):
    """A unit of a campaign held for one annotator until ``expires_at`` (the annotation queue); each page
    view and the page's heartbeat push ``expires_at`` on, so a closed tab's unit goes back soon."""

    __tablename__ = "unit_reservations"
    __table_args__ = (UniqueConstraint("campaign_id", "unit_id", "annotator_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = _parent("campaigns")
    unit_id: Mapped[int] = _parent("units")
    annotator_id: Mapped[int] = _parent("annotators")
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    handed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))   # when the queue handed it out


class SoundReservation(Base):
    """A detector unit held for one annotator's sound judgements until ``expires_at`` (the sound task's queue)."""

    __tablename__ = "sound_reservations"
    __table_args__ = (UniqueConstraint("campaign_id", "unit_id", "annotator_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = _parent("campaigns")
    unit_id: Mapped[int] = _parent("units")
    annotator_id: Mapped[int] = _parent("annotators")
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


# --- Added by the web app (backend/app): an admin's settlement of a disputed unit, and server secrets.

class UnitSettlement(Base):
    """An admin's decision for a unit whose annotators tied; it replaces their votes in the verdict."""

    __tablename__ = "unit_settlements"
    __table_args__ = (UniqueConstraint("campaign_id", "unit_id"), CheckConstraint(f"answer IN {ANSWERS}", name="answer"))
    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = _parent("campaigns")
    unit_id: Mapped[int] = _parent("units")
    answer: Mapped[str] = mapped_column(String(10))
    category_id: Mapped[int | None] = mapped_column(ForeignKey("categories.id", ondelete="SET NULL"))
    admin_id: Mapped[int | None] = mapped_column(ForeignKey("annotators.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class ServerSecret(Base):
    """Secrets the server makes once and every worker shares (e.g. the session-cookie signing key)."""

    __tablename__ = "server_secrets"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(String(500))


class CampaignSetting(Base):
    """One of the admins' global choices (backend/app/campaign.py), by name: whether every unit's results are
    open to annotators, and the default instructions a campaign's own ones fall back to."""

    __tablename__ = "campaign_settings"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[dict | list | str | int | bool | None] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_by: Mapped[int | None] = mapped_column(ForeignKey("annotators.id", ondelete="SET NULL"))


# --- Added by the job queue (backend/jobs.py): pipeline stages launched from the admin pages.

JOB_STATUSES = ("queued", "running", "done", "failed", "cancelled")


class Job(Base):
    """One pipeline job; a worker claims it (queued -> running) and runs it in a child process."""

    __tablename__ = "jobs"
    __table_args__ = (CheckConstraint(f"status IN {JOB_STATUSES}", name="status"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))               # backend/jobs.py JOB_KINDS
    params: Mapped[dict] = mapped_column(JSON, default=dict)    # the form's fields and the output paths
    status: Mapped[str] = mapped_column(String(10), default="queued", index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)  # 0..1
    stage: Mapped[str] = mapped_column(String(50), default="")  # the step now running, e.g. "train"
    metrics: Mapped[list] = mapped_column(JSON, default=list)   # training evaluations so far (metrics.jsonl)
    log: Mapped[str] = mapped_column(Text, default="")
    pid: Mapped[int | None]                                     # the child process while running
    host: Mapped[str | None] = mapped_column(String(200))       # where that pid lives
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Worker(Base):
    """An ``ambient worker`` process: it registers at start and sends a heartbeat while it runs."""

    __tablename__ = "workers"
    id: Mapped[int] = mapped_column(primary_key=True)
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int]
    device: Mapped[str] = mapped_column(String(50))              # "cpu", "cuda" ...
    gpu_name: Mapped[str | None] = mapped_column(String(200))    # torch.cuda.get_device_name, when a GPU
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now, index=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))   # running now
    # The Ray cluster its ingest and units jobs run on (AMBIENT_RAY_ADDRESS), as last seen: model.engine's
    # cluster_summary plus "address", or {"address", "error"}; None without a cluster.
    cluster: Mapped[dict | None] = mapped_column(JSON)


# --- Added by listening (backend/app/listen_limits.py): what every server process shares about predictions.

class UploadUsage(Base):
    """One prediction an account asked for (kind "predict", amount 1) or one upload (kind "upload", amount its
    bytes): the per-account limits sum these over a moving window, whichever server process counts."""

    __tablename__ = "upload_usage"
    id: Mapped[int] = mapped_column(primary_key=True)
    annotator_id: Mapped[int] = _parent("annotators")
    kind: Mapped[str] = mapped_column(String(10))
    amount: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class PredictionSlot(Base):
    """One of the `predict_at_once` predictions running now, on any server process; the slot of a process that
    died is free again after ``expires_at``."""

    __tablename__ = "prediction_slots"
    number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    holder: Mapped[str] = mapped_column(String(64))          # a random token of the request holding it
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ListenPrediction(Base):
    """A prediction's sound texture, kept for its synthesise button (the click may reach another process)."""

    __tablename__ = "listen_predictions"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    annotator_id: Mapped[int] = _parent("annotators")
    run_id: Mapped[int] = _parent("runs")
    texture: Mapped[bytes] = mapped_column(LargeBinary)      # float64 (502,)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


SYNTHESIS_STATES = ("queued", "running", "done", "failed")


class SynthesisJob(Base):
    """A synthesis of a predicted sound: run by the process that accepted it, read by any. An unfinished job
    whose ``updated_at`` (its heartbeat) is older than a minute lost its process and counts as failed."""

    __tablename__ = "synthesis_jobs"
    __table_args__ = (CheckConstraint(f"state IN {SYNTHESIS_STATES}", name="state"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    annotator_id: Mapped[int] = _parent("annotators")
    state: Mapped[str] = mapped_column(String(10), index=True)
    done: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    wav: Mapped[bytes | None] = mapped_column(LargeBinary)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
