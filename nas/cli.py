"""The `nas` command line: each command parses its options, calls one library function and shows
the result. Every expected error becomes one clear line and exit code 2; Ctrl-C, exit code 130.
Each command imports what it needs when it runs, so that `nas --help` and a bad option answer at
once instead of after torch and Optuna have loaded."""

from __future__ import annotations

import dataclasses
import sys

from nas import Interrupted, NasError
from nas.display import err_console, show
from nas.options import parser
from nas.workers import stop_on_signals


class UsageError(NasError):
    """Bad input that argparse cannot see (a missing option pair, say)."""


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
    from nas import search, spec, views

    flags = {"baselines": not args.no_baselines, "confirm": not args.no_confirm, "enqueue": spec.expand(args.enqueue)}
    with views.SearchView() as view:
        outcome = search.run(settings(search.Settings, args, **flags), view)
    if outcome.confirmation is not None:
        views.show_confirmation(outcome.confirmation)


def cmd_confirm(args) -> None:
    from nas import confirm, views

    s = settings(confirm.Settings, args, storage=storage_url(args))
    with views.ConfirmView() as view:
        views.show_confirmation(confirm.run(s, view))


def cmd_frontier(args) -> None:
    from nas import frontier, spec, views

    s = settings(frontier.Settings, args, enqueue=spec.expand(args.enqueue))
    with views.FrontierView() as view:
        views.show_frontier(frontier.run(s, view))


def cmd_replay(args) -> None:
    from nas import display, frontier, spec

    if args.list:
        show(display.baselines_table([spec.load_baseline(n) for n in spec.baseline_names()]))
        winners = frontier.winner_files(args.results_dir)
        return show(display.winners_table(winners)) if winners else None
    if not args.name:
        raise UsageError("replay needs a baseline, a frontier winner or a config file; `nas replay --list` shows them")
    config = frontier.winner_config(args.name, args.results_dir) or spec.resolve(args.name)
    replay(args, config, is_baseline=args.name in spec.baseline_names())


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
    from nas import views

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
    from nas import export, views

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
