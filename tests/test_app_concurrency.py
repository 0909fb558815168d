"""50 annotators at once against a real uvicorn on loopback: nothing lost, no unit slot handed out twice.

The default run lasts ~8 s; AMBIENT_SOAK_SECONDS=300 gives the issue's 5-minute version.
"""
from __future__ import annotations

import os
import re
import threading
import time
from collections import Counter

import httpx
import pytest
from sqlalchemy import select

from app_helpers import PASSWORD, add_user, csrf_of, running_server, seed_run
from backend.db.models import Annotation, Annotator
from backend.db.session import upgrade_db, session_factory

ANNOTATORS = 50
# All 50 contend for the same units from the first second on, so a shorter run meets the same races, only
# fewer times: 8 s gave 241 submissions (80 units complete) on 2 busy cores, 5x the minimum asserted.
SECONDS = float(os.environ.get("AMBIENT_SOAK_SECONDS", "8"))


@pytest.fixture()
def server(tmp_path):
    # Enough units that the queue lasts the whole run (about 20 submissions/s here).
    url = seed_run(tmp_path, n_units=int(max(400, 15 * SECONDS)), n_images=3)
    for i in range(ANNOTATORS):
        add_user(url, f"a{i:02d}")
    with running_server(url) as base:
        yield base, url


def annotate(base: str, name: str, until: float, saved: list, errors: list) -> None:
    with httpx.Client(base_url=base, timeout=60) as client:
        token = csrf_of(client.get("/login").text)
        client.post("/login", data={"name": name, "password": PASSWORD, "csrf_token": token})
        token = csrf_of(client.get("/login").text)
        while time.monotonic() < until:
            page = client.post("/annotate", data={"csrf_token": token}, follow_redirects=True)
            match = re.search(r"/units/(\d+)$", str(page.url))
            if match is None:
                return                                   # the queue is empty for this annotator
            unit = int(match.group(1))
            images = [int(i) for i in re.findall(r'name="marked" value="(\d+)"', page.text)]
            response = client.post(f"/units/{unit}/annotation",
                                   data={"answer": "yes", "category": "dog", "marked": [str(i) for i in images[:2]],
                                         "csrf_token": token})
            if response.status_code == 200:
                saved.append((name, unit))
            else:
                errors.append((name, unit, response.status_code, response.text[:200]))


@pytest.mark.slow
@pytest.mark.timeout(SECONDS + 180)
def test_concurrent_annotators_lose_nothing(server):
    base, url = server
    saved, errors = [], []
    until = time.monotonic() + SECONDS
    threads = [threading.Thread(target=annotate, args=(base, f"a{i:02d}", until, saved, errors))
               for i in range(ANNOTATORS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:5]
    assert len(saved) >= ANNOTATORS, f"only {len(saved)} submissions in {SECONDS} s"
    with session_factory(upgrade_db(url))() as db:
        stored = db.execute(select(Annotator.name, Annotation.unit_id).join(Annotator)).all()
    # Every acknowledged submission is in the database, and nothing else is.
    assert sorted(map(tuple, stored)) == sorted(saved)
    per_unit = Counter(unit for _, unit in stored)
    assert max(per_unit.values()) <= 3                       # never more than the unit's three slots
    assert len(set(stored)) == len(stored)                   # never the same unit twice to one person
    print(f"{len(saved)} submissions by {ANNOTATORS} annotators in {SECONDS:.0f} s "
          f"({len(saved) / SECONDS:.1f}/s); {sum(c == 3 for c in per_unit.values())} units complete")
