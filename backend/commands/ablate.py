"""`ambient ablate`: switch a layer's units off and measure what the sound prediction loses (model/units/ablate.py)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer

from backend.commands.options import DB_HELP, device_option
from model.settings import ABLATION


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to the CLI."""

    @app.command("ablate")
    def ablate(
        run_dir: Path = typer.Argument(..., help="Training run (its dataset's test split is measured)."),
        layer: str = typer.Option(ABLATION.layer, "--layer", help="Layer whose units are switched off."),
        units: Optional[str] = typer.Option(None, "--units", help="Comma-separated unit indices, e.g. 3,17."),
        category: Optional[str] = typer.Option(None, "--category", help="Switch off this category's detectors "
                                               "(from RUN_DIR/dissection.json), e.g. waterfall."),
        detectors: bool = typer.Option(False, "--detectors", help="Each category's detectors in turn (the default "
                                       "when neither --units nor --category is given)."),
        each_unit: bool = typer.Option(False, "--each-unit", help="Also switch off every unit alone (the unit pages' "
                                       "\"sounds this unit helps predict\")."),
        repeats: int = typer.Option(ABLATION.random_repeats, "--repeats", min=0,
                                    help="Random unit sets of the same size per ablation (the control)."),
        seed: int = typer.Option(ABLATION.seed, "--seed", help="Seed of the random unit sets."),
        device: str = typer.Option("auto", help="Torch device: auto (cuda when available, else cpu), cpu, cuda:N."),
        db: Optional[str] = typer.Option(None, help=DB_HELP),
        publish: bool = typer.Option(True, "--publish/--no-publish",
                                     help="Publish the run into the database at the end (`ambient publish`)."),
    ) -> None:
        """Zero units in the forward pass and measure each sound label's accuracy and the true label's
        probability on the test split, against as many random units; writes RUN_DIR/ablation_<layer>.json."""
        from backend.commands.publish import publish_or_exit
        from model.units.ablate import ablate_run
        from model.data.dataset import write_json_atomic
        from model.network.run import ablation_file

        if sum((units is not None, category is not None, detectors)) > 1:
            raise typer.BadParameter("choose one of --units, --category and --detectors",
                                     param_hint="--units / --category / --detectors")
        unit_list = None
        if units is not None:
            try:
                unit_list = sorted({int(u) for u in units.split(",") if u.strip()})
            except ValueError:
                raise typer.BadParameter(f"{units!r}: give unit indices separated by commas, e.g. 3,17",
                                         param_hint="--units") from None
            if not unit_list:
                raise typer.BadParameter("no unit given", param_hint="--units")
        if not run_dir.is_dir():
            raise typer.BadParameter(f"{run_dir}: no such run folder", param_hint="RUN_DIR")
        torch_device = device_option(device)
        settings = replace(ABLATION, random_repeats=repeats, seed=seed)
        try:
            result = ablate_run(run_dir, layer, unit_list, category, each_unit, settings, torch_device)
        except (ValueError, FileNotFoundError) as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(1)
        path = ablation_file(run_dir, layer)
        write_json_atomic(path, result)
        base = result["baseline"]["accuracy"]
        typer.echo(f"intact network: {base:.1%} held-out accuracy on {result['test_frames']} test frames")
        for ablation in result["ablations"]:
            random = ablation["random"]
            line = (f"{ablation['category'] or 'units'} ({len(ablation['units'])} units): accuracy "
                    f"{ablation['accuracy']:.1%}; {random['repeats']} x as many random units: {random['accuracy']:.1%} "
                    f"± {random['accuracy_std']:.1%}" if random["repeats"] else
                    f"{ablation['category'] or 'units'} ({len(ablation['units'])} units): accuracy {ablation['accuracy']:.1%}")
            truth = ablation.get("truth")
            if truth and truth["own_drop"] is not None:
                line += (f"; true-label probability drop on the {truth['own_frames']} frames that hear it "
                         f"{_drop(truth['own_drop'])} (random units {_drop(truth['own_drop_random'])}), on the other "
                         f"{truth['other_frames']} {_drop(truth['other_drop'])}")
            elif truth:
                line += "; no test frame hears it"
            typer.echo(line)
        typer.echo(f"wrote {path}")
        if publish:
            publish_or_exit(run_dir, db)


def _drop(value: float | None) -> str:
    """A probability drop for the summary; none where no frame (or no random draw) measured it."""
    return "none" if value is None else f"{value:+.4f}"
