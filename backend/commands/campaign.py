"""`ambient campaign create|list|close|gold|exclude|include`: annotation campaigns, each one run's layer put before
annotators, and their quality control (gold units, excluded annotators)."""
from __future__ import annotations

from typing import Optional

import typer

from annotation.quality import DOUBTFUL_RULE
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
        gold_rate: float = typer.Option(0.0, "--gold-rate", help="Share of each annotator's units that are gold "
                                        "(answer known, to score them), 0 to 0.5; e.g. 0.1: one in ten."),
        gold_from_truth: bool = typer.Option(False, "--gold-from-truth", help="Gold units from the run's world truth "
                                             "(RUN_DIR/dissection.json of `ambient dissect --truth`)."),
        adaptive: bool = typer.Option(False, "--adaptive", help="Two judges per unit, the full --judges only where "
                                      f"they disagree or one is doubtful ({DOUBTFUL_RULE})."),
        db: Optional[str] = typer.Option(None, help=DB_HELP),
    ) -> None:
        """Create a campaign for a run's layer: blind, open to every annotator."""
        from backend.app.campaign import CampaignFields, create_campaign
        from backend.app.errors import TaskError
        from backend.app.gold import gold_from_run_truth, run_truth
        from backend.config import Settings
        from backend.db.models import Run

        settings = Settings(database_url=db) if db else Settings()
        with open_sessions(settings.database_url)() as session:
            try:
                if gold_from_truth and session.get(Run, run) is not None:
                    run_truth(session.get(Run, run))     # before the campaign is made: refused whole or done whole
                campaign = create_campaign(session, CampaignFields(name=name, run_id=run, layer=layer, judges=judges,
                                                                   open=open_now, gold_rate=gold_rate,
                                                                   adaptive=adaptive))
                gold = gold_from_run_truth(session, campaign) if gold_from_truth else 0
            except TaskError as error:
                field, _, message = error.message.partition(": ")
                hint = {"run_id": "--run", "layer": "--layer", "judges": "--judges", "name": "NAME",
                        "gold_rate": "--gold-rate", "gold_from_truth": "--gold-from-truth"}.get(field)
                raise typer.BadParameter(message if hint else error.message, param_hint=hint) from None
            typer.echo(f"Created campaign {campaign.id} '{campaign.name}' (run {campaign.run_id}, {campaign.layer}, "
                       f"{campaign.judges} judges per unit{', adaptive' if campaign.adaptive else ''}), "
                       f"{'open' if campaign.is_open else 'closed'}"
                       f"{', the run’s default' if campaign.is_default else ''}"
                       f"{f', gold rate {campaign.gold_rate:g}' if campaign.gold_rate else ''}"
                       f"{f', {gold} gold units from the truth' if gold_from_truth else ''}.")

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

    @campaign_app.command("gold")
    def gold(campaign_id: int = typer.Argument(..., metavar="ID", help="The campaign's id (`ambient campaign list`)."),
             unit: str = typer.Option(..., "--unit", help="LAYER:INDEX, e.g. conv5:12."),
             answer: str = typer.Option(..., "--answer", help="yes or no: does one object show in its top images?"),
             category: Optional[str] = typer.Option(None, "--category", help="For yes: the object (a known category)."),
             db: Optional[str] = typer.Option(None, help=DB_HELP)) -> None:
        """Make a unit gold: its answer is known, it is mixed into annotators' queues and scores them."""
        from backend.app.errors import TaskError
        from backend.app.gold import set_gold, unit_of_campaign
        from backend.config import Settings

        if answer not in ("yes", "no"):
            raise typer.BadParameter(f"yes or no, got {answer!r}.", param_hint="--answer")
        settings = Settings(database_url=db) if db else Settings()
        with open_sessions(settings.database_url)() as session:
            try:
                campaign = _campaign(session, campaign_id)
                found = unit_of_campaign(session, campaign, unit)
                set_gold(session, campaign, found, answer, category, "typed")
            except TaskError as error:
                field, _, message = error.message.partition(": ")
                hint = {"unit": "--unit", "category": "--category", "answer": "--answer", "ID": "ID"}.get(field)
                raise typer.BadParameter(message if hint else error.message, param_hint=hint) from None
            typer.echo(f"Unit {unit} is gold in campaign {campaign.id}: {answer}"
                       f"{f' ({category.strip().lower()})' if category and answer == 'yes' else ''}.")

    @campaign_app.command("exclude")
    def exclude(campaign_id: int = typer.Argument(..., metavar="ID", help="The campaign's id."),
                name: str = typer.Argument(..., metavar="NAME", help="The annotator's account name."),
                db: Optional[str] = typer.Option(None, help=DB_HELP)) -> None:
        """Exclude an annotator: their answers leave every verdict, their units go back to the queue; nothing
        is deleted (`include` takes them back)."""
        _exclusion(campaign_id, name, db, exclude=True)

    @campaign_app.command("include")
    def include(campaign_id: int = typer.Argument(..., metavar="ID", help="The campaign's id."),
                name: str = typer.Argument(..., metavar="NAME", help="The annotator's account name."),
                db: Optional[str] = typer.Option(None, help=DB_HELP)) -> None:
        """Include an excluded annotator again: their answers count again."""
        _exclusion(campaign_id, name, db, exclude=False)


def _campaign(session, campaign_id: int):
    from backend.app.errors import TaskError
    from backend.db.models import Campaign

    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise TaskError(f"ID: there is no campaign {campaign_id} (`ambient campaign list`).")
    return campaign


def _exclusion(campaign_id: int, name: str, db: str | None, exclude: bool) -> None:
    from backend.app.errors import TaskError
    from backend.app.gold import exclude_annotator, include_annotator
    from backend.config import Settings

    settings = Settings(database_url=db) if db else Settings()
    with open_sessions(settings.database_url)() as session:
        try:
            campaign = _campaign(session, campaign_id)
            (exclude_annotator if exclude else include_annotator)(session, campaign, name)
        except TaskError as error:
            field, _, message = error.message.partition(": ")
            raise typer.BadParameter(message, param_hint={"name": "NAME", "ID": "ID"}.get(field)) from None
        typer.echo(f"{name} is {'excluded from' if exclude else 'included again in'} campaign {campaign.id} "
                   f"'{campaign.name}': {'their answers count in no verdict' if exclude else 'their answers count again'}.")
