"""CaffeNet-BN: layer shapes, named layers, and loading a run back with load_run."""
import json

import pytest
import torch

from model.network.caffenet import LAYERS, CaffeNetBN, pool5_size
from model.network.run import CHECKPOINT, FINAL_MODEL, RunInfo, load_run, save_atomic


def test_paper_geometry_at_227():
    model = CaffeNetBN(30).eval()
    x = torch.randn(2, 3, 227, 227)
    shapes = {name: tuple(model.forward_features(x, name).shape) for name in ("conv1", "conv5", "pool5", "fc6", "fc7")}
    assert shapes == {"conv1": (2, 96, 55, 55), "conv5": (2, 256, 13, 13), "pool5": (2, 256, 6, 6),
                      "fc6": (2, 4096), "fc7": (2, 4096)}
    assert model(x).shape == (2, 30)
    assert model.conv2[0].groups == 2 and model.conv4[0].groups == 2 and model.conv5[0].groups == 2
    assert model.conv3[0].groups == 1
    # Batch norm follows every conv and fc layer.
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"):
        assert any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)) for m in getattr(model, name))


def test_small_inputs_and_errors():
    assert pool5_size(227) == 6 and pool5_size(128) == 2 and pool5_size(67) == 1
    model = CaffeNetBN(5, input_size=67, fc_width=16).eval()
    assert model(torch.randn(1, 3, 67, 67)).shape == (1, 5)
    with pytest.raises(ValueError, match="too small"):
        CaffeNetBN(5, input_size=60)
    with pytest.raises(ValueError, match="unknown layer"):
        model.forward_features(torch.randn(1, 3, 67, 67), "conv6")
    assert LAYERS[-1] == "output"


def _info(**overrides) -> RunInfo:
    values = dict(label_kind="cluster", num_outputs=4, multilabel=False, frame_size=80, crop_size=67, fc_width=16,
                  mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    return RunInfo(**{**values, **overrides})


@pytest.mark.parametrize("file", [FINAL_MODEL, CHECKPOINT])
def test_load_run_round_trip(tmp_path, file):
    info = _info()
    model = info.build_model().eval()
    save_atomic({"model": model.state_dict(), "run": json.loads(json.dumps(info.__dict__)), "step": 3}, tmp_path / file)
    loaded, loaded_info = load_run(tmp_path, "cpu")
    assert loaded_info == info and not loaded.training
    images = torch.randint(0, 256, (2, 3, 256, 256), dtype=torch.uint8)
    prepared = info.prepare_images(images)
    assert prepared.shape == (2, 3, 67, 67)
    torch.testing.assert_close(loaded(prepared), model(prepared))


def test_load_run_without_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="ambient train"):
        load_run(tmp_path)
