"""`nas frontier` end to end in the stages family (`--space small`), tiny: two budgets, the public
3,762-parameter network queued, one epoch on a subset of real MNIST, run from the command line as a
user runs it; then the files the README's answer is read from, and `nas replay <name>-<budget>`."""

import json
import shutil

import optuna
import pandas as pd
import pytest
from conftest import REPO

from nas import cli, space, spec, store

pytestmark = pytest.mark.slow  # a tiny frontier end to end, from the command line
QUEUED = REPO / "search_spaces" / "queued-small"


@pytest.fixture(scope="module")
def small(tmp_path_factory, data_dir):
    results = tmp_path_factory.mktemp("small")
    argv = ["frontier", "--budgets", "4000,5000", "--name", "tiny", "--space", "small", "--trials", "2",
            "--select-top", "1", "--select-seeds", "1", "--confirm-top", "1", "--seeds", "2", "--fresh-seeds", "2",
            "--epochs", "1", "--train-limit", "600", "--val-limit", "300", "--device", "cpu", "--enqueue", str(QUEUED),
            "--data-dir", str(data_dir), "--results-dir", str(results)]  # fmt: skip
    assert cli.main(argv) == 0
    return results


def test_the_public_network_is_queued_first_in_the_smallest_budget_it_fits(small):
    url = store.default_storage(small)
    four = optuna.load_study(study_name="tiny-b4000", storage=url)
    first = four.trials[0]
    assert first.user_attrs["baseline"] == "woolly-3762" and first.user_attrs["params"] == 3692
    assert first.user_attrs["trained"] and len(first.user_attrs["history"]) == 1  # never pruned: one whole epoch
    five = optuna.load_study(study_name="tiny-b5000", storage=url)
    assert "woolly-3762" not in {t.user_attrs.get("baseline") for t in five.trials}  # it reaches 5,000 by the rule
    record = four.user_attrs["frontier_fixed"]  # what the frontier chooses from, fixed before the test set
    assert record["space_sha256"] == space.load("small").sha256 and list(record["enqueue"]) == ["woolly-3762"]


def test_every_trained_network_is_of_the_stages_family_and_under_its_budget(small):
    url = store.default_storage(small)
    sp = space.load("small")
    for budget in (4000, 5000):
        trained = [t for t in optuna.load_study(study_name=f"tiny-b{budget}", storage=url).trials
                   if t.user_attrs.get("trained")]  # fmt: skip
        assert len(trained) == 2
        for t in trained:
            config = spec.from_dict(t.user_attrs["config"])
            assert spec.param_count(config) < budget and space.space_params(config, sp) is not None


def test_fresh_and_summary_hold_one_row_per_fresh_seed_and_per_budget(small):
    out = small / "tiny"
    fresh, summary = pd.read_csv(out / "fresh.csv"), pd.read_csv(out / "summary.csv")
    assert list(summary["budget"]) == [4000, 5000]
    columns = {"budget", "study", "trial", "params", "seed", "final", "min_last_k", "consistent"}
    assert columns <= set(fresh.columns)
    for row in summary.itertuples():
        seeds = fresh[fresh["budget"] == row.budget]
        assert sorted(seeds["seed"]) == [2, 3]  # after the confirmation's seeds 0 and 1
        assert set(seeds["trial"]) == {row.trial} and set(seeds["params"]) == {row.params}
        assert row.params < row.budget
        assert row.mean == pytest.approx(seeds["final"].mean())
        assert bool(row.consistent) == bool(seeds["consistent"].all())
        assert (seeds["min_last_k"] <= seeds["final"]).all()
    assert (out / "frontier.png").stat().st_size > 10_000
    settings = json.loads((out / "settings.json").read_text())
    assert (settings["space"], settings["budgets"]) == ("small", [4000, 5000])


def test_a_winner_replays_by_name(small, data_dir, capsys, monkeypatch, tmp_path):
    results = tmp_path / "results"  # a copy: the replay's run folder stays out of the shared fixture
    shutil.copytree(small, results)
    monkeypatch.chdir(tmp_path)  # the name is found under --results-dir, not the working directory
    argv = ["replay", "tiny-4000", "--epochs", "1", "--train-limit", "300", "--device", "cpu",
            "--data-dir", str(data_dir), "--results-dir", str(results)]  # fmt: skip
    assert cli.main(argv) == 0
    assert "tiny-4000: verdict" in capsys.readouterr().out
    (run,) = (results / "runs" / "tiny-4000").iterdir()
    assert spec.load(run / "config.json").layers == spec.load(small / "tiny" / "tiny-4000.json").layers
