"""Everything the commands show: rich tables, per-epoch rows and progress bars."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from nas import spec
from nas.files import hms

console = Console()
if not console.is_terminal:  # logs and pipes: wide enough for the tables, not rich's 80 columns
    console = Console(width=max(console.width, 120))
err_console = Console(stderr=True)
say = console.print


def show(*things) -> None:
    """Print each table or line in turn."""
    for thing in things:
        say(thing)


def _layer_name(r: spec.Row) -> str:
    x = r.layer
    if x.op in spec.CONVS:
        post = "" if r.is_output else " + ReLU, BN" if x.order == "relu-bn" else " + BN, ReLU"
        kind = "conv" if x.op == "conv" else "separable conv"
        return f"{kind} {x.kernel}x{x.kernel}" + (f" pad {x.padding}" if x.padding else "") + post
    return {"pool": "maxpool 2x2", "gap": "global avg pool", "fc": "linear" + ("" if r.is_output else " + ReLU")}[x.op]


def summary_table(config: spec.Config) -> Table:
    """Model summary from the config alone: layers, output shapes, parameters, MACs."""
    t = Table(title=f"{config.name or 'config'}: layers", title_justify="left")
    for col in ("#", "layer", "output", "params", "MACs"):
        t.add_column(col, justify="left" if col == "layer" else "right")
    for r in spec.trace(config):
        name = _layer_name(r)
        if r.layer.op in spec.CONVS and not r.is_output and config.recipe.dropout > 0:
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


def baselines_table(configs: list[spec.Config]) -> Table:
    t = Table(title="baselines (reconstructions of the reference's six iterations)", title_justify="left")
    columns = ("params", "reference params", "MACs", "RF", "dropout", "rotation", "schedule", "reference test %")
    for col in ("name", *columns):
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


def winners_table(files: dict) -> Table:
    """The frontier winners `nas replay` finds by name, each with the file it reads."""
    t = Table(title="frontier winners (nas frontier)", title_justify="left")
    for col in ("name", "params", "MACs", "RF", "file"):
        t.add_column(col, justify="left" if col in ("name", "file") else "right")
    for name, path in files.items():
        c = spec.load(path)
        t.add_row(name, f"{spec.param_count(c):,}", f"{spec.macs(c):,}", str(spec.receptive_field(c)), str(path))
    return t


EPOCH_HEADER = (
    f"{'seed':>5} {'epoch':>5} {'lr':>8} {'lr last':>8} {'train loss':>10} {'train %':>8} "
    f"{'{e} loss':>10} {'{e} %':>8} {'s':>6}"
)


def epoch_header(eval_name: str) -> str:
    return EPOCH_HEADER.replace("{e}", eval_name)


def epoch_row(seed: int, epoch) -> str:
    return (
        f"{seed:>5} {epoch.epoch:>5} {epoch.lr:>8.5f} {epoch.lr_last:>8.5f} {epoch.train_loss:>10.4f} "
        f"{epoch.train_acc:>8.2f} {epoch.eval_loss:>10.4f} {epoch.eval_acc:>8.2f} {epoch.seconds:>6.1f}"
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


def verdict_table(config: spec.Config, verdicts: list, last_k: int, threshold: float) -> Table:
    """Per-seed rows (nas.verdict.SeedVerdict), mean ± std, and the reference's reported numbers beside them."""
    rule = f"consistent = test % >= {threshold:.2f} in each of the last {last_k} epochs"
    t = Table(title=f"{config.name}: verdict ({rule})", title_justify="left")
    keys = ("best_train", "best", "final", "min_last_k")
    for col in ("run", "params", "best train %", "best test %", "final test %", f"min last {last_k} %", "consistent"):
        t.add_column(col, justify="left" if col == "run" else "right")
    params = f"{spec.param_count(config):,}"
    for v in verdicts:
        cells = (f"{getattr(v, k):.2f}" for k in keys)
        t.add_row(f"nas seed {v.seed}", params, *cells, "yes" if v.consistent else "no")
    if len(verdicts) > 1:
        n_ok = sum(v.consistent for v in verdicts)
        means = (_pm([getattr(v, k) for v in verdicts]) for k in keys)
        t.add_row("mean ± std", params, *means, f"{n_ok}/{len(verdicts)}")
    rep = config.reported
    if rep is not None:
        t.add_section()
        t.add_row(
            "reference (reported)",
            f"{rep.params:,}" if rep.params else "-",
            f"{rep.train_acc:.2f}" if rep.train_acc else "-",
            f"{rep.test_acc:.2f}" if rep.test_acc else "-",
            "-",
            "-",
            "-",
        )
    return t


def search_status(status) -> Table:
    """The live search panel (a nas.search.SearchStatus): counts, the best trial so far, time."""
    c, best, total, elapsed, eta = status.counts, status.best, status.total, status.elapsed, status.eta
    t = Table.grid(padding=(0, 2))
    share = f"{100 * c['infeasible'] / c['proposed']:.0f}%" if c["proposed"] else "-"
    t.add_row(
        f"[bold]trained {c['trained']}/{total}[/]",
        f"completed {c['completed']}",
        f"pruned {c['pruned']}",
        f"infeasible {c['infeasible']} ({share} of proposals)",
        f"running {c['running']}",
        f"failed {c['failed']}",
    )
    if best is not None:
        a = best.user_attrs
        t.add_row(
            f"best: trial {best.number}",
            f"val {best.value:.2f}%",
            f"{a.get('params', 0):,} params",
            f"{a.get('macs', 0):,} MACs",
            f"RF {a.get('receptive_field', '-')}",
            "",
        )
    t.add_row(f"elapsed {hms(elapsed)}", f"eta {hms(eta) if eta is not None else '-'}", "", "", "", "")
    return t


def leaderboard_table(frame, top: int = 10) -> Table:
    t = Table(title=f"leaderboard (top {min(top, len(frame))} of {len(frame)} proposals)", title_justify="left")
    cols = ["trial", "state", "baseline", "params", "macs", "rf", "value", "best_val", "final_val", "epochs", "seconds"]
    for col in cols:
        t.add_column(col, justify="left" if col in ("state", "baseline") else "right")
    for _, row in frame.head(top).iterrows():
        cells = []
        for col in cols:
            v = row[col]
            if v is None or (isinstance(v, float) and v != v):
                cells.append("-")
            elif col in ("params", "macs"):
                cells.append(f"{int(v):,}")
            elif col in ("value", "best_val", "final_val"):
                cells.append(f"{v:.2f}")
            else:
                cells.append(str(v))
        t.add_row(*cells)
    return t


class _LogLines:
    """Live's stand-in when output is not a terminal (nohup, CI): a line per change of counts."""

    def __init__(self):
        self.last = None

    def update(self, status) -> None:
        c, best, total, elapsed, eta = status.counts, status.best, status.total, status.elapsed, status.eta
        key = (c["trained"], c["infeasible"], c["running"], c["failed"])
        if key != self.last:
            self.last = key
            line = (
                f"[{hms(elapsed)}] trained {c['trained']}/{total}, completed {c['completed']}, pruned "
                f"{c['pruned']}, infeasible {c['infeasible']}/{c['proposed']}, running {c['running']}, "
                f"failed {c['failed']}"
            )
            if best is not None:
                a = best.user_attrs
                line += (
                    f"; best trial {best.number}: {best.value:.2f}% "
                    f"({a.get('params', 0):,} params, {a.get('macs', 0):,} MACs)"
                )
            console.print(line + (f"; eta {hms(eta)}" if eta is not None else ""), highlight=False)


class _LiveStatus:
    def __init__(self, live):
        self.live = live

    def update(self, status) -> None:
        self.live.update(search_status(status))


@contextmanager
def live():
    """Yields an object whose update(nas.search.SearchStatus) shows the search."""
    if not console.is_terminal:
        yield _LogLines()
        return
    from rich.live import Live

    with Live(console=console, refresh_per_second=2, transient=False) as lv:
        yield _LiveStatus(lv)


def confirm_table(verdicts: list, last_k: int, threshold: float) -> Table:
    """Every confirmed configuration: per-seed final and min-of-last-K test accuracy, mean ± std, verdict."""
    rule = f"consistent = every seed >= {threshold:.2f} in each of the last {last_k} epochs"
    t = Table(title=f"confirmation on the test set ({rule})", title_justify="left")
    for col in (
        "trial",
        "params",
        "MACs",
        "val %",
        "seeds",
        "final test % per seed",
        f"min last {last_k} per seed",
        "mean ± std",
        "consistent",
    ):
        t.add_column(col, justify="right")
    for v in verdicts:  # nas.verdict.Verdict
        t.add_row(
            str(v.trial),
            f"{v.params:,}",
            f"{v.macs:,}",
            f"{v.val:.2f}",
            f"{v.seeds_done}/{v.seeds_wanted}",
            v.finals_text(),
            v.mins_text(),
            v.mean_std(),
            "yes" if v.consistent else "no",
        )
    return t


def bench_tables(rows: list[dict], scaling: list[dict]) -> list[Table]:
    """`nas bench`'s two tables: throughput side by side, and epoch time against model size."""
    t = Table(title="training throughput, same model and batch size", title_justify="left")
    for col in ("pipeline", "images/s", "vs reference pipeline"):
        t.add_column(col, justify="left" if col == "pipeline" else "right")
    for r in rows:
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-"
        t.add_row(r["pipeline"], f"{r['img_per_s']:,.0f} ± {r['std']:,.0f}", ratio)
    s = Table(title="epoch time against model size (nas loop, 60,000 images)", title_justify="left")
    for col in ("params", "MACs/image", "images/s", "s per epoch"):
        s.add_column(col, justify="right")
    for r in scaling:
        s.add_row(f"{r['params']:,}", f"{r['macs']:,}", f"{r['img_per_s']:,.0f}", f"{r['epoch_s']:.1f}")
    return [t, s]


def space_table(sp, smallest: int) -> Table:
    """A search space's dimensions (`nas spaces`)."""
    title = f"{sp.name}: {sp.description} (epochs {sp.epochs}; smallest model {smallest:,} params)"
    t = Table(title=title, title_justify="left")
    t.add_column("dimension")
    t.add_column("values")
    for dim in sp.dims:
        t.add_row(dim, sp.describe(dim))
    return t


def studies_table(url: str, rows: list) -> Table:
    """`nas studies`: one row per search study (nas.store.StudyRow)."""
    t = Table(title=f"studies in {url}", title_justify="left")
    columns = (
        "study",
        "budget",
        "space",
        "trials",
        "trained",
        "hours",
        "best val %",
        "best params",
        "confirmed: pick's test %",
    )
    for col in columns:
        t.add_column(col, justify="left" if col in ("study", "space") else "right")
    for r in rows:
        pick = r.pick  # the confirmed configuration best on validation, as report and export take it
        confirmed = f"trial {pick.trial}: {pick.mean_std()}, {pick.seeds_done} seeds" if pick else "-"
        t.add_row(
            r.name,
            str(r.budget if r.budget is not None else "-"),
            r.space or "-",
            str(r.trials),
            str(r.trained),
            f"{r.hours:.1f}",
            f"{r.best_value:.2f}" if r.best_value is not None else "-",
            f"{r.best_params:,}" if r.best_params is not None else "-",
            confirmed,
        )
    return t


def frontier_table(rows: list[dict]) -> Table:
    """`nas frontier`: each budget's winner, tested on seeds that took no part in choosing it."""
    t = Table(title="frontier: each budget's winner on fresh seeds (test set)", title_justify="left")
    for col in (
        "budget",
        "trials",
        "winner",
        "params",
        "MACs",
        "seeds",
        "mean ± std",
        "95% interval",
        "worst last K",
        "consistent",
    ):
        t.add_column(col, justify="left" if col == "winner" else "right", no_wrap=col == "winner")
    for r in rows:
        t.add_row(
            f"{r['budget']:,}",
            str(r["trials"]),
            f"{r['study']} trial {r['trial']}",
            f"{r['params']:,}",
            f"{r['macs']:,}",
            r["seeds"],
            f"{r['mean']:.2f} ± {r['std']:.2f}",
            f"{r['ci95_low']:.2f}-{r['ci95_high']:.2f}",
            f"{r['worst_last_k']:.2f}",
            "yes" if r["consistent"] else "no",
        )
    return t
