"""Reading a named layer's output during a forward pass: the one place the pipeline hooks into layers
(the way davidbau/dissect's nethook does), so that explaining a prediction (model/predict.py) never
rewrites a network's forward.

Entry point: ``retain_layer`` (a context manager).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class Retained:
    """The latest output of the retained layer (``output``), kept in the autograd graph."""

    output: torch.Tensor | None = None


@contextmanager
def retain_layer(module: nn.Module, layer: str) -> Iterator[Retained]:
    """Keep ``module.get_submodule(layer)``'s output of every forward pass inside the block; the hook
    goes when the block ends, whatever happens in it. ValueError names a layer the module lacks."""
    try:
        target = module.get_submodule(layer)
    except AttributeError:
        raise ValueError(f"the network has no layer {layer!r}") from None
    retained = Retained()

    def keep(_module, _inputs, output):
        retained.output = output

    handle = target.register_forward_hook(keep)
    try:
        yield retained
    finally:
        handle.remove()
