"""Confirmation: the top K distinct configurations of a search, by validation accuracy, retrained
on all 60,000 training images with N seeds each and evaluated on the test set every epoch.

The units (configuration, seed) are the trials of a second study, "<study>-confirm", in the same
storage: they are queued once, each worker pops one at a time (the RDB storage hands a queued
trial to exactly one worker), a crashed unit is failed by the heartbeat and re-queued, and
re-running the command resumes. The verdicts are stored on the search study.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import optuna
from optuna.trial import TrialState

from nas import data, search, spec, store, train


@dataclass(frozen=True)
class Settings:
    study: str  # the search study
    storage: str  # its storage URL
    top: int = 3  # distinct configurations
    seeds: int = 5  # seeds per configuration: 0 .. seeds-1
    jobs: int = 1
    device: str = "auto"
    data_dir: str | None = None
    last_k: int = 3  # "consistent": every seed >= threshold in each of the last K epochs
    threshold: float = 99.40
    epochs: int | None = None  # override (smoke runs)
    train_limit: int | None = None  # smoke runs
    artifacts: str = "results/artifacts"  # where each run's final weights are stored (Optuna artifacts)

    @property
    def confirm_name(self) -> str:
        return store.confirmation_name(self.study)


def top_configs(study: optuna.Study, k: int) -> list[tuple[int, spec.Config]]:
    """The K best completed trials by validation value whose configurations differ (name aside)."""
    done = sorted((t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))), key=lambda t: -t.value)
    seen, picked = set(), []
    for t in done:
        config = spec.from_dict(t.user_attrs["config"])
        key = json.dumps({"layers": [x.to_dict() for x in config.layers], "recipe": config.to_dict()["recipe"]})
        if key not in seen:
            seen.add(key)
            picked.append((t.number, config))
        if len(picked) == k:
            break
    return picked


def open_confirm_study(s: Settings) -> tuple[optuna.Study, optuna.Study]:
    study = store.load_study(s.storage, s.study)
    confirm = optuna.create_study(
        study_name=s.confirm_name,
        storage=study._storage,
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(),
        load_if_exists=True,
    )
    return study, confirm


def queue_units(s: Settings, study: optuna.Study, confirm: optuna.Study) -> list[tuple[int, int]]:
    """Queue every (source trial, seed) unit not yet done, running or queued; returns all units."""
    with store.study_lock(confirm, s.storage, s.artifacts):  # other workers may queue at the same time
        return _queue_units(s, study, confirm)


def _queue_units(s: Settings, study: optuna.Study, confirm: optuna.Study) -> list[tuple[int, int]]:
    picked = top_configs(study, s.top)
    if not picked:
        raise search.SearchError(f"study {s.study!r} has no completed trial to confirm yet")
    check_identity(s, study, confirm)
    live = {
        (t.user_attrs.get("source_trial"), t.user_attrs.get("seed"))
        for t in confirm.get_trials(deepcopy=False)
        if t.state != TrialState.FAIL
    }
    units = [(n, seed) for n, _ in picked for seed in range(s.seeds)]
    for n, seed in units:
        if (n, seed) not in live:
            confirm.enqueue_trial({"source_trial": n, "seed": seed}, user_attrs={"source_trial": n, "seed": seed})
    return units


def check_identity(s: Settings, study: optuna.Study, confirm: optuna.Study) -> None:
    """Every unit of a confirmation trains with the same epochs and training images: the first run
    records them on the confirmation study, a later one with others is refused (its runs would be
    mixed into the same verdicts). A confirmation made before nas recorded them was made with its
    search's quick-run settings (`nas search` confirms with its own)."""
    want = {"epochs": s.epochs, "train_limit": s.train_limit}
    have = confirm.user_attrs.get("identity")
    if have is None and confirm.get_trials(deepcopy=False):
        made = study.user_attrs.get("settings", {})
        have = {k: made.get(k) for k in want}
    if have is not None and have != want:

        def options(d: dict) -> str:
            given = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in d.items() if v)
            return given or "neither --epochs nor --train-limit"

        raise search.SearchError(
            f"confirmation study {s.confirm_name!r} was trained with {options(have)}, this command gives "
            f"{options(want)}: give the same to add seeds or configurations to it"
        )
    if "identity" not in confirm.user_attrs:
        confirm.set_user_attr("identity", want)


def worker(s: Settings, threads: int | None = None) -> None:
    """Pop queued units until none is left; train each on the full training set, test every epoch."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study, confirm = open_confirm_study(s)
    device = train.pick_device(s.device)
    split = data.make_split(
        data.load_mnist(s.data_dir, download=False), "test", train_limit=s.train_limit, device=device
    )
    sources = {t.number: t for t in study.get_trials(deepcopy=False)}

    def objective(trial: optuna.Trial) -> float:
        if "source_trial" not in trial.user_attrs:  # nothing queued: this worker is done
            trial.study.stop()
            raise optuna.TrialPruned("no unit left")
        store.mark_owner(trial)
        n = trial.suggest_int("source_trial", 0, 10**9)
        seed = trial.suggest_int("seed", 0, 10**6)
        config = spec.from_dict(sources[n].user_attrs["config"])
        if s.epochs:
            config = replace(config, recipe=replace(config.recipe, epochs=s.epochs))
        trial.set_user_attr("params", spec.param_count(config))
        history: list[dict] = []

        def on_epoch(e: train.Epoch) -> None:
            history.append(vars(e).copy())
            trial.set_user_attr("history", history)

        # a checkpoint per epoch: a unit whose worker died resumes where it stopped (on this machine)
        ckpt = Path(s.artifacts) / "checkpoints" / f"{s.confirm_name}-trial{n}-seed{seed}.pt"
        model, _ = train.train(config, split, seed, device, on_epoch=on_epoch, checkpoint=ckpt)
        save_weights(trial, model, s.artifacts)
        ckpt.unlink(missing_ok=True)
        return history[-1]["eval_acc"]

    def stop_when_empty(study: optuna.Study, _trial) -> None:
        if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            study.stop()

    if confirm.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        confirm.optimize(objective, callbacks=[stop_when_empty], catch=(), gc_after_trial=False)


def artifact_store(folder: str) -> optuna.artifacts.FileSystemArtifactStore:
    Path(folder).mkdir(parents=True, exist_ok=True)
    return optuna.artifacts.FileSystemArtifactStore(folder)


def save_weights(trial: optuna.Trial, model, folder: str) -> None:
    """The run's final state_dict (a few tens of kB) as an Optuna artifact of its trial; its id is
    kept in the `weights` attribute, so the report and the export never train again."""
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "weights.pt"
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
        artifact_id = optuna.artifacts.upload_artifact(
            artifact_store=artifact_store(folder), file_path=str(path), study_or_trial=trial
        )
    trial.set_user_attr("weights", artifact_id)


def load_weights(trial: optuna.trial.FrozenTrial, folder: str) -> dict:
    """The state_dict a confirmation run stored (loaded with weights_only=True: no pickle code)."""
    import torch

    artifact_id = trial.user_attrs.get("weights")
    if artifact_id is None:
        raise search.SearchError(f"confirmation run {trial.number} has no stored weights (confirmed by an older nas?)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "weights.pt"
        try:
            optuna.artifacts.download_artifact(
                artifact_store=artifact_store(folder), file_path=str(path), artifact_id=artifact_id
            )
        except Exception as e:
            raise search.SearchError(
                f"cannot read the weights of confirmation run {trial.number} from {folder}: {e}"
            ) from None
        return torch.load(path, weights_only=True, map_location="cpu")


def verdicts(s: Settings, study: optuna.Study, confirm: optuna.Study) -> list[dict]:
    """One verdict per confirmed configuration, in validation order; stored on the search study."""
    units: dict[int, list] = {}
    for t in confirm.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        units.setdefault(t.user_attrs["source_trial"], []).append(t)
    out = []
    for n, config in top_configs(study, s.top):
        runs = sorted(units.get(n, []), key=lambda t: t.user_attrs["seed"])
        per_seed = []
        for t in runs:
            acc = [h["eval_acc"] for h in t.user_attrs["history"]]
            tail = acc[-s.last_k :]
            per_seed.append(
                {
                    "seed": t.user_attrs["seed"],
                    "final": acc[-1],
                    "best": max(acc),
                    "min_last_k": min(tail),
                    "consistent": min(tail) >= s.threshold,
                }
            )
        finals = [r["final"] for r in per_seed]
        out.append(
            {
                "trial": n,
                "params": spec.param_count(config),
                "macs": spec.macs(config),
                "val": study.trials[n].value,
                "seeds_done": len(per_seed),
                "seeds_wanted": s.seeds,
                "per_seed": per_seed,
                "mean": statistics.mean(finals) if finals else None,
                "std": statistics.stdev(finals) if len(finals) > 1 else 0.0 if finals else None,
                "consistent": len(per_seed) == s.seeds and all(r["consistent"] for r in per_seed),
            }
        )
    record = {"top": s.top, "seeds": s.seeds, "last_k": s.last_k, "threshold": s.threshold, "verdicts": out}
    with store.study_lock(study, s.storage, s.artifacts):  # other workers may write theirs at the same moment
        study.set_user_attr("confirmation", record)
    return out
