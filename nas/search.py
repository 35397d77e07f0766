"""A budget-constrained search: the Optuna study (sampler, pruner, what it was made with), the
checks that run before anything is written, and `run`, which trains the trials in worker
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
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import optuna

import nas
from nas import NasError, space, spec, verdict
from nas.store import default_storage, heartbeat_seconds, open_storage, study_lock
from nas.workers import worker_threads

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # group decomposition
# a crashed trial's retry inherits its constraint (the same params give the same value)
warnings.filterwarnings("ignore", message="The constraint value is ignored")


class SearchError(NasError, ValueError):
    """Bad settings or a study that cannot be resumed with them; the message says why."""


@dataclass(frozen=True)
class Settings:
    space: str = "default"  # a space name or a .toml path
    budget: int = 8000  # every trained model has fewer trainable parameters than this
    trials: int = 200  # trained trials (completed + pruned by the pruner)
    timeout: float | None = None  # seconds of wall clock for this run
    storage: str | None = None  # None: sqlite file under results_dir
    study: str | None = None  # None: "<space>-b<budget>"
    sampler: str = "tpe"  # "tpe" | "random"
    pruner: str = "hyperband"  # "hyperband" | "median" | "none" (docs/search.md: measured side by side)
    seed: int = 0  # sampler seed; trial training seed = seed + trial number
    jobs: int = 1  # worker processes on this machine
    baselines: bool = True  # enqueue the reference baselines that fit the space and budget
    enqueue: tuple[str, ...] = ()  # baseline names or config files to train first (nas.spec's schema)
    device: str = "auto"
    data_dir: str | None = None
    download: bool = True  # fetch MNIST when it is not in data_dir
    results_dir: str = "results"
    train_limit: int | None = None  # keep the first N training images (quick runs)
    val_limit: int | None = None  # keep the first N validation images
    epochs: int | None = None  # override the space's epochs (quick runs)
    confirm: bool = True  # run the confirmation (nas.confirm) after the search
    top: int = 3  # configurations to confirm
    seeds: int = 5  # seeds per confirmed configuration
    worker: int = 0  # index of this worker process: its sampler seed is seed + 7919 * worker

    @property
    def study_name(self) -> str:
        """Default "<space>-b<budget>", plus the quick-run overrides: a quick search and the full
        one never land in one study."""
        if self.study:
            return self.study
        quick = {"e": self.epochs, "t": self.train_limit, "v": self.val_limit}
        return f"{Path(self.space).stem}-b{self.budget}" + "".join(f"-{k}{v}" for k, v in quick.items() if v)

    @property
    def storage_url(self) -> str:
        return self.storage or default_storage(self.results_dir)


# --------------------------------------------------------------------------- progress events


@dataclass(frozen=True)
class Estimate:
    epoch_seconds: float  # one epoch of a reference-sized network in one worker, here
    epochs: int
    without_pruning: float  # seconds for the remaining trials, none pruned
    saving: float  # share of epochs the pruner saved where it was measured (docs/search.md)


@dataclass(frozen=True)
class SearchPlanned:
    study: str
    storage: str  # password masked
    space: space.Space
    settings: Settings
    device: str
    kept: int  # trained trials already in the study (resuming)
    failed: list[int]  # trials of dead workers, failed and re-queued now
    queued: list[str]  # baselines queued now
    remaining: int  # trained trials still to come
    estimate: Estimate | None


@dataclass(frozen=True)
class SearchStatus:
    counts: dict  # store.counts
    best: optuna.trial.FrozenTrial | None
    total: int
    elapsed: float
    eta: float | None


@dataclass(frozen=True)
class SearchFinished:
    leaderboard: object  # pandas DataFrame, best first
    summary: dict  # report.summary
    path: Path  # the leaderboard's CSV


@dataclass(frozen=True)
class Outcome:
    study: optuna.Study
    finished: SearchFinished
    confirmation: object | None  # confirm.Outcome, when the search confirmed


# --------------------------------------------------------------------------- the study


def identity(settings: Settings, sp: space.Space) -> dict:
    """What the study was created with; resuming with anything else is refused."""
    return {
        "space": sp.name,
        "space_sha256": sp.sha256,
        "budget": settings.budget,
        "epochs": settings.epochs or sp.epochs,
        "split": "train 50000 / val 10000, split seed 0",
        "objective": f"worst validation accuracy of the last {verdict.LAST_K} epochs",
        "train_limit": settings.train_limit,
        "val_limit": settings.val_limit,
    }


def make_sampler(settings: Settings) -> optuna.samplers.BaseSampler:
    """Seeded per worker: workers with one seed would propose the same points during TPE's
    random start-up trials."""
    seed = settings.seed + 7919 * settings.worker
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # multivariate + group: the space is conditional (widths per conv, transition width);
    # constant_liar: parallel workers do not all propose the same point
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)


# share of epochs each pruner saved on the side-by-side small search of docs/search.md (20 trials, 8 epochs)
MEASURED_SAVING = {"hyperband": 0.62, "median": 0.28, "none": 0.0}


def make_pruner(settings: Settings) -> optuna.pruners.BasePruner:
    """Hyperband by default: on the same small search it trained the fewest epochs and found the
    best network of the three (docs/search.md)."""
    epochs = settings.epochs or space.load(settings.space).epochs
    if settings.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=3)
    if settings.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)


def open_study(settings: Settings, sp: space.Space) -> optuna.Study:
    """Create the study, or load it and check it was made with the same space and budget."""
    storage = open_storage(settings.storage_url)
    study = optuna.create_study(
        study_name=settings.study_name,
        storage=storage,
        direction="maximize",
        sampler=make_sampler(settings),
        pruner=make_pruner(settings),
        load_if_exists=True,
    )
    want = identity(settings, sp)
    with study_lock(study, settings.storage_url, settings.results_dir):  # workers on other machines may start now too
        have = study.user_attrs.get("identity")
        if have is None:
            study.set_user_attr("identity", want)
            study.set_user_attr("nas_version", nas.__version__)
            made = {k: v for k, v in asdict(settings).items() if k not in ("storage", "worker", "download")}
            study.set_user_attr("settings", made)
    if have is not None and have != want:
        diff = ", ".join(
            f"{k}: study has {have.get(k)!r}, command gives {want[k]!r}" for k in want if have.get(k) != want[k]
        )
        raise SearchError(
            f"study {settings.study_name!r} was created with other settings ({diff}); use another --study"
        )
    return study


# --------------------------------------------------------------------------- the run


def run(settings: Settings, on_progress: Callable[[object], None] | None = None, worker=None) -> Outcome:
    """The search, then (with `settings.confirm`) its confirmation: what `nas search` does. Resumes the
    study when it exists; Ctrl-C stops the workers, keeps every finished trial and raises
    nas.Interrupted. `on_progress` receives the events above (and nas.confirm's); `worker` is the
    worker processes' entry point (default nas.objective.worker)."""
    from nas import confirm, data, objective, report, store, train, workers

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
        epoch_s, epochs = estimate_epoch_seconds(settings, mnist, device), settings.epochs or sp.epochs
        estimate = Estimate(
            epoch_s, epochs, remaining * epochs * epoch_s / settings.jobs, MEASURED_SAVING[settings.pruner]
        )
    url = store.mask(settings.storage_url)
    say(SearchPlanned(settings.study_name, url, sp, settings, str(device), kept, failed, queued, remaining, estimate))
    procs = workers.start_workers(worker or objective.worker, settings, settings.jobs) if remaining else []
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
    from nas import confirm

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
    heartbeat_seconds()  # a bad $NAS_HEARTBEAT_SECONDS fails here, before anything is written
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


def estimate_epoch_seconds(settings: Settings, mnist: dict, device) -> float:
    """Seconds for one epoch (training + validation) of a seed-sized net in one of the run's
    worker processes: timed on 2,560 training and 2,000 validation images with the threads each
    worker will have, scaled to the run's split."""
    import torch

    from nas import data, train

    config = spec.load_baseline("baseline-6")
    n_train, n_val = min(settings.train_limit or 50_000, 50_000), min(settings.val_limit or 10_000, 10_000)
    split = data.make_split(mnist, "val", train_limit=2560, eval_limit=2000, device=device)
    warm_up = data.make_split(mnist, "val", train_limit=256, eval_limit=256, device=device)
    threads = torch.get_num_threads()
    torch.set_num_threads(worker_threads(settings.jobs))
    try:
        train.train(config, warm_up, seed=0, device=device, epochs=1)  # first calls are slow: not timed
        t0 = time.perf_counter()
        model, _ = train.train(config, split, seed=0, device=device, epochs=1)
        t1 = time.perf_counter()
        train.evaluate(model, split.eval_x, split.eval_y)
        t2 = time.perf_counter()
    finally:
        torch.set_num_threads(threads)
    return (t1 - t0 - (t2 - t1)) * n_train / 2560 + (t2 - t1) * n_val / 2000
