"""`ambient visualize`: images optimised to excite units and sound clusters (model/units/visualize.py)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer

from backend.commands.options import DB_HELP, device_option
from model.settings import VISUALIZE


def parse_indices(text: str | None, flag: str, count: int) -> list[int] | None:
    """"0 5 9" or "0,5,9" -> [0, 5, 9] (sorted, once each), "all" -> every one of ``count``; None when the flag
    was not given."""
    if text is None:
        return None
    if text.strip() == "all":
        return list(range(count))
    try:
        indices = sorted({int(part) for part in text.replace(",", " ").split()})
    except ValueError:
        raise typer.BadParameter(f"{text!r}: give numbers separated by spaces or commas, e.g. '0 5'",
                                 param_hint=flag) from None
    if not indices:
        raise typer.BadParameter("no index given", param_hint=flag)
    return indices


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to the CLI."""

    @app.command("visualize")
    def visualize(
        run_dir: Path = typer.Argument(..., help="Training run."),
        layer: str = typer.Option(VISUALIZE.layer, "--layer", help="Layer whose units are visualised."),
        units: Optional[str] = typer.Option(None, "--units", help="Units to visualise, e.g. '0 5 9', 0,5,9 or all "
                                            "(default: all, unless --clusters alone is given)."),
        detectors: bool = typer.Option(False, "--detectors", help="The layer's detectors (RUN_DIR/dissection.json)."),
        clusters: Optional[str] = typer.Option(None, "--clusters", help="Sound clusters to visualise, e.g. '0 3' "
                                               "or all (the image that makes the network hear that cluster)."),
        steps: int = typer.Option(VISUALIZE.steps, "--steps", min=1, help="Optimisation steps per image."),
        size: int = typer.Option(VISUALIZE.size, "--size", min=67, help="Side of a unit's image in pixels (a "
                                 "cluster's image has the network's input side)."),
        seed: int = typer.Option(VISUALIZE.seed, "--seed", help="Seed of the starting noise and the transforms."),
        device: str = typer.Option("auto", help="Torch device: auto (cuda when available, else cpu), cpu, cuda:N."),
        db: Optional[str] = typer.Option(None, help=DB_HELP),
        publish: bool = typer.Option(True, "--publish/--no-publish",
                                     help="Publish the run into the database at the end (`ambient publish`)."),
    ) -> None:
        """For each unit an image optimised to excite it, for each sound cluster one optimised for the cluster's
        probability; PNGs and their scores into RUN_DIR/visualizations/."""
        from tqdm import tqdm

        from backend.commands.publish import publish_or_exit
        from model.network.run import RunFolder
        from model.units.visualize import detector_units, layer_units, visualize_run

        if units is not None and detectors:
            raise typer.BadParameter("choose one of --units and --detectors", param_hint="--units / --detectors")
        if not run_dir.is_dir():
            raise typer.BadParameter(f"{run_dir}: no such run folder", param_hint="RUN_DIR")
        torch_device = device_option(device)
        settings = replace(VISUALIZE, layer=layer, steps=steps, size=size, seed=seed)
        run = RunFolder(run_dir)
        try:
            module, info = run.network(torch_device)
            cluster_list = parse_indices(clusters, "--clusters", info.num_outputs)
            layer_size = layer_units(module, layer, size, torch_device)
            unit_list = parse_indices(units, "--units", layer_size)
            if detectors:
                unit_list = detector_units(run.dissection, layer)
            elif unit_list is None and cluster_list is None:
                unit_list = list(range(layer_size))
            # A bar per batch of units: the admin page's job progress reads it.
            with tqdm(total=len(unit_list or []), desc="visualize", unit="unit") as bar:
                index = visualize_run(run_dir, layer, unit_list or [], cluster_list or [], settings, torch_device,
                                      bar.update)
        except (ValueError, FileNotFoundError) as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(1)
        done = [e for e in index["units"] if e["layer"] == layer and e["unit"] in set(unit_list or [])]
        ratios = sorted(e["ratio"] for e in done if e["ratio"] is not None)
        if done:
            typer.echo(f"{len(done)} units of {layer} visualised into {run_dir / 'visualizations'}"
                       + (f"; median ratio of the image's activation to the top pool image's: "
                          f"{ratios[len(ratios) // 2]:.2f} ({sum(r > 1 for r in ratios)} of {len(ratios)} above 1)"
                          if ratios else ""))
        for entry in index["clusters"]:
            if entry["cluster"] in set(cluster_list or []):
                typer.echo(f"sound cluster {entry['cluster']}: probability {entry['probability']:.2f} on its image")
        if publish:
            publish_or_exit(run_dir, db)
