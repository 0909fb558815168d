"""Do pinned kernels (`--portable`, model/cpu.py) train the same weights whatever the CPU, and at what cost?

Sameness: a tiny training (a 20-video procedural world, the tiny preset, 3 epochs: 30 steps) under each
kernel setting, each in its own process since the libraries read their settings when torch loads. This CPU
imitates an AVX2-only one by capping each library: ATen (ATEN_CPU_CAPABILITY), oneDNN (ONEDNN_MAX_CPU_ISA)
and MKL (MKL_ENABLE_INSTRUCTIONS). Weights are compared bit for bit with the default run's and the
portable run's. Cost: the demo preset's training step (forward, backward, SGD; bench_train.py's model-only
images/s), default and portable taken in turns REPEATS times, so a busy machine slows both alike.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from model.cpu import PORTABLE_KERNELS  # noqa: E402
from model.network.run import FINAL_MODEL, METRICS  # noqa: E402
from report import write_section  # noqa: E402

AVX2_HOST = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
# name -> (environment, cores the training is told of); 0: this machine's.
SETTINGS = {
    "default": ({}, 0),
    "ATen AVX2 only": ({"ATEN_CPU_CAPABILITY": "avx2"}, 0),
    "oneDNN AVX2 only": ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, 0),
    "MKL_CBWR=AVX2 only": ({"MKL_CBWR": "AVX2"}, 0),
    "portable": (PORTABLE_KERNELS, 0),
    "an AVX2-only CPU": (AVX2_HOST, 0),
    "an AVX2-only CPU, portable": ({**AVX2_HOST, **PORTABLE_KERNELS}, 0),
    "default on 1 core": ({}, 1),
    "portable on 1 core": (PORTABLE_KERNELS, 1),
}
COSTED = ("default", "portable")
PINS = {*PORTABLE_KERNELS, *AVX2_HOST, "AMBIENT_PORTABLE"}

# One training in a fresh process; train() takes its threads from os.cpu_count() (model/cpu.py), so a
# machine of another size is imitated through it.
TRAIN = """
import os, sys, json
cores = int(sys.argv[3])
if cores:
    os.cpu_count = lambda: cores
from backend.cli import app
import torch
app(["train", sys.argv[1], "--labels", "cluster", "--out", sys.argv[2], "--preset", "tiny", "--epochs", "3",
     "--batch-size", "8", "--device", "cpu"], standalone_mode=False)
print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()}))
"""
# The demo preset's images/s in a fresh process.
STEP = """
import json, sys
sys.path.insert(0, "benchmarks")
from bench_train import model_only
from model.settings import TRAIN_PRESETS
print(json.dumps(model_only(TRAIN_PRESETS["demo"])))
"""


def ambient(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "backend.cli", *args], cwd=REPO, check=True, capture_output=True)


def make_data(root: Path) -> Path:
    ambient("world", str(root / "world"), "--preset", "tiny", "--videos", "20", "--seed", "3",
            "--objects", "procedural")
    ambient("ingest", str(root / "world" / "videos"), "--out", str(root / "data"))
    ambient("labels", str(root / "data"), "--kind", "cluster", "--k", "4")
    return root / "data"


def environment(name: str) -> dict:
    return {**{k: v for k, v in os.environ.items() if k not in PINS}, **SETTINGS[name][0], "PYTHONPATH": str(REPO)}


def train_once(data: Path, out: Path, name: str) -> dict:
    result = subprocess.run([sys.executable, "-c", TRAIN, str(data), str(out), str(SETTINGS[name][1])], cwd=REPO,
                            env=environment(name), capture_output=True, text=True, check=True)
    return json.loads(result.stdout.splitlines()[-1])


def images_per_second(name: str) -> float:
    result = subprocess.run([sys.executable, "-c", STEP], cwd=REPO, env=environment(name), capture_output=True,
                            text=True, check=True)
    return json.loads(result.stdout.splitlines()[-1])


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / FINAL_MODEL, weights_only=True)["model"]


def max_difference(a: dict, b: dict) -> float:
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="Turns of the cost measurement.")
    args = parser.parse_args()
    seen = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = make_data(Path(tmp))
        for number, name in enumerate(SETTINGS):
            out = Path(tmp) / f"run-{number}"
            kernels = train_once(data, out, name)
            seen[name] = (kernels, weights(out), json.loads((out / METRICS).read_text().splitlines()[-1])["loss"])
            print(f"{name}: {kernels}", flush=True)
    rates = {name: [] for name in COSTED}
    for _ in range(args.repeats):
        for name in COSTED:
            rates[name].append(images_per_second(name))
            print(f"{name}: {rates[name][-1]:.1f} images/s", flush=True)

    default, portable = seen["default"][1], seen["portable"][1]
    rows = ["| kernels | capability, threads | = default | = portable | max abs weight difference to portable "
            "| final loss |", "|---|---|---|---|---|---|"]
    for name, (kernels, trained, loss) in seen.items():
        same = ["yes" if all(torch.equal(trained[k], other[k]) for k in trained) else "no"
                for other in (default, portable)]
        rows.append(f"| {name} | {kernels['capability']}, {kernels['threads']} | {same[0]} | {same[1]} | "
                    f"{max_difference(trained, portable):.3g} | {loss:.6f} |")
    medians = {name: statistics.median(rates[name]) for name in COSTED}
    body = (f"`python benchmarks/bench_portable.py` ({time.strftime('%Y-%m-%d')}, torch {torch.__version__}, "
            f"{os.cpu_count()} cores, this CPU's capability {torch.backends.cpu.get_cpu_capability()}): a tiny "
            f"training (30 steps) under each kernel setting.\n\n" + "\n".join(rows) + "\n\n"
            f"Cost, the demo preset's training step (median of {args.repeats}, taken in turns): default "
            f"{medians['default']:.1f} images/s, portable {medians['portable']:.1f} images/s "
            f"({medians['default'] / medians['portable']:.2f}x the default's time).\n")
    print(body)
    write_section("Portable kernels", body)


if __name__ == "__main__":
    main()
