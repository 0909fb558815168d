"""`ambient db upgrade`: migrate the database to this version's schema, once per deployment."""
from __future__ import annotations

from typing import Optional

import typer

from backend.commands.options import DB_HELP, database_url


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to the CLI."""
    db_app = typer.Typer(help="The database's schema.", no_args_is_help=True)
    app.add_typer(db_app, name="db")

    @db_app.command("upgrade")
    def upgrade(db: Optional[str] = typer.Option(None, help=DB_HELP)) -> None:
        """Create the database or bring it to the current schema (Alembic); other commands refuse a stale one."""
        from sqlalchemy.engine import make_url

        from backend.db.session import current_revision, head_revision, upgrade_db

        url = database_url(db)
        shown = make_url(url).render_as_string(hide_password=True)
        try:
            engine = upgrade_db(url)
        except Exception as error:   # an unreachable database or a failed migration: say which, no traceback
            typer.echo(f"cannot upgrade the database {shown}: {error}", err=True)
            raise typer.Exit(1) from None
        typer.echo(f"database {shown} at revision {current_revision(engine)} (head {head_revision()})")
