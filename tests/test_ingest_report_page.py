"""The admin page of an ingest job shows the table `ambient ingest` ends with (model.data.ingest.report_table)."""
from __future__ import annotations

import re
from dataclasses import asdict

from fastapi.testclient import TestClient

from app_helpers import add_user, database_url, login
from backend.app.main import create_app
from backend.config import Settings
from backend.db.models import Job
from backend.db.session import session_factory, upgrade_db
from model.data import dataset
from model.data.ingest import IngestReport


def test_ingest_job_page_shows_the_table_of_reasons(tmp_path):
    url = database_url(tmp_path)
    add_user(url, "boss", is_admin=True)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    report = IngestReport(
        videos_dir=str(tmp_path), ingested=["a.mp4", "b.webm"], frames=20,
        skipped=[dict(path="c.mp4", reason="no audio stream"), dict(path="d.mkv", reason="no audio stream"),
                 dict(path="e.mp4", reason="shorter than 3.75 s (0.50 s)")],
        warnings=[dict(path="b.webm", warning="video decodes to 4.02 s of the 8.00 s its header promises "
                                              "(file cut short?); ingested 0.00-4.02 s")])
    dataset.write_json_atomic(data_dir / dataset.REPORT, asdict(report))
    with session_factory(upgrade_db(url))() as db:
        done = Job(kind="ingest", params={"videos_dir": str(tmp_path), "data_dir": str(data_dir)}, status="done",
                   progress=1.0, stage="", metrics=[], log="")
        queued = Job(kind="ingest", params={"videos_dir": str(tmp_path)}, status="queued", progress=0.0, stage="",
                     metrics=[], log="")
        db.add_all([done, queued])
        db.commit()
        done_id, queued_id = done.id, queued.id
    client = TestClient(create_app(Settings(database_url=url)))
    login(client, "boss")

    page = client.get(f"/admin/jobs/{done_id}", headers={"accept": "text/html"}).text
    assert "2 videos ingested (20 frames), 3 skipped, 1 with warnings" in page
    rows = re.findall(r"<tr><td>(skipped|warning)</td><td>([^<]*)</td><td>(\d+)</td></tr>", page)
    assert rows == [("skipped", "no audio stream", "2"), ("skipped", "shorter than N s", "1"),
                    ("warning", "video decodes to N s of the N s its header promises (file cut short?)", "1")]
    # Before its ingest has written a report, the job's page has no table.
    assert "ingest-summary" not in client.get(f"/admin/jobs/{queued_id}", headers={"accept": "text/html"}).text
