"""The `nas` command as a user runs it: listing, a real smoke replay, and bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nas import cli, spec


def run(*args, env=None):
    """The installed console script, in a subprocess, as a user types it."""
    nas = Path(sys.executable).parent / "nas"  # the console script installed beside this Python
    return subprocess.run([str(nas), *args], capture_output=True, text=True, env={**os.environ, **(env or {})})


@pytest.mark.slow
def test_list_shows_ten_baselines_with_the_reference_counts(tmp_path):
    # an empty results folder: frontier winners found under the working directory's results/ (a user's
    # own, or the committed evidence) would be listed too, and add their counts to the ones below
    r = run("replay", "--list", "--results-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert len(spec.baseline_names()) == 10 and "frontier winners" not in r.stdout
    for name in spec.baseline_names():
        assert name in r.stdout
    # params and the reference's params: baseline-3, 4, 5 and 6 (and rf32's own count, no reference);
    # baseline-2 and the three -10k; baseline-1
    assert (r.stdout.count("7,826"), r.stdout.count("9,060"), r.stdout.count("9,902")) == (2 * 4 + 1, 2 * 4, 2)


@pytest.mark.slow
def test_smoke_replay_writes_history(data_dir, tmp_path, capsys):
    config = tmp_path / "tiny.json"
    config.write_text(
        json.dumps(
            {
                "name": "tiny",
                "layers": [{"op": "conv", "out": 8}, {"op": "pool"}, {"op": "conv", "out": 10}, {"op": "gap"}],
                "recipe": {"epochs": 3, "batch_size": 256},
            }
        )
    )
    code = cli.main(
        [
            "replay",
            str(config),
            "--seeds",
            "2",
            "--epochs",
            "2",
            "--train-limit",
            "3000",
            "--data-dir",
            str(data_dir),
            "--results-dir",
            str(tmp_path / "out"),
            "--device",
            "cpu",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "receptive field: 28" in out and "mean ± std" in out
    (run_dir,) = (tmp_path / "out" / "runs" / "tiny").iterdir()
    record = json.loads((run_dir / "run.json").read_text())
    assert record["params"] == spec.param_count(spec.load(config)) == 9 * 8 + 16 + 9 * 8 * 10
    assert [r["seed"] for r in record["runs"]] == [0, 1]
    assert all(len(r["epochs"]) == 2 for r in record["runs"])
    off = dict.fromkeys(["cuda_graphs", "fused", "bf16", "compiled", "epoch_rotation"], False)
    one_thread = record["provenance"]["torch_threads"] == 1  # channels_last on one thread only
    assert all(r["loop"] == off | {"channels_last": one_thread} for r in record["runs"])
    assert record["train_limit"] == 3000 and record["provenance"]["torch"]
    lines = (run_dir / "history.csv").read_text().splitlines()
    assert lines[0] == "seed,epoch,lr,lr_last,train_loss,train_acc,test_loss,test_acc,seconds" and len(lines) == 1 + 4
    # each seed's final weights, rebuilt from the folder's config.json, test as the run recorded
    import torch

    from nas import data, export, train
    from nas.export import ExportError
    from nas.model import build

    split = data.make_split(data.load_mnist(data_dir, download=False), "test")
    for seed in (0, 1):
        net = build(spec.load(run_dir / "config.json"))
        net.load_state_dict(torch.load(run_dir / f"weights-seed{seed}.pt", weights_only=True))
        _, acc = train.evaluate(net, split.eval_x, split.eval_y)
        assert acc == record["runs"][seed]["epochs"][-1]["eval_acc"]
        _, acc = train.evaluate(export.load_model(run_dir, seed=seed), split.eval_x, split.eval_y)
        assert acc == record["runs"][seed]["epochs"][-1]["eval_acc"]
    with pytest.raises(ExportError, match=r"holds the weights of seeds \[0, 1\]: pass seed="):
        export.load_model(run_dir)
    with pytest.raises(ExportError, match=r"has no weights for seed 2 \(seeds: \[0, 1\]\)"):
        export.load_model(run_dir, seed=2)


@pytest.mark.slow
def test_invalid_config_file_names_the_field(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"layers": [{"op": "conv", "out": 10}, {"op": "gap"}], "recipe": {"dropout": 1.5}}))
    r = run("replay", str(bad))
    assert r.returncode == 2 and r.stderr.strip() == f"nas: error: {bad}.recipe.dropout: must be < 1, got 1.5"


@pytest.mark.parametrize(
    "argv,message",
    [
        (["replay", "baseline-6", "--seeds", "0"], "nas replay: error: argument --seeds: must be >= 1, got 0"),
        (["replay", "baseline-6", "--epochs", "-1"], "nas replay: error: argument --epochs: must be >= 1, got -1"),
        (["dashboard", "--port", "0"], "nas dashboard: error: argument --port: must be >= 1, got 0"),
        (["bogus"], "nas: error: argument command: invalid choice: 'bogus'"),
    ],
)
def test_argument_errors_exit_2_with_one_line(argv, message):
    r = run(*argv)
    assert r.returncode == 2 and r.stderr.startswith(message) and r.stderr.count("\n") == 1, r.stderr
    assert r.stdout == ""


@pytest.mark.slow
def test_results_folder_not_created_on_failure(tmp_path):
    r = run("replay", "baseline-6", "--data-dir", str(tmp_path / "empty"), "--no-download",
            "--results-dir", str(tmp_path / "res"))  # fmt: skip
    assert r.returncode == 2 and r.stderr.startswith("nas: error: MNIST files train-images-idx3-ubyte"), r.stderr
    assert "are missing in" in r.stderr and not (tmp_path / "res").exists()


def test_console_script_is_the_module():
    r = subprocess.run([sys.executable, "-m", "nas.cli", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("nas ")


def test_interrupt_exits_130_and_leaves_no_empty_run_folder(data_dir, tmp_path, monkeypatch):
    from nas import train

    def interrupted(*args, **kwargs):  # Ctrl-C during the first seed's training
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "train", interrupted)
    code = cli.main(["replay", "baseline-6", "--data-dir", str(data_dir), "--results-dir", str(tmp_path)])
    assert code == 130
    assert list((tmp_path / "baselines" / "baseline-6").iterdir()) == []
