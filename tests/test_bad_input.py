"""Every bad input, one table: one clear line on stderr, exit code 2, and nothing written.
The table runs `nas.cli.main` in this process (a `nas` process costs seconds of imports per case);
tests/test_cli.py runs the installed `nas` command for the same promise."""

import hashlib
import json
import re
import shutil
import sqlite3
from pathlib import Path

import pytest

from nas import cli, space, spec

pytestmark = pytest.mark.slow  # its fixture trains and confirms the study every row runs against

SPACE = (space.resources.files("nas.spaces") / "default.toml").read_text()
QUICK = ["--epochs", "1", "--train-limit", "500", "--val-limit", "200", "--device", "cpu"]
LAYERS = [{"op": "conv", "out": 10}, {"op": "gap"}]

# (argv, what stderr must contain: one fragment, or a tuple of fragments that must all be there).
# Every search, replay, confirm, report and train row runs with --results-dir R (a copy of a results
# folder holding the real study "one", budget 8000) and --data-dir (the MNIST folder); {t} is a
# scratch folder with the bad files written below; NAME=VALUE in front sets an environment variable.
# A fragment names the reason the row fails, not only the command's failure: a row must not pass
# because of a second mistake it happens to contain.
PLAIN = "a study name becomes a folder under the results folder: use a plain name (no slash, no leading dot, at"
BAD = [
    (["search", "--budget", "0"], ("--budget", "must be >= 1, got 0")),
    (["search", "--budget", "1000"], "--budget 1000 is at or below the smallest model of space 'default' (1,352"),
    (["search", "--budget", "nan"], ("--budget", "expected a whole number, got 'nan'")),
    (["search", "--trials", "0"], ("--trials", "must be >= 1, got 0")),
    (["search", "--jobs", "0"], ("--jobs", "must be >= 1, got 0")),
    (["search", "--timeout", "-5"], ("--timeout", "must be > 0, got -5")),
    (["search", "--timeout", "nan"], ("--timeout", "must be a finite number, got nan")),
    (["search", "--timeout", "inf"], ("--timeout", "must be a finite number, got inf")),
    (["search", "--space", "nowhere"], "unknown space 'nowhere'"),
    (["search", "--space", "{t}/malformed.toml"], "malformed.toml:11:22: invalid TOML: Unclosed array"),
    (["search", "--space", "{t}/negative.toml"], "negative.toml:11: width: -4 is out of range [1, 256]"),
    (["search", "--space", "{t}/dropout.toml"], "dropout.toml:20: dropout: 1.0 is out of range [0.0, 0.9]"),
    (["search", "--space", "{t}/nan.toml"], "nan.toml:14: lr: must be a finite number, got nan"),
    (["search", "--space", "{t}/inf.toml"], "inf.toml:21: rotation: must be a finite number, got inf"),
    (["search", "--space", "{t}/lowhigh.toml"], "lowhigh.toml:19: gamma: lo 0.5 is above hi 0.1"),
    (["search", "--space", "{t}/float-width.toml"], "float-width.toml:11: width: expected int values, got 8.0"),
    (["search", "--space", "{t}/step.toml"], "step.toml:18: step_size: hi - lo must be a multiple of step 2"),
    (["search", "--space", "{t}/no-choices.toml"], "no-choices.toml:17: batch_size: choices must be a non-empty"),
    (["search", "--space", "{t}/epochs.toml"], "epochs.toml:3: epochs: must be a whole number from 1 to 15, got 0"),
    (["search", "--space", "{t}/latin1.toml"], "latin1.toml: not a TOML text file (byte"),
    (["search", "--study", "one", "--budget", "9000"], "was created with other settings (budget: study has 8000"),
    (["search", "--storage", "notadb://x"], "cannot open storage notadb://x"),
    (["search", "--storage", "postgresql://nas:secret@127.0.0.1:1/nas"], "postgresql://nas:***@127.0.0.1:1/nas"),
    (["search", "--data-dir", "{t}/empty", "--no-download"], "are missing in"),
    (["search", "--data-dir", "{t}/corrupt", "--no-download"], "train-images-idx3-ubyte fail their md5 check"),
    (["search", "--data-dir", "{t}/flipped", "--no-download"], "t10k-labels-idx1-ubyte fail their md5 check"),
    (
        ["search", "--storage", "postgresql://nas:secret@127.0.0.1:port/nas"],
        "cannot open storage postgresql://nas:***@",
    ),
    (["search", "--results-dir", "/proc/nas-results"], "cannot write to results folder /proc/nas-results"),
    (["search", "--enqueue", "nowhere/config.json"], "--enqueue nowhere/config.json: cannot read config file"),
    (["search", "--enqueue", "{t}/empty-queue"], "empty-queue: a folder with no config files (*.json) in it"),
    (["search", "--enqueue", "baseline-7"], "--enqueue baseline-7: unknown baseline 'baseline-7'"),
    (["search", "--enqueue", "{t}/nan-lr.json"], "nan-lr.json.recipe.lr: must be a finite number, got nan"),
    (["search", "--budget", "5000", "--enqueue", "baseline-6"], "--enqueue baseline-6: 7,826 params, at or over"),
    (["search", "--enqueue", "{t}/no-pool.json"], "no-pool.json: space 'default' cannot express this configuration"),
    (["search", "--enqueue", "{t}/impostor.json"], "its name 'baseline-6' is taken by another configuration"),
    (["replay", "baseline-7"], "unknown baseline 'baseline-7'"),
    (["replay"], "replay needs a baseline, a frontier winner or a config file"),
    (["replay", "nowhere/config.json"], "cannot read config file nowhere/config.json"),
    (["replay", "baseline-6", "--device", "cuda"], "no CUDA GPU is visible"),
    (["replay", "baseline-6", "--data-dir", "{t}/empty", "--no-download"], "are missing in"),
    (["replay", "baseline-6", "--epochs", "-1"], ("--epochs", "must be >= 1, got -1")),
    (["replay", "baseline-6", "--epochs", "0"], ("--epochs", "must be >= 1, got 0")),
    (["replay", "baseline-6", "--threshold", "nan"], ("--threshold", "must be a finite number, got nan")),
    (["replay", "baseline-6", "--threshold", "101"], ("--threshold", "must be between 0 and 100, got 101")),
    (["replay", "{t}/bad.json"], "bad.json.recipe.dropout: must be < 1, got 1.5"),
    (["replay", "{t}/nan-lr.json"], "nan-lr.json.recipe.lr: must be a finite number, got nan"),
    (["replay", "{t}/inf-decay.json"], "inf-decay.json.recipe.weight_decay: must be a finite number, got inf"),
    (["replay", "{t}/minus-inf-rotation.json"], "minus-inf-rotation.json.recipe.rotation: must be a finite number"),
    (["replay", "{t}/negative-lr.json"], "negative-lr.json.recipe.lr: must be > 0, got -0.01"),
    (["replay", "{t}/int-nesterov.json"], "int-nesterov.json.recipe.nesterov: must be true or false, got 1"),
    (["replay", "{t}/float-epochs.json"], "float-epochs.json.recipe.epochs: must be an integer, got 3.0"),
    (["replay", "{t}/nan-accuracy.json"], "nan-accuracy.json.reported.test_acc: must be a finite number, got nan"),
    (["replay", "{t}/escape.json"], "escape.json.name: must be a plain folder name (no slash, no leading dot"),
    (["replay", "{t}/unknown-key.json"], "unknown-key.json: unknown field 'width'"),
    (["replay", "{t}/list.json"], "list.json: expected an object, got list"),
    (["replay", "{t}/invalid.json"], "invalid.json: line 1, column 2: invalid JSON: Expecting property name"),
    (["replay", "{t}/latin1.json"], "latin1.json: not a JSON text file (byte"),
    (["replay", "baseline-6", "--results-dir", "/proc/nas-results"], "cannot create results folder"),
    (["replay", "baseline-6", "--device", "tpu"], "unknown device 'tpu'"),
    (
        ["NAS_HEARTBEAT_SECONDS=nan", "search"],
        "$NAS_HEARTBEAT_SECONDS must be a whole number of seconds >= 1, got 'nan'",
    ),
    (["NAS_HEARTBEAT_SECONDS=-5", "search"], "$NAS_HEARTBEAT_SECONDS must be a whole number of seconds >= 1, got '-5'"),
    (["frontier", "--budgets", "8000,8000"], ("--budgets", "budgets must differ, got 8000,8000")),
    (["frontier", "--budgets", "5000,nan"], ("--budgets", "expected a whole number, got 'nan'")),
    (["frontier", "--budgets", "0"], ("--budgets", "must be >= 1, got 0")),
    (["frontier", "--select-top", "2", "--confirm-top", "3"], "--confirm-top 3 is more than --select-top 2"),
    (["frontier", "--budgets", "6000,500"], "--budget 500 is at or below the smallest model of space 'wide' (798"),
    (["frontier", "--trials", "18,17"], "--trials takes one number, or one per budget (3 here), each >= 1; got 18,17"),
    (["frontier", "--trials", "18,0,30"], ("--trials", "must be >= 1, got 0")),
    (
        ["frontier", "--budgets", "5000,6000", "--enqueue", "baseline-6"],
        "--enqueue baseline-6: 7,826 params, at or over every budget (the largest is 6,000)",
    ),
    (["frontier", "--enqueue", "{t}/empty-queue"], "empty-queue: a folder with no config files (*.json) in it"),
    (
        ["frontier", "--enqueue", "{t}/nan-lr.json"],
        ("--enqueue", "nan-lr.json.recipe.lr: must be a finite number, got nan"),
    ),
    (["NAS_FUSED=yes", "replay", "baseline-6"], "NAS_FUSED='yes': use 1 (the fused Triton kernels on CUDA"),
    (["confirm", "--study", "nope"], "no study 'nope'"),
    (["confirm", "--study", "x", "--seeds", "0"], ("--seeds", "must be >= 1, got 0")),
    (
        ["confirm", "--study", "one"],
        "'one-confirm' was trained with --epochs 1 --train-limit 1500, this command gives neither",
    ),
    (
        ["confirm", "--study", "one", "--epochs", "2", "--train-limit", "1500"],
        "this command gives --epochs 2 --train-limit",
    ),
    (["train"], "train needs either --config FILE or --trial N --study S"),
    (["train", "--trial", "0"], "--trial needs --study S"),
    (["train", "--trial", "99", "--study", "one"], "study 'one' has no trial 99"),
    (["train", "--config", "nowhere.json"], "cannot read config file nowhere.json"),
    (["train", "--config", "{t}/nan-lr.json"], "nan-lr.json.recipe.lr: must be a finite number, got nan"),
    (["export", "--study", "nope", "--out", "{t}/x"], "no study 'nope'"),
    (["export", "--study", "one", "--rank", "5", "--out", "{t}/x"], "--rank must be between 1 and 1"),
    (["report", "--study", "nope"], "no study 'nope'"),
    (["studies", "--delete", "nope"], "no study 'nope'"),
    (["studies", "--rename", "nope", "new"], "no study 'nope'"),
    (["studies", "--rename", "one", "one"], "study 'one' already exists"),
    (["studies", "--rename", "one", "artifacts"], "artifacts already exists; move it away or choose another name"),
    (["dashboard", "--storage", "sqlite:////nonexistent/x.db"], "no storage at sqlite:////nonexistent/x.db"),
    (["dashboard", "--study", "nope"], "no study 'nope'"),
    # a finite number beyond float32 (the trainer's tensors), where config numbers and float options enter
    (
        ["replay", "{t}/huge-decay.json"],
        "huge-decay.json.recipe.weight_decay: must fit a 32-bit float (at most 3.4e+38), got 1e+300",
    ),
    (
        ["train", "--config", "{t}/huge-lr.json"],
        "huge-lr.json.recipe.lr: must fit a 32-bit float (at most 3.4e+38), got 1e+39",
    ),
    (
        ["replay", "{t}/huge-int-decay.json"],
        "huge-int-decay.json.recipe.weight_decay: must fit a 32-bit float (at most",
    ),
    (["search", "--enqueue", "{t}/huge-lr.json"], ("--enqueue", "huge-lr.json.recipe.lr: must fit a 32-bit float")),
    (["search", "--timeout", "1e39"], ("--timeout", "must fit a 32-bit float (at most 3.4e+38), got 1e39")),
    (["search", "--space", "{t}/huge.toml"], "huge.toml:16: weight_decay: 1e+300 is out of range [0.0, 0.1]"),
    # a name that becomes a folder under the results folder, where it enters the library
    (["search", "--study", "../evil"], ("--study: " + PLAIN, "got '../evil'")),
    (["search", "--study", ""], ("--study: a study name becomes a folder", "got ''")),
    (["search", "--study", ".hidden"], ("--study: a study name becomes a folder", "got '.hidden'")),
    (["search", "--study", "a\\b"], ("--study: a study name becomes a folder", "got 'a\\\\b'")),
    (["search", "--study", "new\nline"], ("--study: a study name becomes a folder", "got 'new\\nline'")),
    (
        ["search", "--space", "{t}/.dot.toml"],
        ("--study: a study name becomes a folder", "got '.dot-b8000-e1-t500-v200'"),
    ),
    (["confirm", "--study", "../one"], ("--study: " + PLAIN, "got '../one'")),
    (["report", "--study", "../one"], ("--study: " + PLAIN, "got '../one'")),
    (["export", "--study", "../one", "--out", "{t}/x"], ("--study: " + PLAIN, "got '../one'")),
    (["train", "--trial", "0", "--study", "../one"], ("--study: " + PLAIN, "got '../one'")),
    (["frontier", "--name", "../evil"], "--name: a frontier's name becomes a folder under the results folder"),
    (["studies", "--rename", "one", "../evil"], ("--rename: " + PLAIN, "got '../evil'")),
    (["studies", "--rename", "one", ""], ("--rename: a study name becomes a folder", "got ''")),
    # more worker processes than the machine can hold (each loads torch and MNIST), where the count enters
    (["search", "--jobs", "100000"], ("--jobs 100000: more processes than this machine can run", "per usable CPU")),
    (["confirm", "--study", "one", "--jobs", "100000"], ("--jobs 100000: more processes than", "per usable CPU")),
    (["frontier", "--jobs", "100000"], ("--jobs 100000: more processes than this machine can run", "per usable CPU")),
    (["bench", "--jobs", "100000"], ("--jobs 100000: more processes than this machine can run", "per usable CPU")),
    (["bench", "--workers", "100000"], ("--workers 100000: more processes than this machine can", "per usable CPU")),
    # other counts that become memory or time, and numbers the libraries refuse, where they enter
    (["replay", "{t}/wide.json"], "wide.json.layers[0].out: must be <= 1024, got 100000"),
    (["replay", "{t}/huge-batch.json"], "huge-batch.json.recipe.batch_size: must be <= 60000, got 1000000"),
    (["replay", "{t}/many-epochs.json"], "many-epochs.json.recipe.epochs: must be <= 1000, got 1000000"),
    (["replay", "{t}/long-int.json"], "long-int.json: invalid JSON: Exceeds the limit (4300 digits)"),
    (["search", "--seed", "-1"], ("--seed", "must be between 0 and 2147483647, got -1")),
    (["frontier", "--seed", "4294967296"], ("--seed", "must be between 0 and 2147483647, got 4294967296")),
    (["replay", "baseline-6", "--seed", "-3"], ("--seed", "must be between 0 and 2147483647, got -3")),
    (["search", "--study", "x" * 201], ("--study: a study name becomes a folder", "at most 200 bytes")),
]

# The bad files of the {t} rows: config files (json.dumps writes NaN and Infinity as Python's json
# reads them) and space files, each the default space with one line changed.
CONFIGS = {
    "bad.json": {"layers": LAYERS, "recipe": {"dropout": 1.5}},
    "nan-lr.json": {"layers": LAYERS, "recipe": {"lr": float("nan")}},
    "inf-decay.json": {"layers": LAYERS, "recipe": {"weight_decay": float("inf")}},
    "minus-inf-rotation.json": {"layers": LAYERS, "recipe": {"rotation": float("-inf")}},
    "negative-lr.json": {"layers": LAYERS, "recipe": {"lr": -0.01}},
    "int-nesterov.json": {"layers": LAYERS, "recipe": {"nesterov": 1}},
    "float-epochs.json": {"layers": LAYERS, "recipe": {"epochs": 3.0}},
    "nan-accuracy.json": {"layers": LAYERS, "reported": {"test_acc": float("nan")}},
    "escape.json": {"name": "../../escape", "layers": LAYERS},
    "unknown-key.json": {"layers": LAYERS, "width": 3},
    "list.json": [{"layers": LAYERS}],
    "no-pool.json": {"layers": LAYERS},  # valid, but the spaces' networks have one max-pool
    "huge-decay.json": {"layers": LAYERS, "recipe": {"weight_decay": 1e300}},  # finite, inf in float32
    "huge-lr.json": {"layers": LAYERS, "recipe": {"lr": 1e39}},
    "huge-int-decay.json": {"layers": LAYERS, "recipe": {"weight_decay": 10**39}},  # json reads it as an int
    "wide.json": {"layers": [{"op": "conv", "out": 100_000}, *LAYERS]},
    "huge-batch.json": {"layers": LAYERS, "recipe": {"batch_size": 1_000_000}},
    "many-epochs.json": {"layers": LAYERS, "recipe": {"epochs": 1_000_000}},
}
SPACES = {
    "malformed.toml": ("width = {int = [8, 24]}", "width = {int = [8, 24}"),
    "negative.toml": ("width = {int = [8, 24]}", "width = {int = [-4, 24]}"),
    "dropout.toml": ("dropout = {float = [0.0, 0.15]}", "dropout = {float = [0.0, 1.0]}"),
    "nan.toml": ("lr = {float = [0.005, 0.2], log = true}", "lr = {float = [nan, 0.2], log = true}"),
    "inf.toml": ("rotation = {float = [0.0, 20.0]}", "rotation = {float = [0.0, inf]}"),
    "lowhigh.toml": ("gamma = {float = [0.1, 0.5]}", "gamma = {float = [0.5, 0.1]}"),
    "float-width.toml": ("width = {int = [8, 24]}", "width = {int = [8.0, 24]}"),
    "step.toml": ("step_size = {int = [3, 10]}", "step_size = {int = [3, 10], step = 2}"),
    "no-choices.toml": ("batch_size = {choices = [64, 128, 256]}", "batch_size = {choices = []}"),
    "epochs.toml": ("epochs = 15", "epochs = 0"),
    "huge.toml": ("weight_decay = 0.0", "weight_decay = 1e300"),  # float dimensions have ranges of their own
}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory, data_dir):
    t = tmp_path_factory.mktemp("bad")
    for name, (line, bad) in SPACES.items():
        assert line in SPACE, name  # the default space changed: update the row
        (t / name).write_text(SPACE.replace(line, bad))
    (t / ".dot.toml").write_text(SPACE)  # the default study name is the space file's stem: ".dot-b8000-..."
    (t / "latin1.toml").write_bytes(SPACE.replace("family", "famîly").encode("latin-1"))
    for name, config in CONFIGS.items():
        (t / name).write_text(json.dumps(config))
    (t / "invalid.json").write_text("{layers: []}")
    (t / "long-int.json").write_text('{"layers": [], "recipe": {"epochs": ' + "9" * 5000 + "}}")
    (t / "empty-queue").mkdir()
    (t / "empty-queue" / "notes.txt").write_text("a folder of queued networks holds *.json files")
    impostor = spec.load_baseline("baseline-6").to_dict()
    impostor["recipe"]["dropout"] = 0.1  # a network the default space expresses, under baseline-6's name
    (t / "impostor.json").write_text(json.dumps(impostor))
    (t / "latin1.json").write_bytes('{"name": "réseau", "layers": []}'.encode("latin-1"))
    shutil.copytree(data_dir / "MNIST" / "raw", t / "corrupt" / "MNIST" / "raw")
    images = t / "corrupt" / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:1000])  # truncated: the checksum fails
    shutil.copytree(data_dir / "MNIST" / "raw", t / "flipped" / "MNIST" / "raw")
    labels = t / "flipped" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-1] + bytes([(labels.read_bytes()[-1] + 1) % 10]))  # a wrong label
    return t


def snapshot(folder: Path, contents: bool = True) -> dict:
    """Every folder and file under `folder` by relative path: a file by a digest of its bytes
    (or, with contents=False, its size and modification time), a SQLite file by its dump, so
    that a page the database rewrote without changing a row does not count as a write."""
    found = {}
    for p in sorted(folder.rglob("*")):
        key = str(p.relative_to(folder))
        if p.is_dir():
            found[key] = "folder"
        elif p.suffix == ".db":
            with sqlite3.connect(f"file:{p}?mode=ro", uri=True) as db:
                found[key] = "\n".join(db.iterdump())
        elif contents:
            found[key] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            found[key] = (p.stat().st_size, p.stat().st_mtime_ns)
    return found


class ReachedTraining(Exception):
    """Raised where training would start: a row that gets this far passed every check."""


def refuse_training(*args, **kwargs):
    raise ReachedTraining("the bad input was accepted: training started")


@pytest.fixture
def results(confirmed, tmp_path):
    """A copy of the results folder with the study "one" for each row: a row that wrongly writes
    fails alone, and the shared folder stays as the other tests expect it."""
    copy = tmp_path / "results"
    shutil.copytree(confirmed, copy)
    return copy


@pytest.mark.parametrize("argv,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input(argv, message, results, confirmed, scratch, data_dir, tmp_path, capsys, recwarn, monkeypatch):
    argv = [a.replace("{t}", str(scratch)) for a in argv]
    while "=" in argv[0]:
        monkeypatch.setenv(*argv.pop(0).split("=", 1))
    if "--device" in argv and argv[argv.index("--device") + 1] == "cuda":
        import torch

        if torch.cuda.is_available():
            pytest.skip("a CUDA GPU is visible here: --device cuda is good input")
    if "--data-dir" not in argv and argv[0] in ("search", "replay", "confirm", "report", "train"):
        argv += ["--data-dir", str(data_dir)]
    if "--results-dir" not in argv:
        argv += ["--results-dir", str(results)]
    if argv[0] == "search":
        argv += QUICK
    from nas import train, workers

    monkeypatch.setattr(train, "train", refuse_training)  # in this process: replay, train, the estimate
    monkeypatch.setattr(workers, "start_workers", refuse_training)  # worker processes: search, confirm
    cwd = tmp_path / "cwd"  # relative paths resolve here: a default results/ would appear in it
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = snapshot(results), snapshot(confirmed), snapshot(scratch, contents=False)
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse's errors
        code = e.code
    out, err = capsys.readouterr()
    assert code == 2, out + err
    fragments = (message,) if isinstance(message, str) else message
    assert re.match(r"nas( [a-z]+)?: error: ", err) and err.count("\n") == 1, err
    assert all(f in err for f in fragments), err
    shown = [w for w in recwarn if "is an experimental feature" not in str(w.message)]  # nas silences these
    assert "secret" not in out + err and not shown  # a warning would be a second line in a terminal
    assert snapshot(results) == before[0]  # nothing written: not a row of the storage, not a file
    assert snapshot(confirmed) == before[1]
    assert snapshot(scratch, contents=False) == before[2]  # nor exported, nor beside the bad files
    assert not any(cwd.iterdir())
