"""The command line's options, declared as data: each command's own, and the groups several
commands share (declared once); the argparse types that refuse non-finite and out-of-range numbers
with one line. nas.cli holds what each command does.

A default lives in one place. An option marked `default=LIBRARY` is left out of the parsed
arguments unless given, so the library's Settings dataclass supplies its default (`--help` reads it
from there: `SETTINGS`); options the command line alone reads keep their default here.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import math

from nas import __version__
from nas.files import RESULTS_DIR
from nas.spec import FLOAT32_MAX

LIBRARY = argparse.SUPPRESS  # the default is the library Settings field's of the same name
# each command's Settings dataclass, whose defaults the LIBRARY options take (read for --help only:
# importing these modules loads torch and Optuna, which a bad option or --help should not wait for)
SETTINGS = {
    "search": "nas.study", "confirm": "nas.confirm", "frontier": "nas.frontier", "replay": "nas.replay",
    "train": "nas.replay", "report": "nas.report", "export": "nas.export", "bench": "nas.bench",
}  # fmt: skip


class Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """One line, as every other bad input gets (argparse would print the whole usage first)."""
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


class LibraryDefaults(argparse.HelpFormatter):
    """Help that shows a LIBRARY option's default as the command's Settings dataclass holds it."""

    settings: str | None = None  # the module of the command's Settings (SETTINGS)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = (action.help or "").replace("%", "%%")  # argparse formats help with %
        if action.default is not LIBRARY or self.settings is None:
            return text
        fields = {f.name: f for f in dataclasses.fields(importlib.import_module(self.settings).Settings)}
        value = fields[action.dest].default if action.dest in fields else None  # --help's own default, say
        if value is None:
            return text
        shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
        return f"{text} (default {shown})"


def formatter(command: str) -> type[argparse.HelpFormatter]:
    return type(f"{command.title()}Defaults", (LibraryDefaults,), {"settings": SETTINGS.get(command)})


# --------------------------------------------------------------------------- option types and groups


def checked(kind, ok=lambda value: True, rule: str = ""):
    """An argparse type: a number of `kind`, finite (a float in float32 too, as a config's numbers are),
    for which ok(value) holds ("must be <rule>")."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if kind is float and abs(value) > FLOAT32_MAX:
            raise argparse.ArgumentTypeError(f"must fit a 32-bit float (at most {FLOAT32_MAX:.2g}), got {text}")
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {value}")
        return value

    return parse


whole = checked(int)
# a seed: Optuna's samplers take 0 .. 2**32 - 1, and a worker's is the seed + 7919 x its index
seed = checked(int, lambda v: 0 <= v < 2**31, "between 0 and 2147483647")
positive_int = checked(int, lambda v: v >= 1, ">= 1")
positive_float = checked(float, lambda v: v > 0, "> 0")
percent = checked(float, lambda v: 0 < v <= 100, "between 0 and 100")


def budgets(text: str) -> tuple[int, ...]:
    """--budgets 5000,6000,8000: distinct parameter budgets."""
    values = tuple(positive_int(part) for part in text.split(","))
    if len(set(values)) < len(values):
        raise argparse.ArgumentTypeError(f"budgets must differ, got {text}")
    return values


def counts(text: str) -> tuple[int, ...]:
    """--trials 60, or 18,17,30: one whole number >= 1, or one per budget."""
    return tuple(positive_int(part) for part in text.split(","))


def arg(*flags: str, **kwargs) -> tuple:
    return flags, kwargs


# options several commands take, declared once
SHARED = {
    "storage": [
        arg("--storage", help="Optuna storage URL (default: sqlite:///<results-dir>/nas.db)"),
        arg("--results-dir", default=RESULTS_DIR, help=f"holds nas.db, artifacts/ and outputs (default {RESULTS_DIR})"),
    ],
    "data": [
        arg("--device", default=LIBRARY, help="auto (CUDA > MPS > CPU), cpu, cuda, cuda:1, mps"),
        arg(
            "--data-dir",
            default=LIBRARY,
            help="folder holding MNIST/raw/ (default: $NAS_DATA_DIR, else ~/.cache/nas/data)",
        ),
        arg("--no-download", action="store_true", help="never try to download MNIST"),
    ],
    "training": [
        arg("--epochs", type=positive_int, default=LIBRARY, help="override the epochs (quick runs)"),
        arg("--train-limit", type=positive_int, default=LIBRARY, help="first N training images only (quick runs)"),
    ],
    "confirmation": [
        arg("--top", type=positive_int, default=LIBRARY, help="distinct configurations to confirm"),
        arg("--seeds", type=positive_int, default=LIBRARY, help="seeds per configuration"),
        arg("--jobs", type=positive_int, default=LIBRARY, help="worker processes"),
    ],
    "runs": [
        arg("--seeds", type=positive_int, default=LIBRARY, help="number of seeds"),
        arg("--seed", type=seed, default=LIBRARY, help="first seed; runs use seed, seed+1, ..."),
        arg("--last-k", type=positive_int, default=LIBRARY, help="epochs that must all reach the threshold"),
        arg("--threshold", type=percent, default=LIBRARY, help="test accuracy % for 'consistent'"),
    ],
}
STUDY = arg("--study", required=True, help="the search study")
RUN, CONFIRM = ("runs", "training", "data", "storage"), ("training", "confirmation", "data", "storage")
TRAINED = ("training", "data", "storage")
# command: (help, shared option groups, its own options)
SPEC = {
    "search": ("budget-constrained Optuna search, then its confirmation (resumes when run again)", CONFIRM, [
        arg("--budget", type=positive_int, default=LIBRARY, help="models have fewer parameters"),
        arg("--trials", type=positive_int, default=LIBRARY, help="trained trials: completed + pruned"),
        arg("--space", default=LIBRARY, help="space name (see `nas spaces`) or .toml path"),
        arg("--study", default=LIBRARY, help="study name (default: <space>-b<budget>)"),
        arg("--timeout", type=positive_float, default=LIBRARY, help="stop starting trials after this many seconds"),
        arg("--sampler", default=LIBRARY, choices=["tpe", "random"], help="Optuna's sampler"),
        arg("--pruner", default=LIBRARY, choices=["hyperband", "median", "none"], help="Optuna's pruner"),
        arg("--seed", type=seed, default=LIBRARY, help="sampler seed; trial seed = seed + trial number"),
        arg("--no-baselines", action="store_true", help="do not queue the reference baselines first"),
        arg("--enqueue", action="append", default=[], metavar="CONFIG",
            help="a baseline name, config JSON or folder of them to train first, before sampling (repeatable)"),
        arg("--val-limit", type=positive_int, default=LIBRARY, help="first N validation images only (quick runs)"),
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
        arg("--rank", type=positive_int, default=LIBRARY, help="which confirmed configuration"),
        arg("--seed", type=whole, default=LIBRARY,
            help="whose weights (default: the seed with the median test accuracy)"),
        arg("--out", required=True, help="folder to write")]),
    "bench": ("the reference pipeline vs nas's loop, side by side; epoch time vs model size", ("data", "storage"), [
        arg("--config", default="baseline-6", help="baseline name or config file (default baseline-6)"),
        arg("--steps", type=positive_int, default=LIBRARY, help="optimizer steps per measurement"),
        arg("--repeats", type=positive_int, default=LIBRARY, help="measurements of each pipeline"),
        arg("--jobs", type=positive_int, default=LIBRARY,
            help="processes for the whole-machine figure (default: cores)"),
        arg("--workers", type=whole, default=LIBRARY,
            help="DataLoader workers of the reference pipeline (default: cores)"),
        arg("--quick", action="store_true", help="20 steps, 1 repeat, 3 sizes: a check, not a measurement")]),
    "frontier": ("the smallest consistent network per budget: search, select, confirm, retest", TRAINED, [
        arg("--budgets", type=budgets, default=LIBRARY, help="comma-separated"),
        arg("--name", default=LIBRARY, help="studies <name>-b<budget>, report in <results-dir>/<name>/"),
        arg("--space", default=LIBRARY, help="space name (see `nas spaces`) or .toml path"),
        arg("--trials", type=counts, default=LIBRARY, help="trained trials per budget, or one each: 18,17,30"),
        arg("--select-top", type=positive_int, default=LIBRARY, help="configurations retrained on validation"),
        arg("--select-seeds", type=positive_int, default=LIBRARY, help="their seeds beyond the search's"),
        arg("--confirm-top", type=positive_int, default=LIBRARY, help="of those, confirmed on the test set"),
        arg("--seeds", type=positive_int, default=LIBRARY, help="confirmation seeds"),
        arg("--fresh-seeds", type=positive_int, default=LIBRARY, help="the winner's fresh test seeds"),
        arg("--jobs", type=positive_int, default=LIBRARY, help="worker processes"),
        arg("--pruner", default=LIBRARY, choices=["hyperband", "median", "none"], help="Optuna's pruner"),
        arg("--seed", type=seed, default=LIBRARY, help="sampler seed"),
        arg("--enqueue", action="append", default=[], metavar="CONFIG",
            help="a baseline name, config JSON or folder of them, first in the smallest budget that fits (repeatable)"),
        arg("--val-limit", type=positive_int, default=LIBRARY, help="first N validation images only (quick runs)")]),
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
        name: group(
            options,
            sub.add_parser(name, parents=[shared[g] for g in parents], help=text, formatter_class=formatter(name)),
        )
        for name, (text, parents, options) in SPEC.items()
    }
    either = parsers["studies"].add_mutually_exclusive_group()
    either.add_argument("--delete", metavar="STUDY", help="delete this study (asks no question: it is gone)")
    either.add_argument("--rename", nargs=2, metavar=("STUDY", "NEW"), help="rename a study with its confirmation")
    return ap
