"""The `nas` command line. Every expected error becomes one clear line and exit code 2."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

from nas import NasError, __version__, spec


class UsageError(NasError):
    """Bad input that argparse cannot see (an unavailable device, say)."""


class Interrupted(Exception):
    """Ctrl-C: the message says what was kept and how to resume; exit code 130."""


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA > MPS > CPU), cpu, cuda, cuda:1, mps")
    p.add_argument("--data-dir", help="folder holding MNIST/raw/ (default: $NAS_DATA_DIR, else ~/.cache/nas/data)")
    p.add_argument("--no-download", action="store_true", help="never try to download MNIST")
    p.add_argument("--results-dir", default="results", help="where runs are written (default: results)")


def add_confirm_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--top", type=positive_int, default=3, help="distinct configurations to confirm (default 3)")
    p.add_argument("--seeds", type=positive_int, default=5, help="seeds per configuration (default 5)")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="nas", description="Discover tiny MNIST networks under a parameter budget.")
    ap.add_argument("--version", action="version", version=f"nas {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("replay", help="replay a seed baseline (or a config file) over seeds, on the test set")
    p.add_argument("name", nargs="?", help="baseline name (see --list) or path to a config JSON file")
    p.add_argument("--list", action="store_true", help="list the baselines and exit")
    add_run_options(p)

    p = sub.add_parser("train", help="train one config (a file, or a study's trial) over seeds, on the test set")
    p.add_argument("--config", help="a config JSON file (the schema of `nas replay`)")
    p.add_argument("--trial", type=int, help="a trial number of --study")
    p.add_argument("--study", help="the study of --trial")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite:///<results-dir>/nas.db)")
    add_run_options(p)

    p = sub.add_parser("export", help="write a confirmed configuration: config, weights, ONNX, model.py")
    p.add_argument("--study", required=True, help="a confirmed search study")
    p.add_argument("--rank", type=positive_int, default=1, help="which confirmed configuration (default 1)")
    p.add_argument("--seed", type=int, help="whose weights (default: the seed with the median test accuracy)")
    p.add_argument("--out", required=True, help="folder to write")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite:///<results-dir>/nas.db)")
    p.add_argument("--results-dir", default="results", help="holds nas.db and artifacts/ (default: results)")
    add_commands(sub)
    return ap


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", type=positive_int, default=1, help="number of seeds (default 1)")
    p.add_argument("--seed", type=int, default=0, help="first seed; runs use seed, seed+1, ... (default 0)")
    p.add_argument("--epochs", type=positive_int, help="override the recipe's epochs")
    p.add_argument("--last-k", type=positive_int, default=3, help="epochs that must all reach the threshold")
    p.add_argument("--threshold", type=float, default=99.40, help="test accuracy %% for 'consistent'")
    p.add_argument("--train-limit", type=positive_int, help="train on the first N images only (quick checks)")
    add_common(p)


def add_commands(sub) -> None:
    p = sub.add_parser("search", help="budget-constrained Optuna search (resumes when run again)")
    p.add_argument("--budget", type=int, default=8000, help="trained models have fewer parameters (default 8000)")
    p.add_argument("--trials", type=int, default=200, help="trained trials: completed + pruned (default 200)")
    p.add_argument("--space", default="default", help="space name (see `nas spaces`) or .toml path")
    p.add_argument("--study", help="study name (default: <space>-b<budget>)")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite:///<results-dir>/nas.db)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--sampler", default="tpe", choices=["tpe", "random"])
    p.add_argument("--pruner", default="hyperband", choices=["hyperband", "median", "none"])
    p.add_argument("--seed", type=int, default=0, help="sampler seed; trial seed = seed + trial number")
    p.add_argument("--no-baselines", action="store_true", help="do not enqueue the seed's baselines first")
    p.add_argument("--epochs", type=positive_int, help="override the space's epochs (quick runs)")
    p.add_argument("--train-limit", type=positive_int, help="first N training images only (quick runs)")
    p.add_argument("--val-limit", type=positive_int, help="first N validation images only (quick runs)")
    p.add_argument("--pipeline", default="nas", choices=["nas", "seed"], help="seed: the seed's DataLoader (naive)")
    add_confirm_options(p)
    p.add_argument("--no-confirm", action="store_true", help="skip the confirmation after the search")
    add_common(p)

    p = sub.add_parser("confirm", help="retrain a study's top configurations with several seeds, on the test set")
    p.add_argument("--study", required=True, help="the search study")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite:///<results-dir>/nas.db)")
    p.add_argument("--jobs", type=positive_int, default=1, help="worker processes (default 1)")
    p.add_argument("--epochs", type=positive_int, help="override the epochs (quick runs)")
    p.add_argument("--train-limit", type=positive_int, help="first N training images only (quick runs)")
    add_confirm_options(p)
    add_common(p)

    p = sub.add_parser("report", help="write a study's leaderboard, summary and figures; attach them to the study")
    p.add_argument("--study", required=True, help="the search study")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite:///<results-dir>/nas.db)")
    add_common(p)

    p = sub.add_parser("dashboard", help="open a storage in optuna-dashboard (loopback only by default)")
    p.add_argument("--study", help="print the URL of this study's page")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite:///<results-dir>/nas.db)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=positive_int, default=8080, help="port (default 8080)")
    p.add_argument("--results-dir", default="results", help="holds nas.db and artifacts/ (default: results)")

    p = sub.add_parser("bench", help="the seed's pipeline vs nas's loop, side by side; epoch time vs model size")
    p.add_argument("--config", default="baseline-6", help="baseline name or config file (default baseline-6)")
    p.add_argument("--steps", type=positive_int, default=150, help="optimizer steps per measurement (default 150)")
    p.add_argument("--repeats", type=positive_int, default=3, help="measurements of each pipeline (default 3)")
    p.add_argument("--jobs", type=positive_int, help="processes for the whole-machine figure (default: cores)")
    p.add_argument("--workers", type=int, help="DataLoader workers of the seed pipeline (default: cores)")
    p.add_argument("--quick", action="store_true", help="20 steps, 1 repeat, 3 sizes: a check, not a measurement")
    add_common(p)

    sub.add_parser("spaces", help="list the search spaces and their dimensions")

    p = sub.add_parser("studies", help="list the studies in a storage, or delete or rename one")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite:///<results-dir>/nas.db)")
    p.add_argument("--results-dir", default="results")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--delete", metavar="STUDY", help="delete this study (asks no question: it is gone)")
    group.add_argument(
        "--rename", nargs=2, metavar=("STUDY", "NEW"), help="rename a study, its confirmation and its results folder"
    )


def cmd_replay(args) -> None:
    from nas import display

    if args.list:
        display.console.print(display.baselines_table([spec.load_baseline(n) for n in spec.baseline_names()]))
        return
    if not args.name:
        raise UsageError("replay needs a baseline name or a config file; `nas replay --list` shows the baselines")
    run_replay(args, spec.resolve(args.name), is_baseline=args.name in spec.baseline_names())


def cmd_train(args) -> None:
    """One config (a file, or a trial of a study), trained and tested exactly as `nas replay` does."""
    from nas import store

    if bool(args.config) == bool(args.trial is not None):
        raise UsageError("train needs either --config FILE or --trial N --study S")
    if args.config:
        config = spec.load(args.config)
    else:
        if not args.study:
            raise UsageError("--trial needs --study S (see `nas studies`)")
        study = store.load_study(args.storage or store.default_storage(args.results_dir), args.study)
        trials = {t.number: t for t in study.get_trials(deepcopy=False) if "config" in t.user_attrs}
        if args.trial not in trials:
            raise UsageError(
                f"study {args.study!r} has no trial {args.trial} with a config; trials 0-{len(study.trials) - 1}"
            )
        config = spec.from_dict(trials[args.trial].user_attrs["config"])
        config = replace(config, name=f"{args.study}-trial-{args.trial}")
    run_replay(args, config, is_baseline=False)


def run_replay(args, config: spec.Config, is_baseline: bool) -> None:
    from nas import data, display, replay

    device = resolve_device(args.device)
    mnist = data.load_mnist(args.data_dir, download=not args.no_download)
    out = replay.run_dir(args.results_dir, config, is_baseline)

    display.console.print(display.summary_table(config))
    display.console.print(display.rf_table(config))
    display.console.print(f"recipe: {display.recipe_line(config.recipe)}; device {device}")
    seeds = list(range(args.seed, args.seed + args.seeds))
    try:
        verdicts = replay.replay(
            config, seeds, device, mnist, out, args.epochs, args.last_k, args.threshold, args.train_limit
        )
    finally:
        if not any(out.iterdir()):  # stopped before the first seed finished: leave no empty folder
            out.rmdir()
    display.console.print(display.verdict_table(config, verdicts, args.last_k, args.threshold))
    display.console.print(f"written: {out}/run.json, history.csv, config.json, weights-seed<N>.pt")


def resolve_device(name: str):
    import torch

    from nas.train import pick_device

    try:
        device = pick_device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is visible to torch here; use --device cpu or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device mps: Apple's MPS is not available here; use --device cpu or auto")
    if os.environ.get("NAS_FUSED", "1") not in ("0", "1"):
        raise UsageError(
            f"NAS_FUSED={os.environ['NAS_FUSED']!r}: use 1 (the fused Triton kernels on CUDA, the default) "
            "or 0 (cuDNN's BatchNorm)"
        )
    return device


def search_settings(args):
    """`nas search`'s options as search.Settings."""
    from nas import data, search

    return search.Settings(
        space=args.space,
        budget=args.budget,
        trials=args.trials,
        timeout=args.timeout,
        storage=args.storage,
        study=args.study,
        sampler=args.sampler,
        pruner=args.pruner,
        seed=args.seed,
        jobs=args.jobs,
        baselines=not args.no_baselines,
        device=args.device,
        data_dir=str(data.data_dir(args.data_dir)),
        results_dir=args.results_dir,
        train_limit=args.train_limit,
        val_limit=args.val_limit,
        epochs=args.epochs,
        pipeline=args.pipeline,
    )


def cmd_search(args) -> None:
    import time

    from nas import data, display, report, search, store, workers

    s = search_settings(args)
    sp = search.check(s)  # nothing is written before these checks pass
    device = resolve_device(args.device)
    mnist = data.load_mnist(s.data_dir, download=not args.no_download)
    study = search.open_study(s, sp)
    failed = store.fail_dead_local_trials(study)
    queued = search.enqueue_baselines(study, sp, s) if s.baselines else []
    c0 = store.counts(study)
    out = display.console.print
    out(
        f"study {s.study_name!r} in {store.mask(s.storage_url)}: space {sp.name} ({sp.path}), budget {s.budget:,}, "
        f"{s.trials} trained trials, {s.jobs} job(s), sampler {s.sampler}, pruner {s.pruner}, device {device}"
    )
    if c0["proposed"]:
        out(
            f"resuming: {c0['trained']} trained trials kept"
            + (f", crashed trials failed and re-queued: {failed}" if failed else "")
        )
    remaining = max(0, s.trials - c0["trained"])
    if not remaining:
        out(
            f"study {s.study_name!r} already has its {s.trials} trained trials: nothing to train "
            "(raise --trials to go on, or pass --study NEW for a new search)"
        )
    if queued:
        out(f"baselines first (those the space and budget admit): {', '.join(queued)}")
    full = 0.0
    if remaining:
        workers.start_server()  # its imports overlap the estimate
        epoch_s = search.estimate_epoch_seconds(s, mnist, device)
        epochs = s.epochs or sp.epochs
        full = remaining * epochs * epoch_s / s.jobs
        saved = search.MEASURED_SAVING[s.pruner]
        out(
            f"estimate: one epoch ~{epoch_s:.0f} s here; {remaining} trials x {epochs} epochs: at most "
            f"{display.hms(full)} without pruning"
            + (
                f", about {display.hms(full * (1 - saved))} if {s.pruner} saves {saved:.0%} of the epochs as measured"
                if saved
                else ""
            )
        )
    procs = workers.start_workers(search.worker, s, s.jobs) if remaining else []
    t0, trained0 = time.time(), c0["trained"]

    def status():
        store.fail_dead_local_trials(study)  # a worker killed (OOM, say): its trial is retried by the others now
        c = store.counts(study)
        done, elapsed = c["trained"] - trained0, time.time() - t0
        eta = elapsed / done * (s.trials - c["trained"]) if done > 0 else full
        return c, best_trial(study), s.trials, elapsed, eta

    leaderboard = Path(s.results_dir) / s.study_name / "leaderboard.csv"
    try:
        with display.live() as live:
            workers.supervise(procs, lambda: live.update(status()))
    except KeyboardInterrupt:
        report.write_csv(report.leaderboard(study), leaderboard)
        raise Interrupted(
            f"interrupted: {store.counts(study)['trained']} trained trials are kept in the study "
            f"(leaderboard: {leaderboard}); run the same command to resume"
        ) from None
    out("")
    frame = report.leaderboard(study)
    path = report.write_csv(frame, leaderboard)
    out(display.leaderboard_table(frame))
    out(display.summary_line(report.summary(study)))
    out(f"written: {path}")
    if not args.no_confirm:
        args.study, args.storage = s.study_name, s.storage_url
        cmd_confirm(args)


def cmd_confirm(args) -> None:
    import time

    from optuna.trial import TrialState

    from nas import confirm, data, display, store, workers

    url = args.storage or store.default_storage(args.results_dir)
    cs = confirm.Settings(
        study=args.study,
        storage=url,
        top=args.top,
        seeds=args.seeds,
        jobs=args.jobs,
        device=args.device,
        data_dir=str(data.data_dir(args.data_dir)),
        epochs=args.epochs,
        train_limit=args.train_limit,
        artifacts=str(Path(args.results_dir) / "artifacts"),
    )
    resolve_device(args.device)
    data.load_mnist(cs.data_dir, download=not args.no_download)
    study, conf = confirm.open_confirm_study(cs)
    store.fail_dead_local_trials(conf)  # units left running by a killed run: failed and re-queued now
    units = confirm.queue_units(cs, study, conf)
    out = display.console.print
    out(
        f"confirmation: top {cs.top} configurations x {cs.seeds} seeds = {len(units)} runs on "
        f"{cs.train_limit or 60_000:,} training images, test set every epoch; study {cs.confirm_name!r}"
    )
    procs = workers.start_workers(confirm.worker, cs, cs.jobs)
    t0 = time.time()

    wanted = set(units)

    def finished() -> list:  # this confirmation's units done so far
        done = conf.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return [t for t in done if (t.params["source_trial"], t.params["seed"]) in wanted]

    def n_done() -> int:
        return len(finished())

    with display.progress(len(units), "confirm") as (advance, say):
        seen = {t.number for t in finished()}  # done before this run
        for _ in seen:
            advance()
        if seen:
            say(f"{len(seen)} of {len(units)} confirmation runs already done")

        def poll():
            new = [t for t in finished() if t.number not in seen]
            for t in sorted(new, key=lambda t: t.datetime_complete):
                seen.add(t.number)
                advance()
                say(
                    f"[{display.hms(time.time() - t0)}] {len(seen)} of {len(units)} confirmation runs done: "
                    f"trial {t.params['source_trial']} seed {t.params['seed']}, final test {t.value:.2f}%"
                )

        try:
            workers.supervise(procs, poll)
        except KeyboardInterrupt:
            write_confirmation(cs, study, conf, args.results_dir)  # the runs finished so far
            raise Interrupted(
                f"interrupted: {n_done()} of {len(units)} confirmation runs are done and kept; "
                "run the same command to resume"
            ) from None
    verdicts, path = write_confirmation(cs, study, conf, args.results_dir)
    out(display.confirm_table(verdicts, cs.last_k, cs.threshold))
    out(f"written: {path} ({time.time() - t0:.0f} s)")


def write_confirmation(cs, study, conf, results_dir: str):
    """Verdicts of the runs finished so far: stored on the study and written as CSV."""
    from nas import confirm, report

    verdicts = confirm.verdicts(cs, study, conf)
    path = report.write_csv(report.confirmation_frame(verdicts), Path(results_dir) / cs.study / "confirmation.csv")
    return verdicts, path


def best_trial(study):
    try:
        return study.best_trial
    except ValueError:
        return None


def cmd_export(args) -> None:
    from nas import display, export, store

    url = args.storage or store.default_storage(args.results_dir)
    store.load_study(url, args.study)  # a clear error for an unknown study or storage
    info = export.from_study(
        url, args.study, args.rank, args.seed, Path(args.out), str(Path(args.results_dir) / "artifacts")
    )
    display.console.print(
        f"exported trial {info['trial']} of {args.study!r} (rank {info['rank']}, seed {info['seed']} of "
        f"{info['seeds_confirmed']}): {info['params']:,} params, {info['macs']:,} MACs, test {info['test_acc']:.2f}% "
        f"-> {args.out}/ config.json weights.pt model.onnx model.py export.json"
    )


def cmd_report(args) -> None:
    from nas import data, display, report, store

    url = args.storage or store.default_storage(args.results_dir)
    study = store.load_study(url, args.study)
    mnist = data.load_mnist(args.data_dir, download=not args.no_download)
    artifacts = str(Path(args.results_dir) / "artifacts")
    files = report.write_report(study, Path(args.results_dir), artifacts, mnist)
    summary = next(p for p in files if p.name == "summary.md")
    note = summary.read_text().split("## The seed's baselines")[0]
    uploaded = report.attach(study, [p for p in files if p.suffix in (".png", ".md", ".json")], artifacts, note)
    for p in files:
        display.console.print(f"written: {p}")
    display.console.print(f"attached to study {args.study!r}: {uploaded} new or changed files, and its note")


def existing_storage(args):
    """The URL and storage of --storage (default: the results folder's SQLite file), which must exist."""
    from nas import store

    url = args.storage or store.default_storage(args.results_dir)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).exists():
        raise UsageError(f"no storage at {url}; run `nas search` first or pass --storage")
    return url, store.open_storage(url)


def cmd_dashboard(args) -> None:
    import optuna_dashboard

    from nas import confirm, display, store

    url, storage = existing_storage(args)
    page = f"http://{args.host}:{args.port}/dashboard"
    if args.study:
        study = store.load_study(url, args.study)
        page += f"/studies/{study._study_id}"
    display.console.print(f"optuna-dashboard on {store.mask(url)}: {page}  (Ctrl-C stops it)")
    artifacts = confirm.artifact_store(str(Path(args.results_dir) / "artifacts"))
    try:
        optuna_dashboard.run_server(storage, host=args.host, port=args.port, artifact_store=artifacts)
    except OSError as e:
        raise UsageError(f"cannot serve on {args.host}:{args.port}: {e.strerror}; try another --port") from None


def cmd_bench(args) -> None:
    from datetime import UTC, datetime

    import pandas as pd
    from rich.table import Table

    from nas import bench, data, display, report
    from nas.workers import usable_cpus

    config = spec.resolve(args.config)
    device = resolve_device(args.device)
    root = str(data.data_dir(args.data_dir))
    data.load_mnist(root, download=not args.no_download)
    cores = usable_cpus()
    steps, repeats = (20, 1) if args.quick else (args.steps, args.repeats)
    sizes = (2000, 8000, 32000) if args.quick else (2000, 4000, 8000, 16000, 32000)
    jobs, workers = args.jobs or cores, cores if args.workers is None else args.workers
    info = bench.machine(device)
    out = display.console.print
    out(
        f"bench: {config.name} ({spec.param_count(config):,} params), batch {config.recipe.batch_size}, {steps} steps "
        f"x {repeats} repeats; {info['cpu']}, {info['cores']} cores, torch {info['torch']}, device {device}"
    )
    rows, scaling = bench.run(config, root, device, steps, repeats, jobs, workers, sizes, say=out)
    t = Table(title="training throughput, same model and batch size", title_justify="left")
    for col in ("pipeline", "images/s", "vs seed pipeline"):
        t.add_column(col, justify="left" if col == "pipeline" else "right")
    for r in rows:
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-"
        t.add_row(r["pipeline"], f"{r['img_per_s']:,.0f} ± {r['std']:,.0f}", ratio)
    out(t)
    t = Table(title="epoch time against model size (nas loop, 60,000 images)", title_justify="left")
    for col in ("params", "MACs/image", "images/s", "s per epoch"):
        t.add_column(col, justify="right")
    for r in scaling:
        t.add_row(f"{r['params']:,}", f"{r['macs']:,}", f"{r['img_per_s']:,.0f}", f"{r['epoch_s']:.1f}")
    out(t)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    meta = {**info, "config": config.name, "steps": steps, "repeats": repeats, "jobs": jobs, "workers": workers}
    folder = Path(args.results_dir) / "bench"
    paths = [
        report.write_csv(pd.DataFrame([{**r, **meta} for r in rows]), folder / f"{stamp}-throughput.csv"),
        report.write_csv(pd.DataFrame([{**r, **meta} for r in scaling]), folder / f"{stamp}-scaling.csv"),
    ]
    out("written: " + ", ".join(map(str, paths)))


def cmd_spaces(args) -> None:
    from rich.table import Table

    from nas import display, space

    for name in space.space_names():
        sp = space.load(name)
        n, _ = space.smallest(sp)
        t = Table(
            title=f"{name}: {sp.description} (epochs {sp.epochs}; smallest model {n:,} params)", title_justify="left"
        )
        t.add_column("dimension")
        t.add_column("values")
        for dim in sp.dims:
            t.add_row(dim, sp.describe(dim))
        display.console.print(t)


def cmd_studies(args) -> None:
    import optuna
    from rich.table import Table

    from nas import display, store

    url, storage = existing_storage(args)
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=True)
    if args.delete:
        doomed = store.with_confirmation([x.study_name for x in summaries], args.delete, url)
        for name in doomed:  # a search study and its confirmation go together
            optuna.delete_study(study_name=name, storage=storage)
        display.console.print(f"deleted {', '.join(map(repr, doomed))} from {store.mask(url)}")
        return
    if args.rename:
        rename_study(url, *args.rename, Path(args.results_dir))
        return
    confirmations = {store.confirmation_name(x.study_name) for x in summaries}
    t = Table(title=f"studies in {store.mask(url)}", title_justify="left")
    columns = ("study", "budget", "space", "trials", "trained", "best val %", "best params", "confirmed: pick's test %")
    for col in columns:
        t.add_column(col, justify="left" if col in ("study", "space") else "right")
    for x in summaries:
        if x.study_name in confirmations:
            continue  # a confirmation: shown on its search's row
        ident = x.user_attrs.get("identity", {})
        study = optuna.load_study(study_name=x.study_name, storage=storage)
        c = store.counts(study)
        best = x.best_trial
        verdicts = x.user_attrs.get("confirmation", {}).get("verdicts", [])
        confirmed = "-"
        if verdicts and verdicts[0]["mean"] is not None:  # the pick: best on validation, as report and export
            v = verdicts[0]
            confirmed = f"trial {v['trial']}: {display.verdict_mean(v)}, {v['seeds_done']} seeds"
        t.add_row(
            x.study_name,
            f"{ident.get('budget', '-')}",
            str(ident.get("space", "-")),
            str(x.n_trials),
            str(c["trained"]),
            f"{best.value:.2f}" if best else "-",
            f"{best.user_attrs.get('params', 0):,}" if best else "-",
            confirmed,
        )
    display.console.print(t)


def rename_study(url: str, old: str, new: str, results_dir: Path) -> None:
    from nas import display, store

    pairs = store.rename_plan(url, old, new)
    folder, target = results_dir / old, results_dir / new
    if folder.exists() and target.exists():
        raise UsageError(f"{target} already exists; move it away or choose another name")
    store.rename_study(url, pairs)
    for o, n in pairs:
        display.console.print(f"renamed study {o!r} to {n!r} in {store.mask(url)}")
    if folder.exists():
        folder.rename(target)
        display.console.print(f"moved {folder} to {target} (`nas report --study {new}` rewrites it under the new name)")


COMMANDS = {
    "replay": cmd_replay,
    "train": cmd_train,
    "export": cmd_export,
    "report": cmd_report,
    "bench": cmd_bench,
    "dashboard": cmd_dashboard,
    "search": cmd_search,
    "confirm": cmd_confirm,
    "spaces": cmd_spaces,
    "studies": cmd_studies,
}


def stop_on_signals() -> None:
    """Ctrl-C and SIGTERM stop a run cleanly (KeyboardInterrupt), even where the shell started
    nas with SIGINT ignored (a background job of a script)."""
    import signal

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupt)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    stop_on_signals()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from nas.display import err_console

    try:
        COMMANDS[args.command](args)
    except (NasError, OSError) as e:
        err_console.print(f"nas: error: {e}", highlight=False, markup=False, soft_wrap=True)
        return 2
    except Interrupted as e:
        err_console.print(f"nas: {e}", highlight=False, markup=False, soft_wrap=True)
        return 130
    except KeyboardInterrupt:
        err_console.print("nas: interrupted", highlight=False)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
