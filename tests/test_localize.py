"""Localisation against the world's truth (model/units/localize.py, `ambient localize`): the scores of hand-made
heatmaps and networks, the frames that are negatives, the heatmap methods, bad input and the command end to end."""
import json
from collections import OrderedDict
from dataclasses import asdict
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from backend.cli import app
from model.data import dataset as ds
from model.network.caffenet import IMAGE_MEAN, IMAGE_STD, CaffeNetBN
from model.network.run import FINAL_MODEL, RunInfo, localization_file, write_run_json
from model.units import localize as lo
from model.units.predict import class_weights, heatmap, upsample_heat
from model.world.truth import SUMMARY, FrameTruth, ObjectTruth, frame_truth, write_truth

FRAME, CROP = 80, 67
SIZE = 48


def _box(top, left, height, width, size=SIZE):
    mask = np.zeros((size, size), bool)
    mask[top:top + height, left:left + width] = True
    return mask


def test_a_heatmap_that_is_the_mask_scores_ciou_1_and_pointing_1():
    mask = _box(5, 30, 12, 10)
    assert lo.frame_ciou(mask.astype(float), mask) == 1.0 and lo.pointing_hit(mask.astype(float), mask)
    assert lo.summarize([1.0, 1.0], [True, True]) == {"ciou": 1.0, "auc": 1.0, "pointing": 1.0, "mean_ciou": 1.0,
                                                      "frames": 2}
    # The median threshold: a map that is high over the whole left half binarises to the left half.
    left = np.zeros((SIZE, SIZE))
    left[:, :SIZE // 2] = 1.0
    assert lo.frame_ciou(left, mask) == 0.0 and not lo.pointing_hit(left, mask)
    assert not lo.pointing_hit(np.zeros((SIZE, SIZE)), np.ones((SIZE, SIZE), bool))     # zeros point nowhere
    assert lo.summarize([0.0, 1.0], [False, True], peaks=[0.0, 2.0])["blank"] == 0.5
    # AUC: the share of frames at or above each cIoU threshold 0, 0.05, ..., 1 (1, then 0.5 up to 0.5, then 0),
    # integrated by trapezoids.
    half = lo.summarize([0.5, 0.0], [True, False])
    assert half["ciou"] == 0.5 and half["pointing"] == 0.5
    assert half["auc"] == pytest.approx((1 + 0.5) / 2 * 0.05 + 0.5 * 0.45 + 0.5 / 2 * 0.05)


class RedFeatures(nn.Module):
    """A hand-made network: its layer ``features`` is 1 where the picture is pure red, the head averages it."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(OrderedDict(
            features=nn.Conv2d(3, 1, 1), relu=nn.ReLU(), pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(),
            output=nn.Linear(1, 2)))
        with torch.no_grad():
            self.net.features.weight.copy_(torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1))
            self.net.features.bias.zero_()
            self.net.output.weight.fill_(1.0)

    def forward(self, x):
        return self.net(x)


class CentreFeatures(nn.Module):
    """A hand-made network whose layer ``features`` is the centre prior, whatever the picture."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.features = nn.Identity()
        self.output = nn.Linear(1, 2)
        with torch.no_grad():
            self.output.weight.fill_(1.0)
        self.prior = torch.from_numpy(lo.center_prior(SIZE)).float()

    def forward(self, x):
        maps = self.features(self.scale * self.prior.expand(len(x), 1, SIZE, SIZE))
        return self.output(maps.mean(dim=(2, 3)))


def _pictures(masks):
    pictures = torch.full((len(masks), 3, SIZE, SIZE), 0.5)
    for i, mask in enumerate(masks):
        pictures[i, :, torch.from_numpy(mask)] = torch.tensor([1.0, 0.0, 0.0])[:, None]
    return pictures


def test_hand_made_networks_heatmaps_score_as_their_maps_do():
    masks = [_box(5, 30, 12, 10), _box(20, 2, 20, 8), _box(18, 18, 12, 12), _box(30, 30, 10, 18)]
    target = torch.tensor([[1.0, 0.0]] * len(masks))
    red = upsample_heat(heatmap(RedFeatures(), "net.relu", _pictures(masks), target, "gradcam"), SIZE).numpy()
    for heat, mask in zip(red, masks):
        assert lo.frame_ciou(heat, mask) == 1.0 and lo.pointing_hit(heat, mask)
    centre = upsample_heat(heatmap(CentreFeatures(), "features", _pictures(masks), target, "gradcam"), SIZE).numpy()
    prior = lo.center_prior(SIZE)
    network = lo.summarize([lo.frame_ciou(h, m) for h, m in zip(centre, masks)],
                           [lo.pointing_hit(h, m) for h, m in zip(centre, masks)])
    assert network == lo.summarize([lo.frame_ciou(prior, m) for m in masks], [lo.pointing_hit(prior, m) for m in masks])
    assert network["pointing"] == 0.25          # only the mask over the centre holds the peak


def test_cam_weights_are_the_heads_linear_map_summed_over_pool5():
    torch.manual_seed(0)
    model = CaffeNetBN(3, input_size=CROP, fc_width=8).eval()
    for norm in (model.fc6[1], model.fc7[1]):
        norm.running_var.uniform_(0.5, 2.0)
        norm.weight.data.uniform_(0.5, 1.5)
    cells = model.pool5(model.forward_features(torch.zeros(1, 3, CROP, CROP), "conv5")).shape[-1] ** 2

    def linear_head(pool5):     # the head without its ReLUs, batch norm's scale only
        x = pool5.flatten(1)
        for block in (model.fc6, model.fc7):
            norm = block[1]
            x = block[0](x) * norm.weight / torch.sqrt(norm.running_var + norm.eps)
        return model.output(x) - model.output.bias

    weights = class_weights(model)
    with torch.no_grad():
        for unit in (0, 7, 255):
            pool5 = torch.zeros(1, 256, int(cells ** 0.5), int(cells ** 0.5))
            pool5[0, unit] = 1.0
            torch.testing.assert_close(weights[:, unit], linear_head(pool5)[0], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="CAM heatmap needs our CaffeNet's conv5"):
        heatmap(RedFeatures(), "net.relu", torch.zeros(1, 3, SIZE, SIZE), torch.ones(1, 2), "cam")
    with pytest.raises(ValueError, match="unknown heatmap method 'lime'; choose one of gradcam, cam, activation"):
        heatmap(RedFeatures(), "net.relu", torch.zeros(1, 3, SIZE, SIZE), torch.ones(1, 2), "lime")


def _truth(objects, audible):
    return FrameTruth("park", objects, audible)


def test_a_source_off_screen_or_outside_the_crop_is_a_negative_not_a_miss():
    dog = np.zeros((64, 80), bool)
    dog[10:50, 30:50] = True
    edge = np.zeros((64, 80), bool)
    edge[10:50, 0:4] = True            # in the video, but the centre crop cuts it off
    tree = np.zeros((64, 80), bool)
    tree[40:60, 50:70] = True
    heard = lo.crop_truth(_truth([ObjectTruth("dog", True, dog, True)], ["dog"]), FRAME, CROP)
    assert heard.kind == "visible" and heard.categories == ["dog"] and heard.sources.sum() > 100
    offscreen = lo.crop_truth(_truth([ObjectTruth("tree", False, tree)], ["bird"]), FRAME, CROP)
    assert offscreen.kind == "offscreen" and offscreen.categories == [] and offscreen.silent.any()
    cut = lo.crop_truth(_truth([ObjectTruth("dog", True, edge, True)], ["dog"]), FRAME, CROP)
    assert cut.kind == "offscreen" and not cut.sources.any()
    quiet = lo.crop_truth(_truth([ObjectTruth("dog", True, dog, False)], []), FRAME, CROP)
    assert quiet.kind == "silent" and quiet.silent.any()       # a dog that is not barking now is a silent object
    assert lo.crop_truth(_truth([], []), FRAME, CROP).kind == "empty"


# --- A tiny world, its data and a run, end to end

def _world(root, name="world", videos=8, seed=0):
    """Videos whose dog (the middle of the picture) is heard (v % 4 == 0), whose sound is a bird off screen (1),
    that are quiet (2), or whose heard dog stands at the picture's edge, outside the network's crop (3)."""
    world = root / name
    (world / "truth").mkdir(parents=True)
    (world / SUMMARY).write_text(json.dumps({"seed": seed, "videos": videos}))
    for v in range(videos):
        masks = np.zeros((2, 64, 80), bool)
        masks[0, 10:50, 0:4] = v % 4 == 3
        masks[0, 10:50, 30:50] = v % 4 != 3
        masks[1, 40:60, 50:70] = True
        sounds = {0: [{"category": "dog", "object": 0, "on_screen": True, "intervals": [[0.0, 6.0]]}],
                  1: [{"category": "bird", "object": None, "on_screen": False, "intervals": [[0.0, 6.0]]}],
                  2: [],
                  3: [{"category": "dog", "object": 0, "on_screen": True, "intervals": [[0.0, 6.0]]}]}[v % 4]
        record = {"scene": "park", "duration": 6.0, "fps": 10, "width": 80, "height": 64,
                  "camera": {"canvas_width": 80, "x_start": 0, "x_end": 0},
                  "objects": [{"id": 0, "category": "dog", "sounding": True, "mask": 0},
                              {"id": 1, "category": "tree", "sounding": False, "mask": 1}], "sounds": sounds}
        write_truth(world, f"world_{v:05d}", record, masks)
    return world


def _data(root, world, videos=8, name="data"):
    data = root / name
    records = []
    for v in range(videos):
        stem = f"world_{v:05d}"
        (data / "videos" / stem).mkdir(parents=True, exist_ok=True)
        for f in range(2):
            pixels = np.full((64, 80, 3), 90, np.uint8)
            pixels[10:50, 30:50] = (200, 60, 40)
            image = f"videos/{stem}/frame_{f:02d}.jpg"
            Image.fromarray(np.array(Image.fromarray(pixels).resize((FRAME, FRAME)))).save(data / image, quality=95)
            records.append(ds.FrameRecord(len(records), stem, f"{stem}.mp4", f, 2.0 + f, image,
                                          f"videos/{stem}/clip_{f:02d}.mp3", "test" if v < 4 else "train", False))
    ds.write_manifest(data, records, np.zeros((len(records), 502)), np.zeros((len(records), 32)))
    ds.write_json_atomic(data / ds.REPORT, {"videos_dir": str(world / "videos") if world else None,
                                            "ingested": [], "skipped": []})
    (data / "labels").mkdir()
    np.savez(ds.labels_file(data, "cluster"), kind="cluster", labels=np.arange(len(records)) % 4,
             keep=np.array([r.split == "train" for r in records]), k=4)
    return data


def _run(run_dir, data, seed=3):
    run_dir.mkdir()
    info = RunInfo("cluster", 4, False, FRAME, CROP, 16, IMAGE_MEAN, IMAGE_STD)
    torch.manual_seed(100)
    torch.save({"model": info.build_model().eval().state_dict(), "run": asdict(info), "step": 0}, run_dir / FINAL_MODEL)
    write_run_json(run_dir, info, {"config": {"epochs": 1, "seed": seed}, "data_dir": str(data), "preset": "tiny"})
    return run_dir


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("localize")
    world = _world(root)
    data = _data(root, world)
    return SimpleNamespace(root=root, world=world, data=data, run=_run(root / "run", data))


def test_the_truth_marks_the_objects_heard_now(tiny):
    heard = frame_truth(tiny.world, "world_00000.mp4", 2.0)
    assert [(o.category, o.audible) for o in heard.objects] == [("dog", True), ("tree", False)]
    assert [o.audible for o in frame_truth(tiny.world, "world_00001.mp4", 2.0).objects] == [False, False]


def test_localize_command_writes_the_figures_and_counts_the_negatives(tiny):
    result = CliRunner().invoke(app, ["localize", str(tiny.run), "--device", "cpu", "--no-publish"])
    assert result.exit_code == 0, result.output
    assert "| all | 2 |" in result.output and "sound pointing" in result.output and "untrained" in result.output
    saved = json.loads(localization_file(tiny.run).read_text())
    # Test videos 0-3, two frames each: one video heard in view; one off screen and one outside the crop; one quiet.
    assert saved["kinds"] == {"visible": 2, "offscreen": 4, "silent": 2, "empty": 0}
    assert saved["overall"]["frames"] == 2 and set(saved["per_category"]) == {"dog"}
    assert set(saved["overall"]) == {"ciou", "auc", "pointing", "mean_ciou", "frames", "blank"}
    assert set(saved["baselines"]) == {"center", "untrained"}
    assert saved["baselines"]["center"]["overall"]["pointing"] == 1.0      # the dog stands in the middle
    assert saved["negatives"]["offscreen"]["frames"] == 4 and saved["negatives"]["silent"]["frames"] == 2
    assert saved["negatives"]["visible"]["frames"] == 2
    assert set(saved["methods"]["sound"]) == {"gradcam", "cam", "activation"}
    assert saved["examples"] and saved["examples"][0]["png"].startswith("data:image/png;base64,")
    printed = CliRunner().invoke(app, ["localize", str(tiny.run), "--device", "cpu", "--no-publish", "--json",
                                       "--split", "all"])
    assert printed.exit_code == 0, printed.output
    assert json.loads(printed.output)["kinds"]["visible"] == 4


def test_the_scene_control_is_scored_on_the_same_frames(tiny):
    records = ds.load_manifest(tiny.data)
    np.savez(ds.labels_file(tiny.data, "scene"), labels=np.arange(len(records)) % 6, keep=np.ones(len(records), bool),
             k=6, names=np.array([f"scene{i}" for i in range(6)]))
    scene = tiny.root / "scene"
    scene.mkdir()
    info = RunInfo("scene", 6, False, FRAME, CROP, 16, IMAGE_MEAN, IMAGE_STD)
    torch.save({"model": info.build_model().eval().state_dict(), "run": asdict(info), "step": 0}, scene / FINAL_MODEL)
    write_run_json(scene, info, {"config": {"epochs": 1, "seed": 0}, "data_dir": str(tiny.data)})
    result = CliRunner().invoke(app, ["localize", str(tiny.run), "--scene-run", str(scene), "--device", "cpu",
                                      "--no-publish"])
    assert result.exit_code == 0, result.output
    assert "scene pointing" in result.output and "heatmap methods, pointing / AUC: sound: gradcam" in result.output
    saved = json.loads(localization_file(tiny.run).read_text())
    assert list(saved["baselines"]) == ["center", "untrained", "scene"]
    assert saved["baselines"]["scene"]["overall"]["frames"] == saved["overall"]["frames"] == 2
    assert set(saved["methods"]) == {"sound", "untrained", "scene"}


def test_the_untrained_baseline_is_the_architecture_at_the_runs_seed(tiny, monkeypatch):
    built = []
    original = RunInfo.build_model

    def recording(self):
        built.append(torch.initial_seed())
        return original(self)

    monkeypatch.setattr(RunInfo, "build_model", recording)
    lo.localize_run(tiny.run, show_progress=False)
    assert built[-1] == 3


def test_bad_input_is_named(tiny, tmp_path):
    runner = CliRunner()
    plain = _run(tmp_path / "plain-run", _data(tmp_path, None))
    result = runner.invoke(app, ["localize", str(plain), "--device", "cpu", "--no-publish"])
    assert result.exit_code == 1
    assert "was not ingested from a generated world" in result.output and "ambient predict" in result.output
    other = _world(tmp_path, "other", videos=2, seed=9)
    result = runner.invoke(app, ["localize", str(tiny.run), "--world", str(other), "--no-publish"])
    assert result.exit_code == 1 and f"{other} does not match {tiny.data}" in result.output
    assert "world_00002.mp4" in result.output
    copy = _world(tmp_path, "copy", videos=8, seed=1)       # every video's truth, but another world.json
    result = runner.invoke(app, ["localize", str(tiny.run), "--world", str(copy), "--no-publish"])
    assert result.exit_code == 1 and f"ingested from {tiny.world}" in result.output
    result = runner.invoke(app, ["localize", str(tmp_path), "--no-publish"])
    assert result.exit_code == 1 and "not a trained run" in result.output
    result = runner.invoke(app, ["localize", str(tiny.run), "--split", "val"])
    assert result.exit_code != 0 and "--split" in result.output
    result = runner.invoke(app, ["localize", str(tiny.run), "--scene-run", str(plain), "--no-publish"])
    assert result.exit_code == 1 and f"was trained on {plain.parent / 'data'}" in result.output


def test_the_api_and_the_results_page_give_a_published_localization(tiny, tmp_path):
    from fastapi.testclient import TestClient
    from sqlalchemy import select

    from app_helpers import add_user, login, seed_run
    from backend.app import create_app
    from backend.config import Settings
    from backend.db import store
    from backend.db.models import Run
    from backend.db.session import session_factory, upgrade_db
    from backend.publish import _publish_analyses
    from model.network.run import RunFolder

    lo_result = lo.localize_run(tiny.run, show_progress=False)
    ds.write_json_atomic(localization_file(tiny.run), lo_result)
    url = seed_run(tmp_path)
    add_user(url, "ann")
    add_user(url, "boss", is_admin=True)
    sessions = session_factory(upgrade_db(url))
    with sessions.begin() as db:
        plain = db.scalar(select(Run)).id
        localized = store.upsert_run(db, tiny.run, "caffenet-bn", "cluster", {}, None, name="world-run").id
    _publish_analyses(sessions, RunFolder(tiny.run), [])          # what `ambient publish` stores of the run
    with TestClient(create_app(Settings(database_url=url))) as client:
        login(client, "ann")
        assert client.get(f"/api/v1/runs/{localized}/localization").status_code == 403
    with TestClient(create_app(Settings(database_url=url))) as client:
        login(client, "boss")
        response = client.get(f"/api/v1/runs/{localized}/localization")
        assert response.status_code == 200 and response.json() == json.loads(json.dumps(lo_result))
        missing = client.get(f"/api/v1/runs/{plain}/localization")
        assert missing.status_code == 404 and "ambient localize RUN_DIR" in missing.text
        page = client.get("/results").text
        assert "Where the sound comes from" in page and f'id="localization-{localized}"' in page
        assert f'id="localization-{plain}"' not in page
        assert page.count('src="data:image/png;base64,') == len(lo_result["examples"])
        assert "| untrained" not in page and "<th>untrained pointing</th>" in page


def test_listen_shows_a_world_frames_truth_outline_beside_the_heatmap(tmp_path):
    import base64
    import io
    import re

    from fastapi.testclient import TestClient

    from app_helpers import login
    from backend.app import create_app
    from backend.config import Settings
    from listen_helpers import make_listen_run

    run = make_listen_run(tmp_path)
    app = create_app(Settings(database_url=run.url, data_roots=str(run.root)))
    with TestClient(app) as client:
        csrf = login(client, "ann")
        before = client.post(f"/runs/{run.run_id}/listen", data={"frame": "3", "csrf_token": csrf})
        assert before.status_code == 200 and 'id="heatmap"' in before.text and 'id="truth"' not in before.text
        # The same data, now ingested from a world: a heard dog in the middle, a silent tree at the bottom.
        world = tmp_path / "world"
        (world / "truth").mkdir(parents=True)
        (world / SUMMARY).write_text("{}")
        for v in range(6):
            masks = np.zeros((2, 112, 112), bool)
            masks[0, 30:80, 30:80] = True
            masks[1, 85:105, 20:60] = True
            write_truth(world, f"v{v}", {
                "scene": "park", "duration": 6.0, "fps": 10, "width": 112, "height": 112,
                "camera": {"canvas_width": 112, "x_start": 0, "x_end": 0},
                "objects": [{"id": 0, "category": "dog", "sounding": True, "mask": 0},
                            {"id": 1, "category": "tree", "sounding": False, "mask": 1}],
                "sounds": [{"category": "dog", "object": 0, "on_screen": True, "intervals": [[0.0, 6.0]]}]}, masks)
        ds.write_json_atomic(run.data / ds.REPORT, {"videos_dir": str(world / "videos"), "ingested": [], "skipped": []})
        after = client.post(f"/runs/{run.run_id}/listen", data={"frame": "3", "csrf_token": csrf})
        assert after.status_code == 200 and 'id="heatmap"' in after.text
        (encoded,) = re.findall(r'id="truth" class="heatmap" src="data:image/png;base64,([^"]+)"', after.text)
        truth = np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))).convert("RGB"))
        assert truth.shape == (99, 99, 3)                      # the network's crop, as the heatmap
        assert (truth == (0, 230, 0)).all(axis=2).sum() > 50 and (truth == (255, 255, 255)).all(axis=2).sum() > 20
        upload = io.BytesIO()
        Image.fromarray(np.full((112, 112, 3), 90, np.uint8)).save(upload, "PNG")
        uploaded = client.post(f"/runs/{run.run_id}/listen", data={"csrf_token": csrf},
                               files={"image": ("x.png", upload.getvalue(), "image/png")})
        assert uploaded.status_code == 200 and 'id="truth"' not in uploaded.text     # an upload has no truth
