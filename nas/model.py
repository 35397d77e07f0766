"""build(config) -> nn.Module: the config's layers as a plain nn.Sequential of torch modules."""

from __future__ import annotations

from torch import nn

from nas import spec


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
                    modules.append(nn.Dropout(dropout))
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
