"""The `nas` command line: each command parses its options, calls one library function and shows
the result. Every expected error becomes one clear line and exit code 2; Ctrl-C, exit code 130."""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys

from nas import Interrupted, NasError, __version__, verdict, views
from nas.views import show
from nas.workers import stop_on_signals


class UsageError(NasError):
    """Bad input that argparse cannot see (a missing option pair, say)."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """One line, as every other bad input gets (argparse would print the whole usage first)."""
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


# --------------------------------------------------------------------------- option types and groups


def checked(kind, ok=lambda value: True, rule: str = ""):
    """An argparse type: a number of `kind`, finite, for which ok(value) holds ("must be <rule>")."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {value}")
        return value

    return parse


whole = checked(int)
positive_int = checked(int, lambda v: v >= 1, ">= 1")
positive_float = checked(float, lambda v: v > 0, "> 0")
percent = checked(float, lambda v: 0 < v <= 100, "between 0 and 100")


def arg(*flags: str, **kwargs) -> tuple:
    return flags, kwargs


# options several commands take, declared once
SHARED = {
    "storage": [
        arg("--storage", help="Optuna storage URL (default: sqlite:///<results-dir>/nas.db)"),
        arg("--results-dir", default="results", help="holds nas.db, artifacts/ and outputs (default: results)"),
    ],
    "data": [
        arg("--device", default="auto", help="auto (CUDA > MPS > CPU), cpu, cuda, cuda:1, mps"),
        arg("--data-dir", help="folder holding MNIST/raw/ (default: $NAS_DATA_DIR, else ~/.cache/nas/data)"),
        arg("--no-download", action="store_true", help="never try to download MNIST"),
    ],
    "training": [
        arg("--epochs", type=positive_int, help="override the epochs (quick runs)"),
        arg("--train-limit", type=positive_int, help="first N training images only (quick runs)"),
    ],
    "confirmation": [
        arg("--top", type=positive_int, default=3, help="distinct configurations to confirm (default 3)"),
        arg("--seeds", type=positive_int, default=5, help="seeds per configuration (default 5)"),
        arg("--jobs", type=positive_int, default=1, help="worker processes (default 1)"),
    ],
    "runs": [
        arg("--seeds", type=positive_int, default=1, help="number of seeds (default 1)"),
        arg("--seed", type=whole, default=0, help="first seed; runs use seed, seed+1, ... (default 0)"),
        arg("--last-k", type=positive_int, default=verdict.LAST_K, help="epochs that must all reach the threshold"),
        arg("--threshold", type=percent, default=verdict.THRESHOLD, help="test accuracy %% for 'consistent'"),
    ],
}
STUDY = arg("--study", required=True, help="the search study")
RUN, CONFIRM = ("runs", "training", "data", "storage"), ("training", "confirmation", "data", "storage")
# command: (help, shared option groups, its own options)
SPEC = {
    "search": ("budget-constrained Optuna search, then its confirmation (resumes when run again)", CONFIRM, [
        arg("--budget", type=positive_int, default=8000, help="models have fewer parameters (default 8000)"),
        arg("--trials", type=positive_int, default=200, help="trained trials: completed + pruned (default 200)"),
        arg("--space", default="default", help="space name (see `nas spaces`) or .toml path"),
        arg("--study", help="study name (default: <space>-b<budget>)"),
        arg("--timeout", type=positive_float, help="stop starting trials after this many seconds"),
        arg("--sampler", default="tpe", choices=["tpe", "random"]),
        arg("--pruner", default="hyperband", choices=["hyperband", "median", "none"]),
        arg("--seed", type=whole, default=0, help="sampler seed; trial seed = seed + trial number"),
        arg("--no-baselines", action="store_true", help="do not queue the reference baselines first"),
        arg("--val-limit", type=positive_int, help="first N validation images only (quick runs)"),
        arg("--no-confirm", action="store_true", help="skip the confirmation after the search")]),
    "confirm": ("retrain a study's top configurations with several seeds, on the test set", CONFIRM, [STUDY]),
    "replay": ("replay a reference baseline (or a config file) over seeds, on the test set", RUN, [
        arg("name", nargs="?", help="baseline name (see --list) or path to a config JSON file"),
        arg("--list", action="store_true", help="list the baselines and exit")]),
    "train": ("train one config (a file, or a study's trial) over seeds, on the test set", RUN, [
        arg("--config", help="a config JSON file (the schema of `nas replay`)"),
        arg("--trial", type=whole, help="a trial number of --study"),
        arg("--study", help="the study of --trial")]),
    "report": ("write a study's leaderboard, summary and figures, attached to the study", ("data", "storage"), [STUDY]),
    "dashboard": ("open a storage in optuna-dashboard (loopback only by default)", ("storage",), [
        arg("--study", help="print the URL of this study's page"),
        arg("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"),
        arg("--port", type=positive_int, default=8080, help="port (default 8080)")]),
    "export": ("write a confirmed configuration: config, weights, ONNX, model.py", ("storage",), [
        arg("--study", required=True, help="a confirmed search study"),
        arg("--rank", type=positive_int, default=1, help="which confirmed configuration (default 1)"),
        arg("--seed", type=whole, help="whose weights (default: the seed with the median test accuracy)"),
        arg("--out", required=True, help="folder to write")]),
    "bench": ("the reference pipeline vs nas's loop, side by side; epoch time vs model size", ("data", "storage"), [
        arg("--config", default="baseline-6", help="baseline name or config file (default baseline-6)"),
        arg("--steps", type=positive_int, default=150, help="optimizer steps per measurement (default 150)"),
        arg("--repeats", type=positive_int, default=3, help="measurements of each pipeline (default 3)"),
        arg("--jobs", type=positive_int, help="processes for the whole-machine figure (default: cores)"),
        arg("--workers", type=whole, help="DataLoader workers of the reference pipeline (default: cores)"),
        arg("--quick", action="store_true", help="20 steps, 1 repeat, 3 sizes: a check, not a measurement")]),
    "spaces": ("list the search spaces and their dimensions", (), []),
    "studies": ("list the studies in a storage, or delete or rename one", ("storage",), []),
}  # fmt: skip


def parser() -> argparse.ArgumentParser:
    def group(options: list[tuple], p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        for flags, kwargs in options:
            p.add_argument(*flags, **kwargs)
        return p

    shared = {name: group(options, argparse.ArgumentParser(add_help=False)) for name, options in SHARED.items()}
    ap = Parser(prog="nas", description="Discover tiny MNIST networks under a parameter budget.")
    ap.add_argument("--version", action="version", version=f"nas {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    parsers = {
        name: group(options, sub.add_parser(name, parents=[shared[g] for g in parents], help=text))
        for name, (text, parents, options) in SPEC.items()
    }
    either = parsers["studies"].add_mutually_exclusive_group()
    either.add_argument("--delete", metavar="STUDY", help="delete this study (asks no question: it is gone)")
    either.add_argument("--rename", nargs=2, metavar=("STUDY", "NEW"), help="rename a study with its confirmation")
    return ap


# --------------------------------------------------------------------------- commands


def settings(cls, args, **given):
    """A library Settings dataclass, each field from the option of the same name (`download` from
    --no-download) unless given."""
    names = {f.name for f in dataclasses.fields(cls)} - given.keys()
    if "download" in names and hasattr(args, "no_download"):
        given["download"] = not args.no_download
    return cls(**{n: getattr(args, n) for n in names if hasattr(args, n)}, **given)


def storage_url(args) -> str:
    from nas.store import default_storage

    return args.storage or default_storage(args.results_dir)


def cmd_search(args) -> None:
    from nas import search

    flags = {"baselines": not args.no_baselines, "confirm": not args.no_confirm}
    with views.SearchView() as view:
        outcome = search.run(settings(search.Settings, args, **flags), view)
    if outcome.confirmation is not None:
        views.show_confirmation(outcome.confirmation)


def cmd_confirm(args) -> None:
    from nas import confirm

    s = settings(confirm.Settings, args, storage=storage_url(args))
    with views.ConfirmView() as view:
        views.show_confirmation(confirm.run(s, view))


def cmd_replay(args) -> None:
    from nas import display, spec

    if args.list:
        return show(display.baselines_table([spec.load_baseline(n) for n in spec.baseline_names()]))
    if not args.name:
        raise UsageError("replay needs a baseline name or a config file; `nas replay --list` shows the baselines")
    replay(args, spec.resolve(args.name), is_baseline=args.name in spec.baseline_names())


def cmd_train(args) -> None:
    """One config (a file, or a trial of a study), trained and tested exactly as `nas replay` does."""
    from nas import replay as replays
    from nas import spec

    if bool(args.config) == (args.trial is not None):
        raise UsageError("train needs either --config FILE or --trial N --study S")
    if args.trial is not None and not args.study:
        raise UsageError("--trial needs --study S (see `nas studies`)")
    config = spec.load(args.config) if args.config else replays.trial_config(storage_url(args), args.study, args.trial)
    replay(args, config, is_baseline=False)


def replay(args, config, is_baseline: bool) -> None:
    from nas import replay as replays

    with views.ReplayView() as view:
        views.show_replay(replays.run(config, settings(replays.Settings, args), is_baseline, view))


def cmd_report(args) -> None:
    from nas import report

    outcome = report.run(settings(report.Settings, args))
    show(*(f"written: {path}" for path in outcome.files))
    show(f"attached to study {args.study!r}: {outcome.uploaded} new or changed files, and its note")


def cmd_dashboard(args) -> None:
    from nas import dashboard, store

    url = storage_url(args)
    page = dashboard.page(url, args.study, args.host, args.port)
    show(f"optuna-dashboard on {store.mask(url)}: {page}  (Ctrl-C stops it)")
    dashboard.serve(url, args.results_dir, args.host, args.port)


def cmd_export(args) -> None:
    from nas import export

    views.show_export(export.run(settings(export.Settings, args)), args.out)


def cmd_bench(args) -> None:
    from pathlib import Path

    from nas import bench, display, spec

    s = settings(bench.Settings, args, config=spec.resolve(args.config))
    rows, scaling, meta = bench.measure(s, show)
    show(*display.bench_tables(rows, scaling))
    show("written: " + ", ".join(map(str, bench.write(rows, scaling, meta, Path(args.results_dir) / "bench"))))


def cmd_spaces(args) -> None:
    from nas import display, space

    show(*(display.space_table(sp, space.smallest(sp)[0]) for sp in map(space.load, space.space_names())))


def cmd_studies(args) -> None:
    from pathlib import Path

    from nas import display, store

    url = storage_url(args)
    if args.delete:
        show(f"deleted {', '.join(map(repr, store.delete_study(url, args.delete)))} from {store.mask(url)}")
    elif args.rename:
        show(*store.rename(url, *args.rename, Path(args.results_dir)))
    else:
        show(display.studies_table(store.mask(url), store.study_rows(url)))


COMMANDS = {name[4:]: fn for name, fn in list(globals().items()) if name.startswith("cmd_")}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    stop_on_signals()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from nas.display import err_console

    def error(text: str) -> None:
        err_console.print(text, highlight=False, markup=False, soft_wrap=True)

    try:
        COMMANDS[args.command](args)
    except (NasError, OSError) as e:
        error(f"nas: error: {e}")
        return 2
    except Interrupted as e:
        error(f"nas: {e}")
        return 130
    except KeyboardInterrupt:
        error("nas: interrupted")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
