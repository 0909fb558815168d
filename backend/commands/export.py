"""`ambient export`: a run's detectors (and Table 1), raw annotations or sound judgements in one of its campaigns
(its default campaign unless --campaign names another), as CSV or JSON."""
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
        what: str = typer.Option("detectors", "--what", help="detectors: the per-unit verdicts of the detector "
                                 "units; annotations: one row per annotator and unit (answer, category, marked "
                                 "images, time); judgements: one row per annotator and clip (audible or not)."),
        format: str = typer.Option("csv", "--format", help="csv: one row per record; json: the records (with "
                                   "--what detectors, also Table 1)."),
        out: Optional[Path] = typer.Option(None, help="Write here instead of standard output."),
        campaign: Optional[int] = typer.Option(None, help="The campaign of the run whose answers to export "
                                               "(`ambient campaign list`); default: the run's default campaign."),
        db: Optional[str] = typer.Option(None, help=DB_HELP),
    ) -> None:
        """Export a run's detectors, raw annotations or sound judgements."""
        from sqlalchemy import or_, select

        from backend.app.campaign import run_campaign
        from backend.app.errors import TaskError
        from backend.app.exports import EXPORTS, FIELDS, export_records, records_csv
        from backend.app.results import detector_records, run_report, table1_record
        from backend.config import Settings
        from backend.db.models import Run

        if format not in ("csv", "json"):
            raise typer.BadParameter(f"{format!r}: choose csv or json", param_hint="--format")
        if what not in EXPORTS:
            raise typer.BadParameter(f"{what!r}: choose {', '.join(EXPORTS[:-1])} or {EXPORTS[-1]}",
                                     param_hint="--what")
        settings = Settings(database_url=db) if db else Settings()
        with open_sessions(settings.database_url)() as session:
            matches = session.scalars(select(Run).where(or_(
                Run.name == run, Run.run_dir == str(Path(run).resolve()),
                Run.id == (int(run) if run.isdigit() else -1)))).all()
            if len(matches) != 1:
                known = ", ".join(f"{r.id} ({r.name})" for r in session.scalars(select(Run).order_by(Run.id)))
                problem = "no run" if not matches else "several runs"
                raise typer.BadParameter(f"{problem} called {run!r}; runs: {known or 'none'}", param_hint="RUN")
            found = matches[0]
            try:
                chosen = run_campaign(session, found, campaign)
            except TaskError as error:
                raise typer.BadParameter(error.message.removeprefix("campaign: "), param_hint="--campaign") from None
            if what == "detectors":     # one report for both the detectors and Table 1
                report = run_report(session, found, chosen)
                records, extra = detector_records(report), {"table1": table1_record(report)}
            else:
                records, extra = export_records(session, found, what, chosen), {}
        text = (records_csv(records, FIELDS[what]) if format == "csv" else
                json.dumps({"run": found.name, "campaign": chosen.name if chosen else None, what: records, **extra}, indent=1))
        if out is None:
            typer.echo(text, nl=not text.endswith("\n"))
        else:
            out.write_text(text)
            typer.echo(f"Wrote {len(records)} {what} of run {found.name} to {out}")
