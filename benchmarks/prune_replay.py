"""Replay the per-epoch validation curves of a search trained WITHOUT pruning through each pruner.

Same trials, same order, same curves: the only difference is the pruner, so this isolates what a
pruner saves (epochs) and what it costs (good trials stopped early). It complements the real
searches run with each pruner, whose trials differ because the sampler learns from what it sees.

    python benchmarks/prune_replay.py --study prune-none [--storage sqlite:///results/evidence/benchmarks.db]
"""

from __future__ import annotations

import argparse

import optuna
from optuna.trial import TrialState

from nas import store, verdict

PRUNERS = {
    "median (5 startup, warmup 3)": lambda epochs: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=3),
    "median (5 startup, warmup 1)": lambda epochs: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
    "hyperband (min 1, factor 3)": lambda epochs: optuna.pruners.HyperbandPruner(1, epochs, 3),
    "hyperband (min 2, factor 3)": lambda epochs: optuna.pruners.HyperbandPruner(2, epochs, 3),
    "hyperband (min 3, factor 3)": lambda epochs: optuna.pruners.HyperbandPruner(3, epochs, 3),
    "hyperband (min 5, factor 3)": lambda epochs: optuna.pruners.HyperbandPruner(5, epochs, 3),
}


def replay(curves: list[list[float]], pruner) -> tuple[int, list[bool]]:
    """Epochs trained and, per trial, whether it ran to the end."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=pruner, study_name="replay")
    epochs, finished = 0, []
    for curve in curves:
        trial = study.ask()
        for step, acc in enumerate(curve, start=1):
            epochs += 1
            trial.report(acc, step)
            if trial.should_prune():
                study.tell(trial, state=TrialState.PRUNED)
                finished.append(False)
                break
        else:
            study.tell(trial, min(verdict.tail(curve)))  # the search's objective
            finished.append(True)
    return epochs, finished


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", required=True)
    ap.add_argument("--storage", default=store.default_storage("results"))
    ap.add_argument("--top", type=int, default=3)
    args = ap.parse_args()
    study = optuna.load_study(study_name=args.study, storage=store.open_storage(args.storage))
    trials = [t for t in study.get_trials(states=(TrialState.COMPLETE,)) if t.user_attrs.get("trained")]
    curves = [[h["eval_acc"] for h in t.user_attrs["history"]] for t in trials]
    epochs = len(curves[0])
    rank = sorted(range(len(trials)), key=lambda i: -trials[i].value)[: args.top]
    print(
        f"{len(curves)} unpruned trials of {args.study!r}, {epochs} epochs each; top {args.top}: "
        f"{[trials[i].number for i in rank]}"
    )
    print(f"| pruner | epochs trained | saved | trials run to the end | top {args.top} kept |")
    print("|---|---|---|---|---|")
    print(f"| none | {len(curves) * epochs} | 0% | {len(curves)} | {args.top} of {args.top} |")
    for name, make in PRUNERS.items():
        n, finished = replay(curves, make(epochs))
        kept = sum(finished[i] for i in rank)
        print(
            f"| {name} | {n} | {100 * (1 - n / (len(curves) * epochs)):.0f}% | {sum(finished)} | {kept} of {args.top} |"
        )


if __name__ == "__main__":
    main()
