"""Training BatchNorm on the GPU, forward + backward, for the two wide layers of baseline-6
(128 x 22 x 26 x 26 and 128 x 14 x 24 x 24): cuDNN's kernels, torch's own (cuDNN off) and
nas.model's two-stage reductions, in NCHW and channels_last, each captured as a CUDA graph and
replayed (as the training step is), microseconds per call, median of 5 x 200 replays.
Then the reductions the two-stage version is made of, alone. benchmarks/gpu.sh runs it.

    python benchmarks/gpu_batchnorm.py
"""

import statistics

import torch

from nas.model import BatchNorm2d

SHAPES = [(128, 22, 26, 26), (128, 14, 24, 24)]


def replay_us(fn, reps: int = 200) -> float:
    """Median microseconds per call of `fn()` captured as a CUDA graph."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    times = []
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000 / reps)
    return statistics.median(times)


def train_bn(shape, two_stage: bool, layout) -> callable:
    bn = BatchNorm2d(shape[1]).cuda().train()
    bn.two_stage = two_stage
    x = torch.randn(shape, device="cuda").contiguous(memory_format=layout).requires_grad_()
    g = torch.randn(shape, device="cuda").contiguous(memory_format=layout)
    return lambda: torch.autograd.grad(bn(x), (x, bn.weight, bn.bias), g)


print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}: training BatchNorm, us per call")
for shape in SHAPES:
    for layout in (torch.contiguous_format, torch.channels_last):
        row = {}
        for name, two_stage, cudnn in (("cudnn", False, True), ("torch", False, False), ("two-stage", True, True)):
            with torch.backends.cudnn.flags(enabled=cudnn):
                row[name] = replay_us(train_bn(shape, two_stage, layout))
        cells = "  ".join(f"{k} {v:7.1f}" for k, v in row.items())
        print(f"{str(shape):20} {str(layout).split('.')[-1]:18} {cells}")


def reductions(x: torch.Tensor, dy: torch.Tensor) -> dict:
    k = x[:1, :, :1, :1]  # a per-channel factor
    return {
        "var_mean(x, (2,3))": lambda: torch.var_mean(x, dim=(2, 3), correction=0),
        "x.sum((2,3)), (x*x).sum((2,3))": lambda: (x.sum((2, 3)), (x * x).sum((2, 3))),
        "(dy*x).sum((2,3))": lambda: (dy * x).sum((2, 3)),
        "einsum nchw,nchw->nc": lambda: torch.einsum("nchw,nchw->nc", dy, x),
        "addcmul(addcmul(k, x, k), dy, k)": lambda: torch.addcmul(torch.addcmul(k, x, k), dy, k),
    }


print("the parts of the two-stage version alone, us per call (NCHW)")
for shape in SHAPES:
    ops = reductions(torch.randn(shape, device="cuda"), torch.randn(shape, device="cuda"))
    print(str(shape) + "  " + "  ".join(f"{k}: {replay_us(f):.1f}" for k, f in ops.items()))
