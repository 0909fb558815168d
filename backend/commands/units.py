"""`ambient units`: each unit's top images, masked to its receptive field, into RUN_DIR; then published."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer

from backend.commands.options import DB_HELP, RAY_HELP, device_option
from model.settings import POOL_SPLITS, UNITS


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to the CLI."""

    @app.command("units")
    def units(
        run_dir: Path = typer.Argument(..., help="Training run (or, with --model, a folder for this analysis)."),
        pool: Path = typer.Option(..., "--pool", help="Dataset folder (DATA_DIR) whose frames form the pool, or a "
                                  "folder of still images (JPEG/PNG, found recursively; no clips, so no sound task)."),
        layer: str = typer.Option(UNITS.layer, help="Layer to analyse: conv5, or a module name such as "
                                  "features.10 for a torchvision model (a TorchScript or torch.export file's output "
                                  "is the layer, saved as `output`)."),
        top: int = typer.Option(UNITS.top, min=1, help="Images kept per unit."),
        split: str = typer.Option(UNITS.split, help="Pool frames from this split: test, train or all "
                                  "(a folder of still images is pooled whole)."),
        one_per_video: bool = typer.Option(False, "--one-per-video", help="At most one frame per video per unit."),
        db: Optional[str] = typer.Option(None, help=DB_HELP),
        publish: bool = typer.Option(True, "--publish/--no-publish",
                                     help="Publish the run into the database at the end (`ambient publish`)."),
        model: Optional[str] = typer.Option(None, help="Analyse another network: torchvision:<name> (with "
                                            "--weights), or torchscript:<file> or export:<file> (torch.export.save, "
                                            ".pt2) whose output is the layer. Where the layer's positions sit in the "
                                            "image is measured from the network; one that cannot be measured is "
                                            "refused."),
        weights: Optional[Path] = typer.Option(None, exists=True, dir_okay=False,
                                               help="State dict for a torchvision:<name> model."),
        batch_size: int = typer.Option(UNITS.batch_size, min=1, help="Frames per forward pass."),
        device: str = typer.Option("auto", help="Torch device: auto (cuda when available, else cpu), cpu, cuda:N."),
        ray: Optional[str] = typer.Option(None, "--ray", metavar="ADDRESS", help=RAY_HELP),
    ) -> None:
        """Find each unit's top images over a pool of frames (paper 4.1), mask them, and publish them."""
        from backend.commands.publish import publish_or_exit
        from model.data import dataset as ds
        from model.engine import ClusterError
        from model.units.top_images import extract_units, pool_records, pool_warning

        if split not in POOL_SPLITS:
            raise typer.BadParameter(f"{split!r}: choose {', '.join(POOL_SPLITS)}", param_hint="--split")
        if not pool.is_dir():
            raise typer.BadParameter(f"{pool}: no such folder; give a dataset folder (with {ds.MANIFEST}, from "
                                     f"`ambient ingest`) or a folder of JPEG/PNG images", param_hint="--pool")
        if model is None and not run_dir.is_dir():
            raise typer.BadParameter(f"{run_dir}: no such run folder", param_hint="RUN_DIR")
        if publish:
            _inside_roots(run_dir, pool, model, weights)
        torch_device = device_option(device)
        settings = replace(UNITS, layer=layer, top=top, split=split, batch_size=batch_size)
        try:
            warning = pool_warning(len(pool_records(pool, split)), top)
            if warning:
                typer.echo(f"warning: {warning}", err=True)
            summary = extract_units(run_dir, pool, settings, model, weights, one_per_video, torch_device,
                                    ray_address=ray)
        except (ValueError, FileNotFoundError, ClusterError) as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(1)
        from model.network.run import read_units_meta, units_file

        meta = read_units_meta(units_file(run_dir, summary["layer"]))     # the geometry the file was written with
        typer.echo(f"{summary['units']} units of {summary['layer']} from {summary['pool']} frames "
                   f"(receptive field {meta['rf_size']:g} px, stride {meta['stride']:g} px, offset {meta['offset']:g} "
                   f"px, circles of radius {summary['rf_radius']:.1f} px) written to {run_dir}")
        if summary["still_images"]:
            typer.echo("the pool is a folder of still images: they have no clips, so the sound task skips this run")
        if publish:
            publish_or_exit(run_dir, db)


def _inside_roots(run_dir: Path, pool: Path, model: str | None, weights: Path | None) -> None:
    """Publishing at the end refuses a run, pool or network file outside the data roots: say so before the work."""
    from backend.data_roots import FILE_SPECS, OutsideRoots, check_folder, data_roots

    roots = data_roots()
    named = [("the run folder", run_dir), ("the pool", pool), ("the weights", weights),
             ("the network file", Path(model.split(":", 1)[1]) if model and model.startswith(FILE_SPECS) else None)]
    try:
        for what, path in named:
            if path is not None:
                check_folder(path, roots, what)
    except OutsideRoots as error:
        typer.echo(f"error: {error} (or pass --no-publish)", err=True)
        raise typer.Exit(1) from None
