"""Confirmation: the top K distinct configurations of a search, by validation accuracy, retrained
on all 60,000 training images with N seeds each and evaluated on the test set every epoch.

The same machinery runs two more stages of `nas frontier`: "select" retrains configurations on the
search's own validation split with more seeds (choosing without the test set), and "fresh" tests a
chosen configuration on seeds that took no part in choosing it.

The units (configuration, seed) are the trials of a second study, "<study>-confirm", in the same
storage: they are queued once, each worker pops one at a time (the RDB storage hands a queued
trial to exactly one worker), a crashed unit is failed by the heartbeat and re-queued, and
re-running the command resumes. The verdicts (nas.verdict) are stored on the search study and
written as CSV.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import optuna
from optuna.trial import TrialState

import nas
from nas import NasError, data, report, spec, store, train, verdict, workers
from nas.events import ConfirmPlanned, UnitDone
from nas.files import RESULTS_DIR, folder_name, write_csv


class ConfirmError(NasError, ValueError):
    """Nothing to confirm, or settings that differ from the confirmation's; the message says why."""


@dataclass(frozen=True)
class Settings:
    study: str  # the search study
    storage: str  # its storage URL
    top: int = 3  # distinct configurations
    seeds: int = 5  # seeds per configuration: 0 .. seeds-1
    jobs: int = 1
    device: str = "auto"
    data_dir: str | None = None
    download: bool = True
    last_k: int = verdict.LAST_K
    threshold: float = verdict.THRESHOLD
    epochs: int | None = None  # override (quick runs)
    train_limit: int | None = None  # quick runs
    results_dir: str = RESULTS_DIR  # confirmation.csv under <study>/, each run's weights under artifacts/
    stage: str = "confirm"  # "confirm" and "fresh": the test set; "select": the search's validation split
    trials: tuple[int, ...] = ()  # the search trials to retrain, in this order; (): the `top` best
    first_seed: int = 0  # the units' seeds: first_seed .. first_seed + seeds - 1
    val_limit: int | None = None  # "select": the first N validation images, as the search had them

    @property
    def confirm_name(self) -> str:
        return store.confirmation_name(self.study, self.stage)

    @property
    def record(self) -> str:
        """The search study's user attribute holding this stage's verdicts."""
        return store.STAGES[self.stage].record

    @property
    def artifacts(self) -> str:
        return store.artifacts_folder(self.results_dir)


@dataclass(frozen=True)
class Outcome:
    verdicts: list[verdict.Verdict]
    path: Path  # confirmation.csv
    seconds: float
    settings: Settings


def run(settings: Settings, on_progress: Callable[[object], None] | None = None) -> Outcome:
    """Queue the units not yet done, train them in `settings.jobs` worker processes, judge, store and
    write the verdicts: what `nas confirm` does. Ctrl-C keeps the finished units, writes their
    verdicts (when there are any) and raises nas.Interrupted."""
    say = on_progress or (lambda event: None)
    folder_name(settings.study, "--study")  # nothing is written before these checks pass
    workers.check_jobs(settings.jobs)
    train.resolve_device(settings.device)
    data.load_mnist(settings.data_dir, download=settings.download)
    study, conf = open_confirm_study(settings)
    store.fail_dead_local_trials(conf)  # units left running by a killed run: failed and re-queued now
    units = set(queue_units(settings, study, conf))

    def finished() -> list[optuna.trial.FrozenTrial]:  # this confirmation's units done so far
        done = conf.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return [t for t in done if (t.params["source_trial"], t.params["seed"]) in units]

    seen = {t.number for t in finished()}
    say(
        ConfirmPlanned(
            settings.stage,
            settings.confirm_name,
            len(units),
            len(seen),
            len(units) // settings.seeds,
            settings.seeds,
            settings.train_limit or (50_000 if settings.stage == "select" else 60_000),
        )
    )
    waiting = len(conf.get_trials(deepcopy=False, states=(TrialState.WAITING,)))  # what the workers can pop
    procs = workers.start_workers(worker, settings, settings.jobs, waiting)
    t0 = time.time()

    def poll() -> None:
        for t in sorted((t for t in finished() if t.number not in seen), key=lambda t: t.datetime_complete):
            seen.add(t.number)
            p = t.params
            say(UnitDone(len(seen), len(units), p["source_trial"], p["seed"], t.value, time.time() - t0))

    try:
        workers.supervise(procs, poll)
    except KeyboardInterrupt:
        if finished():  # the runs finished so far; with none, the file of an earlier run stays as it was
            write_verdicts(settings, study, conf)
        raise nas.Interrupted(
            f"interrupted: {len(finished())} of {len(units)} {store.STAGES[settings.stage].runs} runs are done and "
            "kept; run the same command to resume"
        ) from None
    verdicts, path = write_verdicts(settings, study, conf)
    return Outcome(verdicts, path, time.time() - t0, settings)


def write_verdicts(settings: Settings, study: optuna.Study, conf: optuna.Study) -> tuple[list[verdict.Verdict], Path]:
    """Verdicts of the runs finished so far: stored on the study and written as CSV."""
    judged = verdicts(settings, study, conf)
    path = write_csv(
        report.confirmation_frame(judged), Path(settings.results_dir) / settings.study / f"{settings.record}.csv"
    )
    return judged, path


def top_configs(study: optuna.Study, top: int) -> list[tuple[int, spec.Config]]:
    """The K best completed trials by validation value whose configurations differ (name aside)."""
    done = sorted((t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))), key=lambda t: -t.value)
    seen, picked = set(), []
    for t in done:
        config = spec.from_dict(t.user_attrs["config"])
        key = json.dumps({"layers": [x.to_dict() for x in config.layers], "recipe": config.to_dict()["recipe"]})
        if key not in seen:
            seen.add(key)
            picked.append((t.number, config))
        if len(picked) == top:
            break
    return picked


def open_confirm_study(settings: Settings) -> tuple[optuna.Study, optuna.Study]:
    study = store.load_study(settings.storage, settings.study)
    confirm = optuna.create_study(
        study_name=settings.confirm_name,
        storage=store.storage_of(study),
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(),
        load_if_exists=True,
    )
    return study, confirm


def queue_units(settings: Settings, study: optuna.Study, confirm: optuna.Study) -> list[tuple[int, int]]:
    """Queue every (source trial, seed) unit not yet done, running or queued; returns all units."""
    with store.study_lock(confirm, settings.storage, settings.artifacts):  # other workers may queue at the same time
        return _queue_units(settings, study, confirm)


def picked(settings: Settings, study: optuna.Study) -> list[tuple[int, spec.Config]]:
    """The configurations this stage retrains: the given trials, or the `top` best by validation."""
    if not settings.trials:
        return top_configs(study, settings.top)
    return [(n, spec.from_dict(study.trials[n].user_attrs["config"])) for n in settings.trials]


def _queue_units(settings: Settings, study: optuna.Study, confirm: optuna.Study) -> list[tuple[int, int]]:
    chosen = picked(settings, study)
    if not chosen:
        raise ConfirmError(f"study {settings.study!r} has no completed trial to confirm yet")
    check_identity(settings, study, confirm)
    live = {
        (t.user_attrs.get("source_trial"), t.user_attrs.get("seed"))
        for t in confirm.get_trials(deepcopy=False)
        if t.state != TrialState.FAIL
    }
    seeds = range(settings.first_seed, settings.first_seed + settings.seeds)
    units = [(n, seed) for n, _ in chosen for seed in seeds]
    for n, seed in units:
        if (n, seed) not in live:
            confirm.enqueue_trial({"source_trial": n, "seed": seed}, user_attrs={"source_trial": n, "seed": seed})
    return units


def check_identity(settings: Settings, study: optuna.Study, confirm: optuna.Study) -> None:
    """Every unit of a confirmation trains with the same epochs and training images: the first run
    records them on the confirmation study, a later one with others is refused (its runs would be
    mixed into the same verdicts). A confirmation made before nas recorded them was made with its
    search's quick-run settings (`nas search` confirms with its own)."""
    want = {"epochs": settings.epochs, "train_limit": settings.train_limit}
    if settings.stage == "select":
        want["val_limit"] = settings.val_limit
    have = confirm.user_attrs.get("identity")
    if have is None and confirm.get_trials(deepcopy=False):
        made = study.user_attrs.get("settings", {})
        have = {k: made.get(k) for k in want}
    if have is not None and have != want:

        def options(d: dict) -> str:
            given = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in d.items() if v)
            return given or "neither --epochs nor --train-limit"

        raise ConfirmError(
            f"confirmation study {settings.confirm_name!r} was trained with {options(have)}, this command gives "
            f"{options(want)}: give the same to add seeds or configurations to it"
        )
    if "identity" not in confirm.user_attrs:
        confirm.set_user_attr("identity", want)


def worker(settings: Settings, threads: int | None = None) -> None:
    """Pop queued units until none is left; train each on the full training set, test every epoch."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study, confirm = open_confirm_study(settings)
    device = train.pick_device(settings.device)
    mnist = data.load_mnist(settings.data_dir, download=False)
    if settings.stage == "select":  # the search's own split: the choice never reads the test set
        split = data.make_split(
            mnist, "val", train_limit=settings.train_limit, eval_limit=settings.val_limit, device=device
        )
    else:
        split = data.make_split(mnist, "test", train_limit=settings.train_limit, device=device)
    sources = {t.number: t for t in study.get_trials(deepcopy=False)}

    def objective(trial: optuna.Trial) -> float:
        if "source_trial" not in trial.user_attrs:  # nothing queued: this worker is done
            trial.study.stop()
            raise optuna.TrialPruned("no unit left")
        store.mark_owner(trial)
        n = trial.suggest_int("source_trial", 0, 10**9)
        seed = trial.suggest_int("seed", 0, 10**6)
        config = spec.from_dict(sources[n].user_attrs["config"])
        if settings.epochs:
            config = replace(config, recipe=replace(config.recipe, epochs=settings.epochs))
        trial.set_user_attr("params", spec.param_count(config))
        history: list[dict] = []

        def on_epoch(e: train.Epoch) -> None:
            history.append(vars(e).copy())
            trial.set_user_attr("history", history)

        # a checkpoint per epoch: a unit whose worker died resumes where it stopped (on this machine)
        ckpt = Path(settings.artifacts) / "checkpoints" / f"{settings.confirm_name}-trial{n}-seed{seed}.pt"
        model, _ = train.train(config, split, seed, device, on_epoch=on_epoch, checkpoint=ckpt)
        store.save_weights(trial, model, settings.artifacts)
        ckpt.unlink(missing_ok=True)
        return history[-1]["eval_acc"]

    def stop_when_empty(study: optuna.Study, _trial) -> None:
        if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            study.stop()

    if confirm.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        confirm.optimize(objective, callbacks=[stop_when_empty], catch=(), gc_after_trial=False)


def verdicts(settings: Settings, study: optuna.Study, confirm: optuna.Study) -> list[verdict.Verdict]:
    """One verdict per confirmed configuration, in validation order; stored on the search study."""
    units: dict[int, list] = {}
    for t in confirm.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        units.setdefault(t.user_attrs["source_trial"], []).append(t)
    out = []
    seeds = range(settings.first_seed, settings.first_seed + settings.seeds)
    for n, config in picked(settings, study):
        runs = sorted(
            (t for t in units.get(n, []) if t.user_attrs["seed"] in seeds), key=lambda t: t.user_attrs["seed"]
        )
        per_seed = [
            verdict.SeedVerdict.judge(
                t.user_attrs["seed"],
                [h["eval_acc"] for h in t.user_attrs["history"]],
                settings.threshold,
                settings.last_k,
            )
            for t in runs
        ]
        val = study.trials[n].value
        out.append(verdict.Verdict(n, spec.param_count(config), spec.macs(config), val, settings.seeds, per_seed))
    record = {
        "top": settings.top,
        "seeds": settings.seeds,
        "last_k": settings.last_k,
        "threshold": settings.threshold,
        "verdicts": [v.to_dict() for v in out],
    }
    with store.study_lock(
        study, settings.storage, settings.artifacts
    ):  # other workers may write theirs at the same moment
        study.set_user_attr(settings.record, record)
    return out
