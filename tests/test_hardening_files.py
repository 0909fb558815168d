"""Files that jobs write and read stay where they belong (issue 25, item 1): the atomic writers never write
through a link, and a job's folders may not hold links leading outside AMBIENT_DATA_ROOTS."""
from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app_helpers import add_user, database_url, login
from backend.app import create_app
from backend.config import Settings
from backend.jobs import JobError, job_params
from model.data import dataset as ds
from model.sound import labels
from model.network import run
from model.network import train
from model.data.dataset import FrameRecord

VICTIM = b"someone else's file\n"


@pytest.fixture()
def victim(tmp_path):
    """A file outside the folders the writers write in, which a planted link points at."""
    path = tmp_path / "elsewhere" / "victim"
    path.parent.mkdir()
    path.write_bytes(VICTIM)
    return path


def record() -> FrameRecord:
    return FrameRecord(frame_id=0, video_id="v", video="v.mp4", frame_index=0, time=1.0, image="f.jpg", clip="c.mp3",
                       split="test", silent=False)


def run_info() -> run.RunInfo:
    return run.RunInfo(label_kind="cluster", num_outputs=3, multilabel=False, frame_size=256, crop_size=227,
                       fc_width=16, mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2))


# Each writer, and the names it wrote its temporary file under before (a link planted at one was followed).
WRITERS = {
    "write_json_atomic": (lambda folder: ds.write_json_atomic(folder / "x.json", {"a": 1}), ["x.json.tmp"], "x.json"),
    "save_npz_atomic": (lambda folder: run.save_npz_atomic(folder / "units_conv5.npz", a=np.zeros(3)),
                        ["units_conv5.npz.tmp.npz"], "units_conv5.npz"),
    "save_atomic": (lambda folder: run.save_atomic({"step": 1}, folder / "checkpoint.pt"), ["checkpoint.pt.tmp"],
                    "checkpoint.pt"),
    "write_run_json": (lambda folder: run.write_run_json(folder, run_info(), {}), ["run.json.tmp"], "run.json"),
    "write_probe": (lambda folder: run.write_probe(folder, {"dataset": "d"}), ["probe_d.json.tmp"], "probe_d.json"),
    "write_manifest": (lambda folder: ds.write_manifest(folder, [record()], np.zeros((1, 502)), np.zeros((1, 32))),
                       ["manifest.jsonl.tmp"], ds.TEXTURES),     # textures.npy was written in place
    "labels": (lambda folder: labels._save(folder, "cluster", {"assignments": np.zeros(3)}),
               ["labels/cluster.tmp.npz"], "labels/cluster.npz"),
    "metrics": (lambda folder: train._trim_metrics(folder / "metrics.jsonl", 1), ["metrics.jsonl.tmp"],
                "metrics.jsonl"),
}


def prepare(folder):
    (folder / "labels").mkdir(parents=True)
    (folder / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n')    # one evaluation to trim


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_atomic_writers_do_not_write_through_a_link_at_their_old_temporary_name(tmp_path, victim, writer):
    write, old_names, target = WRITERS[writer]
    folder = tmp_path / "run"
    prepare(folder)
    for name in old_names:
        (folder / name).symlink_to(victim)
    write(folder)
    assert victim.read_bytes() == VICTIM
    assert (folder / target).is_file() and not (folder / target).is_symlink()
    assert not list(folder.rglob(".*.tmp"))                                # no temporary file left behind


@pytest.mark.parametrize("writer", sorted(set(WRITERS) - {"metrics"}))     # trimming reads its target first
def test_atomic_writers_replace_a_link_at_their_target_instead_of_following_it(tmp_path, victim, writer):
    write, _, target = WRITERS[writer]
    folder = tmp_path / "run"
    prepare(folder)
    (folder / target).unlink(missing_ok=True)
    (folder / target).symlink_to(victim)
    write(folder)
    assert victim.read_bytes() == VICTIM and not (folder / target).is_symlink()


def test_a_temporary_file_is_created_exclusively_even_if_its_name_is_guessed(tmp_path, victim, monkeypatch):
    monkeypatch.setattr(ds.secrets, "token_hex", lambda _n: "guessed")
    (tmp_path / ".x.json.guessed.tmp").symlink_to(victim)
    with pytest.raises(OSError):
        ds.write_json_atomic(tmp_path / "x.json", {"a": 1})
    assert victim.read_bytes() == VICTIM and not (tmp_path / "x.json").exists()


# --- Jobs: their folders may not hold links out of the data roots.

@pytest.fixture()
def roots(tmp_path):
    root = tmp_path / "root"
    (root / "videos").mkdir(parents=True)
    (root / "videos" / "ok.mp4").write_bytes(b"x")
    return [root.resolve()]


def test_a_job_folder_with_a_link_leading_outside_the_roots_is_refused(roots, victim):
    videos = roots[0] / "videos"
    job_params("ingest", {"videos_dir": str(videos)}, roots)              # no links: fine
    (videos / "sub").mkdir()
    (videos / "sub" / "holiday.mp4").symlink_to(victim)
    with pytest.raises(JobError, match=r"videos_dir: .*holiday.mp4 is a link to .*victim, outside the data roots"):
        job_params("ingest", {"videos_dir": str(videos)}, roots)


def test_links_that_stay_inside_the_roots_are_fine_and_linked_folders_are_looked_through(roots, victim, tmp_path):
    videos = roots[0] / "videos"
    (videos / "again.mp4").symlink_to(videos / "ok.mp4")
    (roots[0] / "more").mkdir()
    (videos / "more").symlink_to(roots[0] / "more", target_is_directory=True)
    (roots[0] / "more" / "loop").symlink_to(videos, target_is_directory=True)      # a loop of links ends
    assert job_params("ingest", {"videos_dir": str(videos)}, roots)["videos_dir"] == str(videos)
    (roots[0] / "more" / "secret.mp4").symlink_to(victim)                          # reached through "more"
    with pytest.raises(JobError, match="secret.mp4 is a link to"):
        job_params("ingest", {"videos_dir": str(videos)}, roots)


def test_a_units_job_on_a_run_folder_holding_a_planted_link_is_refused(tmp_path, roots, victim):
    url = database_url(tmp_path)
    add_user(url, "boss", is_admin=True)
    run_dir, data_dir = roots[0] / "run", roots[0] / "data"
    run_dir.mkdir()
    data_dir.mkdir()
    (data_dir / ds.MANIFEST).write_text(json.dumps(record().__dict__) + "\n")
    (run_dir / "units_conv5.npz.tmp.npz").symlink_to(victim)
    client = TestClient(create_app(Settings(database_url=url, data_roots=str(roots[0]))))
    token = login(client, "boss")
    response = client.post("/api/jobs", json={"kind": "units", "run_dir": str(run_dir), "data_dir": str(data_dir)},
                           headers={"x-csrf-token": token})
    assert response.status_code == 422
    assert "run_dir:" in response.json()["detail"] and "outside the data roots" in response.json()["detail"]


def test_shards_are_not_written_through_links_at_their_old_temporary_names(tmp_path, victim):
    from model.data.shards import INDEX, PLAN, write_shards
    from test_train import make_dataset

    data = make_dataset(tmp_path / "data", videos=4, frames=2)
    folder = data / "shards"
    folder.mkdir()
    planted = ["train-000000.tar.tmp", "test-000000.tar.tmp", INDEX + ".tmp.npz", PLAN + ".tmp"]
    for name in planted:
        (folder / name).symlink_to(victim)
    index = write_shards(data, 4, progress=False)
    assert victim.read_bytes() == VICTIM
    assert all((folder / name).is_file() and not (folder / name).is_symlink() for name in [*index.names, INDEX])
