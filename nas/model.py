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


def build(config: spec.Config) -> nn.Sequential:
    """The network of `config`, following the conventions in `nas.spec` (ReLU, BN, dropout)."""
    modules: list[nn.Module] = []
    dropout = config.recipe.dropout
    for row in spec.trace(config):
        x = row.layer
        if x.op in spec.CONVS:
            if x.op == "conv":
                modules.append(nn.Conv2d(row.in_ch, x.out, x.kernel, padding=x.padding, bias=False))
            else:  # depthwise, then pointwise
                modules.append(
                    nn.Conv2d(row.in_ch, row.in_ch, x.kernel, padding=x.padding, groups=row.in_ch, bias=False)
                )
                modules.append(nn.Conv2d(row.in_ch, x.out, 1, bias=False))
            if not row.is_output:
                block = [nn.ReLU(), nn.BatchNorm2d(x.out)]
                modules += block if x.order == "relu-bn" else block[::-1]
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
