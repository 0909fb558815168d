"""Model files are input: a crafted torch.export program (.pt2) runs no code wherever it is loaded (the CLI's
`ambient units --model export:` and `ambient predict`, the server's predictions), and the server loads only the
model files a run was published with, inside the data roots, with their recorded SHA-256 (issue 34, item 1).

model/network/modelfiles.py says which formats are data; tests/test_hardening_checkpoints.py covers model.pt."""
from __future__ import annotations

import hashlib
import io
import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select
from typer.testing import CliRunner

from app_helpers import login
from backend.app import create_app
from backend.cli import app as cli
from backend.config import Settings
from backend.db.models import Run
from backend.db.session import open_db, session_factory
from backend.publish import publish_run
from listen_helpers import make_listen_run
from model.network.modelfiles import ModelFileRefused, check_export_archive
from model.network.run import FINAL_MODEL, read_units_meta, save_npz_atomic, units_file
from model.units.top_images import _ExportedProgram, load_network
from test_units import make_pool

CRAFTS = ("sample_inputs", "pickled_weight", "opaque_constant", "legacy_state_dict", "compiled_code")


class _Planted:
    """Unpickling this calls Path.touch(marker): what a hostile model file would do with os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def _saved(obj) -> bytes:
    out = io.BytesIO()
    torch.save(obj, out)
    return out.getvalue()


def _exported_trunk(path: Path) -> Path:
    """A real torch.export.save of a tiny trunk whose output is the layer (what `--model export:` takes)."""
    trunk = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 11, 4), torch.nn.ReLU()).eval()
    torch.export.save(torch.export.export(trunk, (torch.rand(2, 3, 64, 64),)), str(path))
    return path


def _rewritten(source: Path, target: Path, change) -> None:
    """SOURCE's archive with each member's bytes passed through change(name inside the root, bytes)."""
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w") as out:
        for info in archive.infolist():
            out.writestr(info, change(info.filename.split("/", 1)[1], archive.read(info.filename)))


def crafted_program(folder: Path, how: str, marker: Path) -> Path:
    """A .pt2 made by torch.export.save, then given a payload that creates MARKER if torch unpickles it in full."""
    clean = _exported_trunk(folder / "clean.pt2")
    target = folder / f"{how}.pt2"
    payload = _saved(_Planted(marker))
    if how == "sample_inputs":        # torch.export.load retries this pickle with weights_only=False
        _rewritten(clean, target, lambda name, body: payload if name == "data/sample_inputs/model.pt" else body)
    elif how == "pickled_weight":     # a weight marked use_pickle is loaded with weights_only=False
        def change(name, body):
            if name == "data/weights/model_weights_config.json":
                config = json.loads(body)
                config["config"]["0.bias"]["use_pickle"] = True
                return json.dumps(config).encode()
            return payload if name == "data/weights/weight_1" else body
        _rewritten(clean, target, change)
    elif how == "opaque_constant":    # unpickled with pickle.loads: TORCH_FORCE_WEIGHTS_ONLY_LOAD does not apply
        config = {"config": {"c": {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True,
                                   "tensor_meta": None}}}
        _rewritten(clean, target, lambda name, body: json.dumps(config).encode()
                   if name == "data/constants/model_constants_config.json" else body)
        with zipfile.ZipFile(target, "a") as archive:
            archive.writestr("clean/data/constants/opaque_obj_0", pickle.dumps(_Planted(marker)))
    elif how == "legacy_state_dict":  # the format before torch 2.8: serialized_state_dict.pt holds the payload
        from torch._export.serde.schema import SCHEMA_VERSION
        from torch._export.serde.serialize import serialize
        artifact = serialize(torch.export.load(str(clean)))
        with zipfile.ZipFile(target, "w") as archive:
            archive.writestr("version", ".".join(map(str, SCHEMA_VERSION)))
            archive.writestr("serialized_exported_program.json", artifact.exported_program)
            archive.writestr("serialized_state_dict.pt", _saved({"0.weight": _Planted(marker)}))
            archive.writestr("serialized_constants.pt", artifact.constants)
            archive.writestr("serialized_example_inputs.pt", artifact.example_inputs)
    elif how == "compiled_code":      # AOTInductor's shared library is loaded as native code
        _rewritten(clean, target, lambda name, body: body)
        with zipfile.ZipFile(target, "a") as archive:
            archive.writestr("clean/data/aotinductor/model/model.so", b"\x7fELF")
    return target


def _png() -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(out, "PNG")
    return out.getvalue()


# --- The pipeline: weights only, everywhere

def test_weights_only_loading_is_forced_in_every_process_even_against_the_environment(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "payload.pt").write_bytes(_saved(_Planted(marker)))
    with pytest.raises(pickle.UnpicklingError):     # this process imported model/: weights_only=False is overruled
        torch.load(tmp_path / "payload.pt", weights_only=False)
    # A child process whose user asks for full unpickling (a job's, a Ray task's) gets weights only all the same.
    code = ("import model, torch, sys; torch.load(sys.argv[1], weights_only=False)")
    child = subprocess.run([sys.executable, "-c", code, str(tmp_path / "payload.pt")], capture_output=True, text=True,
                           env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path),
                                "TORCH_FORCE_WEIGHTS_ONLY_LOAD": "0", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"},
                           timeout=120)
    assert child.returncode != 0 and "Weights only load failed" in child.stderr, child.stderr[-2000:]
    assert not marker.exists()


@pytest.mark.parametrize("how", CRAFTS)
def test_a_crafted_export_program_is_refused_without_running_its_payload(tmp_path, how):
    marker = tmp_path / "pwned"
    program = crafted_program(tmp_path, how, marker)
    with pytest.raises(ModelFileRefused, match="could run code|compiled code") as refused:
        load_network(tmp_path, "output", f"export:{program}")
    assert str(program) in str(refused.value)
    assert not marker.exists()


def test_a_clean_export_program_still_loads(tmp_path):
    program = _exported_trunk(tmp_path / "trunk.pt2")
    check_export_archive(program.read_bytes(), program)
    loaded = _ExportedProgram.load(program, "cpu")
    assert loaded(torch.rand(3, 3, 64, 64)).shape == (3, 4, 14, 14)      # batches of 2, the last one padded


def test_cli_units_and_predict_refuse_a_crafted_export_program(tmp_path):
    marker = tmp_path / "pwned"
    program = crafted_program(tmp_path, "opaque_constant", marker)
    pool = make_pool(tmp_path, 8, 8)
    result = CliRunner().invoke(cli, ["units", str(tmp_path / "analysis"), "--model", f"export:{program}",
                                      "--pool", str(pool.data), "--no-publish", "--device", "cpu"])
    assert result.exit_code == 1 and "pickled Python object" in result.output, result.output
    assert not marker.exists()

    folder = tmp_path / "analysed"       # as `ambient units --model export:` leaves it, then the file swapped
    folder.mkdir()
    save_npz_atomic(units_file(folder, "output"), meta=json.dumps({"layer": None, "model_spec": f"export:{program}",
                                                                   "weights": None}))
    (tmp_path / "photo.png").write_bytes(_png())
    result = CliRunner().invoke(cli, ["predict", str(folder), str(tmp_path / "photo.png"), "--out",
                                      str(tmp_path / "out")])
    assert result.exit_code == 1 and str(program) in result.output and "pickled Python object" in result.output
    assert not marker.exists()


# --- The server: published model files only, unchanged, inside the roots

@pytest.fixture(scope="module")
def listen(tmp_path_factory):
    return make_listen_run(tmp_path_factory.mktemp("models"))


def _app(listen, roots: Path | None = None):
    return create_app(Settings(database_url=listen.url, data_roots=str(roots or listen.root), predict_per_minute=100))


def _predict(client: TestClient, csrf: str, run_id: int):
    return client.post(f"/api/v1/runs/{run_id}/predict", files={"image": ("photo.png", _png(), "image/png")},
                       headers={"X-CSRF-Token": csrf})


def test_publishing_records_the_model_files_digest_and_the_server_predicts(listen):
    with session_factory(open_db(listen.url))() as db:
        recorded = db.scalar(select(Run).where(Run.id == listen.run_id)).model_files
    model = (listen.run / FINAL_MODEL).resolve()
    assert recorded == {str(model): hashlib.sha256(model.read_bytes()).hexdigest()}
    with TestClient(_app(listen)) as client:
        csrf = login(client, "ann")
        assert _predict(client, csrf, listen.run_id).status_code == 200


def test_a_published_crafted_program_is_refused_by_the_server_without_running_it(listen, tmp_path_factory):
    """A units job's run whose units file names a crafted .pt2: publishing does not load it, and the first
    prediction (any annotator's) is refused, naming the file, before torch reads it."""
    marker = listen.root / "pwned"
    program = crafted_program(tmp_path_factory.mktemp("crafted", numbered=True), "pickled_weight", marker)
    program = program.rename(listen.root / "trunk.pt2")
    analysed = listen.root / "exported"
    analysed.mkdir()
    with np.load(units_file(listen.run, "conv5")) as data:
        arrays = {key: data[key] for key in data.files}
    meta = read_units_meta(units_file(listen.run, "conv5"))
    arrays["meta"] = json.dumps({**meta, "kind": "export", "model_spec": f"export:{program}", "labels_kind": None})
    save_npz_atomic(units_file(analysed, "conv5"), **arrays)
    run_id = publish_run(analysed, open_db(listen.url)).run_id
    with TestClient(_app(listen)) as client:
        csrf = login(client, "ann")
        response = _predict(client, csrf, run_id)
    assert response.status_code == 409, response.text
    assert str(program) in response.json()["detail"] and "could run code" in response.json()["detail"]
    assert not marker.exists()


def test_a_model_file_changed_after_publishing_is_refused_until_published_again(listen):
    model = listen.run / FINAL_MODEL
    original = model.read_bytes()
    with TestClient(_app(listen)) as client:
        csrf = login(client, "ann")
        assert _predict(client, csrf, listen.run_id).status_code == 200
        state = torch.load(model, weights_only=True)
        state["model"] = {name: value + 1 if value.is_floating_point() else value
                          for name, value in state["model"].items()}
        torch.save(state, model)
        try:
            response = _predict(client, csrf, listen.run_id)
            assert response.status_code == 409, response.text
            detail = response.json()["detail"]
            assert f"model file {model.resolve()} has changed since the run was published" in detail
            assert "publish the run again" in detail
            publish_run(listen.run, open_db(listen.url))
            assert _predict(client, csrf, listen.run_id).status_code == 200
        finally:
            model.write_bytes(original)
            publish_run(listen.run, open_db(listen.url))


def test_a_model_file_outside_the_data_roots_is_not_loaded(listen, tmp_path):
    with TestClient(_app(listen, roots=tmp_path)) as client:
        csrf = login(client, "ann")
        response = _predict(client, csrf, listen.run_id)
    assert response.status_code == 409
    assert f"model file {(listen.run / FINAL_MODEL).resolve()} lies outside the data roots" in response.json()["detail"]


def test_a_run_published_before_digests_were_recorded_is_not_loaded(listen):
    engine = open_db(listen.url)
    with session_factory(engine)() as db, db.begin():
        db.get(Run, listen.run_id).model_files = None
    try:
        with TestClient(_app(listen)) as client:
            csrf = login(client, "ann")
            response = _predict(client, csrf, listen.run_id)
        assert response.status_code == 409 and "publish the run again" in response.json()["detail"]
    finally:
        publish_run(listen.run, engine)
