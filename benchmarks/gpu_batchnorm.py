"""The block after each hidden conv of baseline-6, ReLU -> training BatchNorm -> Dropout(0.05),
forward + backward on the GPU, for its five shapes: torch's modules (cuDNN's BatchNorm, what
nas trains with by default), torch's own BatchNorm kernel (torch.native_batch_norm), and
nas.fused's Triton kernels; NCHW, each captured as a CUDA graph and replayed (as the training
step is), microseconds per call, median of 5 x 200 replays. First, the fused block against
torch's on the GPU (no dropout: relative errors of y, dx, dweight, dbias). benchmarks/gpu.sh runs it.

    python benchmarks/gpu_batchnorm.py
"""

import statistics

import torch
import torch.nn.functional as F
from torch import nn

from nas.fused import relu_bn_dropout

SHAPES = [(128, 22, 26, 26), (128, 14, 24, 24), (128, 10, 10, 10), (128, 12, 8, 8), (128, 12, 6, 6)]
P = 0.05


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


def block(kind: str, bn: nn.BatchNorm2d, p: float):
    stats = bn.running_mean, bn.running_var
    if kind == "fused":
        return lambda x: relu_bn_dropout(x, bn, p)
    if kind == "native":
        return lambda x: F.dropout(
            torch.native_batch_norm(F.relu(x), bn.weight, bn.bias, *stats, True, bn.momentum, bn.eps)[0], p
        )
    return lambda x: F.dropout(bn(F.relu(x)), p)


def grads(kind: str, shape, p: float = P):
    bn = nn.BatchNorm2d(shape[1]).cuda().train()
    x = torch.randn(shape, device="cuda").requires_grad_()
    g = torch.randn(shape, device="cuda")
    forward = block(kind, bn, p)

    def step():
        y = forward(x)
        return (y, *torch.autograd.grad(y, (x, bn.weight, bn.bias), g))

    return step


print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
for shape in SHAPES[:2]:
    torch.manual_seed(0)
    ref = grads("torch", shape, 0.0)()
    torch.manual_seed(0)
    fused = grads("fused", shape, 0.0)()
    errors = [((a - b).norm() / b.norm()).item() for a, b in zip(fused, ref, strict=True)]
    print(f"{str(shape):20} fused against torch, relative errors of y, dx, dweight, dbias: "
          + " ".join(f"{e:.1e}" for e in errors))  # fmt: skip
print(f"ReLU -> BatchNorm -> Dropout({P}), forward + backward, us per call")
for shape in SHAPES:
    row = {kind: replay_us(grads(kind, shape)) for kind in ("torch", "native", "fused")}
    print(f"{str(shape):20} " + "  ".join(f"{k} {v:7.1f}" for k, v in row.items()))
