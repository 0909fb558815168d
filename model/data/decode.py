"""Untrusted image bytes -> pictures, within bounds of pixels, scans, time, CPU and memory.

``decode_image`` checks what the header promises before any pixel is decoded (the pixel count, and for a
JPEG the number of scans: each scan of a progressive JPEG is another pass over the whole image, so an
80 KB file of 8,000 empty scans declaring 6000 x 6000 pixels would hold a CPU for most of a minute).
``DecodeWorkers`` runs the decode in worker processes, each killed at a deadline (and a new one started
for the next image) and limited in address space and CPU time: a decode inside libjpeg or zlib cannot be
interrupted, and a thread cannot be killed. The server's predictions and `ambient predict` decode there.

Imports only numpy and Pillow (and model.data.media in the workers): a worker starts in a fraction of a second.
They are imported where used, so the web app, which holds a DecodeWorkers, starts without them.
"""
from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

# Formats a photo or a video frame comes in; anything else (TIFF, PSD, EPS, ...) is refused by name.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
# libjpeg's default progressive script writes 10 scans for colour (6 for grey), and a baseline JPEG has one
# per component: 64 leaves room for any encoder's script, while each scan costs a pass over the image.
MAX_JPEG_SCANS = 64
# Pixels x scans at most max_pixels x max_scans / SCAN_BUDGET_SHARE: all 64 scans up to a quarter of the
# pixel limit (10 MP), 16 at the full 40 MP (still more than any encoder writes).
SCAN_BUDGET_SHARE = 4
# A marker: 0xFF and a code that is neither 0x00 (a stuffed 0xFF byte inside entropy-coded data) nor
# 0xFF (fill before a marker). One regular expression finds the next one in C, not a Python loop per byte.
_MARKER = re.compile(rb"\xff[^\x00\xff]")
_EOI, _SOS = 0xD9, 0xDA
_NO_LENGTH = {0x01, 0xD8, *range(0xD0, 0xD8)}      # TEM, SOI and RST0-7 have no segment after them
# Pillow puts the file object's repr in some messages ("<_io.BytesIO object at 0x7f...>"): a heap address.
_OBJECT_REPR = re.compile(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>")
_STRIP_ROWS = 256                 # rows of a 16-bit image scaled at a time
_WORKER_START_SECONDS = 60.0      # a new worker imports numpy, Pillow and PyAV: seconds on a loaded machine


class BadImage(ValueError):
    """An input that is not a still image this module reads; the message names the input and the problem."""


def _pillow_says(error: BaseException) -> str:
    return _OBJECT_REPR.sub("", str(error)).strip() or type(error).__name__


def jpeg_scans(data: bytes, limit: int) -> int:
    """How many scans (SOS markers) the JPEG ``data`` holds, counted no further than ``limit`` + 1.

    Hand-written because neither Pillow nor libjpeg says how many scans a file has without decoding
    them all. It walks the file as libjpeg reads it: a marker segment is skipped by its length; after
    an SOS the entropy-coded data, and any bytes libjpeg would skip as garbage, are searched for the
    next marker (RSTn markers, which have no segment, do not end a scan's data)."""
    scans, position = 0, 2         # past SOI
    while scans <= limit:
        found = _MARKER.search(data, position)
        if found is None:
            break                  # cut short: the decode refuses it
        code, position = data[found.start() + 1], found.end()
        if code == _EOI:
            break
        if code in _NO_LENGTH:
            continue
        scans += code == _SOS
        position += int.from_bytes(data[position:position + 2], "big")
    return scans


def decode_image(data: bytes, name: str, max_pixels: int, max_scans: int = MAX_JPEG_SCANS,
                 max_bytes: int | None = None) -> Image.Image:
    """Untrusted bytes -> an RGB image, or BadImage naming ``name`` and the problem.

    The size is checked from the header before any pixel is decoded (a 20,000 x 20,000 PNG is a few kB
    that would take 1.2 GB), and so is a JPEG's number of scans (at most ``max_scans``, fewer for a large
    image: see SCAN_BUDGET_SHARE) and, given ``max_bytes``, the memory the decode would hold. CMYK is converted to RGB; 16-bit images are scaled to 8 bits (their top
    byte); an animated image is refused (which of its frames would be meant?)."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise BadImage(f"{name}: the file is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))     # reads the header only
    except Image.DecompressionBombError as error:
        raise BadImage(f"{name}: the image is too large (a decompression bomb?): {_pillow_says(error)}") from None
    except UnidentifiedImageError:
        raise BadImage(f"{name}: not an image ({'/'.join(IMAGE_FORMATS)} expected; no format recognised)") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise BadImage(f"{name}: not an image ({'/'.join(IMAGE_FORMATS)} expected; {_pillow_says(error)})") from None
    if image.format not in IMAGE_FORMATS:
        raise BadImage(f"{name}: {image.format} images are not read; use {'/'.join(IMAGE_FORMATS)}")
    width, height = image.size
    if width * height > max_pixels:
        raise BadImage(f"{name}: the image is too large: {width} x {height} pixels, over the limit of {max_pixels:,}")
    if width < 1 or height < 1:
        raise BadImage(f"{name}: the image has no pixels ({width} x {height})")
    if getattr(image, "n_frames", 1) > 1:
        raise BadImage(f"{name}: an animated image ({image.n_frames} frames); upload one still frame")
    scans = 1
    if image.format == "JPEG":
        allowed = min(max_scans, max_pixels * max_scans // SCAN_BUDGET_SHARE // (width * height))
        scans = jpeg_scans(data, allowed)
        if scans > allowed:
            raise BadImage(f"{name}: a JPEG of more than {allowed} scans at {width} x {height} pixels is refused "
                           f"before decoding (each scan is another pass over the whole image; encoders write "
                           f"about 10)")
    needed = _decode_bytes(image, scans)
    if max_bytes is not None and needed > max_bytes:
        raise BadImage(f"{name}: decoding this {width} x {height} {image.mode} image would take about "
                       f"{needed // 2**20} MiB, over the {max_bytes // 2**20} MiB a decode may use")
    try:     # Pillow's default (ImageFile.LOAD_TRUNCATED_IMAGES off) refuses a cut-off file, never half grey
        image.load()
    except (OSError, ValueError, SyntaxError) as error:
        raise BadImage(f"{name}: the image is truncated or corrupt ({_pillow_says(error)})") from None
    return _eight_bit(image).convert("RGB")


def _decode_bytes(image: Image.Image, scans: int) -> int:
    """Roughly the most memory decoding ``image`` holds at once: its pixels as Pillow stores them (1, 2 or 4
    bytes), a JPEG's coefficients when it has several scans (2 bytes a sample, all kept until the last scan),
    a copy for the 8-bit scaling and the RGB result (4 bytes a pixel in Pillow)."""
    stored = 1 if image.mode in ("1", "L", "P") else 2 if image.mode.startswith("I;16") else 4
    coefficients = 2 * len(image.getbands()) if image.format == "JPEG" and scans > 1 else 0
    return image.width * image.height * (2 * stored + coefficients + 4)


def _eight_bit(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit greyscale as 8 bits (convert("L") would clip at 255): each pixel's top byte, shifted
    into a uint8 array a strip of rows at a time, never the whole image widened (as int64 it was 8 bytes a
    pixel: +680 MB at 40 MP; even its 16-bit copy would be 2)."""
    import numpy as np
    from PIL import Image

    if image.mode == "F":
        return Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8))
    if not (image.mode.startswith("I;16") or image.mode == "I"):
        return image
    grey = np.empty((image.height, image.width), np.uint8)
    for top in range(0, image.height, _STRIP_ROWS):
        rows = np.asarray(image.crop((0, top, image.width, min(top + _STRIP_ROWS, image.height))))
        if image.mode == "I":
            rows = np.clip(rows, 0, 0xFFFF)
        np.right_shift(rows, 8, out=grey[top:top + len(rows)], casting="unsafe")
    return Image.fromarray(grey)


def frame_array(image: Image.Image | np.ndarray, frame_size: int) -> np.ndarray:
    """uint8 (frame_size, frame_size, 3): the short side scaled to the frame size and centre-cropped, as
    ingest does to video frames and `ambient units` to still images (model/data/pool.py)."""
    import numpy as np

    from model.data.media import resize_center_crop

    return np.array(resize_center_crop(image, frame_size))


# --- Decoding in worker processes

@dataclass(frozen=True)
class DecodeLimits:
    """What one decode may take: pixels and JPEG scans (from the header), wall-clock seconds (the worker is
    killed past them; its CPU time is capped a little above, should the process that asked be gone), and
    memory (the worker's address space beyond what it had after its imports)."""

    max_pixels: int
    max_scans: int = MAX_JPEG_SCANS
    seconds: float = 3.0
    memory_bytes: int = 1024 ** 3


@dataclass
class _Worker:
    process: subprocess.Popen
    connection: Connection


class DecodeWorkers:
    """``workers`` processes that turn untrusted image bytes into a network's frame (``frame``), one image
    each at a time; each is started on first use and again after it was killed. ``close`` kills them all
    (a later ``frame`` starts new ones), so a server's shutdown never waits on a decode.

    A worker is `python -m model.data.decode`, not a multiprocessing child: it never re-imports the caller's main
    module, and it answers in plain bytes (a frame or a message), never a pickle the caller would load."""

    def __init__(self, workers: int, limits: DecodeLimits):
        self.limits = limits
        self._free: queue.LifoQueue = queue.LifoQueue()
        for _ in range(workers):
            self._free.put(None)             # a place for a worker, started when first needed
        self._running: set[subprocess.Popen] = set()
        self._lock = threading.Lock()

    def frame(self, data: bytes, name: str, frame_size: int) -> np.ndarray:
        """uint8 (frame_size, frame_size, 3) of the image ``data`` (``decode_image`` and ``frame_array``), or
        BadImage naming ``name``: its problem, or that its decode outlasted the deadline or its memory."""
        import numpy as np

        worker = self._free.get()            # waits while every worker is busy
        answer = None
        try:
            if worker is None or worker.process.poll() is not None:
                self._stop(worker)
                worker = None
                worker = self._start()
            worker.connection.send_bytes(json.dumps({"name": name, "frame_size": frame_size}).encode())
            worker.connection.send_bytes(data)
            if not worker.connection.poll(self.limits.seconds):
                raise BadImage(f"{name}: decoding the image took longer than {self.limits.seconds:g} s, so it "
                               f"was stopped")
            answer = worker.connection.recv_bytes(frame_size * frame_size * 3 + 1 + 64 * 1024)
        except (EOFError, OSError):         # the worker died: killed by its CPU bound, by close(), or crashed
            raise BadImage(f"{name}: the image decoder stopped on this image (over its time or memory bound, "
                           f"or the server is shutting down)") from None
        finally:
            if answer is None:               # no answer: that worker is killed, a new one takes its place
                self._stop(worker)
                worker = None
            self._free.put(worker)
        if answer[:1] != b"\x01":
            raise BadImage(answer[1:].decode("utf-8", "replace"))
        pixels = answer[1:]
        if len(pixels) != frame_size * frame_size * 3:
            raise BadImage(f"{name}: the image decoder answered {len(pixels)} bytes, not a {frame_size} x "
                           f"{frame_size} frame")
        return np.frombuffer(pixels, np.uint8).reshape(frame_size, frame_size, 3)

    def pids(self) -> list[int]:
        """The worker processes now running (for tests and the curious)."""
        with self._lock:
            return [process.pid for process in self._running if process.poll() is None]

    def close(self) -> None:
        """Kill every worker, busy or not (its caller gets BadImage); ``frame`` starts new ones when called again."""
        with self._lock:
            running, self._running = list(self._running), set()
        for process in running:
            process.kill()
        for process in running:
            process.wait()

    def _start(self) -> _Worker:
        ours, theirs = socket.socketpair()
        root = str(Path(__file__).resolve().parents[1])      # the worker runs this very copy of model/
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
               "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}    # one image, one thread
        limits = json.dumps(dataclasses.asdict(self.limits))
        try:
            process = subprocess.Popen([sys.executable, "-m", "model.data.decode", str(theirs.fileno()), limits],
                                       pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, env=env)
        finally:
            theirs.close()
        worker = _Worker(process, Connection(ours.detach()))
        with self._lock:
            self._running.add(process)
        try:
            ready = worker.connection.poll(_WORKER_START_SECONDS) and worker.connection.recv_bytes(16) == b"ready"
        except (EOFError, OSError):
            ready = False
        if not ready:
            self._stop(worker)
            raise RuntimeError(f"the image decoder process did not start within {_WORKER_START_SECONDS:g} s")
        return worker

    def _stop(self, worker: _Worker | None) -> None:
        if worker is None:
            return
        worker.process.kill()
        worker.process.wait()
        worker.connection.close()
        with self._lock:
            self._running.discard(worker.process)


def _serve(connection: Connection, limits: DecodeLimits) -> None:
    """A worker: decode each image sent and answer b"\\x01" + the frame's bytes or b"\\x00" + the problem,
    until the pipe closes."""
    import resource

    # Imported (numpy and Pillow with it) before the memory bound, which then counts decoding only.
    import model.data.media  # noqa: F401

    signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl-C in `ambient predict`: the caller stops us
    _bound_memory(limits.memory_bytes)
    connection.send_bytes(b"ready")
    while True:
        try:
            request = json.loads(connection.recv_bytes())
            data = connection.recv_bytes()
        except EOFError:
            return                           # the process that asked is gone
        name, frame_size = str(request["name"]), int(request["frame_size"])
        # Killed by SIGXCPU past its CPU time, even when no one is left to kill it at the deadline.
        used = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        soft = math.ceil(used + limits.seconds) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))
        try:
            image = decode_image(data, name, limits.max_pixels, limits.max_scans, limits.memory_bytes)
            frame = frame_array(image, frame_size)
            answer = b"\x01" + frame.tobytes()
        except BadImage as error:
            answer = b"\x00" + str(error).encode()
        except MemoryError:
            answer = (f"\x00{name}: decoding the image needs more than the {limits.memory_bytes // 2**20} MiB of "
                      f"memory a decode may use").encode()
        except Exception as error:  # noqa: BLE001: whatever a hostile file makes Pillow raise is the file's problem
            answer = f"\x00{name}: the image cannot be decoded ({type(error).__name__}: {_pillow_says(error)})".encode()
        data = image = None              # freed before the next image comes
        connection.send_bytes(answer)


def _bound_memory(budget: int) -> None:
    """Limit this process's address space to what it has now plus ``budget`` (Linux: /proc; else no bound)."""
    import resource

    try:
        with open("/proc/self/statm") as statm:
            mapped = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = mapped + budget
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))


if __name__ == "__main__":          # a worker, started by DecodeWorkers: python -m model.data.decode FD LIMITS
    _serve(Connection(int(sys.argv[1])), DecodeLimits(**json.loads(sys.argv[2])))
