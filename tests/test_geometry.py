"""Layer geometry measured from the network itself (issue 26): one colour detector saved by torch.jit.script,
torch.jit.trace and torch.export gives the same geometry and the same labels end to end, and a network
whose geometry cannot be measured is refused, not dissected."""
import json
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from app_helpers import database_url
from backend.cli import app
from backend.db.session import upgrade_db
from model.data import pool as pl
from model.units.activations import GeometryError, LayerGeometry, checked_geometry, layer_geometry, measure_geometry
from model.units.dissect import label_units, score_units, units_layer, upsample_maps
from model.units.nethook import run_until
from model.network.caffenet import CaffeNetBN
from model.network.run import dissection_scores_file, units_file
from model.units.segmentation import match_masks, read_classes
from model.settings import UNITS
from model.units.top_images import extract_units, load_network

SKY, BUILDING, ROAD, TREE = 1, 2, 3, 4          # label-map values; 0 is unlabelled
COLOURS = {SKY: (70, 130, 230), BUILDING: (160, 80, 60), ROAD: (110, 110, 110), TREE: (50, 140, 50)}
# avg-pool 8 (rf 8, offset 3.5), conv k4 s2 p1 (rf 8 + 3*8 = 32, offset 3.5 + 0.5*8 = 7.5), conv k2 s2
# (rf 32 + 16 = 48, offset 7.5 + 0.5*16 = 15.5): position i is centred on pixel 15.5 + 32 i.
DETECTOR = LayerGeometry(rf_size=48, stride=32, offset=15.5)


class ColourDetector(nn.Module):
    """Pooling and strided convolutions that average each colour, then a 1x1 convolution: unit 0 is blue minus
    red (sky), unit 1 red minus blue (building), unit 2 green minus the others (tree), unit 3 the opposite."""

    def __init__(self):
        super().__init__()
        self.pool = nn.AvgPool2d(8)
        self.down1 = nn.Conv2d(3, 3, 4, stride=2, padding=1, groups=3)
        self.down2 = nn.Conv2d(3, 3, 2, stride=2, groups=3)
        self.unit = nn.Conv2d(3, 4, 1)
        with torch.no_grad():
            self.down1.weight.fill_(1 / 16)
            self.down2.weight.fill_(1 / 4)
            weights = torch.tensor([[-1.0, 0, 1], [1, 0, -1], [-0.5, 1, -0.5], [0.5, -1, 0.5]])   # (units, RGB)
            self.unit.weight.copy_(weights[:, :, None, None])
            for conv in (self.down1, self.down2, self.unit):
                conv.bias.zero_()

    def detect(self, x):
        return self.unit(self.down2(self.down1(self.pool(x))))

    def forward(self, x):
        return self.detect(x)


def save_detector(folder, how, module=None):
    """The module (the detector by default) saved the three usual ways; returns its --model spec."""
    module = (module or ColourDetector()).eval()
    example = torch.randn(1, 3, 224, 224)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)        # torch deprecates both TorchScript exports
        if how == "script":
            torch.jit.script(module).save(str(folder / "script.pt"))
            return f"torchscript:{folder / 'script.pt'}"
        if how == "trace":
            torch.jit.trace(module, example).save(str(folder / "trace.pt"))
            return f"torchscript:{folder / 'trace.pt'}"
    torch.export.save(torch.export.export(module, (example,)), str(folder / "export.pt2"))
    return f"export:{folder / 'export.pt2'}"


HOWS = ("script", "trace", "export")


def unboxed(output: str) -> str:
    """A usage error's message without the box and line breaks typer draws around it."""
    return " ".join(output.replace("│", " ").split())


@pytest.fixture(scope="module")
def detectors(tmp_path_factory):
    folder = tmp_path_factory.mktemp("detectors")
    return {how: save_detector(folder, how) for how in HOWS}


@pytest.fixture(scope="module")
def street(tmp_path_factory):
    """Generated street scenes with their label maps: a blue sky rectangle anywhere above the road, a green tree,
    a red-brown building behind, so a unit's maps only land on its class when they are placed right."""
    root = tmp_path_factory.mktemp("street")
    images, masks = root / "images", root / "masks"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        label = np.full((256, 256), BUILDING, np.uint8)
        horizon = rng.integers(176, 208)
        label[horizon:] = ROAD
        top, left = rng.integers(0, horizon - 80), rng.integers(0, 256 - 96)
        if i % 4 == 0:          # sky in a quarter of the images: rare enough for Network Dissection's IoU
            label[top:top + rng.integers(48, 80), left:left + rng.integers(48, 96)] = SKY
        top, left = rng.integers(0, horizon - 40), rng.integers(0, 256 - 40)
        label[top:top + 40, left:left + 40] = TREE
        label[horizon - 2:horizon + 2] = 0                  # an unlabelled kerb: ignored
        image = np.zeros((256, 256, 3), np.int64)
        for value, colour in COLOURS.items():
            image[label == value] = colour
        image[label == 0] = COLOURS[ROAD]
        image = np.clip(image + rng.integers(-12, 12, image.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(images / f"street_{i:03d}.png")
        Image.fromarray(label).save(masks / f"street_{i:03d}.png")
    (root / "classes.csv").write_text("index,name,characteristic_sound\n1,sky,0\n2,building,0\n3,road,1\n4,tree,0\n")
    return images, masks, root / "classes.csv"


def test_the_three_exports_measure_the_detectors_geometry(detectors, tmp_path):
    geometries = {how: load_network(tmp_path, "conv5", spec).geometry for how, spec in detectors.items()}
    assert geometries == {how: DETECTOR for how in HOWS}
    # The arithmetic agrees where the file keeps its modules' attributes (script), and refuses, instead of
    # taking every layer as 1x1, where it does not (trace keeps only weights; export keeps no modules).
    assert layer_geometry(load_network(tmp_path, "conv5", detectors["script"]).module, None) == DETECTOR
    for how in ("trace", "export"):
        with pytest.raises(GeometryError):
            layer_geometry(load_network(tmp_path, "conv5", detectors[how]).module, None)


def test_the_measured_geometry_is_network_dissections_upsampling():
    """Network Dissection upsamples a map to the input (bilinear, the map stretched over the image). For the
    detector, whose 7 positions tile 224 pixels in steps of 32, that is exactly the measured geometry's rule."""
    detector = ColourDetector().eval()
    geometry = measure_geometry(detector, 224)
    maps = detector(torch.randn(2, 3, 224, 224)).flatten(0, 1)                  # (8, 7, 7)
    reference = nn.functional.interpolate(maps[:, None], size=224, mode="bilinear", align_corners=False)[:, 0]
    assert torch.allclose(upsample_maps(maps, geometry, 224), reference, atol=1e-5)
    shifted = LayerGeometry(geometry.rf_size, geometry.stride, geometry.offset + 8)
    assert not torch.allclose(upsample_maps(maps, shifted, 224), reference, atol=1e-2)


def test_measured_and_computed_geometry_agree_on_known_networks():
    from torchvision.models import alexnet

    caffe = CaffeNetBN(4, fc_width=8).eval()
    # CaffeNet's conv5 on the 99 px crops the units tests use: its 163 px field is measured on larger inputs.
    assert measure_geometry(lambda x: caffe.forward_features(x, "conv5"), 99) == LayerGeometry(163, 16, 17)
    assert layer_geometry(caffe, "conv5") == LayerGeometry(163, 16, 17)
    net = alexnet().eval()
    assert measure_geometry(lambda x: run_until(net, "features.10", x), 224) == layer_geometry(net, "features.10")


@pytest.fixture(scope="module")
def scores_by_how():
    return {}


@pytest.mark.parametrize("how", HOWS)
def test_the_detector_labels_sky_end_to_end_whichever_way_it_was_saved(how, detectors, street, scores_by_how,
                                                                        tmp_path):
    images, masks, classes = street
    run, url, runner = tmp_path / "run", database_url(tmp_path), CliRunner()
    upgrade_db(url)
    result = runner.invoke(app, ["units", str(run), "--pool", str(images), "--model", detectors[how], "--top", "4",
                                 "--batch-size", "16", "--device", "cpu", "--db", url])
    assert result.exit_code == 0, result.output
    assert "receptive field 48 px, stride 32 px, offset 15.5 px" in result.output
    # No --layer: the run holds one layer (the file's output), and dissect takes it.
    result = runner.invoke(app, ["dissect", str(run), "--masks", str(masks), "--classes", str(classes),
                                 "--device", "cpu", "--db", url])
    assert result.exit_code == 0, result.output
    assert "40 pool images with a label map" in result.output
    rows = json.loads((run / "dissection.json").read_text())
    assert [(r["layer"], r["unit"]) for r in rows] == [("output", unit) for unit in range(4)]
    # Both rules name each colour's class: the paper's (every top image's region shows it) and Network
    # Dissection's (the best IoU; for the rare sky above its 0.04 bar); no other class overlaps unit 0.
    assert [(r["category"], r["precision"]) for r in rows[:3]] == [("sky", 1.0), ("building", 1.0), ("tree", 1.0)]
    assert rows[0]["netdissect_category"] == "sky" and rows[0]["netdissect_iou"] > 0.08
    with np.load(dissection_scores_file(run, "output")) as scores:
        iou = scores["iou"]
    assert [int(np.argmax(iou[unit])) for unit in range(3)] == [SKY - 1, BUILDING - 1, TREE - 1]
    assert (iou[0, 1:] == 0).all()
    # The same network gives the same scores however it was saved.
    for other in scores_by_how.values():
        assert np.allclose(iou, other, atol=1e-6)
    scores_by_how[how] = iou


def test_a_units_file_placed_with_the_old_1x1_guess_is_not_dissected(detectors, street, tmp_path):
    """A traced network's units written before geometry was measured (every layer taken as 1x1): the
    dissection says its maps are misplaced instead of labelling them."""
    images, masks, classes = street
    run = tmp_path / "run"
    extract_units(run, images, replace(UNITS, top=4, batch_size=16, workers=0), model_spec=detectors["trace"],
                  show_progress=False)
    path = units_file(run, "output")
    with np.load(path) as data:
        arrays = {key: data[key] for key in data.files}
    meta = json.loads(str(arrays["meta"]))
    arrays["meta"] = np.array(json.dumps({**meta, "rf_size": 1.0, "stride": 1.0, "offset": 0.0}))
    np.savez(path, **arrays)
    result = CliRunner().invoke(app, ["dissect", str(run), "--masks", str(masks), "--classes", str(classes),
                                      "--device", "cpu", "--no-publish"])
    assert result.exit_code == 1 and "misplaced" in result.output and "stride 32 px" in result.output
    assert not (run / "dissection.json").exists()
    # What labelling it would have said (the answer): every unit "building", sky lost.
    records = pl.pool_records(meta["data_dir"], "all")
    old = {**meta, "rf_size": 1.0, "stride": 1.0, "offset": 0.0, "rf_radius": 0.2}
    scores = score_units(load_network(run, "conv5", detectors["trace"]), old, arrays["frame_ids"],
                         torch.from_numpy(arrays["maps"].astype(np.float32)), torch.from_numpy(arrays["thresholds"]),
                         records, match_masks(records, masks), read_classes(classes), replace(UNITS, workers=0))
    assert [label.category for label in label_units(scores)] == ["building"] * 4


class GlobalContext(ColourDetector):
    """Each position also sees the image's mean colour: every position depends on every pixel."""

    def forward(self, x):
        return self.detect(x) + x.mean(dim=(2, 3), keepdim=True).sum(dim=1, keepdim=True)


class Rounded(ColourDetector):
    """The input rounded first: no gradient reaches it."""

    def forward(self, x):
        return self.detect(torch.round(x * 4) / 4)


class Flipped(ColourDetector):
    """The map mirrored: position 0 sits on the image's right."""

    def forward(self, x):
        return self.detect(x).flip(-1)


@pytest.mark.parametrize("module,how,why", [
    (GlobalContext, "trace", "see (nearly) the whole"),
    (Rounded, "export", "does not depend on the input through gradients"),
    (Flipped, "export", "not evenly spaced in order along the image's columns"),
    (Flipped, "script", "not evenly spaced in order along the image's columns"),   # the arithmetic cannot save it
])
def test_a_network_whose_geometry_cannot_be_measured_is_refused(module, how, why, street, tmp_path):
    images, masks, classes = street
    spec = save_detector(tmp_path, how, module())
    run, runner = tmp_path / "run", CliRunner()
    result = runner.invoke(app, ["units", str(run), "--pool", str(images), "--model", spec, "--top", "4",
                                 "--device", "cpu", "--no-publish"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and why in result.output
    # Named: the model and layer, and that it is not dissected.
    assert spec.split(":", 1)[1] in result.output.replace("\n", "") and "layer output" in result.output
    assert "not dissected" in result.output
    assert not units_file(run, "output").exists()
    result = runner.invoke(app, ["dissect", str(run), "--masks", str(masks), "--classes", str(classes),
                                 "--no-publish"])
    assert result.exit_code == 2 and "no units to dissect" in unboxed(result.output)


def test_measurement_and_arithmetic_that_disagree_are_refused():
    detector = ColourDetector().eval()
    wrong = LayerGeometry(48, 32, 0)          # e.g. arithmetic that missed an asymmetric padding
    with pytest.raises(GeometryError, match="detector, layer output: the network measures .* but its modules'"):
        checked_geometry(detector, 224, lambda: wrong, "detector, layer output")
    assert checked_geometry(detector, 224, lambda: DETECTOR, "detector, layer output") == DETECTOR


def test_dissect_takes_the_layer_the_run_holds_or_lists_them(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(FileNotFoundError, match="no units to dissect"):
        units_layer(run, None)
    (run / "units_output.npz").write_bytes(b"")
    assert units_layer(run, None) == "output"
    with pytest.raises(FileNotFoundError, match="no units of layer 'conv5'; it holds those of output"):
        units_layer(run, "conv5")
    (run / "units_conv5.npz").write_bytes(b"")
    with pytest.raises(ValueError, match=r"2 layers \(conv5, output\): choose one with --layer"):
        units_layer(run, None)
    assert units_layer(run, "conv5") == "conv5"
    result = CliRunner().invoke(app, ["dissect", str(run), "--truth", "--no-publish"])
    assert result.exit_code == 2 and "conv5, output" in unboxed(result.output)
    assert "ambient units" not in unboxed(result.output)


def test_an_export_fixed_to_a_small_input_is_refused_and_a_dynamic_one_measured(tmp_path):
    """At 64x64 the detector's 2x2 positions all reach the image's borders; exported with a dynamic size, larger
    probes show its edges (the export's own input size is kept as the network's input)."""
    detector = ColourDetector().eval()
    torch.export.save(torch.export.export(detector, (torch.randn(1, 3, 64, 64),)), str(tmp_path / "fixed.pt2"))
    with pytest.raises(GeometryError, match="runs only on 64x64 inputs"):
        load_network(tmp_path, "conv5", f"export:{tmp_path / 'fixed.pt2'}")
    side = torch.export.Dim("side", min=2, max=64)
    program = torch.export.export(detector, (torch.randn(2, 3, 64, 64),),
                                  dynamic_shapes=({0: torch.export.Dim("batch", max=1024), 2: 32 * side, 3: 32 * side},))
    torch.export.save(program, str(tmp_path / "dynamic.pt2"))
    network = load_network(tmp_path, "conv5", f"export:{tmp_path / 'dynamic.pt2'}")
    assert (network.geometry, network.input_size, network.frame_size) == (DETECTOR, 224, 256)
    crops = torch.randint(0, 256, (3, 3, 224, 224), dtype=torch.uint8)
    assert network.activations(crops).shape == (3, 4, 7, 7)        # any batch size goes through at once
