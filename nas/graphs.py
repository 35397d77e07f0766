"""CUDA graphs for the training step: one capture, one replay per batch.

An 8k-parameter CNN step is some 100 small kernels; launched one by one from Python, the
launches set the pace; replayed, the kernels themselves do (`benchmarks/gpu_profile.py` shows
both, docs/performance.md has the figures). `GraphedSteps` records the
whole step (gather the batch by index, forward, backward, optimizer step, accumulate loss and hits;
the rotation too where it runs per batch) once as a CUDA graph and replays it for every full batch
of an epoch; the host only copies the next batch's indices into place. What a
graph cannot hold runs eagerly with the same `step`: the first batches (warm-up: cuDNN's choices,
the optimizer's lazy state) and an epoch's short last batch. A learning rate that is a number is
baked into the captured optimizer kernels, so a new rate (StepLR) means a new capture, a few
milliseconds; a schedule that moves every step keeps its rate in a device tensor
(`train.make_optimizer(tensor_lr=True)`), filled before each replay, and is captured once.
Random numbers (dropout, rotation angles) come from the default CUDA generator, which graphs
advance on every replay.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

WARMUP = 3  # eager steps before the first capture, on a side stream (as torch's docs ask)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every group's learning rate: a number replaced, a tensor filled in place (no host sync)."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            with torch.no_grad():  # the tensor may require grad (SGD's sync-free path)
                group["lr"].fill_(lr)
        else:
            group["lr"] = lr


class GraphedSteps:
    def __init__(self, step: Callable[[torch.Tensor], None], optimizer: torch.optim.Optimizer, batch_size: int):
        """`step(idx)`: one optimizer step on the batch of training indices `idx` (grads already
        cleared); it must allocate nothing that outlives it but the optimizer's state."""
        self.step, self.optimizer, self.batch_size = step, optimizer, batch_size
        self.graph: torch.cuda.CUDAGraph | None = None
        self.lr: float | None = None
        self.idx: torch.Tensor | None = None
        self.eager_steps = 0

    def eager(self, idx: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.step(idx)
        self.eager_steps += 1

    def epoch(self, batches: list[torch.Tensor], lrs: list[float], on_step: Callable[[], None] | None = None) -> None:
        """Train on `batches` in order, batch i at learning rate lrs[i]: full batches replayed, the
        rest (and the warm-up) eagerly."""
        warm = max(0, WARMUP - self.eager_steps)
        if warm:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for idx, lr in zip(batches[:warm], lrs, strict=False):
                    set_lr(self.optimizer, lr)
                    self.eager(idx)
                    if on_step is not None:
                        on_step()
            torch.cuda.current_stream().wait_stream(side)
        for idx, lr in zip(batches[warm:], lrs[warm:], strict=True):
            set_lr(self.optimizer, lr)
            if len(idx) == self.batch_size and self.eager_steps >= WARMUP:
                if self.graph is None or self._new_rate():
                    self._capture(idx)
                self.idx.copy_(idx)
                self.graph.replay()
            else:
                self.eager(idx)
            if on_step is not None:
                on_step()

    def _new_rate(self) -> bool:
        """A number that changed since the capture; a tensor rate is the same tensor, refilled."""
        lr = self.optimizer.param_groups[0]["lr"]
        return lr is not self.lr if isinstance(lr, torch.Tensor) else lr != self.lr

    def _capture(self, idx: torch.Tensor) -> None:
        self.graph = None  # the old graph's memory goes back before the new one is recorded
        self.optimizer.zero_grad(set_to_none=True)  # grads are then allocated inside the graph
        self.idx = idx.clone()
        self.lr = self.optimizer.param_groups[0]["lr"]
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.step(self.idx)
        self.graph = graph
