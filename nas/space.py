"""Search spaces: TOML files that give each dimension of the reference's family a range, and the one
function that turns a space into `trial.suggest_*` calls and a config.

The family (the reference's, generalised): `convs_before_pool` 3x3 convs (the first two padded when
`pad_first` = 1, giving RF 32 instead of 28), a 2x2 max-pool, an optional 1x1 `transition` conv,
`convs_after_pool` 3x3 convs, then the `head`: "conv" (the last 3x3 conv gives the 10 class maps,
then GAP, as the reference), "conv1x1" (a 1x1 conv to 10 maps, then GAP) or "fc" (GAP, then a linear
layer). Every conv width is drawn from `width`; the recipe dimensions are the recipe's fields.

A dimension is a constant (`pad_first = 0`), `{int = [lo, hi]}` (optional `step`),
`{float = [lo, hi]}` (optional `log = true`) or `{choices = [...]}`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import tomllib
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

from nas import NasError, spec
from nas.files import read_text

# dimension -> (kind of value, lowest allowed, highest allowed, allowed choices or None)
REFERENCE = {  # the reference's family: one max-pool (see the module's docstring)
    "convs_before_pool": (int, 1, 4, None),
    "pad_first": (int, 0, 1, None),
    "transition": (str, None, None, ("none", "1x1")),
    "transition_width": (int, 1, 256, None),
    "convs_after_pool": (int, 1, 6, None),
    "width": (int, 1, 256, None),
    "head": (str, None, None, ("conv", "conv1x1", "fc")),
}
STAGES = {  # the stages family (`family = "stages"`): see build_stages
    "stages": (int, 1, 3, None),
    "order": (str, None, None, spec.ORDERS),
    **{
        f"{dim}_{k}": bounds
        for k in (1, 2, 3)
        for dim, bounds in (
            ("transition", (str, None, None, ("none", "1x1"))),
            ("convs", (int, 1, 6, None)),
            ("width", (int, 1, 256, None)),
            ("pad", (int, 0, 1, None)),
            ("conv", (str, None, None, ("full", "separable"))),
        )
        if (dim, k) != ("transition", 1)  # the first stage has no pool before it
    },
    "head": (str, None, None, ("conv", "conv1x1", "fc")),
}
RECIPE = {
    "optimizer": (str, None, None, ("sgd", "nesterov", "adam", "adamw")),
    "lr": (float, 1e-6, 10.0, None),  # SGD's
    "adam_lr": (float, 1e-6, 10.0, None),  # Adam's and AdamW's
    "momentum": (float, 0.0, 0.999, None),
    "weight_decay": (float, 0.0, 0.1, None),
    "batch_size": (int, 8, 4096, None),
    "schedule": (str, None, None, ("step", "onecycle", "cosine", "linear")),
    "lr_step": (str, None, None, ("epoch", "batch")),
    "step_size": (int, 1, 100, None),
    "gamma": (float, 0.01, 1.0, None),
    "dropout": (float, 0.0, 0.9, None),
    "rotation": (float, 0.0, 180.0, None),
    "translate": (float, 0.0, 0.45, None),
    "label_smoothing": (float, 0.0, 0.5, None),
    "ema": (float, 0.0, 0.9999, None),
    "scale": (float, 0.0, 0.45, None),
    "brightness": (float, 0.0, 0.9, None),
    "contrast": (float, 0.0, 0.9, None),
}
FAMILIES = {"reference": {**REFERENCE, **RECIPE}, "stages": {**STAGES, **RECIPE}}  # in the order they are drawn
DIMENSIONS = FAMILIES["reference"]  # a space file's family unless it names another
# a space file may leave these out: each then keeps the value given here
OPTIONAL = {
    "adam_lr": 0.001,
    "schedule": "step",
    "translate": 0.0,
    "label_smoothing": 0.0,
    "lr_step": "epoch",
    "ema": 0.0,
    "scale": 0.0,
    "brightness": 0.0,
    "contrast": 0.0,
}
# a dimension drawn only when another one has one of these values (TPE's group decomposition
# learns each branch apart); otherwise the recipe's default stands
CONDITIONS = {
    "transition_width": ("transition", {"1x1"}),
    "momentum": ("optimizer", {"sgd", "nesterov"}),
    "lr": ("optimizer", {"sgd", "nesterov"}),
    "adam_lr": ("optimizer", {"adam", "adamw"}),
    "step_size": ("schedule", {"step"}),
    "gamma": ("schedule", {"step"}),
    "lr_step": ("schedule", {"onecycle", "cosine", "linear"}),  # StepLR counts epochs
    # a stage's dimensions, only for the stages the network has
    **{
        f"{dim}_{k}": ("stages", set(range(k, 4)))
        for k in (2, 3)
        for dim in ("transition", "convs", "width", "pad", "conv")
    },
}
TOP_LEVEL = {"description", "epochs", "family", "dimensions"}
SPACES_PACKAGE = "nas.spaces"


class SpaceError(NasError, ValueError):
    """A space file that cannot be used; the message names file, line and field."""


@dataclass(frozen=True)
class Dim:
    name: str
    kind: str  # "const" | "int" | "float" | "choices"
    low: float | int | None = None
    high: float | int | None = None
    step: int = 1
    log: bool = False
    choices: tuple = ()
    value: object = None  # for "const"

    def values(self) -> list:
        """Every value the dimension can take (ints and choices), for enumerating structures."""
        if self.kind == "const":
            return [self.value]
        if self.kind == "choices":
            return list(self.choices)
        if self.kind == "int":
            return list(range(self.low, self.high + 1, self.step))
        raise TypeError(f"{self.name} is continuous")


@dataclass(frozen=True)
class Space:
    name: str
    path: str  # where it was read from
    description: str
    epochs: int
    dims: dict[str, Dim]
    sha256: str  # of what the space samples (epochs, dimensions): a study records it, refuses another on resume
    family: str = "reference"  # "reference" (one max-pool) or "stages" (up to three stages)

    def describe(self, name: str) -> str:
        d = self.dims[name]
        if d.kind == "const":
            return f"{d.value!r}"
        if d.kind == "choices":
            return "{" + ", ".join(map(str, d.choices)) + "}"
        scale = " log" if d.log else ""
        return f"[{d.low}, {d.high}]" + (f" step {d.step}" if d.step != 1 else "") + scale


def _line_of(text: str, key: str) -> int | None:
    """The line where `key = ...` is written (TOML parsers keep no positions)."""
    for n, line in enumerate(text.splitlines(), start=1):
        if line.split("=", 1)[0].strip() == key:
            return n
    return None


def _dim(name: str, raw: object, where, family: str = "reference") -> Dim:
    kind, lo, hi, allowed = FAMILIES[family][name]

    def check(v):
        """Every value and bound of a space passes here: its type, finiteness, then its range."""
        if kind is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if not isinstance(v, kind) or isinstance(v, bool):
            raise where(name, f"expected {kind.__name__} values, got {v!r}")
        if isinstance(v, float) and not math.isfinite(v):  # TOML reads nan, inf, -inf
            raise where(name, f"must be a finite number, got {v!r}")
        if allowed is not None and v not in allowed:
            raise where(name, f"must be one of {', '.join(allowed)}, got {v!r}")
        if lo is not None and not lo <= v <= hi:
            raise where(name, f"{v!r} is out of range [{lo}, {hi}]")
        return v

    if not isinstance(raw, dict):
        return Dim(name, "const", value=check(raw))
    keys = set(raw)
    if keys == {"choices"}:
        if not isinstance(raw["choices"], list) or not raw["choices"]:
            raise where(name, "choices must be a non-empty list")
        choices = tuple(check(v) for v in raw["choices"])
        repeated = sorted({v for v in choices if choices.count(v) > 1}, key=str)
        if repeated:
            raise where(name, f"choices must differ, {repeated[0]!r} is given twice")
        return Dim(name, "choices", choices=choices)
    for k in ("int", "float"):
        if k in keys:
            extra = keys - {k, "step" if k == "int" else "log"}
            if extra:
                raise where(name, f"unknown key {sorted(extra)[0]!r} in {{{k} = ...}}")
            if kind.__name__ != k:
                raise where(name, f"is {kind.__name__}-valued: use {{{kind.__name__} = [lo, hi]}} or choices")
            bounds = raw[k]
            if not isinstance(bounds, list) or len(bounds) != 2:
                raise where(name, f"{k} needs [lo, hi], got {bounds!r}")
            low, high = (check(v) for v in bounds)
            if low > high:
                raise where(name, f"lo {low} is above hi {high}")
            step = raw.get("step", 1)
            if k == "int" and (not isinstance(step, int) or isinstance(step, bool) or step < 1):
                raise where(name, f"step must be a positive integer, got {step!r}")
            if k == "int" and (high - low) % step:  # optuna would warn and lower hi
                raise where(name, f"hi - lo must be a multiple of step {step}, got [{low}, {high}]")
            log = raw.get("log", False)
            if not isinstance(log, bool):
                raise where(name, f"log must be true or false, got {log!r}")
            if log and low <= 0:
                raise where(name, "a log scale needs lo > 0")
            return Dim(name, k, low, high, step=step, log=log)
    raise where(name, "expected a constant, {int = [lo, hi]}, {float = [lo, hi]} or {choices = [...]}")


def parse(text: str, path: str, name: str) -> Space:
    """Validate a space file's text; every error names the file, the line and the field."""

    def where(field, message):
        line = _line_of(text, field)
        return SpaceError(f"{path}{f':{line}' if line else ''}: {field}: {message}")

    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:  # "Unclosed array (at line 11, column 22)" -> path:11:22: ...
        where = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
        at = f":{where[1]}:{where[2]}" if where else ""
        reason = re.sub(r" \(at line .*\)$", "", str(e))
        raise SpaceError(f"{path}{at}: invalid TOML: {reason}") from None
    unknown = sorted(set(raw) - TOP_LEVEL)
    if unknown:
        raise where(unknown[0], f"unknown top-level field (allowed: {', '.join(sorted(TOP_LEVEL))})")
    epochs = raw.get("epochs", 15)
    if not isinstance(epochs, int) or isinstance(epochs, bool) or not 1 <= epochs <= 15:
        raise where("epochs", f"must be a whole number from 1 to 15, got {epochs!r}")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise where("description", f"must be a string, got {description!r}")
    family = raw.get("family", "reference")
    if family not in FAMILIES:
        raise where("family", f"must be one of {', '.join(FAMILIES)}, got {family!r}")
    known = FAMILIES[family]
    dims_raw = raw.get("dimensions", {})
    if not isinstance(dims_raw, dict):
        raise where("dimensions", f"must be a table ([dimensions] and one line per dimension), got {dims_raw!r}")
    missing = [k for k in known if k not in dims_raw and k not in OPTIONAL]
    if missing:
        raise SpaceError(f"{path}: [dimensions]: missing {', '.join(missing)} (give a constant to fix one)")
    for key in dims_raw:
        if key not in known:
            raise where(key, f"unknown dimension of the {family} family (known: {', '.join(known)})")
    dims = {k: _dim(k, dims_raw.get(k, OPTIONAL.get(k)), where, family) for k in known}
    # comments and the description do not change what is sampled: editing them keeps a study resumable
    # (the reference family is left out of the hash, so the spaces written before families hash the same)
    sampled = {"epochs": epochs, "dimensions": dims_raw} | ({"family": family} if family != "reference" else {})
    sha = hashlib.sha256(json.dumps(sampled, sort_keys=True).encode()).hexdigest()
    return Space(name, path, description, epochs, dims, sha, family)


def space_names() -> list[str]:
    files = resources.files(SPACES_PACKAGE)
    return sorted(p.name[: -len(".toml")] for p in files.iterdir() if p.name.endswith(".toml"))


def load(name_or_path: str) -> Space:
    """A space shipped with nas (by name) or a TOML file (by path)."""
    if name_or_path in space_names():
        res = resources.files(SPACES_PACKAGE) / f"{name_or_path}.toml"
        return parse(res.read_text(), f"{name_or_path}.toml", name_or_path)
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        return parse(read_text(path, "space", "TOML", SpaceError), str(path), path.stem)
    raise SpaceError(f"unknown space {name_or_path!r}; known: {', '.join(space_names())} (or give a .toml path)")


# --------------------------------------------------------------------------- sampling


def _suggest(trial, d: Dim, name: str | None = None):
    name = name or d.name
    if d.kind == "const":
        return d.value
    if d.kind == "choices":
        return trial.suggest_categorical(name, list(d.choices))
    if d.kind == "int":
        return trial.suggest_int(name, d.low, d.high, step=d.step)
    return trial.suggest_float(name, d.low, d.high, log=d.log)


def build_config(values: dict, widths: list[int], epochs: int, name: str = "") -> spec.Config:
    """The config of one point of the reference family: structural values `v` and the conv widths."""
    n1, n2, pad = values["convs_before_pool"], values["convs_after_pool"], values["pad_first"]
    layers = [{"op": "conv", "out": w, "padding": pad if i < 2 else 0} for i, w in enumerate(widths[:n1])]
    layers.append({"op": "pool"})
    if values["transition"] == "1x1":
        layers.append({"op": "conv", "out": values["transition_width"], "kernel": 1})
    layers += [{"op": "conv", "out": w} for w in widths[n1 : n1 + n2]]
    return _with_head(layers, values, epochs, name)


def build_stages(values: dict, epochs: int, name: str = "") -> spec.Config:
    """The config of one point of the stages family, the one the smallest public MNIST networks use:
    `stages` stages with a 2x2 max-pool between them (28 -> 14 -> 7 when padded); stage k opens,
    after its pool, with an optional 1x1 `transition_k` conv to its width, then has `convs_k` 3x3
    convs (`conv_k`: full or depthwise-separable; the network's first conv is always full, a
    depthwise conv of the one input channel being a single filter) of `width_k` channels, each
    padded by `pad_k`; then the head. `order` is the block after every hidden conv (relu-bn, the
    reference's; bn-relu, the 3,762-parameter network's)."""
    layers: list[dict] = []
    for k in range(1, values["stages"] + 1):
        width = values[f"width_{k}"]
        if k > 1:
            layers.append({"op": "pool"})
            if values[f"transition_{k}"] == "1x1":
                layers.append({"op": "conv", "out": width, "kernel": 1})
        for _ in range(values[f"convs_{k}"]):
            op = "sep" if values[f"conv_{k}"] == "separable" and layers else "conv"
            layers.append({"op": op, "out": width, "padding": values[f"pad_{k}"]})
    config = _with_head(layers, values, epochs, name, order=values["order"])
    return config


def _with_head(layers: list[dict], values: dict, epochs: int, name: str, order: str = "relu-bn") -> spec.Config:
    """`layers` (the convs and pools) with the head and the recipe: head "conv" makes the last conv
    the class layer; "conv1x1" adds a 1x1 conv to the classes, then GAP; "fc" GAP, then a linear layer.
    Every hidden conv gets the block `order` (the output layer has none)."""
    if order != "relu-bn":
        layers = [{**x, "order": order} if x["op"] in spec.CONVS else x for x in layers]
    if values["head"] == "conv":
        layers[-1] = {k: v for k, v in layers[-1].items() if k != "order"} | {"out": spec.CLASSES}
        layers.append({"op": "gap"})
    elif values["head"] == "conv1x1":
        layers += [{"op": "conv", "out": spec.CLASSES, "kernel": 1}, {"op": "gap"}]
    else:
        layers += [{"op": "gap"}, {"op": "fc", "out": spec.CLASSES}]
    return spec.from_dict({"name": name, "layers": layers, "recipe": recipe_of(values, epochs)})


RECIPE_KEYS = (
    "weight_decay",
    "batch_size",
    "dropout",
    "rotation",
    "translate",
    "label_smoothing",
    "schedule",
    "lr_step",
    "ema",
    "scale",
    "brightness",
    "contrast",
)


def recipe_of(values: dict, epochs: int) -> dict:
    """The recipe of a point of the space (the space's optimizer "nesterov" is SGD with Nesterov
    momentum; Adam and AdamW draw their learning rate from `adam_lr`)."""
    optimizer = values["optimizer"]
    sgd = optimizer in ("sgd", "nesterov")
    r = {k: values.get(k, OPTIONAL.get(k)) for k in RECIPE_KEYS}
    r.update(optimizer="sgd" if sgd else optimizer, nesterov=optimizer == "nesterov", epochs=epochs)
    r.update(
        lr=values["lr"] if sgd else values.get("adam_lr", OPTIONAL["adam_lr"]), momentum=values.get("momentum", 0.0)
    )
    if r["schedule"] == "step":
        r.update(step_size=values["step_size"], gamma=values["gamma"])
    return r


def values_of(recipe: spec.Recipe) -> dict:
    """The space's recipe values that give `recipe` (the inverse of `recipe_of`, for queueing baselines)."""
    optimizer = "nesterov" if recipe.optimizer == "sgd" and recipe.nesterov else recipe.optimizer
    v = {k: getattr(recipe, k) for k in RECIPE_KEYS}
    v.update(optimizer=optimizer, momentum=recipe.momentum)
    v["lr" if recipe.optimizer == "sgd" else "adam_lr"] = recipe.lr
    if recipe.schedule == "step":
        v.update(step_size=recipe.step_size, gamma=recipe.gamma)
    return {k: val for k, val in v.items() if active(k, v)}


def active(name: str, values: dict) -> bool:
    """Whether dimension `name` is drawn, given the values drawn before it."""
    if name not in CONDITIONS:
        return True
    parent, when = CONDITIONS[name]
    return values.get(parent, OPTIONAL.get(parent)) in when


def n_widths(values: dict) -> int:
    """Conv widths to draw: every 3x3 conv, less the last one when it is the class layer."""
    return values["convs_before_pool"] + values["convs_after_pool"] - (1 if values["head"] == "conv" else 0)


def suggest(trial, space: Space) -> spec.Config:
    """Every suggest_* of the search in one place: structure first, then widths, then recipe (in the
    stages family each stage's width is a dimension of its own, drawn in order)."""
    v = {}
    stages = space.family == "stages"
    for name, d in space.dims.items():
        if (stages or name != "width") and active(name, v):
            v[name] = _suggest(trial, d)
    v.setdefault("momentum", 0.0)
    if stages:
        return build_stages(v, space.epochs, name=f"trial-{trial.number}")
    v.setdefault("transition_width", None)
    widths = [_suggest(trial, space.dims["width"], f"width_{i + 1}") for i in range(n_widths(v))]
    widths.append(spec.CLASSES)  # the class layer, used only by the "conv" head
    return build_config(v, widths, space.epochs, name=f"trial-{trial.number}")


def _lowest(d: Dim):
    return d.value if d.kind == "const" else d.low if d.kind in ("int", "float") else d.choices[0]


def smallest(space: Space) -> tuple[int, spec.Config]:
    """The smallest model the space can produce. Parameters grow with every width and every conv,
    and do not depend on padding or the block's order, so the smallest has every width and conv
    count at its minimum, the most padding (which fits best) and the first order; the rest of the
    structure is enumerated."""
    if space.family == "stages":
        fixed = {k: _lowest(d) for k, d in space.dims.items()}
        fixed.update({k: max(d.values()) for k, d in space.dims.items() if k.startswith("pad_")})
        structural = ["stages", "head"] + [k for k in space.dims if k.startswith(("transition_", "conv_"))]

        def make(v):
            return build_stages(v, space.epochs)
    else:
        structural = ["convs_before_pool", "pad_first", "transition", "convs_after_pool", "head"]
        fixed = {k: _lowest(d) for k, d in space.dims.items()}
        fixed["transition_width"] = min(space.dims["transition_width"].values())
        w_min = min(space.dims["width"].values())

        def make(v):
            return build_config(v, [w_min] * n_widths(v) + [spec.CLASSES], space.epochs)

    best = None
    for combo in itertools.product(*(space.dims[k].values() for k in structural)):
        try:
            config = make({**fixed, **dict(zip(structural, combo, strict=True))})
        except spec.SpecError:
            continue  # a structure that does not fit 28x28
        n = spec.param_count(config)
        if best is None or n < best[0]:
            best = (n, config)
    if best is None:
        raise SpaceError(f"{space.path}: no structure of this space fits a 28x28 image")
    return best


# --------------------------------------------------------------------------- configs back to points


def space_params(config: spec.Config, sp: Space) -> dict | None:
    """The space's parameters that rebuild `config` exactly, or None when it is outside the space:
    its structure is read back, rebuilt and compared, and every value must be one the space draws."""
    r = config.recipe
    if r.schedule == "step" and r.step_size is None:
        return None
    try:
        v, rebuilt = (_stages_point if sp.family == "stages" else _reference_point)(config, sp)
    except (spec.SpecError, KeyError, IndexError, ValueError):
        return None
    if rebuilt.layers != config.layers or rebuilt.recipe != replace(r, epochs=rebuilt.recipe.epochs):
        return None
    params = {k: val for k, val in v.items() if val is not None}
    dim = (lambda k: k) if sp.family == "stages" else (lambda k: "width" if k.startswith("width_") else k)
    if not all(_inside(sp.dims[dim(k)], val) for k, val in params.items()):
        return None
    return {k: val for k, val in params.items() if sp.dims[dim(k)].kind != "const"}


def _reference_point(config: spec.Config, sp: Space) -> tuple[dict, spec.Config]:
    layers = config.layers
    ops = [x.op for x in layers]
    if ops.count("pool") != 1 or "sep" in ops:
        raise ValueError("not of the reference family")
    p = ops.index("pool")
    after = list(layers[p + 1 : ops.index("gap")])
    v = {"convs_before_pool": p, "pad_first": layers[0].padding, "transition": "none", "transition_width": None}
    if after and after[0].kernel == 1:
        v.update(transition="1x1", transition_width=after.pop(0).out)
    if ops[-1] == "fc":
        v["head"] = "fc"
    elif after[-1].kernel == 1:
        v["head"], after = "conv1x1", after[:-1]
    else:
        v["head"] = "conv"
    v["convs_after_pool"] = len(after)
    widths = [x.out for x in layers[:p]] + [x.out for x in after]
    widths = widths[:-1] if v["head"] == "conv" else widths
    v.update(values_of(config.recipe))
    rebuilt = build_config(v, [*widths, spec.CLASSES], config.recipe.epochs)
    v.update({f"width_{i + 1}": w for i, w in enumerate(widths)})
    return v, rebuilt


def _stages_point(config: spec.Config, sp: Space) -> tuple[dict, spec.Config]:
    layers = list(config.layers[: [x.op for x in config.layers].index("gap")])
    hidden = [x for x in layers[:-1] if x.op in spec.CONVS]
    v = {"order": hidden[0].order if hidden else _lowest(sp.dims["order"])}
    if config.layers[-1].op == "fc":
        v["head"] = "fc"
    elif layers[-1].kernel == 1:
        v["head"], layers = "conv1x1", layers[:-1]
    else:
        v["head"] = "conv"
    stages, stage = [], []
    for x in layers:
        if x.op == "pool":
            stages.append(stage)
            stage = []
        else:
            stage.append(x)
    stages.append(stage)
    v["stages"] = len(stages)
    for k, stage in enumerate(stages, start=1):
        if k > 1:
            v[f"transition_{k}"] = "1x1" if stage and stage[0].kernel == 1 else "none"
            width = stage.pop(0).out if v[f"transition_{k}"] == "1x1" else None
        else:
            width = None
        widths = [x.out for x in stage]
        if v["head"] == "conv" and k == len(stages):
            widths = widths[:-1]  # the class layer
        # a stage whose only conv is the class layer uses its width only for its transition, if any
        v[f"width_{k}"] = widths[0] if widths else width if width is not None else _lowest(sp.dims[f"width_{k}"])
        v[f"convs_{k}"] = len(stage)
        v[f"pad_{k}"] = stage[0].padding
        v[f"conv_{k}"] = "separable" if any(x.op == "sep" for x in stage) else "full"
    v.update(values_of(config.recipe))
    return v, build_stages(v, config.recipe.epochs)


def _inside(d: Dim, value) -> bool:
    if d.kind == "const":
        return d.value == value
    if d.kind == "choices":
        return value in d.choices
    return d.low <= value <= d.high
