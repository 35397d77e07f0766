"""The `nas` command line. Every expected error becomes one clear line and exit code 2."""

from __future__ import annotations

import argparse
import sys

from nas import __version__, spec


class UsageError(Exception):
    """Bad input that argparse cannot see (an unavailable device, say)."""


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


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="nas", description="Discover tiny MNIST networks under a parameter budget.")
    ap.add_argument("--version", action="version", version=f"nas {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("replay", help="replay a seed baseline (or a config file) over seeds, on the test set")
    p.add_argument("name", nargs="?", help="baseline name (see --list) or path to a config JSON file")
    p.add_argument("--list", action="store_true", help="list the baselines and exit")
    p.add_argument("--seeds", type=positive_int, default=1, help="number of seeds (default 1)")
    p.add_argument("--seed", type=int, default=0, help="first seed; runs use seed, seed+1, ... (default 0)")
    p.add_argument("--epochs", type=positive_int, help="override the recipe's epochs")
    p.add_argument("--last-k", type=positive_int, default=3, help="epochs that must all reach the threshold")
    p.add_argument("--threshold", type=float, default=99.40, help="test accuracy %% for 'consistent'")
    p.add_argument("--train-limit", type=positive_int, help="train on the first N images only (quick checks)")
    add_common(p)
    return ap


def cmd_replay(args) -> None:
    from nas import data, display, replay

    if args.list:
        display.console.print(display.baselines_table([spec.load_baseline(n) for n in spec.baseline_names()]))
        return
    if not args.name:
        raise UsageError("replay needs a baseline name or a config file; `nas replay --list` shows the baselines")
    config = spec.resolve(args.name)
    device = resolve_device(args.device)
    mnist = data.load_mnist(args.data_dir, download=not args.no_download)
    is_baseline = args.name in spec.baseline_names()
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
    display.console.print(f"written: {out}/run.json, {out}/history.csv")


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
    return device


COMMANDS = {"replay": cmd_replay}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from nas.data import DataError
    from nas.display import err_console

    try:
        COMMANDS[args.command](args)
    except (spec.SpecError, DataError, UsageError, OSError) as e:
        err_console.print(f"nas: error: {e}", highlight=False, markup=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print("nas: interrupted", highlight=False)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
