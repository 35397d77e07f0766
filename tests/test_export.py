"""`nas export` round trip: a searched and confirmed model (one epoch) comes back identical through
`nas.export.load_model`, the standalone model.py and ONNX, and tests as confirmation measured it."""

import importlib.util
import json

import numpy as np
import optuna
import pytest
import torch
from conftest import run_nas

from nas import data, export, train, verdict

pytestmark = pytest.mark.slow  # its fixture trains and confirms a study


@pytest.fixture(scope="module")
def exported(confirmed, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "model"
    r = run_nas("export", "--study", "one", "--out", out, "--results-dir", confirmed)
    assert r.returncode == 0, r.stderr
    return out, json.loads((out / "export.json").read_text())


def test_export_writes_the_folder_and_picks_the_median_seed(exported, confirmed):
    out, info = exported
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "export.json",
        "model.onnx",
        "model.py",
        "weights.pt",
    ]
    assert info["seeds_confirmed"] == [0, 1, 2] and info["params"] < 8000
    # the per-seed final test accuracies as confirmation stored them, read here without nas
    units = optuna.load_study(study_name="one-confirm", storage=f"sqlite:///{confirmed}/nas.db").trials
    runs = {t.user_attrs["seed"]: t.value for t in units if t.user_attrs.get("source_trial") == info["trial"]}
    assert sorted(runs) == [0, 1, 2] and info["test_acc_of_seeds"] == [runs[s] for s in (0, 1, 2)]
    # the typical run, not the lucky one: weights of the seed whose test accuracy is the median
    # (3 seeds: the middle one; ties go to the smallest seed)
    median = sorted(runs.values())[1]
    expected = min(s for s, acc in runs.items() if acc == median)
    assert info["seed"] == expected, runs
    assert info["test_acc"] == runs[expected]  # and export.json reports that seed's accuracy


@pytest.mark.parametrize(
    ("runs", "seed", "expected"),
    [
        ({0: 97.1, 1: 98.4, 2: 95.0}, None, 0),  # odd count: the middle accuracy
        ({3: 91.0, 5: 99.0, 7: 95.0}, None, 7),
        ({0: 90.0, 1: 96.0, 2: 94.0, 3: 92.0}, None, 3),  # even count: the lower middle one (92)
        ({4: 80.0, 9: 70.0}, None, 9),
        ({2: 95.0, 0: 95.0, 1: 99.0}, None, 0),  # ties: the smallest seed
        ({5: 98.0, 3: 97.0, 1: 97.0, 0: 99.0}, None, 1),
        ({0: 97.1}, None, 0),
        ({0: 97.1, 1: 98.4, 2: 95.0}, 1, 1),  # an explicit seed wins, lucky or not
        ({0: 97.1, 1: 98.4, 2: 95.0}, 2, 2),
    ],
)
def test_pick_seed_takes_the_median_run_or_the_requested_seed(runs, seed, expected):
    assert verdict.pick_seed(runs, seed) == expected


def test_pick_seed_refuses_a_seed_that_was_not_confirmed():
    with pytest.raises(verdict.VerdictError, match=r"no confirmation run with seed 3; seeds: 0, 1, 2"):
        verdict.pick_seed({2: 95.0, 0: 97.0, 1: 96.0}, 3)


def test_exported_model_tests_as_confirmation_measured(exported, data_dir):
    out, info = exported
    model = export.load_model(out)
    split = data.make_split(data.load_mnist(data_dir, download=False), "test")
    _, acc = train.evaluate(model, split.eval_x, split.eval_y)
    assert acc == pytest.approx(info["test_acc"], abs=1e-9)


def test_standalone_model_py_and_onnx_give_the_same_outputs(exported):
    import onnxruntime

    out, _ = exported
    model = export.load_model(out)
    x = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want = model(x).numpy()

    spec = importlib.util.spec_from_file_location("exported_model", out / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # plain PyTorch: no nas import inside
    assert "nas" not in (out / "model.py").read_text().split('"""')[-1]
    net = module.build()
    net.load_state_dict(torch.load(out / "weights.pt", weights_only=True))
    with torch.inference_mode():
        np.testing.assert_array_equal(net.eval()(x).numpy(), want)

    session = onnxruntime.InferenceSession(str(out / "model.onnx"))
    (got,) = session.run(None, {"image": x.numpy()})
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_train_a_trial_and_its_exported_config(confirmed, exported, tmp_path, data_dir):
    quick = ["--epochs", "1", "--train-limit", "1000", "--data-dir", data_dir]
    storage = f"sqlite:///{confirmed}/nas.db"
    r = run_nas("train", "--trial", "0", "--study", "one", "--storage", storage, *quick, "--results-dir", tmp_path)
    assert r.returncode == 0, r.stderr
    (run,) = (tmp_path / "runs" / "one-trial-0").glob("*/run.json")
    record = json.loads(run.read_text())
    assert record["epochs"] == 1 and record["train_limit"] == 1000 and len(record["runs"]) == 1

    out, info = exported
    r = run_nas("train", "--config", out / "config.json", "--seeds", "2", *quick, "--results-dir", tmp_path / "b")
    assert r.returncode == 0, r.stderr
    (run,) = (tmp_path / "b" / "runs" / f"one-trial-{info['trial']}").glob("*/run.json")
    assert json.loads(run.read_text())["seeds"] == [0, 1]
