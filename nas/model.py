"""build(config) -> nn.Module: the config's layers as a plain nn.Sequential of torch modules."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from nas import spec


class Dropout(nn.Dropout):
    """nn.Dropout with a cheaper mask on the CPU, where drawing the random numbers is the cost.
    torch's CPU generator (mt19937) draws one float per element; here numpy's PCG64DXSM draws 64
    bits that serve four elements (16 bits each), seeded per call from torch's generator, so
    `torch.manual_seed` still fixes every mask. An element is kept when its 16 bits, read as an
    int16, are at or above round(p * 65536) - 32768: p is exact to 1/65536. The mask is built in
    x's memory layout (NCHW or channels_last), so the multiply runs over plain contiguous memory.
    Other devices, and evaluation, use torch's dropout; the repr and state are nn.Dropout's.
    `python benchmarks/cpu_dropout.py` measures it against torch's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu":
            return super().forward(x)
        if not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
            x = x.contiguous()
        n = x.numel()
        seed = int(torch.randint(2**63 - 1, ()).item())
        bits = np.random.PCG64DXSM(seed).random_raw((n + 3) // 4).view(np.int16)[:n]
        mask = (bits >= round(self.p * 65536) - 32768) * np.float32(1.0 / (1.0 - self.p))
        return x * torch.from_numpy(mask).as_strided(x.shape, x.stride())


class _TwoStageBatchNorm(torch.autograd.Function):
    """Training BatchNorm whose per-channel statistics are two-stage reductions: first over each
    image's H x W (contiguous in NCHW: many short, independent rows), then over the batch (a
    small N x C tensor). cuDNN's NCHW kernels give each channel one block, and a wide layer has
    few channels (22 at 26 x 26: 22 blocks on an H100's 132 multiprocessors). Forward: one
    var_mean pass and one affine pass over x; backward: two reduction passes and one pass for dx.
    The running statistics are updated in place, as torch's BatchNorm does."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum: float, eps: float):
        n, c, h, w = x.shape
        count = n * h * w
        var_nc, mean_nc = torch.var_mean(x, dim=(2, 3), correction=0)  # per image and channel
        mean = mean_nc.mean(0)
        var = (var_nc + (mean_nc - mean).square()).mean(0)  # the law of total variance
        invstd = torch.rsqrt(var + eps)
        scale = weight * invstd
        shift = bias - mean * scale
        running_mean.lerp_(mean, momentum)
        running_var.lerp_(var * (count / (count - 1)), momentum)  # unbiased, as torch keeps it
        ctx.save_for_backward(x, weight, mean, invstd)
        return torch.addcmul(shift.view(1, c, 1, 1), x, scale.view(1, c, 1, 1))

    @staticmethod
    def backward(ctx, dy):
        x, weight, mean, invstd = ctx.saved_tensors
        n, c, h, w = x.shape
        count = n * h * w
        dbias = dy.sum((2, 3)).sum(0)
        dweight = ((dy * x).sum((2, 3)).sum(0) - mean * dbias) * invstd  # sum of dy * x_hat
        # dx = weight * invstd * (dy - mean(dy) - x_hat * mean(dy * x_hat)) = k1 dy + k2 x + k3
        k1 = weight * invstd
        k2 = -k1 * invstd * dweight / count
        k3 = -k1 * dbias / count - k2 * mean
        dx = torch.addcmul(torch.addcmul(k3.view(1, c, 1, 1), x, k2.view(1, c, 1, 1)), dy, k1.view(1, c, 1, 1))
        return dx, dweight, dbias, None, None, None, None


class BatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d that trains with `_TwoStageBatchNorm` when `two_stage` is set (a CUDA
    option: `benchmarks/gpu_replay.py` measures it); evaluation, and `two_stage=False`, are
    torch's. The repr, parameters and state are nn.BatchNorm2d's."""

    two_stage = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.two_stage):
            return super().forward(x)
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        return _TwoStageBatchNorm.apply(
            x, self.weight, self.bias, self.running_mean, self.running_var, self.momentum, self.eps
        )


def build(config: spec.Config, two_stage_bn: bool = False) -> nn.Sequential:
    """The network of `config`, following the conventions in `nas.spec` (ReLU, BN, dropout).
    `two_stage_bn`: BatchNorm layers train with `_TwoStageBatchNorm` (see BatchNorm2d)."""
    modules: list[nn.Module] = []
    dropout = config.recipe.dropout
    for row in spec.trace(config):
        x = row.layer
        if x.op == "conv":
            modules.append(nn.Conv2d(row.in_ch, x.out, x.kernel, padding=x.padding, bias=False))
            if not row.is_output:
                modules += [nn.ReLU(), BatchNorm2d(x.out)]
                modules[-1].two_stage = two_stage_bn
                if dropout > 0:
                    modules.append(Dropout(dropout))
        elif x.op == "pool":
            modules.append(nn.MaxPool2d(2))
        elif x.op == "gap":
            modules += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        else:  # fc
            modules.append(nn.Linear(row.in_ch, x.out))
            if not row.is_output:
                modules.append(nn.ReLU())
    return nn.Sequential(*modules)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
