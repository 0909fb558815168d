"""The one place a device name ("auto", "cpu", "cuda", "cuda:N") becomes a torch device.

Imports torch only when a name is resolved: the web app's job forms list DEVICE_CHOICES without loading torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")     # and "cuda:N" for one GPU of several


def resolve_device(name: str | None = "auto") -> torch.device:
    """auto (or None): the first GPU when there is one, else the CPU. ValueError names a device that is absent."""
    import torch

    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"{name!r} is not a device: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name}: no CUDA GPU is available here; use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"{name}: this machine has {torch.cuda.device_count()} GPU(s)")
    elif device.type != "cpu":
        raise ValueError(f"{name!r}: use auto, cpu, cuda or cuda:N")
    return device
