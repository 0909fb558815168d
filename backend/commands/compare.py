"""`ambient compare`: two networks' units matched by their activations over one pool (model/units/compare.py)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from backend.commands.options import DB_HELP, device_option
from model.settings import POOL_SPLITS, UNITS


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to the CLI."""

    @app.command("compare")
    def compare(
        run_a: Path = typer.Argument(..., help="Run A: each of its units is matched to one of B."),
        run_b: Path = typer.Argument(..., help="Run B."),
        pool: Optional[Path] = typer.Option(None, "--pool", help="Dataset folder (DATA_DIR) or image folder both "
                                            "networks are run on (default: the pool both runs' units were made on)."),
        layer: str = typer.Option(UNITS.layer, "--layer", help="Layer compared (the same size in both runs)."),
        split: str = typer.Option("all", "--split", help="With --pool: the frames of this split (test, train, all)."),
        as_json: bool = typer.Option(False, "--json", help="Print the whole comparison as JSON."),
        device: str = typer.Option("auto", help="Torch device: auto (cuda when available, else cpu), cpu, cuda:N."),
        db: Optional[str] = typer.Option(None, help=DB_HELP),
        publish: bool = typer.Option(False, "--publish/--no-publish",
                                     help="Publish run A at the end, with this comparison (its Compare page)."),
    ) -> None:
        """Match every unit of A to one unit of B (optimal assignment on the Pearson r of their spatial maxima over
        one pool), with both dissection labels; writes RUN_A/compare_<A>_<B>.json."""
        from backend.commands.publish import publish_or_exit
        from model.data.dataset import write_json_atomic
        from model.units.compare import compare_file_name, compare_runs

        for name, run in (("RUN_A", run_a), ("RUN_B", run_b)):
            if not run.is_dir():
                raise typer.BadParameter(f"{run}: no such run folder", param_hint=name)
        if split not in POOL_SPLITS:
            raise typer.BadParameter(f"{split!r}: choose {', '.join(POOL_SPLITS)}", param_hint="--split")
        if pool is not None and not pool.is_dir():
            raise typer.BadParameter(f"{pool}: no such folder; give a dataset folder or a folder of images",
                                     param_hint="--pool")
        torch_device = device_option(device)
        try:
            result = compare_runs(run_a, run_b, layer, pool, split, str(torch_device))
        except (ValueError, FileNotFoundError) as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(1)
        path = run_a / compare_file_name(run_a, run_b)
        write_json_atomic(path, result)
        if as_json:
            typer.echo(json.dumps(result, indent=1))
        else:
            summary = result["summary"]
            live = [u for u in result["units"] if not u["silent"]]
            typer.echo(f"{len(result['units'])} units of {layer} matched over {result['pool_images']} images of "
                       f"{result['pool']} ({result['matching']}): median r {result['median_r']:.2f}, "
                       f"{sum(u['r'] >= result['match_r'] for u in live)} of {len(live)} firing units at "
                       f"r >= {result['match_r']}")
            typer.echo(f"{summary['recurring']} of A's {summary['detectors_a']} detectors have a match in B that "
                       f"detects the same category with r >= {result['match_r']}")
            for category, counts in summary["categories"].items():
                typer.echo(f"  {category}: {counts['recurring']} of {counts['detectors']}")
            typer.echo(f"written to {path}")
        if publish:
            publish_or_exit(run_a, db)
