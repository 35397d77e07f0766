"""Trials per hour: the same small search at equal wall time, (a) naive: every trial trains
with the reference pipeline (torchvision's MNIST, per-image PIL rotation, a DataLoader, torch's own
modules), no pruning, one process; (b) nas: nas's loop, Hyperband, `--jobs` worker processes.
Run one after the other on a quiet machine; prints trained trials per hour, epochs trained and
the best validation accuracy of each, and the ratios.

    python benchmarks/search_throughput.py [--seconds 600] [--jobs 2] [--results-dir DIR]

Each search is a study of its own in DIR/nas.db (default: a new temporary folder), named
tput-naive-<seconds> and tput-nas-<seconds>.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
import torch.nn.functional as F

from nas import objective, search, spec, store, train
from nas.bench import plain_model, reference_transform
from nas.workers import usable_cpus


def reference_trainer(data_dir: str, train_limit: int | None, val_limit: int | None, workers: int, val_size=10_000):
    """fit(config, seed, on_epoch) with the reference pipeline on the search's validation split
    (the same images as `data.make_split(..., "val")`): the naive setting that
    `benchmarks/search_throughput.py` measures nas's trials per hour against."""
    from torchvision import datasets

    perm = torch.randperm(60_000, generator=torch.Generator().manual_seed(0))
    train_idx, val_idx = perm[val_size:][:train_limit].tolist(), perm[:val_size][:val_limit].tolist()

    def loader(config: spec.Config, indices, rotation: float, shuffle: bool, batch_size: int):
        dataset = datasets.MNIST(data_dir, train=True, download=False, transform=reference_transform(rotation))
        subset = torch.utils.data.Subset(dataset, indices)
        return torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=shuffle, num_workers=workers)

    def fit(config: spec.Config, seed: int, on_epoch) -> None:
        torch.manual_seed(seed)
        r = config.recipe
        model = plain_model(config)
        optimizer = train.make_optimizer(model, r)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, r.step_size or 10**9, r.gamma)
        train_loader = loader(config, train_idx, r.rotation, True, r.batch_size)
        val_loader = loader(config, val_idx, 0.0, False, 1000)
        for epoch in range(1, r.epochs + 1):
            t0, lr = time.perf_counter(), optimizer.param_groups[0]["lr"]
            model.train()
            loss_sum = correct = n = 0
            for x, y in train_loader:
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                loss_sum += loss.item() * len(y)  # the usual per-step host sync
                correct += (logits.argmax(1) == y).sum().item()
                n += len(y)
            model.eval()
            eval_loss = eval_correct = m = 0
            with torch.no_grad():
                for x, y in val_loader:
                    logits = model(x)
                    eval_loss += F.cross_entropy(logits, y, reduction="sum").item()
                    eval_correct += (logits.argmax(1) == y).sum().item()
                    m += len(y)
            on_epoch(train.Epoch(epoch, lr, lr, loss_sum / n, 100 * correct / n, eval_loss / m, 100 * eval_correct / m,
                                 time.perf_counter() - t0))  # fmt: skip
            scheduler.step()

    return fit


def reference_search_worker(s, threads: int | None = None) -> None:
    """A search worker whose trials train with the reference pipeline (nas.search.run's `worker`)."""

    def fit_for(s):
        return reference_trainer(s.data_dir, s.train_limit, s.val_limit, workers=usable_cpus())

    objective.worker(s, threads, fit_for=fit_for)


def trials_per_hour(study) -> dict:
    """Trained trials over the span from the first trial's start to the last one's end."""
    trained = [t for t in study.get_trials(deepcopy=False) if store.is_trained(t) and t.datetime_complete]
    span = (max(t.datetime_complete for t in trained) - min(t.datetime_start for t in trained)).total_seconds()
    done = [t for t in trained if t.value is not None and t.state.name == "COMPLETE"]
    best = max(done, key=lambda t: t.value, default=None)
    return {
        "trained": len(trained),
        "completed": len(done),
        "span_s": span,
        "per_hour": 3600 * len(trained) / span,
        "epochs": sum(len(t.user_attrs.get("history", [])) for t in trained),
        "best_val": best.value if best else float("nan"),
        "best_params": best.user_attrs["params"] if best else 0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=600, help="trial starts per search (default 600)")
    ap.add_argument("--jobs", type=int, default=2, help="nas's worker processes (default 2)")
    ap.add_argument("--results-dir", help="where the two studies go (default: a new temporary folder)")
    ap.add_argument("--data-dir", help="MNIST folder (default: $NAS_DATA_DIR)")
    args = ap.parse_args()
    results = args.results_dir or tempfile.mkdtemp(prefix="tput-")
    common = dict(budget=8000, trials=1000, timeout=args.seconds, epochs=3, train_limit=10_000, val_limit=5000,
                  baselines=False, confirm=False, data_dir=args.data_dir, results_dir=results)  # fmt: skip
    tag = f"{args.seconds:g}"
    runs = {
        "naive": (search.Settings(study=f"tput-naive-{tag}", pruner="none", jobs=1, **common), reference_search_worker),
        "nas": (search.Settings(study=f"tput-nas-{tag}", pruner="hyperband", jobs=args.jobs, **common), None),
    }
    rows = {}
    for name, (settings, worker) in runs.items():
        t0 = time.time()
        outcome = search.run(settings, worker=worker)
        rows[name] = trials_per_hour(outcome.study)
        print(f"{name}: {rows[name]} ({time.time() - t0:.0f} s)", flush=True)
    print(f"\n{'setting':<8} {'trained':>8} {'span s':>7} {'per hour':>9} {'epochs':>7} {'best val % (params)':>20}")
    for name, r in rows.items():
        best = f"{r['best_val']:.2f} ({r['best_params']:,})"
        print(f"{name:<8} {r['trained']:>8} {r['span_s']:>7.0f} {r['per_hour']:>9.0f} {r['epochs']:>7} {best:>20}")
    naive, ours = rows["naive"], rows["nas"]
    print(f"nas / naive: {ours['per_hour'] / naive['per_hour']:.1f}x trials per hour, "
          f"{ours['epochs'] / naive['epochs']:.1f}x epochs; studies in {results}/nas.db")  # fmt: skip


if __name__ == "__main__":
    main()
