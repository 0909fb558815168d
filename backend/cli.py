"""`ambient`: the one command-line entry point. Each stage's subcommands live in
backend/commands/<stage>.py and register themselves here."""
from __future__ import annotations

import typer

from backend.commands import (ablate, db, demo, dissect, export, ingest, labels, predict, probe, publish, serve,
                              shards, synthesize, texture, train, units, users, worker, world)

app = typer.Typer(help="Ambient: learn visual detectors from ambient sound.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)

for stage in (world, ingest, texture, synthesize, labels, shards, train, units, dissect, ablate, probe, predict,
              publish, demo, db, serve, users, export, worker):
    stage.register(app)

if __name__ == "__main__":
    app()
