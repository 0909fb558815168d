"""`ambient train`: train CaffeNet-BN to predict sound labels from frames (also under torchrun)."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import typer

from model.cpu import PORTABLE, capability_line, kernels_record, pin_portable_kernels
from model.settings import TRAIN_PRESETS


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to the CLI."""

    @app.command("train")
    def train_command(
        data_dir: Path = typer.Argument(..., help="Dataset directory with labels (see `ambient labels`)."),
        labels: str = typer.Option("cluster", "--labels", help="Label kind: cluster, binary, spectrum "
                                 "or scene (the control: the world's scenes, see `ambient labels`)."),
        out: Path = typer.Option(..., "--out", help="Run directory for run.json, metrics.jsonl, checkpoints."),
        preset: str = typer.Option("demo", "--preset", help=f"One of {', '.join(TRAIN_PRESETS)}."),
        epochs: int = typer.Option(None, "--epochs", min=0, help="Override the preset's epochs "
                                   "(0: save the untrained network, a control)."),
        batch_size: int = typer.Option(None, "--batch-size", min=1, help="Global batch (all processes)."),
        lr: float = typer.Option(None, "--lr", min=0.0, help="Override the preset's peak learning rate."),
        seed: int = typer.Option(None, "--seed", min=0, help="Override the preset's seed (initial weights, frame order, "
                                 "augmentation): two seeds, two trainings of the same data (`ambient compare`)."),
        device: str = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N (default auto: cuda if available)."),
        resume: bool = typer.Option(False, "--resume", help="Continue OUT from its last checkpoint."),
        cache_bytes: int = typer.Option(None, "--cache-bytes", min=0, help="Decoded frames are kept in memory "
                                        "if they fit in this many bytes (default 8 GiB), else streamed from "
                                        "DATA_DIR/shards (written first if missing; see `ambient shards`). "
                                        "0: always stream."),
        keep_checkpoints: int = typer.Option(None, "--keep-checkpoints", min=0, help="Keep the weights at N evenly "
                                             "spaced steps (the last always) in OUT/checkpoints/, for "
                                             "`ambient dissect OUT --checkpoints` (when detectors emerge)."),
        portable: bool = typer.Option(False, "--portable", envvar=PORTABLE, help="Pin torch's CPU kernels to AVX2 and "
                                      "its threads to 2: the figures of a 2-core AVX2 CPU whatever this one has "
                                      "(same torch build; model/cpu.py)."),
    ) -> None:
        """Train the network; run it under `torchrun --nproc_per_node N -m backend.cli train ...` for DDP."""
        if portable:
            try:
                pin_portable_kernels()     # before the imports below load torch
            except RuntimeError as error:
                raise typer.BadParameter(str(error), param_hint="--portable") from None
        from model.device import resolve_device
        from model.network.run import RUN_JSON
        from model.settings import TrainSettings
        from model.network.train import few_steps_warning, planned_steps, train

        if preset not in TRAIN_PRESETS:
            raise typer.BadParameter(f"{preset!r} is not one of {', '.join(TRAIN_PRESETS)}", param_hint="--preset")
        try:
            device = str(resolve_device(device))
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint="--device") from None
        settings = TRAIN_PRESETS[preset]
        if resume and (out / RUN_JSON).exists():
            # A resumed run keeps the settings it started with.
            saved = json.loads((out / RUN_JSON).read_text())
            settings, preset = TrainSettings(**saved["config"]), saved["preset"]
            kernels = {name: kernels_record()[name] for name in ("cpu_capability", "portable_kernels")}
            started_with = {name: saved.get(name) for name in kernels}
            if "cpu_capability" in saved and started_with != kernels:
                typer.echo(f"warning: {out} was started with the kernels {started_with}, resumed with {kernels}: "
                           f"its figures will differ from an uninterrupted run's", err=True)
        overrides = {name: value for name, value in
                     (("epochs", epochs), ("batch_size", batch_size), ("lr", lr), ("cache_bytes", cache_bytes),
                      ("keep_checkpoints", keep_checkpoints), ("seed", seed))
                     if value is not None}
        settings = replace(settings, **overrides)
        try:
            frames, _ = planned_steps(data_dir, labels, settings)
            warning = few_steps_warning(frames, settings, preset)
            if warning:
                typer.echo(warning, err=True)
            typer.echo(capability_line())
            metrics = train(data_dir, labels, out, settings, device, resume, preset)
        except (FileNotFoundError, FileExistsError, ValueError) as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(1)
        if metrics:
            typer.echo(f"step {metrics['step']}: test accuracy {metrics['test_accuracy']:.3f} "
                       f"(chance {metrics['chance']:.3f}, majority {metrics['majority']:.3f}); run in {out}")
        else:
            typer.echo(f"{out} had already finished training; nothing to do")
