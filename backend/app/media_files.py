"""The one way the app finds a dataset's file (a frame, a clip) from the paths the database holds."""
from __future__ import annotations

import os
import stat
from pathlib import Path


def dataset_file(data_dir: str | Path, relative: str) -> Path | None:
    """The regular file ``relative`` names inside ``data_dir``, or None when it is missing or may lie
    outside the folder: an absolute path or ".." leaving it, a link whose target is outside it, or a hard
    link (a file with several names, the others anywhere: nothing inside the folder says where)."""
    folder = Path(data_dir).resolve()
    path = (folder / relative).resolve()
    if not path.is_relative_to(folder):
        return None
    try:
        # Not through a link (resolved above; one planted since is refused), and never blocking on a FIFO.
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        info = os.fstat(descriptor)
    finally:
        os.close(descriptor)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        return None
    return path
