"""The wider recipes (AdamW, Nesterov, OneCycle and cosine schedules, label smoothing, random
translation), the space that draws them, and the objective that judges a trial by its worst epoch."""

import dataclasses
import math

import optuna
import pytest
import torch

from nas import data, objective, search, space, spec, train

optuna.logging.set_verbosity(optuna.logging.WARNING)
WIDE = space.load("wide")


def lrs(recipe: spec.Recipe) -> list[float]:
    """The learning rate of each epoch, as train.train sets it (its table of every step's rate; one
    step an epoch is enough when the schedule moves once an epoch)."""
    return [epoch[0] for epoch in train.lr_values(recipe, steps=1)]


def test_schedules_per_epoch():
    """Each schedule's 15 rates worked out by hand from its definition (make_schedule's docstring),
    not by torch: a rate per epoch, and one more after the last epoch that no epoch trains with."""
    base = spec.Recipe(lr=0.1, epochs=15, step_size=6, gamma=0.1)
    assert lrs(base) == pytest.approx([0.1] * 6 + [0.01] * 6 + [0.001] * 3)
    # OneCycle over 16 rates: from 0.1 / 10 up to 0.1 in 3 equal steps (torch ends the warm-up at
    # 0.25 * 16 - 1 = 3), then linearly down to 0.01 / 100 = 1e-4 at rate 15: 0.0999 / 12 = 0.008325 a step
    one = lrs(dataclasses.replace(base, schedule="onecycle"))
    assert one == pytest.approx([0.01, 0.04, 0.07, 0.1, 0.091675, 0.08335, 0.075025, 0.0667, 0.058375, 0.05005,
                                 0.041725, 0.0334, 0.025075, 0.01675, 0.008425])  # fmt: skip
    # cosine from 0.1 to 0 over the 15 steps between the 16 rates: 0.05 (1 + cos(pi t / 15))
    cos = lrs(dataclasses.replace(base, schedule="cosine"))
    assert cos == pytest.approx([0.05 * (1 + math.cos(math.pi * t / 15)) for t in range(15)])
    assert (cos[5], cos[10]) == pytest.approx((0.075, 0.025))  # cos(pi / 3) = 1/2, cos(2 pi / 3) = -1/2


def test_optimizers_and_label_smoothing():
    model = torch.nn.Linear(2, 2)
    assert type(train.make_optimizer(model, spec.Recipe(optimizer="adamw", weight_decay=0.01))) is torch.optim.AdamW
    sgd = train.make_optimizer(model, spec.Recipe(nesterov=True))
    assert type(sgd) is torch.optim.SGD and sgd.param_groups[0]["nesterov"] is True
    with pytest.raises(spec.SpecError, match=r"recipe.label_smoothing: must be < 1, got 1.0"):
        spec.from_dict({"layers": [{"op": "conv", "out": 10}, {"op": "gap"}], "recipe": {"label_smoothing": 1.0}})


def test_translation_moves_the_digit_by_whole_pixels_and_rotation_draws_as_before():
    x = torch.full((1, 1, 28, 28), data.BACKGROUND)
    x[0, 0, 10, 10] = 1.0 + data.BACKGROUND
    moved = data.rotate_by(x, torch.zeros(1), torch.tensor([[2 / 14, 3 / 14]])) - data.BACKGROUND
    assert (moved[0, 0] > 0.5).nonzero().tolist() == [[13, 12]]  # 3 rows down, 2 columns right
    assert moved.min() > -1e-6  # the background stays black
    batch = torch.randn(64, 1, 28, 28)
    plain = data.rotate(batch, 15, torch.Generator().manual_seed(3))
    again = data.rotate(batch, 15, torch.Generator().manual_seed(3), translate=0.0)
    assert torch.equal(plain, again)  # translate 0: the same draws, the same images as before
    shifted = data.rotate(batch, 0, torch.Generator().manual_seed(3), translate=0.1)
    assert not torch.equal(shifted, batch)


@pytest.mark.slow
def test_a_wide_recipe_trains_with_its_schedule(mnist):
    split = data.make_split(mnist, "val", train_limit=2000, eval_limit=500)
    config = spec.from_dict(
        {
            "layers": [{"op": "conv", "out": 8}, {"op": "pool"}, {"op": "conv", "out": 10}, {"op": "gap"}],
            "recipe": {"optimizer": "adamw", "lr": 0.02, "weight_decay": 0.0001, "schedule": "onecycle",
                       "epochs": 4, "translate": 0.1, "rotation": 10, "label_smoothing": 0.1, "batch_size": 100},
        }
    )  # fmt: skip
    _, history = train.train(config, split, seed=0)
    # OneCycle over 5 rates (4 epochs and one after): torch ends the warm-up at 0.25 * 5 - 1 = 0.25, so
    # epoch 1 trains at 0.02 / 10 and epochs 2-4 are 0.75, 1.75 and 2.75 of the 3.75 steps down from 0.02
    # to 0.002 / 100: 0.02 - 0.01998 * (0.2, 0.4667, 0.7333); the peak itself falls between two epochs
    expected = [0.002, 0.016004, 0.010676, 0.005348]
    assert [e.lr for e in history.epochs] == pytest.approx(expected)
    assert [e.lr_last for e in history.epochs] == pytest.approx(expected)  # once an epoch: every step alike
    assert history.epochs[-1].train_loss < history.epochs[0].train_loss and history.epochs[-1].eval_acc > 40


def test_the_wide_space_draws_each_dimension_only_where_it_applies():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(300):
        trial = study.ask()
        config = space.suggest(trial, WIDE)
        study.tell(trial, 0.0)
        p, r = trial.params, config.recipe
        seen.add((p["optimizer"], p["schedule"]))
        adam = p["optimizer"] in ("adam", "adamw")
        assert ("adam_lr" in p) == adam and ("lr" in p) == ("momentum" in p) == (not adam)
        assert r.lr == (p["adam_lr"] if adam else p["lr"]) and r.nesterov == (p["optimizer"] == "nesterov")
        assert ("step_size" in p) == ("gamma" in p) == (p["schedule"] == "step") == (r.step_size is not None)
        assert (r.translate, r.label_smoothing) == (p["translate"], p["label_smoothing"])
    assert len(seen) == 12  # every optimizer with every schedule


@pytest.mark.parametrize("name", ["default", "wide"])
def test_baseline_6_is_queued_in_both_spaces_and_rebuilds_exactly(name):
    sp = space.load(name)
    config = spec.load_baseline("baseline-6")
    params = space.space_params(config, sp)
    study = optuna.create_study()
    study.enqueue_trial(params)
    rebuilt = space.suggest(study.ask(), sp)
    assert rebuilt.layers == config.layers and rebuilt.recipe == config.recipe


def test_a_space_file_may_leave_the_new_dimensions_out():
    default = space.load("default")
    assert default.dims["schedule"].value == "step" and default.dims["translate"].value == 0.0


def test_the_objective_is_the_worst_of_the_last_k_validation_epochs(tmp_path):
    sp = space.load("default")
    s = search.Settings(trials=1, results_dir=str(tmp_path), storage=f"sqlite:///{tmp_path}/x.db")
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(space.space_params(spec.load_baseline("baseline-6"), sp))

    def fit(config, seed, on_epoch):  # validation accuracy per epoch
        for epoch, acc in enumerate([90.0, 99.5, 99.3, 99.6, 99.45], start=1):
            on_epoch(train.Epoch(epoch, 0.01, 0.01, 0.1, 99.0, 0.05, acc, 1.0))

    study.optimize(objective.objective_for(study, s, sp, None, "cpu", fit), n_trials=1)
    t = study.trials[0]
    assert t.value == 99.3 and t.user_attrs["val_mean_last_k"] == pytest.approx((99.3 + 99.6 + 99.45) / 3)
