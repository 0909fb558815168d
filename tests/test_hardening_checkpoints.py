"""A run folder is input: a crafted model.pt must not run code when a later stage loads it (issue 16, item 1).

That a real run still loads is tests/test_network.py's round trip."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from model.network.run import CHECKPOINT, FINAL_MODEL, load_run


class _Planted:
    """Unpickling this calls Path.touch(marker): what a hostile checkpoint would do with os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


@pytest.mark.parametrize("name", [FINAL_MODEL, CHECKPOINT])
def test_a_checkpoint_that_runs_code_is_refused_without_running_it(tmp_path, name):
    marker = tmp_path / "pwned"
    torch.save({"model": {}, "run": {}, "payload": _Planted(marker)}, tmp_path / name)
    with pytest.raises(pickle.UnpicklingError):
        load_run(tmp_path)
    assert not marker.exists()

