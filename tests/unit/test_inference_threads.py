"""The inference thread runs torch with the worker's intra-op thread count, not one per
core: OpenMP's count is per thread, and MKL's sgemm reads it (runtime.inference_executor).
"""

from __future__ import annotations

import ctypes
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from modelgate.inference.runtime import inference_executor, torch_thread_pool


def _openmp() -> ctypes.CDLL:
    """The OpenMP runtime torch loaded (libgomp in the CPU wheel): from torch's own
    libraries, as another package (scikit-learn) may have loaded a libgomp of its own."""
    torch_libs = str(Path(torch.__file__).parent)
    maps = Path(f"/proc/{os.getpid()}/maps").read_text().split()
    found = [
        p
        for p in maps
        if ("libgomp" in Path(p).name or "libiomp" in Path(p).name) and p.startswith(torch_libs)
    ]
    if not found:
        pytest.skip("this torch build uses no OpenMP runtime")
    return ctypes.CDLL(found[0])


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("pool", ["inference", "default"])
def test_the_workers_threads_have_its_thread_count(threads: int, pool: str) -> None:
    """The inference thread, and the worker's default executor (asyncio.to_thread: model
    loads on a hot reload), which app.worker_lifespan builds the same way."""
    torch.zeros(1)  # torch loaded its libraries
    omp = _openmp()
    executor = (
        inference_executor(threads)
        if pool == "inference"
        else torch_thread_pool(threads, None, "worker")
    )
    try:
        assert executor.submit(omp.omp_get_max_threads).result(timeout=30) == threads
    finally:
        executor.shutdown()


def test_a_plain_new_thread_would_not() -> None:
    """What the initializer is for: without it a new thread gets one per core, whatever
    the main thread set. (Meaningful on a machine with more than one core.)"""
    if len(os.sched_getaffinity(0)) < 2 or "OMP_NUM_THREADS" in os.environ:
        pytest.skip("a new thread's default is 1 here anyway")
    omp = _openmp()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(1) as plain:
            assert plain.submit(omp.omp_get_max_threads).result(timeout=30) > 1
    finally:
        torch.set_num_threads(before)
