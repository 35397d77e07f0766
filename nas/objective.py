"""What one trial of a search does, in every worker process: suggest a config from the space,
gate it by the budget (a model at or over it is recorded as infeasible and never trained), claim a
training slot, train on the validation split with per-epoch reporting and pruning; and the worker
loop that runs trials until the study has its trained trials. The configurations of `--enqueue`, then
the reference baselines that the space can express, are queued as the first trials.

Each trial trains with seed = study seed + trial number (stored as the `seed` attribute) on the
validation split (50,000 / 10,000 of the training images); the test set is never read here.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, replace

import optuna
from optuna.trial import TrialState

from nas import data, space, spec, train, verdict
from nas.store import counts, heartbeat_seconds, mark_owner, study_lock
from nas.study import Settings, open_study

# --------------------------------------------------------------------------- queued configurations


def enqueue(study: optuna.Study, sp: space.Space, settings: Settings) -> list[str]:
    """Queue the configurations of `settings.enqueue` (checked by nas.search.check), then the
    reference baselines that the space can express and the budget admits (unless
    `settings.baselines` is off), once each (under the study's lock: other workers may be queueing
    them at the same moment): a name already trained, running or queued is not queued again. The
    name is kept as the trial's `baseline` attribute. Returns the names queued now."""
    wanted = [spec.resolve(x) for x in settings.enqueue]
    if settings.baselines:
        wanted += [spec.load_baseline(name) for name in spec.baseline_names()]
    with study_lock(study, settings.storage_url, settings.results_dir):
        return _enqueue(study, sp, settings.budget, wanted)


def _enqueue(study: optuna.Study, sp: space.Space, budget: int, configs: list[spec.Config]) -> list[str]:
    have = {t.user_attrs.get("baseline") for t in study.get_trials(deepcopy=False) if t.state != TrialState.FAIL}
    queued = []
    for config in configs:
        params = space.space_params(config, sp)
        if params is None or spec.param_count(config) >= budget or config.name in have:
            continue
        study.enqueue_trial(params, user_attrs={"baseline": config.name})
        have.add(config.name)
        queued.append(config.name)
    return queued


# --------------------------------------------------------------------------- objective and workers


def objective_for(study: optuna.Study, settings: Settings, sp: space.Space, split: data.Split, device, fit=None):
    """The objective. `fit(config, seed, on_epoch)` trains one trial (default: nas's loop on
    `split`; `benchmarks/search_throughput.py` passes the reference pipeline's)."""
    epochs = settings.epochs or sp.epochs
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
            constrain(trial, 1.0)
            raise optuna.TrialPruned("infeasible") from None
        config = replace(config, recipe=replace(config.recipe, epochs=epochs))
        n = spec.param_count(config)
        trial.set_user_attr("params", n)
        trial.set_user_attr("macs", spec.macs(config))
        trial.set_user_attr("receptive_field", spec.receptive_field(config))
        trial.set_user_attr("config", config.to_dict())
        # <= 0 when feasible; TPE puts infeasible trials in its "bad" group, ranked by this
        constrain(trial, n - settings.budget + 1)
        if n >= settings.budget:  # the hard budget: recorded, never trained
            trial.set_user_attr("infeasible", f"{n} params >= budget {settings.budget}")
            raise optuna.TrialPruned("infeasible")
        with study_lock(study, settings.storage_url, settings.results_dir):
            c = counts(study)
            if c["trained"] + c["running"] >= settings.trials:
                trial.set_user_attr("not_trained", "the requested number of trials was reached")
                study.stop()
                raise optuna.TrialPruned("surplus")
            trial.set_user_attr("trained", True)
        seed = settings.seed + trial.number
        trial.set_user_attr("seed", seed)
        history: list[dict] = []
        named = trial.user_attrs.get("baseline")

        def on_epoch(e: train.Epoch) -> None:
            history.append(asdict(e))
            trial.set_user_attr("history", history)
            if not math.isfinite(e.train_loss):
                trial.set_user_attr("fault", f"train loss became {e.train_loss} in epoch {e.epoch}")
                raise optuna.TrialPruned("non-finite loss")
            trial.report(e.eval_acc, e.epoch)
            # after the last epoch pruning saves nothing and would hide a finished result; a configuration
            # queued by name (a baseline, --enqueue) trains to the end: its whole curve is the reference
            if e.epoch < epochs and not named and trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {e.epoch}")

        t0 = time.perf_counter()
        try:
            fit(config, seed, on_epoch)
        finally:
            trial.set_user_attr("seconds", time.perf_counter() - t0)
        tail = verdict.tail([h["eval_acc"] for h in history])
        trial.set_user_attr("val_mean_last_k", sum(tail) / len(tail))
        # the worst of the last K epochs: "consistent" asks every one of them to hold, not their mean
        return min(tail)

    return objective


def constrain(trial: optuna.Trial, over: float) -> None:
    """The trial's constraint (<= 0: feasible). A crashed trial's retry inherits its constraint, which
    Optuna keeps and warns of: the same parameters give the same value, so the warning says nothing."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The constraint value is ignored")
        trial.set_constraint("params_over_budget", over)


def worker(settings: Settings, threads: int | None = None, fit_for=None) -> None:
    """One worker: optimize until the study has `trials` trained trials (or the timeout).
    `fit_for(s)`, when given, makes the objective's trainer (see objective_for)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # Ctrl-C: one line from the parent, no tracebacks
    sp = space.load(settings.space)
    study = open_study(settings, sp)
    device = train.pick_device(settings.device)
    mnist = data.load_mnist(settings.data_dir, download=False)
    split = data.make_split(
        mnist, "val", train_limit=settings.train_limit, eval_limit=settings.val_limit, device=device
    )
    fit = fit_for(settings) if fit_for else None

    def stop_when_done(study: optuna.Study, _trial) -> None:
        c = counts(study)
        if c["trained"] + c["running"] >= settings.trials:
            study.stop()

    objective, t0 = objective_for(study, settings, sp, split, device, fit), time.monotonic()
    while (c := counts(study))["trained"] < settings.trials:
        left = None if settings.timeout is None else settings.timeout - (time.monotonic() - t0)
        if left is not None and left <= 0:
            return
        if c["trained"] + c["running"] < settings.trials:
            study.optimize(objective, timeout=left, callbacks=[stop_when_done], catch=(), gc_after_trial=False)
        else:  # the last slots are in training elsewhere: wait, so that a dead worker's trial is retried here
            time.sleep(min(2, heartbeat_seconds()))
            optuna.storages.fail_stale_trials(study)
