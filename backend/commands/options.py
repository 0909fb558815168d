"""What several commands share: the database and device options and how they resolve."""
from __future__ import annotations

DB_HELP = "SQLAlchemy URL [default: AMBIENT_DATABASE_URL or sqlite:///ambient.db]."
RAY_HELP = ("Spread the work over the Ray cluster at ADDRESS (host:port, ray://host:port, or auto: the running "
            "cluster, RAY_ADDRESS honoured). Every node needs Ambient installed and the folders at the same paths.")


def database_url(db: str | None) -> str:
    """--db, else the server settings' URL (AMBIENT_DATABASE_URL)."""
    from backend.config import Settings

    return db or Settings().database_url


def open_sessions(url: str):
    """A session factory on ``url``; a database that cannot be opened (unreachable, stale schema) ends the
    command with its reason and exit status 1 instead of a traceback."""
    import typer
    from sqlalchemy.engine import make_url

    from backend.db.session import open_db, session_factory

    try:
        return session_factory(open_db(url))
    except Exception as error:
        typer.echo(f"error: cannot open the database {make_url(url).render_as_string(hide_password=True)}: "
                   f"{error}", err=True)
        raise typer.Exit(1) from None


def device_option(device: str):
    """--device ("auto", "cpu", "cuda:N") as a torch device; one the machine lacks is refused as a bad --device."""
    import typer

    from model.device import resolve_device

    try:
        return resolve_device(device)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--device") from None
