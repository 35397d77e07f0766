"""ReLU -> BatchNorm (training) -> Dropout, the block after every hidden conv, as four Triton
kernels (two forward, two backward) for CUDA.

Why: with CUDA graphs the step's kernels set the pace, and cuDNN's NCHW BatchNorm gives each
channel one block: the wide early layers (some 20 channels of 26 x 26) leave most of a large
GPU's multiprocessors idle (`benchmarks/gpu_profile.py` shows the share). Here every kernel runs
one program per (image, channel) row of H x W values, N x C programs:

  forward   1. row statistics of relu(x): mean and the sum of squared deviations (exact Welford
               merge later, no E[x^2] - E[x]^2 cancellation)
            2. each program merges its channel's N row statistics (mean, variance, as torch's
               training BatchNorm: biased for normalising, unbiased for the running variance),
               writes y = dropout(bn(relu(x))); image 0's programs update the running statistics
  backward  3. row sums of g and g * x_hat, g = the gradient reaching BatchNorm's output (dy
               through the dropout mask, which is regenerated from the seed, never stored)
            4. each program merges its channel's row sums and writes dx; image 0's programs
               write the weight and bias gradients

Every reduction is in a fixed order (no atomics): a run is deterministic for a given dropout seed.
Dropout draws from Triton's Philox (`tl.rand`) with a seed drawn from torch's CUDA generator per
call, so CUDA graphs replay with fresh masks. The module's parameters and buffers are the plain
BatchNorm2d's: state dicts, exports and evaluation are unchanged. Off CUDA it runs only under
Triton's interpreter (TRITON_INTERPRET=1, which the tests use).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import nn


@triton.jit
def _row(C, HW, BLOCK: tl.constexpr):
    """This program's row (n * C + c): its image n, channel c, offsets into x, which are inside."""
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    return row // C, row % C, row * HW + cols, cols < HW


@triton.jit
def _channel(ptr, c, N, C, BLOCK_N: tl.constexpr):
    """Channel c's N values in each half of a channel-major (2, C, N) buffer, and which are valid."""
    rows = tl.arange(0, BLOCK_N)
    valid = rows < N
    first = tl.load(ptr + c * N + rows, mask=valid, other=0.0)
    return first, tl.load(ptr + (C + c) * N + rows, mask=valid, other=0.0), valid


@triton.jit
def _dropout(v, seed_ptr, offs, p, DROPOUT: tl.constexpr):
    """v through dropout's mask (kept: v / (1 - p), else 0), drawn from the seed and offsets."""
    if DROPOUT:
        v = tl.where(tl.rand(tl.load(seed_ptr), offs) >= p, v / (1.0 - p), 0.0)
    return v


@triton.jit
def _row_stats(x_ptr, stats_ptr, N, C, HW, BLOCK: tl.constexpr):
    n, c, offs, inside = _row(C, HW, BLOCK)
    a = tl.maximum(tl.load(x_ptr + offs, mask=inside, other=0.0), 0.0)
    mean = tl.sum(a, 0) / HW
    d = tl.where(inside, a - mean, 0.0)
    tl.store(stats_ptr + c * N + n, mean)  # channel-major: a channel's N rows are contiguous
    tl.store(stats_ptr + (C + c) * N + n, tl.sum(d * d, 0))


@triton.jit
def _normalise(
    x_ptr, y_ptr, stats_ptr, w_ptr, b_ptr, rm_ptr, rv_ptr, saved_ptr, seed_ptr,
    N, C, HW, momentum, eps, p,
    BLOCK: tl.constexpr, BLOCK_N: tl.constexpr, DROPOUT: tl.constexpr,
):  # fmt: skip
    n, c, offs, inside = _row(C, HW, BLOCK)
    row_mean, row_m2, valid = _channel(stats_ptr, c, N, C, BLOCK_N)
    mean = tl.sum(row_mean, 0) / N
    spread = tl.where(valid, row_mean - mean, 0.0)
    count = N * HW
    var = (tl.sum(row_m2, 0) + HW * tl.sum(spread * spread, 0)) / count
    invstd = 1.0 / tl.sqrt(var + eps)
    scale = tl.load(w_ptr + c) * invstd
    a = tl.maximum(tl.load(x_ptr + offs, mask=inside, other=0.0), 0.0)
    y = (a - mean) * scale + tl.load(b_ptr + c)
    tl.store(y_ptr + offs, _dropout(y, seed_ptr, offs, p, DROPOUT), mask=inside)
    if n == 0:
        tl.store(saved_ptr + c, mean)
        tl.store(saved_ptr + C + c, invstd)
        tl.store(rm_ptr + c, (1.0 - momentum) * tl.load(rm_ptr + c) + momentum * mean)
        unbiased = var * count / (count - 1)
        tl.store(rv_ptr + c, (1.0 - momentum) * tl.load(rv_ptr + c) + momentum * unbiased)


@triton.jit
def _grad_rows(
    dy_ptr, x_ptr, saved_ptr, seed_ptr, sums_ptr, N, C, HW, p,
    BLOCK: tl.constexpr, DROPOUT: tl.constexpr,
):  # fmt: skip
    n, c, offs, inside = _row(C, HW, BLOCK)
    g = _dropout(tl.load(dy_ptr + offs, mask=inside, other=0.0), seed_ptr, offs, p, DROPOUT)
    a = tl.maximum(tl.load(x_ptr + offs, mask=inside, other=0.0), 0.0)
    x_hat = (a - tl.load(saved_ptr + c)) * tl.load(saved_ptr + C + c)
    tl.store(sums_ptr + c * N + n, tl.sum(g, 0))
    tl.store(sums_ptr + (C + c) * N + n, tl.sum(tl.where(inside, g * x_hat, 0.0), 0))


@triton.jit
def _grad_input(
    dy_ptr, x_ptr, dx_ptr, w_ptr, saved_ptr, seed_ptr, sums_ptr, dw_ptr, db_ptr, N, C, HW, p,
    BLOCK: tl.constexpr, BLOCK_N: tl.constexpr, DROPOUT: tl.constexpr,
):  # fmt: skip
    n, c, offs, inside = _row(C, HW, BLOCK)
    g_rows, gx_rows, _ = _channel(sums_ptr, c, N, C, BLOCK_N)
    g_sum, gx_sum = tl.sum(g_rows, 0), tl.sum(gx_rows, 0)
    mean, invstd = tl.load(saved_ptr + c), tl.load(saved_ptr + C + c)
    count = N * HW
    g = _dropout(tl.load(dy_ptr + offs, mask=inside, other=0.0), seed_ptr, offs, p, DROPOUT)
    x = tl.load(x_ptr + offs, mask=inside, other=0.0)
    x_hat = (tl.maximum(x, 0.0) - mean) * invstd
    da = tl.load(w_ptr + c) * invstd * (g - g_sum / count - x_hat * (gx_sum / count))
    tl.store(dx_ptr + offs, tl.where(x > 0.0, da, 0.0), mask=inside)
    if n == 0:
        tl.store(dw_ptr + c, gx_sum)
        tl.store(db_ptr + c, g_sum)


def _launch(n: int, hw: int) -> tuple[dict, dict]:
    """Launch options of the row kernels (a row of H x W values, a warp per 256 of them) and of
    the kernels that also merge a channel's N rows."""
    block = triton.next_power_of_2(hw)
    row = {"BLOCK": block, "num_warps": max(1, min(4, block // 256))}
    return row, {**row, "BLOCK_N": triton.next_power_of_2(n)}


class _ReluBatchNormDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum: float, eps: float, p: float):
        n, c, h, w = x.shape
        hw, grid = h * w, (n * c,)
        x = x.contiguous()
        stats = torch.empty(2, c, n, device=x.device)
        saved = torch.empty(2, c, device=x.device)  # mean, invstd
        seed = torch.randint(2**31 - 1, (1,), device=x.device, dtype=torch.int32)
        y = torch.empty_like(x)
        row, channel = _launch(n, hw)
        _row_stats[grid](x, stats, n, c, hw, **row)
        _normalise[grid](
            x, y, stats, weight, bias, running_mean, running_var, saved, seed,
            n, c, hw, momentum, eps, p, DROPOUT=p > 0, **channel,
        )  # fmt: skip
        ctx.save_for_backward(x, weight, saved, seed)
        ctx.p = p
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, saved, seed = ctx.saved_tensors
        n, c, h, w = x.shape
        hw, grid, p = h * w, (n * c,), ctx.p
        dy = dy.contiguous()
        sums = torch.empty(2, c, n, device=x.device)
        dx, dw, db = torch.empty_like(x), torch.empty_like(weight), torch.empty_like(weight)
        row, channel = _launch(n, hw)
        _grad_rows[grid](dy, x, saved, seed, sums, n, c, hw, p, DROPOUT=p > 0, **row)
        _grad_input[grid](dy, x, dx, weight, saved, seed, sums, dw, db, n, c, hw, p, DROPOUT=p > 0, **channel)
        return dx, dw, db, None, None, None, None, None


def relu_bn_dropout(x: torch.Tensor, bn: nn.BatchNorm2d, p: float) -> torch.Tensor:
    """dropout(bn(relu(x)), p) in training mode; bn's running statistics are updated."""
    if x.numel() >= 2**31 or x.dtype != torch.float32 or bn.momentum is None:
        raise ValueError(
            f"fused BatchNorm needs float32, under 2**31 values and a momentum: {x.dtype} {tuple(x.shape)}, {bn}"
        )
    bn.num_batches_tracked.add_(1)
    return _ReluBatchNormDropout.apply(x, bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.momentum, bn.eps, p)


class Fused(nn.Module):
    """Runs `model` (nas.model.build's nn.Sequential), each ReLU -> BatchNorm2d [-> Dropout] run
    fused while training; evaluation is `model`'s own forward. Holds `model`, no copy."""

    def __init__(self, model: nn.Sequential):
        super().__init__()
        self.model = model
        self.parts: list = []  # in order: a layer, or (BatchNorm2d, dropout p) for a fused block
        layers, i = list(model), 0
        while i < len(layers):
            if isinstance(layers[i], nn.ReLU) and i + 1 < len(layers) and isinstance(layers[i + 1], nn.BatchNorm2d):
                dropout = layers[i + 2] if i + 2 < len(layers) and isinstance(layers[i + 2], nn.Dropout) else None
                self.parts.append((layers[i + 1], dropout.p if dropout is not None else 0.0))
                i += 3 if dropout is not None else 2
            else:
                self.parts.append(layers[i])
                i += 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.model.training:
            return self.model(x)
        for part in self.parts:
            x = relu_bn_dropout(x, *part) if isinstance(part, tuple) else part(x)
        return x
