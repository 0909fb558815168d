"""Each unit's most activating images (a streaming top-k), its receptive-field masks (paper 4.1) and
where a layer's map positions sit in the input (measured from the network, checked against its modules)."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import torch
from torch import nn


@dataclass(frozen=True)
class TopImages:
    """Per unit, its best images in decreasing order of spatial-maximum activation.

    ``frame_ids`` is -1 (and ``scores`` -inf) in slots the pool was too small to fill.
    """

    scores: torch.Tensor      # (units, k) float32
    frame_ids: torch.Tensor   # (units, k) int64
    maps: torch.Tensor        # (units, k, H, W) float32: the unit's activation map in that image


class RunningTopK:
    """Keeps each unit's k best images while batches stream past: memory is O(units * k * H * W),
    whatever the size of the pool.

    With ``one_per_video`` a unit keeps at most one frame (its best) of any video.
    """

    def __init__(self, k: int, one_per_video: bool = False):
        self.k = k
        self.one_per_video = one_per_video
        self._scores: torch.Tensor | None = None
        self._frame_ids: torch.Tensor | None = None
        self._video_ids: torch.Tensor | None = None
        self._maps: torch.Tensor | None = None

    def update(self, maps: torch.Tensor, frame_ids: torch.Tensor, video_ids: torch.Tensor) -> None:
        """Merge a batch: ``maps`` (B, units, H, W) activations, ``frame_ids``/``video_ids`` (B,) int64."""
        batch, units, height, width = maps.shape
        maps = maps.float().transpose(0, 1)                          # (units, B, H, W)
        if self._scores is None:
            self._scores = torch.full((units, 0), -math.inf, device=maps.device)
            self._frame_ids = torch.empty((units, 0), dtype=torch.int64, device=maps.device)
            self._video_ids = torch.empty((units, 0), dtype=torch.int64, device=maps.device)
            self._maps = torch.empty((units, 0, height, width), device=maps.device)
        self._keep_best(maps.amax(dim=(2, 3)), frame_ids.to(maps.device).expand(units, batch),
                        video_ids.to(maps.device).expand(units, batch), maps)

    def cpu(self) -> RunningTopK:
        """Its state moved to the CPU (to send it from a GPU task to another machine)."""
        if self._scores is not None:
            self._scores, self._frame_ids, self._video_ids, self._maps = (
                t.cpu() for t in (self._scores, self._frame_ids, self._video_ids, self._maps))
        return self

    def merge(self, other: RunningTopK) -> None:
        """Fold in the images another RunningTopK kept (over another part of the pool)."""
        if other._scores is None:
            return
        if self._scores is None:
            self._scores, self._frame_ids, self._video_ids, self._maps = (
                other._scores, other._frame_ids, other._video_ids, other._maps)
            return
        self._keep_best(other._scores, other._frame_ids, other._video_ids, other._maps)

    def _keep_best(self, scores: torch.Tensor, frame_ids: torch.Tensor, video_ids: torch.Tensor,
                   maps: torch.Tensor) -> None:
        """Keep the k best of what is kept and the (units, n) candidates given.

        Ties (a silent unit's zeros) go to the lower frame id: the result is then the same however
        the pool was batched or split across machines (``merge``).
        """
        all_scores = torch.cat([self._scores, scores], dim=1)
        all_frames = torch.cat([self._frame_ids, frame_ids], dim=1)
        all_videos = torch.cat([self._video_ids, video_ids], dim=1)
        all_maps = torch.cat([self._maps, maps.to(self._maps.device)], dim=1)
        by_frame = all_frames.argsort(dim=1, stable=True)
        all_scores, all_frames, all_videos = (values.gather(1, by_frame)
                                              for values in (all_scores, all_frames, all_videos))
        if self.one_per_video:
            all_scores = _best_per_video(all_scores, all_videos)
        keep = min(self.k, all_scores.shape[1])
        order = all_scores.sort(dim=1, descending=True, stable=True).indices[:, :keep]
        self._scores = all_scores.gather(1, order)
        self._frame_ids = all_frames.gather(1, order)
        self._video_ids = all_videos.gather(1, order)
        self._maps = all_maps.gather(1, _expand(by_frame.gather(1, order), all_maps))

    def result(self) -> TopImages:
        if self._scores is None:
            raise ValueError("no images were seen")
        filled = torch.isfinite(self._scores)
        pad = self.k - self._scores.shape[1]
        scores, frame_ids, maps = self._scores, self._frame_ids.masked_fill(~filled, -1), self._maps
        if pad:
            scores = nn.functional.pad(scores, (0, pad), value=-math.inf)
            frame_ids = nn.functional.pad(frame_ids, (0, pad), value=-1)
            maps = nn.functional.pad(maps, (0, 0, 0, 0, 0, pad))
        return TopImages(scores.cpu(), frame_ids.cpu(), maps.cpu())


def _expand(index: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return index[..., None, None].expand(-1, -1, *like.shape[2:])


def _best_per_video(scores: torch.Tensor, video_ids: torch.Tensor) -> torch.Tensor:
    """``scores`` with every entry but each (unit, video)'s best set to -inf."""
    order = scores.argsort(dim=1, descending=True, stable=True)     # ties: the first (lowest frame id) wins
    sorted_videos = video_ids.gather(1, order)
    same = sorted_videos[:, :, None] == sorted_videos[:, None, :]            # (units, n, n)
    earlier = torch.ones(same.shape[1:], dtype=torch.bool, device=scores.device).tril(-1)
    beaten = (same & earlier).any(dim=2)                  # a better frame of the same video comes first
    duplicate = torch.zeros_like(beaten).scatter(1, order, beaten)
    return scores.masked_fill(duplicate, -math.inf)


class RunningQuantile:
    """Each unit's ``q`` quantile of its activations (every position of every image) while batches
    stream past, in memory fixed by ``relative_error`` and the value range, whatever the pool size
    (Network Dissection's threshold; NetDissect-Lite's vecquantile plays this part there).

    A log-bucketed histogram per unit (DDSketch, Masson et al. 2019): bucket k holds the values in
    (gamma^(k-1), gamma^k], gamma = (1 + e) / (1 - e), mirrored for negative values. The returned
    quantile is within relative error e of the activation whose rank is ``q (n - 1)`` (rounded down),
    with two caveats: values of magnitude below ``min_value`` count as 0 and above ``max_value`` as
    ``max_value``. At e = 0.005 over [1e-6, 1e8]: 6,451 int64 counts per unit (26 MB for 512 units).
    """

    def __init__(self, q: float, relative_error: float = 0.005, min_value: float = 1e-6, max_value: float = 1e8):
        self.q = q
        self.gamma = (1 + relative_error) / (1 - relative_error)
        self.min_value, self.max_value = min_value, max_value
        self._log_gamma = math.log(self.gamma)
        self._k_min = math.ceil(math.log(min_value) / self._log_gamma)
        self._k_max = math.ceil(math.log(max_value) / self._log_gamma)
        self._side = self._k_max - self._k_min + 1             # buckets per sign
        self._counts: torch.Tensor | None = None               # (units, 2 * side + 1): negatives, zero, positives

    @property
    def buckets(self) -> int:
        return 2 * self._side + 1

    def update(self, maps: torch.Tensor) -> None:
        """Count a batch: ``maps`` (B, units, H, W) activations."""
        units = maps.shape[1]
        values = maps.float().transpose(0, 1).reshape(units, -1)
        magnitude = values.abs()
        k = torch.ceil(torch.log(magnitude.clamp(self.min_value, self.max_value)) / self._log_gamma)
        offset = (k.long() - self._k_min).clamp(0, self._side - 1) + 1
        bucket = self._side + torch.sign(values).long() * offset                  # zero bucket: self._side
        bucket = torch.where(magnitude < self.min_value, self._side, bucket)
        flat = (bucket + self.buckets * torch.arange(units, device=maps.device)[:, None]).flatten()
        counts = torch.bincount(flat, minlength=units * self.buckets).view(units, self.buckets)
        self._counts = counts if self._counts is None else self._counts + counts

    def cpu(self) -> RunningQuantile:
        """Its counts moved to the CPU (to send them from a GPU task to another machine)."""
        self._counts = None if self._counts is None else self._counts.cpu()
        return self

    def merge(self, other: RunningQuantile) -> None:
        """Add the counts of another RunningQuantile with the same settings (another part of the pool):
        integer counts, so the merged quantile is exactly that of one pass over both parts."""
        if other._counts is not None:
            self._counts = other._counts.to(self._counts.device) + self._counts if self._counts is not None \
                else other._counts

    def result(self) -> torch.Tensor:
        """(units,) float32: each unit's quantile."""
        if self._counts is None:
            raise ValueError("no activations were seen")
        cumulative = self._counts.cumsum(dim=1)
        rank = torch.floor(self.q * (cumulative[:, -1] - 1))                       # the rank asked for, 0-based
        bucket = torch.searchsorted(cumulative, rank[:, None].long(), right=True)[:, 0]
        offset = (bucket - self._side).abs()
        # The bucket's value closest (relatively) to all of its values: 2 gamma^k / (gamma + 1).
        magnitude = 2 * self.gamma ** (offset - 1 + self._k_min).double() / (self.gamma + 1)
        value = torch.sign(bucket - self._side).double() * magnitude
        return value.float().cpu()


@dataclass(frozen=True)
class LayerGeometry:
    """Where a layer's map positions sit in the input image: position i is centred on pixel
    ``offset + stride * i`` and sees ``rf_size`` pixels (the theoretical receptive field)."""

    rf_size: float
    stride: float
    offset: float

    def agrees_with(self, other: "LayerGeometry", tolerance: float = 0.5) -> bool:
        """Same stride, and offset and receptive field within ``tolerance`` pixels."""
        return (abs(self.stride - other.stride) < 1e-6 and abs(self.offset - other.offset) <= tolerance
                and abs(self.rf_size - other.rf_size) <= tolerance)

    def __str__(self) -> str:
        return f"receptive field {self.rf_size:g} px, stride {self.stride:g} px, offset {self.offset:g} px"


class GeometryError(ValueError):
    """A layer's geometry is unknown or contradictory: dissecting it would place its maps blindly."""


class Unmeasurable(GeometryError):
    """The network hides where its positions sit (every position sees the whole input, no gradients
    reach the input), as opposed to showing a layout no geometry describes (GeometryError)."""


def layer_geometry(model: nn.Module, layer: str | None) -> LayerGeometry:
    """Receptive-field arithmetic over the convolutions and poolings up to ``layer`` (None: the whole
    model, for a TorchScript trunk whose output is the layer).

    Modules are taken in registration order, which is execution order for feed-forward
    networks such as CaffeNet and torchvision's AlexNet/VGG. Residual networks' shortcut projections
    (torchvision's ``downsample`` branches) run beside the block's convolutions, not after them: they
    are skipped, so ResNet's geometry is its main path's.

    Raises ValueError when ``layer`` is absent, and GeometryError when there are no such modules or one
    does not say its kernel size and stride (``torch.jit.trace`` drops them): guessing 1 there is what
    once placed a traced network's maps in the image's corner.
    """
    rf, stride, offset = 1.0, 1.0, 0.0
    found, counted = layer is None, 0
    for name, module in model.named_modules():
        if found and layer is not None and not name.startswith(layer + "."):
            break
        if name == layer:
            found = True
        if "downsample" in name.split("."):
            continue
        # Scripted modules (TorchScript files) keep their class name in ``original_name``.
        kind = getattr(module, "original_name", type(module).__name__)
        if kind in ("Conv2d", "MaxPool2d", "AvgPool2d"):
            missing = [attr for attr in ("kernel_size", "stride") if not hasattr(module, attr)]
            if missing:
                raise GeometryError(f"module {name!r} ({kind}) does not say its {' and '.join(missing)} "
                                    f"(a traced TorchScript file keeps only its weights)")
            kernel, step, padding, dilation = (_first(getattr(module, attr, default)) for attr, default in
                                               (("kernel_size", 1), ("stride", 1), ("padding", 0), ("dilation", 1)))
            kernel = dilation * (kernel - 1) + 1
            rf += (kernel - 1) * stride
            offset += ((kernel - 1) / 2 - padding) * stride
            stride *= step
            counted += 1
    if not found:
        raise ValueError(f"the model has no layer named {layer!r}")
    if not counted:     # convolutions done by functions (or a torch.export graph): nothing to count on
        raise GeometryError("the model has no Conv2d, MaxPool2d or AvgPool2d modules to compute its geometry from")
    return LayerGeometry(rf, stride, offset)


def _first(value) -> int:
    return value[0] if isinstance(value, (tuple, list)) else int(value)


# Input sizes tried, as multiples of the network's own: a larger input lets a layer whose receptive field
# is wider than the network's input (CaffeNet's conv5 on small crops) show both edges of some positions.
PROBE_SCALES = (1, 2, 4)
PROBE_POSITIONS = (0.0, 1 / 6, 1 / 3, 0.5, 2 / 3, 5 / 6, 1.0)   # map positions probed, as fractions of its side
RETRY_IMAGES = 8                                  # x more random inputs when a first few give uneven edges


def measure_geometry(forward: Callable[[torch.Tensor], torch.Tensor], input_size: int,
                     device: str | torch.device = "cpu", images: int = 2, max_size: int = 1024) -> LayerGeometry:
    """The geometry of a layer measured from the network itself, whatever its modules say.

    ``forward`` maps (N, 3, S, S) float inputs to the layer's (N, units, H, W) maps. For a few map
    positions, the gradient of the position's units (randomly weighted) with respect to random inputs
    is non-zero exactly on the pixels the position sees: its receptive field, clipped by the image.
    Each receptive field edge that does not touch the border of what the layer sees is exact; the tops
    and the bottoms of the probed positions must lie on two lines ``edge = a + stride * i`` (a layer
    whose positions are evenly spaced in the input), which give the stride, the receptive field and the
    offset. Rows and columns must agree. Inputs up to 4x the network's own are tried when it accepts
    them (a field wider than twice the input shows no inside edges); then the output's growth must
    match the stride (the stride from input and output sizes).

    Raises Unmeasurable, saying why, when the layer gives no spatial maps, its maps do not depend
    on the input through gradients or a position sees the whole input at every size the network
    accepts; GeometryError when its positions are not evenly spaced, in order, in the input, or rows
    and columns differ.
    """
    generator = torch.Generator().manual_seed(0)
    fits: list[tuple[int, int, int, LayerGeometry | None, str]] = []    # (size, H, W, geometry, why not)
    size = input_size
    for scale in PROBE_SCALES:
        size = input_size * scale
        if scale > 1 and size > max_size:
            break
        for count in (images, images * RETRY_IMAGES):
            x = torch.randn(count, 3, size, size, generator=generator).to(device).requires_grad_()
            try:
                with torch.enable_grad():
                    maps = forward(x)
            except Exception as error:              # noqa: BLE001: a network that refuses other sizes
                if scale == 1:
                    raise Unmeasurable(f"the network does not run on {size}x{size} inputs ({error})") from error
                maps = None                         # e.g. a torch.export program with static shapes
                break
            if maps.ndim != 4:
                raise Unmeasurable(f"the layer gives {tuple(maps.shape)} outputs, not (N, units, H, W) maps")
            height, width = maps.shape[2:]
            if height < 2 or width < 2:
                raise Unmeasurable(f"the layer gives {height}x{width} maps on {size}x{size} inputs: a map "
                                   f"position cannot be placed in the image")
            try:
                geometry, why = _measure_at(maps, x, size)
                break
            except Unmeasurable:
                raise
            except GeometryError:
                # A max pooling passes gradient to one pixel of its window, a ReLU to none when off: a few
                # random inputs can miss a receptive field's edge. More of them, before calling it uneven.
                if count > images:
                    raise
        if maps is None:
            *found, why = fits[-1]
            fits[-1] = (*found, f"{why} (the network runs only on {input_size}x{input_size} inputs: exported with "
                                f"a dynamic height and width, larger inputs would show its field's edges)")
            break
        fits.append((size, height, width, geometry, why))
        if geometry is not None:
            break
    size, height, width, geometry, why = fits[-1]
    if geometry is None:
        raise Unmeasurable(why)
    # The output's size must grow by one position per stride of input: checks the stride another way.
    for other, other_height, other_width, _, _ in fits[:-1]:
        for grown, side in ((height - other_height, "rows"), (width - other_width, "columns")):
            if abs(grown - (size - other) / geometry.stride) > 1:
                raise GeometryError(f"from {other} to {size} px inputs the map grows by {grown} {side}, not the "
                                    f"{(size - other) / geometry.stride:g} that a stride of {geometry.stride:g} gives")
    return geometry


def _measure_at(maps: torch.Tensor, x: torch.Tensor, size: int) -> tuple[LayerGeometry | None, str]:
    height, width = maps.shape[2:]
    points = sorted({(round(f * (height - 1)), round(f * (width - 1))) for f in PROBE_POSITIONS})
    edges: dict[str, list[tuple[int, int, int]]] = {"rows": [], "columns": []}   # (position, top, bottom)
    # Units weighted at random, not summed: units whose weights cancel (blue - red and red - blue) would hide
    # every pixel from a plain sum.
    mix = torch.rand(maps.shape[1], generator=torch.Generator().manual_seed(1)).to(maps.device) + 0.5
    for k, (i, j) in enumerate(points):
        (grad,) = torch.autograd.grad((maps[:, :, i, j].float() @ mix).sum(), x, retain_graph=k < len(points) - 1,
                                      allow_unused=True)
        seen = torch.zeros((size, size), dtype=torch.bool) if grad is None else \
            (grad.detach().abs().sum(dim=(0, 1)) > 0).cpu()
        if not seen.any():
            raise Unmeasurable(f"map position ({i}, {j}) does not depend on the input through gradients "
                                f"(a non-differentiable operation, such as rounding, on the way?)")
        for axis, along, position in (("rows", seen.any(dim=1), i), ("columns", seen.any(dim=0), j)):
            index = along.nonzero()[:, 0]
            edges[axis].append((position, int(index[0]), int(index[-1])))
    geometries = []
    for axis, found in edges.items():
        # The pixels any position sees (the first's top to the last's bottom): an edge on their border
        # may be cut by the image, one inside is exact.
        bounds = (min(top for _, top, _ in found), max(bottom for _, _, bottom in found))
        try:
            geometry = _fit_edges(found, bounds, size, axis)
        except _TooWide as error:
            return None, str(error)
        geometries.append(geometry)
    if not geometries[0].agrees_with(geometries[1]):
        raise GeometryError(f"its rows ({geometries[0]}) and columns ({geometries[1]}) differ")
    return geometries[0], ""


def _fit_edges(found: list[tuple[int, int, int]], bounds: tuple[int, int], size: int, axis: str) -> LayerGeometry:
    """Fit top = a + stride * i and bottom = b + stride * i to the edges that lie inside the pixels the layer
    sees (``bounds``; an edge on them may be cut by the image). Tops and bottoms may come from different
    positions, so a field up to twice the input is measured; two of each, so that the fit is checked."""
    tops = [(p, top) for p, top, _ in found if top > bounds[0]]
    bottoms = [(p, bottom) for p, _, bottom in found if bottom < bounds[1]]
    if len(tops) < 2 or len(bottoms) < 2:
        raise _TooWide(f"its map positions see (nearly) the whole {size}x{size} input: their receptive fields "
                       f"reach the image's borders, so where each sits in the image cannot be measured")
    # Least squares with a shared slope: [1 0 i] (a, b, s) = top, [0 1 i] (a, b, s) = bottom.
    design = np.array([(1.0, 0.0, p) for p, _ in tops] + [(0.0, 1.0, p) for p, _ in bottoms])
    values = np.array([t for _, t in tops] + [b for _, b in bottoms], float)
    (top, bottom, stride), *_ = np.linalg.lstsq(design, values, rcond=None)
    if np.abs(design @ (top, bottom, stride) - values).max() > 0.5 or stride <= 0 or bottom < top - 0.5:
        seen = ", ".join(f"{p}: {t}-{b}" for p, t, b in found)
        raise GeometryError(f"its map positions are not evenly spaced in order along the image's {axis} "
                            f"(position: pixels seen = {seen})")
    return LayerGeometry(_round(bottom - top + 1), _round(stride), _round((top + bottom) / 2))


class _TooWide(Unmeasurable):
    """Not measurable at this input size; perhaps at a larger one."""


def _round(value: float) -> float:
    """Least squares leaves ~1e-14 on exact pixel figures; geometry is in (half) pixels."""
    return float(round(value * 1e6) / 1e6)


def checked_geometry(forward: Callable[[torch.Tensor], torch.Tensor], input_size: int,
                     arithmetic: Callable[[], LayerGeometry] | None, what: str,
                     device: str | torch.device = "cpu") -> LayerGeometry:
    """The layer's measured geometry (``measure_geometry``), checked against its modules' arithmetic
    (``arithmetic``, e.g. ``layer_geometry``) where both exist.

    Disagreement raises GeometryError: one of the two misreads the network, and a dissection would be
    wrong either way; so does a measured layout that no geometry describes (a flipped map). Where the
    network hides its geometry (Unmeasurable), the arithmetic is used when it exists (a
    squeeze-and-excitation block makes every position depend on the whole image); where neither works,
    GeometryError names ``what`` (the model and layer).
    """
    why = ""
    try:        # first: an absent layer is a plain ValueError, before any probing
        computed = arithmetic() if arithmetic is not None else None
    except GeometryError as error:
        computed, why = None, str(error)
    try:
        measured = measure_geometry(forward, input_size, device)
    except Unmeasurable as error:
        measured, why = None, f"{error}; {why}" if why else str(error)
    except GeometryError as error:
        raise GeometryError(f"{what}: cannot place its map positions in the input image, so its units are not "
                            f"dissected: {error}") from None
    if measured is not None and computed is not None and not measured.agrees_with(computed):
        # Few random inputs may have missed an edge the same way at every position: look again with more.
        try:
            measured = measure_geometry(forward, input_size, device, images=2 * RETRY_IMAGES)
        except GeometryError:
            pass
    if measured is not None and computed is not None and not measured.agrees_with(computed):
        raise GeometryError(f"{what}: the network measures {measured}, but its modules' kernel sizes and strides "
                            f"give {computed}: one of them misreads the network, so its units are not dissected")
    if measured is not None:
        return measured
    if computed is not None:
        return computed
    raise GeometryError(f"{what}: cannot place its map positions in the input image, so its units are not "
                        f"dissected: {why}")


def receptive_field_masks(maps: torch.Tensor, geometry: LayerGeometry, image_size: int,
                          radius: float, fraction: float = 0.5) -> torch.Tensor:
    """(N, H, W) activation maps -> (N, image_size, image_size) bool masks (paper 4.1).

    A pixel is kept when it lies within ``radius`` of the centre of a map position whose activation
    is at least ``fraction`` of that image's maximum. An image whose maximum is <= 0 keeps nothing.
    """
    maps = maps.float()
    peak = maps.amax(dim=(1, 2), keepdim=True)
    active = (maps >= fraction * peak) & (peak > 0)                           # (N, H, W)
    pixels = torch.arange(image_size, dtype=torch.float32, device=maps.device)
    rows = geometry.offset + geometry.stride * torch.arange(maps.shape[1], device=maps.device)
    cols = geometry.offset + geometry.stride * torch.arange(maps.shape[2], device=maps.device)
    dy2 = (pixels[None, :] - rows[:, None]) ** 2                              # (H, S)
    dx2 = (pixels[None, :] - cols[:, None]) ** 2                              # (W, S)
    # Squared distance to the nearest active centre, as two min-plus products (exact and batched):
    # first over the rows of each map column, then over the columns.
    nearest_row = torch.where(active[..., None], dy2[None, :, None, :], math.inf).amin(dim=1)  # (N, W, S)
    chunks = []
    for part in nearest_row.split(64):      # bounds the (n, S, W, S) intermediate
        dist2 = (part.transpose(1, 2)[:, :, :, None] + dx2[None, None, :, :]).amin(dim=2)  # (n, S_y, S_x)
        chunks.append(dist2 <= radius ** 2)
    return torch.cat(chunks) if chunks else torch.zeros((0, image_size, image_size), dtype=torch.bool)


def darken_outside(images: torch.Tensor, masks: torch.Tensor, keep: float) -> torch.Tensor:
    """uint8 (N, 3, S, S) images with pixels outside ``masks`` (N, S, S) scaled by ``keep``."""
    scale = torch.where(masks, 1.0, keep)[:, None].to(images.device)
    return (images.float() * scale).round().to(torch.uint8)
