"""Worker processes on this machine: `--jobs` processes forked from a worker server, torch
threads split between them, each dying with its `nas` command; Ctrl-C passed on so each fails its
running trial and stops.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace

from nas import NasError


class WorkerError(NasError, RuntimeError):
    """A worker process that exited with an error."""


class JobsError(NasError, ValueError):
    """More worker processes than this machine can run."""


# Past the cores, more workers only wait for one, each holding torch and its own MNIST (0.7-1 GB
# resident on the CPU); a few per core still fill the gaps while one starts or evaluates (a committed
# frontier ran --jobs 5 on 2 CPUs). A bound tied to the machine, so that a typo (--jobs 100) is
# refused instead of forking until memory runs out.
JOBS_PER_CPU = 4


def stop_on_signals() -> None:
    """Ctrl-C and SIGTERM stop a run cleanly (KeyboardInterrupt), even where the shell started
    nas with SIGINT ignored (a background job of a script)."""
    import signal

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupt)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity: a container's or a job scheduler's
    cpuset, `taskset`), not every CPU of the machine."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_jobs(jobs: int, option: str = "--jobs") -> int:
    """`jobs` processes, given as `option`, where the count enters the library: at most JOBS_PER_CPU
    per usable CPU, else a JobsError."""
    cpus = usable_cpus()
    if jobs > JOBS_PER_CPU * cpus:
        raise JobsError(
            f"{option} {jobs}: more processes than this machine can run: at most {JOBS_PER_CPU * cpus} "
            f"({JOBS_PER_CPU} per usable CPU, {cpus} here), each taking about 1 GB of memory (torch and its own "
            f"copy of MNIST); pass {option} {cpus} to use every CPU"
        )
    return jobs


def worker_threads(jobs: int) -> int:
    """Torch threads per worker process: the usable CPUs split between them (two 1-thread trials
    beat one 2-thread trial on this 2-core CPU; more threads than CPUs spin and crawl)."""
    return max(1, usable_cpus() // jobs)


def _child(target, settings, threads: int, parent: int) -> None:
    """Entry point of a worker process: die with the `nas` command that started it, then work."""
    import signal

    _die_with(parent)
    default_start_method()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # passed on by the parent on Ctrl-C
    try:
        target(settings, threads)
    except KeyboardInterrupt:  # Optuna has already marked the running trial failed
        raise SystemExit(130) from None


def default_start_method() -> None:
    """A forked worker inherits 'forkserver' as its default start method; put back the platform's
    (fork on Linux), as a fresh process has it: a DataLoader's workers (the reference pipeline's) would
    otherwise each start a server of their own and import everything again."""
    import multiprocessing

    multiprocessing.set_start_method(None, force=True)


def _die_with(pid: int) -> None:
    """SIGKILL this process the moment process `pid` exits (killed, say): a watcher thread that
    waits on a pidfd (Linux), else polls. The worker's own parent is the worker server, which
    outlives the command by its teardown, so the kernel's parent-death signal would come late."""
    import select
    import signal
    import threading

    def watch() -> None:
        try:
            select.select([os.pidfd_open(pid)], [], [])  # readable once the process has exited
        except (AttributeError, OSError):  # not Linux, or an old kernel
            while alive(pid):
                time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def supervise(procs, poll, every: float = 2.0) -> None:
    """Call poll() every `every` seconds, and as soon as a worker exits, until all have exited.
    Ctrl-C is passed on to them (each fails its running trial and stops) and re-raised once they
    have stopped."""
    import signal
    from multiprocessing.connection import wait

    try:
        running = list(procs)
        while True:
            poll()
            if not running:
                break
            ended = wait([p.sentinel for p in running], timeout=every)
            running = [p for p in running if p.sentinel not in ended]
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


def context():
    """Where worker processes come from: multiprocessing's forkserver, a server process that
    imports torch and nas once and forks each worker from itself. A worker then starts in a
    fraction of a second instead of paying seconds of imports (torch, and torch._dynamo, which torch's
    optimizers import on first use). The server never trains or touches a GPU, so no thread pool
    or CUDA state is forked; nor does any setting of this process (as with spawn)."""
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch._dynamo", "nas.search", "nas.objective", "nas.confirm"])
    return ctx


def start_server() -> None:
    """Start the worker server now (it returns at once), so that its imports overlap this
    process's own work before the first worker is needed."""
    from multiprocessing import forkserver

    context()  # sets what the server imports before it starts
    forkserver.ensure_running()


def started(jobs: int, work: int) -> int:
    """How many worker processes a run of `work` units starts: `jobs`, or one per unit where that is
    fewer (a worker with nothing to take would only load MNIST)."""
    return min(jobs, work)


def start_workers(target, settings, jobs: int, work: int):
    """Worker processes running target(settings, threads) (the search's or the confirmation's), as many
    as `started` says. Torch threads are split as for `jobs` (see worker_threads) however many start,
    so that the last units train as the first did."""
    threads = worker_threads(jobs)
    ctx = context()
    args = [(target, with_index(settings, i), threads, os.getpid()) for i in range(started(jobs, work))]
    procs = [ctx.Process(target=_child, args=a) for a in args]
    for p in procs:
        p.start()
    return procs
