"""What the long commands show while they run. The library reports progress as small event
dataclasses (nas.events); a view turns each into lines, a live panel or a progress bar. Each view
says which event each of its methods shows (`handlers`); an event a view does not list is ignored."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack

from nas import display, events, spec, store, workers
from nas.display import say, show
from nas.files import hms


class View:
    """Sends each event to the method its class maps to; closes any live display on exit."""

    def __init__(self):
        self.stack = ExitStack()

    def handlers(self) -> dict[type, Callable]:
        return {}

    def __call__(self, event) -> None:
        handler = self.handlers().get(type(event))
        if handler is not None:
            handler(event)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stack.close()

    def close(self) -> None:
        """Stop the live panel or bar now (what follows prints below it)."""
        self.stack.close()
        self.stack = ExitStack()


class ConfirmView(View):
    """A bar over the confirmation's (configuration, seed) runs, a line per finished run."""

    def handlers(self) -> dict[type, Callable]:
        return {events.ConfirmPlanned: self.confirm_planned, events.UnitDone: self.unit_done}

    def confirm_planned(self, event: events.ConfirmPlanned) -> None:
        stage = store.STAGES[event.stage]
        what, judged = stage.title, stage.evaluated_on
        say(
            f"{what}: {event.top} configuration{'s' * (event.top != 1)} x {event.seeds} seeds = {event.units} runs on "
            f"{event.train_images:,} training images, {judged} every epoch; study {event.study!r}"
        )
        self.advance, self.line = self.stack.enter_context(display.progress(event.units, event.stage))
        for _ in range(event.done):
            self.advance()
        if event.done:
            self.line(f"{event.done} of {event.units} runs already done")

    def unit_done(self, event: events.UnitDone) -> None:
        self.advance()
        self.line(
            f"[{hms(event.elapsed)}] {event.done} of {event.units} runs done: "
            f"trial {event.trial} seed {event.seed}, final {event.final:.2f}%"
        )


class SearchView(ConfirmView):
    """The plan, a live panel of counts while trials train, the leaderboard; then the confirmation."""

    def handlers(self) -> dict[type, Callable]:
        return {
            **super().handlers(),
            events.SearchPlanned: self.search_planned,
            events.SearchStatus: self.search_status,
            events.SearchFinished: self.search_finished,
        }

    def search_planned(self, event: events.SearchPlanned) -> None:
        self.plan(event)
        self.live = self.stack.enter_context(display.live())

    def plan(self, event: events.SearchPlanned) -> None:
        s, sp = event.settings, event.space
        say(
            f"study {event.study!r} in {event.storage}: space {sp.name} ({sp.path}), budget {s.budget:,}, "
            f"{s.trials} trained trials, {s.jobs} job(s), sampler {s.sampler}, pruner {s.pruner}, device {event.device}"
        )
        if event.kept or event.failed:
            failed = f", crashed trials failed and re-queued: {event.failed}" if event.failed else ""
            say(f"resuming: {event.kept} trained trials kept" + failed)
        if not event.remaining:
            say(
                f"study {event.study!r} already has its {s.trials} trained trials: nothing to train "
                "(raise --trials to go on, or pass --study NEW for a new search)"
            )
        if event.queued:
            say(f"queued first (--enqueue, then the baselines the space and budget admit): {', '.join(event.queued)}")
        if event.estimate is not None:
            x = event.estimate
            pruned = f", about {hms(x.without_pruning * (1 - x.saving))} if {s.pruner} saves "
            pruned += f"{x.saving:.0%} of the epochs as measured"
            say(
                f"estimate: one epoch ~{x.epoch_seconds:.0f} s here; {event.remaining} trials x {x.epochs} epochs: "
                f"at most {hms(x.without_pruning)} without pruning" + (pruned if x.saving else "")
            )

    def search_status(self, event: events.SearchStatus) -> None:
        self.live.update(event)

    def search_finished(self, event: events.SearchFinished) -> None:
        from nas import report  # pandas and Optuna: loaded once a search has run, not for every command

        self.close()
        say("")
        say(display.leaderboard_table(event.leaderboard))
        say(report.summary_line(event.summary))
        say(f"written: {event.path}")


class FrontierView(SearchView):
    """Each budget's search, selection, confirmation and fresh seeds in turn."""

    def handlers(self) -> dict[type, Callable]:
        return {**super().handlers(), events.BudgetStarted: self.budget_started}

    def budget_started(self, event: events.BudgetStarted) -> None:
        say(f"\n[bold]budget {event.budget:,}[/] ({event.index} of {event.budgets})")
        self.runs_after_search = event.runs_after_search

    def plan(self, event: events.SearchPlanned) -> None:
        super().plan(event)
        if event.estimate is not None:  # the search's estimate alone would hide most of a budget's time
            x = event.estimate
            parallel = workers.started(event.settings.jobs, self.runs_after_search)
            seconds = self.runs_after_search * x.epochs * x.epoch_seconds / parallel
            say(
                f"then {self.runs_after_search} runs x {x.epochs} epochs (selection, confirmation, fresh seeds): "
                f"at most about {hms(seconds)}"
            )

    def confirm_planned(self, event: events.ConfirmPlanned) -> None:
        self.close()  # one bar at a time: the previous stage's is done
        super().confirm_planned(event)


class ReplayView(View):
    """The config's tables, a bar per seed with a row per epoch."""

    def handlers(self) -> dict[type, Callable]:
        return {
            events.ReplayStarted: self.replay_started,
            events.SeedStarted: self.seed_started,
            events.Step: self.step,
            events.EpochDone: self.epoch_done,
            events.SeedDone: self.seed_done,
        }

    def replay_started(self, event: events.ReplayStarted) -> None:
        say(display.summary_table(event.config))
        say(display.rf_table(event.config))
        say(f"recipe: {spec.recipe_line(event.config.recipe)}; device {event.device}")
        self.name = event.config.name

    def seed_started(self, event: events.SeedStarted) -> None:
        self.advance, self.line = self.stack.enter_context(
            display.progress(event.steps, f"{self.name} seed {event.seed}")
        )
        self.line(display.epoch_header("test"))

    def step(self, event: events.Step) -> None:
        self.advance()

    def epoch_done(self, event: events.EpochDone) -> None:
        self.line(display.epoch_row(event.seed, event.epoch))

    def seed_done(self, event: events.SeedDone) -> None:
        self.close()


def show_confirmation(outcome) -> None:
    """The verdicts of a confirmation (nas.confirm.Outcome)."""
    s = outcome.settings
    say(display.confirm_table(outcome.verdicts, s.last_k, s.threshold))
    say(f"written: {outcome.path} ({outcome.seconds:.0f} s)")


def show_replay(outcome) -> None:
    """The per-seed verdicts of a replay (nas.replay.Outcome) beside the reference's numbers."""
    s = outcome.settings
    say(display.verdict_table(outcome.config, outcome.verdicts, s.last_k, s.threshold))
    say(f"written: {outcome.folder}/run.json, history.csv, config.json, weights-seed<N>.pt")


def show_export(info: dict, out: str) -> None:
    """What `nas export` wrote (its export.json)."""
    say(
        f"exported trial {info['trial']} of {info['study']!r} (rank {info['rank']}, seed {info['seed']} of "
        f"{info['seeds_confirmed']}): {info['params']:,} params, {info['macs']:,} MACs, test {info['test_acc']:.2f}% "
        f"-> {out}/ config.json weights.pt model.onnx model.py export.json"
    )


def show_frontier(outcome) -> None:
    """One row per budget: the winner on its fresh seeds; then the files written."""
    say(display.frontier_table(outcome.summary))
    show(*(f"written: {path}" for path in outcome.files))
