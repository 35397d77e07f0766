"""train(config, split, seed) -> History: the hot loop, deterministic on CPU for a given seed.

Epoch order (canonical): set lr, train one epoch, evaluate, hand the epoch to `on_epoch`
(the search reports and prunes there; raising from it stops training), step the schedule.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from nas import NasError, data, spec
from nas.files import atomic
from nas.graphs import GraphedSteps, set_lr
from nas.model import build


@dataclass
class Epoch:
    epoch: int  # 1-based
    lr: float  # learning rate of the epoch's first optimizer step
    lr_last: float  # of its last step (the same as lr when the schedule moves once an epoch)
    train_loss: float  # mean cross-entropy over the epoch's training batches (with augmentation)
    train_acc: float  # percent correct on those batches, as the reference experiment measured it
    eval_loss: float  # on split.eval_name ("val" or "test")
    eval_acc: float  # percent
    seconds: float  # wall time of the epoch, evaluation included


@dataclass
class History:
    seed: int
    device: str
    eval_name: str
    loop: dict = field(default_factory=dict)  # how it trained: the resolved Loop (Loop.to_dict)
    epochs: list[Epoch] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)  # the epochs as dicts too


ROTATE_CHUNK = 16384  # images rotated at once by `epoch_rotation`


def pick_device(name: str = "auto") -> torch.device:
    """ "auto": CUDA if present, else Apple's MPS, else the CPU; otherwise the named device.
    Training on CUDA, cuDNN picks convolution algorithms by its more careful heuristics (mode B),
    which suit these tiny convolutions better (docs/performance.md): torch reads the variable when
    it first plans a convolution, after this; a value the user set wins."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        os.environ.setdefault("TORCH_CUDNN_USE_HEURISTIC_MODE_B", "1")
    return device


@functools.cache
def keep_freed_memory() -> None:
    """Process-wide: glibc hands freed blocks above its mmap threshold back to the OS, and every
    training step then faults the same megabytes in again (thousands of page faults per step on
    the CPU). Serve up to 32 MB blocks from the heap and keep up to 1 GB free there instead.
    Linux glibc only; elsewhere nothing happens."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD (glibc's maximum)


class DeviceError(NasError, ValueError):
    """A device that is unknown or not available here."""


def resolve_device(name: str) -> torch.device:
    """`pick_device(name)`, checked: the device exists here, and NAS_FUSED (read where the kernels
    are chosen, also in forked workers) has a meaning."""
    try:
        device = pick_device(name)
    except RuntimeError:
        raise DeviceError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda: no CUDA GPU is visible to torch here; use --device cpu or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("--device mps: Apple's MPS is not available here; use --device cpu or auto")
    if os.environ.get("NAS_FUSED", "1") not in ("0", "1"):
        raise DeviceError(
            f"NAS_FUSED={os.environ['NAS_FUSED']!r}: use 1 (the fused Triton kernels on CUDA, the default) "
            "or 0 (cuDNN's BatchNorm)"
        )
    return device


def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


@dataclass(frozen=True)
class Loop:
    """How the hot loop runs, which leaves what it computes unchanged (CPU results are the same
    bit for bit whatever the GPU options say). None: decided by the device (`resolve`);
    docs/performance.md has the figures behind each default."""

    graphs: bool | None = None  # replay each step as a CUDA graph (nas.graphs); None = on CUDA
    # every ReLU -> BatchNorm -> Dropout block as Triton kernels (nas.fused), a CUDA option (off CUDA
    # only under Triton's interpreter, TRITON_INTERPRET=1, as the tests run it); None = see `resolve`
    fused: bool | None = None
    compiled: bool = False  # the training forward pass through torch.compile (inductor, torch's random
    # numbers kept: dropout draws as in eager mode); its compile time outweighs its gain for a search's
    # many short-lived architectures
    bf16: bool = False  # autocast the forward pass to bfloat16 (a GPU option)
    # NHWC memory layout for model and batches; None = on a CPU running one torch thread (a `--jobs`
    # worker), where it is faster, and not on two threads, where BatchNorm's NHWC kernel scales badly
    channels_last: bool | None = None
    # rotate every training image once at the start of each epoch (a few large kernels; each image
    # still gets a fresh angle per epoch) instead of each batch inside the step (some 18 small kernels
    # a step); None = on CUDA, where the step's kernels set the pace; on the CPU the per-batch path
    # keeps recorded runs reproducible
    epoch_rotation: bool | None = None

    def resolve(self, device: torch.device) -> Loop:
        """Every option decided for `device`. Fused: on CUDA where Triton is installed, in CUDA graphs
        only (eager, Triton's launches cost more than the kernels save), unless an option the kernels
        do not serve is asked for: torch.compile, bf16 autocast (they take float32) or channels_last
        (they read NCHW), or the environment says NAS_FUSED=0 (the way back to cuDNN's BatchNorm from
        any nas command)."""
        if self.graphs and device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, not {device}")
        graphs = device.type == "cuda" if self.graphs is None else self.graphs
        channels_last = self.channels_last
        if channels_last is None:
            channels_last = device.type == "cpu" and torch.get_num_threads() == 1
        fused = self.fused
        if fused is None:
            plain = graphs and not (self.compiled or self.bf16 or channels_last) and os.environ.get("NAS_FUSED") != "0"
            fused = device.type == "cuda" and plain and triton_installed()
        if fused:
            if self.compiled:
                raise ValueError("choose one of fused and compiled")
            if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
                raise ValueError(f"fused kernels (Triton) need a CUDA device, not {device}")
        rotation = device.type == "cuda" if self.epoch_rotation is None else self.epoch_rotation
        return Loop(graphs, fused, self.compiled, self.bf16, channels_last, rotation)

    def to_dict(self) -> dict:
        """As a run's history records it."""
        return {
            "cuda_graphs": self.graphs,
            "fused": self.fused,
            "channels_last": self.channels_last,
            "bf16": self.bf16,
            "compiled": self.compiled,
            "epoch_rotation": self.epoch_rotation,
        }


def make_optimizer(
    model: torch.nn.Module, recipe: spec.Recipe, capturable: bool = False, tensor_lr: bool = False
) -> torch.optim.Optimizer:
    """`capturable`: the optimizer's state stays on the device, so its step can be a CUDA graph.
    `tensor_lr`: the learning rate is a one-element tensor on the parameters' device, filled in
    place every step, so a graph captured once reads each step's rate (a number would be baked
    into the captured kernels). SGD reads a tensor rate without a host sync only on its
    per-parameter path when the tensor requires grad (`addcmul_`; its foreach path calls .item())."""
    device = next(model.parameters()).device
    lr = torch.tensor(recipe.lr, device=device, requires_grad=recipe.optimizer == "sgd") if tensor_lr else recipe.lr
    if recipe.optimizer in ("adam", "adamw"):
        kind = torch.optim.AdamW if recipe.optimizer == "adamw" else torch.optim.Adam
        return kind(model.parameters(), lr=lr, weight_decay=recipe.weight_decay, capturable=capturable)
    return torch.optim.SGD(
        model.parameters(),
        lr=lr,
        momentum=recipe.momentum,
        nesterov=recipe.nesterov and recipe.momentum > 0,
        weight_decay=recipe.weight_decay,
        foreach=False if tensor_lr else None,
    )


def make_schedule(
    optimizer: torch.optim.Optimizer, recipe: spec.Recipe, total_steps: int | None = None
) -> torch.optim.lr_scheduler.LRScheduler:
    """torch's scheduler for the recipe over `total_steps` rates: one an optimizer step (the last
    step trains at the schedule's end), or by default one an epoch and one after the last epoch,
    the `lr_step = "epoch"` meaning. StepLR (always per epoch); OneCycle from lr / 10 up to `lr`
    over the first quarter, then linearly down to lr / 1000; cosine from `lr` to 0; linear from
    lr / 2 up to `lr` over the first 15%, then down to lr / 20,000."""
    total = total_steps or recipe.epochs + 1  # per epoch: the last step comes after the last epoch
    if recipe.schedule in ("onecycle", "linear"):
        linear = recipe.schedule == "linear"
        warm = 0.15 if linear else 0.25
        if warm * total == 1:  # the warm-up would end on step 0, where torch divides by zero (3 epochs)
            warm = 2 / total
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=recipe.lr, total_steps=total, pct_start=warm,
            div_factor=2 if linear else 10, final_div_factor=10_000 if linear else 100,
            anneal_strategy="linear", cycle_momentum=False,
        )  # fmt: skip
    if recipe.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total - 1)
    return torch.optim.lr_scheduler.StepLR(optimizer, recipe.step_size or 10**9, recipe.gamma)


def steps_per_epoch(n: int, batch_size: int) -> int:
    return -(-n // batch_size)  # the last batch may be short (data.batches)


def lr_values(recipe: spec.Recipe, steps: int, epochs: int | None = None) -> list[list[float]]:
    """The learning rate of every optimizer step, one list of `steps` per epoch, as torch's
    scheduler computes it: stepped once an epoch, or with `lr_step = "batch"` (not StepLR) after
    every step, so the run's last step trains at ~0. `epochs` past the recipe's (an override)
    continue the schedule where torch can and keep OneCycle's last rate. Computed ahead on a
    stand-in optimizer: the scheduler's arithmetic depends only on the learning rate, and the
    trainer then sets a plain number (or fills a device tensor, under CUDA graphs) each step."""
    stand_in = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=recipe.lr)
    per_batch = recipe.lr_per_step
    schedule = make_schedule(stand_in, recipe, recipe.epochs * steps if per_batch else None)
    ends = getattr(schedule, "total_steps", None)  # OneCycle refuses to step past its end

    def advance() -> None:
        stand_in.step()  # a no-op (no gradient); torch warns when a scheduler steps first
        if ends is None or schedule.last_epoch + 1 < ends:
            schedule.step()

    out = []
    for _ in range(max(epochs or 0, recipe.epochs)):
        epoch = []
        for _ in range(steps if per_batch else 1):
            epoch.append(stand_in.param_groups[0]["lr"])
            if per_batch:
                advance()
        out.append(epoch if per_batch else epoch * steps)
        if not per_batch:
            advance()
    return out


def averaged(model: torch.nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """An exponential moving average of the weights and of BatchNorm's running statistics, updated
    after every optimizer step; evaluations read it, the network stays the same."""
    swa = torch.optim.swa_utils
    return swa.AveragedModel(model, multi_avg_fn=swa.get_ema_multi_avg_fn(decay), use_buffers=True)


@torch.inference_mode()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2000):
    """Mean loss and percent accuracy; large batches, no autograd bookkeeping."""
    model.eval()
    loss, correct = torch.zeros((), device=x.device), torch.zeros((), device=x.device, dtype=torch.long)
    for i in range(0, len(y), batch_size):
        logits = model(x[i : i + batch_size])
        loss += F.cross_entropy(logits, y[i : i + batch_size], reduction="sum")
        correct += (logits.argmax(1) == y[i : i + batch_size]).sum()
    return loss.item() / len(y), 100.0 * correct.item() / len(y)  # one host sync per evaluation


def train(
    config: spec.Config,
    split: data.Split,
    seed: int,
    device: str | torch.device = "cpu",
    on_epoch: Callable[[Epoch], None] | None = None,
    on_step: Callable[[], None] | None = None,
    epochs: int | None = None,
    checkpoint: Path | None = None,
    loop: Loop = Loop(),
) -> tuple[torch.nn.Module, History]:
    """Train `config` on split.train_* and evaluate on split.eval_* after every epoch.
    `epochs` overrides the recipe's (the lr schedule still follows the recipe).
    `checkpoint`: a file written after every epoch (weights, optimizer, schedule, random states,
    history); when it exists, training resumes after its last epoch and ends exactly as an
    uninterrupted run would. `on_epoch` sees every epoch, the restored ones included.
    `loop`: how the loop runs on the device (Loop), which the history records."""
    device = torch.device(device)
    keep_freed_memory()
    recipe = config.recipe
    torch.manual_seed(seed)  # weights and dropout masks
    gen = torch.Generator(device=device).manual_seed(seed)  # shuffling and rotation angles
    model = build(config).to(device)
    loop = loop.resolve(device)
    layout = torch.channels_last if loop.channels_last else torch.contiguous_format
    model = model.to(memory_format=layout)
    forward = model
    if loop.fused:
        from nas.fused import Fused  # Triton: an optional dependency, imported only when asked for

        forward = Fused(model)
    if loop.compiled:  # torch's random numbers, not inductor's: dropout draws as in eager mode
        forward = torch.compile(model, options={"fallback_random": True})
    n = len(split.train_y)
    lrs = lr_values(recipe, steps_per_epoch(n, recipe.batch_size), epochs)
    # per-step rates under CUDA graphs: a device tensor the captured step reads (nas.graphs)
    optimizer = make_optimizer(model, recipe, capturable=loop.graphs, tensor_lr=loop.graphs and recipe.lr_per_step)
    ema = averaged(model, recipe.ema) if recipe.ema > 0 else None
    judged = model if ema is None else ema.module  # what every evaluation reads, and what train returns
    history = History(seed=seed, device=str(device), eval_name=split.eval_name, loop=loop.to_dict())
    start = 1
    if checkpoint is not None and Path(checkpoint).exists():
        start = _restore(torch.load(checkpoint, weights_only=True), model, optimizer, ema, gen, history) + 1
        for stats in history.epochs:
            if on_epoch is not None:
                on_epoch(stats)

    loss_sum = torch.zeros((), device=device)  # accumulated on the device: no host sync inside an epoch
    correct = torch.zeros((), device=device, dtype=torch.long)
    # augmentation draws: `gen` on the CPU; on a GPU the default generator, which CUDA graphs can advance
    draws = gen if device.type == "cpu" else None
    augmented = data.augments(recipe)
    rotated = torch.empty_like(split.train_x) if loop.epoch_rotation and augmented else None
    images = split.train_x if rotated is None else rotated  # what the steps gather their batches from

    def step(idx: torch.Tensor) -> None:
        """One optimizer step on the training images `idx` (the grads are already cleared)."""
        x, y = images[idx], split.train_y[idx]
        if augmented and rotated is None:
            x = data.augment(x, recipe, draws)
        with torch.autocast(device.type, torch.bfloat16, enabled=loop.bf16, cache_enabled=False):
            logits = forward(x.contiguous(memory_format=layout))
            loss = F.cross_entropy(logits, y, label_smoothing=recipe.label_smoothing)
        loss.backward()
        optimizer.step()
        loss_sum.add_(loss.detach() * len(y))
        correct.add_((logits.detach().argmax(1) == y).sum())

    def after_step() -> None:
        if ema is not None:  # outside any CUDA graph: AveragedModel's first update branches on the host
            ema.update_parameters(model)
        if on_step is not None:
            on_step()

    steps = GraphedSteps(step, optimizer, recipe.batch_size) if loop.graphs else None
    for epoch in range(start, (epochs or recipe.epochs) + 1):
        t0 = time.perf_counter()
        epoch_lrs = lrs[epoch - 1]
        model.train()
        loss_sum.zero_()
        correct.zero_()
        batches = data.batches(n, recipe.batch_size, gen)
        if rotated is not None:
            for i in range(0, n, ROTATE_CHUNK):  # in chunks: the sampling grid is 2 floats a pixel
                rotated[i : i + ROTATE_CHUNK] = data.augment(split.train_x[i : i + ROTATE_CHUNK], recipe, draws)
        if steps:
            steps.epoch(batches, epoch_lrs, after_step)
        else:
            for idx, lr in zip(batches, epoch_lrs, strict=True):
                set_lr(optimizer, lr)
                optimizer.zero_grad(set_to_none=True)
                step(idx)
                after_step()
        eval_loss, eval_acc = evaluate(judged, split.eval_x, split.eval_y)
        stats = Epoch(
            epoch=epoch,
            lr=epoch_lrs[0],
            lr_last=epoch_lrs[len(batches) - 1],
            train_loss=loss_sum.item() / n,
            train_acc=100.0 * correct.item() / n,
            eval_loss=eval_loss,
            eval_acc=eval_acc,
            seconds=time.perf_counter() - t0,
        )
        history.epochs.append(stats)
        if on_epoch is not None:
            on_epoch(stats)
        if checkpoint is not None:
            _save(Path(checkpoint), epoch, model, optimizer, ema, gen, history)
    return judged, history


def _save(path: Path, epoch: int, model, optimizer, ema, gen: torch.Generator, history: History) -> None:
    state = {
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "ema": None if ema is None else ema.state_dict(),  # the schedule is a function of the epoch
        "torch_rng": torch.get_rng_state(),  # dropout masks on the CPU
        "cuda_rng": torch.cuda.get_rng_state(gen.device) if gen.device.type == "cuda" else None,
        "gen": gen.get_state(),  # shuffling and rotation
        "history": [asdict(e) for e in history.epochs],
    }
    atomic(path, lambda p: torch.save(state, p))  # a crash mid-write leaves the previous checkpoint whole


def _restore(state: dict, model, optimizer, ema, gen: torch.Generator, history: History) -> int:
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if ema is not None:
        ema.load_state_dict(state["ema"])  # a checkpoint of an averaged run has one
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] is not None:
        torch.cuda.set_rng_state(state["cuda_rng"], gen.device)
    gen.set_state(state["gen"])
    history.epochs = [Epoch(**{"lr_last": e["lr"], **e}) for e in state["history"]]  # older: one rate an epoch
    return state["epoch"]
