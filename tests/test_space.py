"""Search spaces: validation with file, line and field; sampling; the hard budget as a property."""

import optuna
import pytest

from nas import search, space, spec, store

optuna.logging.set_verbosity(optuna.logging.WARNING)
DEFAULT = space.load("default")


def test_default_space_ships_and_lists():
    assert "default" in space.space_names()
    assert DEFAULT.epochs == 15 and set(DEFAULT.dims) == set(space.DIMENSIONS)


def test_smallest_model_is_a_lower_bound_of_every_sample():
    n, config = space.smallest(DEFAULT)
    assert n == spec.param_count(config) == 1352
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(500):
        trial = study.ask()
        assert spec.param_count(space.suggest(trial, DEFAULT)) >= n
        study.tell(trial, 0.0)


@pytest.mark.parametrize("name", ["baseline-6", "baseline-6-rf32", "baseline-6-10k", "baseline-1"])
def test_baselines_inside_the_space_rebuild_exactly(name):
    config = spec.load_baseline(name)
    params = search.baseline_params(config, DEFAULT)
    if name == "baseline-1":  # no StepLR: outside the default space
        assert params is None
        return
    rebuilt = space.suggest(optuna.trial.FixedTrial(params), DEFAULT)
    assert rebuilt.layers == config.layers and rebuilt.recipe == config.recipe


class Recorder:
    """Stands in for train.train: records what would be trained, reports fixed accuracies."""

    def __init__(self):
        self.params = []

    def __call__(self, config, split, seed, device, on_epoch=None, **kw):
        from nas.train import Epoch

        self.params.append(spec.param_count(config))
        for e in range(1, 3):
            on_epoch(Epoch(e, 0.01, 0.1, 90.0, 0.1, 90.0 + (seed % 7), 0.0))
        return None, None


@pytest.mark.parametrize("budget", [10_000, 8_000, 5_000])
def test_no_trained_model_reaches_the_budget(budget, monkeypatch, tmp_path):
    """Thousands of samples; the gate is the only way to the trainer."""
    recorder = Recorder()
    monkeypatch.setattr(search.train, "train", recorder)
    s = search.Settings(budget=budget, trials=10**6, results_dir=str(tmp_path))
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=budget))
    study.optimize(search.objective_for(study, s, DEFAULT, split=None, device="cpu"), n_trials=2000)
    c = store.counts(study)
    assert c["proposed"] == 2000 and c["trained"] == len(recorder.params) > 100
    assert max(recorder.params) < budget
    assert c["infeasible"] + c["trained"] == 2000
    for t in study.trials:
        assert (t.user_attrs["params"] >= budget) == bool(t.user_attrs.get("infeasible"))
        assert t.constraints["params_over_budget"] == t.user_attrs["params"] - budget + 1


def test_tpe_learns_to_avoid_infeasible_samples(monkeypatch, tmp_path):
    monkeypatch.setattr(search.train, "train", Recorder())
    s = search.Settings(budget=5000, trials=10**6, results_dir=str(tmp_path))
    study = optuna.create_study(direction="maximize", sampler=search.make_sampler(s))
    study.optimize(search.objective_for(study, s, DEFAULT, split=None, device="cpu"), n_trials=120)
    infeasible = [bool(t.user_attrs.get("infeasible")) for t in study.trials]
    assert sum(infeasible[-40:]) < sum(infeasible[:40])  # random start vs. learnt


def write(tmp_path, text):
    path = tmp_path / "space.toml"
    path.write_text(text)
    return str(path)


BASE = (space.resources.files("nas.spaces") / "default.toml").read_text()
BAD_SPACES = [
    (BASE.replace("width = {int = [8, 24]}", "width = {int = [-4, 24]}"), ":11: width: -4 is out of range [1, 256]"),
    (
        BASE.replace("dropout = {float = [0.0, 0.15]}", "dropout = {float = [0.0, 1.0]}"),
        ":20: dropout: 1.0 is out of range [0.0, 0.9]",
    ),
    (BASE.replace("head = {choices", "head = {choice"), ":12: head: expected a constant"),
    (BASE.replace('optimizer = "sgd"', 'optimizer = "lbfgs"'), ":13: optimizer: must be one of sgd, adam"),
    (
        BASE.replace("lr = {float = [0.005, 0.2], log = true}", "lr = {float = [0.2, 0.005]}"),
        ":14: lr: lo 0.2 is above",
    ),
    (BASE + "depth = 3\n", ":22: depth: unknown dimension"),
    (BASE.replace("rotation = {float = [0.0, 20.0]}\n", ""), "[dimensions]: missing rotation"),
    (BASE.replace("epochs = 15", "epochs = 20"), ":3: epochs: must be a whole number from 1 to 15"),
    (BASE.replace("[dimensions]", "[dimensions"), "invalid TOML: "),
]


@pytest.mark.parametrize("text,message", BAD_SPACES, ids=[m for _, m in BAD_SPACES])
def test_bad_space_files_name_file_line_and_field(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(space.SpaceError) as e:
        space.load(path)
    assert str(e.value).startswith(path) and message in str(e.value)


def test_unknown_space():
    with pytest.raises(space.SpaceError, match="unknown space 'tiny'; known: default"):
        space.load("tiny")


def test_workers_sample_different_points():
    """Two workers with one --seed: their samplers must not propose the same start-up points."""
    first = []
    for worker in (0, 1, 0):
        study = optuna.create_study(sampler=search.make_sampler(search.Settings(worker=worker)))
        trial = study.ask()
        first.append(space.suggest(trial, DEFAULT))
    assert first[0] != first[1] and first[0] == first[2]
