"""`ambient dissect`: automatic unit labels from the demo world's ground truth, then published."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from backend.commands.options import DB_HELP
from model.settings import DETECTOR_PRECISION, UNITS


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to the CLI."""

    @app.command("dissect")
    def dissect(
        run_dir: Path = typer.Argument(..., help="Run folder that `ambient units` has analysed."),
        truth: bool = typer.Option(False, "--truth", help="Label units from the generated world's ground truth "
                                   "(the pool's videos must come from `ambient world`)."),
        layer: str = typer.Option(UNITS.layer, help="Layer whose units to label."),
        db: Optional[str] = typer.Option(None, help=DB_HELP),
        publish: bool = typer.Option(True, "--publish/--no-publish",
                                     help="Publish the run into the database at the end (`ambient publish`)."),
    ) -> None:
        """Label each unit with the category its top images show most, as the paper's annotators did."""
        from backend.commands.publish import publish_or_exit
        from model import dataset as ds
        from model.dissect import detector_counts, dissect as dissect_units, write_dissection
        from model.run import read_units_meta, units_file
        from model.world.truth import find_world_dir, frame_truth

        if not truth:
            raise typer.BadParameter("only ground-truth dissection exists: pass --truth", param_hint="--truth")
        path = units_file(run_dir, layer)
        if not path.exists():
            raise typer.BadParameter(f"{path} is missing; run `ambient units {run_dir}` first",
                                     param_hint="RUN_DIR")
        try:
            data_dir = Path(read_units_meta(path)["data_dir"])
            videos_dir = ds.read_report(data_dir).get("videos_dir")
            if not videos_dir:
                raise FileNotFoundError(f"{data_dir / ds.REPORT}: records no videos folder to find the world in")
            world_dir = find_world_dir(videos_dir)
            labels = dissect_units(run_dir, lambda r: frame_truth(world_dir, r.video, r.time).objects, layer)
            out = write_dissection(run_dir, labels, layer)
        except (FileNotFoundError, LookupError) as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(1)
        counts = detector_counts(labels, DETECTOR_PRECISION)
        typer.echo(f"wrote {out}: {counts['detectors']} of {len(labels)} units have precision >= "
                   f"{DETECTOR_PRECISION:.0%} for a category ({counts['categories']} categories): "
                   f"{counts['sounding']} for sounding categories, {counts['silent']} for silent ones "
                   f"(characteristic sounds as model/data/object_categories.csv has them)")
        if publish:
            publish_or_exit(run_dir, db)
            # The pages count with the database's flags, which admins may have edited: say so when they differ.
            from dataclasses import replace

            from backend.commands.options import database_url, open_sessions
            from backend.publish import characteristic_sounds

            with open_sessions(database_url(db))() as session:
                flags = characteristic_sounds(session)
            published = detector_counts([replace(label, sounding=flags.get(label.category, False))
                                         for label in labels], DETECTOR_PRECISION)
            if published != counts:
                typer.echo(f"with the database's characteristic sounds (as the results pages count): "
                           f"{published['sounding']} sounding, {published['silent']} silent")
