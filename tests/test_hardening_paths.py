"""Paths named inside a run's or a dataset's files stay inside AMBIENT_DATA_ROOTS (issue 34, item 3), and a
hard link inside the roots is never read as if it were the file's only name (item 10).

Runs are built by hand here (a two-frame dataset and a units file with one unit), so each test takes
milliseconds: what publishing checks is the paths the files name, not how they were computed."""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select
from typer.testing import CliRunner

from app_helpers import add_user, database_url, login, seed_run
from backend.app import create_app
from backend.cli import app as cli
from backend.config import JobSettings, Settings
from backend.db.models import Dataset, Frame, Job, Run, UnitImage
from backend.db.session import session_factory, upgrade_db
from backend.jobs import JobError, create_job, job_params
from backend.pipeline import Step
from backend.publish import PublishError, publish_run
from model.data import dataset as ds
from model.network import run as rd
from model.data.pool import pool_digest

SECRET = b"someone else's file\n"


def jpeg(shade: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (shade, shade, shade)).save(out, "JPEG")
    return out.getvalue()


def make_dataset(folder: Path, videos_dir: str | None = None) -> Path:
    """A dataset of two frames (images and clips on disk) whose ingest report names ``videos_dir``."""
    records = []
    for row in range(2):
        (folder / "videos" / f"v{row}").mkdir(parents=True)
        image, clip = f"videos/v{row}/frame_00.jpg", f"videos/v{row}/clip_00.mp3"
        (folder / image).write_bytes(jpeg(40 * row))
        (folder / clip).write_bytes(b"ID3")
        records.append(ds.FrameRecord(row, f"v{row}", f"v{row}.mp4", 0, 1.0, image, clip, "test", False))
    ds.write_manifest(folder, records, np.zeros((2, 502)), np.zeros((2, 32)))
    ds.write_json_atomic(folder / ds.REPORT, {"videos_dir": videos_dir, "ingested": [], "skipped": []})
    return folder


def make_run(folder: Path, data_dir: Path, **meta) -> Path:
    """A run folder as `ambient units` leaves it, reduced to one unit of layer conv5 whose two top images
    are ``data_dir``'s frames; ``meta`` overrides its units file's meta (model_spec, weights, ...)."""
    folder.mkdir(parents=True)
    records = ds.load_manifest(data_dir)
    meta = {"data_dir": str(data_dir), "layer": "conv5", "kind": "caffenet-bn", "labels_kind": None,
            "frame_size": 8, "input_size": 8, "rf_size": 3.0, "stride": 1.0, "offset": 0.0, "rf_radius": 1.0,
            "activation_fraction": 0.5, "model_spec": None, "weights": None, "pool": "dataset", "split": "all",
            "pool_size": len(records), "pool_digest": pool_digest(records), **meta}
    rd.save_npz_atomic(rd.units_file(folder, "conv5"), scores=np.array([[2.0, 1.0]], np.float32),
                       frame_ids=np.array([[0, 1]]), meta=json.dumps(meta), **rd.pack_jpegs([[jpeg(0), jpeg(40)]]))
    return folder


@dataclass
class Place:
    roots: Path          # the one data root
    outside: Path        # a folder beside it, outside every root
    url: str

    def published_runs(self) -> int:
        with session_factory(upgrade_db(self.url))() as db:
            return db.scalar(select(func.count()).select_from(Run))


@pytest.fixture()
def place(tmp_path, monkeypatch):
    roots, outside = tmp_path / "roots", tmp_path / "outside"
    roots.mkdir()
    outside.mkdir()
    monkeypatch.setenv("AMBIENT_DATA_ROOTS", str(roots))
    return Place(roots.resolve(), outside.resolve(), database_url(tmp_path))


def test_a_run_whose_paths_all_lie_inside_the_roots_is_published(place):
    run_dir = make_run(place.roots / "run", make_dataset(place.roots / "data"))
    summary = publish_run(run_dir, upgrade_db(place.url))          # roots from AMBIENT_DATA_ROOTS
    assert summary.layers == {"conv5": "published"} and place.published_runs() == 1


def _outside_pool(place):
    """The units file names a dataset outside the roots: publishing would show its frames to annotators."""
    pool = make_dataset(place.outside / "D2")
    return make_run(place.roots / "run", pool), "units_conv5.npz", "data_dir", pool


def _outside_training_set(place):
    run_dir = make_run(place.roots / "run", make_dataset(place.roots / "data"))
    rd.write_json_atomic(run_dir / rd.RUN_JSON, {"data_dir": str(place.outside / "D2")})
    return run_dir, rd.RUN_JSON, "data_dir", place.outside / "D2"


def _outside_network_file(place, kind):
    network = place.outside / "net.pt2"
    network.write_bytes(b"x")
    run_dir = make_run(place.roots / "run", make_dataset(place.roots / "data"), kind=kind,
                       model_spec=f"{kind}:{network}")
    return run_dir, "units_conv5.npz", "model_spec", network


def _outside_weights(place):
    weights = place.outside / "alexnet.pt"
    weights.write_bytes(b"x")
    run_dir = make_run(place.roots / "run", make_dataset(place.roots / "data"), kind="torchvision:alexnet",
                       model_spec="torchvision:alexnet", weights=str(weights))
    return run_dir, "units_conv5.npz", "weights", weights


def _outside_videos(place):
    """The pool's ingest report names a videos folder outside (dissect --truth reads the world there)."""
    run_dir = make_run(place.roots / "run", make_dataset(place.roots / "data", str(place.outside / "world" / "videos")))
    return run_dir, ds.REPORT, "videos_dir", place.outside / "world" / "videos"


def _dotdot_escape(place):
    """A data_dir that starts inside the roots and leaves them through '..': paths are judged resolved."""
    make_dataset(place.outside / "D2")
    (place.roots / "data").mkdir()
    pool = place.roots / "data" / ".." / ".." / "outside" / "D2"
    return make_run(place.roots / "run", pool), "units_conv5.npz", "data_dir", pool


OUTSIDE = {"pool": _outside_pool, "training set": _outside_training_set,
           "export file": lambda place: _outside_network_file(place, "export"),
           "torchscript file": lambda place: _outside_network_file(place, "torchscript"),
           "weights": _outside_weights, "videos folder": _outside_videos, "dotdot escape": _dotdot_escape}


@pytest.mark.parametrize("case", sorted(OUTSIDE))
def test_a_run_whose_files_name_a_path_outside_the_roots_is_refused_naming_the_file_and_the_path(place, case):
    run_dir, file, key, path = OUTSIDE[case](place)
    with pytest.raises(PublishError) as refused:
        publish_run(run_dir, upgrade_db(place.url))
    message = str(refused.value)
    assert f"{file}: its {key} {path} lies outside the data roots ({place.roots})" in message
    assert "AMBIENT_DATA_ROOTS" in message
    assert place.published_runs() == 0
    # ... and so does every command that publishes, before any work: `ambient publish`, `ambient dissect`.
    for argv in (["publish", str(run_dir)], ["dissect", str(run_dir), "--truth"]):
        result = CliRunner().invoke(cli, [*argv, "--db", place.url])
        assert result.exit_code == 1 and f"its {key} {path} lies outside the data roots" in result.output, argv
    assert place.published_runs() == 0


def test_roots_given_to_publish_replace_the_environments(place):
    run_dir, *_ = _outside_pool(place)
    publish_run(run_dir, upgrade_db(place.url), roots=[place.roots, place.outside])
    with session_factory(upgrade_db(place.url))() as db:
        assert db.scalar(select(Dataset.data_dir)) == str(place.outside / "D2")


def test_a_run_folder_outside_the_roots_or_holding_a_link_out_of_them_is_refused(place):
    run_dir = make_run(place.outside / "run", make_dataset(place.roots / "data"))
    with pytest.raises(PublishError, match=f"the run folder {run_dir} lies outside the data roots"):
        publish_run(run_dir, upgrade_db(place.url))
    (place.outside / "labels.json").write_bytes(SECRET)
    for link in (os.symlink, os.link):
        run_dir = make_run(place.roots / f"run-{link.__name__}", make_dataset(place.roots / f"data-{link.__name__}"))
        link(place.outside / "labels.json", run_dir / rd.DISSECTION)
        with pytest.raises(PublishError, match="dissection.json is a (link to .*outside the data roots|hard link)"):
            publish_run(run_dir, upgrade_db(place.url))
    assert place.published_runs() == 0


def test_a_manifest_path_leaving_its_dataset_is_refused(place):
    data_dir = make_dataset(place.roots / "data")
    run_dir = make_run(place.roots / "run", data_dir)
    (place.outside / "x.jpg").write_bytes(jpeg(0))
    lines = (data_dir / ds.MANIFEST).read_text().splitlines()
    lines[1] = json.dumps({**json.loads(lines[1]), "image": "../../outside/x.jpg"})
    (data_dir / ds.MANIFEST).write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"frame 2's image '../../outside/x.jpg' .* leaves the dataset folder"):
        ds.load_manifest(data_dir)
    with pytest.raises(PublishError, match="leaves the dataset folder"):
        publish_run(run_dir, upgrade_db(place.url))


def test_ambient_units_refuses_a_network_file_outside_the_roots_before_any_work(place):
    network = place.outside / "trunk.pt"
    network.write_bytes(b"not even a network")
    run_dir, data_dir = place.roots / "analysis", make_dataset(place.roots / "data")
    result = CliRunner().invoke(cli, ["units", str(run_dir), "--pool", str(data_dir), "--model",
                                      f"torchscript:{network}", "--db", place.url])
    assert result.exit_code == 1 and f"the network file {network} lies outside the data roots" in result.output
    assert not run_dir.exists()


# --- Jobs: refused when they are requested.

def test_a_dissect_or_units_job_on_a_run_naming_a_path_outside_is_refused(place):
    run_dir, _, key, path = _outside_pool(place)
    for kind in ("dissect", "units"):
        with pytest.raises(JobError, match=f"its {key} {path} lies outside the data roots") as refused:
            job_params(kind, {"run_dir": str(run_dir)}, [place.roots])
        assert refused.value.field == "run_dir"
    # Through the API, as an admin would ask: a 422 naming the field and the path, nothing queued.
    add_user(place.url, "boss", is_admin=True)
    client = TestClient(create_app(Settings(database_url=place.url, data_roots=str(place.roots))))
    token = login(client, "boss")
    response = client.post("/api/jobs", json={"kind": "dissect", "run_dir": str(run_dir)},
                           headers={"x-csrf-token": token})
    assert response.status_code == 422
    assert "run_dir: " in response.json()["detail"] and str(path) in response.json()["detail"]
    with session_factory(upgrade_db(place.url))() as db:
        assert db.scalar(select(func.count()).select_from(Job)) == 0


def test_a_job_on_a_dataset_whose_report_names_videos_outside_is_refused(place):
    data_dir = make_dataset(place.roots / "data", str(place.outside / "world" / "videos"))
    for kind in ("labels", "train"):
        with pytest.raises(JobError, match=f"its videos_dir {place.outside}/world/videos lies outside") as refused:
            job_params(kind, {"data_dir": str(data_dir)}, [place.roots])
        assert refused.value.field == "data_dir"
    ds.write_json_atomic(data_dir / ds.REPORT, {"videos_dir": str(place.roots / "videos")})
    assert job_params("labels", {"data_dir": str(data_dir)}, [place.roots])["data_dir"] == str(data_dir)


def test_a_hard_link_in_a_job_folder_is_refused_like_a_link_leading_out(place):
    videos = place.roots / "videos"
    videos.mkdir()
    (videos / "ok.mp4").write_bytes(b"x")
    assert job_params("ingest", {"videos_dir": str(videos)}, [place.roots])
    (place.outside / "secret.mp4").write_bytes(SECRET)
    os.link(place.outside / "secret.mp4", videos / "holiday.mp4")
    with pytest.raises(JobError, match=r"videos_dir: .*holiday.mp4 is a hard link with 2 names, whose other names "
                                       r"may lie outside the data roots"):
        job_params("ingest", {"videos_dir": str(videos)}, [place.roots])
    # A link inside the roots to a hard-linked file is refused too: it reads the same file.
    (videos / "holiday.mp4").unlink()
    (place.roots / "hard.mp4").hardlink_to(place.outside / "secret.mp4")
    (videos / "holiday.mp4").symlink_to(place.roots / "hard.mp4")
    with pytest.raises(JobError, match="holiday.mp4 is a link to .*hard.mp4, a hard link with 2 names"):
        job_params("ingest", {"videos_dir": str(videos)}, [place.roots])


class _PrintRoots(Step):
    """A step that prints the data roots its process was given, in place of an `ambient` command."""

    def command(self, python: str) -> list[str]:
        return [python, "-c", "import os; print('roots=' + os.environ['AMBIENT_DATA_ROOTS'])"]


def test_a_jobs_steps_run_under_the_workers_roots_with_its_jobs_folder(place, tmp_path, monkeypatch):
    """Publishing at the end of a job's step checks the run against the roots the worker was given, its
    jobs folder always among them (`ambient worker --jobs-dir` may name one AMBIENT_DATA_ROOTS leaves out)."""
    import backend.jobs as jobs

    with session_factory(upgrade_db(place.url))() as db:
        job_id = create_job(db, "world", {}).id
        assert jobs.claim_next_job(db).id == job_id
    monkeypatch.setattr(jobs, "job_steps", lambda *args: ({}, [_PrintRoots("print", [])]))
    jobs_dir = tmp_path / "jobs"
    assert jobs.run_job(session_factory(upgrade_db(place.url)), job_id, place.url, jobs_dir,
                        JobSettings(poll_seconds=0.05)) == "done"
    with session_factory(upgrade_db(place.url))() as db:
        assert f"roots={place.roots}:{jobs_dir.resolve()}\n" in db.get(Job, job_id).log


def test_the_demo_command_publishes_under_its_own_folder(place, monkeypatch):
    """`ambient demo DIR` (make demo) adds DIR to the roots of its steps, wherever DIR is."""
    import subprocess

    seen = []
    monkeypatch.setattr(subprocess, "run", lambda argv, env: seen.append(env["AMBIENT_DATA_ROOTS"]) or
                        subprocess.CompletedProcess(argv, 0))
    monkeypatch.setattr("backend.commands.demo._open_campaign", lambda url, run_dir: None)   # no run was made
    result = CliRunner().invoke(cli, ["demo", str(place.outside / "demo"), "--db", place.url])
    assert result.exit_code == 0, result.output
    assert seen and set(seen) == {f"{place.roots}:{place.outside / 'demo'}"}


# --- The app: a hard link inside a dataset is not served (its other name may be any file).

def test_a_hard_link_to_a_file_outside_is_not_served(tmp_path):
    url = seed_run(tmp_path)
    add_user(url, "ann")
    secret = tmp_path / "outside" / "secret.wav"
    secret.parent.mkdir()
    secret.write_bytes(SECRET)
    with session_factory(upgrade_db(url))() as db:
        frame_id, data_dir, clip = db.execute(select(Frame.id, Dataset.data_dir, Frame.clip_path).join(Dataset)
                                              .order_by(Frame.id)).first()
        image_id = db.scalar(select(UnitImage.id).where(UnitImage.frame_id == frame_id))
        image = db.scalar(select(Frame.image_path).where(Frame.id == frame_id))
    frame_image = Path(data_dir) / image
    frame_image.parent.mkdir()
    frame_image.write_bytes(jpeg(0))
    client = TestClient(create_app(Settings(database_url=url)))
    login(client, "ann")
    for route in (f"/frames/{frame_id}/clip", f"/clips/{image_id}", f"/frames/{frame_id}/image"):
        assert client.get(route).status_code == 200, route                      # the dataset's own files
    (Path(data_dir) / clip).unlink()
    os.link(secret, Path(data_dir) / clip)
    frame_image.unlink()
    os.link(secret, frame_image)
    for route in (f"/frames/{frame_id}/clip", f"/clips/{image_id}", f"/frames/{frame_id}/image",
                  f"/frames/{frame_id}/cochleagram.png"):
        response = client.get(route)
        assert response.status_code == 404, route
        assert SECRET not in response.content and str(tmp_path) not in response.text, route


def test_the_app_does_not_open_a_fifo_or_a_folder_in_a_dataset(tmp_path):
    from backend.app.media_files import dataset_file

    os.mkfifo(tmp_path / "fifo")                         # opening it for reading would wait for a writer
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_bytes(b"x")
    assert dataset_file(tmp_path, "fifo") is None and dataset_file(tmp_path, "folder") is None
    assert dataset_file(tmp_path, "file") == (tmp_path / "file").resolve()
    assert dataset_file(tmp_path, "../file") is None and dataset_file(tmp_path, "/etc/passwd") is None
