"""`ambient units` and `ambient dissect` end to end on a tiny synthetic pool and a tiny CaffeNetBN."""
import io
import json
import shutil
from dataclasses import asdict, replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from sqlalchemy import func, select
from typer.testing import CliRunner

from app_helpers import add_campaign, database_url
from backend.cli import app
from backend.db.models import Layer, Run, Unit, UnitImage
from backend.db.session import upgrade_db, session_factory
from model.data import dataset as ds
from backend.publish import publish_run
from model.units.dissect import contains, dissect, label_unit, write_dissection
from model.network.caffenet import IMAGE_MEAN, IMAGE_STD
from model.network.run import DISSECTION, FINAL_MODEL, RunInfo, units_file
from model.settings import UNITS
from model.units.top_images import extract_units

FRAME, CROP, TOP = 112, 99, 5     # CaffeNet conv5 on a 99 crop: 5x5 maps
SETTINGS = replace(UNITS, top=TOP, batch_size=8, workers=0)


def extract_and_publish(run_dir, data_dir, url, settings=SETTINGS, **options):
    """What `ambient units` does: the pipeline writes RUN_DIR's files, then the run is published."""
    summary = extract_units(run_dir, data_dir, settings, show_progress=False, **options)
    return {**summary, "run_id": publish_run(run_dir, upgrade_db(url)).run_id}


def _square(position: int, shade: int = 0) -> np.ndarray:
    """A frame with a bright square in one of four places: the truth the dissection should find."""
    image = np.full((FRAME, FRAME, 3), 20 + 3 * shade, np.uint8)
    top, left = [(10, 10), (10, 60), (60, 10), (60, 60)][position]
    image[top:top + 40, left:left + 40] = 250 - 4 * shade
    return image


def make_pool(root, frames: int, test_frames: int) -> SimpleNamespace:
    """DATA_DIR with ``frames`` frames of 4 each per video (a square in turn in each corner; the first
    ``test_frames`` in the test split), and a RUN_DIR with a random tiny network."""
    data, run = root / "data", root / "run"
    records = []
    for i in range(frames):
        video = f"v{i // 4}"
        (data / "videos" / video).mkdir(parents=True, exist_ok=True)
        image = f"videos/{video}/frame_{i % 4:02d}.jpg"
        Image.fromarray(_square(i % 4, i % 40)).save(data / image, quality=95)
        records.append(ds.FrameRecord(i, video, f"{video}.mp4", i % 4, float(i % 4), image,
                                      f"videos/{video}/clip_{i % 4:02d}.mp3",
                                      "test" if i < test_frames else "train", False))
    ds.write_manifest(data, records, np.zeros((frames, 502)), np.zeros((frames, 32)))
    ds.write_json_atomic(data / ds.REPORT, {"videos_dir": None, "ingested": [], "skipped": []})
    run.mkdir()
    info = RunInfo("cluster", 4, False, FRAME, CROP, 8, IMAGE_MEAN, IMAGE_STD)
    torch.manual_seed(0)
    model = info.build_model().eval()
    torch.save({"model": model.state_dict(), "run": asdict(info), "step": 0}, run / FINAL_MODEL)
    return SimpleNamespace(data=data, run=run, records=records, model=model, info=info, root=root)


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """24 frames of 6 videos, 20 of them in the test split."""
    return make_pool(tmp_path_factory.mktemp("units"), 24, 20)


@pytest.fixture(scope="module")
def extracted(pool):
    url = database_url(pool.root, "a.db")
    summary = extract_and_publish(pool.run, pool.data, url)
    # Kept as extracted (later tests extract into pool.run with other options): tests that publish a run of their
    # own copy it instead of extracting the same units again.
    shutil.copytree(pool.run, pool.root / "extracted")
    return url, summary


def copy_extracted(pool, run_dir) -> None:
    """RUN_DIR with the model and the units file that `extracted` wrote (the same bytes an extraction writes)."""
    shutil.copytree(pool.root / "extracted", run_dir)


def test_extraction_stores_each_units_top_images_best_first(pool, extracted):
    url, summary = extracted
    assert (summary["units"], summary["pool"], summary["rf_size"]) == (256, 20, 163)
    # The stored ranking is the brute-force one over the test frames.
    frames = torch.stack([pool.info.prepare_images(torch.from_numpy(
        np.array(Image.open(pool.data / r.image))).permute(2, 0, 1)[None])[0] for r in pool.records[:20]])
    with torch.no_grad():
        expected = pool.model.forward_features(frames, "conv5").amax(dim=(2, 3)).T.topk(TOP, dim=1)
    with session_factory(upgrade_db(url))() as session:
        assert session.scalar(select(func.count(Unit.id))) == 256
        unit = session.scalar(select(Unit).where(Unit.index == 7))
        assert [image.frame.row for image in unit.images] == expected.indices[7].tolist()
        assert [image.activation for image in unit.images] == pytest.approx(expected.values[7].tolist(), rel=1e-3)
        masked = Image.open(io.BytesIO(unit.images[0].masked_jpeg))
        assert masked.size == (CROP, CROP)
        # Darkened outside the receptive-field circles, so never brighter than the frame.
        original = np.asarray(Image.open(pool.data / unit.images[0].frame.image_path))[6:6 + CROP, 6:6 + CROP]
        assert np.asarray(masked).astype(float).mean() < original.astype(float).mean()
    with np.load(units_file(pool.run, "conv5")) as saved:
        assert saved["maps"].shape == (256, TOP, 5, 5)

    extract_and_publish(pool.run, pool.data, url)     # a re-run replaces
    with session_factory(upgrade_db(url))() as session:
        assert session.scalar(select(func.count(Unit.id))) == 256
        assert session.scalar(select(func.count(UnitImage.id))) == 256 * TOP
        assert session.scalar(select(func.count(Run.id))) == 1


def test_one_per_video(pool, tmp_path):
    url = database_url(tmp_path, "b.db")
    extract_and_publish(pool.run, pool.data, url, one_per_video=True)
    with session_factory(upgrade_db(url))() as session:
        for unit in session.scalars(select(Unit).limit(20)):
            videos = [image.frame.video_id for image in unit.images]
            assert len(videos) == len(set(videos)) == 5      # 5 test videos, one frame each


def test_torchscript_trunk_is_analysed_like_any_layer(pool, tmp_path):
    trunk = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 11, 4), torch.nn.ReLU(), torch.nn.MaxPool2d(3, 2))
    torch.jit.script(trunk).save(str(tmp_path / "trunk.pt"))
    url = database_url(tmp_path, "c.db")
    summary = extract_and_publish(tmp_path / "analysis", pool.data, url,
                                  model_spec=f"torchscript:{tmp_path / 'trunk.pt'}")
    assert (summary["units"], summary["rf_size"], summary["layer"]) == (6, 19, "output")
    with session_factory(upgrade_db(url))() as session:
        assert session.scalar(select(Layer.input_size)) == 224
        assert session.scalar(select(Run.model_kind)) == "torchscript"


def test_cli_reports_bad_input_without_traceback(pool, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["units", str(pool.run), "--pool", str(tmp_path)])     # no dataset, no images
    assert result.exit_code == 1 and "manifest.jsonl" in result.output and "images" in result.output
    result = runner.invoke(app, ["units", str(pool.run), "--pool", str(tmp_path / "absent")])
    assert result.exit_code == 2 and "absent" in result.output
    result = runner.invoke(app, ["units", str(pool.run), "--pool", str(pool.data), "--layer", "conv9",
                                 "--db", database_url(tmp_path, "d.db")])
    assert result.exit_code == 1 and "conv9" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["units", str(tmp_path / "x"), "--pool", str(pool.data), "--model", "resnet"])
    assert result.exit_code == 1 and "torchvision:<name>" in result.output
    result = runner.invoke(app, ["dissect", str(tmp_path), "--truth"])
    assert result.exit_code == 2 and "ambient units" in result.output


def test_contains_counts_region_inside_object_and_object_inside_region():
    region = np.zeros((10, 10), bool)
    region[2:6, 2:6] = True
    big, small, elsewhere = np.ones((10, 10), bool), np.zeros((10, 10), bool), np.zeros((10, 10), bool)
    small[3:4, 3:4] = True
    elsewhere[7:, 7:] = True
    assert contains(region, big, 0.5) and contains(region, small, 0.5) and not contains(region, elsewhere, 0.5)


def test_label_unit_picks_the_category_most_of_its_regions_show():
    regions = np.zeros((4, 8, 8), bool)
    regions[:, :4, :4] = True
    dog, sky = np.zeros((8, 8), bool), np.zeros((8, 8), bool)
    dog[:4, :4] = True
    sky[4:] = True
    truths = [{"dog": dog, "sky": sky}, {"dog": dog}, {"dog": dog, "sky": sky}, {"sky": sky}]
    category, precision, iou = label_unit(regions, regions, truths, 0.5)
    assert (category, precision, iou) == ("dog", 0.75, 48 / 64)


def test_dissect_finds_the_square_a_unit_fires_on(pool, extracted):
    def truth(record):
        mask = _square(record.frame_index)[..., 0] == 250
        return [SimpleNamespace(category="dog", mask=mask)]      # frames are already FRAME x FRAME

    labels = dissect(pool.run, truth, "conv5", SETTINGS)
    assert len(labels) == 256 and all(label.category in (None, "dog") for label in labels)
    assert all(label.sounding for label in labels if label.category == "dog")
    assert max(label.precision for label in labels) == 1.0
    path = write_dissection(pool.run, labels, "conv5")
    assert path.name == DISSECTION
    assert set(json.loads(path.read_text())[0]) == {"unit", "category", "precision", "iou", "sounding", "layer"}


def test_units_see_the_pixels_training_saw(pool):
    """One JPEG decoder (model.data.frames): extraction's crops are training's frames, centre-cropped, in order."""
    from model.data.frames import FrameSource
    from model.network.run import center_crop
    from model.units.top_images import _pool_crops, load_network
    network = load_network(pool.run, "conv5")
    batches = list(_pool_crops(pool.data, pool.records, network, SETTINGS, "cpu"))
    assert torch.equal(torch.cat([positions for _, positions in batches]), torch.arange(24))
    frames = FrameSource(pool.data, pool.records, FRAME, torch.device("cpu"), progress=False)
    assert torch.equal(torch.cat([crops for crops, _ in batches]), center_crop(frames.get(np.arange(24)), CROP))


def test_a_corrupt_frame_in_the_pool_is_named(pool, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(pool.data, data)
    bad = data / pool.records[5].image
    bad.write_bytes(bad.read_bytes()[:300])                    # cut short: libjpeg gives up
    result = CliRunner().invoke(app, ["units", str(pool.run), "--pool", str(data), "--db",
                                      database_url(tmp_path / "bad.db")])
    assert result.exit_code != 0
    assert str(bad) in result.output and "Traceback" not in result.output


def test_annotators_submit_while_units_run_on_the_same_sqlite_database(pool, extracted, tmp_path):
    """The pipeline holds no database lock while it computes: `ambient units` writes files, then publishes
    in short transactions, so an annotator's answer never waits on it."""
    import subprocess
    import sys
    import time

    from fastapi.testclient import TestClient

    from app_helpers import REPO, add_user, login
    from backend.app import create_app
    from backend.config import Settings
    from test_app_annotate import next_unit, submit

    run = tmp_path / "run"
    copy_extracted(pool, run)
    url = database_url(tmp_path)
    published = publish_run(run, upgrade_db(url))
    with session_factory(upgrade_db(url))() as session:      # annotators label it once it is in a campaign
        add_campaign(session, published.run_id)
    add_user(url, "ann")
    client = TestClient(create_app(Settings(database_url=url)))
    token = login(client, "ann")
    units = subprocess.Popen([sys.executable, "-m", "backend.cli", "units", str(run), "--pool", str(pool.data),
                              "--top", str(TOP), "--batch-size", "8", "--db", url],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    timings = []
    while units.poll() is None:
        started = time.monotonic()
        unit = next_unit(client, token)
        if unit is None:          # every unit answered while the command still runs
            break
        answer = submit(client, token, unit, category="dog")
        assert answer.status_code == 200, answer.text
        timings.append(time.monotonic() - started)
    output = units.communicate(timeout=120)[0].decode()
    assert units.returncode == 0, output
    assert "published run" in output and "conv5 unchanged" in output
    assert len(timings) >= 3 and max(timings) < 1.0, timings


def test_model_imports_nothing_from_backend():
    """The pipeline stands alone: importing every model module loads no backend module."""
    import subprocess
    import sys

    code = ("import importlib, pkgutil, sys, model\n"
            "for m in pkgutil.walk_packages(model.__path__, 'model.'):\n"
            "    importlib.import_module(m.name)\n"
            "print(sorted(name for name in sys.modules if name == 'backend' or name.startswith('backend.')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_publish_is_idempotent_and_keeps_annotations(pool, extracted, tmp_path):
    from backend.db.models import Annotation, Annotator, SoundCluster
    from backend.publish import PublishError

    run = tmp_path / "run"
    copy_extracted(pool, run)
    url = database_url(tmp_path)
    engine = upgrade_db(url)
    first = publish_run(run, engine)
    with session_factory(engine)() as session:
        unit_id = session.scalar(select(Unit.id).where(Unit.index == 3))
        annotator = Annotator(name="ann", password_hash="x")
        session.add(annotator)
        session.flush()
        campaign_id = add_campaign(session, first.run_id)
        session.add(Annotation(campaign_id=campaign_id, unit_id=unit_id, annotator_id=annotator.id, answer="no"))
        session.commit()
    again = publish_run(run, engine)
    assert again.run_id == first.run_id and again.layers == {"conv5": "unchanged"}
    with session_factory(engine)() as session:
        assert session.scalar(select(func.count(Annotation.id))) == 1
        assert session.scalar(select(func.count(Unit.id))) == 256
        assert session.scalar(select(func.count(SoundCluster.id))) == 0     # no labels in this pool: none
    # Other units over existing annotations: refused, naming the way out; --replace discards them.
    extract_units(run, pool.data, replace(SETTINGS, top=3), show_progress=False)
    with pytest.raises(PublishError, match="--replace"):
        publish_run(run, engine)
    assert publish_run(run, engine, replace=True).layers == {"conv5": "published"}
    with session_factory(engine)() as session:
        assert session.scalar(select(func.count(Annotation.id))) == 0
        assert session.scalar(select(func.count(UnitImage.id))) == 256 * 3
