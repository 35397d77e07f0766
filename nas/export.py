"""Export a confirmed configuration and its trained weights, usable without `nas`.

A folder gets: `config.json` (the one config schema), `weights.pt` (a state_dict from the
confirmation run, loadable with `torch.load(weights_only=True)`), `model.onnx`, `model.py` (the
network in plain PyTorch, the same modules in the same order, so the state_dict loads as is) and
`export.json` (where it came from and the test accuracy confirmation measured).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

from nas import NasError, __version__, data, spec, store, verdict
from nas.files import RESULTS_DIR, atomic, folder_name
from nas.model import build

STANDALONE = '''"""{title}

Plain PyTorch, no `nas` needed: the modules in the order `nas` built them, so the exported
state_dict loads as is.

    import torch, model
    net = model.build()
    net.load_state_dict(torch.load("weights.pt", weights_only=True))
    net.eval()
    logits = net(images)  # images: float N x 1 x 28 x 28, pixel / 255 then (x - {mean}) / {std}
"""

from torch import nn

MEAN, STD = {mean}, {std}  # MNIST normalisation used in training


def build() -> nn.Sequential:
    return nn.Sequential(
{modules}
    )
'''


class ExportError(NasError, ValueError):
    """The study has nothing to export with these settings; the message says why."""


def standalone_source(config: spec.Config, title: str) -> str:
    """model.py: each module's repr is a valid constructor call of the same module."""
    modules = "\n".join(f"        nn.{m!r}," for m in build(config))
    return STANDALONE.format(title=title, mean=data.MEAN, std=data.STD, modules=modules)


def write(out: Path, config: spec.Config, state_dict: dict, info: dict) -> Path:
    """Write the export folder (files appear complete: each is written then renamed)."""
    out.mkdir(parents=True, exist_ok=True)
    model = build(config).eval()
    model.load_state_dict(state_dict)
    title = (
        f"{config.name}: {info['params']:,} parameters, {info['macs']:,} MACs per image, exported by nas {__version__}"
    )
    atomic(out / "config.json", lambda p: p.write_text(config.to_json()))
    atomic(out / "weights.pt", lambda p: torch.save(model.state_dict(), p))
    atomic(out / "model.py", lambda p: p.write_text(standalone_source(config, title)))
    atomic(out / "export.json", lambda p: p.write_text(json.dumps(info, indent=2) + "\n"))
    atomic(out / "model.onnx", lambda p: _onnx(model, p))
    return out


def _onnx(model: torch.nn.Module, path: Path) -> None:
    example = torch.zeros(1, spec.IN_CHANNELS, spec.IMAGE_SIZE, spec.IMAGE_SIZE)
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,  # the TorchScript exporter: no onnxscript needed
    )


def load_model(folder: str | Path, seed: int | None = None) -> torch.nn.Module:
    """Rebuild a network from its folder, weights loaded, in eval mode: a `nas export` folder
    (weights.pt) or a `nas replay` / `nas train` run folder (weights-seed<N>.pt: `seed` picks one,
    needed when the run has several)."""
    folder = Path(folder)
    config = spec.load(folder / "config.json")
    if (folder / "weights.pt").exists() and seed is None:
        weights = folder / "weights.pt"
    else:
        seeds = sorted(int(p.stem.removeprefix("weights-seed")) for p in folder.glob("weights-seed*.pt"))
        if seed is None and len(seeds) != 1:
            raise ExportError(f"{folder} holds the weights of seeds {seeds or 'none'}: pass seed= one of them")
        if seed is not None and seed not in seeds:
            raise ExportError(f"{folder} has no weights for seed {seed} (seeds: {seeds or 'none'})")
        weights = folder / f"weights-seed{seeds[0] if seed is None else seed}.pt"
    model = build(config)
    model.load_state_dict(torch.load(weights, weights_only=True, map_location="cpu"))
    return model.eval()


@dataclass(frozen=True)
class Settings:
    study: str  # a confirmed search study
    out: str  # the folder to write
    rank: int = 1  # which confirmed configuration, in validation order
    seed: int | None = None  # whose weights; None: the seed with the median test accuracy
    storage: str | None = None  # None: the results folder's SQLite file
    results_dir: str = RESULTS_DIR  # holds artifacts/ (the stored weights)


def run(settings: Settings) -> dict:
    """Export the `rank`-th confirmed configuration (validation order, as confirmed) with the weights
    of one of its confirmation runs; returns what export.json says."""
    folder_name(settings.study, "--study")  # it names the exported config, which names a replay's folder
    url = settings.storage or store.default_storage(settings.results_dir)
    study = store.load_study(url, settings.study)  # a clear error for an unknown study or storage
    if store.confirmation_name(settings.study) not in optuna.get_all_study_names(store.storage_of(study)):
        raise ExportError(
            f"study {settings.study!r} has no confirmation yet: run `nas confirm --study {settings.study}`"
        )
    conf = store.load_stage(study)
    confirmed = [v for v in verdict.stored(study) if v.seeds_done]
    if not 1 <= settings.rank <= len(confirmed):
        raise ExportError(
            f"--rank must be between 1 and {len(confirmed)} (the confirmed configurations), got {settings.rank}"
        )
    v = confirmed[settings.rank - 1]
    runs = {
        t.user_attrs["seed"]: t
        for t in conf.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.user_attrs["source_trial"] == v.trial
    }
    t = runs[verdict.pick_seed({seed: r.value for seed, r in runs.items()}, settings.seed)]
    source = study.trials[v.trial]
    config = spec.from_dict(source.user_attrs["config"])
    history = t.user_attrs["history"]
    config = replace(
        config, recipe=replace(config.recipe, epochs=len(history)), name=f"{settings.study}-trial-{v.trial}"
    )
    info = {
        "study": settings.study,
        "trial": v.trial,
        "rank": settings.rank,
        "seed": t.user_attrs["seed"],
        "seeds_confirmed": sorted(runs),
        "test_acc_of_seeds": [runs[seed].value for seed in sorted(runs)],
        "params": spec.param_count(config),
        "macs": spec.macs(config),
        "receptive_field": spec.receptive_field(config),
        "val_acc": source.value,
        "test_acc": history[-1]["eval_acc"],
        "test_acc_per_epoch": [h["eval_acc"] for h in history],
        "nas_version": __version__,
    }
    write(Path(settings.out), config, store.load_weights(t, store.artifacts_folder(settings.results_dir)), info)
    return info
