"""The config schema against PyTorch as the oracle: counts, MACs, shapes and the reference's RF tables."""

import json
import math
from dataclasses import fields

import pytest
import torch
from conftest import REPO
from torch import nn

from nas import spec
from nas.model import build, count_parameters

# The reference's two receptive-field tables, cell for cell (../shared/seed/discover-network-architectures.md)
SEED_MODEL_1 = [
    (1, "Conv2d", 28, 3, 0, 1, 26, 1, 1, 1, 3),
    (2, "Conv2d", 26, 3, 0, 1, 24, 1, 1, 3, 5),
    (3, "MaxPool", 24, 2, 0, 2, 12, 1, 2, 5, 6),
    (4, "Conv2d", 12, 3, 0, 1, 10, 2, 2, 6, 10),
    (5, "Conv2d", 10, 3, 0, 1, 8, 2, 2, 10, 14),
    (6, "Conv2d", 8, 3, 0, 1, 6, 2, 2, 14, 18),
    (7, "Conv2d", 6, 3, 0, 1, 4, 2, 2, 18, 22),
    (8, "GAP", 4, 4, 0, 1, 1, 2, 2, 22, 28),
]
SEED_MODEL_2 = [
    (1, "Conv2d", 28, 3, 1, 1, 28, 1, 1, 1, 3),
    (2, "Conv2d", 28, 3, 1, 1, 28, 1, 1, 3, 5),
    (3, "MaxPool", 28, 2, 0, 2, 14, 1, 2, 5, 6),
    (4, "Conv2d", 14, 3, 0, 1, 12, 2, 2, 6, 10),
    (5, "Conv2d", 12, 3, 0, 1, 10, 2, 2, 10, 14),
    (6, "Conv2d", 10, 3, 0, 1, 8, 2, 2, 14, 18),
    (7, "Conv2d", 8, 3, 0, 1, 6, 2, 2, 18, 22),
    (8, "Conv2d", 6, 3, 0, 1, 4, 2, 2, 22, 26),
    (9, "GAP", 4, 4, 0, 1, 1, 2, 2, 26, 32),
]


def conv(out, kernel=3, padding=0):
    return {"op": "conv", "out": out, "kernel": kernel, "padding": padding}


# Configs beyond the baselines: 1x1 transitions, padding, two pools, hidden and output fc layers.
EXTRA = [
    [conv(8, padding=1), conv(16), {"op": "pool"}, conv(8, 1), conv(12), conv(16), conv(10), {"op": "gap"}],
    [conv(8), {"op": "pool"}, conv(12), {"op": "pool"}, conv(16, padding=1), {"op": "gap"}, {"op": "fc", "out": 10}],
    [conv(4, 5, 2), conv(6), {"op": "gap"}, {"op": "fc", "out": 20}, {"op": "fc", "out": 10}],
    [conv(10, 1), {"op": "gap"}],
]
SEP = {"op": "sep", "out": 12, "kernel": 3, "padding": 1}
BN_FIRST = {**conv(8, padding=1), "order": "bn-relu"}
EXTRA += [  # depthwise-separable convs (hidden and as the class layer) and BatchNorm before ReLU
    [conv(8, padding=1), SEP, {"op": "pool"}, {**SEP, "padding": 0, "out": 10}, {"op": "gap"}],
    [BN_FIRST, {**SEP, "order": "bn-relu"}, {"op": "pool"}, BN_FIRST, conv(10, 1), {"op": "gap"}],
]
EXTRA_CONFIGS = [spec.from_dict({"layers": x, "recipe": {"dropout": 0.1}}) for x in EXTRA]
CONFIGS = [spec.load_baseline(n) for n in spec.baseline_names()] + EXTRA_CONFIGS


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.name or str(len(c.layers)))
def test_param_count_equals_torch(config):
    assert spec.param_count(config) == count_parameters(build(config))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.name or str(len(c.layers)))
def test_macs_and_shapes_equal_torch(config):
    """MACs from arithmetic equal those counted by forward hooks; every traced shape is real."""
    model, macs, shapes = build(config).eval(), [], []

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]  # a depthwise conv reads one channel per output
            macs.append(output[0].numel() * module.in_channels // module.groups * k)
        elif isinstance(module, nn.Linear):
            macs.append(module.in_features * module.out_features)
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.MaxPool2d, nn.Flatten)):
            shapes.append(tuple(output.shape[1:]))

    for m in model.modules():
        m.register_forward_hook(hook)
    with torch.no_grad():
        out = model(torch.zeros(1, 1, 28, 28))
    assert out.shape == (1, 10)
    assert sum(macs) == spec.macs(config)
    traced = []
    for r in spec.trace(config):
        if r.layer.op == "sep":  # its depthwise conv's output first
            traced.append((r.in_ch, r.out_size, r.out_size))
        traced.append((r.out_ch, r.out_size, r.out_size) if r.layer.op not in ("fc", "gap") else (r.out_ch,))
    assert shapes == traced


WOOLLY = REPO / "search_spaces" / "queued-small" / "woolly-3762.json"
# adilsammar/woolly-of-cv's 3,762-parameter network, worked by hand: (layer, weights, BatchNorm)
WOOLLY_PARAMS = [
    ("conv 1->4", 9 * 1 * 4, 8), ("conv 4->4", 9 * 4 * 4, 8), ("conv 4->4", 144, 8),
    ("conv 4->8", 9 * 4 * 8, 16), ("conv 8->8", 9 * 8 * 8, 16), ("conv 8->8", 576, 16),
    ("conv 8->8", 576, 16), ("conv 8->8", 576, 16), ("conv 8->8", 576, 16), ("1x1 8->10", 80, 0),
]  # fmt: skip
WOOLLY_RF = [
    (1, "Conv2d", 28, 3, 1, 1, 28, 1, 1, 1, 3),
    (2, "Conv2d", 28, 3, 1, 1, 28, 1, 1, 3, 5),
    (3, "Conv2d", 28, 3, 1, 1, 28, 1, 1, 5, 7),
    (4, "MaxPool", 28, 2, 0, 2, 14, 1, 2, 7, 8),
    (5, "Conv2d", 14, 3, 1, 1, 14, 2, 2, 8, 12),
    (6, "Conv2d", 14, 3, 1, 1, 14, 2, 2, 12, 16),
    (7, "Conv2d", 14, 3, 1, 1, 14, 2, 2, 16, 20),
    (8, "MaxPool", 14, 2, 0, 2, 7, 2, 4, 20, 22),
    (9, "Conv2d", 7, 3, 1, 1, 7, 4, 4, 22, 30),
    (10, "Conv2d", 7, 3, 1, 1, 7, 4, 4, 30, 38),
    (11, "Conv2d", 7, 3, 1, 1, 7, 4, 4, 38, 46),
    (12, "Conv2d", 7, 1, 0, 1, 7, 4, 4, 46, 46),
    (13, "GAP", 7, 7, 0, 1, 1, 4, 4, 46, 70),
]


def test_the_3762_parameter_network_is_a_config_counted_without_biases():
    config = spec.load(WOOLLY)
    hand = sum(w + bn for _, w, bn in WOOLLY_PARAMS)
    assert spec.param_count(config) == hand == 3692 == count_parameters(build(config))
    assert hand + 3 * 4 + 6 * 8 + 10 == 3762  # the published count: its nine 3x3 convs and the 1x1 carry biases
    assert spec.rf_table(config) == WOOLLY_RF
    model = build(config)
    assert isinstance(model[1], nn.BatchNorm2d) and isinstance(model[2], nn.ReLU)  # conv -> BN -> ReLU


def test_a_separable_conv_is_counted_by_hand():
    """1 -> 8 full conv, then a separable 8 -> 12 (72 depthwise + 96 pointwise weights, 24 BN), then
    after the pool a separable 12 -> 10 class layer (108 + 120, no BN), all padded but the last."""
    config = EXTRA_CONFIGS[4]
    assert [r.params for r in spec.trace(config)] == [72 + 16, 72 + 96 + 24, 0, 108 + 120, 0]
    assert [r.macs for r in spec.trace(config)] == [72 * 784, 168 * 784, 0, 228 * 144, 0]
    rows = spec.rf_table(config)
    assert rows[1] == (2, "SepConv2d", 28, 3, 1, 1, 28, 1, 1, 3, 5)  # the RF of a 3x3 conv
    assert rows[3] == (4, "SepConv2d", 14, 3, 0, 1, 12, 2, 2, 6, 10)


def test_seed_parameter_counts():
    counts = {n: spec.param_count(spec.load_baseline(n)) for n in spec.baseline_names()}
    assert counts["baseline-1"] == 9902
    assert (
        counts["baseline-2"] == counts["baseline-4-10k"] == counts["baseline-5-10k"] == counts["baseline-6-10k"] == 9060
    )
    assert counts["baseline-3"] == counts["baseline-4"] == counts["baseline-5"] == counts["baseline-6"] == 7826
    assert counts["baseline-6-rf32"] < 8000


@pytest.mark.parametrize("name", ["baseline-1", "baseline-2", "baseline-3", "baseline-6", "baseline-6-10k"])
def test_model_1_rf_table_is_the_seeds(name):
    assert spec.rf_table(spec.load_baseline(name)) == SEED_MODEL_1


def test_model_2_rf_table_is_the_seeds():
    config = spec.load_baseline("baseline-6-rf32")
    assert spec.rf_table(config) == SEED_MODEL_2
    assert spec.receptive_field(config) == 32


def test_rf_table_rows_for_1x1_convs_and_no_rows_for_fc():
    rows = spec.rf_table(EXTRA_CONFIGS[0])  # a 1x1 transition after the pool
    assert [r[1] for r in rows] == ["Conv2d"] * 2 + ["MaxPool"] + ["Conv2d"] * 4 + ["GAP"]
    assert rows[3][3] == 1 and rows[3][9] == rows[3][10]  # 1x1 conv: RF unchanged
    fc_config = EXTRA_CONFIGS[1]
    assert len(spec.rf_table(fc_config)) == len([x for x in fc_config.layers if x.op != "fc"])


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.name or str(len(c.layers)))
def test_json_round_trip(config):
    assert spec.from_dict(json.loads(config.to_json())) == config


BAD = [
    ({"layers": []}, "config.layers: must be a non-empty list"),
    (
        {"layers": [conv(10), {"op": "dense"}]},
        "config.layers[1].op: must be one of conv, sep, pool, gap, fc, got 'dense'",
    ),
    ({"layers": [conv(-4), conv(10), {"op": "gap"}]}, "config.layers[0].out: must be >= 1, got -4"),
    ({"layers": [conv(8.5), conv(10), {"op": "gap"}]}, "config.layers[0].out: must be an integer, got 8.5"),
    ({"layers": [conv(8, kernel=2), conv(10), {"op": "gap"}]}, "config.layers[0].kernel: must be odd, got 2"),
    ({"layers": [conv(8, padding=2), conv(10), {"op": "gap"}]}, "config.layers[0].padding: must be <= 1, got 2"),
    ({"layers": [conv(8), conv(12), {"op": "gap"}]}, "config.layers[1].out: the output layer must have 10 outputs"),
    ({"layers": [conv(8), conv(10)]}, "needs exactly one 'gap' layer, found 0"),
    (
        {"layers": [{**conv(10), "order": "bn"}, {"op": "gap"}]},
        "config.layers[0].order: must be 'relu-bn' or 'bn-relu'",
    ),
    ({"layers": [{**conv(10), "order": "bn-relu"}, {"op": "gap"}]}, "config.layers[0].order: the output layer has no"),
    ({"layers": [{**SEP, "kernel": 1}, conv(10), {"op": "gap"}]}, "config.layers[0].kernel: must be >= 3, got 1"),
    ({"layers": [conv(8), {"op": "gap"}, conv(10)]}, "config.layers[2]: 'conv' cannot come after the gap layer"),
    ({"layers": [{"op": "pool"}] * 5 + [conv(10), {"op": "gap"}]}, "config.layers[4]: cannot max-pool a 1x1 map"),
    ({"layers": [conv(10, 3, 0)] * 14 + [{"op": "gap"}]}, "config.layers[13]: a 3x3 conv does not fit a 2x2 map"),
    ({"layers": [conv(10), {"op": "gap"}], "recipe": {"dropout": 1.0}}, "config.recipe.dropout: must be < 1, got 1.0"),
    ({"layers": [conv(10), {"op": "gap"}], "recipe": {"lr": 0}}, "config.recipe.lr: must be > 0, got 0"),
    ({"layers": [conv(10), {"op": "gap"}], "recipe": {"batch": 64}}, "config.recipe: unknown field 'batch'"),
    ({"layers": [conv(10), {"op": "gap"}], "recipe": {"optimizer": "rmsprop"}}, "must be 'sgd' or 'adam'"),
    ({"layers": [conv(10), {"op": "gap"}], "recipe": {"epochs": True}}, "config.recipe.epochs: must be an integer"),
    ({"layers": [conv(10), {"op": "gap"}], "width": 3}, "config: unknown field 'width'"),
]


def test_load_reports_file_line_and_column(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n  "layers": [\n    {"op": "conv", "out": 10,}\n  ]\n}\n')
    with pytest.raises(spec.SpecError, match=r"broken.json: line 3, column 30: invalid JSON"):
        spec.load(path)
    with pytest.raises(spec.SpecError, match="cannot read config file"):
        spec.load(tmp_path / "missing.json")


def test_unknown_baseline_lists_the_known_ones():
    with pytest.raises(spec.SpecError, match=r"unknown baseline 'baseline-7'; known: baseline-1, baseline-2"):
        spec.resolve("baseline-7")


def test_spec_imports_neither_torch_nor_optuna():
    import subprocess
    import sys

    code = "import sys, nas.spec; sys.exit(bool({'torch', 'optuna'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# --------------------------------------------------------------------------- every field, by its type
# Built from the dataclasses: a field added to Recipe or Reported is covered here without a new row.


def field_names(cls, *types: str) -> list[str]:
    return [f.name for f in fields(cls) if f.type.removesuffix(" | None") in types]


SECTIONS = {"recipe": spec.Recipe, "reported": spec.Reported}
FLOATS = [(section, name) for section, cls in SECTIONS.items() for name in field_names(cls, "float")]
INTS = [(section, name) for section, cls in SECTIONS.items() for name in field_names(cls, "int")]
BOOLS = [(section, name) for section, cls in SECTIONS.items() for name in field_names(cls, "bool")]


def with_field(section: str, name: str, value) -> dict:
    return {"layers": [conv(10), {"op": "gap"}], section: {name: value}}


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=repr)
@pytest.mark.parametrize("section,name", FLOATS, ids=".".join)
def test_every_float_field_must_be_finite(tmp_path, section, name, value):
    """Through the file, as a user writes it: Python's json reads NaN, Infinity and -Infinity."""
    path = tmp_path / "c.json"
    path.write_text(json.dumps(with_field(section, name, value)))
    assert ("NaN" if math.isnan(value) else "Infinity") in path.read_text()
    with pytest.raises(spec.SpecError) as e:
        spec.load(path)
    assert str(e.value) == f"{path}.{section}.{name}: must be a finite number, got {value!r}"


@pytest.mark.parametrize("value", [3.0, math.nan, "3", True], ids=repr)
@pytest.mark.parametrize("section,name", INTS, ids=".".join)
def test_every_int_field_takes_integers_only(section, name, value):
    with pytest.raises(spec.SpecError, match=rf"config\.{section}\.{name}: must be an integer, got "):
        spec.from_dict(with_field(section, name, value))


@pytest.mark.parametrize("value", [1, 0, "true", None], ids=repr)
@pytest.mark.parametrize("section,name", BOOLS, ids=".".join)
def test_every_bool_field_takes_true_or_false_only(section, name, value):
    with pytest.raises(spec.SpecError, match=rf"config\.{section}\.{name}: must be true or false, got "):
        spec.from_dict(with_field(section, name, value))


def test_every_numeric_recipe_field_has_a_range():
    assert FLOATS and INTS and BOOLS
    assert set(spec.RECIPE_RANGES) == set(field_names(spec.Recipe, "int", "float"))


# the ends of each range: (field, a value just outside, the message; a value just inside)
RANGES = [
    ("lr", 0, "must be > 0, got 0", 1e-9),
    ("lr", -0.01, "must be > 0, got -0.01", 10.0),
    ("momentum", 1.0, "must be < 1, got 1.0", 0.0),
    ("momentum", -0.1, "must be >= 0, got -0.1", 0.99),
    ("weight_decay", -1e-4, "must be >= 0, got -0.0001", 0.0),
    ("batch_size", 0, "must be >= 1, got 0", 1),
    ("epochs", 0, "must be >= 1, got 0", 1),
    ("step_size", 0, "must be >= 1, got 0", 1),
    ("gamma", 0, "must be > 0, got 0", 1.0),
    ("gamma", 1.5, "must be <= 1, got 1.5", 1e-3),
    ("dropout", 1.0, "must be < 1, got 1.0", 0.0),
    ("dropout", -0.1, "must be >= 0, got -0.1", 0.99),
    ("rotation", -1.0, "must be >= 0, got -1.0", 0.0),
    ("rotation", 181, "must be <= 180, got 181", 180),
]


@pytest.mark.parametrize("name,bad,message,good", RANGES, ids=[f"{r[0]}={r[1]}" for r in RANGES])
def test_recipe_ranges(name, bad, message, good):
    with pytest.raises(spec.SpecError) as e:
        spec.from_dict(with_field("recipe", name, bad))
    assert str(e.value) == f"config.recipe.{name}: {message}"
    assert getattr(spec.from_dict(with_field("recipe", name, good)).recipe, name) == good


OTHER = [  # the fields around the layers and the recipe
    (with_field("reported", "params", -1), "config.reported.params: must be >= 0, got -1"),
    (with_field("reported", "test_acc", 101.0), "config.reported.test_acc: must be <= 100, got 101.0"),
    ({"layers": [conv(10), {"op": "gap"}], "name": 3}, "config.name: must be a string, got 3"),
    ({"layers": [conv(10), {"op": "gap"}], "name": "../up"}, "config.name: must be a plain folder name"),
    ({"layers": [conv(10), {"op": "gap"}], "name": "a/b"}, "config.name: must be a plain folder name"),
    ({"layers": [conv(10), {"op": "gap"}], "description": ["x"]}, "config.description: must be a string"),
    ({"layers": [conv(10), {"op": "gap"}], "recipe": None}, "config.recipe: expected an object, got NoneType"),
    ([{"layers": []}], "config: expected an object, got list"),
]


@pytest.mark.parametrize("bad,message", BAD + OTHER, ids=[m for _, m in BAD + OTHER])
def test_invalid_configs_name_the_field(bad, message):
    with pytest.raises(spec.SpecError) as e:
        spec.from_dict(bad)
    assert message in str(e.value)


def test_load_names_the_file_for_bad_text(tmp_path):
    path = tmp_path / "c.json"
    path.write_bytes('{"name": "réseau"}'.encode("latin-1"))
    with pytest.raises(spec.SpecError, match=r"c\.json: not a JSON text file \(byte 11 is not UTF-8\)"):
        spec.load(path)
    path.write_text('[{"layers": []}]')
    with pytest.raises(spec.SpecError, match=r"c\.json: expected an object, got list"):
        spec.load(path)
    path.write_text('{"layers": [{"op": "conv", "out": 10}, {"op": "gap"}], "recipe": {"lr": Infinity}}')
    with pytest.raises(spec.SpecError, match=r"c\.json\.recipe\.lr: must be a finite number, got inf"):
        spec.load(path)


def test_a_folder_enqueues_its_config_files_in_name_order(tmp_path):
    for name in ("b.json", "a.json", "notes.md"):
        (tmp_path / name).write_text("{}")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.json").write_text("{}")  # one level only: a folder is its own files
    got = spec.expand(["baseline-6", str(tmp_path), "x.json"])
    assert got == ("baseline-6", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "x.json")
