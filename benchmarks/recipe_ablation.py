"""Which training levers make the last epochs hold: a recipe ablation on the validation split.

Each architecture trains under each variant of its committed recipe, once per seed, 15 epochs on
the 50,000 training images of the search's split, judged on its 10,000 held-out images (the test
set stays unread). One row per run goes to the CSV as soon as the run ends; running the command
again trains only the runs the CSV lacks, so a killed ablation resumes where it stopped.

    python benchmarks/recipe_ablation.py [--seeds 4] [--jobs 2] [--out results/evidence/recipes/ablation.csv]
    python benchmarks/recipe_ablation.py --table   # mean +- std per cell, as markdown

The variants (VARIANTS below) change the committed recipe one lever at a time:
- today: the recipe as committed;
- ema: the same, evaluated on an exponential moving average of the weights (decay EMA a step);
- batch: its schedule stepped every optimizer step to ~0 (OneCycle at the recipe's lr where it
  was StepLR, since StepLR counts epochs);
- batch+ema: both;
- batch+ema+scale: both, and random zoom of +-SCALE;
- batch32: the committed recipe at 32 images a step, the batch of the public 3,762-parameter network
  (adilsammar/woolly-of-cv, notebook MNIST_ALBUMENTATION_3762_99.52: SGD at batch 32, 1,875 steps an
  epoch), four times the steps of nas's 128 at the same lr.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

import pandas as pd

from nas import spec

REPO = Path(__file__).resolve().parents[1]
ARCHITECTURES = {  # name -> the config whose layers and recipe the variants start from
    "217": REPO / "search_spaces/queued/cpu-b8000-217-onecycle.json",
    "frontier-8000": REPO / "results/evidence/frontier/frontier-8000.json",
    "frontier-5000": REPO / "results/evidence/frontier/frontier-5000.json",
    "woolly-3762": REPO / "search_spaces/queued-small/woolly-3762.json",
}
EMA, SCALE = 0.998, 0.1
OUT = REPO / "results/evidence/recipes/ablation.csv"  # the CSV behind the first table of docs/recipes.md


def per_batch(r: spec.Recipe) -> spec.Recipe:
    """The recipe's schedule stepped every optimizer step; StepLR, which counts epochs, becomes OneCycle."""
    schedule = "onecycle" if r.schedule == "step" else r.schedule
    return dataclasses.replace(r, schedule=schedule, lr_step="batch", step_size=None)


VARIANTS = {
    "today": lambda r: r,
    "ema": lambda r: dataclasses.replace(r, ema=EMA),
    "batch": per_batch,
    "batch+ema": lambda r: dataclasses.replace(per_batch(r), ema=EMA),
    "batch+ema+scale": lambda r: dataclasses.replace(per_batch(r), ema=EMA, scale=SCALE),
    "batch32": lambda r: dataclasses.replace(r, batch_size=32),
}
COLUMNS = ["architecture", "variant", "seed", "params", "final_val", "min_last3_val", "lr_last", "seconds", "recipe"]


def config_of(architecture: str, variant: str) -> spec.Config:
    base = spec.load(ARCHITECTURES[architecture])
    return dataclasses.replace(base, name=f"{architecture}-{variant}", recipe=VARIANTS[variant](base.recipe))


@functools.cache  # once a worker process: every run of the ablation reads the same split
def validation_split(data_dir: str | None):
    from nas import data

    return data.make_split(data.load_mnist(data_dir, download=False), evaluate_on="val")


def run_one(job: tuple[str, str, int, str | None]) -> dict:
    """One 15-epoch run on one torch thread (two processes at one thread each train fastest here)."""
    import torch

    from nas import train

    architecture, variant, seed, data_dir = job
    torch.set_num_threads(1)
    config = config_of(architecture, variant)
    split = validation_split(data_dir)
    t0 = time.perf_counter()
    _, history = train.train(config, split, seed)
    accuracy = [e.eval_acc for e in history.epochs]
    return {
        "architecture": architecture,
        "variant": variant,
        "seed": seed,
        "params": spec.param_count(config),
        "final_val": accuracy[-1],
        "min_last3_val": min(accuracy[-3:]),
        "lr_last": history.epochs[-1].lr_last,
        "seconds": round(time.perf_counter() - t0, 1),
        "recipe": json.dumps(dataclasses.asdict(config.recipe), sort_keys=True),
    }


def mean_std(values, signed: bool = False) -> str:
    values = list(values)
    std = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.mean(values):{'+' if signed else ''}.2f} ± {std:.2f}"


def table(frame: pd.DataFrame) -> str:
    """Markdown: one row per architecture and variant, mean +- std over its seeds, and the change
    of the minimum against `today` on the same seeds (a seed fixes the initial weights and the
    data order, so the pairs differ only by the lever)."""
    head = (
        "| architecture | params | variant | seeds | final val % | min of last 3 val % | final - min "
        "| min vs today, same seeds |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    order = {v: i for i, v in enumerate(VARIANTS)}
    cells = sorted(frame.groupby(["architecture", "variant"]), key=lambda k: (k[0][0], order[k[0][1]]))
    for (arch, variant), g in cells:
        final, worst = mean_std(g["final_val"]), mean_std(g["min_last3_val"])
        gap = f"{(g['final_val'] - g['min_last3_val']).mean():.2f}"
        today = frame[(frame["architecture"] == arch) & (frame["variant"] == "today")].set_index("seed")
        pairs = [
            m - today.loc[s, "min_last3_val"]
            for s, m in zip(g["seed"], g["min_last3_val"], strict=True)
            if s in today.index
        ]
        change = "-" if variant == "today" or not pairs else f"{mean_std(pairs, signed=True)} ({len(pairs)})"
        params = f"{int(g['params'].iloc[0]):,}"
        lines.append(f"| {arch} | {params} | {variant} | {len(g)} | {final} | {worst} | {gap} | {change} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    known = ", ".join(ARCHITECTURES)
    p.add_argument("--architectures", default="217,frontier-8000", help=f"comma-separated, of {known}")
    p.add_argument("--variants", default="today,batch,batch+ema,batch+ema+scale,ema", help="comma-separated")
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--table", action="store_true", help="print the table of the CSV and stop")
    args = p.parse_args()
    out = Path(args.out)
    done = pd.read_csv(out) if out.exists() else pd.DataFrame(columns=COLUMNS)
    if args.table:
        print(table(done))
        return
    have = {(a, v, int(s)) for a, v, s in zip(done["architecture"], done["variant"], done["seed"], strict=True)}
    archs, variants = args.architectures.split(","), args.variants.split(",")
    groups = [variants[:4]] + [[v] for v in variants[4:]]  # the first four first, seed by seed:
    jobs = [  # a partial CSV then holds every cell of them
        (a, v, s, args.data_dir)
        for group in groups
        for s in range(args.seeds)
        for a in archs
        for v in group
        if (a, v, s) not in have
    ]
    print(f"{len(jobs)} runs to train, {len(have)} in {out}", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = done.to_dict("records")
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        for row in pool.imap_unordered(run_one, jobs):
            rows.append(row)
            frame = pd.DataFrame(rows, columns=COLUMNS).sort_values(["architecture", "variant", "seed"])
            tmp = out.with_suffix(".tmp")
            frame.to_csv(tmp, index=False)
            tmp.replace(out)  # a kill mid-write leaves the previous CSV whole
            print(
                f"{row['architecture']:>14} {row['variant']:>16} seed {row['seed']}: final {row['final_val']:.2f}"
                f" min-last-3 {row['min_last3_val']:.2f} ({row['seconds']:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    sys.exit(main())
