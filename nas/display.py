"""Everything the commands show: rich tables, per-epoch rows and progress bars."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from nas import spec

console = Console()
if not console.is_terminal:  # logs and pipes: wide enough for the tables, not rich's 80 columns
    console = Console(width=max(console.width, 120))
err_console = Console(stderr=True)


def _layer_name(r: spec.Row) -> str:
    x = r.layer
    if x.op == "conv":
        post = "" if r.is_output else " + ReLU, BN"
        return f"conv {x.kernel}x{x.kernel}" + (f" pad {x.padding}" if x.padding else "") + post
    return {"pool": "maxpool 2x2", "gap": "global avg pool", "fc": "linear" + ("" if r.is_output else " + ReLU")}[x.op]


def summary_table(config: spec.Config) -> Table:
    """Model summary from the config alone: layers, output shapes, parameters, MACs."""
    t = Table(title=f"{config.name or 'config'}: layers", title_justify="left")
    for col in ("#", "layer", "output", "params", "MACs"):
        t.add_column(col, justify="left" if col == "layer" else "right")
    for r in spec.trace(config):
        name = _layer_name(r)
        if r.layer.op == "conv" and not r.is_output and config.recipe.dropout > 0:
            name += f", Dropout {config.recipe.dropout:g}"
        shape = f"{r.out_ch} x {r.out_size} x {r.out_size}" if r.layer.op != "fc" else f"{r.out_ch}"
        t.add_row(str(r.index + 1), name, shape, f"{r.params:,}", f"{r.macs:,}")
    t.add_section()
    t.add_row("", "total", "", f"{spec.param_count(config):,}", f"{spec.macs(config):,}")
    return t


def rf_table(config: spec.Config) -> Table:
    t = Table(title=f"receptive field: {spec.receptive_field(config)}", title_justify="left")
    for col in spec.RF_COLUMNS:
        t.add_column(col, justify="right")
    for row in spec.rf_table(config):
        t.add_row(*map(str, row))
    return t


def recipe_line(recipe: spec.Recipe) -> str:
    sched = f"StepLR {recipe.step_size}/{recipe.gamma:g}" if recipe.step_size else "constant lr"
    return (
        f"{recipe.optimizer} lr {recipe.lr:g} momentum {recipe.momentum:g}, batch {recipe.batch_size}, "
        f"{recipe.epochs} epochs, {sched}, dropout {recipe.dropout:g}, rotation +-{recipe.rotation:g}"
    )


def baselines_table(configs: list[spec.Config]) -> Table:
    t = Table(title="baselines (reconstructions of the seed's six iterations)", title_justify="left")
    for col in ("name", "params", "seed params", "MACs", "RF", "dropout", "rotation", "schedule", "seed test %"):
        t.add_column(col, justify="left" if col == "name" else "right")
    for c in configs:
        rep, r = c.reported, c.recipe
        t.add_row(
            c.name,
            f"{spec.param_count(c):,}",
            f"{rep.params:,}" if rep and rep.params else "-",
            f"{spec.macs(c):,}",
            str(spec.receptive_field(c)),
            f"{r.dropout:g}",
            f"+-{r.rotation:g}",
            f"StepLR {r.step_size}/{r.gamma:g}" if r.step_size else "-",
            f"{rep.test_acc:.2f}" if rep and rep.test_acc else "-",
        )
    return t


EPOCH_HEADER = (
    f"{'seed':>5} {'epoch':>5} {'lr':>8} {'train loss':>10} {'train %':>8} {'{e} loss':>10} {'{e} %':>8} {'s':>6}"
)


def epoch_header(eval_name: str) -> str:
    return EPOCH_HEADER.replace("{e}", eval_name)


def epoch_row(seed: int, e) -> str:
    return (
        f"{seed:>5} {e.epoch:>5} {e.lr:>8.5f} {e.train_loss:>10.4f} {e.train_acc:>8.2f} "
        f"{e.eval_loss:>10.4f} {e.eval_acc:>8.2f} {e.seconds:>6.1f}"
    )


@contextmanager
def progress(total: int, description: str) -> Iterator[tuple[Callable[[], None], Callable[[str], None]]]:
    """A live bar over `total` steps; yields (advance one step, print a line above the bar)."""
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    with bar:
        task = bar.add_task(description, total=total)
        yield (lambda: bar.advance(task)), bar.console.print


def _pm(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def verdict_table(config: spec.Config, verdicts: list[dict], last_k: int, threshold: float) -> Table:
    """Per-seed rows, mean ± std, and the seed's own reported numbers beside them."""
    rule = f"consistent = test % >= {threshold:.2f} in each of the last {last_k} epochs"
    t = Table(title=f"{config.name}: verdict ({rule})", title_justify="left")
    keys = ("best_train", "best", "final", "min_last_k")
    for col in ("run", "params", "best train %", "best test %", "final test %", f"min last {last_k} %", "consistent"):
        t.add_column(col, justify="left" if col == "run" else "right")
    params = f"{spec.param_count(config):,}"
    for v in verdicts:
        t.add_row(f"nas seed {v['seed']}", params, *(f"{v[k]:.2f}" for k in keys), "yes" if v["consistent"] else "no")
    if len(verdicts) > 1:
        n_ok = sum(v["consistent"] for v in verdicts)
        t.add_row("mean ± std", params, *(_pm([v[k] for v in verdicts]) for k in keys), f"{n_ok}/{len(verdicts)}")
    rep = config.reported
    if rep is not None:
        t.add_section()
        t.add_row(
            "seed (reported)",
            f"{rep.params:,}" if rep.params else "-",
            f"{rep.train_acc:.2f}" if rep.train_acc else "-",
            f"{rep.test_acc:.2f}" if rep.test_acc else "-",
            "-",
            "-",
            "-",
        )
    return t
