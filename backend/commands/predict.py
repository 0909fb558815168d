"""`ambient predict`: what a run's network makes of images or video frames: sound labels, firing units,
a Grad-CAM heatmap PNG and the predicted sound texture (model/units/predict.py)."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from backend.commands.options import DB_HELP


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to the CLI."""

    @app.command("predict")
    def predict(
        run_dir: Path = typer.Argument(..., help="A trained run, or a folder where `ambient units --model ...` "
                                       "analysed another network."),
        inputs: list[Path] = typer.Argument(..., help="Images (JPEG/PNG/WebP/GIF/BMP) or videos (their frame at --at)."),
        at: float = typer.Option(0.0, "--at", min=0.0, help="For a video: the frame shown at this many seconds."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object per input (one a line)."),
        out: Path = typer.Option(Path("predictions"), "--out", file_okay=False,
                                 help="Folder for each input's heatmap PNG and texture .npy."),
        top_labels: int = typer.Option(5, "--labels", min=1, help="Sound labels (or classes) shown per input."),
        top_units: int = typer.Option(5, "--units", min=1, help="Firing units shown per input."),
        db: Optional[str] = typer.Option(None, help="Take units' human verdicts from this database when the run is "
                                         "published there. " + DB_HELP),
        device: str = typer.Option("cpu", help="Torch device: auto, cpu, cuda:N."),
        sound: bool = typer.Option(False, "--synthesize", help="Also synthesise each predicted texture into "
                                   "NAME.wav (model/sound/synthesis.py; about a minute per input on 2 cores)."),
        seconds: float = typer.Option(3.75, "--seconds", min=0.1, help="With --synthesize: the sound's length."),
    ) -> None:
        """Hear an image: the sound a network predicts for each input, its firing units and where it looks."""
        import numpy as np

        from backend.app.listen import database_unit_labels, decode_workers
        from backend.config import Settings
        from model.device import resolve_device
        from model.data.media import MediaError
        from model.units.predict import (BadImage, heatmap_overlay, load_predictor, png_bytes, predict as predict_images,
                                         prediction_record)

        try:
            predictor = load_predictor(run_dir, resolve_device(device))
        except (FileNotFoundError, ValueError) as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(1)
        human = database_unit_labels(db, run_dir, predictor.layer_name)
        if human:
            predictor.unit_labels = {**predictor.unit_labels, **human}
        decoder = decode_workers(Settings(), workers=1)     # the server's bounds: an image is untrusted here too
        out.mkdir(parents=True, exist_ok=True)
        failed, used_names = 0, set()
        for path in inputs:
            try:
                frame = _read_input(path, at, decoder, predictor.frame_size)
            except (BadImage, MediaError, OSError) as error:
                typer.echo(f"error: {error}; skipped", err=True)
                failed += 1
                continue
            (result,) = predict_images(predictor, frame[None], top_labels, top_units)
            name = _output_name(path, at if _is_video(path) else None, used_names)
            heatmap = out / f"{name}.heatmap.png"
            heatmap.write_bytes(png_bytes(heatmap_overlay(result.crop, result.heatmap)))
            record = {"input": str(path), **({"at": at} if _is_video(path) else {}),
                      **prediction_record(result), "heatmap": str(heatmap), "texture": None, "sound": None}
            if result.texture is not None:
                texture = out / f"{name}.texture.npy"
                np.save(texture, result.texture)
                record["texture"] = str(texture)
                if sound:
                    record["sound"] = str(_synthesized(result.texture, seconds, out / f"{name}.wav"))
            typer.echo(json.dumps(record) if as_json else _summary(record))
        decoder.close()
        if failed:
            raise typer.Exit(1)


_VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ogv", ".flv", ".wmv", ".3gp")


def _is_video(path: Path) -> bool:
    return path.suffix.lower() in _VIDEO_SUFFIXES


def _read_input(path: Path, at: float, decoder, frame_size: int):
    """An input's frame for the network: a video's frame at ``at`` (by its suffix), else the file as an image,
    decoded by ``decoder`` (model/data/decode.py DecodeWorkers: in a process killed at a deadline)."""
    from model.data.media import read_frames
    from model.units.predict import BadImage, frame_tensor, image_frame

    if not path.is_file():
        raise BadImage(f"{path}: no such file")
    if _is_video(path):
        return image_frame(read_frames(path, [at])[0], frame_size)
    return frame_tensor(decoder.frame(path.read_bytes(), str(path), frame_size))


def _output_name(path: Path, at: float | None, used: set[str]) -> str:
    """The input's stem (and the video time), made unique among this command's inputs."""
    base = path.stem + (f"@{at:g}s" if at is not None else "")
    name, n = base, 1
    while name in used:
        n += 1
        name = f"{base}-{n}"
    used.add(name)
    return name


def _synthesized(texture, seconds: float, path: Path) -> Path:
    """The texture as a sound (model/sound/synthesis.py) in a WAV file, with a progress bar on stderr."""
    import numpy as np

    from model.data.media import write_audio_clip
    from model.settings import TEXTURE
    from model.sound.synthesis import synthesize

    with typer.progressbar(length=1, label=f"synthesising {path.name}", file=sys.stderr) as bar:
        def progress(done: int, total: int) -> None:
            bar.length = total
            bar.update(done - bar.pos)

        waveform = synthesize(texture, seconds, progress=progress)
    peak = float(np.abs(waveform).max(initial=0.0))
    write_audio_clip(waveform / peak if peak > 1 else waveform, TEXTURE.sample_rate, path)    # > 1 would clip
    return path


def _summary(record: dict) -> str:
    lines = [record["input"] + (f" at {record['at']:g} s" if "at" in record else "")]
    if record["labels"]:
        lines.append("  sound: " + ", ".join(f"{row['label']} {row['probability']:.2f}" for row in record["labels"]))
    lines.append("  units: " + ", ".join(f"{u['layer']} {u['unit']} ({u['activation']:.2f}"
                                        + (f", {u['label']}" if u["label"] else "") + ")" for u in record["units"]))
    lines.append(f"  heatmap ({record['target'] or 'where the layer fires'}): {record['heatmap']}")
    lines.append(f"  texture: {record['texture'] or '-'} ({record['texture_source']})")
    if record.get("sound"):
        lines.append(f"  sound: {record['sound']}")
    elif record["texture"]:
        lines.append(f"  hear it: ambient synthesize --texture {record['texture']} --out "
                     f"{record['texture'].removesuffix('.texture.npy')}.wav")
    return "\n".join(lines)
