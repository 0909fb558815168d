"""`ambient export`: a run's detectors (and Table 1) as CSV or JSON."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from backend.commands.options import DB_HELP, open_sessions


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to the CLI."""

    @app.command("export")
    def export(
        run: str = typer.Argument(..., help="The run: its id, its name, or its folder."),
        format: str = typer.Option("csv", "--format", help="csv: the detectors table; json: detectors and Table 1."),
        out: Optional[Path] = typer.Option(None, help="Write here instead of standard output."),
        db: Optional[str] = typer.Option(None, help=DB_HELP),
    ) -> None:
        """Export a run's detector units: unit, category, precision, annotators, agreement, characteristic."""
        from sqlalchemy import or_, select

        from backend.app.results import detector_records, detectors_csv, run_report, table1_record
        from backend.config import Settings
        from backend.db.models import Run

        if format not in ("csv", "json"):
            raise typer.BadParameter(f"{format!r}: choose csv or json", param_hint="--format")
        settings = Settings(database_url=db) if db else Settings()
        with open_sessions(settings.database_url)() as session:
            matches = session.scalars(select(Run).where(or_(
                Run.name == run, Run.run_dir == str(Path(run).resolve()),
                Run.id == (int(run) if run.isdigit() else -1)))).all()
            if len(matches) != 1:
                known = ", ".join(f"{r.id} ({r.name})" for r in session.scalars(select(Run).order_by(Run.id)))
                problem = "no run" if not matches else "several runs"
                raise typer.BadParameter(f"{problem} called {run!r}; runs: {known or 'none'}", param_hint="RUN")
            report = run_report(session, matches[0])
        records = detector_records(report)
        text = (detectors_csv(records) if format == "csv" else
                json.dumps({"run": report.run.name, "detectors": records, "table1": table1_record(report)}, indent=1))
        if out is None:
            typer.echo(text, nl=not text.endswith("\n"))
        else:
            out.write_text(text)
            typer.echo(f"Wrote {len(records)} detectors of run {report.run.name} to {out}")
