"""The progress events of the long runs. The library (nas.search, nas.confirm, nas.frontier,
nas.replay) reports progress as these small dataclasses to an `on_progress` callable; the command
line's views (nas.views) map each class to what it shows, and a notebook may print them or ignore
them. Plain data: nothing here imports torch or Optuna.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the annotations' types, never loaded at run time
    import optuna

    from nas import space, spec, verdict
    from nas.study import Settings

# --------------------------------------------------------------------------- a search (nas.search)


@dataclass(frozen=True)
class Estimate:
    epoch_seconds: float  # one epoch of a network of the space in one worker, here
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


# --------------------------------------------------------------------------- retraining stages (nas.confirm)


@dataclass(frozen=True)
class ConfirmPlanned:
    stage: str
    study: str  # the confirmation study
    units: int  # (configuration, seed) runs in all
    done: int  # already done before this run
    top: int
    seeds: int
    train_images: int


@dataclass(frozen=True)
class UnitDone:
    done: int
    units: int
    trial: int  # the search trial whose configuration ran
    seed: int
    final: float  # final test accuracy, percent
    elapsed: float  # seconds since this run started


# --------------------------------------------------------------------------- a frontier (nas.frontier)


@dataclass(frozen=True)
class BudgetStarted:
    budget: int
    index: int  # 1-based
    budgets: int
    runs_after_search: int  # the selection's, the confirmation's and the fresh seeds' runs


# --------------------------------------------------------------------------- a replay (nas.replay)


@dataclass(frozen=True)
class ReplayStarted:
    config: spec.Config
    device: str
    folder: Path


@dataclass(frozen=True)
class SeedStarted:
    seed: int
    steps: int  # optimizer steps of the whole run


@dataclass(frozen=True)
class Step:
    pass


@dataclass(frozen=True)
class EpochDone:
    seed: int
    epoch: object  # nas.train.Epoch


@dataclass(frozen=True)
class SeedDone:
    verdict: verdict.SeedVerdict
