"""`ambient ingest --ray` and `ambient units --ray` on a local two-node Ray cluster (loopback only):
the same outputs as the single-process path, bit for bit, also when a worker process is killed."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")   # Ray on 127.0.0.1 only

import numpy as np
import pytest
from typer.testing import CliRunner

from backend.cli import app
from model.data import dataset
from model.data.ingest import ingest
from model.network.run import units_file
from model.units.top_images import extract_units
from test_ingest import make_video
from test_units import SETTINGS, make_pool

pytestmark = pytest.mark.slow
GOOD = [f"v{i}.mp4" for i in range(6)]


@pytest.fixture(scope="module")
def cluster():
    """A head node and a worker node of one CPU each, on loopback; shut down after the module."""
    from ray.cluster_utils import Cluster

    local = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    local.add_node(num_cpus=1)
    local.wait_for_nodes()
    yield local.address
    local.shutdown()


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    for i, name in enumerate(GOOD):
        make_video(root / name, 5.0 + 0.5 * (i % 3), seed=10 + i)
    make_video(root / "mute.mp4", 5.0, audio="none")
    (root / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    return root


@pytest.fixture(scope="module")
def single(videos, tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    ingest(videos, out, workers=1, progress=False)
    return out


def _worker_pids(title: str) -> list[int]:
    """Ray worker processes now running a task of ``title`` (Ray names them ray::<function>)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(f"ray::{title}".encode()):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _kill_first_worker(title: str, stop: threading.Event, killed: list[int]) -> None:
    """SIGKILL the first worker seen running ``title``: its task must be retried, not lost or doubled."""
    while not stop.is_set():
        pids = _worker_pids(title)
        if pids:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])
            return
        time.sleep(0.02)


def _run_killing(title: str, argv: list[str]):
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_first_worker, args=(title, stop, killed))
    killer.start()
    try:
        result = CliRunner().invoke(app, argv)
    finally:
        stop.set()
        killer.join()
    return result, killed


def assert_same_dataset(out: Path, reference: Path) -> None:
    records = dataset.load_manifest(out)
    assert records == dataset.load_manifest(reference)
    assert sorted(r.video for r in records) == sorted(v for v in GOOD for _ in range(10))   # each video once
    for mine, theirs in zip(dataset.load_features(out), dataset.load_features(reference)):
        assert mine.tobytes() == theirs.tobytes()                                          # bit for bit
    for record in records:
        assert (out / record.image).read_bytes() == (reference / record.image).read_bytes()
    report, expected = dataset.read_report(out), dataset.read_report(reference)
    assert report["ingested"] == expected["ingested"] == GOOD
    assert sorted(s["path"] for s in report["skipped"]) == ["corrupt.mp4", "mute.mp4"]


def test_ingest_on_ray_equals_single_process(cluster, videos, single, tmp_path):
    out = tmp_path / "data"
    result = CliRunner().invoke(app, ["ingest", str(videos), "--out", str(out), "--ray", cluster, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "6 videos ingested (60 frames), 2 skipped" in result.output
    assert_same_dataset(out, single)


def test_ingest_survives_a_killed_worker(cluster, videos, single, tmp_path):
    out = tmp_path / "data"
    result, killed = _run_killing("_ingest_one", ["ingest", str(videos), "--out", str(out), "--ray", cluster,
                                                  "--no-progress"])
    assert killed, "no Ray worker was seen running a video"
    assert result.exit_code == 0, result.output
    assert_same_dataset(out, single)


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """A units pool of 96 frames (12 batches of 8: several parts per node), a tiny random network, and
    the single-process extraction in a run folder of its own."""
    from model.network.run import FINAL_MODEL

    made = make_pool(tmp_path_factory.mktemp("pool"), 96, 96)
    single = made.root / "single"
    single.mkdir()
    (single / FINAL_MODEL).write_bytes((made.run / FINAL_MODEL).read_bytes())
    extract_units(single, made.data, SETTINGS, show_progress=False)
    return made.data, made.run, single


def assert_same_units(run: Path, reference: Path) -> None:
    with np.load(units_file(run, "conv5")) as mine, np.load(units_file(reference, "conv5")) as theirs:
        assert sorted(mine.files) == sorted(theirs.files)
        for key in mine.files:
            if key != "meta":                    # meta names the run folder's pool, the same here
                assert mine[key].tobytes() == theirs[key].tobytes(), key
        assert str(mine["meta"]) == str(theirs["meta"])


@pytest.mark.parametrize("kill", [False, True], ids=["whole", "worker-killed"])
def test_units_on_ray_equal_single_process(cluster, pool, kill):
    data, run, single = pool
    argv = ["units", str(run), "--pool", str(data), "--top", str(SETTINGS.top), "--batch-size",
            str(SETTINGS.batch_size), "--device", "cpu", "--no-publish", "--ray", cluster]
    if kill:
        units_file(run, "conv5").unlink(missing_ok=True)
        result, killed = _run_killing("_pool_part", argv)
        assert killed, "no Ray worker was seen running a part of the pool"
    else:
        result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    assert "units of conv5 from 96 frames" in result.output
    assert_same_units(run, single)


def test_a_corrupt_frame_is_named_on_the_cluster_too(cluster, pool, tmp_path):
    data, run, _single = pool
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    bad = copy / dataset.load_manifest(copy)[50].image
    bad.write_bytes(bad.read_bytes()[:300])                    # cut short: libjpeg gives up
    result = CliRunner().invoke(app, ["units", str(run), "--pool", str(copy), "--batch-size", "8",
                                      "--device", "cpu", "--no-publish", "--ray", cluster])
    assert result.exit_code == 1
    assert str(bad) in result.output and "Traceback" not in result.output and "RayTaskError" not in result.output


def test_an_admin_ingest_job_runs_on_the_cluster_and_the_workers_panel_shows_it(cluster, videos, single, tmp_path):
    """A worker given the cluster's address (AMBIENT_RAY_ADDRESS) runs the job's ingest on it and
    reports the cluster's nodes and CPUs in its heartbeat, which the admin page and API show."""
    import ray
    from fastapi.testclient import TestClient
    from sqlalchemy import select

    from app_helpers import add_user, database_url, login
    from backend.app.main import create_app
    from backend.config import JobSettings, Settings
    from backend.db.models import Job, Worker
    from backend.db.session import session_factory, upgrade_db
    from backend.jobs import create_job, run_worker

    url = database_url(tmp_path)
    sessions = session_factory(upgrade_db(url))
    with sessions() as db:
        job_id = create_job(db, "ingest", {"videos_dir": str(videos)}).id
    try:
        assert run_worker(sessions, url, tmp_path / "jobs", once=True, settings=JobSettings(poll_seconds=0.1),
                          ray_address=cluster) == 1
    finally:
        ray.shutdown()
    with sessions() as db:
        job, worker = db.get(Job, job_id), db.scalars(select(Worker)).one()
        assert job.status == "done", job.log
        assert f"--ray {cluster}" in job.log
        data_dir = Path(job.params["data_dir"])
        assert (worker.cluster["address"], worker.cluster["nodes"], worker.cluster["cpus"]) == (cluster, 2, 2.0)
    assert_same_dataset(data_dir, single)
    add_user(url, "boss", is_admin=True)
    client = TestClient(create_app(Settings(database_url=url)))
    login(client, "boss")
    assert f"{cluster}: 2 nodes, 2 CPUs" in client.get("/admin/jobs", headers={"accept": "text/html"}).text
    (listed,) = client.get("/api/jobs/workers").json()
    assert listed["cluster"]["nodes"] == 2 and listed["cluster"]["gpus"] == 0


def test_an_address_that_does_not_answer_is_named_and_nothing_is_written(videos, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]             # closed again: nothing listens there
    out = tmp_path / "data"
    started = time.monotonic()
    result = CliRunner().invoke(app, ["ingest", str(videos), "--out", str(out), "--ray", f"127.0.0.1:{port}"])
    assert time.monotonic() - started < 30
    assert result.exit_code == 1
    assert f"127.0.0.1:{port}" in result.output and "does not answer" in result.output
    assert not out.exists()


def test_a_listener_that_is_not_ray_is_refused_in_time():
    """Something accepts the connection but never speaks Ray: ray.init alone would wait forever. (In a
    child process: the abandoned connection attempt must not linger in the test process.)"""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"127.0.0.1:{server.getsockname()[1]}"
        started = time.monotonic()
        child = subprocess.run([sys.executable, "-c", f"from model.engine import connect; connect({address!r}, 3)"],
                               capture_output=True, text=True, timeout=60)
        assert time.monotonic() - started < 30
    assert child.returncode != 0
    assert "ClusterError" in child.stderr and address in child.stderr and "no Ray cluster answered" in child.stderr
