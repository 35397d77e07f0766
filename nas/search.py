"""The Optuna study: sampler, pruner, budget gate, objective, resume and the search worker
(the storage it lives in: nas/storage.py; the worker processes: nas/workers.py).

Counting rule: `--trials N` is N *trained* trials (completed, or pruned by the pruner after
training started). A sample at or over the budget is recorded as PRUNED with the user attribute
`infeasible` before any training, so TPE's `constraints_func` learns from it and it costs no
training time; it does not count. Each worker claims a training slot under a file lock before it
trains, so J local workers never train more than N trials between them.

Each trial trains with seed = study seed + trial number (stored as the `seed` attribute) on the
validation split (50,000 / 10,000 of the training images); the test set is never read here.
"""

from __future__ import annotations

import math
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import optuna
from optuna.trial import TrialState

import nas
from nas import NasError, data, space, spec, train
from nas.store import counts, default_storage, heartbeat_seconds, mark_owner, open_storage, study_lock
from nas.workers import usable_cpus, worker_threads

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
    pruner: str = "hyperband"  # "hyperband" | "median" | "none" (README: measured side by side)
    seed: int = 0  # sampler seed; trial training seed = seed + trial number
    jobs: int = 1  # worker processes on this machine
    baselines: bool = True  # enqueue the seed's baselines that fit the space and budget
    device: str = "auto"
    data_dir: str | None = None
    results_dir: str = "results"
    train_limit: int | None = None  # keep the first N training images (smoke runs)
    val_limit: int | None = None  # keep the first N validation images
    epochs: int | None = None  # override the space's epochs (smoke runs)
    worker: int = 0  # index of this worker process: its sampler seed is seed + 7919 * worker
    pipeline: str = "nas"  # "nas" | "seed": the seed's DataLoader pipeline (the naive setting, for benchmarks)

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


# --------------------------------------------------------------------------- the study


def identity(s: Settings, sp: space.Space) -> dict:
    """What the study was created with; resuming with anything else is refused."""
    return {
        "space": sp.name,
        "space_sha256": sp.sha256,
        "budget": s.budget,
        "epochs": s.epochs or sp.epochs,
        "split": "train 50000 / val 10000, split seed 0",
        "train_limit": s.train_limit,
        "val_limit": s.val_limit,
    }


def make_sampler(s: Settings) -> optuna.samplers.BaseSampler:
    """Seeded per worker: workers with one seed would propose the same points during TPE's
    random start-up trials."""
    seed = s.seed + 7919 * s.worker
    if s.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # multivariate + group: the space is conditional (widths per conv, transition width);
    # constant_liar: parallel workers do not all propose the same point
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)


# share of epochs each pruner saved on the README's side-by-side small search (20 trials, 8 epochs)
MEASURED_SAVING = {"hyperband": 0.62, "median": 0.28, "none": 0.0}


def make_pruner(s: Settings) -> optuna.pruners.BasePruner:
    """Hyperband by default: on the same small search it trained 61 of 160 epochs against
    median's 115, with the best validation accuracy of the three (README, "pruning")."""
    epochs = s.epochs or space.load(s.space).epochs
    if s.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=3)
    if s.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)


def open_study(s: Settings, sp: space.Space) -> optuna.Study:
    """Create the study, or load it and check it was made with the same space and budget."""
    storage = open_storage(s.storage_url)
    study = optuna.create_study(
        study_name=s.study_name,
        storage=storage,
        direction="maximize",
        sampler=make_sampler(s),
        pruner=make_pruner(s),
        load_if_exists=True,
    )
    want = identity(s, sp)
    with study_lock(study, s.storage_url, s.results_dir):  # workers on other machines may start now too
        have = study.user_attrs.get("identity")
        if have is None:
            study.set_user_attr("identity", want)
            study.set_user_attr("nas_version", nas.__version__)
            study.set_user_attr("settings", {k: v for k, v in asdict(s).items() if k not in ("storage", "worker")})
    if have is not None and have != want:
        diff = ", ".join(
            f"{k}: study has {have.get(k)!r}, command gives {want[k]!r}" for k in want if have.get(k) != want[k]
        )
        raise SearchError(f"study {s.study_name!r} was created with other settings ({diff}); use another --study")
    return study


# --------------------------------------------------------------------------- baselines


def baseline_params(config: spec.Config, sp: space.Space) -> dict | None:
    """The space's parameters that rebuild `config` exactly, or None when it is outside the space."""
    layers, r = config.layers, config.recipe
    ops = [x.op for x in layers]
    if ops.count("pool") != 1 or r.step_size is None:
        return None
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
    v.update(
        {
            k: getattr(r, k)
            for k in (
                "optimizer",
                "lr",
                "momentum",
                "weight_decay",
                "batch_size",
                "step_size",
                "gamma",
                "dropout",
                "rotation",
            )
        }
    )
    try:
        rebuilt = space.build_config(v, [*widths, spec.CLASSES], config.recipe.epochs)
    except (spec.SpecError, KeyError, IndexError):
        return None
    if rebuilt.layers != config.layers:
        return None
    params = {k: val for k, val in v.items() if val is not None}
    params.update({f"width_{i + 1}": w for i, w in enumerate(widths)})
    if params["optimizer"] != "sgd":
        params.pop("momentum")
    for k, val in params.items():
        name = "width" if k.startswith("width_") else k
        if not _inside(sp.dims[name], val):
            return None
    return {k: val for k, val in params.items() if sp.dims["width" if k.startswith("width_") else k].kind != "const"}


def _inside(d: space.Dim, value) -> bool:
    if d.kind == "const":
        return d.value == value
    if d.kind == "choices":
        return value in d.choices
    return d.low <= value <= d.high


def enqueue_baselines(study: optuna.Study, sp: space.Space, s: Settings) -> list[str]:
    """Queue the seed's baselines that the space can express and the budget admits, once (under
    the study's lock: other workers may be queueing them at the same moment): a baseline already
    trained, running or queued is not queued again. Returns the names queued now."""
    with study_lock(study, s.storage_url, s.results_dir):
        return _enqueue_baselines(study, sp, s.budget)


def _enqueue_baselines(study: optuna.Study, sp: space.Space, budget: int) -> list[str]:
    have = {t.user_attrs.get("baseline") for t in study.get_trials(deepcopy=False) if t.state != TrialState.FAIL}
    queued = []
    for name in spec.baseline_names():
        config = spec.load_baseline(name)
        params = baseline_params(config, sp)
        if params is None or spec.param_count(config) >= budget:
            continue
        if name not in have:
            study.enqueue_trial(params, user_attrs={"baseline": name})
            queued.append(name)
    return queued


# --------------------------------------------------------------------------- objective and workers


def objective_for(study: optuna.Study, s: Settings, sp: space.Space, split: data.Split, device, fit=None):
    """The objective. `fit(config, seed, on_epoch)` trains one trial (default: nas's loop on `split`)."""
    epochs = s.epochs or sp.epochs
    if fit is None:

        def fit(config, seed, on_epoch):
            train.train(config, split, seed, device, on_epoch=on_epoch)

    def objective(trial: optuna.Trial) -> float:
        mark_owner(trial)
        if trial.user_attrs.get("trained"):  # a crashed trial's retry: Optuna copied its attributes
            trial.set_user_attr("trained", False)  # trained again only once it claims a slot below
        try:
            config = space.suggest(trial, sp)
        except spec.SpecError as e:  # a structure that does not fit the image: as good as infeasible
            trial.set_user_attr("infeasible", f"does not fit: {e}")
            trial.set_constraint("params_over_budget", 1.0)
            raise optuna.TrialPruned("infeasible") from None
        config = replace(config, recipe=replace(config.recipe, epochs=epochs))
        n = spec.param_count(config)
        trial.set_user_attr("params", n)
        trial.set_user_attr("macs", spec.macs(config))
        trial.set_user_attr("receptive_field", spec.receptive_field(config))
        trial.set_user_attr("config", config.to_dict())
        # <= 0 when feasible; TPE puts infeasible trials in its "bad" group, ranked by this
        trial.set_constraint("params_over_budget", n - s.budget + 1)
        if n >= s.budget:  # the hard budget: recorded, never trained
            trial.set_user_attr("infeasible", f"{n} params >= budget {s.budget}")
            raise optuna.TrialPruned("infeasible")
        with study_lock(study, s.storage_url, s.results_dir):
            c = counts(study)
            if c["trained"] + c["running"] >= s.trials:
                trial.set_user_attr("not_trained", "the requested number of trials was reached")
                study.stop()
                raise optuna.TrialPruned("surplus")
            trial.set_user_attr("trained", True)
        seed = s.seed + trial.number
        trial.set_user_attr("seed", seed)
        history: list[dict] = []

        def on_epoch(e: train.Epoch) -> None:
            history.append(asdict(e))
            trial.set_user_attr("history", history)
            if not math.isfinite(e.train_loss):
                trial.set_user_attr("fault", f"train loss became {e.train_loss} in epoch {e.epoch}")
                raise optuna.TrialPruned("non-finite loss")
            trial.report(e.eval_acc, e.epoch)
            # after the last epoch pruning saves nothing and would hide a finished result
            if e.epoch < epochs and trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {e.epoch}")

        t0 = time.perf_counter()
        try:
            fit(config, seed, on_epoch)
        finally:
            trial.set_user_attr("seconds", time.perf_counter() - t0)
        tail = [h["eval_acc"] for h in history[-3:]]
        return sum(tail) / len(tail)  # mean validation accuracy of the last 3 epochs: rewards stability

    return objective


def worker(s: Settings, threads: int | None = None) -> None:
    """One worker: optimize until the study has `trials` trained trials (or the timeout)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # Ctrl-C: one line from the parent, no tracebacks
    sp = space.load(s.space)
    study = open_study(s, sp)
    device = train.pick_device(s.device)
    mnist = data.load_mnist(s.data_dir, download=False)
    split = data.make_split(mnist, "val", train_limit=s.train_limit, eval_limit=s.val_limit, device=device)
    fit = None
    if s.pipeline == "seed":  # the naive baseline of `nas bench`'s search-throughput figure
        from nas import bench

        fit = bench.seed_trainer(s.data_dir, s.train_limit, s.val_limit, workers=usable_cpus())

    def stop_when_done(study: optuna.Study, _trial) -> None:
        c = counts(study)
        if c["trained"] + c["running"] >= s.trials:
            study.stop()

    objective, t0 = objective_for(study, s, sp, split, device, fit), time.monotonic()
    while (c := counts(study))["trained"] < s.trials:
        left = None if s.timeout is None else s.timeout - (time.monotonic() - t0)
        if left is not None and left <= 0:
            return
        if c["trained"] + c["running"] < s.trials:
            study.optimize(objective, timeout=left, callbacks=[stop_when_done], catch=(), gc_after_trial=False)
        else:  # the last slots are in training elsewhere: wait, so that a dead worker's trial is retried here
            time.sleep(min(2, heartbeat_seconds()))
            optuna.storages.fail_stale_trials(study)


# --------------------------------------------------------------------------- the run


def check(s: Settings) -> space.Space:
    """Every check that can fail before anything is written; returns the space."""
    if s.budget <= 0:
        raise SearchError(f"--budget must be a positive number of parameters, got {s.budget}")
    if s.trials <= 0:
        raise SearchError(f"--trials must be >= 1, got {s.trials}")
    if s.jobs <= 0:
        raise SearchError(f"--jobs must be >= 1, got {s.jobs}")
    if s.sampler not in ("tpe", "random") or s.pruner not in ("median", "hyperband", "none"):
        raise SearchError("--sampler is tpe or random; --pruner is median, hyperband or none")
    sp = space.load(s.space)
    n, _ = space.smallest(sp)
    if s.budget <= n:
        raise SearchError(f"--budget {s.budget} is at or below the smallest model of space {sp.name!r} ({n:,} params)")
    writable(s.results_dir)
    heartbeat_seconds()  # a bad $NAS_HEARTBEAT_SECONDS fails here, before anything is written
    return sp


def writable(folder: str) -> None:
    """The results folder exists (or can be made) and takes files."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        raise SearchError(f"cannot write to results folder {folder}: {e.strerror}; pass --results-dir DIR") from None


def estimate_epoch_seconds(s: Settings, mnist: dict, device) -> float:
    """Seconds for one epoch (training + validation) of a seed-sized net in one of the run's
    worker processes: timed on 2,560 training and 2,000 validation images with the threads each
    worker will have, scaled to the run's split."""
    import torch

    config = spec.load_baseline("baseline-6")
    n_train, n_val = min(s.train_limit or 50_000, 50_000), min(s.val_limit or 10_000, 10_000)
    split = data.make_split(mnist, "val", train_limit=2560, eval_limit=2000, device=device)
    warm_up = data.make_split(mnist, "val", train_limit=256, eval_limit=256, device=device)
    threads = torch.get_num_threads()
    torch.set_num_threads(worker_threads(s.jobs))
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
