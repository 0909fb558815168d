"""The pipeline plan: the ``ambient`` CLI steps that take a world (or videos) to a published run.

One plan serves both ways of running it: ``ambient demo DIR`` (what ``make demo`` runs) and the admin
page's jobs (backend/jobs.py), so the demo is one experiment under one name. Steps are decided from
what is already on disk, so running a plan again resumes: an existing world and labels are kept,
training continues from its checkpoint. The database URL is not in any step's arguments: children
read it from AMBIENT_DATABASE_URL (a password in a URL must not reach command lines or logs).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from model.data import dataset as ds
from model.network.run import CHECKPOINT, FINAL_MODEL, KEPT_CHECKPOINTS
from model.settings import LABELS, PROBE, TRAIN_PRESETS

# The demo experiment (README "The two commands"): the same on the command line and from the admin page.
DEMO = {"world_preset": "demo", "objects": "auto", "videos": None, "seed": 0, "label_kind": "cluster",
        "k": LABELS.clusters, "preset": "demo", "epochs": None, "device": "auto",
        # The demo's test split holds ~160 videos: units pool all frames (the paper pooled 200,000 test frames).
        "split": "all",
        # Weights kept at 4 steps of training, dissected after it (`dissect --checkpoints`): the results page's
        # emergence chart.
        "keep_checkpoints": 4}


@dataclass(frozen=True)
class Step:
    name: str
    argv: list[str]               # arguments of the `ambient` CLI
    run_dir: Path | None = None   # a training step's run folder: its metrics.jsonl drives the progress
    epochs: int | None = None
    processes: int = 1            # > 1: one process per GPU under torchrun (DDP)
    optional: bool = False        # its failure is logged and the job goes on: what came before stands without it

    def command(self, python: str) -> list[str]:
        """The command line that runs this step with ``python``."""
        if self.processes > 1:
            return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={self.processes}",
                    "-m", "backend.cli", *self.argv]
        return [python, "-m", "backend.cli", *self.argv]


def demo_folders(root: str | Path) -> dict[str, str]:
    """Where a demo under ``root`` keeps its world, dataset and run."""
    root = Path(root)
    return {"world_dir": str(root / "world"), "videos_dir": str(root / "world" / "videos"),
            "data_dir": str(root / "data"), "run_dir": str(root / "run")}


def plan(kind: str, params: dict, ray_address: str | None = None) -> list[Step]:
    """The steps still to run for a ``kind`` job ("demo": all of them) with complete ``params``;
    with ``ray_address`` ingest and units spread their work over that Ray cluster."""
    steps: list[Step] = []
    on_ray = ["--ray", ray_address] if ray_address else []
    if kind == "probe":           # Table 2: linear probes of a run's top layers, into its folder
        source = ["--world", params["world_dir"], "--data", params["data_dir"]] if params["benchmark"] == "world" \
            else ["--dataset", params["dataset"], "--format", params["benchmark"]]
        return [Step("probe", ["probe", params["run_dir"], *source, "--device", params.get("device") or "auto"])]
    if kind in ("demo", "world") and not (Path(params["world_dir"]) / "world.json").exists():
        argv = ["world", params["world_dir"], "--preset", params["world_preset"], "--objects", params["objects"],
                "--seed", str(params["seed"])]
        steps.append(Step("world", argv + (["--videos", str(params["videos"])] if params.get("videos") else [])))
    if kind in ("demo", "ingest"):
        steps.append(Step("ingest", ["ingest", params["videos_dir"], "--out", params["data_dir"], *on_ray]))
    resuming = kind in ("demo", "train") and (Path(params["run_dir"]) / CHECKPOINT).exists()
    labels_exist = ds.labels_file(params.get("data_dir") or ".", params.get("label_kind") or "").exists()
    # A resumed run keeps the labels it started with; a train job makes labels only when given k.
    if kind == "labels" or (kind == "demo" and not labels_exist) or \
            (kind == "train" and params.get("k") and not resuming):
        steps.append(Step("labels", ["labels", params["data_dir"], "--kind", params["label_kind"],
                                     "--k", str(params.get("k") or LABELS.clusters)]))
    if kind in ("demo", "train"):
        argv = ["train", params["data_dir"], "--labels", params["label_kind"], "--out", params["run_dir"],
                "--preset", params["preset"]]
        if params.get("epochs"):
            argv += ["--epochs", str(params["epochs"])]
        if params.get("device") not in (None, "auto"):
            argv += ["--device", params["device"]]
        if params.get("keep_checkpoints"):
            argv += ["--keep-checkpoints", str(params["keep_checkpoints"])]
        epochs = params.get("epochs") or TRAIN_PRESETS[params["preset"]].epochs
        steps.append(Step("train", argv + (["--resume"] if resuming else []), Path(params["run_dir"]), epochs,
                          params.get("gpus") or 1))
    # A train job goes on to the run's units and, on a generated world's data, their automatic labels, where the
    # sound comes from and ablations (`dissecting`, `ablating`): what each category's detectors, and each unit
    # alone, do for the sound prediction (the unit pages), for a network trained here only (another network
    # analysed in a run folder has no sound labels).
    world_dir = world_of(params["data_dir"]) if kind == "train" else None
    dissecting = kind in ("demo", "dissect") or world_dir is not None
    ablating = dissecting and (kind in ("demo", "train") or (Path(params["run_dir"]) / FINAL_MODEL).exists())
    # Units, dissect and ablate each publish the run at their end: a chain publishes once, at the last of them.
    if kind in ("demo", "units", "train"):
        argv = ["units", params["run_dir"], "--pool", params["data_dir"], *(["--no-publish"] if dissecting else []),
                "--device", params.get("device") or "auto", *on_ray]
        steps.append(Step("units", argv + (["--split", params["split"]] if params.get("split") else [])))
    if dissecting:
        kept = params.get("keep_checkpoints") or (Path(params["run_dir"]) / KEPT_CHECKPOINTS).is_dir()
        steps.append(Step("dissect", ["dissect", params["run_dir"], "--truth", *(["--no-publish"] if ablating else []),
                                      *(["--checkpoints"] if kept else [])]))
    if ablating:
        # Where the sound comes from (the results page): a run that cannot be localised still gets its ablations.
        steps.append(Step("localize", ["localize", params["run_dir"], "--no-publish",
                                       "--device", params.get("device") or "auto"], optional=True))
        steps.append(Step("ablate", ["ablate", params["run_dir"], "--detectors", "--each-unit"]))
    # A visualize job: every unit of the layer and every sound cluster (ambient visualize), then published.
    if kind == "visualize":
        steps.append(Step("visualize", ["visualize", params["run_dir"], "--units", "all", "--clusters", "all",
                                        "--device", params.get("device") or "auto"]))
    # ... and probes its layers on the world's held-out frames (the Representation page), where there are
    # enough of them; a probe that cannot be scored on this data leaves the run as it is.
    if world_dir is not None and held_out_videos(params["data_dir"]) >= PROBE.world_min_test_videos:
        argv = ["probe", params["run_dir"], "--world", str(world_dir), "--data", params["data_dir"],
                "--device", params.get("device") or "auto"]
        steps.append(Step("probe", argv, optional=True))
    return steps


def world_of(data_dir: str | Path) -> Path | None:
    """The generated world whose videos the dataset was ingested from (its truth is what `dissect --truth`
    and `probe --world` read), else None."""
    from model.world.truth import world_of_data

    return world_of_data(data_dir)


def held_out_videos(data_dir: str | Path) -> int:
    """How many videos the dataset's test split holds (the world probe's frames)."""
    return len({record.video for record in ds.load_manifest(data_dir) if record.split == "test"})
