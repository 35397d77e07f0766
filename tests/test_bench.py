"""`nas bench --quick`: both pipelines run side by side and the ratios and CSVs come out.
(Speed itself is measured by the command, not asserted by a timed test.)"""

import pandas as pd
import pytest
from conftest import REPO, run_nas

from nas import bench, spec
from nas.model import build

pytestmark = pytest.mark.slow  # nas bench and the naive search train for real

# One width factor for every hidden layer, rounded to whole channels: near 2,000 parameters a channel
# more or less moves the count by some 5% (baseline-6 scales to 2,100 there), above 4,000 by under 1%.
NEAR = 0.08


def test_scaled_configs_hit_their_parameter_targets():
    config = spec.load_baseline("baseline-6")
    for target in (2000, 4000, 8000, 16000, 32000):
        scaled = bench.scaled(config, target)
        n = sum(p.numel() for p in build(scaled).parameters())  # torch's count of the built network
        assert abs(n - target) / target < NEAR, (target, n)
        assert spec.param_count(scaled) == n  # the count `nas bench` writes in its scaling rows


def test_bench_quick_prints_ratios_and_writes_csv(tmp_path, data_dir):
    r = run_nas("bench", "--quick", "--jobs", "2", "--workers", "1", "--data-dir", data_dir, "--results-dir", tmp_path)
    assert r.returncode == 0, r.stderr
    assert "reference pipeline: DataLoader + PIL RandomRotation" in r.stdout and "vs reference pipeline" in r.stdout
    (throughput,) = (tmp_path / "bench").glob("*-throughput.csv")
    frame = pd.read_csv(throughput)
    assert len(frame) == 7 and (frame["img_per_s"] > 0).all()  # reference x 2, nas x 2 layouts, --jobs x 2, eval
    assert frame["ratio"].iloc[0] == 1.0 and frame["cpu"].notna().all() and (frame["torch"] != "").all()
    (scaling,) = (tmp_path / "bench").glob("*-scaling.csv")
    rows = pd.read_csv(scaling)
    assert rows["target"].tolist() == [2000, 8000, 32000]  # --quick's three sizes
    assert all(abs(n - t) / t < NEAR for n, t in zip(rows["params"], rows["target"], strict=True)), rows
    assert rows["macs"].is_monotonic_increasing and (rows["epoch_s"] > 0).all()


def test_naive_search_trains_with_the_reference_pipeline(tmp_path, data_dir):
    """benchmarks/search_throughput.py's naive setting: nas.search.run with workers whose trials
    train with the reference pipeline (DataLoader + PIL) on the same split, end to end."""
    import sys

    import optuna

    from nas import search

    sys.path.insert(0, str(REPO / "benchmarks"))
    import search_throughput

    s = search.Settings(budget=8000, trials=2, epochs=2, train_limit=600, val_limit=300, pruner="none",
                        confirm=False, baselines=False, study="naive", device="cpu", data_dir=str(data_dir),
                        results_dir=str(tmp_path))  # fmt: skip
    outcome = search.run(s, worker=search_throughput.reference_search_worker)
    done_trials = [t for t in outcome.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done_trials) == 2 and all(len(t.user_attrs["history"]) == 2 for t in done_trials)
    assert all(0 < t.value <= 100 for t in done_trials) and outcome.confirmation is None
    assert search_throughput.trials_per_hour(outcome.study)["trained"] == 2
    assert outcome.finished.path == tmp_path / "naive" / "leaderboard.csv" and outcome.finished.path.exists()

    # the confirmation from Python: its progress events, then the verdicts it stored and wrote
    from nas import confirm, verdict

    events = []
    settings = confirm.Settings(study="naive", storage=s.storage_url, top=1, seeds=2, device="cpu", epochs=1,
                                train_limit=300, data_dir=str(data_dir), results_dir=str(tmp_path))  # fmt: skip
    result = confirm.run(settings, events.append)
    planned, *done = events
    assert isinstance(planned, confirm.ConfirmPlanned) and (planned.units, planned.done) == (2, 0)
    assert [(e.done, e.units, e.seed) for e in done] == [(1, 2, 0), (2, 2, 1)]  # one worker: queue order
    (v,) = result.verdicts
    assert v.trial == max(done_trials, key=lambda t: t.value).number and v.seeds_done == 2
    assert [r.final for r in v.per_seed] == [e.final for e in done]
    assert verdict.stored(outcome.study)[0] == v and result.path.read_text().count("\n") == 1 + 2


def test_reference_pipeline_trains_torch_modules_only():
    """The reference pipeline is the reference experiment's plain PyTorch: torch's nn.Dropout, not nas's CPU dropout."""
    from torch import nn

    from nas.model import Dropout, count_parameters

    net = bench.plain_model(spec.load_baseline("baseline-6"))
    assert [type(m) for m in net if isinstance(m, nn.Dropout)] == [nn.Dropout] * 5
    assert not any(isinstance(m, Dropout) for m in net) and count_parameters(net) == 7826
