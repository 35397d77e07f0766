"""`nas bench`: the reference pipeline and nas's loop, side by side in one run, on this machine.

(a) the reference pipeline written plainly, as the reference experiment's notebook has it:
    torchvision's MNIST dataset, per-image PIL `RandomRotation` + `ToTensor` + `Normalize`, a
    `DataLoader` with worker processes, one model of torch's own modules, in a fresh process (on
    the CPU also once more with nas's dropout and allocator setting, to show what those two are
    worth on their own);
(b) nas's loop (`nas.train.train`): tensors in memory, index-slice batches, batched rotation;
(c) nas's loop in `jobs` processes at once, one torch thread each: the machine as a whole.

Same config, same batch size, same number of optimizer steps; images/s of training for each, the
ratios, evaluation throughput, and a scaling table of epoch time against model size.
"""

from __future__ import annotations

import queue
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from nas import data, spec, train
from nas.files import provenance, write_csv
from nas.model import Dropout, build
from nas.workers import WorkerError, check_jobs, context, default_start_method, usable_cpus, worker_threads


def reference_pipeline(
    config: spec.Config, root, steps: int, workers: int, seed: int = 0, device="cpu", nas_cpu: bool = False
) -> float:
    """Training images/s of the usual pipeline (what the reference experiment's notebook does): torch's own modules
    (nn.Dropout) and the allocator as it comes. `nas_cpu`: with nas's two process-level CPU levers
    instead (nas.model.Dropout, train.keep_freed_memory), to show what they alone are worth."""
    from torchvision import datasets

    torch.manual_seed(seed)
    dataset = datasets.MNIST(root, train=True, download=False, transform=reference_transform(config.recipe.rotation))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=config.recipe.batch_size, shuffle=True, num_workers=workers, persistent_workers=workers > 0
    )
    if nas_cpu:
        train.keep_freed_memory()
    model = (build(config) if nas_cpu else plain_model(config)).to(device)
    optimizer = train.make_optimizer(model, config.recipe)
    model.train()
    it = iter(loader)
    for _ in range(3):  # warm-up: worker start, first allocations
        _step(model, optimizer, *next(it), device)
    _sync(device)
    t0 = time.perf_counter()
    n = 0
    for _ in range(steps):
        try:
            x, y = next(it)
        except StopIteration:
            it = iter(loader)
            x, y = next(it)
        _step(model, optimizer, x, y, device)
        n += len(y)
    _sync(device)
    return n / (time.perf_counter() - t0)


def plain_model(config: spec.Config) -> nn.Sequential:
    """The config's network built from torch's modules only, as the reference experiment's notebook has it."""
    return nn.Sequential(*[nn.Dropout(m.p) if isinstance(m, Dropout) else m for m in build(config)])


def reference_transform(rotation: float):
    """The reference's per-image transform: PIL RandomRotation (when the recipe rotates), ToTensor, Normalize."""
    from torchvision import transforms

    tf = [transforms.RandomRotation(rotation, fill=0)] if rotation > 0 else []
    return transforms.Compose(tf + [transforms.ToTensor(), transforms.Normalize((data.MEAN,), (data.STD,))])


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _step(model, optimizer, x, y, device) -> None:
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def nas_loop(config: spec.Config, mnist: dict, steps: int, device="cpu", seed: int = 0, **options) -> float:
    """Training images/s of nas's own loop: one epoch of `steps` batches (evaluation of 1 image).
    `options`: the fields of train.Loop."""
    n = steps * config.recipe.batch_size
    split = data.make_split(mnist, "val", train_limit=n, eval_limit=1, device=device)
    warm = replace(
        split,
        train_x=split.train_x[: 8 * config.recipe.batch_size],
        train_y=split.train_y[: 8 * config.recipe.batch_size],
    )
    loop = train.Loop(**options)
    train.train(config, warm, seed, device, epochs=1, loop=loop)  # warm-up: allocations, cuDNN, a graph
    t0 = time.perf_counter()
    train.train(config, split, seed, device, epochs=1, loop=loop)
    return n / (time.perf_counter() - t0)


def eval_throughput(config: spec.Config, mnist: dict, device="cpu") -> float:
    """Images/s of evaluation (inference mode, large batches) on the 10,000 test images."""
    split = data.make_split(mnist, "test", train_limit=1, device=device)
    model = build(config).to(device)
    train.evaluate(model, split.eval_x, split.eval_y)  # warm-up
    t0 = time.perf_counter()
    train.evaluate(model, split.eval_x, split.eval_y)
    return len(split.eval_y) / (time.perf_counter() - t0)


def _call(out, threads: int | None, fn, args: tuple) -> None:
    default_start_method()
    if threads:
        torch.set_num_threads(threads)
    out.put(fn(*args))


def in_processes(n: int, fn, *args, threads: int | None = None) -> list:
    """fn(*args) in `n` fresh processes at once, `threads` torch threads each; their results.
    Forked from nas's worker server, so nothing of this process carries over (its allocator
    setting included; see workers.context)."""
    ctx = context()
    out = ctx.Queue()
    procs = [ctx.Process(target=_call, args=(out, threads, fn, args)) for _ in range(n)]
    for p in procs:
        p.start()
    results = []
    while len(results) < n:
        try:
            results.append(out.get(timeout=1))
        except queue.Empty:  # a process that died (its traceback on stderr) would leave this waiting
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead:
                for p in procs:
                    p.kill()
                message = f"a measuring process exited with code {dead[0]}; its error is printed above"
                raise WorkerError(message) from None
    for p in procs:
        p.join()
    return results


def _nas_job(config_dict: dict, data_dir: str, steps: int, device: str, options: dict) -> float:
    mnist = data.load_mnist(data_dir, download=False)
    return nas_loop(spec.from_dict(config_dict), mnist, steps, device, **options)


def _reference_job(config_dict: dict, data_dir: str, steps: int, workers: int, seed: int, device: str, nas_cpu: bool):
    return reference_pipeline(spec.from_dict(config_dict), data_dir, steps, workers, seed, device, nas_cpu)


def parallel(config: spec.Config, data_dir: str, steps: int, jobs: int, device="cpu", **options) -> float:
    """Total training images/s of `jobs` processes running nas's loop at once (on the CPU, one
    thread each; on a GPU, sharing it, the cores split between them). `options`: of train.Loop."""
    args = (config.to_dict(), data_dir, steps, str(device), options)
    return sum(in_processes(jobs, _nas_job, *args, threads=worker_threads(jobs)))


def scaled(config: spec.Config, target: int) -> spec.Config:
    """`config` with every hidden width scaled so that the model has about `target` parameters."""
    out_idx = spec.output_index(config.layers)

    def at(k: float) -> spec.Config:
        layers = tuple(
            replace(x, out=max(2, round(x.out * k))) if x.op in (*spec.CONVS, "fc") and i != out_idx else x
            for i, x in enumerate(config.layers)
        )
        return replace(config, layers=layers, name=f"{config.name} x{k:.2f}")

    lo, hi = 0.05, 8.0
    for _ in range(40):
        mid = (lo * hi) ** 0.5
        lo, hi = (mid, hi) if spec.param_count(at(mid)) < target else (lo, mid)
    return min((at(lo), at(hi)), key=lambda c: abs(spec.param_count(c) - target))


def machine(device) -> dict:
    """The machine the figures were measured on (the fields of a replay's provenance)."""
    p = provenance(device)
    return {k: p[k] for k in ("cpu", "cores", "torch", "torch_threads", "device", "gpu", "git_commit")}


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


@dataclass(frozen=True)
class Settings:
    config: spec.Config
    steps: int = 150  # optimizer steps per measurement
    repeats: int = 3  # measurements of each pipeline, interleaved
    jobs: int | None = None  # processes for the whole-machine figure (None: the usable CPUs)
    workers: int | None = None  # DataLoader workers of the reference pipeline (None: the usable CPUs)
    quick: bool = False  # 20 steps, 1 repeat, 3 sizes: a check, not a measurement
    device: str = "auto"
    data_dir: str | None = None
    download: bool = True


def measure(settings: Settings, say) -> tuple[list[dict], list[dict], dict]:
    """What `nas bench` does: the side-by-side table, the scaling table, and the machine and
    settings they were measured with. `say(line)` reports progress."""
    for option, processes in (("--jobs", settings.jobs), ("--workers", settings.workers)):
        if processes is not None:
            check_jobs(processes, option)
    device = train.resolve_device(settings.device)
    root = str(data.data_dir(settings.data_dir))
    data.load_mnist(root, download=settings.download)
    cores = usable_cpus()
    steps, repeats = (20, 1) if settings.quick else (settings.steps, settings.repeats)
    sizes = (2000, 8000, 32000) if settings.quick else (2000, 4000, 8000, 16000, 32000)
    jobs, workers = settings.jobs or cores, cores if settings.workers is None else settings.workers
    info = machine(device)
    c = settings.config
    say(
        f"bench: {c.name} ({spec.param_count(c):,} params), batch {c.recipe.batch_size}, {steps} steps "
        f"x {repeats} repeats; {info['cpu']}, {info['cores']} cores, torch {info['torch']}, device {device}"
    )
    rows, scaling = run(c, root, device, steps, repeats, jobs, workers, sizes, say)
    meta = {**info, "config": c.name, "steps": steps, "repeats": repeats, "jobs": jobs, "workers": workers}
    return rows, scaling, meta


def run(config: spec.Config, data_dir: str, device, steps: int, repeats: int, jobs: int, workers: int, sizes, say):
    """The side-by-side measurement, repeats interleaved so that the machine's noise hits every
    pipeline alike; then the scaling table. Returns (rows, scaling rows)."""
    mnist = data.load_mnist(data_dir, download=False)
    threads = torch.get_num_threads()
    gpu = device.type == "cuda"
    loop = "nas loop + CUDA graphs" if gpu else "nas loop"
    one = f"{loop}, 1 process, {threads} threads"
    variants = {  # name -> (label, options of train.train, processes)
        "nas": (one if gpu else f"{one}, NCHW", {"channels_last": False}, 1),
        "nas_cl": (f"{one}, channels_last", {"channels_last": True}, 1),
    }
    if gpu:
        variants["nas_eager"] = ("nas loop without CUDA graphs, 1 process", {"graphs": False}, 1)
        variants["nas_bf16"] = (f"{one} + bf16 autocast", {"bf16": True}, 1)
        variants["jobs"] = (f"{loop}, {jobs} processes sharing the GPU (whole machine)", {}, jobs)
    else:  # a --jobs worker runs one thread, where train.train picks channels_last
        whole = f"{loop}, {jobs} processes x 1 thread"
        variants["jobs"] = (f"{whole}, channels_last (whole machine)", {"channels_last": True}, jobs)
        variants["jobs_nchw"] = (f"{whole}, NCHW", {"channels_last": False}, jobs)
    label = f"reference pipeline: DataLoader + PIL RandomRotation, {workers} workers, 1 process"
    pipelines = {"reference": (label, False)}
    if not gpu:  # key -> (label, nas_cpu)
        pipelines["reference_nas"] = ("reference pipeline + nas's CPU dropout and allocator setting", True)
    names = {k: label for k, (label, _) in pipelines.items()}
    names |= {k: label for k, (label, _, procs) in variants.items() if procs == 1 or jobs > 1}
    rates: dict[str, list[float]] = {k: [] for k in names}
    for r in range(repeats):
        for key, (_, nas_cpu) in pipelines.items():  # a fresh process: this one's allocator setting stays out
            args = (config.to_dict(), data_dir, steps, workers, r, str(device), nas_cpu)
            rates[key] += in_processes(1, _reference_job, *args)
        for key, (_, options, procs) in variants.items():
            if procs == 1:
                rates[key].append(nas_loop(config, mnist, steps, device, seed=r, **options))
            elif jobs > 1:
                rates[key].append(parallel(config, data_dir, steps, jobs, device, **options))
        say(f"repeat {r + 1}/{repeats}: " + ", ".join(f"{k} {v[-1]:,.0f} img/s" for k, v in rates.items() if v))
    base = statistics.mean(rates["reference"])
    rows = []
    for key, values in rates.items():
        if values:
            mean, std = mean_std(values)
            rows.append({"pipeline": names[key], "img_per_s": mean, "std": std, "ratio": mean / base, "n": len(values)})
    rows.append(
        {
            "pipeline": "evaluation, inference mode, batch 2000",
            "img_per_s": eval_throughput(config, mnist, device),
            "std": 0.0,
            "ratio": None,
            "n": 1,
        }
    )
    scaling = []
    for target in sizes:
        c = scaled(config, target)
        rate = nas_loop(c, mnist, steps, device)
        scaling.append(
            {
                "target": target,
                "params": spec.param_count(c),
                "macs": spec.macs(c),
                "img_per_s": rate,
                "epoch_s": 60_000 / rate,
            }
        )
        say(f"scaling: {spec.param_count(c):,} params, {60_000 / rate:.1f} s per 60k-image epoch")
    return rows, scaling


def write(rows: list[dict], scaling: list[dict], meta: dict, folder: Path) -> list[Path]:
    """Both tables as CSV, each row with the machine and settings beside it, named by UTC time."""
    from datetime import UTC, datetime

    import pandas as pd

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return [
        write_csv(pd.DataFrame([{**r, **meta} for r in rows]), folder / f"{stamp}-throughput.csv"),
        write_csv(pd.DataFrame([{**r, **meta} for r in scaling]), folder / f"{stamp}-scaling.csv"),
    ]
