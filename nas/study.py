"""The study of a search: its settings (`Settings`, what `nas search` is given), what it was
created with (`identity`: resuming with anything else is refused), its sampler and pruner, and
`open_study`, which the search and every one of its worker processes call (nas.search,
nas.objective).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import optuna

import nas
from nas import NasError, space, verdict
from nas.files import RESULTS_DIR
from nas.store import default_storage, open_storage, study_lock


class SearchError(NasError, ValueError):
    """Bad settings or a study that cannot be resumed with them; the message says why."""


@dataclass(frozen=True)
class Settings:
    space: str = "default"  # a space name or a .toml path
    budget: int = 8000  # every trained model has fewer trainable parameters than this
    trials: int = 200  # trained trials (completed + pruned by the pruner)
    timeout: float | None = None  # seconds of wall clock for this run
    storage: str | None = None  # None: sqlite file under results_dir
    study: str | None = None  # None: "<space>-b<budget>"
    sampler: str = "tpe"  # "tpe" | "random"
    pruner: str = "hyperband"  # "hyperband" | "median" | "none" (docs/search.md: measured side by side)
    seed: int = 0  # sampler seed; trial training seed = seed + trial number
    jobs: int = 1  # worker processes on this machine
    baselines: bool = True  # enqueue the reference baselines that fit the space and budget
    enqueue: tuple[str, ...] = ()  # baseline names or config files to train first (nas.spec's schema)
    device: str = "auto"
    data_dir: str | None = None
    download: bool = True  # fetch MNIST when it is not in data_dir
    results_dir: str = RESULTS_DIR
    train_limit: int | None = None  # keep the first N training images (quick runs)
    val_limit: int | None = None  # keep the first N validation images
    epochs: int | None = None  # override the space's epochs (quick runs)
    confirm: bool = True  # run the confirmation (nas.confirm) after the search
    top: int = 3  # configurations to confirm
    seeds: int = 5  # seeds per confirmed configuration
    worker: int = 0  # index of this worker process: its sampler seed is seed + 7919 * worker

    @property
    def study_name(self) -> str:
        """Default "<space>-b<budget>", plus the quick-run overrides: a quick search and the full
        one never land in one study."""
        if self.study is not None:  # "" too, which nas.search.check refuses rather than replace by the default
            return self.study
        quick = {"e": self.epochs, "t": self.train_limit, "v": self.val_limit}
        return f"{Path(self.space).stem}-b{self.budget}" + "".join(f"-{k}{v}" for k, v in quick.items() if v)

    @property
    def storage_url(self) -> str:
        return self.storage or default_storage(self.results_dir)


# --------------------------------------------------------------------------- the study


def identity(settings: Settings, sp: space.Space) -> dict:
    """What the study was created with; resuming with anything else is refused."""
    return {
        "space": sp.name,
        "space_sha256": sp.sha256,
        "budget": settings.budget,
        "epochs": settings.epochs or sp.epochs,
        "split": "train 50000 / val 10000, split seed 0",
        "objective": f"worst validation accuracy of the last {verdict.LAST_K} epochs",
        "train_limit": settings.train_limit,
        "val_limit": settings.val_limit,
    }


def make_sampler(settings: Settings) -> optuna.samplers.BaseSampler:
    """Seeded per worker: workers with one seed would propose the same points during TPE's
    random start-up trials."""
    seed = settings.seed + 7919 * settings.worker
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # multivariate + group: the space is conditional (widths per conv, transition width);
    # constant_liar: parallel workers do not all propose the same point
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # group decomposition
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)


def make_pruner(settings: Settings) -> optuna.pruners.BasePruner:
    """Hyperband by default: on the same small search it trained the fewest epochs and found the
    best network of the three (docs/search.md)."""
    epochs = settings.epochs or space.load(settings.space).epochs
    if settings.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=3)
    if settings.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)


def open_study(settings: Settings, sp: space.Space) -> optuna.Study:
    """Create the study, or load it and check it was made with the same space and budget."""
    storage = open_storage(settings.storage_url)
    study = optuna.create_study(
        study_name=settings.study_name,
        storage=storage,
        direction="maximize",
        sampler=make_sampler(settings),
        pruner=make_pruner(settings),
        load_if_exists=True,
    )
    want = identity(settings, sp)
    with study_lock(study, settings.storage_url, settings.results_dir):  # workers on other machines may start now too
        have = study.user_attrs.get("identity")
        if have is None:
            study.set_user_attr("identity", want)
            study.set_user_attr("nas_version", nas.__version__)
            made = {k: v for k, v in asdict(settings).items() if k not in ("storage", "worker", "download")}
            study.set_user_attr("settings", made)
    if have is not None and have != want:
        diff = ", ".join(
            f"{k}: study has {have.get(k)!r}, command gives {want[k]!r}" for k in want if have.get(k) != want[k]
        )
        raise SearchError(
            f"study {settings.study_name!r} was created with other settings ({diff}); use another --study"
        )
    return study
