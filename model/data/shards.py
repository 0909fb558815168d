"""The dataset's frames as WebDataset tar shards, and training's stream over them in bounded memory.

Layout of DATA_DIR/shards/ (written by ``ambient shards``, or by ``ambient train`` when it needs them)::

    train-000000.tar ...  the train split's frames in manifest order, ``frames_per_shard`` a shard; a sample
    test-000000.tar ...   is one key, the frame's manifest row zero-padded (000000123), holding one file,
                          000000123.jpg: the frame's JPEG bytes as ingest wrote them
    index.npz             names, splits, counts and byte sizes of the shards, frame_ids (every shard's
                          frames, shard after shard), manifest_sha256 (of the manifest they were written
                          from: another manifest makes them stale), frames_per_shard, missing (frames whose
                          file could not be read, left out)
    plan.json             while writing: the manifest digest and shard size; shards written under the same
                          plan are kept when a killed ``ambient shards`` is run again

A shard is written under a temporary name and renamed when complete, so a finished name is a whole
shard. Labels stay out of the shards: training looks them up by frame id in DATA_DIR/labels/<kind>.npz,
so relabelling needs no new shards.

``ShardStream`` is training's reader: each epoch a seeded order of the train shards, dealt to the DDP
ranks so that they read disjoint shards, read sequentially through a seeded shuffle buffer; so the data
order is a function of (seed, epoch, rank, world size), and a resumed run skips (undecoded) the samples
the epoch has already trained on. A shard that is missing, truncated or does not read is named on
stderr, skipped and recorded (``faults``); the rest trains. Shards are read as plain tar only (a compressed
one is refused, not inflated), and a member over ``MAX_MEMBER_BYTES`` is refused before it is read.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import re
import sys
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
import webdataset
from tqdm import tqdm

from model.data import dataset
from model.data.frames import decode_ahead
from model.settings import SHARD_FRAMES

INDEX = "index.npz"
PLAN = "plan.json"
SPLITS = ("train", "test")
KEY_DIGITS = 9
# A member is one frame's JPEG: ingest writes 256-px frames at quality 90 (15-60 KB), and even a 1024-px frame
# of pure noise at quality 100 is 2.0 MB. A bigger member is no frame of ours (a crafted shard can declare
# any size): it is refused before it is read, and a frame file over it is left out when writing.
MAX_MEMBER_BYTES = 4 << 20
_MEMBER_NAME = re.compile(r"[0-9]+\.jpg")
# Leading bytes of the compressed formats tarfile would otherwise inflate (a small file, a huge stream).
_COMPRESSED_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}


def shard_name(split: str, number: int) -> str:
    return f"{split}-{number:06d}.tar"


def frame_key(frame_id: int) -> str:
    return f"{frame_id:0{KEY_DIGITS}d}"


def manifest_digest(data_dir: str | Path) -> str:
    """sha256 of DATA_DIR's manifest: the shards' frames are those of this manifest."""
    path = Path(data_dir) / dataset.MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{data_dir}: no {dataset.MANIFEST}; run `ambient ingest` first")
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@dataclass(frozen=True)
class ShardIndex:
    """What training needs to know of the shards without opening them."""

    names: list[str]
    splits: np.ndarray          # (shards,) "train" / "test"
    counts: np.ndarray          # (shards,) frames in each
    sizes: np.ndarray           # (shards,) bytes of each file
    frame_ids: np.ndarray       # every shard's frame ids (manifest rows), shard after shard
    manifest_sha256: str
    frames_per_shard: int
    missing: np.ndarray         # frames whose file could not be read when the shards were written

    def ids(self, shard: int) -> np.ndarray:
        """The frame ids of shard ``shard`` (its position in ``names``), in the order they are stored."""
        start = int(self.counts[:shard].sum())
        return self.frame_ids[start:start + int(self.counts[shard])]

    def of_split(self, split: str) -> list[int]:
        return [i for i, s in enumerate(self.splits) if s == split]


def load_index(data_dir: str | Path) -> ShardIndex | None:
    """DATA_DIR/shards/index.npz, or None when there is none."""
    path = dataset.shards_dir(data_dir) / INDEX
    if not path.exists():
        return None
    with np.load(path) as saved:
        return ShardIndex(names=[str(n) for n in saved["names"]], splits=saved["splits"].astype(str),
                          counts=saved["counts"], sizes=saved["sizes"], frame_ids=saved["frame_ids"],
                          manifest_sha256=str(saved["manifest_sha256"]),
                          frames_per_shard=int(saved["frames_per_shard"]), missing=saved["missing"])


def current_index(data_dir: str | Path) -> ShardIndex | None:
    """The shards' index if they were written from DATA_DIR's manifest as it is now, else None (stale or none)."""
    index = load_index(data_dir)
    return index if index is not None and index.manifest_sha256 == manifest_digest(data_dir) else None


def _compression(head: bytes) -> str | None:
    """The compression whose magic bytes `head` (a file's first bytes) starts with, or None."""
    return next((kind for magic, kind in _COMPRESSED_MAGIC.items() if head.startswith(magic)), None)


def _not_plain_tar(head: bytes) -> ValueError | None:
    kind = _compression(head)
    return ValueError(f"{kind}-compressed; shards are plain tar (`ambient shards` writes them)") if kind else None


def _stored_ids(path: Path) -> list[int] | None:
    """The frame ids of a finished shard, from its tar headers (read without reading the frames); None when
    it does not read as a plain tar of frames (it is then written again)."""
    try:
        with path.open("rb") as f:
            if _not_plain_tar(f.read(8)):
                return None
        with tarfile.open(path, "r:") as tar:
            names = tar.getnames()
    except (OSError, tarfile.TarError):
        return None
    return [int(name.split(".", 1)[0]) for name in names] if all(map(_MEMBER_NAME.fullmatch, names)) else None


def write_shards(data_dir: str | Path, frames_per_shard: int = SHARD_FRAMES, progress: bool = True) -> ShardIndex:
    """Write DATA_DIR's frames as tar shards under DATA_DIR/shards (see the module docstring); returns the index.

    Up to date (same manifest, same shard size, every file of the size indexed): nothing is written.
    Resumable: shards finished under the same plan are kept, a shard missing or of the wrong size is
    rewritten. A frame whose file cannot be read is left out and listed in the index's ``missing``.
    """
    if frames_per_shard < 1:
        raise ValueError(f"frames per shard must be at least 1, not {frames_per_shard}")
    data_dir = Path(data_dir)
    folder = dataset.shards_dir(data_dir)
    digest = manifest_digest(data_dir)
    plan = {"manifest_sha256": digest, "frames_per_shard": frames_per_shard}
    index = load_index(data_dir)
    indexed_sizes = {}
    if index is not None and (index.manifest_sha256, index.frames_per_shard) == (digest, frames_per_shard):
        indexed_sizes = dict(zip(index.names, index.sizes.tolist()))
        if all((folder / n).is_file() and (folder / n).stat().st_size == s for n, s in indexed_sizes.items()):
            return index
    folder.mkdir(parents=True, exist_ok=True)
    plan_path = folder / PLAN
    same_plan = bool(indexed_sizes) or (plan_path.exists() and json.loads(plan_path.read_text()) == plan)
    if not same_plan:      # shards of another manifest or size: none can be kept
        for old in [*folder.glob("*.tar"), *folder.glob("*.tar.tmp"), folder / INDEX]:
            old.unlink(missing_ok=True)
    dataset.write_json_atomic(plan_path, plan)

    def finished(name: str) -> bool:
        """A shard this plan already wrote (and, when indexed, of its indexed size: not truncated since)."""
        path = folder / name
        return path.is_file() and (name not in indexed_sizes or path.stat().st_size == indexed_sizes[name])

    with (data_dir / dataset.MANIFEST).open("rb") as f:
        total = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    shards: dict[str, list[int]] = {}         # name -> frame ids, in the order shards are finished
    shard_split: dict[str, str] = {}
    missing: list[int] = []
    writers: dict[str, tuple[str, webdataset.TarWriter, Path, BinaryIO]] = {}   # split -> (name, writer, temp path, file)
    positions = dict.fromkeys(SPLITS, 0)

    def close(split: str) -> None:
        name, writer, tmp, file = writers.pop(split)
        writer.close()                       # ends the tar; the file is ours to close
        file.flush()
        os.fsync(file.fileno())
        file.close()
        os.replace(tmp, folder / name)

    with (data_dir / dataset.MANIFEST).open() as f:
        for row, line in enumerate(tqdm(f, total=total, desc="writing shards", unit="frame", disable=not progress)):
            if not line.strip():
                continue
            record = json.loads(line)
            if record["frame_id"] != row:
                raise ValueError(f"{data_dir / dataset.MANIFEST} line {row + 1}: frame_id {record['frame_id']}, "
                                 f"expected {row} (a frame's id is its manifest row)")
            split = record["split"]
            if split not in positions:
                raise ValueError(f"{data_dir / dataset.MANIFEST} line {row + 1}: split {split!r} is not one of "
                                 f"{', '.join(SPLITS)}")
            name = shard_name(split, positions[split] // frames_per_shard)
            positions[split] += 1
            if name not in shards:
                if split in writers:
                    close(split)
                shards[name], shard_split[name] = [], split
                stored = _stored_ids(folder / name) if finished(name) else None
                if stored is not None:
                    shards[name] = stored
                else:
                    tmp = folder / (name + ".tmp")
                    tmp.unlink(missing_ok=True)     # a killed run's part, or a planted link: never written through
                    file = dataset.create_new(tmp)
                    writers[split] = (name, webdataset.TarWriter(file, encoder=False, mtime=0), tmp, file)
            if split not in writers or writers[split][0] != name:
                continue                      # a shard kept from an earlier, killed run
            try:
                with (data_dir / record["image"]).open("rb") as frame_file:
                    jpeg = frame_file.read(MAX_MEMBER_BYTES + 1)
                if len(jpeg) > MAX_MEMBER_BYTES:
                    raise OSError(f"{data_dir / record['image']}: over {MAX_MEMBER_BYTES:,} bytes, no frame's JPEG")
            except OSError as error:
                tqdm.write(f"warning: frame {row} left out of the shards: {error}", file=sys.stderr)
                missing.append(row)
                continue
            writers[split][1].write({"__key__": frame_key(row), "jpg": jpeg})
            shards[name].append(row)
    for split in list(writers):
        close(split)
    names = sorted(shards, key=lambda n: (SPLITS.index(shard_split[n]), n))
    index = ShardIndex(names=names, splits=np.array([shard_split[n] for n in names]),
                       counts=np.array([len(shards[n]) for n in names], np.int64),
                       sizes=np.array([(folder / n).stat().st_size for n in names], np.int64),
                       frame_ids=np.array([i for n in names for i in shards[n]], np.int64),
                       manifest_sha256=digest, frames_per_shard=frames_per_shard,
                       missing=np.array(missing, np.int64))
    with dataset.atomic_file(folder / INDEX) as file:     # the index appears last: it marks the shards complete
        np.savez(file, names=np.array(index.names), splits=index.splits, counts=index.counts, sizes=index.sizes,
                 frame_ids=index.frame_ids, manifest_sha256=digest, frames_per_shard=frames_per_shard,
                 missing=index.missing)
    plan_path.unlink(missing_ok=True)
    return index


def read_shard(path: Path) -> Iterator[tuple[int, bytes]]:
    """(frame id, JPEG bytes) of each sample of a shard, read sequentially as a plain tar (not webdataset's
    reader: it inflates any compressed tar and reads members whole, whatever their size).

    ValueError saying why for a compressed shard, a member that is not a frame's JPEG (NNNNNNNNN.jpg, a
    regular file), or one over MAX_MEMBER_BYTES, which is refused before any of it is read."""
    with path.open("rb") as stream:
        if error := _not_plain_tar(stream.read(8)):
            raise error
        stream.seek(0)
        tar = tarfile.open(fileobj=stream, mode="r|")     # "r|": plain tar only, no compression detected
        for member in tar:
            if not member.isfile() or not _MEMBER_NAME.fullmatch(member.name):
                raise ValueError(f"member {member.name[:100]!r} is not a frame's JPEG (a file NNNNNNNNN.jpg)")
            if member.size > MAX_MEMBER_BYTES:
                raise ValueError(f"member {member.name} declares {member.size:,} bytes, over the "
                                 f"{MAX_MEMBER_BYTES:,} a frame's JPEG may have")
            jpeg = tar.extractfile(member).read()
            tar.members = []                               # streaming: keep no list of every member read
            yield int(member.name.split(".", 1)[0]), jpeg


def check_shards(data_dir: str | Path, index: ShardIndex) -> dict[str, str]:
    """{shard name: why it cannot be read} for shards missing, of another size than indexed (truncated),
    compressed, or whose first tar header does not parse; cheap (one stat and one 512-byte read a shard)."""
    folder = dataset.shards_dir(data_dir)
    faults = {}
    for name, size in zip(index.names, index.sizes.tolist()):
        path = folder / name
        try:
            actual = path.stat().st_size
            if actual != size:
                faults[name] = (f"truncated: {actual:,} of {size:,} bytes" if actual < size
                                else f"{actual:,} bytes where the index has {size:,}")
                continue
            with path.open("rb") as f:
                head = f.read(tarfile.BLOCKSIZE)
            if error := _not_plain_tar(head):
                raise error
            tarfile.TarInfo.frombuf(head, tarfile.ENCODING, "surrogateescape")
        except FileNotFoundError:
            faults[name] = "missing"
        except (OSError, tarfile.TarError, ValueError) as error:
            faults[name] = f"unreadable: {error}"
    return faults


def _batched(items: Iterator, size: int) -> Iterator[list]:
    while batch := list(itertools.islice(items, size)):
        yield batch


class ShardStream:
    """One DDP rank's frames from the shards: its training batches each step and, for evaluation, the test split.

    ``train_frames``/``test_frames``: boolean masks over manifest rows (the labels' kept training frames and
    the test split). Every rank takes ``steps_per_epoch`` steps of ``local_batch`` frames each epoch, so DDP's
    collectives stay in step whatever the shards hold; should a shard fail mid-epoch, the rank makes up its
    share by reading its good shards again.
    """

    def __init__(self, data_dir: str | Path, index: ShardIndex, unreadable: dict[str, str],
                 train_frames: np.ndarray, test_frames: np.ndarray, frame_size: int, device: torch.device,
                 local_batch: int, shuffle_buffer: int, seed: int, rank: int, world: int):
        self.folder, self.index = dataset.shards_dir(data_dir), index
        self.train_frames, self.test_frames = train_frames, test_frames
        self.frame_size, self.device, self.local_batch = frame_size, device, local_batch
        self.shuffle_buffer, self.seed, self.rank, self.world = shuffle_buffer, seed, rank, world
        self.unreadable = set(unreadable)
        self.opened: dict[str, list[str]] = {}   # since the last ``take_record``: "epoch N" or "test" -> shards opened
        self.faults: list[dict] = []             # shards skipped since then: {"shard", "reason", "rank"}
        if rank == 0:
            for name, reason in unreadable.items():
                self._fault(name, reason)
        self.train_shards = [i for i in index.of_split("train") if index.names[i] not in self.unreadable]
        self.test_shards = [i for i in index.of_split("test") if index.names[i] not in self.unreadable]
        shards_per_rank = len(self.train_shards) // world
        if shards_per_rank == 0:
            raise ValueError(f"{self.folder}: {len(self.train_shards)} readable train shards for {world} processes; "
                             f"write smaller ones: `ambient shards {data_dir} --frames-per-shard N`")
        kept = np.sort([int(train_frames[index.ids(i)].sum()) for i in self.train_shards])
        # Each rank gets at least shards_per_rank shards an epoch: the smallest ones bound every rank's frames.
        self.steps_per_epoch = int(kept[:shards_per_rank].sum()) // local_batch

    def _fault(self, name: str, reason: str) -> None:
        self.unreadable.add(name)
        self.faults.append({"shard": name, "reason": reason, "rank": self.rank})
        tqdm.write(f"warning: skipping shard {self.folder / name}: {reason}", file=sys.stderr)

    def take_record(self) -> dict:
        """The shards opened (by epoch, and for the test split) and skipped since the last call: what the run
        records of each rank's reading. Reading runs ahead of training, so an epoch may appear before its steps."""
        record = {"rank": self.rank, "opened": self.opened, "faults": self.faults}
        self.opened, self.faults = {}, []
        return record

    def _samples(self, shards: Sequence[int], wanted: np.ndarray, reading: str) -> Iterator[tuple[int, bytes, str]]:
        """(frame id, JPEG bytes, shard name) of the ``wanted`` frames of ``shards``, in stored order;
        ``reading`` ("epoch N", "test") says what for, in the record."""
        for shard in shards:
            name = self.index.names[shard]
            if name in self.unreadable:
                continue
            self.opened.setdefault(reading, []).append(name)
            expected = self.index.ids(shard).tolist()
            read = 0
            try:
                for frame_id, jpeg in read_shard(self.folder / name):
                    if read >= len(expected) or frame_id != expected[read]:
                        raise ValueError(f"sample {read} is frame {frame_id}, not the indexed "
                                         f"{expected[read] if read < len(expected) else 'end of shard'}")
                    read += 1
                    if wanted[frame_id]:
                        yield frame_id, jpeg, name
                if read < len(expected):
                    raise ValueError(f"ends after {read} of its {len(expected)} frames")
            except (OSError, tarfile.TarError, ValueError, KeyError) as error:
                # the first of an error's args says what went wrong (without the exception's class name)
                self._fault(name, f"unreadable after {read} frames: {error.args[0] if error.args else error!r}")

    def _epoch(self, epoch: int) -> Iterator[tuple[int, bytes, str]]:
        """This rank's ``steps_per_epoch * local_batch`` training samples of ``epoch``, shuffled."""
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.train_shards))
        mine = [self.train_shards[i] for i in order[self.rank::self.world]]
        wanted, taken = self.steps_per_epoch * self.local_batch, 0
        for repeat in itertools.count():      # once, unless a shard failed mid-epoch
            rng = random.Random(f"{self.seed}/{epoch}/{self.rank}/{repeat}")
            shuffled = webdataset.filters.shuffle(self.shuffle_buffer, self.shuffle_buffer, rng=rng)(
                self._samples(mine, self.train_frames, f"epoch {epoch}"))
            before = taken
            for sample in itertools.islice(shuffled, wanted - taken):
                taken += 1
                yield sample
            if taken == wanted:
                return
            if taken == before:
                raise ValueError(f"{self.folder}: rank {self.rank} has no readable training frames left in its "
                                 f"shards of epoch {epoch}")

    def train_batches(self, first_step: int, epochs: int) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """(frame ids, uint8 frames on the device) for each step from ``first_step`` to the end of ``epochs``.

        A resumed run replays the stream of ``first_step``'s epoch and skips, undecoded, the samples the
        steps before it took: it sees exactly what an uninterrupted run would.
        """
        def encoded() -> Iterator[tuple[np.ndarray, list[bytes], list[str]]]:
            first_epoch, position = divmod(first_step, self.steps_per_epoch)
            for epoch in range(first_epoch, epochs):
                samples = self._epoch(epoch)
                if epoch == first_epoch:
                    for _ in itertools.islice(samples, position * self.local_batch):
                        pass
                yield from (self._encoded_batch(batch) for batch in _batched(samples, self.local_batch))

        yield from decode_ahead(encoded(), self.frame_size, self.device)

    def test_batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """(frame ids, uint8 frames) of the test split in manifest order (the cache path's order)."""
        samples = self._samples(self.test_shards, self.test_frames, "test")
        yield from decode_ahead((self._encoded_batch(batch) for batch in _batched(samples, batch_size)),
                                self.frame_size, self.device)

    @staticmethod
    def _encoded_batch(batch: list[tuple[int, bytes, str]]) -> tuple[np.ndarray, list[bytes], list[str]]:
        return (np.array([frame_id for frame_id, _, _ in batch], np.int64), [jpeg for _, jpeg, _ in batch],
                [f"{name}/{frame_key(frame_id)}.jpg" for frame_id, _, name in batch])
