"""The baselines: exact seed parameter counts, and widths re-derived from the stated rule."""

import itertools

import pytest

from nas import spec

LO, HI = 8, 24  # widths the rule considers


def smoothest(n_hidden: int, target: int, fc_head: bool, padded: bool) -> tuple[int, ...]:
    """Among all hidden-width tuples (LO..HI) of the reference's conv stack whose parameter count is
    exactly `target`, the one with the least sum of squared differences between consecutive
    channel counts (the 10 outputs included), ties to fewer MACs, then the smaller tuple.
    The count is linear in the last width, so it is solved for instead of enumerated."""
    found = []
    for head in itertools.product(range(LO, HI + 1), repeat=n_hidden - 1):
        chans = (1, *head)
        fixed = 9 * sum(a * b for a, b in itertools.pairwise(chans)) + 2 * sum(head)
        # the last hidden width w adds 9*prev*w + 2*w (its BN), then either its 10-way output conv
        # (9*w*10) or, with an FC head, its Linear(w, 10) (10*w + 10 bias)
        per_w = 9 * head[-1] + 2 + (10 if fc_head else 90)
        rest = target - fixed - (10 if fc_head else 0)
        if rest % per_w == 0 and LO <= rest // per_w <= HI:
            widths = (*head, rest // per_w)
            roughness = sum((b - a) ** 2 for a, b in itertools.pairwise((*widths, 10)))
            found.append((roughness, widths))
    best = min(r for r, _ in found)
    ties = [w for r, w in found if r == best]
    return min(ties, key=lambda w: (spec.macs(config_of(w, fc_head, padded)), w))


def config_of(widths, fc_head, padded):
    pad = 1 if padded else 0
    layers = [{"op": "conv", "out": widths[0], "padding": pad}, {"op": "conv", "out": widths[1], "padding": pad}]
    layers += [{"op": "pool"}] + [{"op": "conv", "out": w} for w in widths[2:]]
    layers += [{"op": "gap"}, {"op": "fc", "out": 10}] if fc_head else [{"op": "conv", "out": 10}, {"op": "gap"}]
    return spec.from_dict({"layers": layers})


def hidden_widths(config):
    convs = [x.out for x in config.layers if x.op == "conv"]
    return tuple(convs if config.layers[-1].op == "fc" else convs[:-1])


@pytest.mark.parametrize(
    "name,n_hidden,target,fc_head,padded",
    [
        ("baseline-1", 6, 9902, True, False),
        ("baseline-2", 5, 9060, False, False),
        ("baseline-3", 5, 7826, False, False),
        ("baseline-6-rf32", 6, 7826, False, True),
    ],
)
@pytest.mark.slow
def test_widths_follow_the_stated_rule(name, n_hidden, target, fc_head, padded):
    config = spec.load_baseline(name)
    widths = smoothest(n_hidden, target, fc_head, padded)
    assert hidden_widths(config) == widths
    assert spec.param_count(config) == target
    assert config.layers == config_of(widths, fc_head, padded).layers


def test_tracks_share_their_network_and_add_one_concept_at_a_time():
    b = {n: spec.load_baseline(n) for n in spec.baseline_names()}
    assert len(b) == 10
    for track in (
        ["baseline-3", "baseline-4", "baseline-5", "baseline-6"],
        ["baseline-2", "baseline-4-10k", "baseline-5-10k", "baseline-6-10k"],
    ):
        assert len({b[n].layers for n in track}) == 1
        r = [b[n].recipe for n in track]
        assert r[0].dropout == 0 and r[1].dropout > 0 and r[1].rotation == 0
        assert r[2].rotation == 15 and r[2].step_size is None
        assert (r[3].step_size, r[3].gamma, r[3].lr) == (6, 0.1, 0.01)
    assert b["baseline-4"].recipe.dropout == 0.05 and b["baseline-4-10k"].recipe.dropout == 0.043
    assert b["baseline-6-rf32"].recipe == b["baseline-6"].recipe


def test_each_baseline_says_it_is_a_reconstruction_and_carries_the_seed_numbers():
    seed_test = {
        "baseline-1": 99.00,
        "baseline-2": 99.33,
        "baseline-3": 99.22,
        "baseline-4": 99.29,
        "baseline-5": 99.36,
        "baseline-6": 99.48,
        "baseline-4-10k": 99.29,
        "baseline-5-10k": 99.39,
        "baseline-6-10k": 99.47,
    }
    for name in spec.baseline_names():
        config = spec.load_baseline(name)
        assert "Reconstruction" in config.description
        if name in seed_test:
            assert config.reported.test_acc == seed_test[name]
            assert config.reported.params == spec.param_count(config)
        else:
            assert config.reported is None
