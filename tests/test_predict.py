"""Hear an image: model/units/predict.py, `ambient predict`, POST /api/v1/runs/RUN/predict with a token, and
every bad upload (issue 29), on test_units' tiny network."""
from __future__ import annotations

import base64
import io
import json
import os
import struct
import tempfile
import zlib

import anyio
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from app_helpers import login
from backend.app import create_app
from backend.cli import app as cli
from backend.config import Settings
from listen_helpers import make_listen_run
from model.units import predict as pr
from model.data.media import write_video
from test_api_tokens import bearer, make_token

MAX_PIXELS = 40_000_000


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_listen_run(tmp_path_factory.mktemp("listen"))


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _photo(seed: int = 1, size=(160, 120)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose header says width x height (a decompression bomb's few bytes): a real 1x1 PNG, IHDR patched."""
    data = bytearray(_png(Image.new("L", (1, 1))))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr:ihdr + 17])))
    return bytes(data)


def _animated_gif() -> bytes:
    out = io.BytesIO()
    frames = [Image.new("RGB", (32, 32), c) for c in ("red", "blue", "green")]
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=100)
    return out.getvalue()


# --- The science

def test_grad_cam_is_the_gradient_weighted_conv5_maps_of_the_top_cluster(run):
    predictor = pr.load_predictor(run.run)
    frame = pr.image_frame(Image.open(run.data / run.records[5].image), predictor.frame_size)
    (result,) = pr.predict(predictor, frame[None])

    x = run.info.prepare_images(frame[None])
    maps = run.model.forward_features(x, "conv5").detach().requires_grad_()
    logits = run.model.output(run.model.fc7(run.model.fc6(torch.flatten(run.model.pool5(maps), 1))))
    top = int(logits.argmax())
    (gradient,) = torch.autograd.grad(logits[0, top], maps)
    cam = torch.relu((gradient.mean(dim=(2, 3), keepdim=True) * maps).sum(1, keepdim=True))
    cam = torch.nn.functional.interpolate(cam, size=(99, 99), mode="bilinear", align_corners=False)[0, 0]
    np.testing.assert_allclose(result.heatmap, (cam / cam.max()).detach().numpy(), atol=1e-4)

    probabilities = torch.softmax(logits, 1)[0].detach().numpy()
    assert [row["label"] for row in result.labels] == [f"Cluster {c + 1}" for c in np.argsort(-probabilities)]
    assert [row["probability"] for row in result.labels] == pytest.approx(sorted(probabilities, reverse=True), abs=1e-5)
    assert result.target == f"Cluster {top + 1}"
    np.testing.assert_allclose(result.texture, run.centroids[top], rtol=1e-6)    # the top cluster's centroid
    assert result.crop.shape == (99, 99, 3)


def test_firing_units_are_ranked_against_each_units_pool_level_and_labelled(run):
    predictor = pr.load_predictor(run.run)
    frame = pr.image_frame(_photo(), predictor.frame_size)
    (result,) = pr.predict(predictor, frame[None], top_units=6)
    with torch.no_grad():
        maxima = run.model.forward_features(run.info.prepare_images(frame[None]), "conv5").amax(dim=(2, 3))[0].numpy()
    relative = maxima / np.maximum(predictor.thresholds, 1e-6)
    assert [u["unit"] for u in result.units] == np.argsort(-relative, kind="stable")[:6].tolist()
    for unit in result.units:
        assert unit["activation"] == pytest.approx(maxima[unit["unit"]], rel=1e-4)
        assert unit["label"] == ("car" if unit["unit"] % 2 == 0 else None)    # dissection.json labels the even ones


def _analysed(folder, layer: str, model_spec: str, weights=None):
    """A folder as `ambient units --model` leaves it, reduced to what `load_predictor` reads: the units
    file's meta (extracting units for real takes minutes for a torchvision network on 2 shared cores)."""
    from model.network.run import save_npz_atomic, units_file
    folder.mkdir()
    save_npz_atomic(units_file(folder, layer), meta=json.dumps(
        {"layer": None if layer == "output" else layer, "model_spec": model_spec,
         "weights": None if weights is None else str(weights)}))
    return folder


def test_a_trunk_without_outputs_gets_units_and_where_its_layer_fires(tmp_path):
    trunk = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 11, 4), torch.nn.ReLU(), torch.nn.MaxPool2d(3, 2))
    torch.jit.script(trunk).save(str(tmp_path / "trunk.pt"))
    predictor = pr.load_predictor(_analysed(tmp_path / "analysis", "output", f"torchscript:{tmp_path / 'trunk.pt'}"))
    frame = pr.image_frame(_photo(), predictor.frame_size)
    (result,) = pr.predict(predictor, frame[None])
    assert result.labels == [] and result.target is None and result.texture is None
    assert [u["layer"] for u in result.units] == ["output"] * 5 and result.heatmap.shape == (224, 224)
    assert "not trained on sound" in result.texture_source
    with torch.no_grad():      # the heatmap is where the trunk's maps are strongest on average
        heat = trunk(pr.normalize_images(frame[None, :, 16:240, 16:240])).relu().mean(dim=1, keepdim=True)
        heat = torch.nn.functional.interpolate(heat, size=(224, 224), mode="bilinear", align_corners=False)[0, 0]
    np.testing.assert_allclose(result.heatmap, (heat / heat.max()).numpy(), atol=1e-4)


# --- Bad images (model/units/predict.py decode_image: shared by the CLI and the app)

@pytest.mark.parametrize("data, problem", [
    (b"", "empty"),
    (b"%PDF-1.4 not a picture at all", "not an image"),
    (_png(_photo())[:-2000], "truncated"),
    (_png_header_claiming(20_000, 20_000), "too large"),
    (_png_header_claiming(8_000, 6_000), "too large: 8000 x 6000 pixels, over the limit"),
    (_animated_gif(), "animated"),
])
def test_bad_images_are_refused_naming_the_problem(data, problem):
    with pytest.raises(pr.BadImage, match=problem) as refused:
        pr.decode_image(data, "holiday.png", MAX_PIXELS)
    assert "holiday.png" in str(refused.value)


def test_cmyk_and_16_bit_images_are_converted():
    cmyk = io.BytesIO()
    Image.new("CMYK", (20, 10), (0, 255, 255, 0)).save(cmyk, "JPEG", quality=95)     # red in CMYK
    red = np.asarray(pr.decode_image(cmyk.getvalue(), "cmyk.jpg", MAX_PIXELS))
    assert red.shape == (10, 20, 3) and red[..., 0].mean() > 200 and red[..., 1:].mean() < 60
    deep = Image.fromarray(np.full((10, 20), 51400, np.uint16))       # 16-bit grey: 51400 / 65535 of white
    grey = np.asarray(pr.decode_image(_png(deep), "deep.png", MAX_PIXELS))
    assert grey.shape == (10, 20, 3) and (grey == 51400 >> 8).all()


# --- `ambient predict`

def test_cli_predicts_images_and_a_video_frame_with_heatmaps_and_textures(run, tmp_path):
    image = tmp_path / "street.jpg"
    _photo(3, (200, 150)).save(image)
    video = tmp_path / "clip.mp4"
    frames = np.zeros((10, 96, 128, 3), np.uint8)
    frames[5:] = 255                          # black for 0.5 s, then white: --at picks which
    write_video(video, frames, 10)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["predict", str(run.run), str(image), str(video), "--at", "0.7", "--json",
                                      "--out", str(out), "--db", f"sqlite:///{tmp_path / 'none.db'}"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["input"] for r in records] == [str(image), str(video)] and records[1]["at"] == 0.7
    for record in records:
        probabilities = [row["probability"] for row in record["labels"]]
        assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) == pytest.approx(1, abs=1e-5)
        assert {"layer", "unit", "activation", "label"} <= set(record["units"][0])
        assert Image.open(record["heatmap"]).size == (99, 99)
        top = int(record["labels"][0]["label"].split()[-1]) - 1
        np.testing.assert_allclose(np.load(record["texture"]), run.centroids[top], rtol=1e-6)
    assert not (tmp_path / "none.db").exists()          # looking for human labels created no database
    # The video's frame at 0.7 s is white: the network saw white.
    predictor = pr.load_predictor(run.run)
    (white,) = pr.predict(predictor, torch.full((1, 3, 112, 112), 255, dtype=torch.uint8))
    assert records[1]["labels"][0] == pytest.approx(white.labels[0])


def test_cli_synthesizes_the_predicted_sound(run, tmp_path):
    from model.sound.texture import sound_texture
    from model.data.media import read_audio
    from model.sound.synthesis import texture_snr

    image = tmp_path / "street.png"
    _photo().save(image)
    result = CliRunner().invoke(cli, ["predict", str(run.run), str(image), "--json", "--synthesize", "--seconds", "0.5",
                                      "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.splitlines()[-1])
    waveform, rate = read_audio(record["sound"])
    assert record["sound"].endswith("street.wav") and len(waveform) / rate == pytest.approx(0.5, abs=0.01)
    target = np.load(record["texture"])
    heard = texture_snr(target, sound_texture(waveform, rate))
    unrelated = texture_snr(target, run.centroids[(int(record["labels"][0]["label"].split()[-1])) % len(run.centroids)])
    assert min(heard.values()) > min(unrelated.values())     # closer to its target than another cluster's texture


def test_cli_skips_bad_inputs_and_reports_them(run, tmp_path):
    good, empty = tmp_path / "good.png", tmp_path / "empty.png"
    _photo().save(good)
    empty.write_bytes(b"")
    result = CliRunner().invoke(cli, ["predict", str(run.run), str(empty), str(good), str(tmp_path / "absent.jpg"),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "empty.png: the file is empty" in result.output and "absent.jpg: no such file" in result.output
    assert (tmp_path / "out" / "good.heatmap.png").is_file() and "Traceback" not in result.output
    result = CliRunner().invoke(cli, ["predict", str(tmp_path), str(good)])
    assert result.exit_code == 1 and "ambient units" in result.output


# --- The API, with a token

@pytest.fixture(scope="module")
def app(run):
    return create_app(Settings(database_url=run.url, data_roots=str(run.root)))


def _upload(client, run, data: bytes, name: str = "photo.png", **headers):
    return client.post(f"/api/v1/runs/{run.run_id}/predict", files={"image": (name, data, "image/png")},
                       headers=headers)


def test_api_predicts_with_a_read_token(app, run):
    token = make_token(app, "ann")
    with TestClient(app) as client:
        assert _upload(client, run, _png(_photo())).status_code == 401            # no token, no session
        response = _upload(client, run, _png(_photo()), **bearer(token))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["source"] == "photo.png" and len(body["labels"]) == 4 and len(body["texture"]) == 502
    assert body["units"][0]["url"] == f"/runs/{run.run_id}/units/conv5/{body['units'][0]['unit']}"
    heatmap = Image.open(io.BytesIO(base64.b64decode(body["heatmap"].split(",", 1)[1])))
    assert heatmap.size == (99, 99)
    assert body["clusters"][0]["label"] == body["labels"][0]["label"] and body["clusters"][0]["clips"]
    # ann has answered nothing and the results are closed: the units' labels are hidden from her.
    assert all(unit["label"] is None for unit in body["units"])


def test_api_shows_labels_to_an_admin(app, run):
    with TestClient(app) as client:
        login(client, "boss")
        csrf = login(client, "boss")
        body = _upload(client, run, _png(_photo()), **{"X-CSRF-Token": csrf}).json()
    assert all(unit["label"] == ("car" if unit["unit"] % 2 == 0 else None) for unit in body["units"])


def _temp_files() -> set[str]:
    return set(os.listdir(tempfile.gettempdir()))


@pytest.mark.parametrize("data, name, status, problem", [
    (b"", "empty.png", 422, "the file is empty"),
    (b"GIF89a but not really" * 50, "fake.gif", 422, "not an image"),
    (b"\0" * 3 * 2**20, "zeros.png", 422, "not an image"),      # over the form parser's 1 MB in memory
    (_png(_photo())[:-2000], "cut.png", 422, "truncated"),
    (_png_header_claiming(20_000, 20_000), "bomb.png", 422, "too large"),
    (_animated_gif(), "moving.gif", 422, "animated"),
    (_png(Image.new("RGB", (8, 8))), "../../etc/passwd.png", 422, "path parts"),
])
def test_bad_uploads_get_a_4xx_naming_the_problem_and_leave_nothing_behind(app, run, data, name, status, problem):
    token = make_token(app, "ann")
    before = _temp_files()
    with TestClient(app) as client:
        response = _upload(client, run, data, name, **bearer(token))
        assert response.status_code == status and problem in response.json()["detail"], response.text[:300]
        assert _upload(client, run, _png(_photo()), **bearer(token)).status_code == 200     # still answering
    assert _temp_files() <= before


def test_a_50_mb_body_is_refused_before_it_is_read(app, run):
    token = make_token(app, "ann")
    with TestClient(app) as client:
        declared = client.post(f"/api/v1/runs/{run.run_id}/predict", content=b"",
                               headers={**bearer(token), "Content-Length": str(50 * 2**20),
                                        "Content-Type": "multipart/form-data; boundary=x"})
        assert declared.status_code == 413 and "limit" in declared.json()["detail"]
    # Streamed without a Content-Length (the test client would gather the body first: ASGI by hand).
    received, sent = [], []

    head = b'--x\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n\r\n'

    async def receive():
        received.append(1)
        return {"type": "http.request", "body": (head if len(received) == 1 else b"") + b"\0" * 2**20,
                "more_body": len(received) < 50}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": f"/api/v1/runs/{run.run_id}/predict", "raw_path": b"", "root_path": "", "query_string": b"",
             "headers": [(b"authorization", f"Bearer {token}".encode()),
                         (b"content-type", b"multipart/form-data; boundary=x")],
             "client": ("127.0.0.1", 1), "server": ("test", 80)}
    anyio.run(app, scope, receive, send)
    assert sent[0]["status"] == 413 and len(received) <= 11      # stopped at the 10 MiB limit, not after 50 MiB
    with TestClient(app) as client:
        assert _upload(client, run, _png(_photo()), **bearer(token)).status_code == 200


def test_uploads_are_bounded_per_account(run):
    from app_helpers import add_user
    # The counts live in the database, over every app on it: accounts of their own, uncounted so far.
    for name in ("counted", "other", "bytes"):
        add_user(run.url, name)
    app = create_app(Settings(database_url=run.url, data_roots=str(run.root), predict_per_minute=2, predict_bytes_per_hour=10**9))
    token, other = make_token(app, "counted"), make_token(app, "other")
    with TestClient(app) as client:
        assert [_upload(client, run, _png(_photo()), **bearer(token)).status_code for _ in range(3)] == [200, 200, 429]
        refused = _upload(client, run, _png(_photo()), **bearer(token))
        assert "at most 2 a minute" in refused.json()["detail"] and int(refused.headers["Retry-After"]) > 0
        assert _upload(client, run, _png(_photo()), **bearer(other)).status_code == 200     # another account
    app = create_app(Settings(database_url=run.url, data_roots=str(run.root),
                              predict_bytes_per_hour=len(_png(_photo())) + 10))
    token = make_token(app, "bytes")
    with TestClient(app) as client:
        assert [_upload(client, run, _png(_photo()), **bearer(token)).status_code for _ in range(2)] == [200, 429]


def test_a_run_whose_network_is_not_here_says_so(app, run, tmp_path):
    from app_helpers import add_user, seed_run
    url = seed_run(tmp_path)
    add_user(url, "ann")
    other = create_app(Settings(database_url=url))
    with TestClient(other) as client:
        csrf = login(client, "ann")
        response = client.post("/api/v1/runs/1/predict", files={"image": ("a.png", _png(_photo()), "image/png")},
                               headers={"X-CSRF-Token": csrf})
    assert response.status_code == 409 and "cannot be loaded" in response.json()["detail"]


# --- The page

def test_page_shows_prediction_for_an_upload_and_a_pool_frame(app, run):
    with TestClient(app) as client:
        csrf = login(client, "ann")
        page = client.get(f"/runs/{run.run_id}/listen")
        assert page.status_code == 200 and 'name="image"' in page.text and "/frames/" in page.text
        shown = client.post(f"/runs/{run.run_id}/listen", data={"csrf_token": csrf},
                            files={"image": ("street.png", _png(_photo()), "image/png")})
        assert shown.status_code == 200, shown.text[:300]
        for part in ('id="heatmap"', "data:image/png;base64,", "plotly-figure", f"/runs/{run.run_id}/units/conv5/",
                     'class="clip"', 'id="synthesize"', "street.png"):
            assert part in shown.text, part
        refused = client.post(f"/runs/{run.run_id}/listen", data={"csrf_token": csrf},
                              files={"image": ("x.png", b"", "image/png")}, headers={"Accept": "text/html"})
        assert refused.status_code == 422 and "x.png: the file is empty" in refused.text
        forged = client.post(f"/runs/{run.run_id}/listen", files={"image": ("street.png", _png(_photo()), "image/png")})
        assert forged.status_code == 403                 # no CSRF token
        frame = client.post(f"/runs/{run.run_id}/listen", data={"frame": "3", "csrf_token": csrf})
        assert frame.status_code == 200 and "frame 3" in frame.text and 'id="heatmap"' in frame.text
        assert client.post(f"/runs/{run.run_id}/listen", data={"frame": "999", "csrf_token": csrf}).status_code == 404


# --- Other runs, for what applies to them

def test_a_binary_run_gives_each_bits_probability_and_the_texture_its_code_predicts(run, tmp_path):
    from dataclasses import asdict

    from model.data import dataset as ds
    from model.network.caffenet import IMAGE_MEAN, IMAGE_STD
    from model.network.run import FINAL_MODEL, RunInfo, write_run_json
    info = RunInfo("binary", 3, True, 112, 99, 8, IMAGE_MEAN, IMAGE_STD)
    torch.manual_seed(1)
    model = info.build_model().eval()
    (tmp_path / "run").mkdir()
    torch.save({"model": model.state_dict(), "run": asdict(info), "step": 0}, tmp_path / "run" / FINAL_MODEL)
    write_run_json(tmp_path / "run", info, {"data_dir": str(run.data)})
    textures = np.load(run.data / ds.TEXTURES).astype(np.float64)
    weights = np.full(502, 2.0)
    mean = (textures * weights).mean(0)
    components = np.linalg.svd(textures * weights - mean, full_matrices=False)[2][:3]
    np.savez(ds.labels_file(run.data, "binary"), kind="binary", bits=3, codes=np.zeros((24, 3), np.uint8),
             components=components, mean=mean, weights=weights)
    predictor = pr.load_predictor(tmp_path / "run")
    frame = pr.image_frame(_photo(), predictor.frame_size)
    (result,) = pr.predict(predictor, frame[None], top_labels=3)
    with torch.no_grad():
        bits = torch.sigmoid(model(info.prepare_images(frame[None])))[0].numpy()
    order = np.argsort(-bits)          # each bit on its own (sigmoids, not a softmax), surest first
    assert [row["label"] for row in result.labels] == [f"Bit {b + 1}" for b in order]
    assert [row["probability"] for row in result.labels] == pytest.approx(bits[order].tolist(), abs=1e-5)
    assert result.target == f"Bit {int(np.argmax(bits)) + 1}"
    spread = np.abs((textures * weights - mean) @ components.T).mean(0)
    expected = (mean + ((2 * bits - 1) * spread) @ components) / weights
    np.testing.assert_allclose(result.texture, expected, rtol=1e-4, atol=1e-6)


def test_a_torchvision_network_gets_its_top_class_and_units(tmp_path):
    import torchvision

    torch.manual_seed(0)
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), tmp_path / "squeeze.pt")
    predictor = pr.load_predictor(_analysed(tmp_path / "analysis", "features.12", "torchvision:squeezenet1_1",
                                            tmp_path / "squeeze.pt"))
    (result,) = pr.predict(predictor, pr.image_frame(_photo(), predictor.frame_size)[None])
    top = result.labels[0]["label"]
    assert result.target == top and top.startswith("class ") and "(" in top      # e.g. "class 281 (tabby)"
    assert len(result.labels) == 5 and result.texture is None
    assert [u["layer"] for u in result.units] == ["features.12"] * 5 and result.heatmap.shape == (224, 224)


def test_synthesis_runs_in_the_background_one_per_account(run):
    import time
    import wave

    app = create_app(Settings(database_url=run.url, data_roots=str(run.root), synthesis_seconds=0.5))
    with TestClient(app) as client, TestClient(app) as other:
        csrf, other_csrf = login(client, "ann"), login(other, "boss")
        body = _upload(client, run, _png(_photo()), **{"X-CSRF-Token": csrf}).json()
        started = client.post("/listen/synthesis", json={"prediction": body["prediction"]},
                              headers={"X-CSRF-Token": csrf, "Accept": "application/json"})
        assert started.status_code == 200 and started.json()["state"] in ("queued", "running")
        job = started.json()["id"]
        again = client.post("/listen/synthesis", json={"prediction": body["prediction"]},
                            headers={"X-CSRF-Token": csrf, "Accept": "application/json"})
        assert again.status_code == 429 and "under way" in again.json()["detail"]
        assert other.get(f"/listen/synthesis/{job}", headers={"Accept": "application/json"}).status_code == 404
        refused = other.post("/listen/synthesis", json={"prediction": body["prediction"]},       # not boss's prediction
                             headers={"X-CSRF-Token": other_csrf, "Accept": "application/json"})
        assert refused.status_code == 404
        deadline = time.monotonic() + 240
        while (record := client.get(f"/listen/synthesis/{job}").json())["state"] in ("queued", "running"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert record["state"] == "done" and record["done"] == record["total"] > 0, record
        audio = client.get(record["audio_url"])
        assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
        with wave.open(io.BytesIO(audio.content)) as file:
            assert file.getnframes() / file.getframerate() == pytest.approx(0.5, abs=0.01)
