"""Search spaces: validation with file, line and field; sampling; the hard budget as a property."""

import math

import optuna
import pytest
from conftest import REPO

from nas import objective, search, space, spec, store
from nas.study import make_sampler

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
    params = space.space_params(config, DEFAULT)
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
            on_epoch(Epoch(e, 0.01, 0.01, 0.1, 90.0, 0.1, 90.0 + (seed % 7), 0.0))
        return None, None


@pytest.mark.slow
@pytest.mark.parametrize("budget", [10_000, 8_000, 5_000])
def test_no_trained_model_reaches_the_budget(budget, monkeypatch, tmp_path):
    """Thousands of samples; the gate is the only way to the trainer."""
    recorder = Recorder()
    monkeypatch.setattr(objective.train, "train", recorder)
    s = search.Settings(budget=budget, trials=10**6, results_dir=str(tmp_path))
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=budget))
    study.optimize(objective.objective_for(study, s, DEFAULT, split=None, device="cpu"), n_trials=2000)
    c = store.counts(study)
    assert c["proposed"] == 2000 and c["trained"] == len(recorder.params) > 100
    assert max(recorder.params) < budget
    assert c["infeasible"] + c["trained"] == 2000
    for t in study.trials:
        assert (t.user_attrs["params"] >= budget) == bool(t.user_attrs.get("infeasible"))
        assert t.constraints["params_over_budget"] == t.user_attrs["params"] - budget + 1


@pytest.mark.slow
def test_tpe_learns_to_avoid_infeasible_samples(monkeypatch, tmp_path):
    monkeypatch.setattr(objective.train, "train", Recorder())
    s = search.Settings(budget=5000, trials=10**6, results_dir=str(tmp_path))
    study = optuna.create_study(direction="maximize", sampler=make_sampler(s))
    study.optimize(objective.objective_for(study, s, DEFAULT, split=None, device="cpu"), n_trials=120)
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
    (
        BASE.replace('optimizer = "sgd"', 'optimizer = "lbfgs"'),
        ":13: optimizer: must be one of sgd, nesterov, adam, adamw",
    ),
    (
        BASE.replace("lr = {float = [0.005, 0.2], log = true}", "lr = {float = [0.2, 0.005]}"),
        ":14: lr: lo 0.2 is above",
    ),
    (BASE + "depth = 3\n", ":22: depth: unknown dimension"),
    (BASE.replace("rotation = {float = [0.0, 20.0]}\n", ""), "[dimensions]: missing rotation"),
    (BASE.replace("epochs = 15", "epochs = 20"), ":3: epochs: must be a whole number from 1 to 15"),
    (BASE.replace("[dimensions]", "[dimensions"), "invalid TOML: "),
    (BASE.replace("epochs = 15", "epochs = nan"), ":3: epochs: must be a whole number from 1 to 15, got nan"),
    (BASE.replace("epochs = 15", "epochs = 15.0"), ":3: epochs: must be a whole number from 1 to 15, got 15.0"),
    (BASE.replace("epochs = 15", "epochs = true"), ":3: epochs: must be a whole number from 1 to 15, got True"),
    (BASE.replace("width = {int = [8, 24]}", "width = {int = [8.0, 24]}"), ":11: width: expected int values, got 8.0"),
    (BASE.replace("[64, 128, 256]", "[64, 128.0]"), ":17: batch_size: expected int values, got 128.0"),
    (BASE.replace("[64, 128, 256]", "[64, 128, 64]"), ":17: batch_size: choices must differ, 64 is given twice"),
    (BASE.replace("[64, 128, 256]", "[]"), ":17: batch_size: choices must be a non-empty list"),
    (BASE.replace("[3, 10]}", "[3, 10], step = 2}"), ":18: step_size: hi - lo must be a multiple of step 2"),
    (BASE.replace("[3, 10]}", "[3, 10], step = true}"), ":18: step_size: step must be a positive integer, got True"),
    (BASE.replace("[3, 10]}", "[3, 10], step = 0}"), ":18: step_size: step must be a positive integer, got 0"),
    (BASE.replace("log = true", "log = 1"), ":14: lr: log must be true or false, got 1"),
    (BASE.replace("[0.0, 0.15]}", "[0.0, 0.15], log = true}"), ":20: dropout: a log scale needs lo > 0"),
    (BASE.replace("[0.1, 0.5]}", "[0.5, 0.1]}"), ":19: gamma: lo 0.5 is above hi 0.1"),
    (BASE.replace("description = ", "description = 3 #"), ":2: description: must be a string, got 3"),
    ("epochs = 15\ndimensions = [1, 2]\n", ":2: dimensions: must be a table"),
]


@pytest.mark.parametrize("text,message", BAD_SPACES, ids=[m for _, m in BAD_SPACES])
def test_bad_space_files_name_file_line_and_field(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(space.SpaceError) as e:
        space.load(path)
    assert str(e.value).startswith(path) and message in str(e.value)


# --------------------------------------------------------------------------- every number, finite
# Built from DIMENSIONS: a numeric dimension added there is covered here without a new row.

NUMERIC = [name for name, (kind, *_) in space.DIMENSIONS.items() if kind in (int, float)]
FORMS = {  # how a dimension can be written, with {v} where the bad number goes
    "constant": "{v}",
    "lo": "{{{kind} = [{v}, {hi}]}}",
    "hi": "{{{kind} = [{lo}, {v}]}}",
    "choice": "{{choices = [{lo}, {v}]}}",
}


def with_dimension(name: str, value: str, text: str = BASE) -> tuple[str, int]:
    """The space `text` with `name` written as `value`; the line where it is."""
    lines = text.splitlines()
    found = [i for i, line in enumerate(lines) if line.split("=", 1)[0].strip() == name]
    if not found:  # a dimension the file may leave out (space.OPTIONAL): added at the end of [dimensions]
        lines.append("")
    n = found[0] if found else len(lines) - 1
    lines[n] = f"{name} = {value}"
    return "\n".join(lines) + "\n", n + 1


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=repr)
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", NUMERIC)
def test_every_number_of_a_space_must_be_finite(tmp_path, name, form, value):
    """TOML reads nan, inf and -inf: in a constant, a bound or a choice, each is refused with the
    file, line and dimension (an integer dimension refuses them as non-integers)."""
    kind, lo, hi, _ = space.DIMENSIONS[name]
    text, line = with_dimension(name, FORMS[form].format(v=repr(value), kind=kind.__name__, lo=lo, hi=hi))
    path = write(tmp_path, text)
    with pytest.raises(space.SpaceError) as e:
        space.load(path)
    reason = "must be a finite number" if kind is float else "expected int values"
    assert str(e.value) == f"{path}:{line}: {name}: {reason}, got {value!r}"


def test_bounds_of_every_dimension_are_accepted(tmp_path):
    """The checks refuse no value the ranges allow: every numeric dimension at [lo, hi] at once."""
    text = BASE
    for name in NUMERIC:
        kind, lo, hi, _ = space.DIMENSIONS[name]
        text, _ = with_dimension(name, f"{{{kind.__name__} = [{lo}, {hi}]}}", text)
    sp = space.load(write(tmp_path, text))
    assert all((sp.dims[n].low, sp.dims[n].high) == space.DIMENSIONS[n][1:3] for n in NUMERIC)


def test_unknown_space():
    known = r"unknown space 'tiny'; known: compact, default, small, wide \(or give a"
    with pytest.raises(space.SpaceError, match=known):
        space.load("tiny")


def test_workers_sample_different_points():
    """Two workers with one --seed: their samplers must not propose the same start-up points."""
    first = []
    for worker in (0, 1, 0):
        study = optuna.create_study(sampler=make_sampler(search.Settings(worker=worker)))
        trial = study.ask()
        first.append(space.suggest(trial, DEFAULT))
    assert first[0] != first[1] and first[0] == first[2]


def test_a_study_records_what_the_space_samples_not_its_comments():
    text = (space.resources.files("nas.spaces") / "default.toml").read_text()
    same = space.parse("# another comment\n" + text.replace('description = "', 'description = "Edited. '), "x", "x")
    wider = space.parse(text.replace("width = {int = [8, 24]}", "width = {int = [8, 32]}"), "x", "x")
    assert same.sha256 == space.load("default").sha256 != wider.sha256


def test_the_compact_space_is_the_wide_one_with_the_unimportant_dimensions_fixed():
    wide, compact = space.load("wide"), space.load("compact")
    fixed = {"pad_first": 1, "head": "conv", "batch_size": 128, "weight_decay": 0.0, "label_smoothing": 0.0}
    assert {n: d.value for n, d in compact.dims.items() if d.kind == "const" and d != wide.dims[n]} == fixed
    assert {n: d for n, d in compact.dims.items() if n not in fixed} == {
        n: d for n, d in wide.dims.items() if n not in fixed
    }
    assert all(fixed[n] in wide.dims[n].values() for n in fixed)  # each a value the wide space draws
    for queued in ("cpu-b8000-217-onecycle", "cpu-b8000-217-slim5k-onecycle", "cpu-b8000-217-step"):
        # the best networks fit it
        search.enqueueable(str(REPO / "search_spaces" / "queued" / f"{queued}.json"), compact, 8000)


def test_the_estimate_times_networks_drawn_between_half_the_budget_and_the_budget():
    small = space.load("small")
    drawn = search.draw(small, 2000, 4000, 3)
    assert len(drawn) == 3 and all(2000 <= spec.param_count(c) < 4000 for c in drawn)
    assert [c.to_dict() for c in search.draw(small, 2000, 4000, 3)] == [c.to_dict() for c in drawn]  # same seed
    assert search.draw(small, 0, 10, 3) == []  # nothing that small: the estimate falls back to the reference's
    assert all(space.space_params(c, small) is not None for c in drawn)  # the space's own networks
