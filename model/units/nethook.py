"""Reading and editing one named layer of a network: the one place the pipeline hooks into modules
(after davidbau/dissect's ``nethook``: a layer's output edited as ``x * (1 - a) + r * a``).

- ``layer_names`` / ``check_layer``: what layers a network has; an unknown one is refused, naming them.
- ``run_until``: a layer's output, the forward pass stopped there (unit extraction reads layers so);
  ``run_until_preactivation``: the same before the layer's ReLU (feature visualisation optimises it).
- ``retain_layer``: a context in which a layer's latest output is kept, in the autograd graph (Grad-CAM).
- ``edit_layer``: a context in which a layer's output is edited (ablated units, a replacement).
- ``split_at``: the network as trunk (input -> layer) and head (layer -> output), so that many edits of
  one layer are measured by running the head only (``ablation_mask`` gives the edit that zeroes units).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from model.network.caffenet import LAYERS, CaffeNetBN


def layer_names(module: nn.Module) -> list[str]:
    """The layers a layer name may name: CaffeNet's ``LAYERS``, else every named submodule."""
    if isinstance(module, CaffeNetBN):
        return list(LAYERS)
    return [name for name, _ in module.named_modules() if name]


def check_layer(module: nn.Module, layer: str) -> None:
    """ValueError naming the layers the network has when it lacks ``layer``."""
    names = layer_names(module)
    if layer not in names:
        raise ValueError(f"the network has no layer {layer!r}; it has {', '.join(names)}")


class _LayerReached(Exception):
    def __init__(self, output: torch.Tensor):
        super().__init__()
        self.output = output


def run_until(module: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """The output of submodule ``layer``; the forward pass stops there instead of running the head."""
    if isinstance(module, CaffeNetBN):
        return module.forward_features(x, layer)

    def stop(_module, _inputs, output):
        raise _LayerReached(output)
    handle = module.get_submodule(layer).register_forward_hook(stop)
    try:
        module(x)
    except _LayerReached as reached:
        return reached.output
    finally:
        handle.remove()
    raise ValueError(f"layer {layer!r} is never run by the model's forward")


def run_until_preactivation(module: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """``layer``'s output before its ReLU: for a CaffeNet conv or fc block (conv/linear -> batch norm -> ReLU)
    its batch norm's output, else the layer's output. An image that leaves a unit silent still gives it a
    gradient there, so an optimisation started from noise can find what excites it."""
    if not isinstance(module, CaffeNetBN) or layer not in LAYERS or \
            not isinstance(getattr(module, layer), nn.Sequential):
        return run_until(module, layer, x)
    index = LAYERS.index(layer)
    if index > 0:
        x = module.forward_features(x, LAYERS[index - 1])
    if layer == "fc6":
        x = torch.flatten(x, 1)
    block = getattr(module, layer)
    return block[1](block[0](x))


def ablation_mask(units: Sequence[int], num_units: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(num_units, 1, 1) float: 1 for the units to switch off (``edit_layer``'s ``ablation``).

    ValueError when a unit is out of range, naming the layer's range.
    """
    bad = [u for u in units if not 0 <= u < num_units]
    if bad:
        raise ValueError(f"unit{'s' if len(bad) > 1 else ''} {', '.join(map(str, bad))} out of range: "
                         f"the layer has {num_units} units (0-{num_units - 1})")
    mask = torch.zeros(num_units, 1, 1, device=device)
    mask[list(units)] = 1.0
    return mask


def edited(x: torch.Tensor, ablation: torch.Tensor | None, replacement: torch.Tensor | None = None) -> torch.Tensor:
    """``x * (1 - a) + r * a`` (r = 0 when None): units switched off or replaced, over (N, units, ...) outputs."""
    if ablation is None:
        return x
    a = ablation.to(x.dtype).reshape(ablation.shape[0], *([1] * (x.ndim - 2)))
    out = x * (1 - a)
    return out if replacement is None else out + replacement.to(x.dtype) * a


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


@contextmanager
def edit_layer(module: nn.Module, layer: str, ablation: torch.Tensor | None,
               replacement: torch.Tensor | None = None) -> Iterator[nn.Module]:
    """Within the context, ``module``'s forward passes see ``layer``'s output edited (``edited``)."""
    check_layer(module, layer)
    handle = module.get_submodule(layer).register_forward_hook(
        lambda _module, _inputs, output: edited(output, ablation, replacement))
    try:
        yield module
    finally:
        handle.remove()


@dataclass(frozen=True)
class LayerSplit:
    """A network cut at ``layer``: ``head(trunk(x))`` is its output."""

    layer: str
    trunk: Callable[[torch.Tensor], torch.Tensor]
    head: Callable[[torch.Tensor], torch.Tensor]


def split_at(module: nn.Module, layer: str) -> LayerSplit:
    """Trunk and head of our CaffeNet (``forward_from``) or of an ``nn.Sequential`` (its children)."""
    check_layer(module, layer)
    if isinstance(module, CaffeNetBN):
        return LayerSplit(layer, lambda x: module.forward_features(x, layer), lambda h: module.forward_from(h, layer))
    if isinstance(module, nn.Sequential):
        names = [name for name, _ in module.named_children()]
        if layer not in names:
            raise ValueError(f"{layer!r} is inside a block: split the network at one of its top layers "
                             f"({', '.join(names)})")
        cut = names.index(layer) + 1
        return LayerSplit(layer, module[:cut], module[cut:])
    raise ValueError(f"cannot split a {type(module).__name__} at a layer (CaffeNet or nn.Sequential only)")
