"""Linear probes (model/units/probe.py, `ambient probe`): metrics against scikit-learn's, informative and random
features, the VOC 2007 layout reader, SUN-style splits, the world tasks and the command end to end."""
import json
from dataclasses import asdict, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import average_precision_score
from typer.testing import CliRunner

from backend.cli import app
from model.data import dataset as ds
from model.units import probe
from model.network.caffenet import IMAGE_MEAN, IMAGE_STD
from model.network.run import FINAL_MODEL, RunInfo, probe_file, read_probes, write_run_json
from model.settings import PROBE
from model.world.scenes import SCENES
from model.world.truth import SUMMARY, write_truth

# Two values of C keep the cross-validation cheap; the paper's grid is PROBE.c_grid.
FAST = replace(PROBE, c_grid=(0.01, 1.0), batch_size=16)
FRAME, CROP = 80, 67


def test_mean_average_precision_is_scikit_learns_per_class_mean():
    truth = np.array([[1, 0], [0, 1], [1, 0], [0, 1]])
    scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.9], [0.1, 0.3]])
    score, per_class = probe.mean_average_precision(truth, scores)
    # Class 0: its positives rank 1st and 3rd, so AP = (1/1 + 2/3) / 2.
    assert per_class[0] == pytest.approx((1 + 2 / 3) / 2)
    assert per_class[1] == pytest.approx(average_precision_score(truth[:, 1], scores[:, 1]))
    assert score == pytest.approx(average_precision_score(truth, scores, average="macro"))
    rng = np.random.default_rng(0)
    truth, scores = rng.random((50, 5)) < 0.3, rng.normal(size=(50, 5))
    assert probe.mean_average_precision(truth, scores)[0] == pytest.approx(
        average_precision_score(truth, scores, average="macro"))


def test_mean_average_precision_ignores_difficult_entries_and_undefined_classes():
    truth = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    scores = np.array([[0.2, 0.5], [0.9, 0.1], [0.7, 0.2], [0.1, 0.3]])
    ignore = np.array([[False, False], [True, False], [False, False], [False, False]])
    score, per_class = probe.mean_average_precision(truth, scores, ignore)
    assert per_class == [1.0, None]       # without the ignored high-scoring negative; class 1 has no positive
    assert score == 1.0
    assert probe.mean_average_precision(truth, scores)[1][0] == pytest.approx((1 / 2 + 2 / 3) / 2)
    with pytest.raises(ValueError, match="undefined"):
        probe.mean_average_precision(np.zeros((3, 2)), np.zeros((3, 2)))


def _informative_and_random(n: int, classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(classes, size=n)
    informative = np.eye(classes)[labels] * 3 + rng.normal(0, 0.3, (n, classes))
    return labels, np.hstack([informative, rng.normal(size=(n, 20))]), rng.normal(size=(n, classes + 20))


def test_multiclass_probe_scores_label_carrying_features_perfectly_and_random_ones_at_chance():
    labels, informative, noise = _informative_and_random(1200, 6)
    train, test = slice(0, 300), slice(300, None)
    good = probe.fit_multiclass(informative[train], labels[train], informative[test], labels[test], settings=FAST)
    assert good["score"] > 0.98 and good["cv_score"] > 0.95 and good["C"] in FAST.c_grid
    chance = probe.fit_multiclass(noise[train], labels[train], noise[test], labels[test], settings=FAST)
    assert abs(chance["score"] - 1 / 6) < 0.06


def test_multilabel_probe_scores_label_carrying_features_perfectly_and_random_ones_at_prevalence():
    rng = np.random.default_rng(1)
    present = rng.random((900, 4)) < 0.3
    informative = present * 3.0 + rng.normal(0, 0.3, present.shape)
    train, test = slice(0, 300), slice(300, None)
    good = probe.fit_multilabel(informative[train], present[train], informative[test], present[test], settings=FAST)
    assert good["score"] > 0.98 and len(good["per_class"]) == 4
    noise = rng.normal(size=(900, 10))
    chance = probe.fit_multilabel(noise[train], present[train], noise[test], present[test], settings=FAST)
    # A random ranking's AP is the share of positives.
    assert abs(chance["score"] - present[test].mean()) < 0.08


def _jpeg(path: Path, colour) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((40, 60, 3), colour, np.uint8)).save(path, quality=90)


def make_voc(root: Path, trainval: int = 12, test: int = 6) -> Path:
    """A miniature VOC 2007 folder: image i shows class i % 20 (its colour), image 1 is a difficult bird."""
    main = root / "ImageSets" / "Main"
    main.mkdir(parents=True)
    (root / "Annotations").mkdir()
    ids = {"trainval": [f"{i:06d}" for i in range(trainval)], "test": [f"{i:06d}" for i in range(100, 100 + test)]}
    for split, images in ids.items():
        for image in images:
            _jpeg(root / "JPEGImages" / f"{image}.jpg", (int(image) * 37 % 256, 80, 160))
            (root / "Annotations" / f"{image}.xml").write_text(f"<annotation><filename>{image}.jpg</filename></annotation>")
        for c, name in enumerate(probe.VOC_CLASSES):
            flags = ["1" if int(image) % 2 == c % 2 else "-1" for image in images]
            if split == "trainval" and name == "bird":
                flags[1] = " 0"
            (main / f"{name}_{split}.txt").write_text("".join(f"{image} {flag}\n" for image, flag in zip(images, flags)))
    return root


def test_voc2007_reader_takes_images_and_labels_from_the_layout(tmp_path):
    voc = probe.read_voc2007(make_voc(tmp_path / "VOC2007"))
    assert [p.name for p in voc.trainval[:2]] == ["000000.jpg", "000001.jpg"] and len(voc.test) == 6
    assert voc.trainval_labels.shape == (12, 20) and voc.test_labels.shape == (6, 20)
    assert voc.trainval_labels[0, 0] == 1 and voc.trainval_labels[1, 0] == -1 and voc.trainval_labels[1, 1] == 1
    assert voc.trainval_labels[1, probe.VOC_CLASSES.index("bird")] == 0
    assert voc.test[0].name == "000100.jpg"


def test_voc2007_reader_names_what_is_wrong(tmp_path):
    root = make_voc(tmp_path / "VOC2007")
    (root / "JPEGImages" / "000003.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="000003.jpg"):
        probe.read_voc2007(root)
    _jpeg(root / "JPEGImages" / "000003.jpg", (0, 0, 0))
    (root / "ImageSets" / "Main" / "cow_test.txt").unlink()
    with pytest.raises(FileNotFoundError, match="cow_test.txt"):
        probe.read_voc2007(root)
    (root / "ImageSets" / "Main" / "cat_trainval.txt").write_text("000000 maybe\n")
    with pytest.raises(ValueError, match="cat_trainval.txt"):
        probe.read_voc2007(root)
    with pytest.raises(FileNotFoundError, match="not PASCAL VOC 2007's layout"):
        probe.read_voc2007(tmp_path)


def test_per_class_splits_take_n_training_images_of_every_class():
    labels = np.repeat(np.arange(4), [25, 30, 22, 40])
    splits = probe.per_class_splits(labels, 20, 3)
    assert len(splits) == 3
    for train, test in splits:
        assert np.bincount(labels[train]).tolist() == [20, 20, 20, 20]
        assert np.intersect1d(train, test).size == 0 and len(train) + len(test) == len(labels)
    assert not np.array_equal(splits[0][0], splits[1][0])
    with pytest.raises(ValueError, match="needs more than --per-class 25"):
        probe.per_class_splits(labels, 25, 1)


def _tiny_run(run_dir: Path, data_dir: Path, label_kind="cluster", num_outputs=4, seed=0, epochs=1) -> RunInfo:
    run_dir.mkdir(parents=True)
    info = RunInfo(label_kind, num_outputs, False, FRAME, CROP, 16, IMAGE_MEAN, IMAGE_STD)
    torch.manual_seed(seed)
    torch.save({"model": info.build_model().eval().state_dict(), "run": asdict(info), "step": 0}, run_dir / FINAL_MODEL)
    write_run_json(run_dir, info, {"config": {"epochs": epochs}, "data_dir": str(data_dir), "preset": "tiny"})
    return info


def test_layer_features_are_the_networks_own_layers(tmp_path):
    _tiny_run(tmp_path / "run", tmp_path)
    network = probe.load_probed(tmp_path / "run")
    x = torch.randn(3, 3, CROP, CROP)
    features = probe.layer_features(network.model, x, probe.PROBE_LAYERS)
    with torch.no_grad():
        conv5 = network.model.forward_features(x, "conv5")
        torch.testing.assert_close(features["max5"], conv5.amax((2, 3)))
        torch.testing.assert_close(features["pool5"], network.model.forward_features(x, "pool5").flatten(1))
        torch.testing.assert_close(features["fc7"], network.model.forward_features(x, "fc7"))
    assert features["max5"].shape == (3, 256) and features["fc6"].shape == (3, 16)
    assert network.trained and network.name == "sound (cluster)"
    with torch.no_grad():
        network.model.fc7[0].weight.fill_(1.0)       # as if trained
    copy = probe.untrained_copy(network)
    assert not copy.trained and copy.run_dir is None and copy.name == "untrained"
    assert copy.model.state_dict().keys() == network.model.state_dict().keys()
    assert not torch.equal(copy.model.fc7[0].weight, network.model.fc7[0].weight)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A world's truth for 24 videos (scene in the video's colour, a dog in every other one) and DATA_DIR
    with 4 held-out frames of each, and two tiny runs."""
    root = tmp_path_factory.mktemp("world")
    world_dir, data_dir = root / "world", root / "data"
    (world_dir / "truth").mkdir(parents=True)
    (world_dir / SUMMARY).write_text("{}")
    records = []
    for v in range(24):
        stem, scene = f"world_{v:05d}", SCENES[v % 3].name
        masks = np.zeros((1, 64, 120), bool)
        masks[0, 10:40, :] = v % 2 == 0
        record = {"scene": scene, "duration": 6.0, "fps": 10, "width": 80, "height": 64,
                  "camera": {"canvas_width": 120, "x_start": 0, "x_end": 40},
                  "objects": [{"category": "dog", "sounding": True, "mask": 0}], "sounds": []}
        write_truth(world_dir, stem, record, masks)
        for f in range(4):
            image = f"videos/{stem}/frame_{f:02d}.jpg"
            colour = [(200, 40, 40), (40, 200, 40), (40, 40, 200)][v % 3]
            pixels = np.full((FRAME, FRAME, 3), colour, np.uint8)
            if v % 2 == 0:
                pixels[10:40] = 255
            (data_dir / "videos" / stem).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(data_dir / image, quality=95)
            records.append(ds.FrameRecord(len(records), stem, f"{stem}.mp4", f, 2.0 + f * 0.5, image,
                                          f"videos/{stem}/clip_{f:02d}.mp3", "test", False))
    ds.write_manifest(data_dir, records, np.zeros((len(records), 502)), np.zeros((len(records), 32)))
    sound, texton = root / "sound", root / "texton"
    _tiny_run(sound, data_dir)
    _tiny_run(texton, data_dir, label_kind="texton", seed=1)
    return SimpleNamespace(world=world_dir, data=data_dir, sound=sound, texton=texton)


def test_world_tasks_read_scene_and_objects_from_the_truth(world):
    tasks = probe.world_tasks(world.data, world.world)
    assert len(tasks.image_paths) == 96 and tasks.object_names == ["dog"]
    assert tasks.scenes[:8].tolist() == [0] * 4 + [1] * 4
    assert tasks.objects[:, 0].tolist() == [v % 2 == 0 for v in range(24) for _ in range(4)]
    splits = probe.video_splits(tasks.videos, FAST)
    for train, test in splits:
        assert not set(tasks.videos[train]) & set(tasks.videos[test])


def test_probe_world_command_writes_the_table_for_the_app(world):
    result = CliRunner().invoke(app, ["probe", str(world.sound), "--world", str(world.world),
                                      "--compare", str(world.texton), "--layers", "max5,fc7", "--device", "cpu",
                                      "--jobs", "2"])
    assert result.exit_code == 0, result.output
    assert "| sound (cluster) (k=4) |" in result.output and "| untrained |" in result.output
    saved = json.loads(probe_file(world.sound, "world").read_text())
    assert read_probes(world.sound) == [saved]
    assert [n["name"] for n in saved["networks"]] == ["sound (cluster)", "untrained", "texton"]
    assert saved["layers"] == ["max5", "fc7"] and [t["task"] for t in saved["tasks"]] == ["scene", "objects"]
    for network in saved["networks"]:
        for task in ("scene", "objects"):
            for layer in ("max5", "fc7"):
                cell = network["results"][task][layer]
                assert 0.0 <= cell["score"] <= 1.0 and len(cell["splits"]) == PROBE.splits
    # The scene is the frame's colour: any network's pooled conv5 tells three colours apart.
    assert saved["networks"][0]["results"]["scene"]["max5"]["score"] > 0.9
    assert set(saved["networks"][0]["results"]["objects"]["max5"]["per_class"]) == {"dog"}


def test_probe_voc_and_imagefolder_end_to_end(tmp_path, world):
    network = probe.load_probed(world.sound)
    voc = probe.probe_voc2007([network], make_voc(tmp_path / "VOC2007"), ("max5",), settings=FAST)
    cell = voc["networks"][0]["results"]["classification"]["max5"]
    assert voc["dataset"] == "VOC2007" and voc["format"] == "voc2007"
    assert list(cell["per_class"]) == list(probe.VOC_CLASSES) and 0 <= cell["score"] <= 1
    folder = tmp_path / "scenes"
    for c, colour in enumerate([(250, 0, 0), (0, 250, 0), (0, 0, 250)]):
        for i in range(8):
            _jpeg(folder / f"class{c}" / f"{i}.jpg", tuple(max(0, x - 8 * i) for x in colour))
    result = probe.probe_imagefolder([network], folder, ("max5",), per_class=4, splits=2, settings=FAST)
    cell = result["networks"][0]["results"]["classification"]["max5"]
    assert result["tasks"][0]["chance"] == pytest.approx(1 / 3) and len(cell["splits"]) == 2
    assert cell["score"] > 0.9


def test_probe_command_refuses_bad_arguments(world, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["probe", str(world.sound)])
    assert result.exit_code != 0 and "--world" in result.output
    result = runner.invoke(app, ["probe", str(world.sound), "--dataset", str(tmp_path), "--format", "coco"])
    assert result.exit_code != 0 and "coco" in result.output
    result = runner.invoke(app, ["probe", str(world.sound), "--world", str(world.world), "--layers", "conv9"])
    assert result.exit_code != 0 and "conv9" in result.output
    result = runner.invoke(app, ["probe", str(tmp_path), "--world", str(world.world), "--data", str(world.data)])
    assert result.exit_code == 1 and "ambient train" in result.output
