"""Extract a layer's units (paper 4.1): each unit's top images over a pool, masked to its receptive
field, with its top-0.5% activation quantile over the pool (Network Dissection's threshold, which
``ambient dissect --masks`` uses), a histogram of its images' spatial maxima and a few images near
lower quantiles of them, masked the same way (the unit page), written to RUN_DIR/units_<layer>.npz
(files only: ``ambient publish`` loads them into the database).

Entry point: ``extract_units``. The pool is an ingested dataset or a folder of still images
(model/data/pool.py). Any network can be analysed: our trained run, a torchvision architecture with the
user's weights, or a TorchScript or ``torch.export`` file whose output is the layer.
"""
from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn
from torchvision.io import encode_jpeg
from tqdm import tqdm

from model.data import dataset as ds
from model.data import pool as pl
from model.units.activations import (LayerGeometry, RunningQuantile, RunningTopK, TopImages, checked_geometry,
                                     darken_outside, layer_geometry, receptive_field_masks)
from model.network.modelfiles import check_export_archive, model_bytes, model_source
from model.units.nethook import run_until
from model.network.caffenet import IMAGE_MEAN, IMAGE_STD, normalize_images
from model.network.run import RunFolder, center_crop, pack_jpegs, save_npz_atomic, units_file
from model.settings import INGEST, UNITS, UnitSettings

UNITS_PER_MASK_BATCH = 8
TORCHVISION_INPUT = 224   # torchvision's ImageNet models are trained on 224 crops of 256 frames


@dataclass
class Network:
    """A network cut at the layer under study, with how to feed it frames."""

    module: nn.Module
    layer: str | None           # None: the module's output is the layer (a TorchScript or torch.export file)
    kind: str                   # "caffenet-bn", "torchvision:alexnet", "torchscript", "export"
    labels_kind: str | None
    frame_size: int             # frames are resized to this side, then centre-cropped to input_size
    input_size: int
    mean: tuple[float, float, float] = IMAGE_MEAN
    std: tuple[float, float, float] = IMAGE_STD
    spec: str | None = None      # how to load it again (``load_network``): None for our run
    weights: str | None = None
    geometry: LayerGeometry | None = None    # where the layer's positions sit in the input (``load_network``)

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        """The layer's maps of normalised float inputs; differentiable, so that its geometry can be measured."""
        if self.layer is None:
            return self.module(x)
        return run_until(self.module, self.layer, x)

    @torch.inference_mode()
    def activations(self, crops: torch.Tensor) -> torch.Tensor:
        x = normalize_images(crops, self.mean, self.std)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=x.device.type == "cuda"):
            return self.forward_map(x).float()


def load_network(run: RunFolder | str | Path, layer: str, model_spec: str | None = None, weights: Path | None = None,
                 device: str | torch.device = "cpu", checkpoint: Path | None = None,
                 digests: Mapping[str, str] | None = None) -> Network:
    """Our trained run (``model_spec`` None), ``torchvision:<name>``, ``torchscript:<file>`` or
    ``export:<file>`` (a ``torch.export.save`` program), with the layer's geometry measured
    (``model.units.activations.checked_geometry``); ``checkpoint``: other weights of our run (a kept checkpoint);
    ``digests``: each model file must have its recorded SHA-256 (the server, model/network/modelfiles.py).

    Raises ValueError (bad spec, unknown layer, a geometry that cannot be measured or that contradicts
    the modules' arithmetic, a model file that could run code or has changed: ModelFileRefused) or
    FileNotFoundError with a message naming the input. ``run``: RUN_DIR or its reader.
    """
    run = RunFolder.of(run)
    if model_spec is None:
        model, info = run.network(device, checkpoint, digests)
        network = Network(model, layer, "caffenet-bn", info.label_kind, info.frame_size, info.crop_size,
                          info.mean, info.std)
    elif model_spec.startswith("torchvision:"):
        name = model_spec.split(":", 1)[1]
        if name not in torchvision.models.list_models():
            raise ValueError(f"{model_spec}: torchvision has no model {name!r}")
        if weights is None:
            raise ValueError(f"{model_spec}: give the network's weights with --weights FILE")
        model = torchvision.models.get_model(name, weights=None)
        state = torch.load(model_source(weights, digests), map_location="cpu", weights_only=True)
        model.load_state_dict(state.get("state_dict", state.get("model", state)))
        network = Network(model.to(device).eval(), layer, model_spec, None, INGEST.frame_size, TORCHVISION_INPUT,
                          spec=model_spec, weights=str(Path(weights).resolve()))
    elif model_spec.startswith("torchscript:"):
        path = Path(model_spec.split(":", 1)[1])
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such TorchScript file")
        # A TorchScript file is a program: only the CLI names one (the server: as published, by its digest).
        model = torch.jit.load(model_source(path, digests), map_location=device).eval()
        # get_submodule is unavailable on scripted modules: the file's output is the layer.
        network = Network(model, None, "torchscript", None, INGEST.frame_size, TORCHVISION_INPUT,
                          spec=f"torchscript:{path.resolve()}")
    elif model_spec.startswith("export:"):
        path = Path(model_spec.split(":", 1)[1])
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such torch.export file")
        program = _ExportedProgram.load(path, device, digests)
        # The program's own input size when it was exported with a fixed one (the usual way).
        size = program.size or TORCHVISION_INPUT
        network = Network(program, None, "export", None, round(size * INGEST.frame_size / TORCHVISION_INPUT), size,
                          spec=f"export:{path.resolve()}")
    else:
        raise ValueError(f"{model_spec}: use torchvision:<name>, torchscript:<file> or export:<file>")
    network.geometry = _network_geometry(network, run.path, device)
    return network


_GEOMETRIES: dict[tuple, LayerGeometry] = {}      # measured once per network file and layer in a process


def _network_geometry(network: Network, run_dir: Path, device) -> LayerGeometry:
    if network.kind == "caffenet-bn":
        key: tuple = (network.kind, network.layer, network.input_size)   # the architecture fixes it, not the weights
    else:
        files = [Path(f) for f in (network.spec.split(":", 1)[1] if ":" in network.spec else None, network.weights)
                 if f and Path(f).is_file()]
        key = (network.spec, network.layer, network.input_size,
               *((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files))
    if key not in _GEOMETRIES:
        what = f"{network.spec or Path(run_dir)}, layer {network.layer or 'output'}"
        # A torch.export graph keeps no modules to do arithmetic on: its geometry is measured only.
        arithmetic = None if network.kind == "export" else partial(layer_geometry, network.module, network.layer)
        _GEOMETRIES[key] = checked_geometry(network.forward_map, network.input_size, arithmetic, what, device)
    return _GEOMETRIES[key]


class _ExportedProgram(nn.Module):
    """A ``torch.export`` program as a module. A program exported with a fixed batch size (the usual
    way) is run on batches of exactly that size, the last one padded."""

    def __init__(self, graph: nn.Module, batch: int | None, size: int | None):
        super().__init__()
        self.__dict__["graph"] = graph     # not a child: exported graphs refuse train()/eval()
        self.batch, self.size = batch, size

    @classmethod
    def load(cls, path: Path, device, digests: Mapping[str, str] | None = None) -> "_ExportedProgram":
        data = model_bytes(path, digests)     # read once: the bytes checked are the bytes loaded
        check_export_archive(data, path)
        try:
            program = torch.export.load(io.BytesIO(data))
        except Exception as error:         # noqa: BLE001: any unreadable file is named, whatever went wrong
            raise ValueError(f"{path}: not a torch.export program ({error})") from error
        names = program.graph_signature.user_inputs
        shapes = [node.meta["val"].shape for node in program.graph.nodes
                  if node.op == "placeholder" and node.name in names and "val" in node.meta]
        if len(names) != 1 or len(shapes) != 1 or len(shapes[0]) != 4 or shapes[0][1] != 3:
            raise ValueError(f"{path}: the program takes {len(names)} inputs of shapes "
                             f"{[tuple(s) for s in shapes]}; one (N, 3, H, W) image batch is needed")
        batch, _, height, width = (d if isinstance(d, int) else None for d in shapes[0])
        if height != width:
            raise ValueError(f"{path}: the program takes {height}x{width} images; square inputs are needed")
        return cls(program.module().to(device), batch, height)

    def train(self, mode: bool = True) -> "_ExportedProgram":
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.batch is None or len(x) == self.batch:
            return self.graph(x)
        outputs = []
        for start in range(0, len(x), self.batch):
            part = x[start:start + self.batch]
            padded = torch.cat([part, part[-1:].expand(self.batch - len(part), *part.shape[1:])])
            outputs.append(self.graph(padded)[:len(part)])
        return torch.cat(outputs)


def _pool_crops(data_dir: Path, records: Sequence[ds.FrameRecord], network: Network, settings: UnitSettings,
                device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(uint8 network-input crops on ``device``, positions in ``records``) per batch: a dataset's frames
    with the project's one JPEG decoder (model.data.frames), the same pixels training saw; still images
    scaled and cropped as ingest does (model/data/pool.py)."""
    for positions, frames in pl.stream_pool(data_dir, records, network.frame_size, settings.batch_size, device,
                                            depth=max(2, settings.workers)):
        yield center_crop(frames, network.input_size), torch.from_numpy(positions)


pool_records = pl.pool_records


@dataclass
class PoolPass:
    """What one pass over (a part of) a pool gathers. Passes over consecutive parts ``merge`` into
    exactly the pass over the whole: how ``ambient units --ray`` splits a pool across machines."""

    top: RunningTopK
    quantile: RunningQuantile        # every activation, for the top-quantile threshold
    maxima: np.ndarray               # (images, units) each image's spatial maxima, in the part's order

    def merge(self, later: PoolPass) -> None:
        """Fold in the pass over the part that follows this one."""
        self.top.merge(later.top)
        self.quantile.merge(later.quantile)
        self.maxima = np.concatenate([self.maxima, later.maxima])


def video_index(records: Sequence[ds.FrameRecord]) -> np.ndarray:
    """Each record's video as a number (a still image is its own "video": --one-per-video changes
    nothing for an image folder); numbered over the whole pool, so parts of it agree."""
    videos = {v: i for i, v in enumerate(dict.fromkeys(r.video_id or r.image for r in records))}
    return np.array([videos[r.video_id or r.image] for r in records], dtype=np.int64)


def pool_pass(network: Network, data_dir: Path, records: Sequence[ds.FrameRecord], videos: np.ndarray,
              settings: UnitSettings, one_per_video: bool = False, device: str | torch.device = "cpu",
              progress: Callable[[int], None] = lambda n: None) -> PoolPass:
    """One pass of ``network`` over ``records`` (``videos``: their ``video_index``): each unit's
    ``settings.top`` frames with the largest spatial maximum (frame ids are pool rows), the counts
    of the activation quantile, and every image's spatial maxima."""
    rows = torch.tensor([r.frame_id for r in records])
    video_ids = torch.as_tensor(videos)
    running = RunningTopK(settings.top, one_per_video)
    quantile = RunningQuantile(1 - settings.top_quantile, settings.quantile_error)
    maxima = None
    for crops, positions in _pool_crops(data_dir, records, network, settings, device):
        maps = network.activations(crops)
        if maps.ndim != 4:
            raise ValueError(f"layer {network.layer!r} gives {tuple(maps.shape)} outputs, not spatial maps")
        running.update(maps, rows[positions], video_ids[positions])
        quantile.update(maps)
        if maxima is None:
            # One array, filled in place: keeping each batch's small array instead fragments the heap
            # between the batches' large temporaries, and memory then grew ~20x faster than the maxima.
            maxima = np.empty((len(records), maps.shape[1]), np.float32)
        maxima[positions.numpy()] = maps.amax(dim=(2, 3)).cpu().numpy()
        progress(len(positions))
    if maxima is None:
        raise ValueError("no images were seen")
    return PoolPass(running, quantile, maxima)


def top_images(network: Network, data_dir: Path, records: Sequence[ds.FrameRecord], settings: UnitSettings,
               one_per_video: bool = False, device: str | torch.device = "cpu",
               progress: Callable[[int], None] = lambda n: None) -> TopImages:
    """Each unit's ``settings.top`` frames with the largest spatial maximum; frame ids are pool rows."""
    return pool_pass(network, data_dir, records, video_index(records), settings, one_per_video, device,
                     progress).top.result()


def _pool_part(run_dir: Path, data_dir: Path, records: Sequence[ds.FrameRecord], videos: np.ndarray,
               settings: UnitSettings, model_spec: str | None, weights: Path | None, one_per_video: bool,
               device: str) -> PoolPass:
    """A Ray task: the pool pass over one part, the network loaded on the node from shared storage."""
    network = load_network(run_dir, settings.layer, model_spec, weights, device)
    done = pool_pass(network, data_dir, records, videos, settings, one_per_video, device)
    return PoolPass(done.top.cpu(), done.quantile.cpu(), done.maxima)


def pool_pass_on_cluster(run_dir: Path, data_dir: Path, records: Sequence[ds.FrameRecord], settings: UnitSettings,
                         model_spec: str | None, weights: Path | None, one_per_video: bool, device: torch.device,
                         progress: Callable[[int], None] = lambda n: None) -> PoolPass:
    """``pool_pass`` over the whole pool, its parts run by tasks on the connected Ray cluster.

    Parts are whole batches of the single-process pass, so every image meets the network in the same
    batch as there, and their merge is the same result, bit for bit (on nodes of the same kind).
    """
    from model.engine import cluster_summary, map_on_cluster

    videos = video_index(records)
    batches = math.ceil(len(records) / settings.batch_size)
    # Enough parts to keep every CPU busy (and to lose little when a node dies), few enough to amortise
    # loading the network in each.
    per_part = max(1, min(settings.cluster_part_batches, batches // (2 * max(1, int(cluster_summary()["cpus"])))))
    size = per_part * settings.batch_size
    starts = range(0, len(records), size)
    cuda = device.type == "cuda"
    parts = ((run_dir, data_dir, records[start:start + size], videos[start:start + size], settings, model_spec,
              weights, one_per_video, str(device) if not cuda else "cuda") for start in starts)
    done: dict[int, PoolPass] = {}
    for index, part in map_on_cluster(_pool_part, parts, num_gpus=1 if cuda else 0):
        done[index] = part
        progress(len(part.maxima))
    whole = done[0]
    for index in range(1, len(starts)):
        whole.merge(done.pop(index))
    return whole


def activation_histograms(maxima: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Per unit, the histogram of its (images, units) ``maxima``: counts (units, bins), edges (units, bins + 1)."""
    histograms = [np.histogram(maxima[:, unit], bins=bins) for unit in range(maxima.shape[1])]
    return (np.stack([counts for counts, _ in histograms]).astype(np.int64),
            np.stack([edges for _, edges in histograms]).astype(np.float32))


def quantile_samples(maxima: np.ndarray, quantiles: Sequence[float], per_quantile: int) -> np.ndarray:
    """(units, len(quantiles) * per_quantile) positions in the pool: per unit and quantile, the images
    ranked nearest that quantile of the unit's spatial maxima (-1 in slots a small pool cannot fill)."""
    n, units = maxima.shape
    order = np.argsort(maxima, axis=0, kind="stable")                   # (n, units), weakest first
    # No more images around a quantile than lie between it and the next one: in a small pool the windows
    # would overlap and every quantile show the same images (12 images: 1 each, not 10 of the 12 thrice).
    gaps = np.diff(np.sort(np.asarray(quantiles, float)))
    take = max(1, min(per_quantile, n, int(gaps.min() * (n - 1)) if len(gaps) else n))
    positions = np.full((units, len(quantiles) * per_quantile), -1, np.int64)
    for q, quantile in enumerate(quantiles):
        start = int(np.clip(round(quantile * (n - 1)) - take // 2, 0, n - take))
        positions[:, q * per_quantile:q * per_quantile + take] = order[start:start + take].T[:, ::-1]
    return positions


def sample_maps(network: Network, data_dir: Path, records: Sequence[ds.FrameRecord], positions: np.ndarray,
                settings: UnitSettings, device: str | torch.device = "cpu") -> TopImages:
    """The sampled images (``positions`` in ``records``, per unit) as TopImages, their maps computed
    again, so that ``masked_units`` masks them as it masks the top images."""
    needed = sorted({int(p) for p in positions.flatten() if p >= 0})
    maps = None
    for crops, batch_positions in _pool_crops(data_dir, [records[p] for p in needed], network, settings, device):
        batch = network.activations(crops).cpu()
        if maps is None:
            maps = torch.zeros(*positions.shape, *batch.shape[2:])
        for b, p in enumerate(batch_positions.tolist()):
            units, slots = np.nonzero(positions == needed[p])
            maps[units, slots] = batch[b, units]
    kept = torch.from_numpy(positions >= 0)
    maps = torch.zeros(*positions.shape, 1, 1) if maps is None else maps
    rows = torch.tensor([[records[p].frame_id if p >= 0 else -1 for p in unit] for unit in positions.tolist()])
    scores = torch.where(kept, maps.amax(dim=(2, 3)), torch.tensor(float("-inf")))
    return TopImages(scores=scores, frame_ids=rows.reshape(positions.shape), maps=maps)


def rf_radius(geometry: LayerGeometry, settings: UnitSettings) -> float:
    return settings.empirical_rf_fraction * geometry.rf_size / 2


def masked_units(network: Network, geometry: LayerGeometry, top: TopImages, data_dir: Path,
                 records_by_row: dict[int, ds.FrameRecord], settings: UnitSettings,
                 device: str | torch.device = "cpu") -> Iterator[tuple[int, list[tuple[int, float, bytes]]]]:
    """Per unit: (unit, [(row, activation, masked JPEG), ...] best first)."""
    needed = sorted({int(r) for r in top.frame_ids.flatten() if r >= 0})
    crops = {}
    # Every top frame is decoded once: at most units x top images, whatever the pool size.
    for batch, positions in _pool_crops(data_dir, [records_by_row[r] for r in needed], network, settings,
                                         device):
        crops.update((needed[p], image) for p, image in zip(positions.tolist(), batch))
    radius = rf_radius(geometry, settings)
    units = top.scores.shape[0]
    # Several units at a time: per-call overhead dominates for small maps.
    for first in range(0, units, UNITS_PER_MASK_BATCH):
        chunk = slice(first, min(first + UNITS_PER_MASK_BATCH, units))
        kept = top.frame_ids[chunk] >= 0                                          # (u, k)
        rows = top.frame_ids[chunk][kept].tolist()
        masks = receptive_field_masks(top.maps[chunk][kept].to(device), geometry, network.input_size, radius,
                                      settings.activation_fraction)
        images = darken_outside(torch.stack([crops[r] for r in rows]).to(device), masks, settings.darken) \
            if rows else torch.empty(0)
        jpegs = iter(_jpegs(images, settings.jpeg_quality))
        scores = iter(top.scores[chunk][kept].tolist())
        rows_left = iter(rows)
        for unit, unit_kept in zip(range(chunk.start, chunk.stop), kept.sum(dim=1).tolist()):
            yield unit, [(next(rows_left), next(scores), next(jpegs)) for _ in range(unit_kept)]


def _jpegs(images: torch.Tensor, quality: int) -> list[bytes]:
    """JPEG bytes of uint8 (B, 3, H, W) images, encoded where they are (nvJPEG on a GPU) in one call."""
    if len(images) == 0:
        return []
    return [data.cpu().numpy().tobytes() for data in encode_jpeg(list(images), quality=quality)]


def save_units(path: Path, top: TopImages, jpegs: list[list[bytes]], geometry: LayerGeometry, network: Network,
               data_dir: Path, settings: UnitSettings, thresholds: torch.Tensor | None = None,
               samples: tuple[TopImages, list[list[bytes]], np.ndarray, np.ndarray] | None = None,
               maxima: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """The top images, their maps, how to place them on the frames, the network and pool they came from
    and each unit's activation threshold (``ambient dissect`` reads these), and their masked JPEGs
    (``ambient publish``), in one file written at once; ``maxima``: (the pool's frame rows, every pool image's
    spatial maxima (images, units)), which the similar units and ``ambient compare`` correlate."""
    all_records = pl.load_pool(data_dir)
    meta = {"data_dir": str(Path(data_dir).resolve()), "layer": network.layer, "kind": network.kind,
            "frame_size": network.frame_size, "input_size": network.input_size,
            "rf_size": geometry.rf_size, "stride": geometry.stride, "offset": geometry.offset,
            "rf_radius": rf_radius(geometry, settings), "activation_fraction": settings.activation_fraction,
            "labels_kind": network.labels_kind, "model_spec": network.spec, "weights": network.weights,
            "pool": "images" if pl.is_image_folder(data_dir) else "dataset", "split": settings.split,
            "pool_size": len(all_records), "pool_digest": pl.pool_digest(all_records),
            "top_quantile": settings.top_quantile, "sample_quantiles": list(settings.sample_quantiles),
            "samples_per_quantile": settings.samples_per_quantile}
    extra = {} if thresholds is None else {"thresholds": thresholds.numpy().astype(np.float32)}
    if samples is not None:    # the unit page's lower-quantile samples and activation histograms
        sampled, sample_jpegs, counts, edges = samples
        extra.update({f"sample_{key}": value for key, value in pack_jpegs(sample_jpegs).items()},
                     sample_frame_ids=sampled.frame_ids.numpy(), sample_scores=sampled.scores.numpy(),
                     histogram_counts=counts, histogram_edges=edges)
    if maxima is not None:
        extra.update(pool_frame_ids=maxima[0], pool_maxima=maxima[1].astype(np.float32))
    save_npz_atomic(path, scores=top.scores.numpy(), frame_ids=top.frame_ids.numpy(),
                    maps=top.maps.numpy().astype(np.float16), meta=json.dumps(meta), **pack_jpegs(jpegs), **extra)


@dataclass(frozen=True)
class UnitView:
    """What a units file says about one unit beyond its top images (``save_units``'s samples)."""

    histogram_counts: list[int]
    histogram_edges: list[float]
    samples: list[tuple[float, int, float, bytes]]     # (quantile, pool row, activation, masked JPEG), per quantile best first


def read_unit_views(path: Path) -> list[UnitView] | None:
    """Each unit's histogram and lower-quantile samples from a units file; None for a file saved without them."""
    with np.load(path) as data:
        if "sample_frame_ids" not in data:
            return None
        meta = json.loads(str(data["meta"]))
        blob, offsets = data["sample_jpegs"].tobytes(), data["sample_offsets"].tolist()
        rows, scores = data["sample_frame_ids"], data["sample_scores"]
        counts, edges = data["histogram_counts"], data["histogram_edges"]
    per_quantile = meta["samples_per_quantile"]
    quantiles = [meta["sample_quantiles"][slot // per_quantile] for slot in range(rows.shape[1])]
    jpegs = iter(blob[start:end] for start, end in zip(offsets[:-1], offsets[1:]))
    return [UnitView(counts[unit].tolist(), edges[unit].tolist(),
                     [(quantiles[slot], int(row), float(scores[unit, slot]), next(jpegs))
                      for slot, row in enumerate(rows[unit].tolist()) if row >= 0])
            for unit in range(rows.shape[0])]


def pool_warning(pool_size: int, top: int) -> str | None:
    """A warning when the pool is too small for top images to mean much (each unit's top would be most of it)."""
    if pool_size < 10 * top:
        return (f"the pool holds {pool_size} frames, fewer than 10 x --top ({10 * top}): each unit's top {top} "
                f"images are a large share of the pool; pool more frames (--split all, more videos or more images)")
    return None


def extract_units(run_dir: Path, data_dir: Path, settings: UnitSettings = UNITS,
                  model_spec: str | None = None, weights: Path | None = None, one_per_video: bool = False,
                  device: str | torch.device = "cpu", show_progress: bool = True,
                  ray_address: str | None = None) -> dict:
    """Find and mask the units of ``settings.layer`` into RUN_DIR's files; returns a short summary.

    With ``ray_address`` the pass over the pool (the work that grows with it) runs on that Ray cluster
    (``pool_pass_on_cluster``); masking each unit's top images stays here.

    Both files are written atomically, the masked images last: a killed extraction leaves the
    previous analysis of that layer whole.
    """
    run_dir, data_dir = Path(run_dir), Path(data_dir)
    network = load_network(run_dir, settings.layer, model_spec, weights, device)
    geometry = network.geometry
    records = pool_records(data_dir, settings.split)
    with tqdm(total=len(records), desc="activations", unit="frame", disable=not show_progress) as bar:
        if ray_address is None:
            passed = pool_pass(network, data_dir, records, video_index(records), settings, one_per_video, device,
                               bar.update)
        else:
            from model.engine import on_cluster

            with on_cluster(ray_address):
                passed = pool_pass_on_cluster(run_dir, data_dir, records, settings, model_spec, weights,
                                              one_per_video, torch.device(device), bar.update)
    top, maxima = passed.top.result(), passed.maxima     # maxima: every pool image's, per unit
    run_dir.mkdir(parents=True, exist_ok=True)
    num_units = top.scores.shape[0]
    all_records = {r.frame_id: r for r in pl.load_pool(data_dir)}
    masked = masked_units(network, geometry, top, data_dir, all_records, settings, device)
    jpegs = [[jpeg for _row, _score, jpeg in images]
             for _unit, images in tqdm(masked, total=num_units, desc="masks", unit="unit", disable=not show_progress)]
    sampled = sample_maps(network, data_dir, records,
                          quantile_samples(maxima, settings.sample_quantiles, settings.samples_per_quantile),
                          settings, device)
    sample_jpegs = [[jpeg for _row, _score, jpeg in images]
                    for _unit, images in masked_units(network, geometry, sampled, data_dir, all_records, settings,
                                                      device)]
    save_units(units_file(run_dir, network.layer), top, jpegs, geometry, network, data_dir, settings,
               thresholds=passed.quantile.result(),
               samples=(sampled, sample_jpegs, *activation_histograms(maxima, settings.histogram_bins)),
               maxima=(np.array([r.frame_id for r in records], np.int64), maxima))
    return {"units": num_units, "pool": len(records), "layer": network.layer or "output",
            "rf_size": geometry.rf_size, "rf_radius": rf_radius(geometry, settings),
            "still_images": pl.is_image_folder(data_dir)}
