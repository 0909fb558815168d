"""Shared fixtures. With AMBIENT_TEST_DATABASE_URL set, each test's databases on that server are
dropped after it."""
import faulthandler
import os
import sys

import pytest

from app_helpers import add_user, created_databases, drop_databases, seed_run
from browser_helpers import close_chromium


@pytest.fixture()
def app_url(tmp_path):
    """A seeded run with an annotator "ann" and an admin "boss" (modules may override it)."""
    url = seed_run(tmp_path)
    add_user(url, "ann")
    add_user(url, "boss", is_admin=True)
    return url


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """A folder with jobs/1/world (the tiny world: 4 videos, procedural objects, seed 0) and jobs/1/data (it
    ingested, with 4 sound clusters), laid out as the first demo job's folder: built once for the browser tests
    whose jobs start from it (the demo job resumes in it, the train job trains on its dataset)."""
    from typer.testing import CliRunner

    from backend.cli import app
    from backend.pipeline import demo_folders

    root = tmp_path_factory.mktemp("tiny_world")
    folders = demo_folders(root / "jobs" / "1")
    for argv in (["world", folders["world_dir"], "--preset", "tiny", "--objects", "procedural", "--seed", "0"],
                 # One process: for 4 videos a worker pool's start (children from a fork server import torch
                 # again) costs more than it saves; test_ingest covers the parallel ingest.
                 ["ingest", folders["videos_dir"], "--out", folders["data_dir"], "--workers", "1"],
                 ["labels", folders["data_dir"], "--kind", "cluster", "--k", "4"]):
        result = CliRunner().invoke(app, argv)      # in this process: a subprocess would import torch again
        assert result.exit_code == 0, result.output
    return root


@pytest.fixture(scope="session", autouse=True)
def _data_roots(tmp_path_factory):
    """Tests make their runs and datasets under pytest's temporary folder: that is the data roots that
    publishing checks them against (tests of the roots pass their own), in child processes too."""
    before = os.environ.get("AMBIENT_DATA_ROOTS")
    os.environ["AMBIENT_DATA_ROOTS"] = str(tmp_path_factory.getbasetemp().resolve())
    yield
    if before is None:
        os.environ.pop("AMBIENT_DATA_ROOTS", None)
    else:
        os.environ["AMBIENT_DATA_ROOTS"] = before


@pytest.fixture(autouse=True)
def _drop_test_databases():
    before = created_databases()      # databases made at import (tests/test_fuzz_api.py) live on
    yield
    drop_databases(before)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """After the test's own teardown: the shared Chromium stays open while browser tests follow one another
    (tests/test_browser*.py run in a row), and is closed before any other test and at the end."""
    yield
    if nextitem is None or nextitem.get_closest_marker("browser") is None:
        close_chromium()


def pytest_sessionfinish(session, exitstatus):
    drop_databases()


EXIT_GRACE_SECONDS = 120


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """A thread some test left running (not a daemon) holds the interpreter's exit for as long as it runs: CI's
    suite once finished and then sat until its 90-minute limit. Should the process still be alive
    EXIT_GRACE_SECONDS after the tests (executors' own exit handlers have stopped their threads long before), every
    thread's stack is written out and the process exits with a failure: a clear error, never a silent hang."""
    faulthandler.dump_traceback_later(EXIT_GRACE_SECONDS, exit=True, file=sys.__stderr__)
