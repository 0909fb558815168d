"""`ambient worker`: run the jobs queued from the admin pages, one at a time."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from backend.commands.options import DB_HELP, open_sessions


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to the CLI."""

    @app.command("worker")
    def worker(
        db: Optional[str] = typer.Option(None, help=DB_HELP),
        jobs_dir: Optional[Path] = typer.Option(None, "--jobs-dir", help="Folder for the jobs' outputs "
                                                "[default: AMBIENT_JOBS_DIR or ./jobs]."),
        once: bool = typer.Option(False, "--once", help="Exit when the queue is empty instead of waiting."),
    ) -> None:
        """Claim queued jobs from the database and run each stage as a child process (one job at a time)."""
        from backend.config import Settings
        from backend.jobs import run_worker

        settings = Settings(database_url=db) if db else Settings()
        sessions = open_sessions(settings.database_url)
        folder = (jobs_dir or Path(settings.jobs_dir)).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        cluster = f", ingest and units on the Ray cluster at {settings.ray_address}" if settings.ray_address else ""
        typer.echo(f"worker on {settings.database_url}, jobs in {folder}{cluster}")
        try:
            count = run_worker(sessions, settings.database_url, folder, once=once,
                               ray_address=settings.ray_address or None)
        except KeyboardInterrupt:
            raise typer.Exit(0) from None
        typer.echo(f"{count} jobs run")
