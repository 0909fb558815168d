"""`ambient publish RUN_DIR`: load a run's units, automatic labels and sound clusters into the database."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from backend.commands.options import DB_HELP, database_url, open_sessions


def publish_or_exit(run_dir: Path, db: str | None, replace: bool = False):
    """Publish RUN_DIR and print what changed; a clear error and exit status 1 when it cannot be."""
    from backend.publish import PublishError, publish_run

    engine = open_sessions(database_url(db)).kw["bind"]
    try:
        summary = publish_run(run_dir, engine, replace, progress=lambda m: typer.echo(f"publishing {m}"))
    except (PublishError, FileNotFoundError, LookupError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    layers = ", ".join(f"{layer} {state}" for layer, state in summary.layers.items())
    typer.echo(f"published run {summary.run_id} ({Path(run_dir).resolve()}): units of {layers}"
               + (f"; {summary.auto_labels} automatic labels" if summary.auto_labels is not None else "")
               + (f"; {summary.sound_groups} sound groups" if summary.sound_groups is not None else ""))
    for note in summary.notes:
        typer.echo(f"note: {note}", err=True)
    return summary


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to the CLI."""

    @app.command("publish")
    def publish(
        run_dir: Path = typer.Argument(..., exists=True, file_okay=False, help="Run folder `ambient units` wrote."),
        db: Optional[str] = typer.Option(None, help=DB_HELP),
        replace: bool = typer.Option(False, "--replace", help="Replace changed units even when people have "
                                     "annotated the published ones (their annotations are deleted)."),
    ) -> None:
        """Load RUN_DIR into the database: units and masked images, automatic labels, sound clusters.

        Idempotent: publishing the same files again changes nothing and keeps every annotation."""
        publish_or_exit(run_dir, db, replace)
