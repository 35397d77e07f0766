"""nas.fused (ReLU -> BatchNorm -> Dropout as Triton kernels) against torch, on the CPU under
Triton's interpreter: one subprocess (TRITON_INTERPRET must be set before the kernels are
defined) runs every check and reports numbers; the tests judge them."""

import json
import os
import subprocess
import sys

import pytest
import torch

from nas import data, spec, train

pytestmark = pytest.mark.slow  # the Triton interpreter in a subprocess

pytest.importorskip("triton")

CHECKS = r"""
import dataclasses, json, sys
import torch
import torch.nn.functional as F
from torch import nn
from nas import data, spec, train
from nas.fused import Fused, relu_bn_dropout
from nas.model import build

def err(a, b):
    return ((a - b).norm() / b.norm()).item()

def pair(c):
    a, b = nn.BatchNorm2d(c), nn.BatchNorm2d(c)
    with torch.no_grad():
        a.weight.uniform_(0.5, 1.5); a.bias.uniform_(-1, 1); a.running_var.uniform_(0.5, 2)
    b.load_state_dict(a.state_dict())
    return a, b

out = {}
torch.manual_seed(0)
for p, shape in ((0.0, (4, 3, 5, 7)), (0.25, (4, 3, 20, 20))):
    ref_bn, bn = pair(shape[1])
    twin = nn.BatchNorm2d(shape[1])
    twin.load_state_dict(bn.state_dict())
    x = torch.randn(shape) * 2 + 0.3
    x_ref, x_fused = x.clone().requires_grad_(), x.clone().requires_grad_()
    torch.manual_seed(1)
    y = relu_bn_dropout(x_fused, bn, p)
    with torch.no_grad():
        plain = F.batch_norm(F.relu(x), None, None, ref_bn.weight, ref_bn.bias, True, 0.1, ref_bn.eps)
    keep = ((y != 0) | (plain == 0)).float()  # dropped: zero where BatchNorm's output is not
    y_ref = F.batch_norm(F.relu(x_ref), ref_bn.running_mean, ref_bn.running_var, ref_bn.weight, ref_bn.bias,
                         True, ref_bn.momentum, ref_bn.eps) * keep / (1 - p)
    g = torch.randn(shape)
    (y_ref * g).sum().backward(); (y * g).sum().backward()
    torch.manual_seed(1)
    again = relu_bn_dropout(x.clone(), twin, p)
    out[f"p={p}"] = {
        "errors": [err(y, y_ref), err(x_fused.grad, x_ref.grad), err(bn.weight.grad, ref_bn.weight.grad),
                   err(bn.bias.grad, ref_bn.bias.grad), err(bn.running_mean, ref_bn.running_mean),
                   err(bn.running_var, ref_bn.running_var)],
        "dropped": 1 - keep.mean().item(),
        "batches_tracked": bn.num_batches_tracked.item(),
        "deterministic": torch.equal(again, y.detach()),
    }

config = spec.from_dict(json.loads(sys.argv[1]))
torch.manual_seed(0)
plain, model = build(config), build(config)
model.load_state_dict(plain.state_dict())
fused = Fused(model)
x = torch.randn(6, 1, 28, 28)
plain(x).square().sum().backward(); fused(x).square().sum().backward()
errors = [err(fused(x).detach(), plain(x).detach())]  # a second training step: statistics move on
errors += [err(b.grad, a.grad) for a, b in zip(plain.parameters(), model.parameters())]
with torch.no_grad():
    # evaluation through the fused wrapper against the plain modules torch trained alongside it
    eval_error = err(fused.eval()(x), plain.eval()(x))
out["model"] = {
    "errors": errors,
    "eval_error": eval_error,
    "state_dict_keys": list(model.state_dict()) == list(plain.state_dict()),
}

# with dropout, after a fused training step: evaluation is the plain network's, bit for bit (same
# weights and running statistics, dropout off), deterministic, and it changes no state
dropped = dataclasses.replace(config, recipe=dataclasses.replace(config.recipe, dropout=0.25))
torch.manual_seed(2)
model = build(dropped)
fused = Fused(model)
fused(x).sum().backward()
with torch.no_grad():
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # learned affine weights, not their 1 and 0 initial values
            m.weight.uniform_(0.5, 1.5); m.bias.uniform_(-1, 1)
reference = build(dropped)
reference.load_state_dict(model.state_dict())
reference.eval()
before = {k: v.clone() for k, v in model.state_dict().items()}
with torch.no_grad():
    first, second, want = fused.eval()(x), fused(x), reference(x)
    unchanged = all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    trained = fused.train()(x)
out["eval"] = {
    "identical": torch.equal(first, want),
    "error": err(first, want),
    "deterministic": torch.equal(first, second),
    "state_unchanged": unchanged,
    "has_dropout": any(isinstance(m, nn.Dropout) for m in reference),
    "train_differs": err(trained, want),  # the check above can tell training mode from evaluation
}

split = data.make_split(data.load_mnist(download=False), "val", train_limit=16, eval_limit=16)
trained = dataclasses.replace(config, recipe=dataclasses.replace(config.recipe, batch_size=16, dropout=0.1))
_, history = train.train(trained, split, seed=0, epochs=1, loop=train.Loop(fused=True))
out["train"] = {"epochs": len(history.epochs), "train_loss": history.epochs[0].train_loss}
print(json.dumps(out))
"""

SMALL = {
    "name": "fused-small",
    "layers": [
        {"op": "conv", "out": 4},
        {"op": "pool"},
        {"op": "conv", "out": 6},
        {"op": "conv", "out": 10},
        {"op": "gap"},
    ],
    "recipe": {"dropout": 0.0},
}


@pytest.fixture(scope="module")
def report(data_dir):
    env = {**os.environ, "TRITON_INTERPRET": "1", "NAS_DATA_DIR": str(data_dir)}
    run = subprocess.run(
        [sys.executable, "-c", CHECKS, json.dumps(SMALL)], env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_fused_block_matches_torch_without_dropout(report):
    r = report["p=0.0"]
    assert max(r["errors"]) < 1e-5  # output, dx, dweight, dbias, running mean and variance
    assert r["batches_tracked"] == 1 and r["deterministic"]


def test_fused_block_drops_with_probability_p_and_matches_torch_on_the_kept(report):
    r = report["p=0.25"]
    assert abs(r["dropped"] - 0.25) < 0.03  # 4,800 values: 5 standard deviations
    assert max(r["errors"]) < 1e-5
    assert r["deterministic"]  # the mask follows torch's generator


def test_fused_model_trains_as_the_plain_one_and_evaluates_identically(report):
    r = report["model"]
    assert max(r["errors"]) < 1e-5  # output and every parameter's gradient
    assert r["eval_error"] < 1e-5, r  # running statistics the kernels kept, used in evaluation
    assert r["state_dict_keys"]
    e = report["eval"]
    assert e["has_dropout"] and e["train_differs"] > 0.1, e
    assert e["identical"] and e["deterministic"] and e["state_unchanged"], e


def test_train_with_fused_runs_an_epoch(report):
    assert report["train"]["epochs"] == 1 and 0 < report["train"]["train_loss"] < 10


def test_fused_off_cuda_without_the_interpreter_is_refused(mnist, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    split = data.make_split(mnist, "val", train_limit=64, eval_limit=64)
    with pytest.raises(ValueError, match="need a CUDA device"):
        train.train(spec.from_dict(SMALL), split, seed=0, device=torch.device("cpu"), loop=train.Loop(fused=True))


@pytest.mark.parametrize(("block", "dropout"), [(1024, True), (64, False)])
def test_fused_kernels_compile_for_an_h100(block, dropout):
    # the interpreter runs the kernels' logic; this compiles them, ahead of time and without a
    # GPU, to sm_90 machine code with the ptxas Triton ships, as a CUDA run would
    import inspect

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from nas import fused

    types = {"seed_ptr": "*i32", "N": "i32", "C": "i32", "HW": "i32", "momentum": "fp32", "eps": "fp32", "p": "fp32"}
    constexprs = {"BLOCK": block, "BLOCK_N": 128, "DROPOUT": dropout}
    for kernel in (fused._row_stats, fused._normalise, fused._grad_rows, fused._grad_input):
        names = list(inspect.signature(kernel.fn).parameters)
        signature = {k: "constexpr" if k in constexprs else types.get(k, "*fp32") for k in names}
        const = {(names.index(k),): v for k, v in constexprs.items() if k in names}
        compiled = triton.compile(
            ASTSource(fn=kernel, signature=signature, constexprs=const), target=GPUTarget("cuda", 90, 32)
        )
        assert len(compiled.asm["cubin"]) > 1000
