"""`ambient localize`: where the sound comes from, a run's heatmaps scored against the world's truth
(model/units/localize.py), into RUN_DIR/localization.json."""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Optional

import typer

from backend.commands.options import DB_HELP, device_option


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to the CLI."""

    @app.command("localize")
    def localize(
        run_dir: Path = typer.Argument(..., help="Training run on a generated world's data."),
        world: Optional[Path] = typer.Option(None, "--world", help="The world the run's data was ingested from "
                                             "(default: the one its ingest report names)."),
        split: str = typer.Option("test", "--split", help="Frames to score: test, train or all."),
        scene_run: Optional[Path] = typer.Option(None, "--scene-run", help="The scene-trained control on the same "
                                                 "data (`ambient train --labels scene`): scored as a baseline."),
        as_json: bool = typer.Option(False, "--json", help="Print localization.json instead of the table."),
        device: str = typer.Option("auto", help="Torch device: auto (cuda when available, else cpu), cpu, cuda:N."),
        db: Optional[str] = typer.Option(None, help=DB_HELP),
        publish: bool = typer.Option(True, "--publish/--no-publish",
                                     help="Publish the run into the database at the end (`ambient publish`)."),
    ) -> None:
        """Score the heatmaps of the true sound label against the union of the heard sources' masks (cIoU, AUC,
        pointing game), per category, beside a centre prior and the untrained network; and how the heatmaps
        behave where the sound is off screen or only silent objects are in view."""
        from backend.commands.publish import publish_or_exit
        from model.data.dataset import write_json_atomic
        from model.network.run import localization_file
        from model.settings import POOL_SPLITS
        from model.units.localize import format_table, localize_run

        if split not in POOL_SPLITS:
            raise typer.BadParameter(f"{split!r}: choose one of {', '.join(POOL_SPLITS)}", param_hint="--split")
        if not run_dir.is_dir():
            raise typer.BadParameter(f"{run_dir}: no such run folder", param_hint="RUN")
        for path, hint in ((world, "--world"), (scene_run, "--scene-run")):
            if path is not None and not path.is_dir():
                raise typer.BadParameter(f"{path}: no such folder", param_hint=hint)
        try:
            result = localize_run(run_dir, world, split, scene_run,
                                  device_option(device), show_progress=not as_json)
        except (ValueError, FileNotFoundError) as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(1)
        path = localization_file(run_dir)
        write_json_atomic(path, result)
        if as_json:
            if publish:     # stdout is the JSON alone: what publishing says goes to stderr
                with contextlib.redirect_stdout(sys.stderr):
                    publish_or_exit(run_dir, db)
            typer.echo(json.dumps(result, indent=1))
            return
        kinds = result["kinds"]
        typer.echo(f"{result['split']} frames: {kinds['visible']} with a heard source in view (scored), "
                   f"{kinds['offscreen']} heard off screen, {kinds['silent']} with only silent objects, "
                   f"{kinds['empty']} empty; heatmap: {result['method']} of the true label; cIoU: the heatmap "
                   f"above its median, share of frames >= {result['convention']['success_ciou']}")
        typer.echo(format_table(result))
        typer.echo("heatmap methods, pointing / AUC: " + "; ".join(
            f"{network}: " + ", ".join(f"{method} {row['pointing']:.2f} / {row['auc']:.2f}" for method, row in methods.items()
                                       if row["frames"])
            for network, methods in result["methods"].items()))
        negatives = result["negatives"]
        peaks = [f"{kind} x{negatives[kind]['peak_vs_visible']:.2f}" for kind in ("offscreen", "silent")
                 if negatives[kind]["peak_vs_visible"] is not None]
        if peaks:
            typer.echo(f"peak of the heatmap against frames with a visible source: {', '.join(peaks)}")
        typer.echo(f"wrote {path}")
        if publish:
            publish_or_exit(run_dir, db)
