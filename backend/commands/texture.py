"""`ambient texture FILE`: print the 502-d sound texture of 3.75 s of any audio or video file."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from model.settings import TEXTURE


def _clip_start(at: float, duration: float, clip_seconds: float) -> float:
    """Start of the clip centred on `at`, shifted to stay inside the file when near an end."""
    return min(max(at - clip_seconds / 2, 0.0), max(duration - clip_seconds, 0.0))


def _summary(texture, path: Path, start: float, seconds: float, silent: bool) -> str:
    from model.sound.texture import TEXTURE_GROUPS

    lines = [f"{path}: sound texture of {start:.2f}-{start + seconds:.2f} s ({texture.size} values)"]
    if silent:
        lines.append("  SILENT clip: every statistic but loudness is 0")
    for name, group in TEXTURE_GROUPS.items():
        values = texture[group]
        head = " ".join(f"{v:.4f}" for v in values[:6]) + (" ..." if values.size > 6 else "")
        lines.append(f"  {name:<9}({values.size:>3})  {head}")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to the CLI."""

    @app.command("texture")
    def texture(
        file: Path = typer.Argument(..., help="Audio (wav, flac, ogg, mp3, ...) or video file."),
        at: Optional[float] = typer.Option(None, "--at", help="Centre of the 3.75 s clip, in seconds "
                                 "(default: the middle of the file)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON: mu, sigma, rho, mod, "
                                     "loudness, silent and the whole 502-d vector."),
    ) -> None:
        """Print the McDermott-Simoncelli sound texture of the 3.75 s of FILE around --at."""
        from model.sound.texture import TEXTURE_GROUPS, is_silent, sound_texture
        from model.data.media import MediaError, probe, read_audio

        try:
            info = probe(file)
            if not info.has_audio:
                raise MediaError(file, "no audio stream")
            if at is None:
                at = info.duration / 2
            elif not 0 <= at <= info.duration:
                raise typer.BadParameter(f"{at} s is outside {file} (0-{info.duration:.2f} s)",
                                         param_hint="--at")
            start = _clip_start(at, info.duration, TEXTURE.clip_seconds)
            waveform, rate = read_audio(file, start, TEXTURE.clip_seconds)
            vector = sound_texture(waveform, rate)
        except (MediaError, ValueError) as e:
            typer.echo(f"Error: {e}", err=True)
            raise typer.Exit(1)
        seconds = waveform.size / rate
        if seconds < TEXTURE.clip_seconds - 0.01:
            typer.echo(f"note: {file} has only {seconds:.2f} s of audio; using all of it", err=True)
        silent = is_silent(waveform)
        if silent:
            typer.echo(f"note: the clip of {file} is silent", err=True)
        if as_json:
            record = {name: vector[group].tolist() for name, group in TEXTURE_GROUPS.items()}
            record["loudness"] = float(vector[TEXTURE_GROUPS["loudness"]][0])
            record["silent"] = silent
            record["vector"] = vector.tolist()
            typer.echo(json.dumps(record))
        else:
            typer.echo(_summary(vector, file, start, seconds, silent))
