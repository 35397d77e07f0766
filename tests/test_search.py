"""`nas search` end to end on a small subset of real MNIST: counts, states, resume, bad input."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch

from nas import objective, search, space, spec, store, train

pytestmark = pytest.mark.slow  # every test runs a real search, a confirmation or worker processes

optuna.logging.set_verbosity(optuna.logging.WARNING)
NAS = str(Path(sys.executable).parent / "nas")
QUICK = ["--epochs", "2", "--train-limit", "1500", "--val-limit", "500", "--device", "cpu"]


def search_cmd(tmp_path, *extra, trials=3):
    return [
        NAS,
        "search",
        "--budget",
        "8000",
        "--trials",
        str(trials),
        "--results-dir",
        str(tmp_path),
        *QUICK,
        "--study",
        "tiny",
        *extra,
    ]


def load(tmp_path, name="tiny"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/nas.db")


def test_tiny_search_end_to_end(tmp_path, data_dir):
    more = ["--top", "2", "--seeds", "2", "--enqueue", "baseline-6-rf32"]  # queued before the other baselines
    cmd = search_cmd(tmp_path, "--data-dir", str(data_dir), *more, trials=6)
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "queued first" in r.stdout and "estimate:" in r.stdout and "leaderboard" in r.stdout
    assert "epochs trained" in r.stdout
    study = load(tmp_path)
    c = store.counts(study)
    assert c["trained"] == 6 and c["running"] == 0 and c["failed"] == 0
    trained = [t for t in study.trials if t.user_attrs.get("trained")]
    assert [t.user_attrs.get("baseline") for t in trained[:2]] == ["baseline-6-rf32", "baseline-6"]
    states = {t.state for t in trained}
    assert states == {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}  # hyperband pruned some
    for t in trained:
        assert t.user_attrs["params"] < 8000 and t.user_attrs["seed"] == t.number
        epochs = 2 if t.state == optuna.trial.TrialState.COMPLETE else 1  # pruned after its first epoch
        assert len(t.user_attrs["history"]) == epochs and t.intermediate_values.keys() == set(range(1, epochs + 1))
    for t in study.trials:
        if t.user_attrs.get("infeasible"):
            assert t.user_attrs["params"] >= 8000 and t.state == optuna.trial.TrialState.PRUNED
    rows = (tmp_path / "tiny" / "leaderboard.csv").read_text().splitlines()
    assert len(rows) == 1 + len(study.trials)
    assert study.user_attrs["identity"]["budget"] == 8000

    # confirmation: the top 2 distinct configurations by validation, 2 seeds each, each unit once
    confirm = load(tmp_path, "tiny-confirm")
    done = [t for t in confirm.trials if t.state == optuna.trial.TrialState.COMPLETE]
    completed = [t for t in trained if t.state == optuna.trial.TrialState.COMPLETE]
    best_two = sorted(completed, key=lambda t: -t.value)[:2]
    assert sorted((t.user_attrs["source_trial"], t.user_attrs["seed"]) for t in done) == sorted(
        (t.number, seed) for t in best_two for seed in (0, 1)
    )
    for t in done:
        assert len(t.user_attrs["history"]) == 2 and t.value == t.user_attrs["history"][-1]["eval_acc"]
    verdicts = study.user_attrs["confirmation"]["verdicts"]
    assert [v["trial"] for v in verdicts] == [t.number for t in best_two]
    # each stored verdict's numbers are its runs' histories as stored (2 epochs: both are the last K)
    for v in verdicts:
        mine = sorted((t.user_attrs["seed"], t.user_attrs) for t in done if t.user_attrs["source_trial"] == v["trial"])
        accs = {seed: [h["eval_acc"] for h in attrs["history"]] for seed, attrs in mine}
        assert [(r["seed"], r["final"], r["best"], r["min_last_k"]) for r in v["per_seed"]] == [
            (seed, a[-1], max(a), min(a)) for seed, a in accs.items()
        ]
        assert v["seeds_done"] == 2 and v["mean"] == pytest.approx((accs[0][-1] + accs[1][-1]) / 2)
    assert len((tmp_path / "tiny" / "confirmation.csv").read_text().splitlines()) == 1 + 4

    # the same command again: nothing to train, nothing lost, no unit trained twice
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0 and "resuming: 6 trained trials kept" in r.stdout
    assert "study 'tiny' already has its 6 trained trials: nothing to train" in " ".join(r.stdout.split())
    assert "queued first" not in r.stdout and "estimate:" not in r.stdout  # nothing queued, nothing timed
    assert store.counts(load(tmp_path))["trained"] == 6
    again = load(tmp_path, "tiny-confirm").trials
    assert len([t for t in again if t.state == optuna.trial.TrialState.COMPLETE]) == 4

    # another budget on the same study is refused, and changes nothing
    before = len(load(tmp_path).trials)
    r = subprocess.run([NAS, "search", "--budget", "9000", "--study", "tiny", "--results-dir", str(tmp_path),
                        *QUICK, "--data-dir", str(data_dir)], capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2 and "was created with other settings (budget: study has 8000" in r.stderr
    assert len(load(tmp_path).trials) == before

    wide = {**os.environ, "COLUMNS": "200"}
    r = subprocess.run([NAS, "studies", "--results-dir", str(tmp_path)], capture_output=True, text=True, env=wide)
    pick = verdicts[0]  # the confirmation is shown on its search's row, with the pick's test accuracy
    assert r.returncode == 0 and "tiny" in r.stdout and "tiny-confirm" not in r.stdout, r.stdout
    assert f"trial {pick['trial']}: {pick['mean']:.2f} ± {pick['std']:.2f}, 2 seeds" in r.stdout, r.stdout

    # renamed: the same trials (numbers, values, attributes) under the new name, its confirmation and folder too
    def whole(name):
        return [(t.number, t.state, t.values, t.params, t.user_attrs) for t in load(tmp_path, name).trials]

    before = whole("tiny"), whole("tiny-confirm"), load(tmp_path).user_attrs
    r = subprocess.run([NAS, "studies", "--results-dir", tmp_path, "--rename", "tiny", "kept"], capture_output=True)
    assert r.returncode == 0, r.stderr
    assert sorted(optuna.get_all_study_names(f"sqlite:///{tmp_path}/nas.db")) == ["kept", "kept-confirm"]
    assert (whole("kept"), whole("kept-confirm"), load(tmp_path, "kept").user_attrs) == before
    assert (tmp_path / "kept" / "leaderboard.csv").exists() and not (tmp_path / "tiny").exists()

    r = subprocess.run([NAS, "studies", "--results-dir", str(tmp_path), "--delete", "kept"], capture_output=True)
    assert r.returncode == 0 and optuna.get_all_study_names(f"sqlite:///{tmp_path}/nas.db") == []


def trained_done(tmp_path):
    try:
        return store.counts(load(tmp_path))["trained"]
    except Exception:  # no study yet
        return 0


def training_now(tmp_path):
    try:
        running = load(tmp_path).get_trials(states=(optuna.trial.TrialState.RUNNING,))
    except Exception:
        return False
    return any(t.user_attrs.get("trained") for t in running)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_interrupted_search_resumes_without_losing_trials(tmp_path, data_dir, sig):
    longer = ["--epochs", "3", "--train-limit", "4000"]  # trials of a few seconds: time to catch one training
    cmd = search_cmd(tmp_path, "--data-dir", str(data_dir), "--no-baselines", "--no-confirm", *longer, trials=3)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (trained_done(tmp_path) >= 1 and training_now(tmp_path)) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(sig)  # one trial completed, another in training
    proc.wait(timeout=60)
    time.sleep(1)  # the workers die with the parent
    trials = load(tmp_path).trials
    before = {t.number: t.value for t in trials if t.state == optuna.trial.TrialState.COMPLETE}
    assert before, "no trial completed before the interruption"
    cut = [t.number for t in trials if t.user_attrs.get("trained") and t.state != optuna.trial.TrialState.COMPLETE]
    assert cut, "no trial was training when the signal came"
    if sig == signal.SIGINT:  # the running trial is failed on the spot
        assert proc.returncode == 130 and "run the same command to resume" in proc.stderr.read()
        assert (tmp_path / "tiny" / "leaderboard.csv").exists()
        assert all(trials[n].state == optuna.trial.TrialState.FAIL for n in cut)
    else:  # SIGKILL: left RUNNING; the next run fails it (its process is gone) and re-queues it
        assert all(trials[n].state == optuna.trial.TrialState.RUNNING for n in cut)

    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    study = load(tmp_path)
    c = store.counts(study)
    assert c["trained"] == 3 and c["running"] == 0
    after = {t.number: t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}
    assert all(after[n] == v for n, v in before.items())  # every completed trial kept, unchanged
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    assert all(study.trials[n].state == optuna.trial.TrialState.FAIL for n in cut)
    if sig == signal.SIGKILL:
        retried = [t for t in study.trials if t.system_attrs.get("failed_trial") in cut]
        assert retried and retried[0].state == optuna.trial.TrialState.COMPLETE
        assert f"crashed trials failed and re-queued: {cut}" in r.stdout


def test_leaderboard_ranks_completed_trials_first():
    from nas import report

    study = optuna.create_study(direction="maximize")
    for i, (state, value) in enumerate([("COMPLETE", 98.0), ("PRUNED", 99.5), ("COMPLETE", 99.0)]):
        trial = study.ask()
        trial.set_user_attr("trained", True)
        trial.set_user_attr("params", 5000 + i)
        trial.set_user_attr("history", [{"eval_acc": value}])
        trial.report(value, 1)
        if state == "COMPLETE":
            study.tell(trial, value)
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    frame = report.leaderboard(study)
    assert frame["trial"].tolist() == [2, 0, 1]
    assert frame["state"].tolist() == ["complete", "complete", "pruned"]
    assert frame["value"].isna().tolist() == [False, False, True] and frame["best_val"].tolist() == [99.0, 98.0, 99.5]


def test_the_estimate_shares_the_trials_among_the_workers_that_start():
    # 3 trials x 4 epochs x 10 s: 2 workers share them (60 s); 8 asked for, 3 start (40 s), not 8 (15 s)
    assert search.plan(10.0, 4, 3, 2, "median").without_pruning == 60.0
    assert search.plan(10.0, 4, 3, 8, "median").without_pruning == 40.0
    assert search.plan(10.0, 4, 3, 1, "hyperband").saving == 0.62


def test_default_study_names_keep_quick_runs_apart():
    assert search.Settings(budget=8000).study_name == "default-b8000"
    quick = search.Settings(budget=8000, epochs=8, train_limit=10000)
    assert quick.study_name == "default-b8000-e8-t10000"
    assert search.Settings(space="x/mine.toml", budget=5000, val_limit=500).study_name == "mine-b5000-v500"
    assert search.Settings(study="s", epochs=2).study_name == "s"


def _pop_queued(url: str, out) -> None:
    """A worker that pops queued trials until none is left, as study.optimize does."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name="race", storage=store.open_storage(url))
    got = []
    try:
        while True:
            trial = study.ask()
            if "i" not in trial.user_attrs:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
            got.append(trial.user_attrs["i"])
            study.tell(trial, 1.0)
    except Exception as e:  # the bug: a trial popped by two workers cannot be told twice
        got.append(f"{type(e).__name__}: {e}")
    finally:
        out.put(got)


def test_queued_trials_are_popped_once_by_concurrent_workers(tmp_path):
    """Optuna's FOR UPDATE is a no-op on SQLite; without BEGIN IMMEDIATE four workers popped 65
    trials out of 60 queued (measured), and baselines and confirmation units ran twice."""
    import multiprocessing

    url = f"sqlite:///{tmp_path}/race.db"
    study = optuna.create_study(study_name="race", storage=store.open_storage(url))
    for i in range(60):
        study.enqueue_trial({}, user_attrs={"i": i})
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    workers = [ctx.Process(target=_pop_queued, args=(url, out)) for _ in range(4)]
    for w in workers:
        w.start()
    popped = [x for _ in workers for x in out.get(timeout=240)]
    for w in workers:
        w.join(timeout=60)
    assert [x for x in popped if isinstance(x, str)] == []  # no error
    assert sorted(popped) == list(range(60))  # each queued trial popped exactly once


def test_killed_confirmation_resumes_mid_run_from_its_checkpoint(confirmed, tmp_path, data_dir):
    import shutil

    results = tmp_path / "r"
    shutil.copytree(confirmed, results)
    optuna.delete_study(study_name="one-confirm", storage=f"sqlite:///{results}/nas.db")
    cmd = [NAS, "confirm", "--study", "one", "--top", "1", "--seeds", "1", "--epochs", "4", "--train-limit", "6000",
           "--device", "cpu", "--results-dir", str(results), "--data-dir", str(data_dir)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = results / "artifacts" / "checkpoints"
    deadline = time.time() + 300
    while not list(checkpoints.glob("*.pt")) and time.time() < deadline:
        time.sleep(0.1)
    proc.kill()  # SIGKILL mid-run: at least one epoch is checkpointed
    proc.wait(timeout=60)
    time.sleep(1)  # the worker dies with its parent
    (ckpt,) = checkpoints.glob("*.pt")
    saved = torch.load(ckpt, weights_only=True)
    assert 1 <= saved["epoch"] < 4

    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    conf = load(results, "one-confirm")
    done = [t for t in conf.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 1 and [t.state for t in conf.trials].count(optuna.trial.TrialState.FAIL) == 1
    history = done[0].user_attrs["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert history[: saved["epoch"]] == saved["history"]  # restored, not retrained (wall times included)
    assert not list(checkpoints.glob("*.pt"))  # removed once the unit's weights are stored


def test_a_confirmation_stopped_before_a_run_ends_keeps_the_last_verdicts(
    confirmed, tmp_path, data_dir, monkeypatch, capsys
):
    import shutil

    from nas import cli, workers

    results = tmp_path / "r"
    shutil.copytree(confirmed, results)
    optuna.delete_study(study_name="one-confirm", storage=f"sqlite:///{results}/nas.db")  # its units run again
    before = (results / "one" / "confirmation.csv").read_bytes()

    def ctrl_c(*args, **kwargs):  # Ctrl-C while the first units train
        raise KeyboardInterrupt

    monkeypatch.setattr(workers, "start_workers", lambda *args, **kwargs: [])
    monkeypatch.setattr(workers, "supervise", ctrl_c)
    argv = ["confirm", "--study", "one", "--top", "1", "--seeds", "3", "--epochs", "1", "--train-limit", "1500",
            "--device", "cpu", "--results-dir", results, "--data-dir", data_dir]  # fmt: skip
    code = cli.main([str(x) for x in argv])
    assert code == 130
    assert "interrupted: 0 of 3 confirmation runs are done and kept; run the same command" in capsys.readouterr().err
    assert (results / "one" / "confirmation.csv").read_bytes() == before  # not rewritten as a header alone
    assert len(before.splitlines()) == 1 + 3  # a header and a row per seed of the fixture's confirmation


def test_a_non_finite_loss_ends_the_trial_as_pruned_with_the_reason(tmp_path):
    sp = space.load("default")
    s = search.Settings(trials=1, results_dir=str(tmp_path), storage=f"sqlite:///{tmp_path}/x.db")
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(space.space_params(spec.load_baseline("baseline-6"), sp))

    def fit(config, seed, on_epoch):  # a training run whose loss blew up in its first epoch
        on_epoch(train.Epoch(1, 0.01, 0.01, float("nan"), 0.0, float("nan"), 10.0, 1.0))

    study.optimize(objective.objective_for(study, s, sp, None, "cpu", fit), n_trials=1)
    t = study.trials[0]
    assert t.state == optuna.trial.TrialState.PRUNED and t.user_attrs["fault"] == "train loss became nan in epoch 1"


def test_queued_configurations_train_to_the_end_and_are_queued_once(tmp_path):
    sp = space.load("wide")
    s = search.Settings(
        space="wide", trials=2, epochs=3, results_dir=str(tmp_path), storage=f"sqlite:///{tmp_path}/x.db"
    )

    class Always(optuna.pruners.BasePruner):  # prunes whatever it is asked about
        def prune(self, study, trial):
            return True

    study = optuna.create_study(direction="maximize", pruner=Always())
    config = spec.load(Path(__file__).parents[1] / "search_spaces" / "queued" / "cpu-b8000-217-onecycle.json")
    assert objective._enqueue(study, sp, 8000, [config]) == ["cpu-b8000-217-onecycle"]
    assert objective._enqueue(study, sp, 8000, [config]) == []  # already queued: not again
    assert objective._enqueue(study, sp, 6000, [config]) == []  # 6,974 params: not under this budget
    study.enqueue_trial(space.space_params(config, sp))  # the same network, sampled rather than named

    def fit(config, seed, on_epoch):
        for epoch in (1, 2, 3):
            on_epoch(train.Epoch(epoch, 0.01, 0.01, 0.1, 0.98, 0.1, 98.0 + epoch / 10, 1.0))

    study.optimize(objective.objective_for(study, s, sp, None, "cpu", fit), n_trials=2)
    named, sampled = study.trials
    assert named.user_attrs["baseline"] == "cpu-b8000-217-onecycle" and named.user_attrs["params"] == 6974
    assert named.state == optuna.trial.TrialState.COMPLETE and named.value == 98.1
    assert sampled.state == optuna.trial.TrialState.PRUNED and len(sampled.user_attrs["history"]) == 1
