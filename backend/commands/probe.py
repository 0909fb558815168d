"""`ambient probe`: linear SVMs on a run's top layers (paper 4.2, Table 2), results into RUN_DIR."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from backend.commands.options import device_option

FORMATS = ("voc2007", "imagefolder")


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to the CLI."""

    @app.command("probe")
    def probe(
        run_dir: Path = typer.Argument(..., help="Training run whose network is probed; results go into it."),
        dataset: Optional[Path] = typer.Option(None, "--dataset", help="Benchmark folder (see --format)."),
        format: Optional[str] = typer.Option(None, "--format", help="voc2007 (JPEGImages, ImageSets/Main/"
                                             "<class>_{trainval,test}.txt; mAP) or imagefolder (one folder per "
                                             "class; accuracy)."),
        world: Optional[Path] = typer.Option(None, "--world", help="A generated world: probe scene (accuracy) and "
                                             "objects on screen (mAP) on the held-out videos' frames."),
        data: Optional[Path] = typer.Option(None, "--data", help="With --world: the dataset whose test frames are "
                                            "probed (default: the run's training data)."),
        compare: Optional[list[Path]] = typer.Option(None, "--compare", help="Another run to probe the same way "
                                                     "(repeat the option); the untrained network is always added."),
        layers: str = typer.Option("max5,pool5,fc6,fc7", "--layers", help="Comma-separated, from max5, pool5, "
                                   "fc6, fc7."),
        per_class: Optional[int] = typer.Option(None, "--per-class", min=1, help="imagefolder: training images "
                                                "per class (SUN397: 20); default: half of each class."),
        splits: int = typer.Option(3, "--splits", min=1, help="imagefolder: random splits, scores averaged."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
        jobs: int = typer.Option(1, "--jobs", min=1, help="(network, layer) pairs probed at a time, each "
                                "in its own process (CPU)."),
    ) -> None:
        """Fit linear SVMs (C by 3-fold cross-validation) on max5/pool5/fc6/fc7 and write RUN_DIR/probe_<dataset>.json."""
        from dataclasses import replace

        from model.units import probe as pr
        from model.network.run import read_run_json, write_probe
        from model.settings import PROBE

        if (world is None) == (dataset is None):
            raise typer.BadParameter("give either --world WORLD_DIR or --dataset DIR --format FORMAT",
                                     param_hint="--world/--dataset")
        if dataset is not None and format not in FORMATS:
            raise typer.BadParameter(f"{format!r} is not one of {', '.join(FORMATS)}", param_hint="--format")
        for path, hint in ((world, "--world"), (dataset, "--dataset"), (data, "--data")):
            if path is not None and not path.is_dir():
                raise typer.BadParameter(f"{path} is not a directory", param_hint=hint)
        chosen = tuple(layer.strip() for layer in layers.split(",") if layer.strip())
        unknown = [layer for layer in chosen if layer not in pr.PROBE_LAYERS]
        if unknown or not chosen:
            raise typer.BadParameter(f"{unknown[0] if unknown else layers!r}: choose from "
                                     f"{', '.join(pr.PROBE_LAYERS)}", param_hint="--layers")
        torch_device = device_option(device)
        settings = replace(PROBE, layers=chosen, jobs=jobs)
        try:
            main = pr.load_probed(run_dir, torch_device)
            networks = [main] + ([pr.untrained_copy(main, settings.seed, torch_device)] if main.trained else [])
            networks += [pr.load_probed(other, torch_device) for other in compare or []]
            common = dict(layers=chosen, device=torch_device, settings=settings, progress=True, log=typer.echo)
            if world is not None:
                data_dir = data or read_run_json(run_dir).get("data_dir")
                if not data_dir:
                    raise FileNotFoundError(f"{run_dir}: run.json names no data_dir; pass --data DATA_DIR")
                result = pr.probe_world(networks, data_dir, world, **common)
            elif format == "voc2007":
                result = pr.probe_voc2007(networks, dataset, **common)
            else:
                result = pr.probe_imagefolder(networks, dataset, per_class=per_class, splits=splits, **common)
        except (FileNotFoundError, ValueError) as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(1)
        typer.echo(pr.format_table(result))
        typer.echo(f"wrote {write_probe(run_dir, result)}")
