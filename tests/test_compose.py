"""docker-compose.yml: the web app, a GPU worker, PostgreSQL through the SQLAlchemy URL, a data volume."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

COMPOSE = Path(__file__).resolve().parents[1] / "docker-compose.yml"


@pytest.fixture(scope="module")
def services():
    return yaml.safe_load(COMPOSE.read_text())["services"]


def test_web_and_worker_share_the_postgres_url_and_the_data_volume(services):
    assert set(services) >= {"web", "worker", "db"}
    assert services["db"]["image"].startswith("postgres")
    for name in ("web", "worker"):
        service = services[name]
        assert service["environment"]["AMBIENT_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert "@db:" in service["environment"]["AMBIENT_DATABASE_URL"]
        assert any(volume.split(":")[0] == "data" for volume in service["volumes"])
        # Both wait for the one-shot migration, which waits for PostgreSQL: nobody else migrates.
        assert service["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
    assert "worker" in services["worker"]["command"] and "serve" in services["web"]["command"]
    assert "data" in yaml.safe_load(COMPOSE.read_text())["volumes"]


def test_migrations_run_once_before_web_and_worker(services):
    migrate = services["migrate"]
    assert migrate["command"] == ["ambient", "db", "upgrade"]
    assert migrate["depends_on"]["db"]["condition"] == "service_healthy"
    assert migrate["environment"]["AMBIENT_DATABASE_URL"] == services["web"]["environment"]["AMBIENT_DATABASE_URL"]


def test_the_worker_reserves_a_gpu(services):
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in device["capabilities"] and device["driver"] == "nvidia" for device in devices)


def _has_compose() -> bool:
    return bool(shutil.which("docker")) and subprocess.run(["docker", "compose", "version"],
                                                           capture_output=True).returncode == 0


@pytest.mark.skipif(not _has_compose(), reason="no docker compose client here")
def test_docker_compose_accepts_the_file():
    result = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
