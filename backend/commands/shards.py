"""`ambient shards`: a dataset's frames as WebDataset tar shards, the source training streams from."""
from __future__ import annotations

from pathlib import Path

import typer

from model.settings import SHARD_FRAMES


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to the CLI."""

    @app.command("shards")
    def shards_command(
        data_dir: Path = typer.Argument(..., help="Dataset directory written by `ambient ingest`."),
        frames_per_shard: int = typer.Option(SHARD_FRAMES, "--frames-per-shard", min=1,
                                             help="Frames in each shard (DDP ranks read whole shards: "
                                                  "a dataset needs at least as many train shards as processes)."),
    ) -> None:
        """Write DATA_DIR/shards/: the frames as tar shards (train-NNNNNN.tar, test-NNNNNN.tar) and their index.

        `ambient train` streams from them when the decoded frames do not fit its cache (and writes them
        itself then if they are missing or stale). Running it again resumes a killed run, rewrites a
        shard that is missing or truncated, and does nothing when all are up to date.
        """
        from model.data.shards import write_shards

        if not data_dir.is_dir():
            raise typer.BadParameter(f"{data_dir} is not a directory", param_hint="DATA_DIR")
        try:
            index = write_shards(data_dir, frames_per_shard, progress=True)
        except (FileNotFoundError, ValueError) as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(1)
        train = sum(split == "train" for split in index.splits)
        typer.echo(f"{len(index.names)} shards ({train} train, {len(index.names) - train} test) of "
                   f"{int(index.counts.sum()):,} frames in {data_dir / 'shards'}")
        if len(index.missing):
            typer.echo(f"warning: {len(index.missing)} frames left out (their files could not be read), "
                       f"e.g. frame {int(index.missing[0])}", err=True)
