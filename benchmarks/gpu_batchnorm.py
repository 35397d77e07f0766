"""Training BatchNorm on the GPU, forward + backward, for the two wide layers of baseline-6
(128 x 22 x 26 x 26 and 128 x 14 x 24 x 24): cuDNN's kernels (what nn.BatchNorm2d calls on
CUDA) and torch's own (torch.native_batch_norm), in NCHW and channels_last, each captured as a CUDA graph and
replayed (as the training step is), microseconds per call, median of 5 x 200 replays.
benchmarks/gpu.sh runs it.

    python benchmarks/gpu_batchnorm.py
"""

import statistics

import torch

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


def train_bn(shape, native: bool, layout) -> callable:
    bn = torch.nn.BatchNorm2d(shape[1]).cuda().train()
    x = torch.randn(shape, device="cuda").contiguous(memory_format=layout).requires_grad_()
    g = torch.randn(shape, device="cuda").contiguous(memory_format=layout)
    stats = bn.running_mean, bn.running_var

    def forward():
        if native:
            return torch.native_batch_norm(x, bn.weight, bn.bias, *stats, True, bn.momentum, bn.eps)[0]
        return bn(x)

    return lambda: torch.autograd.grad(forward(), (x, bn.weight, bn.bias), g)


print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}: training BatchNorm, us per call")
for shape in SHAPES:
    for layout in (torch.contiguous_format, torch.channels_last):
        row = {
            name: replay_us(train_bn(shape, native, layout)) for name, native in (("cudnn", False), ("native", True))
        }
        cells = "  ".join(f"{k} {v:7.1f}" for k, v in row.items())
        print(f"{str(shape):20} {str(layout).split('.')[-1]:18} {cells}")
