"""`ambient serve`: the annotation web app under uvicorn."""
from __future__ import annotations

import gc
from typing import Optional

import typer

from backend.commands.options import DB_HELP


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to the CLI."""

    @app.command("serve")
    def serve(
        db: Optional[str] = typer.Option(None, help=DB_HELP),
        host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0: every interface)."),
        port: int = typer.Option(8000, min=1, max=65535, help="TCP port."),
        worker: bool = typer.Option(False, "--worker", help="Also run one `ambient worker` beside the server, "
                                    "so jobs queued from the admin page run (AMBIENT_START_WORKER)."),
    ) -> None:
        """Serve the annotation app: annotators label units, admins see results and exports."""
        # Importing and making the app creates some 200,000 objects that live as long as the server, and next to
        # no garbage: the collector's passes over them were 0.13 s of the start. It is off until the app is made,
        # then those objects are frozen out of every later collection.
        gc.disable()
        import uvicorn

        from backend.app import create_app
        from backend.config import Settings

        settings = Settings(**({"database_url": db} if db else {}), **({"start_worker": True} if worker else {}))
        try:
            web_app = create_app(settings)
        except Exception as error:   # an unreachable or unmigratable database: say which, no traceback
            typer.echo(f"cannot open the database {settings.database_url}: {error}", err=True)
            raise typer.Exit(1) from None
        finally:
            gc.freeze()
            gc.enable()
        typer.echo(f"Ambient on http://{host}:{port}/ (database {settings.database_url})")
        # The app reads X-Forwarded-* itself, from AMBIENT_TRUSTED_PROXIES only (backend/app/main.py).
        uvicorn.run(web_app, host=host, port=port, log_level="warning", proxy_headers=False)
