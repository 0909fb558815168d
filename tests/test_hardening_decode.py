"""Untrusted images cannot hold a CPU or the memory (issue 34, items 2, 5 and 10's first part): a progressive
JPEG's scans are counted before decoding (model/data/decode.py), decodes run in worker processes killed at a
deadline, the server shuts down with one in flight, 16-bit images are scaled without widening them, and no
message shows a heap address."""
from __future__ import annotations

import io
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time
import tracemalloc

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app_helpers import REPO, running_server
from backend.app import create_app
from backend.config import Settings
from listen_helpers import make_listen_run
from model.data import decode
from model.data.decode import BadImage, DecodeLimits, DecodeWorkers, decode_image, jpeg_scans
from test_api_tokens import bearer, make_token

MAX_PIXELS = 40_000_000
HEAP_ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def scan_bomb(width: int, height: int, scans: int) -> bytes:
    """A greyscale progressive JPEG declaring width x height, of ``scans`` AC scans without data (10 bytes
    each): libjpeg still passes over every block of the image for each one."""
    quantisation = _segment(0xDB, bytes([0]) + bytes([1] * 64))
    frame = _segment(0xC2, struct.pack(">BHHB", 8, height, width, 1) + bytes([1, 0x11, 0]))      # SOF2: progressive
    one_code = bytes([1] + [0] * 15) + bytes([0])               # a Huffman table of one 1-bit code
    tables = _segment(0xC4, bytes([0x00]) + one_code + bytes([0x10]) + one_code)
    scan = _segment(0xDA, bytes([1, 1, 0x00, 1, 63, 0x00]))     # component 1, AC coefficients 1-63
    return b"\xff\xd8" + quantisation + frame + tables + scan * scans + b"\xff\xd9"


BOMB_80_KB = scan_bomb(6000, 6000, 8_000)
BOMB_1_MIB = scan_bomb(6000, 6000, (2**20 - 200) // 10)


def _jpeg(size=(120, 90), **options) -> bytes:
    rng = np.random.default_rng(0)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(out, "JPEG", **options)
    return out.getvalue()


def _gone(pid: int) -> bool:
    """The process has exited (a zombie that no one reaped yet counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100      # utime + stime, in clock ticks of 1/100 s


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for task in os.listdir(f"/proc/{parent}/task"):
            try:
                with open(f"/proc/{parent}/task/{task}/children") as children:
                    kids = {int(child) for child in children.read().split()}
            except FileNotFoundError:
                continue
            todo.extend(kids - found)
            found |= kids
    return found


# --- The scan count, before decoding

def test_scan_bombs_are_refused_by_their_scan_count_before_decoding():
    assert 70_000 < len(BOMB_80_KB) < 90_000 and 1_000_000 < len(BOMB_1_MIB) <= 2**20
    for data in (BOMB_80_KB, BOMB_1_MIB):
        started = time.monotonic()
        with pytest.raises(BadImage, match=r"bomb.jpg: a JPEG of more than 17 scans at 6000 x 6000 pixels is "
                                           r"refused before decoding"):
            decode_image(data, "bomb.jpg", MAX_PIXELS)
        assert time.monotonic() - started < 1      # the counting stops past the bound: no decode at all
    # Counting a whole 10 MiB file is still quick (one search in C per marker, not a loop per byte).
    started = time.monotonic()
    assert jpeg_scans(scan_bomb(64, 64, 10 * 2**20 // 10), 2**21) == 10 * 2**20 // 10
    assert time.monotonic() - started < 3


def test_the_scan_bound_shrinks_with_the_image_and_real_files_pass():
    assert jpeg_scans(_jpeg(), 100) == 1 and jpeg_scans(_jpeg(progressive=True), 100) == 10      # libjpeg's script
    assert np.asarray(decode_image(_jpeg(progressive=True), "photo.jpg", MAX_PIXELS)).shape == (90, 120, 3)
    # 64 scans are allowed up to a quarter of the pixel limit; pixels x scans bound the rest.
    assert decode_image(scan_bomb(1000, 1000, 64), "small.jpg", MAX_PIXELS).size == (1000, 1000)
    with pytest.raises(BadImage, match="more than 64 scans at 1000 x 1000"):
        decode_image(scan_bomb(1000, 1000, 65), "small.jpg", MAX_PIXELS)
    with pytest.raises(BadImage, match="more than 25 scans at 5000 x 5000"):
        decode_image(scan_bomb(5000, 5000, 26), "large.jpg", MAX_PIXELS)
    # Scans are counted as libjpeg reads the file: a JPEG inside a marker segment (an EXIF thumbnail) is
    # skipped by the segment's length, and 0xFF00 and RSTn inside scan data end no scan.
    inner = _segment(0xEF, scan_bomb(8, 8, 1000))
    outer = _jpeg(progressive=True)
    assert jpeg_scans(outer[:2] + inner + outer[2:], 100) == 10
    scan = _segment(0xDA, bytes([1, 1, 0x00, 1, 63, 0x00])) + b"\x12\xff\x00\x34\xff\xd3\x56\xff\xff\xff\x00"
    assert jpeg_scans(b"\xff\xd8" + scan * 3 + b"\xff\xd9", 100) == 3


# --- Decoding in worker processes

def test_a_decode_past_the_deadline_is_killed_and_its_worker_replaced():
    # The scan bound lifted, so that the 80 KB bomb reaches libjpeg (about 20 s of one CPU here).
    workers = DecodeWorkers(1, DecodeLimits(MAX_PIXELS, max_scans=10**6, seconds=0.5))
    try:
        assert workers.frame(_jpeg(), "photo.jpg", 64).shape == (64, 64, 3)
        (first,) = workers.pids()
        started = time.monotonic()
        with pytest.raises(BadImage, match=r"bomb.jpg: decoding the image took longer than 0.5 s, so it was stopped"):
            workers.frame(BOMB_80_KB, "bomb.jpg", 64)
        assert time.monotonic() - started < 3 and _gone(first) and workers.pids() == []
        frame = workers.frame(_jpeg(), "photo.jpg", 64)          # a new worker
        assert frame.dtype == np.uint8 and frame.shape == (64, 64, 3) and workers.pids() != [first]
    finally:
        workers.close()
    assert workers.pids() == []


def test_a_worker_is_bounded_in_memory_and_cpu_time_of_its_own():
    workers = DecodeWorkers(1, DecodeLimits(MAX_PIXELS, memory_bytes=64 * 2**20))
    try:
        # 6000 x 6000 progressive: ~290 MB of pixels and coefficients, refused from the header.
        with pytest.raises(BadImage, match=r"wide.jpg: decoding this 6000 x 6000 L image would take about \d+ MiB, "
                                           r"over the 64 MiB a decode may use"):
            workers.frame(scan_bomb(6000, 6000, 2), "wide.jpg", 64)
        workers.frame(_jpeg(), "photo.jpg", 64)
        (pid,) = workers.pids()
        with open(f"/proc/{pid}/limits") as limits:
            bounds = {line[:26].strip(): line[26:].split()[0] for line in limits.read().splitlines()[1:]}
        assert bounds["Max address space"] != "unlimited" and bounds["Max cpu time"] != "unlimited"
    finally:
        workers.close()


ORPHAN = """
import os, sys, threading, time
from pathlib import Path
from model.data.decode import DecodeLimits, DecodeWorkers
workers = DecodeWorkers(1, DecodeLimits(40_000_000, max_scans=10**6, seconds=0.2))
workers.frame(Path(sys.argv[1]).read_bytes(), "photo.jpg", 8)
print(workers.pids()[0], flush=True)
threading.Thread(target=workers.frame, args=(Path(sys.argv[2]).read_bytes(), "bomb.jpg", 8), daemon=True).start()
time.sleep(0.3)
os._exit(0)          # gone without killing its worker, as a server killed with SIGKILL
"""


def test_a_worker_whose_caller_died_stops_at_its_cpu_bound(tmp_path):
    (tmp_path / "photo.jpg").write_bytes(_jpeg())
    (tmp_path / "bomb.jpg").write_bytes(BOMB_80_KB)
    out = subprocess.run([sys.executable, "-c", ORPHAN, str(tmp_path / "photo.jpg"), str(tmp_path / "bomb.jpg")],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    worker = int(out.stdout.split()[0])
    deadline = time.monotonic() + 10
    while not _gone(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(worker), "the orphaned decode is still burning a CPU"


# --- The server and `ambient predict`

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_listen_run(tmp_path_factory.mktemp("listen"))


def _upload(client, run, data: bytes, name: str, token: str):
    return client.post(f"/api/v1/runs/{run.run_id}/predict", files={"image": (name, data, "image/jpeg")},
                       headers=bearer(token))


def test_the_api_refuses_scan_bombs_quickly_and_leaves_no_cpu_burning(run):
    app = create_app(Settings(database_url=run.url))
    token = make_token(app, "ann")
    with TestClient(app) as client:
        assert _upload(client, run, _jpeg(), "photo.jpg", token).status_code == 200
        for name, data in (("bomb.jpg", BOMB_80_KB), ("big-bomb.jpg", BOMB_1_MIB)):
            started = time.monotonic()
            response = _upload(client, run, data, name, token)
            assert time.monotonic() - started < 5
            assert response.status_code == 422, response.text[:300]
            assert response.json()["detail"].startswith(f"{name}: a JPEG of more than 17 scans")
        workers = app.state.listening.decoder.pids()
        before = {pid: _cpu_seconds(pid) for pid in workers}
        time.sleep(0.5)
        assert workers and all(_cpu_seconds(pid) - before[pid] < 0.05 for pid in workers)
    assert all(_gone(pid) for pid in workers)          # the app's shutdown killed its workers


def test_the_cli_refuses_scan_bombs(run, tmp_path):
    (tmp_path / "bomb.jpg").write_bytes(BOMB_80_KB)
    (tmp_path / "big-bomb.jpg").write_bytes(BOMB_1_MIB)
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "backend.cli", "predict", str(run.run), str(tmp_path / "bomb.jpg"),
                          str(tmp_path / "big-bomb.jpg"), "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert time.monotonic() - started < 60       # mostly loading torch; the bombs themselves are not decoded
    assert out.returncode == 1, out.stdout + out.stderr
    for name in ("bomb.jpg", "big-bomb.jpg"):
        assert f"{name}: a JPEG of more than 17 scans at 6000 x 6000 pixels is refused before decoding" in out.stderr
    assert "Traceback" not in out.stderr


def test_the_server_shuts_down_on_sigterm_with_a_decode_in_flight(run):
    token = make_token(create_app(Settings(database_url=run.url)), "ann")
    # The scan bound lifted: the bomb is decoded, for about 20 s of CPU, unless the deadline stops it.
    env = {"AMBIENT_PREDICT_MAX_JPEG_SCANS": "1000000", "AMBIENT_PREDICT_DECODE_SECONDS": "2"}
    processes, answers = [], []
    with running_server(run.url, env, processes) as base:
        (server,) = processes

        def send(data: bytes, name: str):
            answers.append(httpx.post(f"{base}/api/v1/runs/{run.run_id}/predict", headers=bearer(token),
                                      files={"image": (name, data, "image/jpeg")}, timeout=60))

        send(_jpeg(), "photo.jpg")            # loads the network: the bomb's request goes straight to decoding
        assert answers[0].status_code == 200, answers[0].text[:300]
        bomb = threading.Thread(target=send, args=(BOMB_80_KB, "bomb.jpg"))
        bomb.start()
        time.sleep(0.7)
        workers = _descendants(server.pid)
        assert workers
        stopping = time.monotonic()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)
        assert time.monotonic() - stopping < 6
        bomb.join(timeout=10)
    assert answers[1].status_code == 422 and "took longer than 2 s" in answers[1].json()["detail"]
    assert all(_gone(pid) for pid in workers)


# --- 16-bit images and error messages

def test_a_16_bit_image_is_scaled_to_8_bits_without_widening_it():
    deep = np.full((6300, 6300), 51400, np.uint16)        # 39.7 MP: under the pixel limit
    deep[0] = np.linspace(0, 65535, 6300).astype(np.uint16)
    out = io.BytesIO()
    Image.fromarray(deep).save(out, "PNG", compress_level=1)
    data = out.getvalue()
    del deep
    tracemalloc.start()
    try:
        grey = decode_image(data, "deep.png", MAX_PIXELS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # numpy's arrays are traced: the 8-bit result and a strip of 16-bit rows (int64 was 8 bytes a pixel more).
    assert peak < 1.5 * 6300 * 6300, f"{peak / 2**20:.0f} MiB"
    top = np.asarray(grey.getchannel(0))
    assert (top[1:] == 51400 >> 8).all()
    assert (top[0] == np.linspace(0, 65535, 6300).astype(np.uint16) >> 8).all()


@pytest.mark.parametrize("data", [
    b"%PDF-1.4 not a picture at all",
    b"GIF89a but not really" * 50,
    b"\x89PNG\r\n\x1a\n" + b"\0" * 100,
    _jpeg()[:300],
    BOMB_80_KB[:200],
])
def test_no_message_shows_a_heap_address(data):
    with pytest.raises(BadImage) as refused:
        decode_image(data, "upload.png", MAX_PIXELS)
    assert "upload.png" in str(refused.value) and not HEAP_ADDRESS.search(str(refused.value)), str(refused.value)
    # Pillow's own text for an unknown file names the BytesIO it read, at its heap address: never passed on.
    assert not HEAP_ADDRESS.search(decode._pillow_says(ValueError("cannot identify image file "
                                                                  "<_io.BytesIO object at 0x7f3dcff06de0>")))
