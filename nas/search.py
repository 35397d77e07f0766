"""A budget-constrained search: the checks that run before anything is written, and `run`, which
opens the study (nas.study: its settings, sampler and pruner), trains the trials in worker
processes (nas.objective, nas.workers), writes the leaderboard and hands over to the
confirmation (nas.confirm). The storage it lives in: nas.store.

Counting rule: `trials` is N *trained* trials (completed, or pruned by the pruner after training
started). A sample at or over the budget is recorded as PRUNED with the user attribute
`infeasible` before any training, so TPE's `constraints_func` learns from it and it costs no
training time; it does not count. Each worker claims a training slot under the study's lock before
it trains, so the workers never train more than N trials between them.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch

import nas
from nas import confirm, data, objective, report, space, spec, store, train, workers
from nas.events import Estimate, SearchFinished, SearchPlanned, SearchStatus
from nas.files import folder_name
from nas.study import SearchError, Settings, open_study


@dataclass(frozen=True)
class Outcome:
    study: optuna.Study
    finished: SearchFinished
    confirmation: object | None  # confirm.Outcome, when the search confirmed


# --------------------------------------------------------------------------- the study


# share of epochs each pruner saved on the side-by-side small search of docs/search.md (20 trials, 8 epochs)
MEASURED_SAVING = {"hyperband": 0.62, "median": 0.28, "none": 0.0}


# --------------------------------------------------------------------------- the run


def run(settings: Settings, on_progress: Callable[[object], None] | None = None, worker=None) -> Outcome:
    """The search, then (with `settings.confirm`) its confirmation: what `nas search` does. Resumes the
    study when it exists; Ctrl-C stops the workers, keeps every finished trial and raises
    nas.Interrupted. `on_progress` receives the events above (and nas.confirm's); `worker` is the
    worker processes' entry point (default nas.objective.worker)."""
    say = on_progress or (lambda event: None)
    sp = check(settings)  # nothing is written before these checks pass
    device = train.resolve_device(settings.device)
    mnist = data.load_mnist(settings.data_dir, download=settings.download)
    study = open_study(settings, sp)
    failed = store.fail_dead_local_trials(study)
    queued = objective.enqueue(study, sp, settings)
    kept = store.counts(study)["trained"]
    remaining = max(0, settings.trials - kept)
    estimate = None
    if remaining:
        workers.start_server()  # its imports overlap the estimate
        epoch_s, epochs = estimate_epoch_seconds(settings, sp, mnist, device), settings.epochs or sp.epochs
        estimate = plan(epoch_s, epochs, remaining, settings.jobs, settings.pruner)
    url = store.mask(settings.storage_url)
    say(SearchPlanned(settings.study_name, url, sp, settings, str(device), kept, failed, queued, remaining, estimate))
    procs = workers.start_workers(worker or objective.worker, settings, settings.jobs, remaining) if remaining else []
    t0 = time.time()

    def status() -> None:
        store.fail_dead_local_trials(study)  # a worker killed (OOM, say): its trial is retried by the others now
        c = store.counts(study)
        done, elapsed = c["trained"] - kept, time.time() - t0
        eta = elapsed / done * (settings.trials - c["trained"]) if done > 0 else estimate and estimate.without_pruning
        say(SearchStatus(c, best_trial(study), settings.trials, elapsed, eta))

    path = Path(settings.results_dir) / settings.study_name / "leaderboard.csv"
    try:
        workers.supervise(procs, status)
    except KeyboardInterrupt:
        report.write_leaderboard(study, path)
        raise nas.Interrupted(
            f"interrupted: {store.counts(study)['trained']} trained trials are kept in the study "
            f"(leaderboard: {path}); run the same command to resume"
        ) from None
    frame, path = report.write_leaderboard(study, path)
    finished = SearchFinished(frame, report.summary(study), path)
    say(finished)
    confirmation = confirm.run(confirm_settings(settings), say) if settings.confirm else None
    return Outcome(study, finished, confirmation)


def confirm_settings(settings: Settings):
    """The confirmation of this search: the same training options, storage and results folder."""
    return confirm.Settings(
        study=settings.study_name,
        storage=settings.storage_url,
        top=settings.top,
        seeds=settings.seeds,
        jobs=settings.jobs,
        device=settings.device,
        data_dir=settings.data_dir,
        download=False,  # the search has just read it
        epochs=settings.epochs,
        train_limit=settings.train_limit,
        results_dir=settings.results_dir,
    )


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no completed trial yet
        return None


def check(settings: Settings) -> space.Space:
    """Every check that can fail before anything is written; returns the space."""
    if settings.budget <= 0:
        raise SearchError(f"--budget must be a positive number of parameters, got {settings.budget}")
    if settings.trials <= 0:
        raise SearchError(f"--trials must be >= 1, got {settings.trials}")
    if settings.jobs <= 0:
        raise SearchError(f"--jobs must be >= 1, got {settings.jobs}")
    workers.check_jobs(settings.jobs)
    folder_name(settings.study_name, "--study")  # the default name too: a space file's stem can start with a dot
    if settings.timeout is not None and not (math.isfinite(settings.timeout) and settings.timeout > 0):
        raise SearchError(f"--timeout must be a finite number of seconds > 0, got {settings.timeout}")
    if settings.sampler not in ("tpe", "random") or settings.pruner not in ("median", "hyperband", "none"):
        raise SearchError("--sampler is tpe or random; --pruner is median, hyperband or none")
    sp = space.load(settings.space)
    n, _ = space.smallest(sp)
    if settings.budget <= n:
        raise SearchError(
            f"--budget {settings.budget} is at or below the smallest model of space {sp.name!r} ({n:,} params)"
        )
    named = {c.name: c for c in map(spec.load_baseline, spec.baseline_names())} if settings.enqueue else {}
    for name in settings.enqueue:
        config = enqueueable(name, sp, settings.budget)
        other = named.setdefault(config.name, config)
        # a study queues each name once: a second network under a taken name would be skipped unseen
        if (other.layers, other.recipe) != (config.layers, config.recipe):
            raise SearchError(
                f"--enqueue {name}: its name {config.name!r} is taken by another configuration (a reference baseline "
                'or an earlier --enqueue); give it its own "name"'
            )
    writable(settings.results_dir)
    store.heartbeat_seconds()  # a bad $NAS_HEARTBEAT_SECONDS fails here, before anything is written
    return sp


def enqueueable(name: str, sp: space.Space, budget: int) -> spec.Config:
    """An --enqueue configuration loads, is one the space can express, and is under the budget."""
    try:
        config = spec.resolve(name)
    except spec.SpecError as e:
        raise SearchError(f"--enqueue {name}: {e}") from None
    n = spec.param_count(config)
    if n >= budget:
        raise SearchError(f"--enqueue {name}: {n:,} params, at or over --budget {budget}; raise --budget or drop it")
    if space.space_params(config, sp) is None:
        raise SearchError(
            f"--enqueue {name}: space {sp.name!r} cannot express this configuration (its layers or a recipe value "
            f"fall outside the space's dimensions; `nas spaces` shows them); pass --space with one that can"
        )
    return config


def writable(folder: str) -> None:
    """The results folder exists (or can be made) and takes files."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        raise SearchError(f"cannot write to results folder {folder}: {e.strerror}; pass --results-dir DIR") from None


def plan(epoch_seconds: float, epochs: int, remaining: int, jobs: int, pruner: str) -> Estimate:
    """The search's time ahead: `remaining` trials of `epochs` epochs shared by the workers that start."""
    seconds = remaining * epochs * epoch_seconds / workers.started(jobs, remaining)
    return Estimate(epoch_seconds, epochs, seconds, MEASURED_SAVING[pruner])


def draw(sp: space.Space, low: int, high: int, n: int, seed: int = 0, tries: int = 1000) -> list[spec.Config]:
    """`n` networks drawn at random from the space with `low` <= parameters < `high`, the same ones for
    the same seed (fewer where `tries` draws find fewer). Nothing is stored: the study is in memory."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    found = []
    for _ in range(tries):
        try:
            config = space.suggest(study.ask(), sp)
        except spec.SpecError:  # a structure that does not fit the image: never trained
            continue
        if low <= spec.param_count(config) < high:
            found.append(config)
            if len(found) == n:
                break
    return found


def estimate_epoch_seconds(settings: Settings, sp: space.Space, mnist: dict, device, draws: int = 3) -> float:
    """Seconds for one epoch (training + validation) in one of the run's worker processes: the mean of
    `draws` networks of the space between half the budget and the budget, where the sampler spends
    most trials, with their recipes (a space's resolutions and batch sizes set the cost more than its
    parameter count), each timed on 1,024 training and 1,000 validation images with the threads each
    worker will have, scaled to the run's split."""
    configs = draw(sp, settings.budget // 2, settings.budget, draws) or [spec.load_baseline("baseline-6")]
    n_train, n_val = min(settings.train_limit or 50_000, 50_000), min(settings.val_limit or 10_000, 10_000)
    timed_train, timed_val = 1024, 1000  # three networks in about the time one took on 2,560 and 2,000
    split = data.make_split(mnist, "val", train_limit=timed_train, eval_limit=timed_val, device=device)
    warm_up = data.make_split(mnist, "val", train_limit=256, eval_limit=256, device=device)
    threads = torch.get_num_threads()
    torch.set_num_threads(workers.worker_threads(settings.jobs))
    seconds = []
    try:
        for config in configs:
            train.train(config, warm_up, seed=0, device=device, epochs=1)  # first calls are slow: not timed
            t0 = time.perf_counter()
            model, _ = train.train(config, split, seed=0, device=device, epochs=1)
            t1 = time.perf_counter()
            train.evaluate(model, split.eval_x, split.eval_y)
            t2 = time.perf_counter()
            seconds.append((t1 - t0 - (t2 - t1)) * n_train / timed_train + (t2 - t1) * n_val / timed_val)
    finally:
        torch.set_num_threads(threads)
    return sum(seconds) / len(seconds)
