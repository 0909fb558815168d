"""`ambient labels`: sound labels (k-means clusters or binary codes) beside the dataset."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import typer

from model.settings import LABELS


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to the CLI."""

    @app.command("labels")
    def labels_command(
        data_dir: Path = typer.Argument(..., help="Dataset directory written by `ambient ingest`."),
        kind: str = typer.Option("cluster", "--kind", help="cluster (k-means of textures), binary "
                                 "(30-bit PCA code of textures), spectrum (PCA code of 33 ms spectra) or scene "
                                 "(not sound: each frame's scene from a generated world's truth, the control) or texton (not sound: "
                                 "k-means of visual texton histograms, the paper's Texton-CNN control)."),
        k: int = typer.Option(LABELS.clusters, "--k", min=1, help="Number of clusters (cluster kind)."),
        restarts: int = typer.Option(LABELS.restarts, "--restarts", min=1, help="k-means++ restarts."),
        seed: int = typer.Option(LABELS.seed, "--seed", help="Random seed of the k-means initialisation."),
    ) -> None:
        """Compute sound labels from the training split and write DATA_DIR/labels/KIND.npz (GPU if present)."""
        from model.data.dataset import LABEL_KINDS
        from model.sound.labels import make_labels

        if kind not in LABEL_KINDS:
            raise typer.BadParameter(f"{kind!r} is not one of {', '.join(LABEL_KINDS)}", param_hint="--kind")
        if not data_dir.is_dir():
            raise typer.BadParameter(f"{data_dir} is not a directory", param_hint="DATA_DIR")
        try:
            path = make_labels(data_dir, kind, k, replace(LABELS, restarts=restarts, seed=seed), progress=True)
        except (FileNotFoundError, ValueError) as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(1)
        typer.echo(f"wrote {path}")
