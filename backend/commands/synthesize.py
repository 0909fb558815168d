"""`ambient synthesize`: a sound whose texture matches a clip's, a saved texture or a cluster's centroid
(McDermott-Simoncelli synthesis, model/sound/synthesis.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from model.settings import INGEST, TEXTURE


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _texture_like(file: Path, at: Optional[float]) -> np.ndarray:
    """The texture of the 3.75 s of FILE centred on --at (default: the middle), as `ambient texture`."""
    from backend.commands.texture import _clip_start
    from model.sound.texture import sound_texture
    from model.data.media import MediaError, probe, read_audio

    if not file.is_file():
        _fail(f"{file}: no such file (--like)")
    try:
        info = probe(file)
        if not info.has_audio:
            raise MediaError(file, "no audio stream")
        if info.duration < TEXTURE.clip_seconds - 0.01:
            raise MediaError(file, f"only {info.duration:.2f} s of audio; a texture needs "
                                   f"{TEXTURE.clip_seconds} s")
        if at is None:
            at = info.duration / 2
        elif not 0 <= at <= info.duration:
            raise typer.BadParameter(f"{at} s is outside {file} (0-{info.duration:.2f} s)", param_hint="--at")
        waveform, rate = read_audio(file, _clip_start(at, info.duration, TEXTURE.clip_seconds), TEXTURE.clip_seconds)
        if waveform.size < (TEXTURE.clip_seconds - 0.01) * rate:
            raise MediaError(file, f"only {waveform.size / rate:.2f} s of audio decode; a texture needs "
                                   f"{TEXTURE.clip_seconds} s")
        return sound_texture(waveform, rate)
    except (MediaError, ValueError) as error:
        _fail(str(error))


def _texture_file(path: Path) -> np.ndarray:
    import numpy as np

    from model.sound.texture import TEXTURE_DIM

    if not path.is_file():
        _fail(f"{path}: no such file (--texture)")
    try:
        texture = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        _fail(f"{path}: not a .npy array ({error})")
    if not isinstance(texture, np.ndarray) or texture.shape != (TEXTURE_DIM,):
        _fail(f"{path}: a sound texture has shape ({TEXTURE_DIM},), this array has "
              f"{getattr(texture, 'shape', 'no shape')}")
    return texture


def _cluster_texture(run_dir: Path, cluster: int) -> np.ndarray:
    """The centroid of the run's sound cluster, in texture space (the labels file keeps it weighted)."""
    import numpy as np

    from model.data import dataset
    from model.network import run

    info = run.read_run_json(run_dir)
    if not info:
        _fail(f"{run_dir}: no run.json (--run takes a directory written by `ambient train`)")
    if info.get("label_kind") != "cluster":
        _fail(f"{run_dir} was trained on {info.get('label_kind')!r} labels, not sound clusters")
    labels_path = dataset.labels_file(info["data_dir"], "cluster")
    if not labels_path.is_file():
        _fail(f"{labels_path}: the run's cluster labels are missing")
    with np.load(labels_path) as labels:
        centroids, weights = labels["centroids"], labels["weights"]
    if not 0 <= cluster < len(centroids):
        _fail(f"cluster {cluster} does not exist: {run_dir} has clusters 0-{len(centroids) - 1}")
    return centroids[cluster] / weights


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to the CLI."""

    @app.command("synthesize")
    def synthesize_command(
        out: Path = typer.Option(..., "--out", help="Where to write the sound: .wav, or .mp3."),
        like: Optional[Path] = typer.Option(None, "--like", help="Audio or video file whose texture to match."),
        at: Optional[float] = typer.Option(None, "--at", help="With --like: centre of its 3.75 s clip, in "
                                           "seconds (default: the middle of the file)."),
        texture: Optional[Path] = typer.Option(None, "--texture", help="A (502,) texture saved with numpy (.npy)."),
        run_dir: Optional[Path] = typer.Option(None, "--run", help="A cluster run's directory (with --cluster)."),
        cluster: Optional[int] = typer.Option(None, "--cluster", help="With --run: the sound cluster whose "
                                              "centroid texture to match."),
        seconds: float = typer.Option(TEXTURE.clip_seconds, "--seconds", min=0.1, help="Length of the sound."),
        seed: int = typer.Option(0, "--seed", help="Seed of the starting noise."),
        steps: Optional[int] = typer.Option(None, "--steps", min=1, help="M&S iterations (more: closer, "
                                            "slower) [default: model.sound.synthesis.STEPS, 30]."),
        device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto."),
    ) -> None:
        """Synthesise a sound whose 502-d sound texture matches a target (McDermott & Simoncelli 2011):
        --like FILE, --texture T.npy, or --run RUN --cluster K."""
        import numpy as np

        from model.data.media import write_audio_clip
        from model.sound.synthesis import STEPS, synthesize, texture_snr

        sources = [like is not None, texture is not None, run_dir is not None or cluster is not None]
        if sum(sources) != 1:
            raise typer.BadParameter("give exactly one of --like FILE, --texture T.npy, --run RUN --cluster K")
        if (run_dir is None) != (cluster is None):
            raise typer.BadParameter("--run and --cluster go together", param_hint="--run/--cluster")
        if at is not None and like is None:
            raise typer.BadParameter("--at goes with --like", param_hint="--at")
        if out.suffix.lower() not in (".wav", ".mp3"):
            raise typer.BadParameter(f"{out}: write .wav or .mp3", param_hint="--out")
        if not out.parent.is_dir():
            raise typer.BadParameter(f"{out.parent} is not a directory", param_hint="--out")
        if like is not None:
            target = _texture_like(like, at)
        elif texture is not None:
            target = _texture_file(texture)
        else:
            target = _cluster_texture(run_dir, cluster)

        from model.sound.texture import sound_texture

        with typer.progressbar(length=1, label="synthesising") as bar:
            def progress(done: int, total: int) -> None:
                bar.length = total
                bar.update(done - bar.pos)

            try:
                waveform = synthesize(target, seconds, seed, progress=progress, device=device, steps=steps or STEPS)
            except ValueError as error:
                _fail(str(error))
        peak = float(np.abs(waveform).max(initial=0.0))
        if peak > 1:
            typer.echo(f"note: the target's loudness needs a peak of {peak:.2f}; scaled to 1 to fit the file "
                       "(quieter than the target)", err=True)
            waveform = waveform / peak
        snr = texture_snr(target, sound_texture(waveform, TEXTURE.sample_rate))
        mp3_rate = INGEST.clip_sample_rate if out.suffix.lower() == ".mp3" else None   # mp3 has no 20 kHz rate
        write_audio_clip(waveform, TEXTURE.sample_rate, out, out_rate=mp3_rate)
        typer.echo(f"wrote {out} ({waveform.size / TEXTURE.sample_rate:.2f} s); texture SNR (dB): "
                   + ", ".join(f"{name} {value:.1f}" for name, value in snr.items()))
