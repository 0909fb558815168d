"""The data roots (AMBIENT_DATA_ROOTS): the folders whose files jobs and publishing may read.

A run's and a dataset's files name other paths: the pool a units file was made from (``data_dir``),
the network file and weights it analysed (``model_spec``, ``weights``), the training set in run.json
(``data_dir``), the videos folder in an ingest report (``videos_dir``). Publishing loads what those
paths hold into the database, where annotators see it, so a crafted file could otherwise publish any
folder the server can read. Each such path is checked here before anything is read through it: it
must resolve (links followed) inside one of the roots, else it is refused naming the file and the path.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from model.data import dataset as ds
from model.network import run as rd

# The units file's network specs whose part after the colon is a file (torchvision:<name> is a name).
FILE_SPECS = ("torchscript:", "export:")


class OutsideRoots(ValueError):
    """A path outside the data roots; the message names the file that names it and how to allow it."""


def data_roots() -> list[Path]:
    """The roots this process works under: AMBIENT_DATA_ROOTS, else the jobs folder and ./demo."""
    from backend.config import Settings

    return Settings().allowed_roots()


def roots_text(roots: list[Path]) -> str:
    return ", ".join(map(str, roots))


def is_inside(path: str | Path, roots: list[Path]) -> bool:
    """Whether ``path`` (resolved: links followed, relative to the working directory) lies under a root."""
    resolved = Path(path).expanduser().resolve()
    return any(resolved.is_relative_to(root) for root in roots)


@dataclass(frozen=True)
class NamedPath:
    """A path that a file names: ``source`` (the file), ``key`` (what it calls the path), ``path``."""

    source: Path
    key: str
    path: str

    def refuse(self, roots: list[Path]) -> OutsideRoots:
        return OutsideRoots(f"{self.source}: its {self.key} {self.path} lies outside the data roots "
                            f"({roots_text(roots)}); set AMBIENT_DATA_ROOTS to allow that folder")


def check_folder(folder: str | Path, roots: list[Path], what: str) -> None:
    """Refuse ``folder`` itself when it lies outside the roots (``what`` names it in the message)."""
    if not is_inside(folder, roots):
        raise OutsideRoots(f"{what} {folder} lies outside the data roots ({roots_text(roots)}); set "
                           f"AMBIENT_DATA_ROOTS to allow that folder")


def link_message(leaving: tuple[Path, str], roots: list[Path]) -> str:
    """What ``model.data.dataset.link_outside`` found, and what to do about it."""
    path, what = leaving
    if "hard link" in what:     # its other names could be anywhere: no root makes it safe
        return (f"{path} is {what}, whose other names may lie outside the data roots ({roots_text(roots)}); "
                f"replace it with a copy of the file")
    return f"{path} is {what} ({roots_text(roots)}); remove it or set AMBIENT_DATA_ROOTS to allow that folder"


def _checked(named: list[NamedPath], roots: list[Path]) -> list[NamedPath]:
    for item in named:
        if not is_inside(item.path, roots):
            raise item.refuse(roots)
    return named


def dataset_paths(data_dir: str | Path) -> list[NamedPath]:
    """The paths a dataset's files name: the videos folder of its ingest report."""
    report = Path(data_dir) / ds.REPORT
    try:
        videos_dir = ds.read_report(data_dir).get("videos_dir")
    except (OSError, ValueError, AttributeError):
        return []               # no readable report: nothing named (readers of the report say what is wrong)
    return [NamedPath(report, "videos_dir", str(videos_dir))] if videos_dir else []


def run_paths(run_dir: str | Path) -> list[NamedPath]:
    """The paths a run's files name: each units file's pool (data_dir), network file (model_spec) and
    weights, and run.json's training set (data_dir)."""
    run_dir = Path(run_dir)
    named = []
    for layer in rd.analysed_layers(run_dir):
        path = rd.units_file(run_dir, layer)
        try:
            meta = rd.read_units_meta(path)
        except (OSError, ValueError, KeyError):
            continue            # unreadable: publishing says so when it reads the file
        if meta.get("data_dir"):
            named.append(NamedPath(path, "data_dir", str(meta["data_dir"])))
        spec = str(meta.get("model_spec") or "")
        if spec.startswith(FILE_SPECS):
            named.append(NamedPath(path, "model_spec", spec.split(":", 1)[1]))
        if meta.get("weights"):
            named.append(NamedPath(path, "weights", str(meta["weights"])))
    try:
        data_dir = rd.read_run_json(run_dir).get("data_dir")
    except (OSError, ValueError, AttributeError):
        data_dir = None
    if data_dir:
        named.append(NamedPath(run_dir / rd.RUN_JSON, "data_dir", str(data_dir)))
    return named


def check_dataset_paths(data_dir: str | Path, roots: list[Path]) -> None:
    """Refuse a dataset (already known to lie inside the roots) whose files name a path outside them."""
    _checked(dataset_paths(data_dir), roots)


def check_run_paths(run_dir: str | Path, roots: list[Path]) -> None:
    """Refuse a run folder outside the roots, or one whose files (or its datasets' files) name a path
    outside them, or which holds a link leading out of them; raises OutsideRoots naming the file and path.
    Each dataset is checked before its own files are read."""
    check_folder(run_dir, roots, "the run folder")
    leaving = ds.link_outside(run_dir, roots)
    if leaving is not None:
        raise OutsideRoots(link_message(leaving, roots))
    named = _checked(run_paths(run_dir), roots)
    for data_dir in dict.fromkeys(Path(item.path).resolve() for item in named if item.key == "data_dir"):
        check_dataset_paths(data_dir, roots)


def roots_env(roots: list[Path]) -> str:
    """``roots`` as AMBIENT_DATA_ROOTS spells them, for a child process."""
    return ":".join(map(str, roots))

