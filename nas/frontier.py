"""`nas frontier`: the smallest network that holds 99.4% at each of several budgets.

For each budget, in one storage (each study visible in optuna-dashboard, each resumable):
1. a search, study "<name>-b<budget>" (nas.search, no confirmation of its own); each `--enqueue`
   configuration is queued first in the search of the smallest budget it fits under (a larger
   budget meets it through rule 4);
2. selection without the test set: the `select_top` best distinct configurations retrained on the
   search's validation split with `select_seeds` more seeds; each is ranked by its worst seed's
   worst of the last K epochs (its search trial counts as one more seed);
3. the confirmation of the `confirm_top` best of those on the test set with `seeds` seeds;
4. the winner, chosen among the confirmed configurations by nas.verdict.choose (the most consistent
   seeds, then differences within the seeds' noise are ties that the smaller network wins: a choice
   made on the test set), retested on `fresh_seeds` seeds that took no part in choosing it: the
   frontier's numbers.
   The next smaller budget's winner fits this budget too and competes under the same rule, so a
   larger budget never answers with a network that holds worse than a smaller budget's (its
   fresh seeds are already run: winning again trains nothing).
Fresh seeds stay fresh: before a budget's first test-set run, what the frontier chooses from (its
budgets, space, trials, queue and stage sizes: `fixed`) is recorded on that budget's study, and a
frontier with a record refuses to run with anything else; to try more, start one with a new `--name`.
The report: results/<name>/frontier.md (every stage's table, budget by budget), frontier.csv (one
row per confirmed configuration), fresh.csv (the winners' fresh seeds), summary.csv (one row per
budget), frontier.png, and each winner's config as <name>-<budget>.json, which
`nas replay <name>-<budget>` replays. The tables and the figure are also attached to each budget's
search study, for optuna-dashboard.
"""

from __future__ import annotations

import functools
import hashlib
import json
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import optuna
import pandas as pd

from nas import NasError, confirm, figures, report, search, space, spec, store, verdict
from nas.events import BudgetStarted
from nas.files import RESULTS_DIR, folder_name, write_csv, write_text


class FrontierError(NasError, ValueError):
    """Budgets or settings a frontier cannot run with."""


@dataclass(frozen=True)
class Settings:
    budgets: tuple[int, ...] = (5000, 6000, 8000)
    name: str = "frontier"  # studies "<name>-b<budget>"; report in <results_dir>/<name>/
    space: str = "wide"
    trials: int | tuple[int, ...] = 60  # trained trials per budget: one number, or one per budget
    select_top: int = 6  # configurations retrained on validation before the test set is read
    select_seeds: int = 2  # more seeds for each of them
    confirm_top: int = 3  # of those, confirmed on the test set
    seeds: int = 5  # confirmation seeds: 0 .. seeds - 1
    fresh_seeds: int = 5  # the winner's seeds after those: seeds .. seeds + fresh_seeds - 1
    jobs: int = 1
    pruner: str = "median"  # kept the 3 best of the wide space's unpruned curves; Hyperband did not (docs/search.md)
    seed: int = 0  # sampler seed
    device: str = "auto"
    data_dir: str | None = None
    download: bool = True
    results_dir: str = RESULTS_DIR
    storage: str | None = None
    epochs: int | None = None  # quick runs
    train_limit: int | None = None
    val_limit: int | None = None
    enqueue: tuple[str, ...] = ()  # baseline names or config files, each queued in one budget's search

    def search(self, budget: int) -> search.Settings:
        keys = ("space", "jobs", "pruner", "seed", "device", "data_dir", "download", "results_dir",
                "storage", "epochs", "train_limit", "val_limit")  # fmt: skip
        given = {k: getattr(self, k) for k in keys}
        queued = tuple(x for x in self.enqueue if home(x, self.budgets) == budget)
        study, trials = f"{self.name}-b{budget}", self.trials_for(budget)
        return search.Settings(budget=budget, study=study, confirm=False, trials=trials, enqueue=queued, **given)

    def trials_for(self, budget: int) -> int:
        trials = self.trials_given()
        return trials[0] if len(trials) == 1 else trials[self.budgets.index(budget)]

    def trials_given(self) -> tuple[int, ...]:
        return self.trials if isinstance(self.trials, tuple) else (self.trials,)

    def stage(self, budget: int, stage: str, trials: tuple[int, ...], seeds: int, first_seed: int):
        """nas.confirm's settings for one stage of this budget."""
        return replace(
            search.confirm_settings(self.search(budget)), stage=stage, trials=trials, top=self.select_top,
            seeds=seeds, first_seed=first_seed, val_limit=self.val_limit, download=False,
        )  # fmt: skip


@dataclass(frozen=True)
class Winner:
    budget: int
    trials: int  # trained trials in this budget's search
    selected: list[tuple[verdict.Verdict, float]]  # this budget's selection, ranked: (verdict, worst)
    study: str  # the search study the winner comes from: this budget's or a smaller budget's
    confirmed: list[tuple[str, verdict.Verdict]]  # (study, candidate) on the test set: this budget's
    # in selection order, then the smaller budget's winner
    winner: verdict.Verdict  # the one chosen among them
    fresh: verdict.Verdict  # the winner on fresh seeds
    config: spec.Config


@dataclass(frozen=True)
class Outcome:
    winners: list[Winner]
    files: list[Path]

    @property
    def summary(self) -> list[dict]:
        """One row per budget: its winner on fresh seeds (summary.csv's rows)."""
        return summary_rows(self.winners)


def check(settings: Settings) -> None:
    folder_name(settings.name, "--name", "a frontier's name")
    if (
        not settings.budgets
        or any(b < 1 for b in settings.budgets)
        or len(set(settings.budgets)) < len(settings.budgets)
    ):
        raise FrontierError(f"--budgets must be distinct positive numbers of parameters, got {settings.budgets}")
    if settings.confirm_top > settings.select_top:
        raise FrontierError(f"--confirm-top {settings.confirm_top} is more than --select-top {settings.select_top}")
    trials = settings.trials_given()
    if len(trials) not in (1, len(settings.budgets)) or min(trials) < 1:
        raise FrontierError(
            f"--trials takes one number, or one per budget ({len(settings.budgets)} here), each >= 1; "
            f"got {','.join(map(str, trials))}"
        )
    for name in settings.enqueue:
        if home(name, settings.budgets) is None:
            n = spec.param_count(spec.resolve(name))
            raise FrontierError(
                f"--enqueue {name}: {n:,} params, at or over every budget (the largest is {max(settings.budgets):,})"
            )


@functools.cache
def home(name: str, budgets: tuple[int, ...]) -> int | None:
    """The smallest budget the configuration fits under, None if none. One that does not load goes to
    the smallest budget, whose nas.search.check reports why in its own words."""
    try:
        n = spec.param_count(spec.resolve(name))
    except spec.SpecError:
        return min(budgets)
    return min((b for b in budgets if n < b), default=None)


def run(settings: Settings, on_progress: Callable[[object], None] | None = None) -> Outcome:
    """Every budget in turn (a finished stage is not run again: the same command resumes), then the report."""
    say = on_progress or (lambda event: None)
    check(settings)
    for budget in settings.budgets:
        search.check(settings.search(budget))  # every budget's settings, before anything is trained
    refuse_changes(settings)
    s = settings  # each budget's runs after its search:
    after = s.select_top * s.select_seeds + s.confirm_top * s.seeds + s.fresh_seeds
    winners: list[Winner] = []
    for i, budget in enumerate(sorted(settings.budgets), start=1):
        say(BudgetStarted(budget, i, len(settings.budgets), after))
        winners.append(one_budget(settings, budget, say, winners[-1] if winners else None))
    return Outcome(winners, write_report(settings, winners))


def one_budget(settings: Settings, budget: int, say, smaller: Winner | None = None) -> Winner:
    own = settings.search(budget).study
    found = search.run(settings.search(budget), say).study
    searched = store.counts(found)["trained"]  # more than --trials where the study was searched further
    chosen = confirm.run(settings.stage(budget, "select", (), settings.select_seeds, 500_000), say)
    if "frontier_fixed" not in found.user_attrs:  # the test set is read next: from here on, nothing is added
        found.set_user_attr("frontier_fixed", fixed(settings))
    # the selection's verdicts, with each configuration's own search trial as one more seed
    trials = {t.number: t for t in found.get_trials(deepcopy=False)}  # read once, not per comparison
    ranked = sorted(((v, worst(v, trials[v.trial])) for v in chosen.verdicts), key=lambda x: (-x[1], x[0].params))
    candidates = tuple(v.trial for v, _ in ranked[: settings.confirm_top])
    confirmed = [
        (own, v) for v in confirm.run(settings.stage(budget, "confirm", candidates, settings.seeds, 0), say).verdicts
    ]
    if smaller is not None:
        confirmed.append((smaller.study, smaller.winner))
    study, best = confirmed[verdict.choose([v for _, v in confirmed])]  # on a full tie, this budget's own
    name = f"{settings.name}-{budget}"
    if study != own:  # the smaller budget's winner holds better: it stays the answer, fresh seeds and all
        return replace(
            smaller, budget=budget, trials=searched, selected=ranked, confirmed=confirmed,
            config=replace(smaller.config, name=name),
        )  # fmt: skip
    fresh = confirm.run(settings.stage(budget, "fresh", (best.trial,), settings.fresh_seeds, settings.seeds), say)
    config = spec.from_dict(trials[best.trial].user_attrs["config"])
    return Winner(budget, searched, ranked, own, confirmed, best, fresh.verdicts[0], replace(config, name=name))


FIXED = ("budgets", "trials", "select_top", "select_seeds", "confirm_top", "seeds", "fresh_seeds",
         "pruner", "seed", "epochs", "train_limit", "val_limit")  # fmt: skip


def fixed(settings: Settings) -> dict:
    """What a frontier chooses from, as JSON values: the settings that decide which configurations it
    trains, selects and confirms; the space and each queued configuration by the sha256 of what they
    hold (a space named or given as a path is the same space)."""
    record = {k: getattr(settings, k) for k in FIXED}
    record["space_sha256"] = space.load(settings.space).sha256
    queued = map(spec.resolve, settings.enqueue)  # by name, so that a path written another way is the same
    record["enqueue"] = {c.name: hashlib.sha256(c.to_json().encode()).hexdigest() for c in queued}
    return json.loads(json.dumps(record))


def refuse_changes(settings: Settings) -> None:
    """A frontier whose test set has been read (a budget's study holds the record) runs only as recorded."""
    now = fixed(settings)
    url = settings.search(settings.budgets[0]).storage_url
    names = set(optuna.get_all_study_names(store.open_storage(url)))
    for budget in settings.budgets:
        name = settings.search(budget).study
        record = store.load_study(url, name).user_attrs.get("frontier_fixed") if name in names else None
        if record is None or record == now:
            continue
        key = next(k for k in {**record, **now} if record.get(k) != now.get(k))
        raise FrontierError(
            f"frontier {settings.name!r} has read the test set, so what it chooses from is fixed: {key} was "
            f"{record.get(key)!r}, now {now.get(key)!r}; run it as it was, or start a new one with another --name"
        )


def worst(v: verdict.Verdict, trial) -> float:
    """The worst of the last K validation epochs over the selection's seeds and the search trial's."""
    own = verdict.tail([h["eval_acc"] for h in trial.user_attrs["history"]])
    return min([min(own), *(r.min_last_k for r in v.per_seed)])


# --------------------------------------------------------------------------- the report

T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}  # Student's t


def interval(values: list[float]) -> tuple[float, float]:
    """The 95% confidence interval of the mean (Student's t; the normal's 1.96 past 10 values)."""
    mean = statistics.mean(values)
    if len(values) < 2:
        return mean, mean
    half = T_975.get(len(values) - 1, 1.96) * statistics.stdev(values) / len(values) ** 0.5
    return mean - half, mean + half


def summary_rows(winners: list[Winner]) -> list[dict]:
    rows = []
    for w in winners:
        f = w.fresh
        lo, hi = interval(f.finals)
        rows.append(
            {
                "budget": w.budget,
                "trials": w.trials,
                "name": w.config.name,
                "study": w.study,
                "trial": w.winner.trial,
                "params": f.params,
                "macs": f.macs,
                "seeds": " ".join(str(r.seed) for r in f.per_seed),
                "mean": f.mean,
                "std": f.std,
                "ci95_low": lo,
                "ci95_high": hi,
                "worst_last_k": min(r.min_last_k for r in f.per_seed),
                "consistent": f.consistent,
            }
        )
    return rows


def write_report(settings: Settings, winners: list[Winner]) -> list[Path]:
    out = Path(settings.results_dir) / settings.name
    confirmed = [
        {"budget": w.budget, "study": study, "winner": (study, v.trial) == (w.study, w.winner.trial), **row}
        for w in winners
        for study, v in w.confirmed
        for row in verdict_rows(v)
    ]
    fresh = [{"budget": w.budget, "study": w.study, **row} for w in winners for row in verdict_rows(w.fresh)]
    summary = summary_rows(winners)
    files = [
        write_text(out / "frontier.md", markdown_report(settings, winners, summary)),
        write_csv(pd.DataFrame(confirmed), out / "frontier.csv"),
        write_csv(pd.DataFrame(fresh), out / "fresh.csv"),
        write_csv(pd.DataFrame(summary), out / "summary.csv"),
        figures.frontier(summary, replayed_baselines(settings), out / "frontier.png"),
    ]
    shown = files[:]  # the tables and the figure, for the dashboard
    files += [write_text(out / f"{w.config.name}.json", w.config.to_json()) for w in winners]
    files.append(write_text(out / "settings.json", json.dumps(asdict(settings), indent=2) + "\n"))
    for budget in settings.budgets:
        search_settings = settings.search(budget)
        study = store.load_study(search_settings.storage_url, search_settings.study)
        report.attach(study, shown, store.artifacts_folder(settings.results_dir), record="frontier_artifacts")
    return files


def markdown_report(settings: Settings, winners: list[Winner], summary: list[dict]) -> str:
    """frontier.md: the answers, then each budget's stages as tables, from the same verdicts as the CSVs."""
    s, k = settings, verdict.LAST_K
    lines = [
        f"# Frontier `{s.name}`",
        "",
        f"Space `{s.space}`; per budget: a search, the {s.select_top} best configurations retrained on the "
        f"validation split with {s.select_seeds} more seed{'s' * (s.select_seeds != 1)}, the {s.confirm_top} that "
        f"hold best confirmed on the test set with seeds 0-{s.seeds - 1}, and the winner retested on seeds "
        f"{s.seeds}-{s.seeds + s.fresh_seeds - 1}. "
        f"*Consistent*: at or above {verdict.THRESHOLD:.2f}% in each of the last {k} epochs. "
        "Settings: [settings.json](settings.json).",
        "",
        "## Each budget's winner on fresh seeds",
        "",
        table([answer_row(r, w.fresh) for r, w in zip(summary, winners, strict=True)]),
    ]
    for w in winners:
        own, f = s.search(w.budget).study, w.fresh
        lines += [
            "",
            f"## {w.budget:,} parameters (`{own}`, {w.trials} trained trials)",
            "",
            f"Selection on the validation split; worst: the lowest of the last {k} epochs over these seeds and "
            "the search trial's own.",
            "",
            table([selection_row(v, lowest) for v, lowest in w.selected]),
            "",
            "Confirmed on the test set; the winner holds best (consistent, then the worst seed's worst epoch, "
            "then fewer parameters):",
            "",
            table([confirmed_row(v, study, own, w) for study, v in w.confirmed]),
            "",
            f"The winner, trial {w.winner.trial} of `{w.study}` ({f.params:,} parameters, `nas replay "
            f"{w.config.name}`): {spec.layers_line(w.config)}; {spec.recipe_line(w.config.recipe)}. "
            f"On fresh seeds {f.per_seed[0].seed}-{f.per_seed[-1].seed}: {f.finals_text()} "
            f"(min of the last {k} epochs {f.mins_text()}), {f.mean_std()}; consistent seeds: {held(f)}.",
        ]
    return "\n".join(lines) + "\n"


def table(rows: list[dict]) -> str:
    return report.markdown(pd.DataFrame(rows))


def answer_row(r: dict, fresh: verdict.Verdict) -> dict:
    return {
        "budget": r["budget"], "trials": r["trials"], "winner": f"trial {r['trial']} of `{r['study']}`",
        "params": r["params"], "MACs": r["macs"], "seeds": r["seeds"], "final test % per seed": fresh.finals_text(),
        "mean ± std": fresh.mean_std(), "95% interval": f"{r['ci95_low']:.2f}-{r['ci95_high']:.2f}",
        f"worst of last {verdict.LAST_K}": f"{r['worst_last_k']:.2f}", "consistent seeds": held(fresh),
    }  # fmt: skip


def selection_row(v: verdict.Verdict, lowest: float) -> dict:
    return {
        "trial": v.trial, "params": v.params, "MACs": v.macs, "search value": f"{v.val:.2f}",
        "final val % per seed": v.finals_text(), f"min last {verdict.LAST_K} per seed": v.mins_text(),
        "worst": f"{lowest:.2f}",
    }  # fmt: skip


def confirmed_row(v: verdict.Verdict, study: str, own: str, w: Winner) -> dict:
    winner = (study, v.trial) == (w.study, w.winner.trial)
    return {
        "configuration": f"trial {v.trial}" + ("" if study == own else f" of `{study}`"), "params": v.params,
        "MACs": v.macs, "final test % per seed": v.finals_text(), f"min last {verdict.LAST_K} per seed": v.mins_text(),
        "mean ± std": v.mean_std(), "consistent seeds": held(v), "winner": "yes" if winner else "",
    }  # fmt: skip


def held(v: verdict.Verdict) -> str:
    return f"{'yes' if v.consistent else 'no'} ({sum(r.consistent for r in v.per_seed)} of {len(v.per_seed)})"


def replayed_baselines(settings: Settings) -> list[tuple[int, float, str]]:
    """(params, mean final test accuracy, label) of the reference's baselines near the budgets that
    `nas replay` ran in full under this results folder, for the figure."""
    points = []
    for name in spec.baseline_names():
        params = spec.param_count(spec.load_baseline(name))
        if params > 1.25 * max(settings.budgets):  # far off the figure: no need to read its replay
            continue
        run = report.replayed(Path(settings.results_dir), name)
        if run and run["train_limit"] is None:
            points.append((params, run["final"], f"{name} ({run['seeds']} seed{'s' * (run['seeds'] > 1)})"))
    return points


def verdict_rows(v: verdict.Verdict) -> list[dict]:
    """One row per seed of a configuration: its per-seed figures beside the configuration's."""
    config = {"trial": v.trial, "params": v.params, "macs": v.macs, "mean": v.mean, "std": v.std}
    return [{**config, **r.to_dict(), "config_consistent": v.consistent} for r in v.per_seed]


def winner_files(results_dir: str | Path) -> dict[str, Path]:
    """The configs frontiers wrote as `<name>-<budget>.json` under the results folder and its committed
    evidence, by name (`nas replay frontier-8000`); a user's own frontier first, where names clash."""
    found: dict[str, Path] = {}
    for folder in (Path(results_dir), Path(results_dir) / "evidence"):
        for path in sorted(folder.glob("*/*.json")):
            if (path.parent / "summary.csv").exists() and path.stem.rpartition("-")[2].isdigit():  # <name>-<budget>
                found.setdefault(path.stem, path)
    return found


def winner_config(name: str, results_dir: str | Path) -> spec.Config | None:
    """The config of the frontier winner called `name`; None when there is none."""
    path = winner_files(results_dir).get(name)
    return spec.load(path) if path else None
