"""`ambient world`: generate the embedded demo world (videos + ground truth)."""
from __future__ import annotations

from pathlib import Path

import typer

from model.settings import OBJECT_MODES, WORLD_PRESETS


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to the CLI."""

    @app.command("world")
    def world(
        out_dir: Path = typer.Argument(..., help="Folder to write videos/, truth/ and world.json into."),
        videos: int = typer.Option(None, "--videos", min=1, help="Number of videos (default: the preset's)."),
        seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same world."),
        preset: str = typer.Option("demo", "--preset",
                                   help=f"Size: {', '.join(f'{k} ({v.videos} x {v.duration_s:g} s)' for k, v in WORLD_PRESETS.items())}."),
        objects: str = typer.Option("auto", "--objects",
                                    help="procedural (drawn, needs nothing), tuxpaint (photo stamps and their "
                                         "recorded sounds from Debian's tuxpaint-stamps-default), or auto."),
        workers: int = typer.Option(None, "--workers", min=1, help="Processes (default 2)."),
    ) -> None:
        """Generate videos of scenes with objects and loosely tied sounds, with per-frame truth."""
        from model.world import generate_world

        if preset not in WORLD_PRESETS:
            raise typer.BadParameter(f"{preset!r}; choose one of {', '.join(WORLD_PRESETS)}", param_hint="--preset")
        if objects not in OBJECT_MODES:
            raise typer.BadParameter(f"{objects!r}; choose one of {', '.join(OBJECT_MODES)}", param_hint="--objects")
        if out_dir.exists() and not out_dir.is_dir():
            raise typer.BadParameter(f"{out_dir} exists and is not a folder", param_hint="OUT_DIR")
        try:
            summary = generate_world(out_dir, videos=videos, seed=seed, preset=preset, objects=objects,
                                     workers=workers)
        except FileNotFoundError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1)
        typer.echo(f"{summary.videos} videos x {summary.duration_s:g} s in {summary.out_dir} "
                   f"({summary.objects} objects) in {summary.seconds:.1f} s")
        typer.echo("objects on screen: " + ", ".join(f"{k} {v}" for k, v in summary.object_counts.items()))
        typer.echo("sound sources:     " + ", ".join(f"{k} {v}" for k, v in summary.sound_counts.items())
                   + f" ({summary.offscreen_sounds} off screen)")
