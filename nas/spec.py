"""The config schema: one JSON value says everything needed to train a network.

A config is a list of layers (the network) and a recipe (how to train it). From a config alone,
with plain arithmetic and no torch, come its exact trainable-parameter count, its multiply-
accumulates per image, a per-layer summary, the receptive-field table in the reference's columns,
and the one-line descriptions reports print (`layers_line`, `recipe_line`).

Conventions (fixed once, used by baselines, trials, replays and exports alike):
- a conv has no bias; every conv but the output layer is followed by ReLU, BatchNorm, Dropout
  (the reference's order; `"order": "bn-relu"` puts BatchNorm first), so it owns 2 * out BatchNorm
  parameters (weight and bias);
- "sep" is a depthwise-separable conv: a k x k conv per input channel (groups = in), then a 1x1
  conv to `out` channels, then the same one block as a conv (the two convs have no norm between
  them): k*k*in + in*out weights where a full conv has k*k*in*out;
- the *output layer* is the last conv (GAP head) or the last fc (FC head): it has no ReLU, BN
  or dropout, and its width is the number of classes; a hidden fc is followed by ReLU;
- "pool" is a 2x2 max-pool with stride 2; "gap" averages the whole map to 1x1.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from importlib import resources
from pathlib import Path

from nas import NasError
from nas.files import MAX_NAME_BYTES, plain_name, read_text

IMAGE_SIZE = 28  # MNIST: 1 x 28 x 28
IN_CHANNELS = 1
CLASSES = 10
OPS = ("conv", "sep", "pool", "gap", "fc")
CONVS = ("conv", "sep")  # the ops with a kernel, padding, width and the block after them
ORDERS = ("relu-bn", "bn-relu")  # the block after a hidden conv: ReLU then BatchNorm, or the reverse
# the largest finite 32-bit float (numpy.finfo(numpy.float32).max, written out: the schema loads
# neither numpy nor torch): the trainer's tensors are float32, where a larger number is inf
FLOAT32_MAX = 3.4028234663852886e38
# counts that become memory or time, bounded where a config enters: a layer's channels (a batch of
# 128 maps of 1,024 channels at 28x28 is 400 MB), a batch (the 60,000 training images at most), epochs
MAX_WIDTH, MAX_BATCH, MAX_EPOCHS = 1024, 60_000, 1000


class SpecError(NasError, ValueError):
    """A config that does not follow the schema; the message names the field."""


@dataclass(frozen=True)
class Layer:
    op: str  # "conv" | "sep" | "pool" | "gap" | "fc"
    out: int | None = None  # output channels (conv, sep) or features (fc); None for pool/gap
    kernel: int = 3  # conv kernel side: 3 for a 3x3 conv, 1 for a 1x1 transition
    padding: int = 0  # conv zero-padding per side: 1 keeps a 3x3 conv's map size
    order: str = "relu-bn"  # the block after a hidden conv: "relu-bn" (the reference's) or "bn-relu"

    def to_dict(self) -> dict:
        if self.op in CONVS:
            d = {"op": self.op, "out": self.out, "kernel": self.kernel, "padding": self.padding}
            # written only when not the default, so that every config written before it reads the same
            return d if self.order == ORDERS[0] else {**d, "order": self.order}
        if self.op == "fc":
            return {"op": "fc", "out": self.out}
        return {"op": self.op}


@dataclass(frozen=True)
class Recipe:
    optimizer: str = "sgd"  # "sgd" | "adam" | "adamw"
    lr: float = 0.01  # initial learning rate (the peak for "onecycle")
    momentum: float = 0.9  # SGD momentum (ignored by adam and adamw)
    nesterov: bool = False  # SGD Nesterov momentum
    weight_decay: float = 0.0  # L2 penalty
    batch_size: int = 128  # images per optimizer step
    epochs: int = 15  # full passes over the training split
    schedule: str = "step"  # "step" (StepLR), "onecycle" (up to lr, then down), "cosine", "linear" (warm-up, then to 0)
    step_size: int | None = None  # StepLR: epochs between lr decays; None = constant lr
    gamma: float = 0.1  # StepLR: lr multiplier at each decay
    dropout: float = 0.0  # drop probability after every hidden conv
    rotation: float = 0.0  # random rotation, uniform in +-degrees, per training image
    translate: float = 0.0  # random shift, uniform in +-this fraction of the image side, per training image
    label_smoothing: float = 0.0  # of the training loss's targets (evaluation is unsmoothed)
    lr_step: str = "epoch"  # how often onecycle, cosine and linear move: once an "epoch" or every "batch" (to ~0)
    ema: float = 0.0  # decay per step of an exponential moving average of the weights, which is evaluated; 0 = off
    scale: float = 0.0  # random zoom, uniform in 1 +- this fraction, per training image
    brightness: float = 0.0  # random brightness factor, uniform in 1 +- this, per training image
    contrast: float = 0.0  # random contrast factor (blend with the image's mean), uniform in 1 +- this

    @property
    def lr_per_step(self) -> bool:
        """Whether the learning rate moves every optimizer step: StepLR counts epochs whatever
        `lr_step` says."""
        return self.lr_step == "batch" and self.schedule != "step"


@dataclass(frozen=True)
class Reported:
    """Numbers the reference experiment itself reported for a baseline (percent), shown beside ours."""

    params: int | None = None
    train_acc: float | None = None
    test_acc: float | None = None


@dataclass(frozen=True)
class Config:
    layers: tuple[Layer, ...]
    recipe: Recipe = field(default_factory=Recipe)
    name: str = ""  # short identifier, e.g. "baseline-6"
    description: str = ""  # what this network is and where it came from
    reported: Reported | None = None  # the reference's numbers, for baselines

    def to_dict(self) -> dict:
        d = {"name": self.name, "description": self.description}
        if self.reported is not None:
            d["reported"] = asdict(self.reported)
        d["layers"] = [layer.to_dict() for layer in self.layers]
        d["recipe"] = asdict(self.recipe)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"


# --------------------------------------------------------------------------- parsing


def _check_keys(d: object, allowed: set[str], where: str) -> dict:
    if not isinstance(d, dict):
        raise SpecError(f"{where}: expected an object, got {type(d).__name__}")
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise SpecError(f"{where}: unknown field {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
    return d


def _number(value, where: str, *, integer=False, lo=None, hi=None, lo_open=False, hi_open=False):
    """Every number of a config passes here: its type, then finiteness (in float32 too), then its range."""
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        kind = "an integer" if integer else "a number"
        raise SpecError(f"{where}: must be {kind}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):  # json reads NaN, Infinity, -Infinity
        raise SpecError(f"{where}: must be a finite number, got {value!r}")
    if not integer and abs(value) > FLOAT32_MAX:
        raise SpecError(f"{where}: must fit a 32-bit float (at most {FLOAT32_MAX:.2g}), got {value!r}")
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise SpecError(f"{where}: must be {'>' if lo_open else '>='} {lo}, got {value!r}")
    if hi is not None and (value >= hi if hi_open else value > hi):
        raise SpecError(f"{where}: must be {'<' if hi_open else '<='} {hi}, got {value!r}")
    return value


def _layer(d: object, where: str) -> Layer:
    if not isinstance(d, dict) or d.get("op") not in OPS:
        op = d.get("op") if isinstance(d, dict) else d
        raise SpecError(f"{where}.op: must be one of {', '.join(OPS)}, got {op!r}")
    op = d["op"]
    if op in CONVS:
        _check_keys(d, {"op", "out", "kernel", "padding", "order"}, where)
        # a 1x1 depthwise conv would only scale each channel: a separable conv's kernel is 3 or more
        kernel = _number(d.get("kernel", 3), f"{where}.kernel", integer=True, lo=1 if op == "conv" else 3)
        if kernel % 2 == 0:
            raise SpecError(f"{where}.kernel: must be odd, got {kernel}")
        padding = _number(d.get("padding", 0), f"{where}.padding", integer=True, lo=0, hi=kernel // 2)
        out = _number(d.get("out"), f"{where}.out", integer=True, lo=1, hi=MAX_WIDTH)
        order = d.get("order", ORDERS[0])
        if order not in ORDERS:
            raise SpecError(f"{where}.order: must be {' or '.join(map(repr, ORDERS))}, got {order!r}")
        return Layer(op, out, kernel, padding, order)
    if op == "fc":
        _check_keys(d, {"op", "out"}, where)
        return Layer("fc", _number(d.get("out"), f"{where}.out", integer=True, lo=1, hi=MAX_WIDTH))
    _check_keys(d, {"op"}, where)
    return Layer(op)


# The range of each numeric recipe field, as keywords of _number (bounds inclusive unless *_open).
RECIPE_RANGES = {
    "lr": {"lo": 0, "lo_open": True},
    "momentum": {"lo": 0, "hi": 1, "hi_open": True},
    "weight_decay": {"lo": 0},
    "batch_size": {"lo": 1, "hi": MAX_BATCH},
    "epochs": {"lo": 1, "hi": MAX_EPOCHS},
    "step_size": {"lo": 1, "hi": MAX_EPOCHS},
    "gamma": {"lo": 0, "hi": 1, "lo_open": True},
    "dropout": {"lo": 0, "hi": 1, "hi_open": True},
    "rotation": {"lo": 0, "hi": 180},
    "translate": {"lo": 0, "hi": 0.5, "hi_open": True},
    "label_smoothing": {"lo": 0, "hi": 1, "hi_open": True},
    "ema": {"lo": 0, "hi": 1, "hi_open": True},
    "scale": {"lo": 0, "hi": 0.5, "hi_open": True},
    "brightness": {"lo": 0, "hi": 1, "hi_open": True},
    "contrast": {"lo": 0, "hi": 1, "hi_open": True},
}
RECIPE_CHOICES = {
    "optimizer": ("sgd", "adam", "adamw"),
    "schedule": ("step", "onecycle", "cosine", "linear"),
    "lr_step": ("epoch", "batch"),
}


def _recipe(d: object, where: str) -> Recipe:
    """Each field is checked by its declared type (so a new field is checked as soon as it is
    declared): numbers by _number, finite and in RECIPE_RANGES; booleans must be true or false."""
    d = _check_keys(d, {f.name for f in fields(Recipe)}, where)
    r = Recipe(**d)
    for f in fields(Recipe):
        value, at = getattr(r, f.name), f"{where}.{f.name}"
        kind, optional = f.type.removesuffix(" | None"), f.type.endswith(" | None")
        if optional and value is None:
            continue
        if kind in ("int", "float"):
            _number(value, at, integer=kind == "int", **RECIPE_RANGES.get(f.name, {}))
        elif kind == "bool":
            if not isinstance(value, bool):
                raise SpecError(f"{at}: must be true or false, got {value!r}")
        elif kind == "str":
            choices = RECIPE_CHOICES.get(f.name)
            if choices and value not in choices:
                raise SpecError(f"{at}: must be {' or '.join(map(repr, choices))}, got {value!r}")
            _text(value, at)
        else:  # a field of a new type: teach this loop to check it
            raise TypeError(f"Recipe.{f.name}: no check for type {f.type}")
    return r


def _reported(d: object, where: str) -> Reported:
    d = _check_keys(d, {f.name for f in fields(Reported)}, where)
    if d.get("params") is not None:
        _number(d["params"], f"{where}.params", integer=True, lo=0)
    for k in ("train_acc", "test_acc"):
        if d.get(k) is not None:
            _number(d[k], f"{where}.{k}", lo=0, hi=100)
    return Reported(**d)


def _text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise SpecError(f"{where}: must be a string, got {value!r}")
    return value


def _name(value: object, where: str) -> str:
    """A config's name names its run folder (results/runs/<name>/): a plain folder name, or "" for none."""
    name = _text(value, where)
    if name and not plain_name(name):
        raise SpecError(
            f"{where}: must be a plain folder name (no slash, no leading dot, at most {MAX_NAME_BYTES} bytes), "
            f"got {name!r}"
        )
    return name


def from_dict(raw: object, where: str = "config") -> Config:
    """Parse and validate a config; every error names the offending field."""
    raw = _check_keys(raw, {"name", "description", "reported", "layers", "recipe"}, where)
    layers = raw.get("layers")
    if not isinstance(layers, list) or not layers:
        raise SpecError(f"{where}.layers: must be a non-empty list of layers")
    reported = raw.get("reported")
    config = Config(
        layers=tuple(_layer(x, f"{where}.layers[{i}]") for i, x in enumerate(layers)),
        recipe=_recipe(raw.get("recipe", {}), f"{where}.recipe"),
        name=_name(raw.get("name", ""), f"{where}.name"),
        description=_text(raw.get("description", ""), f"{where}.description"),
        reported=None if reported is None else _reported(reported, f"{where}.reported"),
    )
    trace(config, where)  # shape checks: raises SpecError where a layer does not fit
    return config


def load(path: str | Path) -> Config:
    """Read a config JSON file; a missing, unreadable or invalid file raises SpecError."""
    path = Path(path)
    text = read_text(path, "config", "JSON", SpecError)
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise SpecError(f"{path}: line {e.lineno}, column {e.colno}: invalid JSON: {e.msg}") from None
    except ValueError as e:  # an integer of more digits than Python converts (sys.get_int_max_str_digits)
        raise SpecError(f"{path}: invalid JSON: {e}") from None
    config = from_dict(d, where=str(path))
    return config if config.name else replace(config, name=path.stem)


# --------------------------------------------------------------------------- baselines


def baseline_names() -> list[str]:
    files = resources.files("nas") / "baselines"
    names = [p.name[: -len(".json")] for p in files.iterdir() if p.name.endswith(".json")]
    return sorted(names, key=lambda n: (n.split("-")[1], len(n), n))


def load_baseline(name: str) -> Config:
    names = baseline_names()
    if name not in names:
        raise SpecError(f"unknown baseline {name!r}; known: {', '.join(names)} (see `nas replay --list`)")
    text = (resources.files("nas") / "baselines" / f"{name}.json").read_text()
    return from_dict(json.loads(text), where=f"baseline {name}")


def expand(names: Iterable[str]) -> tuple[str, ...]:
    """`--enqueue` items with each folder replaced by its config files (*.json, by name): a
    folder of queued networks is given once, not file by file."""
    out = []
    for name in names:
        if Path(name).is_dir():
            files = sorted(str(f) for f in Path(name).glob("*.json"))
            if not files:
                raise SpecError(f"--enqueue {name}: a folder with no config files (*.json) in it")
            out += files
        else:
            out.append(name)
    return tuple(out)


def resolve(name_or_path: str) -> Config:
    """A baseline name or the path of a config file."""
    if name_or_path in baseline_names():
        return load_baseline(name_or_path)
    if name_or_path.endswith(".json") or Path(name_or_path).exists():
        return load(name_or_path)
    return load_baseline(name_or_path)  # raises the unknown-baseline error


# --------------------------------------------------------------------------- arithmetic


@dataclass(frozen=True)
class Row:
    """One layer traced through the network: shapes, parameters, MACs, receptive field."""

    index: int  # position in config.layers
    layer: Layer
    in_ch: int
    out_ch: int
    in_size: int  # feature-map side before the layer (1 for fc)
    out_size: int
    kernel: int  # spatial kernel side (pool 2, gap = in_size; 0 for fc)
    padding: int
    stride: int
    params: int  # trainable parameters, BatchNorm included
    macs: int  # multiply-accumulates per image
    jump_in: int
    jump_out: int
    rf_in: int
    rf_out: int
    is_output: bool


def output_index(layers: tuple[Layer, ...]) -> int:
    """The layer that produces the logits: the last conv, sep or fc."""
    return max(i for i, x in enumerate(layers) if x.op in (*CONVS, "fc"))


def trace(config: Config, where: str = "config") -> list[Row]:
    """Walk the layers; check that each fits its input; return one Row per layer."""
    layers = config.layers
    ops = [x.op for x in layers]
    if ops.count("gap") != 1:
        raise SpecError(f"{where}.layers: needs exactly one 'gap' layer, found {ops.count('gap')}")
    g = ops.index("gap")
    for i, op in enumerate(ops):
        if (i < g and op == "fc") or (i > g and op != "fc"):
            raise SpecError(f"{where}.layers[{i}]: '{op}' cannot come {'before' if i < g else 'after'} the gap layer")
    if not set(CONVS) & set(ops[:g]):
        raise SpecError(f"{where}.layers: needs at least one conv before the gap layer")
    out_i = output_index(layers)
    if layers[out_i].out != CLASSES:
        raise SpecError(
            f"{where}.layers[{out_i}].out: the output layer must have {CLASSES} outputs, got {layers[out_i].out}"
        )

    if layers[out_i].op in CONVS and layers[out_i].order != ORDERS[0]:
        raise SpecError(
            f"{where}.layers[{out_i}].order: the output layer has no BatchNorm or ReLU after it; give 'order' only "
            "to hidden convs"
        )
    rows, ch, size, jump, rf = [], IN_CHANNELS, IMAGE_SIZE, 1, 1
    for i, x in enumerate(layers):
        is_out = i == out_i
        if x.op in CONVS:
            k, p, s = x.kernel, x.padding, 1
            if size + 2 * p < k:
                raise SpecError(f"{where}.layers[{i}]: a {k}x{k} conv does not fit a {size}x{size} map")
            out_size, out_ch = size + 2 * p - k + 1, x.out
            weights = k * k * ch * out_ch if x.op == "conv" else k * k * ch + ch * out_ch  # sep: depthwise + 1x1
            params = weights + (0 if is_out else 2 * out_ch)
            macs = weights * out_size * out_size
        elif x.op == "pool":
            k, p, s = 2, 0, 2
            if size < 2:
                raise SpecError(f"{where}.layers[{i}]: cannot max-pool a {size}x{size} map")
            out_size, out_ch, params, macs = size // 2, ch, 0, 0
        elif x.op == "gap":
            k, p, s = size, 0, 1
            out_size, out_ch, params, macs = 1, ch, 0, 0
        else:  # fc
            k, p, s = 0, 0, 1
            out_size, out_ch = 1, x.out
            params, macs = ch * out_ch + out_ch, ch * out_ch
        jump_out = jump * s
        rf_out = rf + (k - 1) * jump if k else rf
        rows.append(Row(i, x, ch, out_ch, size, out_size, k, p, s, params, macs, jump, jump_out, rf, rf_out, is_out))
        ch, size, jump, rf = out_ch, out_size, jump_out, rf_out
    return rows


def param_count(config: Config) -> int:
    """Exact number of trainable parameters (equals sum(p.numel()) of the built module)."""
    return sum(r.params for r in trace(config))


def macs(config: Config) -> int:
    """Multiply-accumulates of one forward pass on one image (convs and fcs)."""
    return sum(r.macs for r in trace(config))


def receptive_field(config: Config) -> int:
    return trace(config)[-1].rf_out


RF_COLUMNS = (
    "Layer No.",
    "Operation",
    "Input Feat.",
    "Kernel Size",
    "Padding",
    "Stride",
    "Output Feat.",
    "Jump in",
    "Jump Out",
    "RF in",
    "RF Out",
)
_OP_NAMES = {"conv": "Conv2d", "sep": "SepConv2d", "pool": "MaxPool", "gap": "GAP"}


def rf_table(config: Config) -> list[tuple]:
    """The receptive-field table in the reference's columns: one row per spatial layer."""
    spatial = [r for r in trace(config) if r.layer.op != "fc"]
    return [
        (
            n,
            _OP_NAMES[r.layer.op],
            r.in_size,
            r.kernel,
            r.padding,
            r.stride,
            r.out_size,
            r.jump_in,
            r.jump_out,
            r.rf_in,
            r.rf_out,
        )
        for n, r in enumerate(spatial, start=1)
    ]


# --------------------------------------------------------------------------- a config in words


def layers_line(config: Config) -> str:
    """The layers in one line: "3x3 conv 8 pad 1, maxpool, 3x3 conv 16, ..., global avg pool"."""
    names = []
    for r in trace(config):
        x = r.layer
        if x.op in CONVS:
            kind = "conv" if x.op == "conv" else "separable conv"
            post = " BN first" if x.order == "bn-relu" and not r.is_output else ""
            names.append(f"{x.kernel}x{x.kernel} {kind} {x.out}" + (f" pad {x.padding}" if x.padding else "") + post)
        else:
            names.append({"pool": "maxpool", "gap": "global avg pool", "fc": f"linear {x.out}"}[x.op])
    return ", ".join(names)


def recipe_line(recipe: Recipe) -> str:
    """The recipe in one line, its rates to 3 significant digits (the config file keeps them whole)."""
    sched = f"StepLR {recipe.step_size}/{recipe.gamma:.3g}" if recipe.step_size else "constant lr"
    sched = sched if recipe.schedule == "step" else recipe.schedule + (" per step" if recipe.lr_per_step else "")
    optimizer = f"{recipe.optimizer}{' nesterov' if recipe.nesterov else ''} lr {recipe.lr:.3g}"
    if recipe.optimizer == "sgd":
        optimizer += f" momentum {recipe.momentum:.3g}"
    extras = [f"translate +-{recipe.translate:.3g}"] if recipe.translate else []
    extras += [f"weight decay {recipe.weight_decay:.3g}"] if recipe.weight_decay else []
    extras += [f"label smoothing {recipe.label_smoothing:.3g}"] if recipe.label_smoothing else []
    extras += [f"zoom +-{recipe.scale:.3g}"] if recipe.scale else []
    extras += [f"brightness +-{recipe.brightness:.3g}"] if recipe.brightness else []
    extras += [f"contrast +-{recipe.contrast:.3g}"] if recipe.contrast else []
    extras += [f"weight average (ema {recipe.ema:.4g})"] if recipe.ema else []
    return (
        f"{optimizer}, batch {recipe.batch_size}, {recipe.epochs} epochs, {sched}, dropout {recipe.dropout:.3g}, "
        f"rotation +-{recipe.rotation:.3g}" + "".join(f", {x}" for x in extras)
    )
