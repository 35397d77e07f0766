"""Replay a config (a reference baseline, a config file, a study's trial) over several seeds: train
on all 60,000 training images, evaluate on the test set every epoch, judge each run by the
consistency rule (nas.verdict), and write the evidence to a new folder."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import torch

from nas import NasError, data, spec, store, train, verdict
from nas.events import EpochDone, ReplayStarted, SeedDone, SeedStarted, Step
from nas.files import RESULTS_DIR, atomic, folder_name, provenance, write_csv, write_text


class ReplayError(NasError, ValueError):
    """Settings a replay cannot run with; the message says why."""


@dataclass(frozen=True)
class Settings:
    seeds: int = 1  # runs with seeds seed, seed + 1, ...
    seed: int = 0
    epochs: int | None = None  # None: the recipe's
    last_k: int = verdict.LAST_K
    threshold: float = verdict.THRESHOLD
    train_limit: int | None = None  # first N training images (quick checks)
    device: str = "auto"
    data_dir: str | None = None
    download: bool = True
    results_dir: str = RESULTS_DIR


@dataclass(frozen=True)
class Outcome:
    config: spec.Config
    verdicts: list[verdict.SeedVerdict]
    folder: Path
    settings: Settings


# --------------------------------------------------------------------------- the run


def run_dir(results_dir: str | Path, config: spec.Config, is_baseline: bool) -> Path:
    """results/baselines/<name>/<UTC time>/ for a baseline, results/runs/<name>/<UTC time>/ else:
    every run gets a new folder, so no run ever overwrites another's evidence."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(results_dir) / ("baselines" if is_baseline else "runs") / (config.name or "config") / stamp
    try:
        out.mkdir(parents=True, exist_ok=False)
    except OSError as e:
        raise OSError(f"cannot create results folder {out}: {e.strerror}; pass --results-dir DIR") from None
    return out


def run(
    config: spec.Config,
    settings: Settings,
    is_baseline: bool = False,
    on_progress: Callable[[object], None] | None = None,
) -> Outcome:
    """Train `config` once per seed; after every seed write run.json, history.csv, config.json and
    the seed's final weights (weights-seed{N}.pt, a state_dict of nas.model.build(config.json)),
    so an interrupted replay keeps the seeds it finished and a folder is never half a run."""
    say = on_progress or (lambda event: None)
    if not 0 < settings.threshold <= 100:  # NaN fails this too
        raise ReplayError(f"--threshold must be a test accuracy in percent (0-100], got {settings.threshold}")
    device = train.resolve_device(settings.device)
    mnist = data.load_mnist(settings.data_dir, download=settings.download)
    out = run_dir(settings.results_dir, config, is_baseline)
    say(ReplayStarted(config, str(device), out))
    try:
        verdicts = _replay(config, settings, device, mnist, out, say)
    finally:
        if not any(out.iterdir()):  # stopped before the first seed finished: leave no empty folder
            out.rmdir()
    return Outcome(config, verdicts, out, settings)


def _replay(config: spec.Config, settings: Settings, device, mnist: dict, out: Path, say) -> list[verdict.SeedVerdict]:
    split = data.make_split(mnist, evaluate_on="test", train_limit=settings.train_limit, device=device)
    n_epochs = settings.epochs or config.recipe.epochs
    steps = train.steps_per_epoch(len(split.train_y), config.recipe.batch_size) * n_epochs
    seeds = list(range(settings.seed, settings.seed + settings.seeds))
    record = {
        "config": config.to_dict(),
        "params": spec.param_count(config),
        "macs": spec.macs(config),
        "receptive_field": spec.receptive_field(config),
        "epochs": n_epochs,
        "seeds": seeds,
        "last_k": settings.last_k,
        "threshold": settings.threshold,
        "train_limit": settings.train_limit,
        "provenance": provenance(device),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "runs": [],
    }
    verdicts, rows, step = [], [], Step()
    for seed in seeds:
        say(SeedStarted(seed, steps))
        model, history = train.train(
            config,
            split,
            seed,
            device,
            epochs=n_epochs,
            on_step=lambda: say(step),
            on_epoch=lambda e, seed=seed: say(EpochDone(seed, e)),
        )
        accuracy = [e.eval_acc for e in history.epochs]
        best_train = max(e.train_acc for e in history.epochs)
        verdicts.append(verdict.SeedVerdict.judge(seed, accuracy, settings.threshold, settings.last_k, best_train))
        say(SeedDone(verdicts[-1]))
        record["runs"].append({**history.to_dict(), "verdict": verdicts[-1].to_dict()})
        rows += [{"seed": seed, **vars(e)} for e in history.epochs]
        record["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        atomic(out / f"weights-seed{seed}.pt", lambda p, m=model: torch.save(m.cpu().state_dict(), p))
        write_text(out / "config.json", json.dumps(config.to_dict(), indent=2) + "\n")
        write_text(out / "run.json", json.dumps(record, indent=2) + "\n")
        frame = pd.DataFrame(rows).rename(columns={"eval_loss": "test_loss", "eval_acc": "test_acc"})
        write_csv(frame, out / "history.csv")
    return verdicts


def trial_config(storage: str, study_name: str, number: int) -> spec.Config:
    """The config of trial `number` of a study, named "<study>-trial-<number>" (`nas train --trial`)."""
    folder_name(study_name, "--study")  # the config's name names the run's folder
    study = store.load_study(storage, study_name)
    trials = {t.number: t for t in study.get_trials(deepcopy=False) if "config" in t.user_attrs}
    if number not in trials:
        raise store.StorageError(
            f"study {study_name!r} has no trial {number} with a config; trials 0-{len(study.trials) - 1}"
        )
    return replace(spec.from_dict(trials[number].user_attrs["config"]), name=f"{study_name}-trial-{number}")
