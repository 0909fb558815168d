"""`ambient dissect`: automatic unit labels from the demo world's ground truth."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from backend.config import Settings
from model.settings import DETECTOR_PRECISION, UNITS


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to the CLI."""

    @app.command("dissect")
    def dissect(
        run_dir: Path = typer.Argument(..., help="Run folder that `ambient units` has analysed."),
        truth: bool = typer.Option(False, "--truth", help="Label units from the generated world's ground truth "
                                   "(the pool's videos must come from `ambient world`)."),
        layer: str = typer.Option(UNITS.layer, help="Layer whose units to label."),
        db: Optional[str] = typer.Option(None, help="SQLAlchemy URL [default: AMBIENT_DATABASE_URL or "
                                         "sqlite:///ambient.db]."),
    ) -> None:
        """Label each unit with the category its top images show most, as the paper's annotators did."""
        import numpy as np

        from backend.db import store
        from backend.db.session import init_db, session_factory
        from model import dataset as ds
        from model.dissect import detector_counts, dissect as dissect_units, write_dissection
        from model.units import units_file
        from model.world.truth import find_world_dir, frame_truth

        if not truth:
            raise typer.BadParameter("only ground-truth dissection exists: pass --truth", param_hint="--truth")
        path = units_file(run_dir, layer)
        if not path.exists():
            raise typer.BadParameter(f"{path} is missing; run `ambient units {run_dir}` first",
                                     param_hint="RUN_DIR")
        try:
            with np.load(path) as data:
                data_dir = Path(json.loads(str(data["meta"]))["data_dir"])
            report = json.loads((data_dir / ds.REPORT).read_text())
            if not report.get("videos_dir"):
                raise FileNotFoundError(f"{data_dir / ds.REPORT}: records no videos folder to find the world in")
            world_dir = find_world_dir(report["videos_dir"])
            labels = dissect_units(run_dir, lambda r: frame_truth(world_dir, r.video, r.time).objects, layer)
            out = write_dissection(run_dir, labels)
            with session_factory(init_db(db or Settings().database_url)).begin() as session:
                store.write_auto_labels(session, run_dir, layer, [
                    store.AutoLabel(label.unit, label.category, label.precision, label.iou) for label in labels])
        except (FileNotFoundError, LookupError) as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(1)
        counts = detector_counts(labels, DETECTOR_PRECISION)
        typer.echo(f"wrote {out}: {counts['detectors']} of {len(labels)} units have precision >= "
                   f"{DETECTOR_PRECISION:.0%} for a category ({counts['categories']} categories): "
                   f"{counts['sounding']} for sounding categories, {counts['silent']} for silent ones")
