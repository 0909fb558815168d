"""Long pages: how long the pages that list a whole run take to load, on a run of demo size (256 conv5
units x 60 top images, all labelled by three annotators and automatically, 30 sound clusters), from
`ambient serve` over loopback; median and slowest of 10 requests, and the HTML's size, into BENCHMARKS.md.

`python benchmarks/bench_pages.py`
"""
from __future__ import annotations

import datetime
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from sqlalchemy import insert, select

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from app_helpers import PASSWORD, add_user, csrf_of, running_server, seed_run  # noqa: E402
from report import write_section  # noqa: E402

from backend.db import store  # noqa: E402
from backend.db.models import Annotation, Annotator, Category, Dataset, ImageMark, Run, Unit, UnitImage  # noqa: E402
from backend.db.session import session_factory, upgrade_db  # noqa: E402
from model.sound.texture import TEXTURE_DIM  # noqa: E402
from model.sound.groups import SoundGroup  # noqa: E402

UNITS, IMAGES, CLUSTERS, REQUESTS = 256, 60, 30, 10
PAGES = ("/runs/1/units", "/runs/1/units?offset=200", "/runs/1/units?sort=precision&min_agreement=",
         "/runs/1/units/conv5/0", "/results/1", "/results", "/runs/1/clusters", "/runs/1/clusters?offset=25",
         "/admin/review")


def seed(tmp: Path) -> str:
    """The demo-sized run: half the units dog detectors (40 of 60 images marked), half 'no', each by three
    annotators; every unit labelled automatically; 30 sound clusters."""
    url = seed_run(tmp, n_units=UNITS, n_images=IMAGES, image_size=64)
    for name in ("tom", "una", "val"):
        add_user(url, name)
    add_user(url, "boss", is_admin=True)
    with session_factory(upgrade_db(url))() as db, db.begin():
        annotators = db.scalars(select(Annotator.id).where(Annotator.name.in_(("tom", "una", "val")))).all()
        dog = db.scalar(select(Category.id).where(Category.name == "dog"))
        images: dict[int, list[int]] = {}
        for unit_id, image_id in db.execute(select(UnitImage.unit_id, UnitImage.id).order_by(UnitImage.rank)):
            images.setdefault(unit_id, []).append(image_id)
        for n, unit_id in enumerate(sorted(images)):
            unit = db.get(Unit, unit_id)
            unit.auto_category_id, unit.auto_precision, unit.auto_iou = dog, 0.5 + (n % 50) / 100, 0.1 + (n % 30) / 100
            for annotator in annotators:
                yes = n % 2 == 0
                annotation = db.scalar(insert(Annotation).values(
                    unit_id=unit_id, annotator_id=annotator, answer="yes" if yes else "no",
                    category_id=dog if yes else None).returning(Annotation.id))
                if yes:
                    db.execute(insert(ImageMark), [{"annotation_id": annotation, "unit_image_id": i}
                                                   for i in images[unit_id][:40]])
        texture = np.linspace(0, 1, TEXTURE_DIM)
        store.replace_sound_clusters(db, db.get(Run, 1), db.scalar(select(Dataset)), [
            SoundGroup(i, f"Cluster {i}", np.arange(2), 1 / CLUSTERS, texture * (i + 1) / CLUSTERS, None,
                       list(range(10)), {"dog": 1}) for i in range(CLUSTERS)])
    return url


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        url = seed(Path(tmp))
        print(f"seeded {UNITS} units x {IMAGES} images in {time.perf_counter() - started:.0f} s", flush=True)
        rows = []
        with running_server(url) as base, httpx.Client(base_url=base, timeout=60) as client:
            csrf = csrf_of(client.get("/login").text)
            client.post("/login", data={"name": "boss", "password": PASSWORD, "csrf_token": csrf})
            for path in PAGES:
                times, size = [], 0
                for _ in range(REQUESTS):
                    began = time.perf_counter()
                    response = client.get(path, headers={"accept": "text/html"})
                    times.append(1000 * (time.perf_counter() - began))
                    assert response.status_code == 200, (path, response.status_code)
                    size = len(response.content)
                rows.append((path, statistics.median(times), max(times), size))
                print(f"{path}: median {rows[-1][1]:.0f} ms, slowest {rows[-1][2]:.0f} ms, {size / 1024:.0f} KiB",
                      flush=True)
    table = "\n".join(f"| `{path}` | {median:.0f} | {slowest:.0f} | {size / 1024:.0f} |"
                      for path, median, slowest, size in rows)
    write_section("Long pages", f"""`benchmarks/bench_pages.py`: the pages that list a whole run, on a run of demo size
({UNITS} conv5 units x {IMAGES} top images, every unit answered by three annotators (half of them dog
detectors with 40 images marked) and labelled automatically, {CLUSTERS} sound clusters), requested as an
admin from `ambient serve` over loopback, {REQUESTS} times each (the first one cold); the HTML only (its
images load lazily, and folded lists' images not until opened). {os.cpu_count()} cores shared with other
work, {datetime.date.today()}. Every page is well under 1 s. The units browser shows 50 units a page, the clusters 5 a page; before paging,
issue 27 measured the units browser at 39,000 px and the sound clusters at 4.5-6 s.

| page | median ms | slowest ms | HTML KiB |
|---|---|---|---|
{table}
""")


if __name__ == "__main__":
    main()
