"""What a study holds, as tables: it reads the storage and never trains."""

from __future__ import annotations

import os
from pathlib import Path

import optuna
import pandas as pd
from optuna.trial import TrialState


def leaderboard(study: optuna.Study) -> pd.DataFrame:
    """One row per proposed trial, best first: state, parameters, MACs, validation accuracy."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        history = t.user_attrs.get("history", [])
        acc = [h["eval_acc"] for h in history]
        state = t.state.name.lower()
        if t.user_attrs.get("infeasible"):
            state = "infeasible"
        elif t.state == TrialState.PRUNED and not t.user_attrs.get("trained"):
            state = "not trained"
        rows.append(
            {
                "trial": t.number,
                "state": state,
                "baseline": t.user_attrs.get("baseline", ""),
                "params": t.user_attrs.get("params"),
                "macs": t.user_attrs.get("macs"),
                "rf": t.user_attrs.get("receptive_field"),
                # mean validation accuracy of the last 3 epochs; completed trials only (Optuna gives a
                # pruned trial its last intermediate value, which is not comparable)
                "value": t.value if t.state == TrialState.COMPLETE else None,
                "best_val": max(acc) if acc else None,
                "final_val": acc[-1] if acc else None,
                "epochs": len(acc),
                "seconds": round(t.user_attrs.get("seconds", 0.0), 1),
                "seed": t.user_attrs.get("seed"),
                **{f"p_{k}": v for k, v in t.params.items()},
            }
        )
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.sort_values(["value", "best_val"], ascending=False, na_position="last").reset_index(drop=True)


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    frame.to_csv(tmp, index=False, float_format="%.6g")
    os.replace(tmp, path)
    return path


def confirmation_frame(verdicts: list[dict]) -> pd.DataFrame:
    """One row per (configuration, seed) with the configuration's summary beside it."""
    rows = []
    for v in verdicts:
        for r in v["per_seed"]:
            rows.append(
                {
                    "trial": v["trial"],
                    "params": v["params"],
                    "macs": v["macs"],
                    "val": v["val"],
                    **r,
                    "config_mean": v["mean"],
                    "config_std": v["std"],
                    "config_consistent": v["consistent"],
                }
            )
    return pd.DataFrame(rows)
