"""Worker processes on this machine: `--jobs` spawned processes, torch threads split between
them, each dying with its parent; Ctrl-C passed on so each fails its running trial and stops.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace

from nas import NasError


class WorkerError(NasError, RuntimeError):
    """A worker process that exited with an error."""


def worker_threads(jobs: int) -> int:
    """Torch threads per worker process: the cores split between them (two 1-thread trials
    beat one 2-thread trial on this 2-core CPU)."""
    return max(1, (os.cpu_count() or 1) // jobs)


def _child(target, settings, threads: int) -> None:
    """Entry point of a worker process: die with the parent (Linux), then work."""
    import signal

    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    signal.signal(signal.SIGINT, signal.default_int_handler)  # passed on by the parent on Ctrl-C
    try:
        target(settings, threads)
    except KeyboardInterrupt:  # Optuna has already marked the running trial failed
        raise SystemExit(130) from None


def supervise(procs, poll, every: float = 2.0) -> None:
    """Call poll() every `every` seconds until the workers exit. Ctrl-C is passed on to them (each
    fails its running trial and stops) and re-raised once they have stopped."""
    import signal

    try:
        while True:
            alive = any(p.is_alive() for p in procs)
            poll()
            if not alive:
                break
            time.sleep(every)
    except KeyboardInterrupt:
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGINT)
        for p in procs:
            p.join()
        raise
    bad = [p.exitcode for p in procs if p.exitcode]
    if bad:
        raise WorkerError(
            f"a worker exited with code {bad[0]}; the study keeps every finished trial: run the same command to resume"
        )


def with_index(settings, i: int):
    return replace(settings, worker=i) if hasattr(settings, "worker") else settings


def start_workers(target, settings, jobs: int):
    """`jobs` worker processes running target(settings, threads) (the search's or the confirmation's),
    torch threads split between them (see worker_threads)."""
    import multiprocessing

    threads = worker_threads(jobs)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_child, args=(target, with_index(settings, i), threads)) for i in range(jobs)]
    for p in procs:
        p.start()
    return procs
