"""Switching units off (model/units/nethook.py, model/units/ablate.py, `ambient ablate`): a hand-made network whose
answer is known, the JSON a run gets, and bad input."""
import json
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from backend.cli import app
from model.units import ablate as ab
from model.data import dataset as ds
from model.units.nethook import ablation_mask, check_layer, edit_layer, edited, run_until, split_at
from model.network.run import ablation_file, write_run_json
from test_units import make_pool

CLASSES = 3


def hand_made() -> nn.Sequential:
    """Input (N, 3, 1, 1) copied to 3 hidden units; class c's logit is 5 x unit c, class 2's has a bias 0.5.

    With unit 0 off a class-0 frame has logits (0, 0, 0.5): it becomes class 2. Nothing else changes, as
    unit 0 is 0 on the other classes' frames. So unit 0 is needed for class 0 only.
    """
    hidden = nn.Conv2d(3, 3, 1, bias=False)
    output = nn.Linear(3, CLASSES)
    with torch.no_grad():
        hidden.weight.copy_(torch.eye(3)[:, :, None, None])
        output.weight.copy_(5 * torch.eye(3))
        output.bias.copy_(torch.tensor([0.0, 0.0, 0.5]))
    return nn.Sequential(OrderedDict(hidden=hidden, relu=nn.ReLU(), flatten=nn.Flatten(), output=output)).eval()


def frames_of(classes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.zeros(len(classes), 3, 1, 1)
    x[torch.arange(len(classes)), torch.tensor(classes)] = 1.0
    return x, torch.tensor(classes)


def batches(network, classes, heard=None):
    split = split_at(network, "relu")
    x, targets = frames_of(classes)
    groups = {} if heard is None else {"dog": np.array([c in heard for c in classes])}
    return split, [(split.trunk(x), targets, groups)]


def test_ablating_the_unit_one_class_needs_drops_that_class_only():
    network = hand_made()
    classes = [0, 0, 1, 1, 1, 2, 2]
    split, data = batches(network, classes, heard={0})          # "dog" is heard on class 0's frames
    result = ab.measure_ablations(split.head, data, [ab.UnitSet((0,), "dog")], 3, CLASSES, False, repeats=4,
                                  truth=True)
    assert result["baseline"]["per_label"] == [1.0, 1.0, 1.0]
    ablation = result["ablations"][0]
    assert ablation["per_label"] == [0.0, 1.0, 1.0]                                  # class 0 only
    assert ablation["accuracy"] == pytest.approx(5 / 7)
    assert ablation["true_probability"] < result["baseline"]["true_probability"]
    assert ablation["units"] == [0] and ablation["category"] == "dog"
    # The random control draws other units only: unit 1 costs class 1's 3 frames, unit 2 nothing.
    random = ablation["random"]
    assert random["repeats"] == 4 and 4 / 7 <= random["accuracy"] <= 1.0 and random["accuracy_std"] >= 0
    truth = ablation["truth"]
    assert truth["own_frames"] == 2 and truth["other_frames"] == 5
    assert truth["own_drop"] > 0.5 and truth["other_drop"] == pytest.approx(0.0, abs=1e-6)
    assert truth["own_drop_random"] == pytest.approx(0.0, abs=1e-6)            # units 1, 2 are 0 on its frames


def test_each_unit_alone_and_the_hook_agree_with_the_split():
    network = hand_made()
    classes = [0, 1, 2, 2]
    split, data = batches(network, classes)
    result = ab.measure_ablations(split.head, data, [ab.UnitSet((1, 2))], 3, CLASSES, False, repeats=1,
                                  each_unit=True)
    assert "truth" not in result["ablations"][0]
    assert [u["per_label"] for u in result["single_units"]] == [[0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 1.0]]
    # Each unit helps predict its own class only; unit 2's class keeps its accuracy but loses probability.
    helps, depends = ab.single_unit_links(result)
    assert {unit: [h["index"] for h in links] for unit, links in helps.items()} == {0: [0], 1: [1], 2: [2]}
    assert helps[2][0]["drop"] == 0.0 and helps[2][0]["probability_drop"] > 0.5
    assert {label: [d["unit"] for d in links] for label, links in depends.items()} == {0: [0], 1: [1], 2: [2]}
    # The context-managed hook edits the full forward pass exactly as the split's head sees the edit.
    x, _ = frames_of(classes)
    mask = ablation_mask([0, 2], 3)
    with edit_layer(network, "relu", mask):
        hooked = network(x)
    torch.testing.assert_close(hooked, split.head(edited(split.trunk(x), mask)))
    torch.testing.assert_close(network(x), split.head(split.trunk(x)))     # the hook is gone after the context
    torch.testing.assert_close(run_until(network, "relu", x), split.trunk(x))


def test_binary_codes_are_measured_per_bit():
    logits = torch.tensor([[2.0, -2.0], [2.0, 2.0]])
    correct, probability = ab.outcomes(logits, torch.tensor([[1.0, 0.0], [0.0, 1.0]]), multilabel=True)
    assert correct.tolist() == [[True, True], [False, True]]
    assert probability[0].tolist() == pytest.approx([torch.sigmoid(torch.tensor(2.0)).item()] * 2)


def test_bad_layers_units_and_categories_are_named():
    network = hand_made()
    with pytest.raises(ValueError, match="no layer 'conv9'; it has hidden, relu, flatten, output"):
        check_layer(network, "conv9")
    with pytest.raises(ValueError, match=r"units 3, 7 out of range: the layer has 3 units \(0-2\)"):
        ablation_mask([0, 3, 7], 3)
    labels = [{"unit": 0, "category": "dog", "precision": 0.7, "layer": "conv5"},
              {"unit": 1, "category": "dog", "precision": 0.9, "layer": "conv5"},
              {"unit": 2, "category": "tree", "precision": 0.8, "layer": "conv5"},
              {"unit": 3, "category": "car", "precision": 0.3, "layer": "conv5"}]
    assert ab.detector_sets(labels, "conv5") == [ab.UnitSet((0, 1), "dog"), ab.UnitSet((2,), "tree")]
    with pytest.raises(ValueError, match="unknown category 'unicorn'; the categories are .*waterfall"):
        ab.detector_sets(labels, "conv5", "unicorn")
    with pytest.raises(ValueError, match=r"no car detectors; categories with detectors: dog \(2\), tree \(1\)"):
        ab.detector_sets(labels, "conv5", "car")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny CaffeNet run on 24 frames (20 test), with cluster labels and a hand-written dissection."""
    pool = make_pool(tmp_path_factory.mktemp("ablate"), 24, 20)
    labels = np.array([i % 4 for i in range(24)])
    (pool.data / "labels").mkdir(exist_ok=True)
    np.savez(ds.labels_file(pool.data, "cluster"), kind="cluster", labels=labels,
             keep=np.array([i >= 20 for i in range(24)]), k=4)
    write_run_json(pool.run, pool.info, {"data_dir": str(pool.data)})
    (pool.run / "dissection.json").write_text(json.dumps(
        [{"unit": u, "category": "dog" if u < 3 else None, "precision": 0.8 if u < 3 else 0.0, "iou": 0.1,
          "sounding": True, "layer": "conv5"} for u in range(256)]))
    return pool


def test_ablate_writes_the_run_s_json_and_refuses_bad_input(run, monkeypatch):
    runner = CliRunner()
    # The world's truth: "dog" is heard on the frames of cluster 0 (every 4th frame).
    monkeypatch.setattr(ab, "heard_reader", lambda data_dir: lambda r: ["dog"] if r.frame_id % 4 == 0 else [])
    result = runner.invoke(app, ["ablate", str(run.run), "--category", "dog", "--repeats", "3", "--device", "cpu",
                                 "--no-publish", "--each-unit"])
    assert result.exit_code == 0, result.output
    saved = json.loads(ablation_file(run.run, "conv5").read_text())
    assert set(saved["baseline"]) == {"accuracy", "per_label", "true_probability", "per_label_probability"}
    assert len(saved["baseline"]["per_label"]) == 4
    assert saved["test_frames"] == 20 and saved["world_truth"] is True
    (ablation,) = saved["ablations"]
    assert ablation["units"] == [0, 1, 2] and ablation["category"] == "dog"
    assert {"accuracy", "per_label", "random", "truth"} <= set(ablation)
    assert set(ablation["random"]) >= {"accuracy", "accuracy_std"}
    assert ablation["truth"]["own_frames"] == 5 and ablation["truth"]["other_frames"] == 15
    assert {"own_drop", "own_drop_random", "other_drop"} <= set(ablation["truth"])
    assert len(saved["single_units"]) == 256

    result = runner.invoke(app, ["ablate", str(run.run), "--units", "3,17", "--device", "cpu", "--no-publish"])
    assert result.exit_code == 0, result.output
    assert json.loads(ablation_file(run.run, "conv5").read_text())["ablations"][0]["units"] == [3, 17]
    for argv, message in ((["--units", "3,256"], "unit 256 out of range: the layer has 256 units (0-255)"),
                          (["--category", "unicorn"], "unknown category 'unicorn'"),
                          (["--category", "car"], "no car detectors; categories with detectors: dog (3)"),
                          (["--layer", "conv9"], "no layer 'conv9'; it has conv1, pool1"),
                          (["--layer", "conv4"], "labels the units of conv5, not conv4")):
        result = runner.invoke(app, ["ablate", str(run.run), *argv, "--device", "cpu", "--no-publish"])
        assert result.exit_code == 1 and message in result.output, (argv, result.output)
