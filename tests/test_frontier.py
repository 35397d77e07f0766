"""`nas frontier` end to end, tiny: two budgets, two trials each, one epoch on a subset of real MNIST."""

import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import optuna
import pandas as pd
import pytest

from nas import cli, confirm, events, frontier, search, spec, store, verdict, views

pytestmark = pytest.mark.slow  # a tiny frontier end to end

COMPLETE = optuna.trial.TrialState.COMPLETE

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, data_dir):
    results = tmp_path_factory.mktemp("frontier")
    settings = frontier.Settings(budgets=(6000, 8000), trials=2, select_top=2, select_seeds=1, confirm_top=1,
                                 seeds=2, fresh_seeds=2, epochs=1, train_limit=600, val_limit=300, device="cpu",
                                 data_dir=str(data_dir), results_dir=str(results))  # fmt: skip
    seen = []
    return settings, frontier.run(settings, seen.append), seen


def judged_runs(url: str, study: str) -> dict[int, verdict.Verdict]:
    """The COMPLETE runs of a retraining study (`<search>-select`, `-confirm`, `-fresh`) as stored, each
    configuration's seeds judged here by nas.verdict's rule from their per-epoch accuracies: what the
    frontier decided must follow from these, not from its own objects. Keyed by the search trial."""
    runs = optuna.load_study(study_name=study, storage=url).get_trials(states=[COMPLETE])
    by_trial: dict[int, list] = {}
    for t in sorted(runs, key=lambda t: t.user_attrs["seed"]):
        by_trial.setdefault(t.user_attrs["source_trial"], []).append(t)
    return {
        n: verdict.Verdict(n, ts[0].user_attrs["params"], 0, 0.0, len(ts), [
            verdict.SeedVerdict.judge(t.user_attrs["seed"], [h["eval_acc"] for h in t.user_attrs["history"]])
            for t in ts
        ])
        for n, ts in by_trial.items()
    }  # fmt: skip


def test_each_budget_has_its_studies_and_a_winner_on_fresh_seeds(tiny):
    settings, outcome, seen = tiny
    url = store.default_storage(settings.results_dir)
    names = set(optuna.get_all_study_names(url))
    assert [w.budget for w in outcome.winners] == [6000, 8000]
    for w in outcome.winners:
        own = w.study == f"frontier-b{w.budget}"  # or a smaller budget's winner won again: no fresh runs
        stages = ("", "-select", "-confirm", "-fresh") if own else ("", "-select", "-confirm")
        assert {f"frontier-b{w.budget}{suffix}" for suffix in stages} <= names
        assert own or f"frontier-b{w.budget}-fresh" not in names
    for w in outcome.winners:
        assert w.winner.params < w.budget and w.config.name == f"frontier-{w.budget}"
        assert [r.seed for r in w.winner.per_seed] == [0, 1]  # confirmation seeds
        assert [r.seed for r in w.fresh.per_seed] == [2, 3]  # fresh: no part in choosing it
        assert w.fresh.trial == w.winner.trial
        select = optuna.load_study(study_name=f"frontier-b{w.budget}-select", storage=url)
        assert {t.user_attrs["seed"] for t in select.trials if t.state.name == "COMPLETE"} == {500_000}


def test_each_winner_is_the_rule_s_choice_among_its_confirmed_runs_as_stored(tiny):
    """Rebuilt from the storage alone: each budget's candidates are its -confirm study's runs (confirm_top
    1: one configuration) and then the smaller budget's winner found here; nas.verdict.choose picks among
    them, and the winner's fresh seeds are its -fresh study's runs."""
    settings, outcome, _ = tiny
    url = store.default_storage(settings.results_dir)
    smaller = None  # (study, verdict) of the previous budget's winner, as found here
    for w in outcome.winners:
        own = f"frontier-b{w.budget}"
        (mine,) = judged_runs(url, f"{own}-confirm").values()
        candidates = [(own, mine)] + ([smaller] if smaller else [])
        study, best = candidates[verdict.choose([v for _, v in candidates])]
        # the frontier's candidates: the same configurations, with the numbers their stored runs give
        assert [(s, v.trial, v.per_seed) for s, v in w.confirmed] == [(s, v.trial, v.per_seed) for s, v in candidates]
        assert (w.study, w.winner.trial) == (study, best.trial)
        fresh = judged_runs(url, f"{study}-fresh")  # a winner from a smaller budget keeps that budget's
        assert list(fresh) == [best.trial] and w.fresh.per_seed == fresh[best.trial].per_seed
        smaller = (study, best)


def test_the_announced_runs_after_each_search_are_the_runs_made(tiny, capsys):
    settings, outcome, seen = tiny
    url = store.default_storage(settings.results_dir)
    started = [e for e in seen if isinstance(e, events.BudgetStarted)]
    names = set(optuna.get_all_study_names(url))
    for e, w in zip(started, outcome.winners, strict=True):
        made = {
            stage: len(optuna.load_study(study_name=name, storage=url).get_trials(states=[COMPLETE]))
            if (name := f"frontier-b{e.budget}-{stage}") in names
            else 0
            for stage in ("select", "confirm", "fresh")
        }
        # a smaller budget's winner that wins again is not retested: its fresh seeds are run already
        fresh = 2 if w.study == f"frontier-b{e.budget}" else 0
        assert e.runs_after_search == 2 * 1 + 1 * 2 + 2 and made == {"select": 2, "confirm": 2, "fresh": fresh}
    planned = next(e for e in seen if isinstance(e, events.SearchPlanned))
    view = views.FrontierView()
    view.budget_started(started[0])
    view.plan(planned)  # the run's own estimate: its measured seconds are not known here, its shape is
    assert "then 6 runs x 1 epochs (selection, confirmation, fresh seeds): at most about " in capsys.readouterr().out
    # a literal estimate, every factor other than 1: 6 runs x 3 epochs x 10 s over 2 jobs = 90 s
    literal = events.Estimate(epoch_seconds=10.0, epochs=3, without_pruning=0.0, saving=0.0)
    view.plan(replace(planned, estimate=literal, settings=replace(planned.settings, jobs=2)))
    expected = "then 6 runs x 3 epochs (selection, confirmation, fresh seeds): at most about 0:01:30"
    assert expected in capsys.readouterr().out
    view.plan(replace(planned, estimate=literal, settings=replace(planned.settings, jobs=8)))  # 6 of 8 start
    assert expected.replace("0:01:30", "0:00:30") in capsys.readouterr().out


def test_the_report_files(tiny):
    settings, outcome, _ = tiny
    out = outcome.files[0].parent
    confirmed = pd.read_csv(out / "frontier.csv")
    assert len(confirmed) == (1 + 2) * 2  # (6000's candidate, 8000's and 6000's winner) x seeds
    assert dict(confirmed.groupby("budget")["winner"].sum()) == {6000: 2, 8000: 2}  # one winner's seeds each
    fresh = pd.read_csv(out / "fresh.csv")
    assert sorted(fresh["seed"]) == [2, 2, 3, 3] and set(fresh["budget"]) == {6000, 8000}
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["budget"]) == [6000, 8000] and (summary["ci95_low"] <= summary["mean"]).all()
    assert (summary["mean"] <= summary["ci95_high"]).all()
    url = store.default_storage(settings.results_dir)
    for w, row in zip(outcome.winners, summary.itertuples(), strict=True):
        assert row.mean == pytest.approx(w.fresh.mean) and row.params == spec.param_count(w.config)
        # the answer's numbers are the winner's fresh runs as stored (one epoch: its accuracy is the worst)
        finals = [run.final for run in judged_runs(url, f"{row.study}-fresh")[row.trial].per_seed]
        assert (row.mean, row.worst_last_k) == pytest.approx((sum(finals) / len(finals), min(finals)))
        assert (row.study, row.trial, row.trials) == (w.study, w.winner.trial, 2)
        assert spec.load(out / f"frontier-{w.budget}.json") == w.config
    assert (out / "frontier.png").stat().st_size > 10_000
    url, artifacts = store.default_storage(settings.results_dir), Path(settings.results_dir) / "artifacts"
    for budget in settings.budgets:  # each search study carries the report for the dashboard
        attached = optuna.load_study(study_name=f"frontier-b{budget}", storage=url).user_attrs["frontier_artifacts"]
        assert sorted(attached) == ["fresh.csv", "frontier.csv", "frontier.md", "frontier.png", "summary.csv"]
        for name, a in attached.items():
            assert (artifacts / a["artifact_id"]).read_bytes() == (out / name).read_bytes()


def test_the_markdown_report_holds_every_stage_of_every_budget(tiny):
    settings, outcome, _ = tiny
    text = (outcome.files[0].parent / "frontier.md").read_text()
    answers = text.split("## Each budget's winner on fresh seeds")[1].split("\n## ")[0]
    for w in outcome.winners:
        assert f"| trial {w.winner.trial} of `{w.study}` |" in answers and f"| {w.fresh.finals_text()} |" in answers
        heading = f"## {w.budget:,} parameters (`frontier-b{w.budget}`, 2 trained trials)"
        section = text.split(heading)[1].split("\n## ")[0]
        selection, confirmed = [block.splitlines() for block in section.split("\n\n") if block.startswith("|")]
        assert len(selection) == 2 + settings.select_top and len(confirmed) == 2 + len(w.confirmed)  # header, rule
        assert [line.endswith("| yes |") for line in confirmed[2:]] == [c == (w.study, w.winner) for c in w.confirmed]
        assert f"`nas replay frontier-{w.budget}`" in section and w.fresh.finals_text() in section


def copy_of(settings: frontier.Settings, tmp_path: Path) -> frontier.Settings:
    """The settings on a copy of the module's results folder: a test that writes (a run again, a
    replay) leaves the folder the other tests read as the fixture made it, whatever the order."""
    copy = tmp_path / "results"
    shutil.copytree(settings.results_dir, copy)
    return replace(settings, results_dir=str(copy))


def trials_per_study(url: str) -> dict[str, list[tuple]]:
    """Every study in the storage: each of its trials, in any state, by number, state and the time it
    ended (a run made again, even in a study made again, ends later)."""
    return {
        name: [(t.number, t.state, t.datetime_complete) for t in study.get_trials(deepcopy=False)]
        for name in optuna.get_all_study_names(url)
        for study in [optuna.load_study(study_name=name, storage=url)]
    }


def test_running_it_again_trains_nothing_and_gives_the_same_winners(tiny, tmp_path):
    settings, outcome, _ = tiny
    settings = copy_of(settings, tmp_path)
    url = store.default_storage(settings.results_dir)
    before = trials_per_study(url)
    stages = {f"frontier-b{b}{suffix}" for b in settings.budgets for suffix in ("", "-select", "-confirm")}
    assert stages <= set(before)  # the comparison below covers every stage's study
    complete = {name: [t[1] for t in trials].count(COMPLETE) for name, trials in before.items()}
    assert all(complete[f"frontier-b{b}{suffix}"] == 2 for b in settings.budgets for suffix in ("-select", "-confirm"))
    again = frontier.run(settings)
    # CPU training is deterministic, so equal winners alone would not tell a retrain from none: every
    # study holds the same trials as before (no run added, none made again; no pruned or failed one)
    assert trials_per_study(url) == before
    assert [(w.study, w.winner.trial, w.fresh.finals) for w in again.winners] == [
        (w.study, w.winner.trial, w.fresh.finals) for w in outcome.winners
    ]


def test_replay_a_winner_by_name(tiny, data_dir, capsys, tmp_path):
    settings, outcome, _ = tiny
    settings = copy_of(settings, tmp_path)
    argv = ["replay", "frontier-8000", "--epochs", "1", "--train-limit", "500", "--device", "cpu",
            "--data-dir", str(data_dir), "--results-dir", settings.results_dir]  # fmt: skip
    assert cli.main(argv) == 0
    assert "frontier-8000: verdict" in capsys.readouterr().out
    (run,) = (Path(settings.results_dir) / "runs" / "frontier-8000").iterdir()
    assert spec.load(run / "config.json").layers == outcome.winners[1].config.layers


def test_replay_lists_each_winner_by_name_after_the_baselines(tiny, capsys):
    settings, outcome, _ = tiny
    assert cli.main(["replay", "--list", "--results-dir", settings.results_dir]) == 0
    baselines, winners = capsys.readouterr().out.split("frontier winners")
    assert "baseline-6 " in baselines
    rows = [line for line in winners.splitlines() if "frontier-" in line]
    assert len(rows) == len(outcome.winners)
    for row, w in zip(rows, outcome.winners, strict=True):
        assert f"frontier-{w.budget} " in row and f" {spec.param_count(w.config):,} " in row


def test_settings_a_frontier_cannot_run_with():
    with pytest.raises(frontier.FrontierError, match=r"--confirm-top 3 is more than --select-top 2"):
        frontier.check(frontier.Settings(select_top=2, confirm_top=3))
    with pytest.raises(frontier.FrontierError, match=r"--budgets must be distinct positive"):
        frontier.check(frontier.Settings(budgets=(8000, 8000)))


def test_each_queued_configuration_trains_in_the_smallest_budget_it_fits_under():
    """The committed frontier's nine queued configurations and baseline-6 (7,826 params), placed by
    their parameter counts (4,337 and 4,943; 5,891; 6,974, 7,643, 7,965, 7,296, 6,974, 6,974 and 7,826);
    --trials one per budget."""
    queued = Path(__file__).parents[1] / "search_spaces" / "queued"
    files = {name: str(queued / f"{name}.json") for name in (
        "frontier-b5000-31-onecycle", "cpu-b8000-217-slim5k-onecycle", "cpu-b8000-217-slim-onecycle",
        "cpu-b8000-217-onecycle", "frontier-b8000-31-onecycle", "cpu-b8000-217-wider-onecycle",
        "frontier-b8000-45-onecycle", "cpu-b8000-217-onecycle-wd", "cpu-b8000-217-step")}  # fmt: skip
    settings = frontier.Settings(trials=(18, 17, 34), enqueue=(*files.values(), "baseline-6"))
    frontier.check(settings)
    placed = {b: (settings.search(b).trials, settings.search(b).enqueue) for b in settings.budgets}
    assert placed == {
        5000: (18, (files["frontier-b5000-31-onecycle"], files["cpu-b8000-217-slim5k-onecycle"])),
        6000: (17, (files["cpu-b8000-217-slim-onecycle"],)),
        8000: (
            34,
            (
                files["cpu-b8000-217-onecycle"],
                files["frontier-b8000-31-onecycle"],
                files["cpu-b8000-217-wider-onecycle"],
                files["frontier-b8000-45-onecycle"],
                files["cpu-b8000-217-onecycle-wd"],
                files["cpu-b8000-217-step"],
                "baseline-6",
            ),
        ),
    }
    for budget in settings.budgets:
        search.check(settings.search(budget))  # each under its budget and expressible in the wide space
    assert frontier.Settings(trials=7).search(6000).trials == 7  # one number: every budget


def test_a_smaller_budgets_winner_that_holds_better_wins_again_without_training(tmp_path, monkeypatch):
    """5,000's winner holds 99.30 in its worst epoch and 6,000's own candidate 99.10: 6,000 answers with
    5,000's network and its fresh seeds; 8,000's own candidate is consistent and wins. The searches
    and stages are stand-ins returning these verdicts, so the choice is all that runs."""
    worst = {5000: 99.30, 6000: 99.10, 8000: 99.45}
    config = spec.load_baseline("baseline-6").to_dict()
    fresh_made = []

    def verdict_of(budget: int, seeds) -> verdict.Verdict:
        judged = [
            verdict.SeedVerdict.judge(s, [98.0, worst[budget], worst[budget], worst[budget] + 0.02]) for s in seeds
        ]
        return verdict.Verdict(0, budget - 700, budget * 100, 99.0, len(judged), judged)

    def search_run(s, say):
        optuna.create_study(study_name=s.study, storage=s.storage_url)  # the report is attached to it
        attrs = {"config": config, "history": [{"eval_acc": 99.0}] * 3, "trained": True}
        trial = SimpleNamespace(number=0, state=COMPLETE, user_attrs=attrs)
        stand_in = SimpleNamespace(get_trials=lambda deepcopy: [trial], user_attrs={}, set_user_attr=lambda k, v: None)
        return SimpleNamespace(study=stand_in)

    def confirm_run(s, say):
        budget = int(s.study.removeprefix("frontier-b"))
        if s.stage == "fresh":
            fresh_made.append(budget)
        return SimpleNamespace(verdicts=[verdict_of(budget, range(s.first_seed, s.first_seed + s.seeds))])

    monkeypatch.setattr(search, "run", search_run)
    monkeypatch.setattr(confirm, "run", confirm_run)
    settings = frontier.Settings(select_top=1, confirm_top=1, results_dir=str(tmp_path))
    small, middle, large = frontier.run(settings).winners
    assert fresh_made == [5000, 8000]  # 6,000's answer trains nothing more
    assert (middle.study, middle.budget, middle.config.name) == ("frontier-b5000", 6000, "frontier-6000")
    assert middle.winner is small.winner and middle.fresh is small.fresh
    assert middle.confirmed == [("frontier-b6000", middle.confirmed[0][1]), ("frontier-b5000", small.winner)]
    assert (large.study, large.fresh.params) == ("frontier-b8000", 7300)
    summary = pd.read_csv(tmp_path / "frontier" / "summary.csv")
    assert list(summary["study"]) == ["frontier-b5000", "frontier-b5000", "frontier-b8000"]
    assert list(summary["trials"]) == [1, 1, 1]  # each budget's own search
    assert list(summary["params"]) == [4300, 4300, 7300] and list(summary["consistent"]) == [False, False, True]
    confirmed = pd.read_csv(tmp_path / "frontier" / "frontier.csv")
    winners = confirmed[confirmed["winner"]].drop_duplicates(["budget", "study"])
    assert list(zip(winners["budget"], winners["study"], strict=True)) == [
        (5000, "frontier-b5000"),
        (6000, "frontier-b5000"),
        (8000, "frontier-b8000"),
    ]
