"""`ambient ingest`: videos -> dataset directory (frames, clips, textures, manifest)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from backend.commands.options import RAY_HELP


def _parse_shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise typer.BadParameter(f"{text!r}: expected i/n, e.g. 0/4", param_hint="--shard") from None
    if count < 1 or not 0 <= index < count:
        raise typer.BadParameter(f"{text!r}: need 0 <= i < n", param_hint="--shard")
    return index, count


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to the CLI."""

    @app.command("ingest")
    def ingest_command(
        videos_dir: Optional[Path] = typer.Argument(
            None, help="Folder searched recursively for videos (mp4, webm, mkv, mov, avi, ogv...). "
                       "With --merge and no --out: the DATA_DIR to merge."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Dataset directory to write (DATA_DIR)."),
        workers: int = typer.Option(os.cpu_count() or 1, "--workers", "-j", min=1,
                                    help="Parallel processes (default: all cores)."),
        shard: Optional[str] = typer.Option(
            None, help="Process only shard i of n (videos whose index mod n == i), e.g. 0/4; "
                       "run `ambient ingest --merge --out DATA_DIR` when all shards are done."),
        merge: bool = typer.Option(False, "--merge", help="Only join finished videos into the manifest."),
        progress: bool = typer.Option(True, help="Show a progress bar."),
        device: str = typer.Option("auto", "--device", help="Sound textures on: auto (the GPU if torch sees "
                                   "one), cpu (numpy/scipy) or cuda (torch)."),
        ray: Optional[str] = typer.Option(None, "--ray", metavar="ADDRESS", help=RAY_HELP),
    ) -> None:
        """Sample 10 frames per video with their 3.75 s sound clips, textures and spectra.

        Resumable: re-running skips finished videos. Unusable videos (corrupt, no audio, too short,
        silent) are skipped and listed in DATA_DIR/ingest_report.json.
        """
        from dataclasses import replace

        from model.sound.texture import resolve_device
        from model.engine import ClusterError
        from model.data.dataset import report_table
        from model.data.ingest import ingest
        from model.settings import INGEST

        if merge:
            data_dir = out or videos_dir
            if data_dir is None or not (data_dir / "videos").is_dir():
                raise typer.BadParameter(f"{data_dir}: not an ingest output (no videos/ folder inside)",
                                         param_hint="--out")
            report = ingest(None, data_dir, merge=True)
        else:
            if videos_dir is None or out is None:
                raise typer.BadParameter("give VIDEOS_DIR and --out DATA_DIR")
            if not videos_dir.is_dir():
                raise typer.BadParameter(f"{videos_dir}: not a folder", param_hint="VIDEOS_DIR")
            if out.exists() and not out.is_dir():
                raise typer.BadParameter(f"{out}: exists and is not a folder", param_hint="--out")
            shard_pair = _parse_shard(shard) if shard else None
            try:
                settings = replace(INGEST, device=resolve_device(device))
            except ValueError as error:
                raise typer.BadParameter(str(error), param_hint="--device") from None
            try:
                report = ingest(videos_dir, out, workers=workers, shard=shard_pair, progress=progress,
                                settings=settings, ray_address=ray)
            except ClusterError as error:
                typer.echo(f"error: {error}", err=True)
                raise typer.Exit(1) from None
            except OSError as error:   # a full or read-only disk stops the run: say so, no traceback
                typer.echo(f"cannot write to {out}: {error.strerror or error}; free space or fix the "
                           "folder's permissions, then run the same command again to resume", err=True)
                raise typer.Exit(1) from None
            data_dir = out

        typer.echo(f"{len(report.ingested)} videos ingested ({report.frames} frames), "
                   f"{len(report.skipped)} skipped, {len(report.warnings)} with warnings")
        for skip in report.skipped:
            typer.echo(f"  skipped {skip['path']}: {skip['reason']}")
        for warning in report.warnings:
            typer.echo(f"  warning {warning['path']}: {warning['warning']}")
        if shard:
            typer.echo(f"shard {shard} done; merge with: ambient ingest --merge --out {data_dir}")
        else:
            typer.echo(f"dataset: {data_dir} (manifest.jsonl, ingest_report.json)")
        rows = report_table(report)
        if rows:
            width = max(len(reason) for _, reason, _ in rows)
            typer.echo(f"\n{'':8}{'reason':<{width}}  videos")
            for kind, reason, count in rows:
                typer.echo(f"{kind:<8}{reason:<{width}}  {count:>6}")
