"""Load: 50 and 200 concurrent annotators (real HTTP clients on loopback) against `ambient serve`'s app
under uvicorn: unit pages, unit images from the database, submissions, and the same image bytes as
plain static files from the same server; then 50 annotators doing the sound task on detector units;
p50/p95/p99 latency and throughput into BENCHMARKS.md.

`python benchmarks/bench_load.py [SECONDS]` (default 20 s of annotators and 10 s per image phase).
"""
from __future__ import annotations

import asyncio
import datetime
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from app_helpers import PASSWORD, add_user, csrf_of, seed_run  # noqa: E402
from report import write_section

CONCURRENCY = (50, 200)
UNITS, IMAGES_PER_UNIT, IMAGE_SIZE = 400, 60, 128
DETECTORS = 200          # of the units, made detectors (three annotators agree) for the sound task
SOUND_ANNOTATORS = 50
IMAGES_PER_PAGE = 12     # what a browser fetches for the first screen of a unit page
THINK_S = 5.0            # an annotator looks at 60 pictures and names the object: at least this long


def serve(url: str, static_dir: str, port: str) -> None:
    """The app exactly as `ambient serve` builds it, plus a StaticFiles mount of the same image bytes."""
    import uvicorn
    from fastapi.staticfiles import StaticFiles

    from backend.app import create_app
    from backend.config import Settings

    app = create_app(Settings(database_url=url))
    app.mount("/bench-static", StaticFiles(directory=static_dir), name="bench-static")
    uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning")


class Recorder:
    def __init__(self):
        self.latencies: dict[str, list[float]] = {}
        self.errors: dict[str, int] = {}

    async def timed(self, kind: str, send):
        """Time `send()`; retried once, as browsers do, when uvicorn closed the idle connection just then."""
        start = time.perf_counter()
        try:
            response = await send()
        except (httpx.RemoteProtocolError, httpx.ReadError):
            response = await send()
        self.latencies.setdefault(kind, []).append(time.perf_counter() - start)
        if response.status_code >= 400:
            self.errors[kind] = self.errors.get(kind, 0) + 1
        return response


async def logged_in_client(base: str, name: str, limits: httpx.Limits) -> tuple[httpx.AsyncClient, str]:
    client = httpx.AsyncClient(base_url=base, timeout=120, limits=limits,
                               transport=httpx.AsyncHTTPTransport(retries=3, limits=limits))
    token = csrf_of((await client.get("/login")).text)
    await client.post("/login", data={"name": name, "password": PASSWORD, "csrf_token": token})
    return client, csrf_of((await client.get("/login")).text)


async def annotator(client: httpx.AsyncClient, token: str, until: float, think: float, rec: Recorder) -> None:
    """Queue -> unit page -> its first images -> an answer, until the time is up or the queue is empty.

    People neither start nor answer in step: a random start within one look, and looks of 0.5-1.5x `think`.
    """
    rng = np.random.default_rng(id(client))
    await asyncio.sleep(rng.uniform(0, think))
    while time.perf_counter() < until:
        queue = await rec.timed("queue (/annotate)", lambda: client.post("/annotate", data={"csrf_token": token}))
        if queue.status_code != 303:
            return
        page = await rec.timed("unit page", lambda: client.get(queue.headers["location"]))
        images = re.findall(r'src="(/images/\d+)"', page.text)[:IMAGES_PER_PAGE]
        for image in images:
            await rec.timed("unit image (DB)", lambda: client.get(image))
        unit = queue.headers["location"].rsplit("/", 1)[1]
        await asyncio.sleep(think * rng.uniform(0.5, 1.5))
        await rec.timed("submission", lambda: client.post(f"/units/{unit}/annotation",
                                                          headers={"accept": "application/json"},
                                                          data={"answer": "no", "csrf_token": token}))


async def sound_annotator(client: httpx.AsyncClient, token: str, until: float, think: float, rec: Recorder) -> None:
    """The sound task as a browser does it: take a detector, look and listen, submit all its judgements;
    the submission hands out the next detector (a redirect), whose page is the rest of the cycle."""
    rng = np.random.default_rng(id(client))
    await asyncio.sleep(rng.uniform(0, think))
    html = {"accept": "text/html"}
    queue = await rec.timed("sound queue (POST /sound)", lambda: client.post("/sound", data={"csrf_token": token},
                                                                              headers=html))
    location = queue.headers.get("location")          # /sound/{id}; none when no detector is left
    page = await rec.timed("sound page", lambda: client.get(location, headers=html)) if location else None
    while location is not None and time.perf_counter() < until:
        clips = set(re.findall(r'name="(audible_\d+)"', page.text))
        await asyncio.sleep(think * rng.uniform(0.5, 1.5))
        start = time.perf_counter()
        answered = await rec.timed("sound submission (+ next unit)", lambda: client.post(
            location, headers=html, data={"csrf_token": token, **{name: "yes" for name in clips}}))
        location = answered.headers.get("location")
        if location is not None:
            page = await rec.timed("sound page", lambda: client.get(location, headers=html))
            rec.latencies.setdefault("sound cycle (submit + next page)", []).append(time.perf_counter() - start)


async def run_sound(base: str, users: list[str], seconds: float, think: float) -> tuple[Recorder, float]:
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    sessions = await asyncio.gather(*(logged_in_client(base, name, limits) for name in users))
    rec = Recorder()
    start = time.perf_counter()
    await asyncio.gather(*(sound_annotator(c, t, start + seconds, think, rec) for c, t in sessions))
    took = time.perf_counter() - start
    for client, _ in sessions:
        await client.aclose()
    return rec, took


def make_detectors(url: str, unit_ids: list[int]) -> None:
    """Three annotators say "dog" for each unit and mark all its images: each becomes a dog detector."""
    from datetime import datetime, timezone

    from sqlalchemy import insert, select

    from backend.db.models import Annotation, Annotator, Category, ImageMark, UnitImage
    from backend.db.session import open_db, session_factory
    with session_factory(open_db(url))() as db:
        dog = db.scalar(select(Category.id).where(Category.name == "dog"))
        judges = [db.scalar(select(Annotator.id).where(Annotator.name == f"marker{i}")) for i in range(3)]
        images = db.execute(select(UnitImage.unit_id, UnitImage.id).where(UnitImage.unit_id.in_(unit_ids))).all()
        now = datetime.now(timezone.utc)
        for judge in judges:
            ids = dict(db.execute(insert(Annotation).returning(Annotation.unit_id, Annotation.id),
                                  [{"unit_id": u, "annotator_id": judge, "answer": "yes", "category_id": dog,
                                    "created_at": now} for u in unit_ids]).all())
            db.execute(insert(ImageMark), [{"annotation_id": ids[u], "unit_image_id": i} for u, i in images])
        db.commit()


async def image_reader(client: httpx.AsyncClient, paths: list[str], until: float, kind: str, rec: Recorder,
                       offset: int) -> None:
    i = offset
    while time.perf_counter() < until:
        await rec.timed(kind, lambda: client.get(paths[i % len(paths)]))
        i += 1


async def run_level(base: str, users: list[str], image_ids: list[int], seconds: float, think: float,
                    image_phases: bool) -> dict:
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)   # one browser tab each
    # All at once: a session logged in early would idle past uvicorn's 5 s keep-alive meanwhile.
    sessions = await asyncio.gather(*(logged_in_client(base, name, limits) for name in users))
    results = {}
    rec = Recorder()
    start = time.perf_counter()
    await asyncio.gather(*(annotator(c, t, start + seconds, think, rec) for c, t in sessions))
    results["mixed"] = (rec, time.perf_counter() - start)
    image_seconds = seconds / 2
    for kind, paths in () if not image_phases else (("image from the DB", [f"/images/{i}" for i in image_ids]),
                        ("same bytes, static file", [f"/bench-static/{i}.jpg" for i in image_ids])):
        rec = Recorder()
        start = time.perf_counter()
        await asyncio.gather(*(image_reader(c, paths, start + image_seconds, kind, rec, n * 7)
                               for n, (c, _) in enumerate(sessions)))
        results[kind] = (rec, time.perf_counter() - start)
    for client, _ in sessions:
        await client.aclose()
    return results


SOUND_ROWS = ("sound queue (POST /sound)", "sound page", "sound submission (+ next unit)",
              "sound cycle (submit + next page)")


def row(kind: str, rec: Recorder, seconds: float) -> tuple[str, float, float, float, float, int]:
    ms = 1000 * np.asarray(rec.latencies.get(kind, [0.0]))
    return (kind, *np.percentile(ms, [50, 95, 99]), len(rec.latencies.get(kind, [])) / seconds,
            rec.errors.get(kind, 0))


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 20.0
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        url = seed_run(tmp, n_units=UNITS, n_images=IMAGES_PER_UNIT, image_size=IMAGE_SIZE)
        for i in range(max(CONCURRENCY)):
            add_user(url, f"load{i:03d}")
        for i in range(SOUND_ANNOTATORS):
            add_user(url, f"sound{i:03d}")
        for i in range(3):
            add_user(url, f"marker{i}")
        from sqlalchemy import select

        from backend.db.models import UnitImage
        from backend.db.session import upgrade_db, session_factory
        static = tmp / "static"
        static.mkdir()
        with session_factory(upgrade_db(url))() as db:
            rows = db.execute(select(UnitImage.id, UnitImage.masked_jpeg).order_by(UnitImage.id).limit(600)).all()
        for image_id, jpeg in rows:
            (static / f"{image_id}.jpg").write_bytes(jpeg)
        with session_factory(upgrade_db(url))() as db:
            all_units = db.scalars(select(UnitImage.unit_id).distinct().order_by(UnitImage.unit_id)).all()
        make_detectors(url, all_units[-DETECTORS:])     # the unit task's annotators skip these: they are complete
        image_bytes = int(np.mean([len(j) for _, j in rows]))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen([sys.executable, __file__, "serve", url, str(static), str(port)], cwd=ROOT)
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                try:
                    httpx.get(f"{base}/login", timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            tables = {}
            for level, think in [(n, THINK_S) for n in CONCURRENCY] + [(min(CONCURRENCY), 0.0)]:
                users = [f"load{i:03d}" for i in range(level)]
                results = asyncio.run(run_level(base, users, [r[0] for r in rows], seconds, think,
                                                image_phases=think > 0))
                rec, took = results["mixed"]
                lines = [row(kind, rec, took) for kind in ("queue (/annotate)", "unit page", "unit image (DB)",
                                                           "submission")]
                for kind in ("image from the DB", "same bytes, static file"):
                    if kind in results:
                        rec, took = results[kind]
                        lines.append(row(kind, rec, took))
                tables[(level, think)] = lines
            rec, took = asyncio.run(run_sound(base, [f"sound{i:03d}" for i in range(SOUND_ANNOTATORS)], seconds,
                                              THINK_S))
            sound_lines = [row(kind, rec, took) for kind in SOUND_ROWS]
            for (level, _), lines in [*tables.items(), ((SOUND_ANNOTATORS, THINK_S), sound_lines)]:
                for line in lines:
                    print(f"{level:>3} annotators  {line[0]:<32} p50 {line[1]:7.1f} ms  p95 {line[2]:7.1f} ms  "
                          f"p99 {line[3]:7.1f} ms  {line[4]:7.1f}/s  errors {line[5]}")
        finally:
            server.terminate()
            server.wait(timeout=30)

    body = [f"""\
`benchmarks/bench_load.py`: real HTTP clients (httpx, asyncio, one connection per annotator) on
loopback against the app as `ambient serve` runs it (uvicorn, one worker process, SQLite in WAL
mode), seeded with {UNITS} units x {IMAGES_PER_UNIT} masked {IMAGE_SIZE}px JPEGs (~{image_bytes / 1024:.1f} KiB each).
Each annotator loops queue (`POST /annotate`) -> unit page -> its first {IMAGES_PER_PAGE} images -> {THINK_S:.0f} s looking
(0.5-1.5x, random start) -> answer, for {seconds:.0f} s; the last table has no looking (every annotator
as fast as the server answers). Then every annotator fetches unit images for {seconds / 2:.0f} s from the
database (`/images/{{id}}`), then the same bytes as static files from a `StaticFiles` mount of the
same server. Latencies in ms, throughput in requests/s; clients and server share the cores.
"""]
    for (level, think), lines in tables.items():
        title = f"{level} concurrent annotators" + ("" if think else ", no time looking (stress)")
        body.append(f"**{title}**\n\n| request | p50 | p95 | p99 | per s | errors |\n"
                    "|---|---|---|---|---|---|\n"
                    + "".join(f"| {k} | {a:.1f} | {b:.1f} | {c:.1f} | {t:.1f} | {e} |\n" for k, a, b, c, t, e in lines))
        if len(lines) == 6:
            db_rate, static_rate = lines[-2][4], lines[-1][4]
            body.append(f"DB images at {100 * db_rate / static_rate:.0f}% of static-file throughput "
                        f"(target >= 50%); unit page p95 {lines[1][2]:.0f} ms.\n")
    cycle = sound_lines[-1]
    body.append(f"""**{SOUND_ANNOTATORS} concurrent annotators, sound task**

{SOUND_ANNOTATORS} more annotators judge the clips of {DETECTORS} detector units (three annotators said "dog"
and marked every image): take a detector (`POST /sound`), its page, {THINK_S:.0f} s listening (0.5-1.5x),
then all its judgements (`POST /sound/{{id}}`, which hands out the next detector) and the next page: the
cycle is those two requests. Each detector is held for one annotator and takes three.

| request | p50 | p95 | p99 | per s | errors |
|---|---|---|---|---|---|
""" + "".join(f"| {k} | {a:.1f} | {b:.1f} | {c:.1f} | {t:.1f} | {e} |\n" for k, a, b, c, t, e in sound_lines)
                + f"\nSound-task cycle p95 {cycle[2]:.0f} ms (target < 200 ms; before issue 16: 3.2 s, every "
                  f"request rebuilt every run's report).\n")
    body.append(f"Targets: DB images >= 50% of static throughput; unit page p95 < 100 ms at 50 annotators.\n"
                f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                f"Python {platform.python_version()}, load average {load:.1f} at the start; "
                f"{datetime.date.today().isoformat()}.\n")
    write_section("Load", "\n".join(body))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "serve":
        serve(*sys.argv[2:])
    else:
        main()
