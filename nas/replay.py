"""Replay a config (a seed baseline or a file) over several seeds: train on all 60,000 training
images, evaluate on the test set every epoch, judge each run, and write the evidence."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import torch

import nas
from nas import data, display, spec, train
from nas.files import atomic
from nas.workers import usable_cpus


def verdict(history: train.History, last_k: int = 3, threshold: float = 99.40) -> dict:
    """Best and final accuracy, the minimum of the last K epochs, and whether every one of
    the last K epochs reached the threshold ("consistent", the seed's own criterion)."""
    acc = [e.eval_acc for e in history.epochs]
    tail = acc[-last_k:]
    return {
        "seed": history.seed,
        "best_train": max(e.train_acc for e in history.epochs),
        "best": max(acc),
        "final": acc[-1],
        "min_last_k": min(tail),
        "consistent": len(acc) >= last_k and min(tail) >= threshold,
    }


def provenance(device: torch.device) -> dict:
    cpu = platform.processor()
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "nas": nas.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "command": " ".join(["nas", *sys.argv[1:]]),
        "git_commit": git_commit(),
    }


def git_commit() -> str | None:
    """The checkout's commit (with "+dirty" for uncommitted changes), when nas runs from one."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def write_atomic(path: Path, text: str) -> Path:
    """Write `text` to a temporary file beside `path`, then rename: readers never see half a file."""
    return atomic(path, lambda p: p.write_text(text))


def run_dir(results_dir: str | Path, config: spec.Config, is_baseline: bool) -> Path:
    """results/baselines/<name>/<UTC time>/ for a baseline, results/runs/<name>/<UTC time>/ else:
    every run gets a new folder, so no run ever overwrites another's evidence."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(results_dir) / ("baselines" if is_baseline else "runs") / (config.name or "config") / stamp
    try:
        out.mkdir(parents=True, exist_ok=False)
    except OSError as e:
        raise OSError(f"cannot create results folder {out}: {e.strerror}; pass --results-dir DIR") from None
    return out


def replay(
    config: spec.Config,
    seeds: list[int],
    device: torch.device,
    mnist: dict,
    out: Path,
    epochs: int | None = None,
    last_k: int = 3,
    threshold: float = 99.40,
    train_limit: int | None = None,
) -> list[dict]:
    """Train `config` once per seed, printing the epochs; write run.json, history.csv and the
    seed's final weights (weights-seed{N}.pt, a state_dict of nas.model.build(config.json)) to
    `out` after every seed (so an interrupted replay keeps the seeds it finished)."""
    split = data.make_split(mnist, evaluate_on="test", train_limit=train_limit, device=device)
    n_epochs = epochs or config.recipe.epochs
    steps = -(-len(split.train_y) // config.recipe.batch_size) * n_epochs
    record = {
        "config": config.to_dict(),
        "params": spec.param_count(config),
        "macs": spec.macs(config),
        "receptive_field": spec.receptive_field(config),
        "epochs": n_epochs,
        "seeds": seeds,
        "last_k": last_k,
        "threshold": threshold,
        "train_limit": train_limit,
        "provenance": provenance(device),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "runs": [],
    }
    verdicts, rows = [], []
    for seed in seeds:
        with display.progress(steps, f"{config.name} seed {seed}") as (advance, say):
            say(display.epoch_header("test"))
            model, history = train.train(
                config,
                split,
                seed,
                device,
                epochs=n_epochs,
                on_step=advance,
                on_epoch=lambda e, seed=seed: say(display.epoch_row(seed, e)),
            )
        verdicts.append(verdict(history, last_k, threshold))
        record["runs"].append({**history.to_dict(), "verdict": verdicts[-1]})
        rows += [{"seed": seed, **vars(e)} for e in history.epochs]
        record["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        atomic(out / f"weights-seed{seed}.pt", lambda p, m=model: torch.save(m.cpu().state_dict(), p))
        write_atomic(out / "config.json", json.dumps(config.to_dict(), indent=2) + "\n")
        write_atomic(out / "run.json", json.dumps(record, indent=2) + "\n")
        frame = pd.DataFrame(rows).rename(columns={"eval_loss": "test_loss", "eval_acc": "test_acc"})
        write_atomic(out / "history.csv", frame.to_csv(index=False, float_format="%.6g"))
    return verdicts
