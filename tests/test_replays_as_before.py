"""Every committed baseline and frontier winner trains exactly as it did under the trainer that
made the committed evidence: the recipe fields added since (lr_step, ema, scale, brightness,
contrast) are off by default and change no number.

The oracle is that trainer itself, taken from the repository's history and run side by side with
today's on this machine. Committed figures themselves are bit-for-bit only on the CPU that made
them (convolution kernels differ between processors), so a comparison with a CSV would test the
machine, not the code."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow  # trains every committed config under two trainers

BEFORE = "f8a0cdb"  # the last commit whose trainer had none of the new fields: it made the evidence
CONFIGS = sorted(str(p.relative_to(REPO)) for p in (REPO / "nas" / "baselines").glob("*.json")) + sorted(
    str(p.relative_to(REPO)) for p in (REPO / "results" / "evidence" / "frontier").glob("frontier-*.json")
)
TRAIN = """
import json, sys, torch
from nas import data, spec, train
torch.set_num_threads(1)
split = data.make_split(data.load_mnist(sys.argv[1], download=False), "test", train_limit=1200, eval_limit=600)
out = {}
for path in sys.argv[2:]:
    config = spec.load(path)
    for seed in (0, 5):
        _, h = train.train(config, split, seed, epochs=2)
        out[f"{path} {seed}"] = [[e.lr, e.train_loss, e.train_acc, e.eval_loss, e.eval_acc] for e in h.epochs]
print(json.dumps({"nas": data.__file__, "runs": out}))
"""


def histories(package_root, data_dir) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", TRAIN, str(data_dir), *(str(REPO / c) for c in CONFIGS)],
        capture_output=True, text=True, cwd=package_root, env=dict(os.environ, PYTHONPATH=str(package_root)),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["nas"] == str(package_root / "nas" / "data.py")  # this trainer, not the installed one
    return result["runs"]


def test_every_committed_config_trains_as_under_the_trainer_that_made_its_evidence(tmp_path, data_dir):
    if subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{BEFORE}^{{commit}}"]).returncode:
        pytest.fail(f"commit {BEFORE} is not in this clone's history: clone without --depth to run this test")
    archive = subprocess.run(["git", "-C", str(REPO), "archive", BEFORE, "nas"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(tmp_path)], input=archive.stdout, check=True)
    assert len(CONFIGS) == 13  # ten baselines, three winners
    before, now = histories(tmp_path, data_dir), histories(REPO, data_dir)
    assert list(before) == list(now) and len(now) == 26
    for key in now:
        assert now[key] == before[key], key
