"""`ambient dissect`: automatic unit labels from the demo world's ground truth (--truth) or from
segmentation masks of any pool (--masks, --classes), then published."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from backend.commands.options import DB_HELP, device_option
from model.settings import DETECTOR_PRECISION, UNITS


def register(app: typer.Typer) -> None:
    """Add this stage's subcommands to the CLI."""

    @app.command("dissect")
    def dissect(
        run_dir: Path = typer.Argument(..., help="Run folder that `ambient units` has analysed."),
        truth: bool = typer.Option(False, "--truth", help="Label units from the generated world's ground truth "
                                   "(the pool's videos must come from `ambient world`)."),
        masks: Optional[Path] = typer.Option(None, "--masks", help="Folder of label-map PNGs, one per pool image "
                                             "(pixel value = class index), matched by relative path or file stem."),
        classes: Optional[Path] = typer.Option(None, "--classes", help="CSV with index,name[,characteristic_sound] "
                                               "of the label maps' classes (other values are ignored)."),
        layer: Optional[str] = typer.Option(None, help="Layer whose units to label (`output` for a TorchScript or "
                                            "torch.export network); by default the one layer the run holds."),
        device: str = typer.Option("auto", help="Torch device for --masks and --checkpoints: auto, cpu, cuda:N."),
        checkpoints: bool = typer.Option(False, "--checkpoints", help="Also dissect every checkpoint `ambient train "
                                         "--keep-checkpoints` kept, over the same pool: RUN_DIR/emergence.json "
                                         "(when the detectors emerge)."),
        db: Optional[str] = typer.Option(None, help=DB_HELP),
        publish: bool = typer.Option(True, "--publish/--no-publish",
                                     help="Publish the run into the database at the end (`ambient publish`)."),
    ) -> None:
        """Label each unit with the category its top images show most, as the paper's annotators did
        (and, with --masks, with Network Dissection's best-IoU class too)."""
        from backend.commands.publish import publish_or_exit
        from model.units.dissect import detector_counts, units_layer, write_dissection
        from model.network.run import units_file

        if truth == (masks is not None):
            raise typer.BadParameter("pass --truth (the demo world) or --masks MASKS_DIR --classes CLASSES.csv",
                                     param_hint="--truth / --masks")
        if masks is not None and classes is None:
            raise typer.BadParameter("--masks needs --classes CLASSES.csv (index,name[,characteristic_sound])",
                                     param_hint="--classes")
        try:
            layer = units_layer(run_dir, layer)
        except (FileNotFoundError, ValueError) as error:
            raise typer.BadParameter(str(error), param_hint="--layer" if layer else "RUN_DIR") from None
        path = units_file(run_dir, layer)
        if publish:        # publishing refuses a run naming paths outside the data roots: before reading them
            from backend.data_roots import OutsideRoots, check_run_paths, data_roots

            try:
                check_run_paths(run_dir, data_roots())
            except OutsideRoots as error:
                typer.echo(f"error: {error}", err=True)
                raise typer.Exit(1) from None
        labels = _mask_labels(run_dir, masks, classes, layer, device) if masks is not None \
            else _truth_labels(run_dir, path, layer)
        out = write_dissection(run_dir, labels, layer)
        counts = detector_counts(labels, DETECTOR_PRECISION)
        if masks is not None:
            named = [label for label in labels if label.netdissect_category]
            typer.echo(f"Network Dissection: {len(named)} of {len(labels)} units have IoU > {UNITS.min_iou} with a "
                       f"class ({len({label.netdissect_category for label in named})} classes)")
        typer.echo(f"wrote {out}: {counts['detectors']} of {len(labels)} units have precision >= "
                   f"{DETECTOR_PRECISION:.0%} for a category ({counts['categories']} categories): "
                   f"{counts['sounding']} for sounding categories, {counts['silent']} for silent ones "
                   f"(characteristic sounds as {classes if masks is not None else 'model/data/object_categories.csv'} "
                   f"has them)")
        # The final labels are written whatever becomes of the checkpoints: they are published, then a failure exits 1.
        emerged = _emergence(run_dir, layer, masks, classes, device) if checkpoints else True
        if publish:
            publish_or_exit(run_dir, db)
            # The pages count with the database's flags, which admins may have edited: say so when they differ.
            from dataclasses import replace

            from backend.commands.options import database_url, open_sessions
            from backend.publish import characteristic_sounds

            with open_sessions(database_url(db))() as session:
                flags = characteristic_sounds(session)
            published = detector_counts([replace(label, sounding=flags.get(label.category, False))
                                         for label in labels], DETECTOR_PRECISION)
            if published != counts:
                typer.echo(f"with the database's characteristic sounds (as the results pages count): "
                           f"{published['sounding']} sounding, {published['silent']} silent")
        if not emerged:
            raise typer.Exit(1)


def _truth_of(path: Path):
    """What a pool frame shows, from the world its dataset was ingested from."""
    from model.data import dataset as ds
    from model.network.run import read_units_meta
    from model.world.truth import find_world_dir, frame_truth

    data_dir = Path(read_units_meta(path)["data_dir"])
    videos_dir = ds.read_report(data_dir).get("videos_dir")
    if not videos_dir:
        raise FileNotFoundError(f"{data_dir / ds.REPORT}: records no videos folder to find the world in")
    world_dir = find_world_dir(videos_dir)
    return lambda r: frame_truth(world_dir, r.video, r.time).objects


def _truth_labels(run_dir: Path, path: Path, layer: str) -> list:
    from model.units.dissect import dissect as dissect_units

    try:
        return dissect_units(run_dir, _truth_of(path), layer)
    except (FileNotFoundError, LookupError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1)


def _emergence(run_dir: Path, layer: str, masks: Path | None, classes: Path | None, device: str) -> bool:
    """Every kept checkpoint dissected as the final network was: RUN_DIR/emergence.json. False when that failed
    (said why); a run that kept no checkpoints is only warned about (a demo resumed from before they were kept)."""
    from model.data import pool as pl
    from model.data.dataset import write_json_atomic
    from model.device import resolve_device
    from model.units.emergence import dissect_checkpoints
    from model.network.run import emergence_file, kept_checkpoints, read_units_meta, units_file
    from model.units.segmentation import match_masks, read_classes

    path = units_file(run_dir, layer)
    if not kept_checkpoints(run_dir):
        typer.echo(f"warning: {run_dir} kept no checkpoints (train with --keep-checkpoints N): no emergence.json",
                   err=True)
        return True
    try:
        if masks is None:
            result = dissect_checkpoints(run_dir, layer, truth_of=_truth_of(path), device=resolve_device(device))
        else:
            meta = read_units_meta(path)
            records = pl.pool_records(meta["data_dir"], meta.get("split", "all"))
            result = dissect_checkpoints(run_dir, layer, masks=match_masks(records, masks),
                                         classes=read_classes(classes), device=resolve_device(device))
    except (FileNotFoundError, LookupError, ValueError) as error:
        typer.echo(f"error: {error}", err=True)
        return False
    for skipped in result["skipped"]:
        typer.echo(f"warning: skipped checkpoint {skipped['checkpoint']}: {skipped['reason']}", err=True)
    write_json_atomic(emergence_file(run_dir), result)
    steps = ", ".join(f"step {s['step']}: {s['detectors']['total']} detectors"
                      + (f" ({s['accuracy']:.1%} held-out)" if s["accuracy"] is not None else "")
                      for s in result["steps"])
    typer.echo(f"wrote {emergence_file(run_dir)}: {steps}")
    return True


def _mask_labels(run_dir: Path, masks: Path, classes: Path, layer: str, device: str) -> list:
    from model.units.dissect import dissect_masks, write_mask_scores

    torch_device = device_option(device)
    try:
        labels, scores = dissect_masks(run_dir, masks, classes, layer, device=torch_device)
    except (FileNotFoundError, ValueError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1)
    write_mask_scores(run_dir, layer, scores)
    typer.echo(f"{scores.images} pool images with a label map"
               + (f"; {scores.missing} without one, left out of both scores" if scores.missing else ""))
    if scores.unreadable:
        typer.echo(f"warning: {len(scores.unreadable)} label maps skipped (left out of both scores), e.g. "
                   f"{'; '.join(scores.unreadable[:3])}", err=True)
    return labels
