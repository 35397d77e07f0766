"""Training steps of baseline-6 on the CPU with four dropout implementations, interleaved:
torch's nn.Dropout, a float mask (x * (rand >= p) / (1 - p)), a 16-bit mask from torch's
generator (four int16 lanes per int64 draw), and nas's 16-bit mask from
numpy's PCG64DXSM (nas.model.Dropout). Prints images/s per repeat and the mean.

    python benchmarks/cpu_dropout.py [--steps 60] [--repeats 3]
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from nas import data, model, spec, train


class FloatMask(nn.Module):
    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x):
        return x * torch.rand_like(x).ge_(self.p).div_(1 - self.p) if self.training else x


class TorchBits(nn.Module):
    """16 bits per element from torch's CPU generator: one int64 draw (63 random bits) serves four."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        low = round(p * 65536) - 32768
        self.cut = torch.tensor([low, low, low, round(p * 32768)], dtype=torch.int16)  # lane 3: 15 bits

    def forward(self, x):
        if not self.training:
            return x
        n = x.numel()
        lanes = torch.empty((n + 3) // 4, dtype=torch.int64).random_().view(torch.int16).view(-1, 4)
        keep = (lanes >= self.cut).view(-1)[:n].view(x.shape)
        return x * keep.to(x.dtype).mul_(1.0 / (1.0 - self.p))


def network(kind: str, config: spec.Config) -> nn.Module:
    net = model.build(config)
    for i, m in enumerate(net):
        if isinstance(m, nn.Dropout):
            net[i] = {
                "torch": nn.Dropout(m.p),
                "float mask": FloatMask(m.p),
                "16-bit, torch": TorchBits(m.p),
                "16-bit, numpy": m,
            }[kind]
    return net


def rate(net: nn.Module, split: data.Split, batch: int, gen: torch.Generator) -> float:
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    net.train()
    idxs = data.batches(len(split.train_y), batch, gen)
    t0 = time.perf_counter()
    for idx in idxs:
        x = data.rotate(split.train_x[idx], 15, gen)
        loss = F.cross_entropy(net(x), split.train_y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return len(split.train_y) / (time.perf_counter() - t0)


ap = argparse.ArgumentParser()
ap.add_argument("--steps", type=int, default=60)
ap.add_argument("--repeats", type=int, default=3)
args = ap.parse_args()
train.keep_freed_memory()
config = spec.load_baseline("baseline-6")
batch = config.recipe.batch_size
split = data.make_split(data.load_mnist(download=False), "val", train_limit=args.steps * batch, eval_limit=1)
gen = torch.Generator().manual_seed(0)
kinds = ["torch", "float mask", "16-bit, torch", "16-bit, numpy"]
rates: dict[str, list[float]] = {k: [] for k in kinds}
for _ in range(args.repeats):
    for k in kinds:
        rates[k].append(rate(network(k, config), split, batch, gen))
base = statistics.mean(rates["torch"])
for k in kinds:
    mean = statistics.mean(rates[k])
    print(f"{k:16s} {mean:7,.0f} img/s  ({', '.join(f'{r:,.0f}' for r in rates[k])})  {mean / base:.2f}x")
