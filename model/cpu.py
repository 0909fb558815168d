"""Which CPU kernels torch uses, and the portable setting that pins them.

Training's floating-point sums depend on the kernels torch's libraries pick for the CPU (AVX-512 sums 16
floats at a time, AVX2 8; MKL's matrix products and oneDNN's convolutions block their sums by it), so the
same commands give slightly different weights, and after hundreds of steps different figures, on different
CPUs. `ambient train` and `ambient demo` print the capability and run.json records it.

``AMBIENT_PORTABLE=1`` (or ``--portable`` on ``ambient train`` and ``ambient demo``) pins ATen's kernels,
oneDNN's (convolutions) and MKL's (matrix products, in its reproducible mode) to AVX2 through the
environment variables each library reads when it first runs, so they must be set before torch is imported.
Sums are also split among threads, which training takes from the number of cores: pinned, every command
uses PORTABLE_THREADS. Measured (benchmarks/bench_portable.py): pinned, this AVX-512 CPU trains bit for bit
the weights it trains when it imitates an AVX2-only CPU, and on 1 core as on 2; its own default differs.
Not promised: another torch build, AMD CPUs (MKL's reproducible mode is for Intel's), GPUs, ARM.
This module imports torch only when asked.
"""
from __future__ import annotations

import os
import sys

PORTABLE = "AMBIENT_PORTABLE"
# Sums are split among threads too, so pinned runs use as many as the README's 2-core machine.
PORTABLE_THREADS = 2
# The kernels an AVX2 CPU runs, on any CPU that has AVX2: ATen's vectorised ops, oneDNN's convolutions,
# MKL's matrix products (MKL_CBWR: its conditional numerical reproducibility mode); and the threads.
PORTABLE_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2",
                    "OMP_NUM_THREADS": str(PORTABLE_THREADS), "MKL_NUM_THREADS": str(PORTABLE_THREADS)}


def portable_requested(environ=os.environ) -> bool:
    """AMBIENT_PORTABLE is set to something other than "" or "0"."""
    return environ.get(PORTABLE, "") not in ("", "0")


def kernels_pinned(environ=os.environ) -> bool:
    return all(environ.get(name) == value for name, value in PORTABLE_KERNELS.items())


def pin_portable_kernels() -> None:
    """Pin the kernels in this process and the processes it starts. RuntimeError once torch is imported
    unpinned: its libraries may have chosen their kernels already."""
    if kernels_pinned():
        os.environ[PORTABLE] = "1"
        return
    if "torch" in sys.modules:
        raise RuntimeError("portable kernels must be chosen before torch is imported: "
                           f"start the command with {PORTABLE}=1")
    os.environ.update(PORTABLE_KERNELS)
    os.environ[PORTABLE] = "1"


def training_threads(processes: int = 1) -> int:
    """Threads for each of ``processes`` training on the CPU: the cores shared out; pinned, PORTABLE_THREADS."""
    cores = PORTABLE_THREADS if kernels_pinned() else (os.cpu_count() or 1)
    return max(1, cores // processes)


def cpu_capability() -> str:
    """The vector instructions ATen's CPU kernels use here: "AVX512", "AVX2", "DEFAULT", ...; imports torch."""
    import torch

    return torch.backends.cpu.get_cpu_capability()


def capability_line() -> str:
    """What `ambient train` and `ambient demo` print about the kernels their figures came from."""
    if kernels_pinned():
        return (f"CPU capability: {cpu_capability()}, kernels pinned ({PORTABLE}=1): the figures of an AVX2 CPU "
                f"on {PORTABLE_THREADS} threads whatever this one has (same torch build)")
    return (f"CPU capability: {cpu_capability()}, {training_threads()} threads (training's float sums depend on "
            f"both; the README's figures say which made them; {PORTABLE}=1 or --portable pins them)")


def kernels_record() -> dict:
    """run.json's record of the kernels and threads that trained the run."""
    import torch

    return {"cpu_capability": cpu_capability(), "cpu_threads": torch.get_num_threads(),
            "portable_kernels": kernels_pinned()}
