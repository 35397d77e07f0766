"""Several workers on one study, one of them killed with SIGKILL mid-trial: the exact number of
trained trials, nothing lost, the killed trial failed and retried, every confirmation unit trained
once. On PostgreSQL (three `nas search` processes, as on three machines; $NAS_TEST_POSTGRES is
the URL of an empty database, `.ci/postgres.sh start` makes one) and on the embedded SQLite
default (`--jobs 2`)."""

import os
import re
import signal
import subprocess
import sys
import time
import uuid

import optuna
import pytest
from conftest import NAS
from optuna.trial import TrialState

from nas import store, workers

pytestmark = pytest.mark.slow  # worker processes, killed and resumed; a PostgreSQL server

PG = os.environ.get("NAS_TEST_POSTGRES")
TRIALS = 12
FAST = ["--epochs", "1", "--train-limit", "1500", "--val-limit", "300", "--device", "cpu", "--no-baselines"]
CONFIRM = ["--top", "2", "--seeds", "2"]


def command(storage: str, study: str, results, data_dir, *extra) -> list[str]:
    return [NAS, "search", "--budget", "8000", "--trials", str(TRIALS), "--storage", storage, "--study", study,
            "--results-dir", str(results), "--data-dir", str(data_dir), *FAST, *CONFIRM, *extra]  # fmt: skip


def start(cmd, env=None, cpu: int | None = None) -> subprocess.Popen:
    """A `nas search` in its own process group: killing the group is losing the machine. `cpu`
    pins it to one CPU of this machine, as if it were a machine of its own (nas then trains with
    one thread: three 2-thread machines on 2 CPUs spin and run 3x slower)."""
    pin = None if cpu is None else lambda: os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[cpu]})
    return subprocess.Popen(cmd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=pin)  # fmt: skip


def stop(procs) -> list[str]:
    """SIGKILL what is left of each `nas search` and its workers (its process group); their output."""
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return [p.communicate(timeout=30)[0] for p in procs]


def fail_with_output(procs, message: str):
    """Fail with `message` and the end of each process's output, after stopping them all."""
    outs = stop(procs)
    tails = (
        f"\n--- `nas search` {i} (exit code {p.returncode}):\n{out[-3000:]}"
        for i, (p, out) in enumerate(zip(procs, outs, strict=True))
    )
    pytest.fail(message + "".join(tails))


def wait_until(condition, what: str, procs, timeout: float = 60) -> None:
    """Poll `condition` until it holds; fail naming `what` after `timeout` seconds, or at once
    when one of `procs` has exited."""
    deadline = time.monotonic() + timeout
    while not condition():
        if any(p.poll() is not None for p in procs):
            fail_with_output(procs, f"a `nas search` exited while waiting for {what}")
        if time.monotonic() > deadline:
            fail_with_output(procs, f"no {what} within {timeout:.0f} s")
        time.sleep(0.2)


def finish(procs, timeout: float) -> list[str]:
    """The output of each process once all have exited, within `timeout` seconds in all."""
    deadline = time.monotonic() + timeout
    try:
        return [p.communicate(timeout=max(1.0, deadline - time.monotonic()))[0] for p in procs]
    except subprocess.TimeoutExpired:
        fail_with_output(procs, f"the `nas search` processes had not all exited after {timeout:.0f} s")


def kill_a_machine_mid_trial(study: optuna.Study, procs) -> list[int]:
    """Once a trial is done and another in its first epoch, SIGKILL the `nas search` running the
    latter and its workers; returns the numbers of the trials they were still training."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            fail_with_output(procs, "a `nas search` exited before the kill")
        trials = study.get_trials(deepcopy=False)
        done = [t for t in trials if t.user_attrs.get("trained") and t.state.is_finished()]
        running = [t for t in trials if t.user_attrs.get("trained") and t.state == TrialState.RUNNING]
        # the newest trial not yet past its epoch: the furthest from its end when the kill lands
        early = [t for t in running if t.user_attrs.get("pid") and not t.intermediate_values]
        if done and early:
            machine = os.getpgid(max(early, key=lambda t: t.datetime_start).user_attrs["pid"])  # its `nas search`
            mine = [t.number for t in running if t.user_attrs.get("pid") and os.getpgid(t.user_attrs["pid"]) == machine]
            os.killpg(machine, signal.SIGKILL)
            # on a loaded machine a trial can end between the read above and the kill: not a killed one
            after = {t.number: t.state for t in study.get_trials(deepcopy=False)}
            caught = [n for n in mine if after[n] == TrialState.RUNNING]
            if not caught:
                fail_with_output(procs, f"trials {mine} ended before the kill landed")
            return caught
        time.sleep(0.2)
    fail_with_output(procs, "no trial was caught in training within 300 s")


def check_study(storage, name: str, killed: list[int]) -> None:
    study = optuna.load_study(study_name=name, storage=storage)
    c = store.counts(study)
    assert c["trained"] == TRIALS and c["running"] == 0, c  # exactly the requested total, across workers
    trials = study.get_trials(deepcopy=False)
    assert killed
    for k in killed:
        assert trials[k].state == TrialState.FAIL  # failed by the heartbeat (or on restart)
        retry = [t for t in trials if t.system_attrs.get("failed_trial") == k]
        assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
        assert retry[0].params == trials[k].params and retry[0].user_attrs["trained"]
    trained = [t for t in trials if t.user_attrs.get("trained")]
    # one epoch each, and no trial is pruned after its last epoch: all complete, top 2 always exist
    assert all(t.state == TrialState.COMPLETE for t in trained if t.number not in killed)
    units = optuna.load_study(study_name=f"{name}-confirm", storage=storage).get_trials(deepcopy=False)
    done = [(t.user_attrs["source_trial"], t.user_attrs["seed"]) for t in units if t.state == TrialState.COMPLETE]
    assert len(done) == 4 and len(set(done)) == 4  # top 2 x 2 seeds, each trained to completion once
    assert all(t.state == TrialState.COMPLETE for t in units)


@pytest.mark.skipif(not PG and not os.environ.get("NAS_REQUIRE_POSTGRES"), reason="no $NAS_TEST_POSTGRES server")
def test_three_machines_share_one_postgres_study_and_survive_a_killed_worker(tmp_path, data_dir):
    assert PG, "$NAS_REQUIRE_POSTGRES is set but $NAS_TEST_POSTGRES is not: start one with .ci/postgres.sh"
    name = f"pg-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, store.HEARTBEAT_VAR: "2"}  # a silent worker's trial is failed after 8 s
    cpus = len(os.sched_getaffinity(0))
    procs = [start(command(PG, name, tmp_path / f"machine{i}", data_dir), env, cpu=i % cpus) for i in range(3)]
    try:
        storage = store.open_storage(PG)
        wait_until(lambda: name in optuna.get_all_study_names(storage), f"study {name!r} in PostgreSQL", procs)
        killed = kill_a_machine_mid_trial(optuna.load_study(study_name=name, storage=storage), procs)
        outs = finish(procs, 600)
    finally:
        stop([p for p in procs if p.returncode is None])
    tails = "\n---\n".join(o[-2000:] for o in outs)
    assert sorted(p.returncode for p in procs) == [-signal.SIGKILL, 0, 0], tails  # the two others finish the study
    assert not any("pg-s3cret" in o or PG.split("@")[0].split(":")[-1] in o for o in outs)  # password never shown
    assert all("postgresql://nas:***@" in o for o in outs)
    check_study(storage, name, killed)


def test_killed_local_two_job_search_resumes_and_retries_the_killed_trial(tmp_path, data_dir):
    """The embedded default storage: SIGKILL `nas search --jobs 2` and its workers mid-trial; the
    same command resumes, fails the dead process's trial at once and retries it; the study is exact."""
    storage = f"sqlite:///{tmp_path}/nas.db"
    cmd = command(storage, "local", tmp_path, data_dir, "--jobs", "2")
    proc = start(cmd)
    try:
        wait_until(lambda: "local" in optuna.get_all_study_names(storage), "study 'local' in SQLite", [proc])
        killed = kill_a_machine_mid_trial(optuna.load_study(study_name="local", storage=storage), [proc])
        finish([proc], 60)
    finally:
        stop([proc] if proc.returncode is None else [])
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    requeued = re.search(r"crashed trials failed and re-queued: \[([\d, ]+)\]", r.stdout)
    assert requeued and set(killed) <= {int(n) for n in requeued.group(1).split(",")}, r.stdout[:600]
    check_study(store.open_storage(storage), "local", killed)


def test_threads_follow_the_cpus_this_process_may_use():
    """A process pinned to one CPU (a cpuset, `taskset`) trains with one thread per worker, however
    many CPUs the machine has."""
    code = (
        "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); from nas import workers; "
        "print(workers.usable_cpus(), workers.worker_threads(1), workers.worker_threads(2))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["1", "1", "1"], r.stderr
    assert workers.usable_cpus() == len(os.sched_getaffinity(0))


def test_jobs_are_bounded_by_the_cpus(monkeypatch):
    """Four worker processes per usable CPU at most: --jobs 5 on 2 CPUs (a committed frontier's) runs."""
    monkeypatch.setattr(workers, "usable_cpus", lambda: 2)
    assert workers.check_jobs(5) == 5 and workers.check_jobs(8) == 8
    with pytest.raises(workers.JobsError, match=r"--jobs 9: .* at most 8 \(4 per usable CPU, 2 here\)"):
        workers.check_jobs(9)


def test_no_more_workers_start_than_units_of_work(monkeypatch):
    """8 jobs and 3 units left: 3 workers, each with the threads of one of 8 (as the first units had)."""
    from types import SimpleNamespace

    from nas.study import Settings

    started = []

    class Process:
        def __init__(self, target, args):
            self.args = args

        def start(self):
            started.append(self.args)

    monkeypatch.setattr(workers, "context", lambda: SimpleNamespace(Process=Process))
    procs = workers.start_workers(print, Settings(), jobs=8, work=3)
    assert len(procs) == len(started) == 3
    assert [settings.worker for _, settings, _, _ in started] == [0, 1, 2]
    assert {threads for _, _, threads, _ in started} == {workers.worker_threads(8)}


def test_a_search_and_a_confirmation_start_a_worker_per_unit_left(confirmed, tmp_path, data_dir, monkeypatch):
    """Study "one" holds 3 trained trials and 3 confirmation units: 5 trials and 5 seeds leave 2 each."""
    import shutil

    from nas import confirm, search

    results = tmp_path / "r"
    shutil.copytree(confirmed, results)
    asked = []
    monkeypatch.setattr(workers, "start_workers", lambda target, settings, jobs, work: asked.append((jobs, work)) or [])
    monkeypatch.setattr(workers, "start_server", lambda: None)
    monkeypatch.setattr(search, "estimate_epoch_seconds", lambda *args: 1.0)
    quick = {"epochs": 1, "train_limit": 1500, "device": "cpu", "data_dir": str(data_dir), "results_dir": str(results)}
    s = search.Settings(study="one", trials=5, jobs=4, val_limit=500, baselines=False, confirm=False, **quick)
    search.run(s)
    confirm.run(confirm.Settings(study="one", storage=s.storage_url, top=1, seeds=5, jobs=4, **quick))
    assert asked == [(4, 2), (4, 2)]
