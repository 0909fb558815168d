"""`ambient demo DIR`: the demo experiment's pipeline plan (backend/pipeline.py), step by step."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import typer

from backend.commands.options import DB_HELP, database_url
from model.cpu import PORTABLE, capability_line, pin_portable_kernels
from model.settings import OBJECT_MODES


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to the CLI."""

    @app.command("demo")
    def demo(
        root: Path = typer.Argument(..., help="Folder for the demo's world/, data/ and run/."),
        objects: str = typer.Option("auto", "--objects", help=f"Where objects come from: {', '.join(OBJECT_MODES)}."),
        db: Optional[str] = typer.Option(None, help=DB_HELP),
        print_only: bool = typer.Option(False, "--print", help="Print the steps still to run, one a line, and stop."),
        portable: bool = typer.Option(False, "--portable", envvar=PORTABLE, help="Pin torch's CPU kernels to AVX2 and "
                                      "its threads to 2 in every step: the figures of a 2-core AVX2 CPU whatever "
                                      "this one has (same torch build; model/cpu.py)."),
    ) -> None:
        """Run the demo: world -> ingest -> labels -> train -> units -> dissect, the same plan as the admin
        page's demo job; a rerun resumes from what DIR already holds."""
        if portable:
            try:
                pin_portable_kernels()     # here and in every step: before the imports below load torch
            except RuntimeError as error:
                raise typer.BadParameter(str(error), param_hint="--portable") from None
        from backend.pipeline import DEMO, demo_folders, plan

        if objects not in OBJECT_MODES:
            raise typer.BadParameter(f"{objects!r}; choose one of {', '.join(OBJECT_MODES)}", param_hint="--objects")
        steps = plan("demo", {**DEMO, "objects": objects, **demo_folders(root)})
        if print_only:
            for step in steps:
                typer.echo(" ".join(["ambient", *step.argv]))
            return
        from backend.data_roots import data_roots, roots_env

        # DIR is the demo's own: its steps publish what they made there, wherever it is.
        roots = list(dict.fromkeys([*data_roots(), root.resolve()]))
        env = {**os.environ, "AMBIENT_DATABASE_URL": database_url(db), "AMBIENT_DATA_ROOTS": roots_env(roots)}
        typer.echo(capability_line())
        for step in steps:
            typer.echo(f"== {step.name}: ambient {' '.join(step.argv)}")
            code = subprocess.run([sys.executable, "-m", "backend.cli", *step.argv], env=env).returncode
            if code != 0:
                typer.echo(f"error: step {step.name} failed (exit status {code}); run `ambient demo {root}` "
                           f"again to resume", err=True)
                raise typer.Exit(code if code > 0 else 1)
        typer.echo(f"The figures above: {capability_line()}")
        _open_campaign(database_url(db), Path(demo_folders(root)["run_dir"]))


def _open_campaign(url: str, run_dir: Path) -> None:
    """The demo's run in an open campaign, so that the app it ends with has units to annotate (any other new
    run waits for an admin to put it in one)."""
    from sqlalchemy import select

    from backend.app.campaign import run_default_campaign
    from backend.commands.options import open_sessions
    from backend.db.models import Run

    with open_sessions(url)() as session:
        run = session.scalar(select(Run).where(Run.run_dir == str(run_dir.resolve())))
        if run is None:
            typer.echo(f"error: the demo's run {run_dir} is not in the database", err=True)
            raise typer.Exit(1)
        campaign, created = run_default_campaign(session, run)
        typer.echo(f"{'Opened' if created else 'Annotators label'} the campaign '{campaign.name}' (id {campaign.id}) "
                   f"for the demo's run: its {campaign.layer} units are in the annotators' queue"
                   f"{'' if campaign.is_open else ' once an admin opens it'}.")
