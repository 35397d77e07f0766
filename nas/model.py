"""build(config) -> nn.Module: the config's layers as a plain nn.Sequential of torch modules."""

from __future__ import annotations

import torch
from torch import nn

from nas import spec


class Dropout(nn.Dropout):
    """nn.Dropout with a cheaper mask on the CPU, where drawing the random numbers is the cost:
    16 random bits per element (one int64 draw serves four) instead of one float each: the
    training step of baseline-6 1.14x faster on this project's 2-core CPU
    (`python benchmarks/cpu_dropout.py`). An element is kept when its draw is at or above p, so p
    is exact to 1/32768.
    Other devices, and evaluation, use torch's dropout; the repr and state are nn.Dropout's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu":
            return super().forward(x)
        n = x.numel()
        draws = torch.empty((n + 3) // 4, dtype=torch.int64).random_()  # 63 random bits each
        lanes = draws.view(torch.int16).view(-1, 4)  # little-endian: lane 3 holds the top 15 bits
        keep = (lanes >= _thresholds(self.p)).view(-1)[:n].view(x.shape)
        return x * keep.to(x.dtype).mul_(1.0 / (1.0 - self.p))


def _thresholds(p: float) -> torch.Tensor:
    """Per-lane int16 cut-offs with P(draw < cut-off) = p: lanes 0-2 span [-32768, 32767], lane 3 [0, 32767]."""
    low = round(p * 65536) - 32768
    return torch.tensor([low, low, low, round(p * 32768)], dtype=torch.int16)


def build(config: spec.Config) -> nn.Sequential:
    """The network of `config`, following the conventions in `nas.spec` (ReLU, BN, dropout)."""
    modules: list[nn.Module] = []
    dropout = config.recipe.dropout
    for row in spec.trace(config):
        x = row.layer
        if x.op == "conv":
            modules.append(nn.Conv2d(row.in_ch, x.out, x.kernel, padding=x.padding, bias=False))
            if not row.is_output:
                modules += [nn.ReLU(), nn.BatchNorm2d(x.out)]
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
