"""Still-image pools (model/data/pool.py): `ambient units --pool DIR` on a folder of JPEG/PNG images."""
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch
from PIL import Image
from sqlalchemy import func, select
from typer.testing import CliRunner

from app_helpers import database_url
from backend.cli import app
from backend.db.models import Dataset, Frame, Run, Unit, UnitImage, Video
from backend.db.session import session_factory, upgrade_db
from backend.publish import PublishError, publish_run
from model.data.media import resize_center_crop
from model.network.caffenet import IMAGE_MEAN, IMAGE_STD
from model.data.pool import load_pool, stream_pool, still_image_records
from model.network.run import FINAL_MODEL, RunInfo, center_crop
from model.settings import UNITS
from model.units.top_images import extract_units

FRAME, CROP, TOP = 112, 99, 4
SETTINGS = replace(UNITS, top=TOP, batch_size=5, workers=0)


@pytest.fixture()
def folder(tmp_path):
    """Nested JPEGs and PNGs of several sizes and shapes, and files that are not images."""
    rng = np.random.default_rng(0)
    root = tmp_path / "stills"
    for i, name in enumerate(["b/2.png", "a/1.JPG", "a/deeper/3.jpeg", "0.png", "c/4.jpg", "c/5.png",
                              "c/6.jpg", "7.png", "8.jpg", "9.png", "d/10.png", "d/11.jpg"]):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        size = (60 + 7 * i, 40 + 3 * i) if i % 2 else (50, 90)
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=95)
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture()
def run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    info = RunInfo("cluster", 4, False, FRAME, CROP, 8, IMAGE_MEAN, IMAGE_STD)
    torch.manual_seed(0)
    model = info.build_model().eval()
    torch.save({"model": model.state_dict(), "run": asdict(info), "step": 0}, run / FINAL_MODEL)
    return run, model


def test_an_image_folder_lists_its_images_recursively_in_sorted_order(folder):
    records = still_image_records(folder)
    assert [r.image for r in records] == sorted(["b/2.png", "a/1.JPG", "a/deeper/3.jpeg", "0.png", "c/4.jpg",
                                                 "c/5.png", "c/6.jpg", "7.png", "8.jpg", "9.png", "d/10.png",
                                                 "d/11.jpg"])
    assert [r.frame_id for r in records] == list(range(12))
    assert all(r.clip == "" and r.video_id == "" for r in records)
    assert load_pool(folder) == records


def test_still_images_are_scaled_and_cropped_as_ingest_scales_video_frames(folder):
    records = still_image_records(folder)
    batches = list(stream_pool(folder, records, FRAME, batch_size=5, device="cpu"))
    assert [len(positions) for positions, _ in batches] == [5, 5, 2]
    frames = torch.cat([frames for _, frames in batches])
    assert frames.shape == (12, 3, FRAME, FRAME) and frames.dtype == torch.uint8
    for record, frame in zip(records, frames):
        expected = resize_center_crop(Image.open(folder / record.image).convert("RGB"), FRAME)
        assert torch.equal(frame.permute(1, 2, 0), torch.from_numpy(np.array(expected)))


def test_units_of_an_image_folder_are_the_brute_force_top_images_and_publish_without_clips(folder, run, tmp_path):
    run_dir, model = run
    summary = extract_units(run_dir, folder, SETTINGS, show_progress=False)
    assert (summary["pool"], summary["still_images"]) == (12, True)
    records = still_image_records(folder)
    frames = torch.stack([torch.from_numpy(np.asarray(resize_center_crop(
        Image.open(folder / r.image).convert("RGB"), FRAME))).permute(2, 0, 1) for r in records])
    info = RunInfo("cluster", 4, False, FRAME, CROP, 8, IMAGE_MEAN, IMAGE_STD)
    with torch.no_grad():
        expected = model.forward_features(info.prepare_images(frames), "conv5").amax(dim=(2, 3)).T.topk(TOP, dim=1)
    url = database_url(tmp_path)
    engine = upgrade_db(url)
    publish_run(run_dir, engine)
    with session_factory(engine)() as session:
        dataset = session.scalar(select(Dataset))
        assert dataset.data_dir == str(folder.resolve()) and dataset.videos_dir is None
        assert session.scalar(select(func.count(Video.id))) == 0
        stored = session.scalars(select(Frame).order_by(Frame.row)).all()
        assert [(f.image_path, f.video_id, f.clip_path) for f in stored] == [(r.image, None, None) for r in records]
        unit = session.scalar(select(Unit).where(Unit.index == 11))
        assert [image.frame.row for image in unit.images] == expected.indices[11].tolist()
        assert session.scalar(select(func.count(UnitImage.id))) == 256 * TOP
    with session_factory(engine)() as session:             # a name that says what it is, which an admin may change
        run_row = session.scalar(select(Run))
        assert run_row.name.startswith(f"{run_dir.parent.parent.name}/{run_dir.parent.name}/run · caffenet-bn")
        run_row.name = "image-folder probe"
        session.commit()
    assert publish_run(run_dir, engine).layers == {"conv5": "unchanged"}        # idempotent
    with session_factory(engine)() as session:
        assert session.scalar(select(Run.name)) == "image-folder probe"        # publishing again keeps it

    # A new image sorts first: every row now names another image. Publishing the old analysis is refused ...
    Image.new("RGB", (30, 30)).save(folder / "00.png")
    with pytest.raises(PublishError, match="changed"):
        publish_run(run_dir, engine)
    # ... and so is a new analysis of the changed folder into the same database: its rows would be mislabelled.
    extract_units(run_dir, folder, SETTINGS, show_progress=False)
    with pytest.raises(PublishError, match="changed since it was first published"):
        publish_run(run_dir, engine)
    with session_factory(engine)() as session:
        assert session.scalar(select(func.count(UnitImage.id))) == 256 * TOP    # nothing stored was lost


def test_a_broken_image_is_named(folder, run, tmp_path):
    run_dir, _ = run
    bad = folder / "c" / "5.png"
    bad.write_bytes(bad.read_bytes()[:60])
    result = CliRunner().invoke(app, ["units", str(run_dir), "--pool", str(folder), "--top", "2",
                                      "--db", database_url(tmp_path)])
    assert result.exit_code == 1 and "5.png" in result.output and "Traceback" not in result.output
