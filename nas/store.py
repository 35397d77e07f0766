"""The study's storage: Optuna's RDB storage with heartbeats (a SQLite file on one machine,
PostgreSQL across machines), the lock every worker takes to count-then-write, failing the trials
of dead workers, the retraining stages' studies, the trained weights as Optuna artifacts, and
finding, listing and renaming studies. Knows nothing of training. The one module that reaches into
Optuna's private API, each access in one function (`storage_of`, `trial_id`, `_rdb`).
"""

from __future__ import annotations

import fcntl
import os
import socket
import tempfile
import warnings
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import optuna
import sqlalchemy
from optuna.trial import TrialState

from nas import NasError, verdict
from nas.files import folder_name
from nas.workers import alive


class StorageError(NasError, ValueError):
    """A storage that cannot be opened, or a study that is not there or cannot be renamed."""


def default_storage(results_dir: str) -> str:
    """The embedded default: one SQLite file under the results folder (optuna-dashboard opens it)."""
    return f"sqlite:///{Path(results_dir) / 'nas.db'}"


HEARTBEAT_VAR = "NAS_HEARTBEAT_SECONDS"  # the workers' heartbeat; a silent worker's trial fails after 4x


with warnings.catch_warnings():
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats are experimental
    RETRY = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2)  # a failed trial is re-queued, twice at most


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage with heartbeats: a trial whose worker died (on any machine) is failed
    once its heartbeat is 4 intervals old, and re-queued by the retry callback (at most twice).
    SQLite file by default; PostgreSQL for workers on several machines."""
    beat = heartbeat_seconds()
    sqlite = url.startswith("sqlite")
    # SQLite: the driver's own transaction handling off (isolation_level None), see below
    kwargs = {"connect_args": {"timeout": 60, "isolation_level": None}} if sqlite else {"pool_pre_ping": True}
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats are experimental
            storage = optuna.storages.RDBStorage(
                url,
                engine_kwargs=kwargs,
                heartbeat_interval=beat,
                grace_period=4 * beat,
                heartbeat_stale_trial_callback=RETRY,
            )
    except Exception as e:  # malformed URL, missing driver, unreachable server
        raise StorageError(f"cannot open storage {mask(url)}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    if sqlite:
        sqlalchemy.event.listen(storage.engine, "begin", _begin_immediate)
    return storage


def heartbeat_seconds() -> int:
    text = os.environ.get(HEARTBEAT_VAR, "30")
    if not text.isdigit() or int(text) < 1:
        raise StorageError(f"${HEARTBEAT_VAR} must be a whole number of seconds >= 1, got {text!r}")
    return int(text)


def _begin_immediate(connection) -> None:
    """Optuna pops a queued trial with read-check-write under SELECT ... FOR UPDATE, which SQLite
    ignores: two workers could both pop the same queued trial (a baseline, a confirmation unit)
    and train it twice. BEGIN IMMEDIATE takes SQLite's write lock at the start of every
    transaction, so the check and the write are atomic (tests/test_search.py pops concurrently).

    Not on a sqlite3 connection already inside a transaction: an in-memory database's pool
    (SingletonThreadPool) hands its one connection to every engine.connect() of a thread, so
    Optuna's get_current_version (alembic's revision read), called while a session holds a
    transaction, as check_table_schema_compatibility does, begins on a connection already begun."""
    if not connection.connection.dbapi_connection.in_transaction:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def mask(url: str) -> str:
    """The URL with any password replaced by ***."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        if ":" in creds:
            return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url


@dataclass(frozen=True)
class Stage:
    """A stage that retrains a search's configurations (nas.confirm): its runs are the trials of
    the study "<search>-<stage>", its verdicts the search study's attribute `record`."""

    record: str  # the search study's user attribute holding the stage's verdicts
    runs: str  # what its runs are called in messages
    title: str  # what the progress calls the stage
    evaluated_on: str  # where each epoch is judged


STAGES = {
    "confirm": Stage("confirmation", "confirmation", "confirmation", "test set"),
    "select": Stage("selection", "selection", "selection on validation", "validation split"),
    "fresh": Stage("fresh_seeds", "fresh-seed", "fresh seeds", "test set"),
}


def confirmation_name(name: str, stage: str = "confirm") -> str:
    """The study of search study `name`'s retraining stage (nas.confirm's units), in the same storage."""
    return f"{name}-{stage}"


def with_confirmation(names: list[str], name: str, url: str) -> list[str]:
    """`name` and its retraining studies (`<name>-confirm`, `-select`, `-fresh`), those of them among
    `names` (the studies in storage `url`); an unknown `name` is a StorageError listing those there are."""
    if name not in names:
        raise StorageError(f"no study {name!r} in {mask(url)}; studies: {', '.join(names) or 'none'}")
    return [n for n in (name, *(confirmation_name(name, stage) for stage in STAGES)) if n in names]


def load_study(url: str, name: str) -> optuna.Study:
    """An existing study; an unknown one is a StorageError listing those there are."""
    storage = open_storage(url)
    with_confirmation(optuna.get_all_study_names(storage), name, url)
    return optuna.load_study(study_name=name, storage=storage)


def rename_plan(url: str, old: str, new: str) -> list[tuple[str, str]]:
    """The (old, new) names of a study and its confirmation study, checked: the old ones exist and
    are idle, the new ones are free. Writes nothing."""
    storage = open_storage(url)
    names = optuna.get_all_study_names(storage)
    pairs = [(o, new + o[len(old) :]) for o in with_confirmation(names, old, url)]
    taken = [n for _, n in pairs if n in names]
    if taken:
        raise StorageError(f"study {taken[0]!r} already exists in {mask(url)}; choose another name")
    for o, _ in pairs:
        running = optuna.load_study(study_name=o, storage=storage).get_trials(states=(TrialState.RUNNING,))
        if running:
            raise StorageError(f"study {o!r} has {len(running)} running trial(s): stop its workers first")
    return pairs


def rename_study(url: str, pairs: list[tuple[str, str]]) -> None:
    """Rename studies in one storage (pairs from rename_plan): each copied whole (attributes,
    trials with their numbers and artifact ids), then the old ones deleted. A copy that fails
    half-way is removed, so either the new names hold whole studies or nothing changed."""
    storage = open_storage(url)
    try:
        for o, n in pairs:
            optuna.copy_study(from_study_name=o, from_storage=storage, to_storage=storage, to_study_name=n)
    except BaseException:
        made = set(optuna.get_all_study_names(storage))
        for _, n in pairs:
            if n in made:
                optuna.delete_study(study_name=n, storage=storage)
        raise
    for o, _ in pairs:
        optuna.delete_study(study_name=o, storage=storage)


# --------------------------------------------------------------------------- Optuna's private API, one access each


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage a study was opened on (Optuna keeps no public handle to it)."""
    return study._storage


def trial_id(trial: optuna.trial.FrozenTrial) -> int:
    """A trial's id in its storage, which the storage's own methods take (not its number)."""
    return trial._trial_id


def _rdb(storage) -> optuna.storages.RDBStorage:
    """The RDB storage under Optuna's caching wrapper."""
    return storage if isinstance(storage, optuna.storages.RDBStorage) else storage._backend


def load_stage(study: optuna.Study, stage: str = "confirm") -> optuna.Study:
    """The study of `study`'s retraining stage, in the same storage (it must exist)."""
    return optuna.load_study(study_name=confirmation_name(study.study_name, stage), storage=storage_of(study))


@contextmanager
def study_lock(study: optuna.Study, url: str, folder: str):
    """Count-then-write, atomically across every worker of `study` (claiming a training slot,
    queueing confirmation units): on PostgreSQL under a transaction-scoped advisory lock (workers
    on any machine; the server releases it if a worker dies), otherwise under a lock file in
    `folder` (one machine: the only way to share a SQLite file)."""
    if url.startswith("postgresql"):
        with _rdb(storage_of(study)).engine.begin() as connection:
            key = zlib.crc32(f"nas {study.study_name}".encode())
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({key})")
            yield
        return
    path = Path(folder) / f".{study.study_name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def fail_dead_local_trials(study: optuna.Study) -> list[int]:
    """RUNNING trials started on this machine by a process that no longer exists (killed):
    fail them now, not after the heartbeat's grace period, and re-queue them."""
    host, failed = socket.gethostname(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("owner_trial", t.number) != t.number:
            continue  # a retry just popped: host and pid are its crashed original's until mark_owner
        if t.user_attrs.get("host") == host and pid and not alive(pid):
            storage = storage_of(study)
            try:  # the storage changes a RUNNING trial's state for one caller only
                storage.set_trial_state_values(trial_id(t), TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another process (or the heartbeat) failed and re-queued it first
            RETRY(study, storage.get_trial(trial_id(t)))
            failed.append(t.number)
    return failed


def mark_owner(trial: optuna.Trial) -> None:
    """Host and process of the worker running `trial`: a later run on this host fails it at once
    if that process is gone (fail_dead_local_trials), instead of waiting for the heartbeat."""
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())
    trial.set_user_attr("owner_trial", trial.number)  # Optuna's retry copies these: the copy is not the owner


def is_trained(trial: optuna.trial.FrozenTrial) -> bool:
    return bool(trial.user_attrs.get("trained")) and trial.state in (
        TrialState.COMPLETE,
        TrialState.PRUNED,
        TrialState.RUNNING,
    )


def counts(study: optuna.Study) -> dict:
    """How many trials a search study holds, by kind: trained (finished), running, infeasible..."""
    trials = study.get_trials(deepcopy=False)
    infeasible = sum(1 for t in trials if t.user_attrs.get("infeasible"))
    return {
        "trained": sum(1 for t in trials if is_trained(t) and t.state != TrialState.RUNNING),
        "running": sum(1 for t in trials if is_trained(t) and t.state == TrialState.RUNNING),
        "completed": sum(1 for t in trials if t.state == TrialState.COMPLETE),
        "pruned": sum(1 for t in trials if t.state == TrialState.PRUNED and t.user_attrs.get("trained")),
        "infeasible": infeasible,
        "failed": sum(1 for t in trials if t.state == TrialState.FAIL),
        "proposed": sum(1 for t in trials if "params" in t.user_attrs),
    }


# --------------------------------------------------------------------------- trained weights


def artifacts_folder(results_dir: str | Path) -> str:
    """Where a results folder keeps its artifacts (optuna-dashboard's --artifact-dir)."""
    return str(Path(results_dir) / "artifacts")


def artifact_store(folder: str) -> optuna.artifacts.FileSystemArtifactStore:
    """The folder of a results directory's artifacts: trained weights and report files."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    return optuna.artifacts.FileSystemArtifactStore(folder)


class WeightsError(NasError, ValueError):
    """Stored weights that cannot be read; the message says why."""


def save_weights(trial: optuna.Trial, model, folder: str) -> None:
    """A run's final state_dict (a few tens of kB) as an Optuna artifact of its trial; its id is
    kept in the `weights` attribute, so the report and the export never train again."""
    import torch  # the storage itself never needs it: only here, where weights are written

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "weights.pt"
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
        artifact_id = optuna.artifacts.upload_artifact(
            artifact_store=artifact_store(folder), file_path=str(path), study_or_trial=trial
        )
    trial.set_user_attr("weights", artifact_id)


def load_weights(trial: optuna.trial.FrozenTrial, folder: str) -> dict:
    """The state_dict a retraining run stored (loaded with weights_only=True: no pickle code)."""
    import torch

    artifact_id = trial.user_attrs.get("weights")
    if artifact_id is None:
        raise WeightsError(f"confirmation run {trial.number} has no stored weights (confirmed by an older nas?)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "weights.pt"
        try:
            optuna.artifacts.download_artifact(
                artifact_store=artifact_store(folder), file_path=str(path), artifact_id=artifact_id
            )
        except Exception as e:
            raise WeightsError(
                f"cannot read the weights of confirmation run {trial.number} from {folder}: {e}"
            ) from None
        return torch.load(path, weights_only=True, map_location="cpu")


# --------------------------------------------------------------------------- nas studies


def open_existing(url: str) -> optuna.storages.RDBStorage:
    """The storage at `url`, which must exist: looking at a SQLite file must not create it."""
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).exists():
        raise StorageError(f"no storage at {url}; run `nas search` first or pass --storage")
    return open_storage(url)


@dataclass(frozen=True)
class StudyRow:
    """A search study as `nas studies` lists it."""

    name: str
    budget: int | None
    space: str | None
    trials: int  # every trial, infeasible proposals included
    trained: int
    best_value: float | None
    best_params: int | None
    pick: object | None  # nas.verdict.Verdict: the confirmed configuration best on validation
    hours: float  # wall hours in which one of its trials was training, retraining stages included


def study_rows(url: str) -> list[StudyRow]:
    """The search studies of a storage (confirmations are shown on their search's row)."""
    storage = open_existing(url)
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=True)
    names = [x.study_name for x in summaries]
    confirmations = {confirmation_name(x.study_name, stage) for x in summaries for stage in STAGES}
    rows = []
    for x in summaries:
        if x.study_name in confirmations:
            continue
        ident, best = x.user_attrs.get("identity", {}), x.best_trial
        study = optuna.load_study(study_name=x.study_name, storage=storage)
        picks = [v for v in verdict.stored(study) if v.mean is not None][:1]
        stages = [storage.get_study_id_from_name(n) for n in with_confirmation(names, x.study_name, url)]
        rows.append(
            StudyRow(
                name=x.study_name,
                budget=ident.get("budget"),
                space=ident.get("space"),
                trials=x.n_trials,
                trained=counts(study)["trained"],
                best_value=best.value if best else None,
                best_params=best.user_attrs.get("params") if best else None,
                pick=picks[0] if picks else None,
                hours=training_hours(t for i in stages for t in storage.get_all_trials(i, deepcopy=False)),
            )
        )
    return rows


def training_hours(trials) -> float:
    """Wall hours covered by at least one finished trial's start-to-end interval (infeasible proposals,
    which train nothing, left out): with several workers, the time the study kept the machine busy,
    not the sum of its trials."""
    spans = sorted(
        (t.datetime_start, t.datetime_complete)
        for t in trials
        if t.datetime_start and t.datetime_complete and not t.user_attrs.get("infeasible")
    )
    total, end = 0.0, None
    for start, stop in spans:
        if end is None or start > end:
            total, end = total + (stop - start).total_seconds(), stop
        elif stop > end:
            total, end = total + (stop - end).total_seconds(), stop
    return total / 3600


def delete_study(url: str, name: str) -> list[str]:
    """Delete a search study and its confirmation (they go together); returns their names."""
    storage = open_existing(url)
    doomed = with_confirmation(optuna.get_all_study_names(storage), name, url)
    for study in doomed:
        optuna.delete_study(study_name=study, storage=storage)
    return doomed


def rename(url: str, old: str, new: str, results_dir: Path) -> list[str]:
    """Rename a study with its confirmation, and move its results folder; returns what was done."""
    for name in (old, new):  # both name a folder that moves
        folder_name(name, "--rename")
    open_existing(url)
    pairs = rename_plan(url, old, new)
    folder, target = results_dir / old, results_dir / new
    if folder.exists() and target.exists():
        raise StorageError(f"{target} already exists; move it away or choose another name")
    rename_study(url, pairs)
    done = [f"renamed study {o!r} to {n!r} in {mask(url)}" for o, n in pairs]
    if folder.exists():
        folder.rename(target)
        done.append(f"moved {folder} to {target} (`nas report --study {new}` rewrites it under the new name)")
    return done
