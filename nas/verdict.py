"""The rule every result is judged by: *consistent* means that each of the last K epochs reaches
the threshold test accuracy, for every seed. Replay, confirmation, report, figures and the search
objective's window all take it from here, so they cannot drift apart. Beside it, the rules that
choose among judged results: which confirmed configuration wins a budget (`choose`), and which seed
stands for a configuration (`pick_seed`).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field

from nas import NasError


class VerdictError(NasError, ValueError):
    """A seed asked of a configuration that has no run with it."""


THRESHOLD = 99.40  # percent test accuracy: the reference experiment's target
LAST_K = 3  # epochs at the end of training that must all reach it


def tail(accuracy: list[float], last_k: int = LAST_K) -> list[float]:
    """The last K epochs' accuracies: what "consistent" looks at, and the search objective's window."""
    return accuracy[-last_k:]


def consistent(accuracy: list[float], threshold: float = THRESHOLD, last_k: int = LAST_K) -> bool:
    """Each of the last K epochs at or above the threshold; a run shorter than K epochs is not
    consistent (it has not shown K epochs)."""
    return len(accuracy) >= last_k and min(tail(accuracy, last_k)) >= threshold


@dataclass(frozen=True)
class SeedVerdict:
    """One training run (one seed) of a configuration, judged on its per-epoch accuracy."""

    seed: int
    final: float  # accuracy after the last epoch, percent
    best: float  # best epoch
    min_last_k: float  # worst of the last K epochs
    consistent: bool
    best_train: float | None = None  # best training accuracy (replays record it; confirmations do not)

    @classmethod
    def judge(
        cls,
        seed: int,
        accuracy: list[float],
        threshold: float = THRESHOLD,
        last_k: int = LAST_K,
        best_train: float | None = None,
    ) -> SeedVerdict:
        return cls(
            seed=seed,
            final=accuracy[-1],
            best=max(accuracy),
            min_last_k=min(tail(accuracy, last_k)),
            consistent=consistent(accuracy, threshold, last_k),
            best_train=best_train,
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["best_train"] is None:
            del d["best_train"]
        return d


@dataclass(frozen=True)
class Verdict:
    """A confirmed configuration (a trial of a search study) over its seeds."""

    trial: int
    params: int
    macs: int
    val: float  # the trial's validation value in the search
    seeds_wanted: int
    per_seed: list[SeedVerdict] = field(default_factory=list)

    @property
    def seeds_done(self) -> int:
        return len(self.per_seed)

    @property
    def finals(self) -> list[float]:
        return [r.final for r in self.per_seed]

    @property
    def mean(self) -> float | None:
        return statistics.mean(self.finals) if self.finals else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.finals) if len(self.finals) > 1 else 0.0 if self.finals else None

    @property
    def consistent(self) -> bool:
        """Every wanted seed done, and each one consistent."""
        return self.seeds_done == self.seeds_wanted and all(r.consistent for r in self.per_seed)

    def mean_std(self) -> str:
        """Mean ± std of the final accuracies ("-" before any seed is done)."""
        return f"{self.mean:.2f} ± {self.std:.2f}" if self.mean is not None else "-"

    def finals_text(self) -> str:
        """Each seed's final accuracy, as the tables print them: "99.36 99.60 ..."."""
        return " ".join(f"{r.final:.2f}" for r in self.per_seed)

    def mins_text(self) -> str:
        """Each seed's worst of the last K epochs, in the same form."""
        return " ".join(f"{r.min_last_k:.2f}" for r in self.per_seed)

    def to_dict(self) -> dict:
        """As stored on the search study (the `confirmation` user attribute) and read back by from_dict."""
        return {
            "trial": self.trial,
            "params": self.params,
            "macs": self.macs,
            "val": self.val,
            "seeds_done": self.seeds_done,
            "seeds_wanted": self.seeds_wanted,
            "per_seed": [r.to_dict() for r in self.per_seed],
            "mean": self.mean,
            "std": self.std,
            "consistent": self.consistent,
        }

    @classmethod
    def from_dict(cls, record: dict) -> Verdict:
        fields = ("seed", "final", "best", "min_last_k", "consistent", "best_train")
        per_seed = [SeedVerdict(**{k: r[k] for k in fields if k in r}) for r in record["per_seed"]]
        return cls(record["trial"], record["params"], record["macs"], record["val"], record["seeds_wanted"], per_seed)


def stored(study, record: str = "confirmation") -> list[Verdict]:
    """The verdicts a confirmation (or another retraining stage: its `record`, see
    nas.confirm.Settings) stored on its search study, in the order it retrained them (none: [])."""
    return [Verdict.from_dict(v) for v in study.user_attrs.get(record, {}).get("verdicts", [])]


# --------------------------------------------------------------------------- the winner rule
# Set before a frontier runs (docs/search.md, "Which network wins"), and tested with literal cases.


def held_seeds(v: Verdict) -> int:
    """How many of its seeds a configuration holds on: each of their last K epochs at the threshold."""
    return sum(r.consistent for r in v.per_seed)


def mean_worst(v: Verdict) -> float:
    """The mean over seeds of each seed's worst of the last K epochs."""
    return statistics.mean(r.min_last_k for r in v.per_seed)


def noise(a: Verdict, b: Verdict) -> float:
    """The seeds' noise on the difference of two mean_worst values: its standard error,
    sqrt(s_a^2 / n_a + s_b^2 / n_b), with s the standard deviation over seeds (0 for one seed)."""

    def var_of_mean(v: Verdict) -> float:
        worst = [r.min_last_k for r in v.per_seed]
        return (statistics.variance(worst) if len(worst) > 1 else 0.0) / len(worst)

    return (var_of_mean(a) + var_of_mean(b)) ** 0.5


def choose(candidates: list[Verdict]) -> int:
    """The index of the winner among confirmed configurations (each with all its seeds done):
    1. the most consistent seeds wins (3 of 5 beats 0 of 5, however close the accuracies);
    2. among those, every configuration whose mean_worst is within the noise of the best mean_worst
       (a difference no larger than `noise`) ties with it;
    3. of the tied, the fewest parameters wins, then the higher mean_worst, then the first given."""
    if not candidates:
        raise ValueError("no candidates to choose from")
    most = max(held_seeds(v) for v in candidates)
    level = [i for i, v in enumerate(candidates) if held_seeds(v) == most]
    top = max(level, key=lambda i: (mean_worst(candidates[i]), -i))
    best = candidates[top]
    tied = [i for i in level if mean_worst(best) - mean_worst(candidates[i]) <= noise(best, candidates[i])]
    return min(tied, key=lambda i: (candidates[i].params, -mean_worst(candidates[i]), i))


def pick_seed(runs: dict[int, float], seed: int | None = None) -> int:
    """Whose weights stand for a configuration (`nas export`, the report's figures): the requested
    seed, or the one with the median final test accuracy (the lower of the two middle ones for an
    even count), so that the network shown is typical, not lucky. `runs`: seed -> final accuracy."""
    if seed is not None:
        if seed not in runs:
            raise VerdictError(f"no confirmation run with seed {seed}; seeds: {', '.join(map(str, sorted(runs)))}")
        return seed
    median = statistics.median_low(runs.values())
    return min(s for s, acc in runs.items() if acc == median)
