"""The levers that steady a run's last epochs: schedules that move every optimizer step, weight
averaging (ema), random zoom, brightness and contrast; their bad values; a replay that uses them."""

import csv
import dataclasses
import json
import math

import pytest
import torch
from conftest import run_nas

from nas import data, spec, train
from nas.graphs import set_lr

pytestmark = pytest.mark.slow  # each lever trained for real

SMALL = spec.from_dict(
    {
        "name": "small",
        "layers": [{"op": "conv", "out": 8}, {"op": "pool"}, {"op": "conv", "out": 12}, {"op": "conv", "out": 10}]
        + [{"op": "gap"}],
        "recipe": {"epochs": 3, "lr": 0.05, "schedule": "onecycle", "lr_step": "batch", "batch_size": 64},
    }
)


def recipe(**changes) -> spec.Recipe:
    return dataclasses.replace(SMALL.recipe, **changes)


@pytest.fixture(scope="module")
def small_split(mnist):
    return data.make_split(mnist, "val", train_limit=2000, eval_limit=1000)


# --------------------------------------------------------------------------- schedules


@pytest.mark.parametrize(
    ("schedule", "first", "at_most_last"),
    [("onecycle", 0.1 / 10, 0.1 / 1000 * 1.5), ("cosine", 0.1, 1e-6), ("linear", 0.1 / 2, 0.1 / 1000)],
)
def test_a_per_batch_schedule_moves_every_step_peaks_at_lr_and_ends_near_zero(schedule, first, at_most_last):
    lrs = train.lr_values(recipe(lr=0.1, epochs=15, schedule=schedule), steps=40)
    flat = [lr for epoch in lrs for lr in epoch]
    assert [len(e) for e in lrs] == [40] * 15
    assert flat[0] == pytest.approx(first) and max(flat) == pytest.approx(0.1, rel=1e-2)
    assert 0 <= flat[-1] <= at_most_last  # the last step of the last epoch trains at ~0
    assert len(set(lrs[7])) == 40  # a new rate every step of a middle epoch


def test_stepping_per_epoch_keeps_each_schedule_as_it_was():
    """lr_step "epoch" (the default) gives every step of an epoch that epoch's rate, as the
    committed runs trained; StepLR counts epochs whatever lr_step says."""
    steps = recipe(lr=0.1, epochs=15, step_size=6, gamma=0.1, schedule="step")
    expected = [0.1] * 6 + [0.01] * 6 + [0.001] * 3
    for r in (steps, dataclasses.replace(steps, lr_step="batch")):
        lrs = train.lr_values(r, steps=5)
        assert all(len(set(e)) == 1 for e in lrs) and [e[0] for e in lrs] == pytest.approx(expected)
    onecycle = train.lr_values(recipe(lr=0.1, epochs=15, lr_step="epoch"), steps=5)
    firsts = [e[0] for e in onecycle]
    assert firsts[0] == pytest.approx(0.01) and firsts.index(max(firsts)) == 3 and firsts[-1] > 0.005


def test_a_three_epoch_onecycle_per_epoch_trains(small_split):
    """torch's OneCycle divides by zero when its warm-up would end on step 0 (3 epochs, one step each)."""
    config = dataclasses.replace(SMALL, recipe=recipe(lr_step="epoch"))
    _, h = train.train(config, small_split, seed=0)
    assert [e.lr for e in h.epochs][0] == pytest.approx(0.005) and max(e.lr for e in h.epochs) == pytest.approx(0.05)


def test_each_epoch_records_the_rate_of_its_first_and_last_step(small_split):
    _, h = train.train(SMALL, small_split, seed=0)
    lrs = train.lr_values(SMALL.recipe, steps=32)  # ceil(2000 / 64)
    assert [(e.lr, e.lr_last) for e in h.epochs] == [(e[0], e[-1]) for e in lrs]
    assert h.epochs[-1].lr_last <= 0.01 * SMALL.recipe.lr


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_a_tensor_learning_rate_trains_as_the_number(optimizer):
    """The CUDA-graph path keeps the rate in a tensor filled every step; on the CPU the same rates
    give the same weights as plain numbers."""
    r = recipe(optimizer=optimizer, nesterov=True, momentum=0.9, weight_decay=1e-4)
    lrs = [lr for epoch in train.lr_values(r, steps=4) for lr in epoch]
    weights = []
    for tensor_lr in (False, True):
        torch.manual_seed(0)
        model = torch.nn.Linear(6, 3)
        opt = train.make_optimizer(model, r, tensor_lr=tensor_lr)
        assert isinstance(opt.param_groups[0]["lr"], torch.Tensor) == tensor_lr
        gen = torch.Generator().manual_seed(1)
        for lr in lrs:
            set_lr(opt, lr)
            opt.zero_grad()
            model(torch.randn(5, 6, generator=gen)).square().mean().backward()
            opt.step()
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-6, atol=1e-7)
    assert not torch.equal(weights[0], torch.cat([p.flatten() for p in torch.nn.Linear(6, 3).parameters()]))


# --------------------------------------------------------------------------- weight averaging


def test_the_average_is_what_is_judged_and_returned_and_the_network_is_unchanged(small_split):
    config = dataclasses.replace(SMALL, recipe=recipe(ema=0.9))
    model, h = train.train(config, small_split, seed=0)
    _, acc = train.evaluate(model, small_split.eval_x, small_split.eval_y)
    assert acc == h.epochs[-1].eval_acc
    assert sum(p.numel() for p in model.parameters()) == spec.param_count(config)
    _, plain = train.train(SMALL, small_split, seed=0)
    assert [e.eval_acc for e in h.epochs] != [e.eval_acc for e in plain.epochs]
    assert [e.train_loss for e in h.epochs] == [e.train_loss for e in plain.epochs]  # the same training


def test_a_slow_average_reads_near_chance_early_as_its_first_weights(small_split):
    """AveragedModel's first update copies the weights; at decay 0.999 over 32 steps the average
    is still mostly those untrained weights."""
    _, h = train.train(dataclasses.replace(SMALL, recipe=recipe(ema=0.999, epochs=1)), small_split, seed=0)
    assert h.epochs[0].eval_acc < 30


def test_a_checkpoint_carries_the_average_and_resumes_bit_for_bit(small_split, tmp_path):
    config = dataclasses.replace(SMALL, recipe=recipe(ema=0.95, scale=0.1, brightness=0.2, contrast=0.2))
    whole_model, whole = train.train(config, small_split, seed=5)

    def stop_in_2(e):
        if e.epoch == 2:
            raise KeyboardInterrupt

    ckpt = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        train.train(config, small_split, seed=5, checkpoint=ckpt, on_epoch=stop_in_2)
    assert torch.load(ckpt, weights_only=True)["ema"] is not None
    model, resumed = train.train(config, small_split, seed=5, checkpoint=ckpt)
    strip = [dataclasses.replace(e, seconds=0) for e in resumed.epochs]
    assert strip == [dataclasses.replace(e, seconds=0) for e in whole.epochs]
    for a, b in zip(model.state_dict().values(), whole_model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------- augmentation


def test_zoom_scales_about_the_centre():
    x = torch.full((1, 1, 28, 28), data.BACKGROUND)
    x[0, 0, 10, 10] = 1.0 + data.BACKGROUND  # 3.5 pixels up and left of the centre (13.5, 13.5)
    out = data.rotate_by(x, torch.zeros(1), zoom=torch.tensor([2.0])) - data.BACKGROUND
    bright = (out[0, 0] > 0.2).nonzero().float().mean(0)
    assert bright.tolist() == pytest.approx([13.5 - 7, 13.5 - 7], abs=0.6)  # twice as far from the centre


def test_brightness_and_contrast_change_each_image_by_its_own_factor_within_range():
    x = (torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0)) - data.MEAN) / data.STD
    pixels = x * data.STD + data.MEAN
    bright = data.photometric(x, torch.Generator().manual_seed(1), brightness=0.3) * data.STD + data.MEAN
    ratio = (bright / pixels).flatten(1)[:, 0]
    assert ratio.min() >= 0.7 - 1e-4 and ratio.max() <= 1.3 + 1e-4 and len(set(ratio.round(decimals=4).tolist())) > 50
    contrast = data.photometric(x, torch.Generator().manual_seed(1), contrast=0.3) * data.STD + data.MEAN
    assert contrast.min() >= -1e-6 and contrast.max() <= 1 + 1e-6
    spread = contrast.flatten(1).std(1) / pixels.flatten(1).std(1)
    assert spread.min() > 0.69 and spread.max() < 1.31 and spread.std() > 0.05


def test_a_recipe_without_the_new_transforms_draws_as_rotate_did():
    batch = torch.randn(32, 1, 28, 28)
    old = data.rotate(batch, 12, torch.Generator().manual_seed(7), 0.05)
    new = data.augment(batch, spec.Recipe(rotation=12, translate=0.05), torch.Generator().manual_seed(7))
    assert torch.equal(old, new)
    assert torch.equal(data.augment(batch, spec.Recipe(), None), batch)
    zoomed = data.augment(batch, spec.Recipe(rotation=12, translate=0.05, scale=0.1), torch.Generator().manual_seed(7))
    assert not torch.equal(zoomed, old)


# --------------------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("ema", 1.0, "config.recipe.ema: must be < 1, got 1.0"),
        ("ema", 1, "config.recipe.ema: must be < 1, got 1"),
        ("ema", -0.5, "config.recipe.ema: must be >= 0, got -0.5"),
        ("ema", float("nan"), "config.recipe.ema: must be a finite number, got nan"),
        ("scale", 0.5, "config.recipe.scale: must be < 0.5, got 0.5"),
        ("brightness", float("inf"), "config.recipe.brightness: must be a finite number, got inf"),
        ("contrast", -0.1, "config.recipe.contrast: must be >= 0, got -0.1"),
        ("lr_step", "step", "config.recipe.lr_step: must be 'epoch' or 'batch', got 'step'"),
        ("schedule", "linearly", "config.recipe.schedule: must be 'step' or 'onecycle' or 'cosine' or 'linear'"),
    ],
)
def test_a_new_field_s_bad_value_gets_one_clear_line(field, value, message):
    with pytest.raises(spec.SpecError) as e:
        spec.from_dict({"layers": [{"op": "conv", "out": 10}, {"op": "gap"}], "recipe": {field: value}})
    assert str(e.value).startswith(message)


def test_replay_of_a_per_batch_onecycle_with_ema_ends_its_last_epoch_near_zero(tmp_path, data_dir):
    config = tmp_path / "steady.json"
    config.write_text(json.dumps({**SMALL.to_dict(), "name": "steady", "recipe": asdict_with(ema=0.99)}))
    done = run_nas(
        "replay", config, "--train-limit", 2000, "--device", "cpu", "--results-dir", tmp_path / "out",
        "--data-dir", data_dir,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (folder,) = (tmp_path / "out" / "runs" / "steady").iterdir()
    rows = list(csv.DictReader((folder / "history.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert float(rows[-1]["lr_last"]) <= 0.01 * 0.05 and float(rows[0]["lr"]) == pytest.approx(0.005)
    assert "lr last" in done.stdout  # the per-epoch table shows it
    assert not math.isnan(float(rows[-1]["test_acc"]))


def asdict_with(**changes) -> dict:
    return dataclasses.asdict(recipe(**changes))


def test_the_ablation_table_pairs_each_variant_with_today_on_the_same_seeds():
    import pandas as pd
    from conftest import benchmark

    ablation = benchmark("recipe_ablation")
    rows = [("today", 0, 99.30, 99.20), ("today", 1, 99.10, 99.00), ("batch+ema", 0, 99.40, 99.35)]
    rows += [("batch+ema", 1, 99.30, 99.25), ("batch+ema", 2, 99.50, 99.45)]  # seed 2 has no pair
    frame = pd.DataFrame(
        [{"architecture": "a", "variant": v, "seed": s, "params": 7000, "final_val": f, "min_last3_val": m}
         for v, s, f, m in rows]
    )  # fmt: skip
    lines = ablation.table(frame).splitlines()
    assert lines[2] == "| a | 7,000 | today | 2 | 99.20 ± 0.14 | 99.10 ± 0.14 | 0.10 | - |"
    assert lines[3] == "| a | 7,000 | batch+ema | 3 | 99.40 ± 0.10 | 99.35 ± 0.10 | 0.05 | +0.20 ± 0.07 (2) |"


def test_the_wide_space_draws_the_per_step_rate_only_for_schedules_that_move_and_never_zoom():
    import optuna

    from nas import space

    wide = space.load("wide")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = {"step": set(), "moving": set(), "ema": set(), "scale": set()}
    for _ in range(60):
        trial = study.ask()
        r = space.suggest(trial, wide).recipe
        seen["step" if r.schedule == "step" else "moving"].add(r.lr_step)
        seen["ema"].add(r.ema)
        seen["scale"].add(r.scale)
        assert ("lr_step" in trial.params) == (r.schedule != "step")
        study.tell(trial, 0.0)
    assert seen == {"step": {"epoch"}, "moving": {"epoch", "batch"}, "ema": {0.0, 0.998}, "scale": {0.0}}
