"""`ambient units`: each unit's top images, masked to its receptive field, into the store."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer

from backend.config import Settings
from model.settings import UNITS


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to the CLI."""

    @app.command("units")
    def units(
        run_dir: Path = typer.Argument(..., help="Training run (or, with --model, a folder for this analysis)."),
        pool: Path = typer.Option(..., "--pool", help="Dataset folder (DATA_DIR) whose frames form the pool."),
        layer: str = typer.Option(UNITS.layer, help="Layer to analyse: conv5, or a module name such as "
                                  "features.10 for a torchvision model."),
        top: int = typer.Option(UNITS.top, min=1, help="Images kept per unit."),
        split: str = typer.Option(UNITS.split, help="Pool frames from this split: test, train or all."),
        one_per_video: bool = typer.Option(False, "--one-per-video", help="At most one frame per video per unit."),
        db: Optional[str] = typer.Option(None, help="SQLAlchemy URL [default: AMBIENT_DATABASE_URL or "
                                         "sqlite:///ambient.db]."),
        model: Optional[str] = typer.Option(None, help="Analyse another network: torchvision:<name> (with "
                                            "--weights) or torchscript:<file> whose output is the layer."),
        weights: Optional[Path] = typer.Option(None, exists=True, dir_okay=False,
                                               help="State dict for a torchvision:<name> model."),
        batch_size: int = typer.Option(UNITS.batch_size, min=1, help="Frames per forward pass."),
        device: str = typer.Option("auto", help="Torch device (auto: cuda when available, else cpu)."),
    ) -> None:
        """Find each unit's top images over a pool of frames (paper 4.1) and store them with masks."""
        import torch

        from model.units import extract_units

        if split not in ("test", "train", "all"):
            raise typer.BadParameter(f"{split!r}: choose test, train or all", param_hint="--split")
        if not (pool / "manifest.jsonl").exists():
            raise typer.BadParameter(f"{pool}: not a dataset folder (no manifest.jsonl); run `ambient ingest`",
                                     param_hint="--pool")
        if model is None and not run_dir.is_dir():
            raise typer.BadParameter(f"{run_dir}: no such run folder", param_hint="RUN_DIR")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        settings = replace(UNITS, layer=layer, top=top, split=split, batch_size=batch_size)
        try:
            summary = extract_units(run_dir, pool, db or Settings().database_url, settings, model, weights,
                                    one_per_video, device)
        except (ValueError, FileNotFoundError) as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(1)
        typer.echo(f"{summary['units']} units of {summary['layer']} from {summary['pool']} frames "
                   f"(receptive field {summary['rf_size']:.0f} px, circles of radius {summary['rf_radius']:.1f} px) "
                   f"stored as run {summary['run_id']}")

