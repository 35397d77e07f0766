"""`nas frontier` end to end, tiny: two budgets, two trials each, one epoch on a subset of real MNIST."""

import optuna
import pandas as pd
import pytest

from nas import cli, display, frontier, search, spec, store, views

COMPLETE = optuna.trial.TrialState.COMPLETE

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, data_dir):
    results = tmp_path_factory.mktemp("frontier")
    settings = frontier.Settings(budgets=(6000, 8000), trials=2, select_top=2, select_seeds=1, confirm_top=1,
                                 seeds=2, fresh_seeds=2, epochs=1, train_limit=600, val_limit=300, device="cpu",
                                 data_dir=str(data_dir), results_dir=str(results))  # fmt: skip
    events = []
    return settings, frontier.run(settings, events.append), events


def test_each_budget_has_its_studies_and_a_winner_on_fresh_seeds(tiny):
    settings, outcome, events = tiny
    url = store.default_storage(settings.results_dir)
    names = set(optuna.get_all_study_names(url))
    for budget in (6000, 8000):
        assert {f"frontier-b{budget}{suffix}" for suffix in ("", "-select", "-confirm", "-fresh")} <= names
    assert [w.budget for w in outcome.winners] == [6000, 8000]
    for w in outcome.winners:
        assert w.winner.params < w.budget and w.config.name == f"frontier-{w.budget}"
        assert [r.seed for r in w.winner.per_seed] == [0, 1]  # confirmation seeds
        assert [r.seed for r in w.fresh.per_seed] == [2, 3]  # fresh: no part in choosing it
        assert w.fresh.trial == w.winner.trial and w.winner in w.confirmed
        select = optuna.load_study(study_name=f"frontier-b{w.budget}-select", storage=url)
        assert {t.user_attrs["seed"] for t in select.trials if t.state.name == "COMPLETE"} == {500_000}


def test_the_announced_runs_after_each_search_are_the_runs_made(tiny, capsys):
    settings, _, events = tiny
    url = store.default_storage(settings.results_dir)
    started = [e for e in events if isinstance(e, frontier.BudgetStarted)]
    for e in started:
        made = sum(
            len(
                optuna.load_study(study_name=f"frontier-b{e.budget}-{stage}", storage=url).get_trials(states=[COMPLETE])
            )
            for stage in ("select", "confirm", "fresh")
        )
        assert e.runs_after_search == made == 2 * 1 + 1 * 2 + 2
    planned = next(e for e in events if isinstance(e, search.SearchPlanned))
    view = views.FrontierView()
    view.budgetstarted(started[0])
    view.plan(planned)
    x = planned.estimate
    hms = display.hms(6 * x.epochs * x.epoch_seconds / settings.jobs)
    expected = f"then 6 runs x 1 epochs (selection, confirmation, fresh seeds): at most about {hms}"
    assert expected in capsys.readouterr().out


def test_the_report_files(tiny):
    settings, outcome, _ = tiny
    out = outcome.files[0].parent
    confirmed = pd.read_csv(out / "frontier.csv")
    assert len(confirmed) == 2 * 1 * 2 and confirmed["winner"].all()  # budgets x confirmed x seeds
    fresh = pd.read_csv(out / "fresh.csv")
    assert sorted(fresh["seed"]) == [2, 2, 3, 3] and set(fresh["budget"]) == {6000, 8000}
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["budget"]) == [6000, 8000] and (summary["ci95_low"] <= summary["mean"]).all()
    assert (summary["mean"] <= summary["ci95_high"]).all() and not summary["consistent"].any()
    for w, row in zip(outcome.winners, summary.itertuples(), strict=True):
        assert row.mean == pytest.approx(w.fresh.mean) and row.params == spec.param_count(w.config)
        assert spec.load(out / f"frontier-{w.budget}.json") == w.config
    assert (out / "frontier.png").stat().st_size > 10_000


def test_running_it_again_trains_nothing_and_gives_the_same_winners(tiny):
    settings, outcome, _ = tiny
    again = frontier.run(settings)
    assert [(w.winner.trial, w.fresh.finals) for w in again.winners] == [
        (w.winner.trial, w.fresh.finals) for w in outcome.winners
    ]


def test_replay_a_winner_by_name(tiny, data_dir, capsys):
    settings, outcome, _ = tiny
    argv = ["replay", "frontier-8000", "--epochs", "1", "--train-limit", "500", "--device", "cpu",
            "--data-dir", str(data_dir), "--results-dir", settings.results_dir]  # fmt: skip
    assert cli.main(argv) == 0
    assert "frontier-8000: verdict" in capsys.readouterr().out
    from pathlib import Path

    (run,) = (Path(settings.results_dir) / "runs" / "frontier-8000").iterdir()
    assert spec.load(run / "config.json").layers == outcome.winners[1].config.layers


def test_settings_a_frontier_cannot_run_with():
    with pytest.raises(frontier.FrontierError, match=r"--confirm-top 3 is more than --select-top 2"):
        frontier.check(frontier.Settings(select_top=2, confirm_top=3))
    with pytest.raises(frontier.FrontierError, match=r"--budgets must be distinct positive"):
        frontier.check(frontier.Settings(budgets=(8000, 8000)))
