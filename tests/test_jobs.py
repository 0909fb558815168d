"""The job queue: checked requests, the steps a job runs, the worker (kill -9, cancel, orphans) and the admin API."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from fastapi.testclient import TestClient

from typer.testing import CliRunner

from app_helpers import REPO, add_user, database_url, login
from backend.cli import app
from backend.app.main import create_app
from backend.config import Settings
from backend.db.models import Job
from backend.db.session import upgrade_db, session_factory
from backend.jobs import (DECODING_SHARE, HOST, JobError, clean_log, create_job, job_params, job_steps,
                          recover_orphans, run_worker, step_fraction, tqdm_fraction)
from backend.pipeline import DEMO, Step, demo_folders, plan
from backend.config import JOBS, JobSettings
from model.network.run import FINAL_MODEL

FAST = JobSettings(poll_seconds=0.1, cancel_grace_seconds=2.0)


@pytest.fixture()
def url(tmp_path):
    url = database_url(tmp_path)
    upgrade_db(url)
    return url


def sessions_of(url):
    return session_factory(upgrade_db(url))


def test_ingest_paths_are_checked(tmp_path):
    with pytest.raises(JobError, match="does not exist"):
        job_params("ingest", {"videos_dir": str(tmp_path / "nowhere")})
    (tmp_path / "file.mp4").write_bytes(b"x")
    with pytest.raises(JobError, match="not a directory"):
        job_params("ingest", {"videos_dir": str(tmp_path / "file.mp4")})
    with pytest.raises(JobError, match="give a folder"):
        job_params("ingest", {})
    with pytest.raises(JobError, match="has no manifest.jsonl"):
        job_params("train", {"data_dir": str(tmp_path)})
    with pytest.raises(JobError, match="preset"):
        job_params("demo", {"preset": "huge"})
    assert job_params("ingest", {"videos_dir": str(tmp_path)})["videos_dir"] == str(tmp_path.resolve())


def test_demo_steps_resume_from_what_is_on_disk(tmp_path):
    params = job_params("demo", {"k": "4", "epochs": "3", "device": "cpu"})
    params, steps = job_steps(7, "demo", params, tmp_path)
    assert [s.name for s in steps] == ["world", "ingest", "labels", "train", "units", "dissect", "localize", "ablate"]
    assert params["run_dir"] == str(tmp_path / "7" / "run")
    train = steps[3]
    assert "--resume" not in train.argv and ["--epochs", "3"] == train.argv[-6:-4] and train.epochs == 3
    assert train.argv[-2:] == ["--keep-checkpoints", "4"] and steps[5].argv[-1] == "--checkpoints"
    assert steps[6].argv == ["localize", params["run_dir"], "--no-publish", "--device", "cpu"] and steps[6].optional
    assert steps[7].argv == ["ablate", params["run_dir"], "--detectors", "--each-unit"]
    assert steps[4].argv[-4:] == ["--device", "cpu", "--split", "all"]
    assert not any("sqlite" in arg for step in steps for arg in step.argv)    # the URL travels in the environment
    # A failed job queued again: the world and labels exist, training has a checkpoint.
    (tmp_path / "7" / "world").mkdir(parents=True)
    (tmp_path / "7" / "world" / "world.json").write_text("{}")
    (tmp_path / "7" / "data" / "labels").mkdir(parents=True)
    (tmp_path / "7" / "data" / "labels" / "cluster.npz").write_bytes(b"")
    (tmp_path / "7" / "run").mkdir()
    (tmp_path / "7" / "run" / "checkpoint.pt").write_bytes(b"")
    _, steps = job_steps(7, "demo", params, tmp_path)
    assert [s.name for s in steps] == ["ingest", "train", "units", "dissect", "localize", "ablate"]
    assert steps[1].argv[-1] == "--resume"


def test_a_train_job_goes_on_to_units_and_on_a_world_s_data_to_automatic_labels(tmp_path):
    """Issue 27: after training no run appeared until a second job extracted units, nothing dissected or probed."""
    import json

    from model.data import dataset as ds
    from model.settings import PROBE
    from model.world.truth import SUMMARY

    world, other = tmp_path / "world", tmp_path / "own-videos"
    (world / "videos").mkdir(parents=True)
    (world / SUMMARY).write_text("{}")
    other.mkdir()
    for name, videos in (("world-data", world / "videos"), ("own-data", other)):
        (tmp_path / name).mkdir()
        (tmp_path / name / ds.MANIFEST).write_text("")
        (tmp_path / name / ds.REPORT).write_text(json.dumps({"videos_dir": str(videos)}))
    for name, expected in (("world-data", ["train", "units", "dissect", "localize", "ablate"]),
                           ("own-data", ["train", "units"])):
        params = job_params("train", {"data_dir": str(tmp_path / name), "device": "cpu"})
        params, steps = job_steps(3, "train", params, tmp_path / "jobs")
        assert [s.name for s in steps] == expected, name
        assert steps[1].argv[:4] == ["units", params["run_dir"], "--pool", params["data_dir"]]
        assert steps[1].argv[-2:] == ["--split", "test"]
        assert _publishing(steps) == [expected[-1]], name          # once, at the chain's end
    # With enough held-out videos to score a probe, it probes the run on the world's truth too (optional).
    held_out = PROBE.world_min_test_videos
    manifest = [json.dumps({"frame_id": v, "video_id": f"v{v}", "video": f"v{v}.mp4", "frame_index": 0, "time": 0.0,
                            "image": f"v{v}.jpg", "clip": f"v{v}.mp3", "split": "test" if v < held_out else "train",
                            "silent": False}) for v in range(held_out + 8)]
    (tmp_path / "world-data" / ds.MANIFEST).write_text("\n".join(manifest))
    params = job_params("train", {"data_dir": str(tmp_path / "world-data"), "device": "cpu"})
    params, steps = job_steps(3, "train", params, tmp_path / "jobs")
    assert [s.name for s in steps] == ["train", "units", "dissect", "localize", "ablate", "probe"]
    assert steps[-1].optional
    assert steps[-1].argv == ["probe", params["run_dir"], "--world", str(world.resolve()), "--data",
                              params["data_dir"], "--device", "cpu"]
    (tmp_path / "world-data" / ds.MANIFEST).write_text("\n".join(manifest[1:]))     # one held-out video short
    assert [s.name for s in job_steps(3, "train", params, tmp_path / "jobs")[1]][-1] == "ablate"


def test_an_optional_step_that_fails_is_logged_and_the_job_is_done(url, tmp_path, monkeypatch):
    import backend.jobs as jobs

    with sessions_of(url)() as db:
        job_id = create_job(db, "world", {}).id
        assert jobs.claim_next_job(db).id == job_id
    steps = [Step("probe", ["no-such-command"], optional=True), Step("help", ["--help"])]
    monkeypatch.setattr(jobs, "job_steps", lambda *args: ({}, steps))
    assert jobs.run_job(sessions_of(url), job_id, url, tmp_path, FAST) == "done"
    with sessions_of(url)() as db:
        job = db.get(Job, job_id)
    assert job.status == "done" and "step probe failed (exit status 2); what the steps before it made stands" in job.log
    assert "$ ambient --help" in job.log                                    # the job went on after it


def test_the_admin_pages_demo_job_runs_the_plan_make_demo_runs(tmp_path):
    """`make demo` runs `ambient demo DIR` (scripts/demo.sh); a demo job queued with no fields runs the same steps."""
    _, steps = job_steps(7, "demo", job_params("demo", {"objects": "tuxpaint"}), tmp_path)
    printed = CliRunner().invoke(app, ["demo", str(tmp_path / "7"), "--objects", "tuxpaint", "--print"])
    assert printed.exit_code == 0, printed.output
    assert printed.output.splitlines() == [" ".join(["ambient", *step.argv]) for step in steps]
    assert [step.name for step in steps] == ["world", "ingest", "labels", "train", "units", "dissect", "localize",
                                             "ablate"]
    assert "--split all" in printed.output and "--preset demo" in printed.output
    assert '$AMBIENT demo "$DEMO" --objects "$OBJECTS"' in (REPO / "scripts" / "demo.sh").read_text()


def _publishing(steps) -> list[str]:
    """The steps that publish the run at their end (units, dissect, localize and ablate do unless told --no-publish)."""
    return [s.name for s in steps
            if s.name in ("units", "dissect", "localize", "ablate") and "--no-publish" not in s.argv]


def test_the_demo_plan_publishes_the_run_once_at_its_end(tmp_path):
    """`make demo` published the run three times (after units, dissect and ablate): the last step is enough."""
    assert _publishing(plan("demo", {**DEMO, **demo_folders(tmp_path / "demo")})) == ["ablate"]
    run_dir, data_dir = tmp_path / "run", tmp_path / "data"
    assert _publishing(plan("units", {"run_dir": str(run_dir), "data_dir": str(data_dir)})) == ["units"]
    # A dissect job goes on to ablate a network trained here (it has a final model), else publishes itself.
    assert _publishing(plan("dissect", {"run_dir": str(run_dir), "data_dir": str(data_dir)})) == ["dissect"]
    run_dir.mkdir()
    (run_dir / FINAL_MODEL).write_bytes(b"")
    assert _publishing(plan("dissect", {"run_dir": str(run_dir), "data_dir": str(data_dir)})) == ["ablate"]


def test_log_keeps_the_last_redraw_of_each_line_and_progress_reads_tqdm():
    output = "ingest:   0%|   | 0/4\ringest:  50%|##  | 2/4\nwrote it\n"
    assert clean_log(output) == "ingest:  50%|##  | 2/4\nwrote it\n"
    assert tqdm_fraction(output) == 0.5
    assert tqdm_fraction("no bar here") is None
    assert clean_log("x" * 50, limit=10) == "x" * 10


def test_a_training_step_progresses_with_its_steps_not_its_epochs(tmp_path):
    """Issue 27: a job's bar stayed at 0% for minutes while its frames decoded and its first epoch trained."""
    train = Step("train", ["train"], tmp_path / "run", epochs=30)
    assert step_fraction(train, "", []) == 0.0
    decoding = "reading frames: 100%|##| 9/9\rdecoding frames:  50%|#  | 5/10\r"
    assert step_fraction(train, decoding, []) == pytest.approx(DECODING_SHARE * 0.5)
    training = decoding + "decoding frames: 100%|##| 10/10\ntraining (cluster):  16%|#  | 160/1000 [00:30<02:00]"
    assert step_fraction(train, training, []) == pytest.approx(DECODING_SHARE + (1 - DECODING_SHARE) * 0.16)
    assert step_fraction(train, "", [{"epoch": 15}]) == 0.5          # a log without bars: the epochs still count


def _run_in_thread(url, tmp_path):
    # A daemon: a worker stuck in a test can never hold pytest's exit (a non-daemon one held CI's run to its limit).
    thread = threading.Thread(target=run_worker, args=(sessions_of(url), url, tmp_path / "jobs"),
                              kwargs={"once": True, "settings": FAST}, daemon=True)
    thread.start()
    return thread


def _wait_for_child(url, job_id, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sessions_of(url)() as db:
            job = db.get(Job, job_id)
            if job.status == "running" and job.stage == "world" and job.pid != os.getpid():
                return job.pid
        time.sleep(0.1)
    raise AssertionError("the job's child never started")


@pytest.fixture()
def long_job(url):
    """A world job of 240 videos (minutes of work, killed long before the end), cancelled whatever the test did."""
    from backend.jobs import cancel_job
    with sessions_of(url)() as db:
        job_id = create_job(db, "world", {"world_preset": "demo"}).id
    yield job_id
    with sessions_of(url)() as db:
        cancel_job(db, job_id)


def test_a_child_killed_by_signal_9_fails_its_job_and_keeps_the_log(url, tmp_path, long_job):
    thread = _run_in_thread(url, tmp_path)
    os.kill(_wait_for_child(url, long_job), signal.SIGKILL)
    thread.join(30)
    with sessions_of(url)() as db:
        job = db.get(Job, long_job)
    assert job.status == "failed" and job.finished_at is not None
    assert "$ ambient world" in job.log and "killed by signal 9" in job.log


def test_cancel_kills_the_running_child(url, tmp_path, long_job):
    from backend.jobs import cancel_job
    thread = _run_in_thread(url, tmp_path)
    pid = _wait_for_child(url, long_job)
    with sessions_of(url)() as db:
        assert cancel_job(db, long_job)
    thread.join(30)
    assert not thread.is_alive()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with sessions_of(url)() as db:
        job = db.get(Job, long_job)
    assert job.status == "cancelled" and "--- cancelled ---" in job.log


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped by init, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_silent_child_dies_with_the_process_that_started_it(tmp_path):
    """The parent-death signal itself (a chatty child also dies of the broken pipe once its worker is gone; a quiet
    one, e.g. between training epochs, would run on): a parent starts `sleep` as the worker starts a step, is
    killed, and the sleep goes with it."""
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time; from backend.jobs import DIE_WITH_PARENT; "
        "child = subprocess.Popen([*DIE_WITH_PARENT, 'sleep', '60'], stdout=subprocess.DEVNULL); "
        f"open({str(pid_file)!r}, 'w').write(str(child.pid)); time.sleep(60)")], cwd=REPO)
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(pid_file.read_text())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def test_running_jobs_whose_process_is_gone_fail_at_startup(url):
    gone = subprocess.Popen(["true"])
    gone.wait()
    with sessions_of(url)() as db:
        db.add_all([Job(kind="train", params={}, status="running", host=HOST, pid=gone.pid, log="epoch 1\n"),
                    Job(kind="train", params={}, status="running", host=HOST, pid=os.getpid(), log="")])
        db.commit()
    create_app(Settings(database_url=url))            # the server's startup recovers orphans
    with sessions_of(url)() as db:
        dead, alive = db.get(Job, 1), db.get(Job, 2)
        assert dead.status == "failed" and dead.log.startswith("epoch 1\n") and "died" in dead.log
        assert alive.status == "running"
        assert recover_orphans(db) == 0


def test_only_admins_reach_jobs_and_bad_paths_are_refused(url, tmp_path):
    add_user(url, "ann")
    add_user(url, "boss", is_admin=True)
    client = TestClient(create_app(Settings(database_url=url)))
    login(client, "ann")
    assert client.get("/api/jobs").status_code == 403
    assert client.get("/admin/jobs", headers={"accept": "text/html"}).status_code == 403

    client = TestClient(create_app(Settings(database_url=url, data_roots=f"{tmp_path}:/etc")))
    token = login(client, "boss")
    response = client.post("/api/jobs", json={"kind": "ingest", "videos_dir": str(tmp_path / "nope")},
                           headers={"x-csrf-token": token})
    assert response.status_code == 422 and "does not exist" in response.json()["detail"]
    outside = client.post("/api/jobs", json={"kind": "ingest", "videos_dir": "/usr/share"},
                          headers={"x-csrf-token": token})
    assert outside.status_code == 422 and "outside the data roots" in outside.json()["detail"]
    assert str(tmp_path) in outside.json()["detail"]
    page = client.post("/admin/jobs", data={"kind": "ingest", "videos_dir": "/etc/hostname", "csrf_token": token},
                       headers={"accept": "text/html"})
    assert page.status_code == 422 and "is not a directory" in page.text
    assert client.post("/api/jobs", json={"kind": "demo"}).status_code == 403          # no CSRF token

    job = client.post("/api/jobs", json={"kind": "demo", "k": 4}, headers={"x-csrf-token": token}).json()
    assert (job["status"], job["params"]["k"], job["params"]["preset"]) == ("queued", 4, "demo")
    assert client.get(f"/api/jobs/{job['id']}").json()["status"] == "queued"
    cancelled = client.post(f"/api/jobs/{job['id']}/cancel", headers={"x-csrf-token": token}).json()
    assert cancelled["status"] == "cancelled"
    assert client.post(f"/api/jobs/{job['id']}/cancel", headers={"x-csrf-token": token}).status_code == 409
    resumed = client.post(f"/api/jobs/{job['id']}/resume", headers={"x-csrf-token": token}).json()
    assert resumed["status"] == "queued" and "resuming" in resumed["log"]
    assert client.post(f"/api/jobs/{job['id']}/extract-units", headers={"x-csrf-token": token}).status_code == 409
    assert f'href="/admin/jobs/{job["id"]}"' in client.get("/admin/jobs", headers={"accept": "text/html"}).text


def test_queued_jobs_say_when_no_worker_is_alive_and_workers_are_listed(url, tmp_path):
    from datetime import timedelta

    from backend.db.models import Worker
    from backend.jobs import heartbeat, live_workers, register_worker, utcnow

    add_user(url, "boss", is_admin=True)
    client = TestClient(create_app(Settings(database_url=url)))
    token = login(client, "boss")
    job = client.post("/api/jobs", json={"kind": "world", "world_preset": "tiny"}, headers={"x-csrf-token": token}).json()
    assert job["waiting"] == "waiting: no worker is running; start one with `ambient worker`"
    assert "no worker is running" in client.get("/admin/jobs", headers={"accept": "text/html"}).text
    with sessions_of(url)() as db:
        worker_id = register_worker(db)
        assert [w.id for w in live_workers(db)] == [worker_id]
    job = client.get(f"/api/jobs/{job['id']}").json()
    assert job["waiting"] is None and job["device"] == "cpu"          # world generation runs on the CPU
    (listed,) = client.get("/api/jobs/workers").json()
    assert (listed["pid"], listed["device"]) == (os.getpid(), "cpu") and listed["host"] == HOST
    with sessions_of(url)() as db:     # silent for a minute: no longer live
        db.query(Worker).update({"last_seen_at": utcnow() - timedelta(minutes=1)})
        db.commit()
        assert live_workers(db) == []
        heartbeat(db, worker_id)
        db.commit()
        assert len(live_workers(db)) == 1


def test_a_killed_worker_s_job_is_failed_by_another_process_with_its_log(url, tmp_path, long_job):
    """SIGKILL the worker itself: its child dies with it (one outliving it would run on with nobody watching it),
    and once its heartbeat is older than the timeout the server (or any worker) fails the job and keeps its log."""
    from backend.jobs import fail_jobs_of_dead_workers

    job_id = long_job
    worker = subprocess.Popen([sys.executable, "-m", "backend.cli", "worker", "--db", url, "--jobs-dir",
                               str(tmp_path / "jobs")], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        child = _wait_for_child(url, job_id, timeout=60)
    finally:
        worker.kill()
        worker.wait()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child)
    quick = JobSettings(worker_timeout_seconds=1.0)
    with sessions_of(url)() as db:
        assert fail_jobs_of_dead_workers(db, JOBS) == 0          # not silent long enough yet
    time.sleep(1.5)
    with sessions_of(url)() as db:
        assert fail_jobs_of_dead_workers(db, quick) == 1
        job = db.get(Job, job_id)
        assert job.status == "failed" and "$ ambient world" in job.log and "stopped sending heartbeats" in job.log


def test_three_workers_racing_never_take_the_same_job(url):
    from backend.jobs import claim_next_job

    with sessions_of(url)() as db:
        for _ in range(30):
            db.add(Job(kind="world", params={}, status="queued", progress=0.0, stage="", metrics=[], log=""))
        db.commit()
    taken: list[list[int]] = [[], [], []]
    start = threading.Barrier(3)

    def claim(mine):
        start.wait()
        with sessions_of(url)() as db:
            while (job := claim_next_job(db)) is not None:
                mine.append(job.id)

    threads = [threading.Thread(target=claim, args=(mine,)) for mine in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    claimed = [job for mine in taken for job in mine]
    assert sorted(claimed) == list(range(1, 31))          # every job once, none twice


def test_a_train_job_on_small_data_shows_the_few_steps_warning_before_it_is_queued(url, tmp_path):
    import numpy as np

    from model.data import dataset
    from model.sound.labels import make_labels

    data = tmp_path / "data"
    data.mkdir()
    records = [dataset.FrameRecord(i, f"v{i // 10}", f"v{i // 10}.mp4", i % 10, float(i % 10), f"f{i}.jpg", f"c{i}.mp3",
                                   "test" if i >= 40 else "train", False) for i in range(50)]
    dataset.write_manifest(data, records, np.random.default_rng(0).random((50, 502)), np.zeros((50, 32)))
    make_labels(data, "cluster", k=2)
    add_user(url, "boss", is_admin=True)
    client = TestClient(create_app(Settings(database_url=url, data_roots=str(tmp_path))))
    token = login(client, "boss")
    fields = {"kind": "train", "data_dir": str(data), "label_kind": "cluster", "preset": "demo", "csrf_token": token}
    page = client.post("/admin/jobs", data=fields, headers={"accept": "text/html"})
    assert page.status_code == 200 and "training steps on this data" in page.text and "Queue it anyway" in page.text
    with sessions_of(url)() as db:
        assert db.query(Job).count() == 0                  # nothing queued until the admin confirms
    queued = client.post("/admin/jobs", data={**fields, "confirm": "1"}, follow_redirects=False)
    assert queued.status_code == 303
    with sessions_of(url)() as db:
        assert db.query(Job).count() == 1


def test_a_training_job_on_several_gpus_runs_under_torchrun(tmp_path):
    params = {**job_params("demo", {}), "gpus": 4, "k": None}     # existing labels: training, then units
    _, steps = job_steps(3, "train", {**params, "data_dir": str(tmp_path)}, tmp_path)
    train, units = steps
    assert units.processes == 1                                    # extracting units is one process
    assert train.command("python")[:5] == ["python", "-m", "torch.distributed.run", "--standalone",
                                           "--nproc_per_node=4"]
    assert train.command("python")[5:8] == ["-m", "backend.cli", "train"]


def test_the_job_forms_list_datasets_runs_and_video_folders_under_the_roots(tmp_path):
    import json

    from backend.jobs import data_folders

    root, outside = tmp_path / "root", tmp_path / "outside"
    older, newer, run, videos = root / "a" / "data", root / "b" / "data", root / "b" / "run", root / "w" / "videos"
    for folder in (older, newer, run, videos, outside / "data"):
        folder.mkdir(parents=True)
    for data in (older, newer, outside / "data"):
        (data / "manifest.jsonl").write_text("")
    (older / "inner").mkdir()
    (older / "inner" / "manifest.jsonl").write_text("")          # inside a dataset: not looked at
    (run / "run.json").write_text(json.dumps({}))
    (videos / "clip.MP4").write_bytes(b"")
    os.utime(older, (1, 1))
    (root / "link").symlink_to(outside)                           # links are not followed
    deep = root.joinpath(*"cdefg") / "data"
    deep.mkdir(parents=True)
    (deep / "manifest.jsonl").write_text("")                      # 6 folders down: past the depth
    found = data_folders([root])
    assert found.datasets == [str(newer), str(older)] and found.runs == [str(run)] and found.videos == [str(videos)]
    assert data_folders([root], limit=1).datasets == []           # the root alone


def test_a_dissect_job_ablates_only_a_network_trained_here(tmp_path):
    """Issue 28: `ambient ablate` needs the run's sound labels; a folder analysing another network has none."""
    from model.network.run import FINAL_MODEL

    run_dir = tmp_path / "analysis"
    run_dir.mkdir()
    _, steps = job_steps(4, "dissect", job_params("dissect", {"run_dir": str(run_dir)}), tmp_path / "jobs")
    assert [s.name for s in steps] == ["dissect"]
    (run_dir / FINAL_MODEL).write_bytes(b"")
    _, steps = job_steps(4, "dissect", job_params("dissect", {"run_dir": str(run_dir)}), tmp_path / "jobs")
    assert [s.name for s in steps] == ["dissect", "localize", "ablate"]
    assert steps[2].argv[-2:] == ["--detectors", "--each-unit"]


def test_a_probe_job_runs_ambient_probe_on_a_benchmark_folder_or_the_runs_world(tmp_path):
    import json

    run, bench = tmp_path / "run", tmp_path / "scenes"
    run.mkdir()
    bench.mkdir()
    (run / "run.json").write_text(json.dumps({"data_dir": str(tmp_path / "data")}))
    params = job_params("probe", {"run_dir": str(run), "benchmark": "imagefolder", "dataset": str(bench)}, [tmp_path])
    assert [step.argv for step in plan("probe", params)] == [
        ["probe", str(run), "--dataset", str(bench), "--format", "imagefolder", "--device", "auto"]]
    with pytest.raises(JobError) as refused:                 # a benchmark format needs its folder
        job_params("probe", {"run_dir": str(run), "benchmark": "voc2007"}, [tmp_path])
    assert refused.value.field == "dataset"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "manifest.jsonl").write_text("")
    with pytest.raises(JobError) as refused:                 # the run's data came from no generated world
        job_params("probe", {"run_dir": str(run), "benchmark": "world"}, [tmp_path])
    assert refused.value.field == "benchmark" and "benchmark folder" in refused.value.reason
    world_params = {"run_dir": str(run), "benchmark": "world", "data_dir": str(tmp_path / "data"),
                    "world_dir": str(tmp_path / "world"), "device": "cpu"}
    assert [step.argv for step in plan("probe", world_params)] == [
        ["probe", str(run), "--world", str(tmp_path / "world"), "--data", str(tmp_path / "data"), "--device", "cpu"]]


def test_folders_under_a_root_inside_another_root_are_listed_once(tmp_path):
    from backend.jobs import data_folders

    data = tmp_path / "jobs" / "1" / "data"
    data.mkdir(parents=True)
    (data / "manifest.jsonl").write_text("")
    assert data_folders([tmp_path, tmp_path / "jobs"]).datasets == [str(data)]
    assert data_folders([tmp_path / "jobs", tmp_path]).datasets == [str(data)]
