"""`ambient user add`, `ambient user password`, `ambient user disable|enable` and `ambient user token`:
accounts for annotators and admins, and their personal API tokens."""
from __future__ import annotations

from typing import Optional

import typer

from backend.commands.options import DB_HELP, open_sessions


def _account(session, name: str):
    """The account called ``name``; a usage error naming it when there is none."""
    from sqlalchemy import select

    from backend.db.models import Annotator

    account = session.scalar(select(Annotator).where(Annotator.name == name.strip()))
    if account is None:
        raise typer.BadParameter(f"there is no account called {name!r}", param_hint="NAME")
    return account


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to the CLI."""
    user_app = typer.Typer(help="Manage annotator and admin accounts.", no_args_is_help=True)
    app.add_typer(user_app, name="user")

    @user_app.command("add")
    def add(
        name: str = typer.Argument(..., help="Account name (letters, digits, '.', '-', '_')."),
        admin: bool = typer.Option(False, "--admin", help="An admin: sees results, exports, users and categories."),
        password: Optional[str] = typer.Option(None, help="The password; with neither this nor --prompt "
                                               "one is generated and printed."),
        prompt: bool = typer.Option(False, "--prompt", help="Ask for the password on the terminal."),
        db: Optional[str] = typer.Option(None, help=DB_HELP),
    ) -> None:
        """Add an account; prints the generated password when none is given."""
        from backend.app.users import AccountError, add_account
        from backend.config import Settings

        if prompt:
            password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
        settings = Settings(database_url=db) if db else Settings()
        with open_sessions(settings.database_url)() as session:
            try:
                account, password_used = add_account(session, name, password, admin, settings)
            except AccountError as error:
                raise typer.BadParameter(str(error), param_hint="NAME or --password") from None
        role = "admin" if account.is_admin else "annotator"
        if password is None:
            typer.echo(f"Added {role} {account.name} with password: {password_used}")
        else:
            typer.echo(f"Added {role} {account.name}.")

    @user_app.command("password")
    def change_password(
        name: str = typer.Argument(..., help="The account's name."),
        password: Optional[str] = typer.Option(None, help="The new password; with neither this nor --prompt "
                                               "one is generated and printed."),
        prompt: bool = typer.Option(False, "--prompt", help="Ask for the password on the terminal."),
        db: Optional[str] = typer.Option(None, help=DB_HELP),
    ) -> None:
        """Set an account's password; this logs the account out of every session and revokes its API tokens."""
        from backend.app.users import AccountError, set_password
        from backend.config import Settings

        settings = Settings(database_url=db) if db else Settings()
        with open_sessions(settings.database_url)() as session:
            account = _account(session, name)
            if prompt:
                password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
            try:
                password_used = set_password(session, account, password, settings)
            except AccountError as error:
                raise typer.BadParameter(str(error), param_hint="--password") from None
        if password is None:
            typer.echo(f"New password for {account.name}: {password_used}")
        else:
            typer.echo(f"Changed the password of {account.name}.")

    @user_app.command("disable")
    def disable(
        name: str = typer.Argument(..., help="The account's name."),
        db: Optional[str] = typer.Option(None, help=DB_HELP),
    ) -> None:
        """Disable an account: it cannot log in, and its sessions and API tokens end now."""
        _set_disabled(name, db, True)

    @user_app.command("enable")
    def enable(
        name: str = typer.Argument(..., help="The account's name."),
        db: Optional[str] = typer.Option(None, help=DB_HELP),
    ) -> None:
        """Enable a disabled account again (it logs in anew and makes new tokens)."""
        _set_disabled(name, db, False)

    @user_app.command("token")
    def token(
        name: str = typer.Argument(..., help="The account's name."),
        admin_scope: bool = typer.Option(False, "--admin-scope", help="Admin scope (admins only): the token may "
                                         "also call admin endpoints; without it, the token only reads."),
        label: str = typer.Option("command line", "--label", help="What the token is for, as the profile page lists it."),
        days: Optional[int] = typer.Option(None, "--days", help="Days until it expires (default AMBIENT_TOKEN_DAYS, "
                                           "at most AMBIENT_TOKEN_MAX_DAYS)."),
        db: Optional[str] = typer.Option(None, help=DB_HELP),
    ) -> None:
        """Make a personal API token for the account and print it (once: only its hash is stored)."""
        from backend.app.errors import TaskError
        from backend.app.tokens import create_token
        from backend.config import Settings

        settings = Settings(database_url=db) if db else Settings()
        with open_sessions(settings.database_url)() as session:
            account = _account(session, name)
            try:
                row, secret = create_token(session, account, label, "admin" if admin_scope else "read",
                                           settings.token_days if days is None else days, settings)
            except TaskError as error:
                raise typer.BadParameter(error.message, param_hint="--admin-scope, --label or --days") from None
        typer.echo(f"New {row.scope}-scope token for {account.name}, expires {row.expires_at:%Y-%m-%d %H:%M} UTC "
                   f"(shown once; send it as 'Authorization: Bearer TOKEN'):")
        typer.echo(secret)


def _set_disabled(name: str, db: str | None, disabled: bool) -> None:
    from backend.app.users import set_disabled
    from backend.config import Settings

    settings = Settings(database_url=db) if db else Settings()
    with open_sessions(settings.database_url)() as session:
        account = _account(session, name)
        set_disabled(session, account, disabled)
    typer.echo(f"{account.name} is {'disabled' if disabled else 'enabled'}.")
