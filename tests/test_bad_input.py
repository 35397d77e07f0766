"""Every bad input, one table: one clear line on stderr, exit code 2, and the study on disk unchanged.
The table runs `nas.cli.main` in this process (a `nas` process costs seconds of imports per case);
tests/test_cli.py runs the installed `nas` command for the same promise."""

import json
import shutil
import sqlite3

import pytest

from nas import cli, space

SPACE = (space.resources.files("nas.spaces") / "default.toml").read_text()
QUICK = ["--epochs", "1", "--train-limit", "500", "--val-limit", "200", "--device", "cpu"]

# (argv, the message stderr must contain); {r} is a results folder holding the real study "one"
# (budget 8000), {t} a scratch folder with bad files, {d} the MNIST folder; NAME=VALUE in front sets
# an environment variable
BAD = [
    (["search", "--budget", "0"], "--budget must be a positive number of parameters, got 0"),
    (["search", "--budget", "1000"], "--budget 1000 is at or below the smallest model of space 'default' (1,352"),
    (["search", "--trials", "0"], "--trials must be >= 1, got 0"),
    (["search", "--jobs", "0"], "--jobs must be >= 1, got 0"),
    (["search", "--space", "nowhere"], "unknown space 'nowhere'"),
    (["search", "--space", "{t}/malformed.toml"], "malformed.toml:11:22: invalid TOML: Unclosed array"),
    (["search", "--space", "{t}/negative.toml"], "negative.toml:11: width: -4 is out of range [1, 256]"),
    (["search", "--space", "{t}/dropout.toml"], "dropout.toml:20: dropout: 1.0 is out of range [0.0, 0.9]"),
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
    (["replay", "baseline-7"], "unknown baseline 'baseline-7'"),
    (["replay"], "replay needs a baseline name or a config file"),
    (["replay", "nowhere/config.json"], "cannot read config file nowhere/config.json"),
    (["replay", "baseline-6", "--device", "cuda"], "no CUDA GPU is visible"),
    (["replay", "baseline-6", "--data-dir", "{t}/empty", "--no-download"], "are missing in"),
    (["replay", "{t}/bad.json"], "bad.json.recipe.dropout: must be < 1, got 1.5"),
    (["replay", "baseline-6", "--results-dir", "/proc/nas-results"], "cannot create results folder"),
    (["replay", "baseline-6", "--device", "tpu"], "unknown device 'tpu'"),
    (["NAS_FUSED=yes", "replay", "baseline-6"], "NAS_FUSED='yes': use 1 (the fused Triton kernels on CUDA"),
    (["confirm", "--study", "nope"], "no study 'nope'"),
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
    (["export", "--study", "nope", "--out", "{t}/x"], "no study 'nope'"),
    (["export", "--study", "one", "--rank", "5", "--out", "{t}/x"], "--rank must be between 1 and 1"),
    (["report", "--study", "nope"], "no study 'nope'"),
    (["studies", "--delete", "nope"], "no study 'nope'"),
    (["studies", "--rename", "nope", "new"], "no study 'nope'"),
    (["studies", "--rename", "one", "one"], "study 'one' already exists"),
    (["studies", "--rename", "one", "artifacts"], "artifacts already exists; move it away or choose another name"),
    (["dashboard", "--storage", "sqlite:////nonexistent/x.db"], "no storage at sqlite:////nonexistent/x.db"),
    (["dashboard", "--study", "nope"], "no study 'nope'"),
]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory, data_dir):
    t = tmp_path_factory.mktemp("bad")
    (t / "malformed.toml").write_text(SPACE.replace("width = {int = [8, 24]}", "width = {int = [8, 24}"))
    (t / "negative.toml").write_text(SPACE.replace("width = {int = [8, 24]}", "width = {int = [-4, 24]}"))
    (t / "dropout.toml").write_text(SPACE.replace("dropout = {float = [0.0, 0.15]}", "dropout = {float = [0.0, 1.0]}"))
    bad = {"layers": [{"op": "conv", "out": 10}, {"op": "gap"}], "recipe": {"dropout": 1.5}}
    (t / "bad.json").write_text(json.dumps(bad))
    shutil.copytree(data_dir / "MNIST" / "raw", t / "corrupt" / "MNIST" / "raw")
    images = t / "corrupt" / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:1000])  # truncated: the checksum fails
    shutil.copytree(data_dir / "MNIST" / "raw", t / "flipped" / "MNIST" / "raw")
    labels = t / "flipped" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-1] + bytes([(labels.read_bytes()[-1] + 1) % 10]))  # a wrong label
    return t


def dump(results) -> str:
    with sqlite3.connect(results / "nas.db") as db:
        return "\n".join(db.iterdump())


@pytest.mark.parametrize("argv,message", BAD, ids=[" ".join(a[:3]) for a, _ in BAD])
def test_bad_input(argv, message, confirmed, scratch, data_dir, capsys, recwarn, monkeypatch):
    argv = [a.replace("{t}", str(scratch)) for a in argv]
    while "=" in argv[0]:
        monkeypatch.setenv(*argv.pop(0).split("=", 1))
    if "--data-dir" not in argv and argv[0] in ("search", "replay", "confirm", "report", "train"):
        argv += ["--data-dir", str(data_dir)]
    if "--results-dir" not in argv:
        argv += ["--results-dir", str(confirmed)]
    if argv[0] == "search":
        argv += QUICK
    before = dump(confirmed), sorted(p.name for p in confirmed.rglob("*"))
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert code == 2, out + err
    assert err.startswith("nas: error: ") and err.count("\n") == 1 and message in err, err
    shown = [w for w in recwarn if "is an experimental feature" not in str(w.message)]  # nas silences these
    assert "secret" not in out + err and not shown  # a warning would be a second line in a terminal
    assert (dump(confirmed), sorted(p.name for p in confirmed.rglob("*"))) == before  # nothing written
    assert not (scratch / "x").exists()  # nor exported
