"""`ambient campaign create|list|close`: annotation campaigns, each one run's layer put before annotators."""
from __future__ import annotations

from typing import Optional

import typer

from backend.commands.options import DB_HELP, open_sessions
from model.settings import ANNOTATION


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to the CLI."""
    campaign_app = typer.Typer(help="Annotation campaigns: which run's layer annotators label.", no_args_is_help=True)
    app.add_typer(campaign_app, name="campaign")

    @campaign_app.command("create")
    def create(
        name: str = typer.Argument(..., help="What annotators see, e.g. \"Sound conv5, spring\"."),
        run: int = typer.Option(..., "--run", help="The run's id (the results page and `ambient export` show it)."),
        layer: str = typer.Option("conv5", "--layer", help="The layer whose units are labelled."),
        judges: int = typer.Option(ANNOTATION.annotators_per_unit, "--judges", help="Annotators per unit."),
        open_now: bool = typer.Option(False, "--open", help="Open it at once (else an admin opens it later)."),
        db: Optional[str] = typer.Option(None, help=DB_HELP),
    ) -> None:
        """Create a campaign for a run's layer: blind, open to every annotator."""
        from backend.app.campaign import CampaignFields, create_campaign
        from backend.app.errors import TaskError
        from backend.config import Settings

        settings = Settings(database_url=db) if db else Settings()
        with open_sessions(settings.database_url)() as session:
            try:
                campaign = create_campaign(session, CampaignFields(name=name, run_id=run, layer=layer, judges=judges,
                                                                   open=open_now))
            except TaskError as error:
                field, _, message = error.message.partition(": ")
                hint = {"run_id": "--run", "layer": "--layer", "judges": "--judges", "name": "NAME"}.get(field)
                raise typer.BadParameter(message if hint else error.message, param_hint=hint) from None
            typer.echo(f"Created campaign {campaign.id} '{campaign.name}' (run {campaign.run_id}, {campaign.layer}, "
                       f"{campaign.judges} judges per unit), {'open' if campaign.is_open else 'closed'}"
                       f"{', the run’s default' if campaign.is_default else ''}.")

    @campaign_app.command("list")
    def list_campaigns(db: Optional[str] = typer.Option(None, help=DB_HELP)) -> None:
        """Every campaign: id, open or closed, run, layer, judges, complete units, name."""
        from sqlalchemy import select

        from backend.app.campaign import campaign_size, complete_units
        from backend.config import Settings
        from backend.db.models import Campaign

        settings = Settings(database_url=db) if db else Settings()
        with open_sessions(settings.database_url)() as session:
            campaigns = session.scalars(select(Campaign).order_by(Campaign.id)).all()
            if not campaigns:
                typer.echo("No campaigns yet: `ambient campaign create NAME --run RUN_ID --open`.")
            for c in campaigns:
                typer.echo(f"{c.id}\t{'open' if c.is_open else 'closed'}\trun {c.run_id}\t{c.layer}\t"
                           f"{c.judges} judges\t{complete_units(session, c)} of {campaign_size(session, c)} complete\t"
                           f"{c.name}{' (default)' if c.is_default else ''}")

    @campaign_app.command("close")
    def close(campaign_id: int = typer.Argument(..., metavar="ID", help="The campaign's id (`ambient campaign list`)."),
              db: Optional[str] = typer.Option(None, help=DB_HELP)) -> None:
        """Close a campaign: its units leave the queue; its answers stay."""
        from backend.app.campaign import set_open
        from backend.app.errors import TaskError
        from backend.config import Settings

        settings = Settings(database_url=db) if db else Settings()
        with open_sessions(settings.database_url)() as session:
            try:
                campaign = set_open(session, campaign_id, False)
            except TaskError as error:
                raise typer.BadParameter(error.message, param_hint="ID") from None
            typer.echo(f"Closed campaign {campaign.id} '{campaign.name}'.")
