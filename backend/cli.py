"""`ambient`: the one command-line entry point. Each stage's subcommands live in
backend/commands/<stage>.py and register themselves here."""
from __future__ import annotations

import typer

from backend.commands import (ablate, campaign, compare, db, demo, dissect, export, ingest, labels, localize, predict,
                              probe, publish, serve, shards, synthesize, texture, train, units, users, visualize, worker,
                              world)
from model.cpu import pin_portable_kernels, portable_requested

app = typer.Typer(help="Ambient: learn visual detectors from ambient sound.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)


@app.callback()
def pin_kernels_if_asked() -> None:
    """AMBIENT_PORTABLE=1 pins torch's CPU kernels for every command (model/cpu.py), before any imports torch."""
    if portable_requested():
        pin_portable_kernels()


for stage in (world, ingest, texture, synthesize, labels, shards, train, units, dissect, ablate, localize, probe,
              predict, visualize, compare, publish, demo, db, serve, users, campaign, export, worker):
    stage.register(app)

if __name__ == "__main__":
    app()
