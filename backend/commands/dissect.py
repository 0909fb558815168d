"""`ambient dissect` (being written)."""
import typer


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to the CLI."""
