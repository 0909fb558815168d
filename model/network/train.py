"""Train CaffeNet-BN to predict a frame's sound label from the frame alone (paper 3.2, "Training").

One entry: ``train(data_dir, label_kind, run_dir, settings, device, resume)``. Under ``torchrun`` it
runs DistributedDataParallel (NCCL on GPUs, gloo on CPU): every process takes its share of each
global batch and only rank 0 evaluates and writes.

Frames come from one of two sources. When the decoded frames fit ``TrainSettings.cache_bytes`` they are
decoded once into memory (``FrameSource``) and each epoch is a seeded shuffle of the kept training rows.
Otherwise training streams them from the dataset's tar shards (``model/data/shards.py``; rank 0 writes them
first if they are missing or stale): each rank reads its own shards of a seeded shard order through a
seeded shuffle buffer, in memory that does not grow with the dataset. Either way the data order and
each step's augmentation are functions of (seed, step, rank), so a resumed run replays exactly the
batches an uninterrupted run would. RUN_DIR layout and the checkpoint format: ``model/network/run.py``.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from model.data import dataset
from model.cpu import training_threads
from model.data.frames import FrameSource, LabelTargets, load_targets, random_crop_flip
from model.data.shards import ShardStream, check_shards, current_index, write_shards
from model.network.caffenet import IMAGE_MEAN, IMAGE_STD, CaffeNetBN, normalize_images
from model.network.run import (CHECKPOINT, FINAL_MODEL, METRICS, STREAM, RunInfo, center_crop, kept_checkpoint_file,
                               load_run, save_atomic, write_run_json)
from model.settings import FEW_STEPS, TrainSettings

__all__ = ["train", "load_run", "planned_steps", "few_steps_warning", "kept_steps"]


def _distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world size); joins the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def _lr_lambda(total_steps: int, warmup_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return factor


def _batches(train_index: np.ndarray, settings: TrainSettings, steps_per_epoch: int, first_step: int,
             total_steps: int, rank: int, world: int) -> Iterator[np.ndarray]:
    """This process's manifest rows for each step: a seeded shuffle per epoch, so any step can be replayed."""
    order = None
    for step in range(first_step, total_steps):
        epoch, position = divmod(step, steps_per_epoch)
        if order is None or position == 0:
            order = np.random.default_rng([settings.seed, epoch]).permutation(len(train_index))
        batch = order[position * settings.batch_size:(position + 1) * settings.batch_size]
        yield train_index[batch[rank::world]]


def _open_stream(data_dir: Path, labels: LabelTargets, frames: int, settings: TrainSettings, device: torch.device,
                 rank: int, world: int, progress: bool) -> ShardStream:
    """This rank's stream over the shards; rank 0 writes them when none match the manifest (the others wait)
    and checks them, so that every rank skips the same unreadable ones and takes the same number of steps."""
    if rank == 0:
        index = current_index(data_dir)
        if index is None:
            tqdm.write(f"{data_dir}: {frames:,} decoded frames exceed the cache ({settings.cache_bytes:,} bytes): "
                       f"training streams them from tar shards; writing them first (as `ambient shards` does)",
                       file=sys.stderr)
            index = write_shards(data_dir, progress=progress)
        unreadable = check_shards(data_dir, index)
    else:
        while (index := current_index(data_dir)) is None:   # files, not a collective: writing may take hours
            time.sleep(2)
        unreadable = None
    if world > 1:
        shared = [unreadable]
        dist.broadcast_object_list(shared, src=0)
        unreadable = shared[0]
    train_frames, test_frames = np.zeros(frames, bool), np.zeros(frames, bool)
    train_frames[labels.train_index], test_frames[labels.test_index] = True, True
    return ShardStream(data_dir, index, unreadable, train_frames, test_frames, settings.frame_size, device,
                       settings.batch_size // world, settings.shuffle_buffer, settings.seed, rank, world)


def _gather_reading(stream: ShardStream, world: int) -> list[dict]:
    """Every rank's shards opened and skipped since the last evaluation (rank 0 records them)."""
    records = [None] * world
    if world == 1:
        records[0] = stream.take_record()
    else:
        dist.all_gather_object(records, stream.take_record())
    return records


def _rng_state(device: torch.device) -> dict:
    """Dropout's random state (data order and crops are functions of the step and need none)."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    if targets.ndim == 2:
        return nn.functional.binary_cross_entropy_with_logits(logits.float(), targets)
    return nn.functional.cross_entropy(logits.float(), targets)


@torch.no_grad()
def evaluate(model: CaffeNetBN, test_batches: Iterator[tuple[np.ndarray, torch.Tensor]], labels: LabelTargets,
             info: RunInfo) -> tuple[float, float]:
    """(test accuracy, test loss) on centre crops of (rows, frames) batches; per-bit accuracy for binary codes."""
    was_training = model.training
    model.eval()
    correct, loss_sum, count = 0.0, 0.0, 0
    for rows, frames in test_batches:
        images = normalize_images(center_crop(frames, info.crop_size), info.mean, info.std)
        targets = labels.targets[rows].to(images.device)
        with torch.autocast(images.device.type, torch.bfloat16, enabled=images.device.type == "cuda"):
            logits = model(images)
        loss_sum += float(_loss(logits, targets)) * len(rows)
        if labels.multilabel:
            correct += float(((logits > 0).float() == targets).float().mean(1).sum())
        else:
            correct += float((logits.argmax(1) == targets).sum())
        count += len(rows)
    model.train(was_training)
    return correct / count, loss_sum / count


def _trim_metrics(path: Path, last_step: int) -> None:
    """Drop evaluations logged after the checkpoint we resume from, so no step appears twice."""
    if not path.exists():
        return
    rows = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in rows if json.loads(line)["step"] <= last_step]
    if len(kept) != len(rows):
        with dataset.atomic_file(path) as file:
            file.write("".join(line + "\n" for line in kept).encode())


def kept_steps(total_steps: int, keep: int) -> list[int]:
    """The steps whose weights ``--keep-checkpoints keep`` keeps: ``keep`` evenly spaced, the last always."""
    if keep <= 0 or total_steps <= 0:
        return []
    return sorted({max(1, round(total_steps * i / keep)) for i in range(1, keep + 1)})


def planned_steps(data_dir: str | Path, label_kind: str, settings: TrainSettings) -> tuple[int, int]:
    """(training frames kept, optimiser steps) that ``train`` would run on DATA_DIR's labels."""
    labels = load_targets(data_dir, label_kind, dataset.load_splits(data_dir))
    return len(labels.train_index), settings.epochs * (len(labels.train_index) // settings.batch_size)


def few_steps_warning(frames: int, settings: TrainSettings, preset: str) -> str | None:
    """What to tell a user whose data gives the preset fewer than FEW_STEPS steps (None: enough)."""
    steps = settings.epochs * (frames // settings.batch_size)
    if settings.epochs == 0 or steps >= FEW_STEPS:
        return None
    epochs = math.ceil(FEW_STEPS / max(1, frames // settings.batch_size))
    batch = max(1, frames * settings.epochs // FEW_STEPS)
    return (f"warning: --preset {preset} gives only {steps} training steps on this data ({frames} kept training "
            f"frames / batch {settings.batch_size} x {settings.epochs} epochs), fewer than about {FEW_STEPS}: "
            f"the network will barely learn. Add videos (10 frames each, half of the training frames are kept), "
            f"or pass --epochs {epochs} or --batch-size {batch}.")


@dataclass(frozen=True)
class _Process:
    """Where this process trains: its device, and its rank among ``world`` torchrun processes."""
    device: torch.device
    rank: int
    world: int


@dataclass
class _Data:
    """The frames' labels, where the frames come from (``stream``: tar shards; None: the decoded cache) and
    the steps they give."""
    labels: LabelTargets
    stream: ShardStream | None
    steps_per_epoch: int
    total_steps: int
    eval_every: int
    keep_steps: set[int]


@dataclass
class _Optimisation:
    """The network, its optimiser and learning-rate schedule, and the steps taken so far."""
    model: CaffeNetBN
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    step: int = 0


def train(data_dir: str | Path, label_kind: str, run_dir: str | Path, settings: TrainSettings,
          device: str | torch.device = "cpu", resume: bool = False, preset: str = "custom",
          progress: bool = True) -> dict:
    """Train (or resume) a run; returns the last evaluation's metrics."""
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    process = _join_processes(torch.device(device), settings)
    _check_run_dir(run_dir, resume)
    data = _open_data(data_dir, label_kind, settings, process, progress)
    info = RunInfo(label_kind=label_kind, num_outputs=data.labels.num_outputs, multilabel=data.labels.multilabel,
                   frame_size=settings.frame_size, crop_size=settings.crop_size, fc_width=settings.fc_width,
                   mean=IMAGE_MEAN, std=IMAGE_STD)
    optimisation = _build_network(info, settings, process.device, data.total_steps)
    if resume:
        _resume(optimisation, run_dir, label_kind, process, data.steps_per_epoch)
    elif process.rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_run_json(run_dir, info, {"config": asdict(settings), "preset": preset,
                                       "data_dir": str(data_dir.resolve()), "world_size": process.world,
                                       "frame_source": "shards" if data.stream else "cache"})
    if process.rank == 0:
        _trim_metrics(run_dir / METRICS, optimisation.step)
        _trim_metrics(run_dir / STREAM, optimisation.step)
    trained = nn.parallel.DistributedDataParallel(optimisation.model) if process.world > 1 else optimisation.model
    if settings.compile and process.device.type == "cuda":
        trained = torch.compile(trained)
    train_batches, test_batches = _frame_batches(data_dir, data, settings, process, optimisation.step, progress)
    metrics = _step_loop(trained, optimisation, train_batches, test_batches, data, info, settings, process,
                         run_dir, progress)
    _finish(optimisation, test_batches, data, info, process, run_dir, metrics)
    return metrics


def _join_processes(device: torch.device, settings: TrainSettings) -> _Process:
    """This process's rank and device under torchrun (or the one process), and its share of the CPU threads."""
    rank, world = _distributed(device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if device.type == "cpu":
        torch.set_num_threads(training_threads(world))
    if settings.batch_size % world:
        raise ValueError(f"batch size {settings.batch_size} does not split across {world} processes")
    return _Process(device, rank, world)


def _check_run_dir(run_dir: Path, resume: bool) -> None:
    """A new run needs a folder without a checkpoint; a resumed one, its checkpoint."""
    if (run_dir / CHECKPOINT).exists() and not resume:
        raise FileExistsError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    if resume and not (run_dir / CHECKPOINT).exists():
        raise FileNotFoundError(f"{run_dir}: no {CHECKPOINT} to resume from")


def _open_data(data_dir: Path, label_kind: str, settings: TrainSettings, process: _Process,
               progress: bool) -> _Data:
    """The labels, the shards' stream when the decoded frames would not fit the cache, and the steps."""
    splits = dataset.load_splits(data_dir)    # not the manifest's records: 1.8 M of them take GBs
    labels = load_targets(data_dir, label_kind, splits)
    if len(labels.train_index) < settings.batch_size:
        raise ValueError(f"the training split has {len(labels.train_index)} frames, fewer than one batch of "
                         f"{settings.batch_size}; lower --batch-size")
    streaming = len(splits) * 3 * settings.frame_size ** 2 > settings.cache_bytes
    stream = (_open_stream(data_dir, labels, len(splits), settings, process.device, process.rank, process.world,
                           progress and process.rank == 0)
              if streaming else None)
    steps_per_epoch = stream.steps_per_epoch if stream else len(labels.train_index) // settings.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"the training shards give each of {process.world} processes fewer than one batch of "
                         f"{settings.batch_size // process.world} frames; lower --batch-size or write smaller shards")
    total_steps = settings.epochs * steps_per_epoch   # 0 epochs: the untrained network (a control)
    return _Data(labels, stream, steps_per_epoch, total_steps,
                 eval_every=max(1, steps_per_epoch // settings.evals_per_epoch),
                 keep_steps=set(kept_steps(total_steps, settings.keep_checkpoints)))


def _build_network(info: RunInfo, settings: TrainSettings, device: torch.device, total_steps: int) -> _Optimisation:
    """The freshly initialised network on ``device``, SGD with momentum, warm-up then cosine decay."""
    torch.manual_seed(settings.seed)   # same initial weights and dropout masks in every process and rerun
    model = info.build_model().to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum,
                                weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(total_steps, int(settings.warmup_fraction * total_steps)))
    return _Optimisation(model, optimizer, scheduler)


def _resume(optimisation: _Optimisation, run_dir: Path, label_kind: str, process: _Process,
            steps_per_epoch: int) -> None:
    """Weights, optimiser, schedule, dropout's random state and step from RUN_DIR's checkpoint."""
    state = torch.load(run_dir / CHECKPOINT, map_location="cpu", weights_only=True)
    if state["run"]["label_kind"] != label_kind:
        raise ValueError(f"{run_dir} was trained on {state['run']['label_kind']} labels, not {label_kind}")
    optimisation.model.load_state_dict(state["model"])
    optimisation.optimizer.load_state_dict(state["optimizer"])
    optimisation.scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    if process.device.type == "cuda" and "cuda" in state["rng"]:
        torch.cuda.set_rng_state(state["rng"]["cuda"], process.device)
    optimisation.step = state["step"]
    if state.get("steps_per_epoch", steps_per_epoch) != steps_per_epoch and process.rank == 0:
        tqdm.write(f"warning: the data now gives {steps_per_epoch} steps an epoch, {state['steps_per_epoch']} when "
                   f"{run_dir} was checkpointed (shards rewritten or skipped since): the resumed run continues "
                   f"but does not replay what an uninterrupted one would have", file=sys.stderr)


def _frame_batches(data_dir: Path, data: _Data, settings: TrainSettings, process: _Process, first_step: int,
                   progress: bool) -> tuple[Iterator[tuple[np.ndarray, torch.Tensor]], Callable]:
    """(this process's (rows, frames) batch of each step from ``first_step``, a function giving the test
    split's batches): from the shards' stream, or from the frames decoded once into memory."""
    labels, world = data.labels, process.world
    batch = settings.batch_size // world * world
    if data.stream:
        stream = data.stream
        return stream.train_batches(first_step, settings.epochs), lambda: stream.test_batches(batch)
    frames = FrameSource(data_dir, dataset.load_manifest(data_dir), settings.frame_size, process.device,
                         progress=progress and process.rank == 0)
    train_batches = ((rows, frames.get(rows)) for rows in
                     _batches(labels.train_index, settings, data.steps_per_epoch, first_step, data.total_steps,
                              process.rank, world))

    def test_batches():
        return ((labels.test_index[start:start + batch], frames.get(labels.test_index[start:start + batch]))
                for start in range(0, len(labels.test_index), batch))
    return train_batches, test_batches


def _step_loop(trained: nn.Module, optimisation: _Optimisation, train_batches: Iterator, test_batches: Callable,
               data: _Data, info: RunInfo, settings: TrainSettings, process: _Process, run_dir: Path,
               progress: bool) -> dict:
    """Every training step from the current one: a seeded crop and flip, the loss, an SGD step; evaluations,
    checkpoints and kept weights on their steps. Returns the last evaluation's metrics ({} when none)."""
    device, rank, world = process.device, process.rank, process.world
    local_batch = settings.batch_size // world
    chance, majority = data.labels.chance(), data.labels.majority()
    skipped_shards: list[dict] = []        # every shard skipped so far, reported in each evaluation
    bar = tqdm(total=data.total_steps, initial=optimisation.step, desc=f"training ({info.label_kind})", unit="step",
               disable=not (progress and rank == 0))
    metrics: dict = {}
    loss_sum, loss_count, images_seen, started = 0.0, 0, 0, time.perf_counter()
    trained.train()
    for rows, frame_batch in train_batches:
        step = optimisation.step
        generator = torch.Generator().manual_seed(settings.seed * 1_000_003 + step * world + rank)
        images = normalize_images(random_crop_flip(frame_batch, settings.crop_size, generator), info.mean, info.std)
        targets = data.labels.targets[rows].to(device)
        with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            loss = _loss(trained(images), targets)
        optimisation.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimisation.optimizer.step()
        optimisation.scheduler.step()
        step = optimisation.step = step + 1
        # Accumulate on the device: a float() per step would stall the GPU.
        loss_sum, loss_count, images_seen = loss_sum + loss.detach(), loss_count + 1, images_seen + local_batch * world
        bar.update(1)

        # A kept step is evaluated too: emergence sets its detectors beside its held-out accuracy.
        evaluating = step % data.eval_every == 0 or step == data.total_steps or step in data.keep_steps
        if evaluating:
            mean_loss = (loss_sum / loss_count).float().reshape(1)
            if world > 1:
                dist.all_reduce(mean_loss)   # gloo/nccl both sum; divide for the mean over processes
                mean_loss /= world
            train_loss = float(mean_loss)    # waits for the GPU, so the throughput below is honest
            images_per_s = images_seen / (time.perf_counter() - started)
            if rank == 0:
                accuracy, test_loss = evaluate(optimisation.model, test_batches(), data.labels, info)
            reading = _gather_reading(data.stream, world) if data.stream else None
            if rank == 0:
                metrics = {"step": step, "epoch": round(step / data.steps_per_epoch, 4), "loss": train_loss,
                           "test_loss": test_loss, "test_accuracy": accuracy, "chance": chance,
                           "majority": majority, "lr": optimisation.scheduler.get_last_lr()[0],
                           "images_per_s": images_per_s}
                if reading is not None:
                    skipped_shards += [fault for record in reading for fault in record["faults"]]
                    metrics["skipped_shards"] = list(skipped_shards)
                    with (run_dir / STREAM).open("a") as f:
                        f.write(json.dumps({"step": step, "epoch": metrics["epoch"], "ranks": reading}) + "\n")
                with (run_dir / METRICS).open("a") as f:
                    f.write(json.dumps(metrics) + "\n")
                bar.set_postfix(loss=f"{train_loss:.3f}", acc=f"{accuracy:.3f}", majority=f"{majority:.3f}")
        if rank == 0 and (evaluating or step % settings.checkpoint_steps == 0):
            _save_checkpoint(optimisation, data.steps_per_epoch, info, device, run_dir / CHECKPOINT)
        if rank == 0 and step in data.keep_steps:
            kept_checkpoint_file(run_dir, step).parent.mkdir(exist_ok=True)
            save_atomic({"model": optimisation.model.state_dict(), "run": asdict(info), "step": step},
                        kept_checkpoint_file(run_dir, step))
        if evaluating:
            if world > 1:
                dist.barrier()   # the others wait while rank 0 evaluates
            # Training throughput excludes evaluation and checkpointing.
            loss_sum, loss_count, images_seen, started = 0.0, 0, 0, time.perf_counter()
    bar.close()
    return metrics


def _save_checkpoint(optimisation: _Optimisation, steps_per_epoch: int, info: RunInfo, device: torch.device,
                     path: Path) -> None:
    """The whole training state, so that a resumed run replays what an uninterrupted one would."""
    step = optimisation.step
    save_atomic({"model": optimisation.model.state_dict(), "optimizer": optimisation.optimizer.state_dict(),
                 "scheduler": optimisation.scheduler.state_dict(), "step": step, "epoch": step // steps_per_epoch,
                 "steps_per_epoch": steps_per_epoch,
                 "rng": _rng_state(device), "run": asdict(info)}, path)


def _finish(optimisation: _Optimisation, test_batches: Callable, data: _Data, info: RunInfo, process: _Process,
            run_dir: Path, metrics: dict) -> None:
    """The untrained control's one evaluation (0 epochs), the final weights, the process group closed.
    ``metrics`` gets the control's evaluation."""
    if process.rank == 0 and data.total_steps == 0 and not metrics:
        accuracy, test_loss = evaluate(optimisation.model, test_batches(), data.labels, info)
        metrics.update({"step": 0, "epoch": 0.0, "loss": None, "test_loss": test_loss, "test_accuracy": accuracy,
                        "chance": data.labels.chance(), "majority": data.labels.majority(), "lr": 0.0,
                        "images_per_s": None})
        if data.stream:
            metrics["skipped_shards"] = data.stream.take_record()["faults"]
        with (run_dir / METRICS).open("a") as f:
            f.write(json.dumps(metrics) + "\n")
    if process.rank == 0:
        save_atomic({"model": optimisation.model.state_dict(), "run": asdict(info), "step": optimisation.step},
                    run_dir / FINAL_MODEL)
    if process.world > 1:
        dist.barrier()
        dist.destroy_process_group()
