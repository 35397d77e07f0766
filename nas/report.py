"""What a study holds, as tables, figures and a summary (`nas report`): it reads the storage and
the stored weights, runs inference for the pick's figures, and never trains."""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
import pandas as pd
from optuna.trial import TrialState

from nas import data, figures, spec, store, verdict
from nas.files import RESULTS_DIR, folder_name, hms, write_csv, write_text
from nas.model import build


@dataclass(frozen=True)
class Settings:
    study: str
    storage: str | None = None  # None: the results folder's SQLite file
    results_dir: str = RESULTS_DIR  # writes <results_dir>/<study>/; reads artifacts/ and baselines/
    data_dir: str | None = None
    download: bool = True


@dataclass(frozen=True)
class Outcome:
    files: list[Path]
    uploaded: int  # files new or changed since the last report, attached to the study


def run(settings: Settings) -> Outcome:
    """Write the study's report and attach it to the study (artifacts and its dashboard note)."""
    folder_name(settings.study, "--study")  # its report's folder
    study = store.load_study(settings.storage or store.default_storage(settings.results_dir), settings.study)
    mnist = data.load_mnist(settings.data_dir, download=settings.download)
    artifacts = store.artifacts_folder(settings.results_dir)
    files, note = write_report(study, Path(settings.results_dir), artifacts, mnist)
    uploaded = attach(study, [p for p in files if p.suffix in (".png", ".md", ".json")], artifacts, note)
    return Outcome(files, uploaded)


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
                # the study's objective (its identity's `objective`: the worst of the last K validation
                # epochs; a study that records none used their mean); completed trials only (Optuna gives a
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


def summary(study: optuna.Study) -> dict:
    """The search in numbers: proposals, infeasible share, trained trials by state, and the epochs
    trained against those a search without pruning would have trained."""
    trials = study.get_trials(deepcopy=False)
    epochs = study.user_attrs.get("identity", {}).get("epochs", 15)
    trained = [t for t in trials if t.user_attrs.get("trained") and t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    proposed = [t for t in trials if "params" in t.user_attrs or t.user_attrs.get("infeasible")]
    infeasible = sum(1 for t in proposed if t.user_attrs.get("infeasible"))
    done = sum(len(t.user_attrs.get("history", [])) for t in trained)
    return {
        "proposed": len(proposed),
        "infeasible": infeasible,
        "infeasible_share": infeasible / len(proposed) if proposed else 0.0,
        "trained": len(trained),
        "completed": sum(1 for t in trained if t.state == TrialState.COMPLETE),
        "pruned": sum(1 for t in trained if t.state == TrialState.PRUNED),
        "failed": sum(1 for t in trials if t.user_attrs.get("trained") and t.state == TrialState.FAIL),
        "epochs_trained": done,
        "epochs_without_pruning": len(trained) * epochs,
        "train_seconds": sum(t.user_attrs.get("seconds", 0.0) for t in trained),
    }


def summary_line(summary: dict) -> str:
    """The summary in one sentence: what the search proposed, trained and saved by pruning."""
    x = summary
    saved = 1 - x["epochs_trained"] / x["epochs_without_pruning"] if x["epochs_without_pruning"] else 0.0
    return (
        f"{x['proposed']} proposals, {x['infeasible']} infeasible ({100 * x['infeasible_share']:.0f}%, never "
        f"trained); {x['trained']} trained: {x['completed']} completed, {x['pruned']} pruned; "
        f"{x['epochs_trained']} of {x['epochs_without_pruning']} epochs trained ({100 * saved:.0f}% saved by "
        f"pruning), {hms(x['train_seconds'])} of trial time summed over workers"
    )


def write_leaderboard(study: optuna.Study, path: Path) -> tuple[pd.DataFrame, Path]:
    frame = leaderboard(study)
    return frame, write_csv(frame, path)


def confirmation_frame(verdicts: list[verdict.Verdict]) -> pd.DataFrame:
    """One row per (configuration, seed) with the configuration's summary beside it."""
    rows = []
    for v in verdicts:
        for r in v.per_seed:
            rows.append(
                {
                    "trial": v.trial,
                    "params": v.params,
                    "macs": v.macs,
                    "val": v.val,
                    **r.to_dict(),
                    "config_mean": v.mean,
                    "config_std": v.std,
                    "config_consistent": v.consistent,
                }
            )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- nas report


def replayed(results_dir: Path, name: str) -> dict | None:
    """The latest committed replay of a baseline: seeds, mean final and best test accuracy."""
    runs = sorted((results_dir / "baselines" / name).glob("*/run.json"))
    if not runs:
        return None
    record = json.loads(runs[-1].read_text())
    v = [r["verdict"] for r in record["runs"]]
    return {
        "seeds": len(v),
        "final": sum(x["final"] for x in v) / len(v),
        "best": max(x["best"] for x in v),
        "train_limit": record.get("train_limit"),
        "path": str(runs[-1].parent),
    }


def baselines_frame(study: optuna.Study, results_dir: Path) -> pd.DataFrame:
    """The reference baselines: the reference's reported numbers, our replays, and their trial in this study."""
    in_study = {
        t.user_attrs.get("baseline"): t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("trained")
    }
    rows = []
    for name in spec.baseline_names():
        config = spec.load_baseline(name)
        rep = config.reported or spec.Reported()
        ours = replayed(results_dir, name)
        t = in_study.get(name)
        rows.append(
            {
                "baseline": name,
                "params": spec.param_count(config),
                "macs": spec.macs(config),
                "rf": spec.receptive_field(config),
                "reference_train_%": rep.train_acc,
                "reference_test_%": rep.test_acc,
                "replay_seeds": ours["seeds"] if ours else None,
                "replay_final_test_%": round(ours["final"], 2) if ours else None,
                "replay_best_test_%": round(ours["best"], 2) if ours else None,
                "trial": t.number if t else None,
                "trial_state": t.state.name.lower() if t else None,
                "trial_val_%": round(t.value, 2) if t is not None and t.state == TrialState.COMPLETE else None,
            }
        )
    return pd.DataFrame(rows)


def markdown(frame: pd.DataFrame) -> str:
    """A pandas frame as a markdown table (no extra dependency: pandas' to_markdown needs tabulate)."""
    cells = frame.astype(object).where(frame.notna(), "-")
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in cells.itertuples(index=False)]
    return "\n".join(lines)


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.2f}" if not v.is_integer() else f"{int(v):,}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def verdicts_frame(verdicts: list[verdict.Verdict], last_k: int = verdict.LAST_K) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "trial": v.trial,
                "params": v.params,
                "MACs": v.macs,
                "val %": v.val,
                "final test % per seed": v.finals_text(),
                f"min last {last_k} per seed": v.mins_text(),
                "mean ± std": v.mean_std(),
                "consistent": "yes" if v.consistent else "no",
            }
            for v in verdicts
        ]
    )


def write_report(study: optuna.Study, results_dir: Path, artifacts: str, mnist: dict | None) -> tuple[list[Path], str]:
    """Everything `nas report` writes to results/<study>/: leaderboard.csv, summary.md and the
    figures; and the dashboard note (the summary up to the baselines). Reads the storage and the
    stored weights; never trains."""
    out = results_dir / study.study_name
    ident = study.user_attrs.get("identity", {})
    budget = ident.get("budget", 8000)
    frame, counts = leaderboard(study), summary(study)
    files = [write_csv(frame, out / "leaderboard.csv")]
    title = f"{study.study_name}: validation accuracy vs parameters (budget {budget:,})"
    files.append(figures.params_vs_accuracy(frame, budget, out / "params_vs_accuracy.png", title))
    weights = importances(study)
    files.append(figures.optuna_plot("optimization_history", study, out / "optimization_history.png"))
    if weights is not None:  # the plot with the table's dimensions, in a fixed order (the result depends on it)
        files.append(write_csv(weights, out / "importances.csv"))
        params = sorted(weights["dimension"])
        files.append(figures.optuna_plot("param_importances", study, out / "param_importances.png", params=params))
    files.append(figures.optuna_plot("intermediate_values", study, out / "intermediate_values.png"))

    verdicts = [v for v in verdict.stored(study) if v.seeds_done]
    best = None
    if verdicts:
        runs = confirmation_runs(store.load_stage(study))
        curves = {
            f"trial {v.trial} ({v.params:,} params)": [
                [h["eval_acc"] for h in runs[(v.trial, r.seed)].user_attrs["history"]] for r in v.per_seed
            ]
            for v in verdicts
        }
        files.append(figures.confirmation_curves(curves, out / "confirmation_curves.png"))
        best = verdicts[0]  # chosen by validation, as `nas export` does: picking by test accuracy would flatter it
        if mnist is not None and all(runs[(best.trial, r.seed)].user_attrs.get("weights") for r in best.per_seed):
            files += best_model_figures(study, best, runs, artifacts, mnist, out)

    settings = study.user_attrs.get("settings", {})
    shown = ("trials", "jobs", "sampler", "pruner", "seed", "train_limit", "val_limit")
    lines = [
        f"# Study `{study.study_name}`",
        "",
        f"Space `{ident.get('space')}` (sha256 {str(ident.get('space_sha256'))[:12]}), budget {budget:,} parameters, "
        f"{ident.get('epochs')} epochs, {ident.get('split')}; "
        + ", ".join(f"{k} {settings[k]}" for k in shown if settings.get(k) is not None)
        + f"; nas {study.user_attrs.get('nas_version')}.",
        "",
        summary_line(counts),
        "",
        "## Top configurations, confirmed on the test set",
        "",
        markdown(verdicts_frame(verdicts)) if verdicts else "No confirmation yet: `nas confirm --study NAME`.",
        "",
    ]
    if best is not None:
        config = spec.from_dict(study.trials[best.trial].user_attrs["config"])
        files.append(write_text(out / "best_config.json", config.to_json()))  # `nas train --config` takes it
        rf = pd.DataFrame(spec.rf_table(config), columns=spec.RF_COLUMNS)
        lines += [
            f"## The pick: trial {best.trial} ({best.params:,} params, "
            f"{best.macs:,} MACs, mean final test {best.mean:.2f}%)",
            "",
            "The confirmed configuration best on validation (chosen without the test set, as `nas export` "
            "chooses; its test figures are above).",
            "",
            "```json",
            compact_json(config),
            "```",
            "",
            markdown(rf),
            "",
        ]
    note = "\n".join(lines)  # the dashboard's note: the study and its confirmation
    lines += [
        "## Which dimensions mattered",
        "",
        f"Optuna's parameter importances (PED-ANOVA) over the {counts.get('completed', 0)} completed "
        "trials; a handful of trials ranks the dimensions only roughly.",
        "",
        markdown(weights) if weights is not None else "Too few completed trials.",
        "",
        "## The reference baselines",
        "",
        "Reference: the numbers the reference experiment reported (one run). Replay: `nas replay NAME` (the "
        "latest run under this results folder's baselines/). Trial: the baseline as a trial of this study "
        "(validation split).",
        "",
        markdown(baselines_frame(study, results_dir)),
        "",
        "## Figures",
        "",
    ]
    lines += [f"![{p.stem}]({p.name})" for p in files if p is not None and p.suffix == ".png"]
    files.append(write_text(out / "summary.md", "\n".join(lines) + "\n"))
    return [p for p in files if p is not None], note


def importances(study: optuna.Study) -> pd.DataFrame | None:
    """Each dimension's importance to the trials' values (Optuna's default evaluator, PED-ANOVA:
    which values the best trials have in common); None under 2 completed trials."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PED-ANOVA warns of values few trials took; summary.md says so
        try:
            # sorted: the result depends on the parameters' order (a hash-seeded set otherwise)
            names = sorted(optuna.importance.get_param_importances(study))
            shares = optuna.importance.get_param_importances(study, params=names)
        except (ValueError, RuntimeError):
            return None
    rows = sorted(shares.items(), key=lambda kv: (-kv[1], kv[0]))
    return pd.DataFrame([{"dimension": k, "importance": round(v, 3)} for k, v in rows])


def confirmation_runs(conf: optuna.Study) -> dict:
    return {
        (t.user_attrs["source_trial"], t.user_attrs["seed"]): t
        for t in conf.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    }


def best_model_figures(study, best: verdict.Verdict, runs: dict, artifacts: str, mnist: dict, out: Path) -> list[Path]:
    """Confusion matrix and misclassified digits of the pick (best on validation), with the
    stored weights of its median seed (inference only)."""
    import numpy as np
    import torch

    seed = verdict.pick_seed({r.seed: r.final for r in best.per_seed})
    config = spec.from_dict(study.trials[best.trial].user_attrs["config"])
    model = build(config)
    model.load_state_dict(store.load_weights(runs[(best.trial, seed)], artifacts))
    split = data.make_split(mnist, "test")
    with torch.inference_mode():
        pred = torch.cat([model.eval()(x).argmax(1) for x in split.eval_x.split(2000)]).numpy()
    true = split.eval_y.numpy()
    matrix = np.zeros((10, 10), dtype=int)
    np.add.at(matrix, (true, pred), 1)
    wrong = np.flatnonzero(pred != true)
    name = f"trial {best.trial}, seed {seed}: {100 * (1 - len(wrong) / len(true)):.2f}% test, {len(wrong)} errors"
    return [
        figures.confusion(matrix, out / "confusion_matrix.png", name),
        figures.misclassified(
            mnist["test_x"][wrong].numpy(), true[wrong], pred[wrong], out / "misclassified.png", name
        ),
    ]


def attach(
    study: optuna.Study, files: list[Path], artifacts: str, note: str | None = None, record: str = "report_artifacts"
) -> int:
    """Upload the report's files to the study as Optuna artifacts (optuna-dashboard shows them
    beside the trials) and save `note`, if any, as the study's dashboard note. A file whose content
    changed since the last upload is written over its artifact (same id: the dashboard lists each
    file once; the ids are kept in the study's `record` attribute); returns how many files were
    uploaded or rewritten."""
    import optuna_dashboard  # its web server's imports: only when a report is attached

    artifact_store = store.artifact_store(artifacts)
    known = dict(study.user_attrs.get(record, {}))
    uploaded = 0
    for path in files:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if known.get(path.name, {}).get("sha256") == digest:
            continue
        if path.name in known:
            artifact_id = known[path.name]["artifact_id"]
            with path.open("rb") as body:
                artifact_store.write(artifact_id, body)
        else:
            artifact_id = optuna.artifacts.upload_artifact(
                artifact_store=artifact_store, file_path=str(path), study_or_trial=study
            )
        known[path.name] = {"sha256": digest, "artifact_id": artifact_id}
        uploaded += 1
    study.set_user_attr(record, known)
    if note is not None:
        optuna_dashboard.save_note(study, note)
    return uploaded


def compact_json(config) -> str:
    """The config as JSON with one line per layer: short enough to read in a report."""
    d = config.to_dict()
    layers = ",\n".join(f"    {json.dumps(x)}" for x in d["layers"])
    name, recipe = json.dumps(d["name"]), json.dumps(d["recipe"])
    return f'{{\n  "name": {name},\n  "layers": [\n{layers}\n  ],\n  "recipe": {recipe}\n}}'
