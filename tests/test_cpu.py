"""Figures that say which CPU made them: `ambient train` and `ambient demo` print the CPU capability torch uses,
run.json records it, and `--portable` (or AMBIENT_PORTABLE=1) pins the kernels to AVX2 before torch is loaded."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from backend.cli import app
from model.cpu import PORTABLE, PORTABLE_KERNELS, pin_portable_kernels
from test_train import make_dataset

REPO = Path(__file__).resolve().parents[1]
# Pinning to AVX2 needs a CPU that has it: x86-64 since 2013.
needs_avx2 = pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"),
                                reason="this CPU has no AVX2")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"), videos=8, frames=4)


def _unpinned_environment() -> dict:
    return {name: value for name, value in os.environ.items() if name not in {PORTABLE, *PORTABLE_KERNELS}}


def _train(data_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["train", str(data_dir), "--labels", "cluster", "--out", str(run_dir), "--preset", "tiny",
            "--epochs", "1", "--device", "cpu", *extra]


def test_train_prints_the_cpu_capability_and_records_it_in_run_json(data_dir, tmp_path, monkeypatch):
    for name in (PORTABLE, *PORTABLE_KERNELS):
        monkeypatch.delenv(name, raising=False)
    capability = torch.backends.cpu.get_cpu_capability()
    result = CliRunner().invoke(app, _train(data_dir, tmp_path / "run"))
    assert result.exit_code == 0, result.output
    assert f"CPU capability: {capability}, {os.cpu_count()} threads (training's float sums depend" in result.output
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["cpu_capability"] == capability and run["portable_kernels"] is False
    assert run["cpu_threads"] == os.cpu_count()          # training takes every core


@needs_avx2
def test_portable_training_runs_on_avx2_kernels_and_two_threads_and_says_so(data_dir, tmp_path):
    """On a CPU of 7 cores (as this process is told) the portable run still takes 2 threads."""
    script = f"""
import os
os.cpu_count = lambda: 7
from backend.cli import app
app({_train(data_dir, tmp_path / "run", "--portable")!r})
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=_unpinned_environment(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "CPU capability: AVX2, kernels pinned" in result.stdout
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["cpu_capability"] == "AVX2" and run["portable_kernels"] is True and run["cpu_threads"] == 2


@needs_avx2
def test_ambient_portable_pins_every_command_and_the_demo_passes_the_pins_to_its_steps(tmp_path):
    """AMBIENT_PORTABLE=1 through the CLI's entry: the demo's process and each step it starts (their
    commands are recorded here instead of run) get the pinned kernels."""
    script = f"""
import json, subprocess, sys
steps = []
subprocess.run = lambda argv, env: steps.append({{k: env.get(k) for k in {sorted(PORTABLE_KERNELS)!r}}}) or \\
    subprocess.CompletedProcess(argv, 0)
import backend.commands.demo
backend.commands.demo._open_campaign = lambda url, run_dir: None    # the steps above made no run to open it for
from backend.cli import app
try:
    app(["demo", {str(tmp_path / "demo")!r}, "--db", "sqlite:///{tmp_path / "demo.db"}"])
except SystemExit as exit:
    assert not exit.code, exit.code
print(json.dumps(steps))
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={**_unpinned_environment(), PORTABLE: "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("CPU capability: AVX2, kernels pinned")
    assert lines[-2].startswith("The figures above: CPU capability: AVX2, kernels pinned")
    steps = json.loads(lines[-1])
    assert len(steps) >= 5 and all(step == PORTABLE_KERNELS for step in steps)


def test_the_kernels_cannot_be_pinned_once_torch_is_loaded(data_dir, tmp_path, monkeypatch):
    for name in (PORTABLE, *PORTABLE_KERNELS):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="before torch is imported"):
        pin_portable_kernels()
    result = CliRunner().invoke(app, _train(data_dir, tmp_path / "run", "--portable"))
    assert result.exit_code == 2 and f"{PORTABLE}=1" in result.output     # the error says how to pin
    assert not (tmp_path / "run").exists()


def test_ambient_portable_pins_the_kernels_of_commands_without_the_flag(tmp_path):
    """`AMBIENT_PORTABLE=1 ambient labels ...` (or units, dissect, ...) runs on the pinned kernels too."""
    script = f"""
import json, os
from backend.cli import app
try:
    app(["labels", {str(tmp_path / "no-dataset")!r}])
except SystemExit:
    pass
print(json.dumps({{name: os.environ.get(name) for name in {sorted(PORTABLE_KERNELS)!r}}}))
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={**_unpinned_environment(), PORTABLE: "1"})
    assert json.loads(result.stdout.splitlines()[-1]) == PORTABLE_KERNELS, result.stderr[-3000:]
