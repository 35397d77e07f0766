"""The CPU levers behind nas's loop that `nas bench` does not show, each measured side by side:

1. allocator: nas's loop and the reference pipeline (baseline-6, batch 128) in fresh processes, with
   and without `train.keep_freed_memory()`, interleaved: images/s and page faults per step.
2. BatchNorm layout: training BatchNorm (forward + backward, 128 x C x 26 x 26) in NCHW and
   channels_last at 1 and 2 threads, by channel count C.
3. torch.compile: nas's model compiled (inductor) against eager, NCHW on 2 threads and
   channels_last on 1 thread, with the compile time.
4. small levers: in-place ReLU, fused SGD, foreach SGD against the default step.

    python benchmarks/cpu_levers.py [--steps 100] [--repeats 3] [--parts 1,2,3]
"""

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F


def fresh(pipeline: str, allocator: bool, steps: int) -> dict:
    """One measurement in a new process, so the allocator setting starts untouched."""
    code = f"""
import json, resource
from nas import bench, data, spec, train
if {allocator}:
    train.keep_freed_memory()
else:
    train.keep_freed_memory = lambda: None  # train.train would set it otherwise
config = spec.load_baseline("baseline-6")
if "{pipeline}" == "reference":
    bench.reference_pipeline(config, str(data.data_dir()), 5, 2)  # warm-up
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
if "{pipeline}" == "reference":
    rate = bench.reference_pipeline(config, str(data.data_dir()), {steps}, 2)
else:
    rate = bench.nas_loop(config, data.load_mnist(download=False), {steps})
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
print(json.dumps({{"rate": rate, "faults": faults}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


def allocator(steps: int, repeats: int) -> None:
    print(f"1. allocator: {steps} steps of baseline-6, fresh process each, {repeats} repeats interleaved")
    cases = [(p, a) for p in ("reference", "nas") for a in (False, True)]
    got = {c: [] for c in cases}
    for _ in range(repeats):
        for c in cases:
            got[c].append(fresh(*c, steps))
    for (p, a), runs in got.items():
        rates = [r["rate"] for r in runs]
        faults = statistics.mean(r["faults"] for r in runs) / steps
        kind = "nas loop" if p == "nas" else "reference pipeline"
        label = f"{kind}, {'keep_freed_memory' if a else 'glibc default'}"
        print(f"   {label:42s} {statistics.mean(rates):7,.0f} ± {statistics.stdev(rates):4,.0f} img/s"
              f"   {faults:8,.0f} page faults per step (process-wide, incl. set-up)")  # fmt: skip


def timed(f, k: int = 20) -> float:
    f()
    f()
    t0 = time.perf_counter()
    for _ in range(k):
        f()
    return (time.perf_counter() - t0) / k * 1e3


def batchnorm() -> None:
    print("2. training BatchNorm, forward + backward, 128 x C x 26 x 26, ms per call")
    print("   C    NCHW 1 thr   NHWC 1 thr   NCHW 2 thr   NHWC 2 thr")
    for c in (14, 16, 22, 24, 32):
        row = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for layout in (torch.contiguous_format, torch.channels_last):
                x = torch.randn(128, c, 26, 26).contiguous(memory_format=layout).requires_grad_()
                g = torch.randn(128, c, 26, 26).contiguous(memory_format=layout)
                w, b = torch.ones(c, requires_grad=True), torch.zeros(c, requires_grad=True)
                mean, var = torch.zeros(c), torch.ones(c)
                row.append(timed(lambda: F.batch_norm(x, mean, var, w, b, True).backward(g)))  # noqa: B023
        print(f"   {c:<4d}" + "".join(f"{t:11.2f}  " for t in row))
    torch.set_num_threads(2)


def train_rate(net, config, split, layout, optimizer=None) -> tuple[float, float]:
    """(images/s after the first two steps, seconds of the first two steps: compilation)."""
    from nas import data, train

    optimizer = optimizer or train.make_optimizer(net, config.recipe)
    gen = torch.Generator().manual_seed(0)
    idxs = data.batches(len(split.train_y), config.recipe.batch_size, gen)
    times = []
    for idx in idxs:
        t0 = time.perf_counter()
        x = data.rotate(split.train_x[idx], config.recipe.rotation, gen).contiguous(memory_format=layout)
        loss = F.cross_entropy(net(x), split.train_y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - t0)
    return (len(idxs) - 2) * config.recipe.batch_size / sum(times[2:]), sum(times[:2])


def compiled(steps: int) -> None:
    from torch import nn

    from nas import data, model, spec

    print(f"3. torch.compile (inductor) against eager, baseline-6, {steps} steps, images/s")
    config = spec.load_baseline("baseline-6")
    split = data.make_split(data.load_mnist(download=False), "val", train_limit=(steps + 2) * 128, eval_limit=1)
    settings = ((2, torch.contiguous_format, "NCHW, 2 threads"), (1, torch.channels_last, "channels_last, 1 thread"))
    for threads, layout, name in settings:
        torch.set_num_threads(threads)
        for compile_ in (False, True):
            torch.manual_seed(0)
            net = model.build(config)
            if compile_:  # inductor draws its own dropout masks: torch's module, not nas's numpy one
                net = nn.Sequential(*[nn.Dropout(m.p) if isinstance(m, nn.Dropout) else m for m in net])
            net = net.to(memory_format=layout).train()
            rate, first = train_rate(torch.compile(net) if compile_ else net, config, split, layout)
            print(f"   {name:24s} {'compiled' if compile_ else 'eager':9s} {rate:7,.0f} img/s"
                  f"   (first two steps {first:.1f} s)")  # fmt: skip
    torch.set_num_threads(2)


def small(steps: int, repeats: int) -> None:
    from torch import nn

    from nas import data, model, spec

    print(f"4. small levers, NCHW on 2 threads, baseline-6, {steps} steps, {repeats} repeats interleaved, images/s")
    config = spec.load_baseline("baseline-6")
    split = data.make_split(data.load_mnist(download=False), "val", train_limit=(steps + 2) * 128, eval_limit=1)
    r = config.recipe

    def variant(name: str):
        torch.manual_seed(0)
        net = model.build(config).train()
        if name == "in-place ReLU":
            for m in net:
                if isinstance(m, nn.ReLU):
                    m.inplace = True
        extra = {"fused SGD": {"fused": True}, "foreach SGD": {"foreach": True}}.get(name, {})
        optimizer = torch.optim.SGD(net.parameters(), lr=r.lr, momentum=r.momentum, **extra)
        return train_rate(net, config, split, torch.contiguous_format, optimizer)[0]

    names = ["default", "in-place ReLU", "fused SGD", "foreach SGD"]
    rates = {n: [] for n in names}
    for _ in range(repeats):
        for n in names:
            rates[n].append(variant(n))
    base = statistics.mean(rates["default"])
    for n in names:
        mean = statistics.mean(rates[n])
        print(f"   {n:16s} {mean:7,.0f} ± {statistics.stdev(rates[n]):4,.0f} img/s   {mean / base:.2f}x")


ap = argparse.ArgumentParser()
ap.add_argument("--steps", type=int, default=100)
ap.add_argument("--repeats", type=int, default=3)
ap.add_argument("--parts", default="1,2,3,4")
args = ap.parse_args()
parts = args.parts.split(",")
print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
if "1" in parts:
    allocator(args.steps, args.repeats)
if "2" in parts:
    batchnorm()
if "3" in parts:
    compiled(args.steps)
if "4" in parts:
    small(args.steps, args.repeats)
