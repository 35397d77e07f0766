"""`nas report` and `nas dashboard`: every file a person looks at, and the study served over HTTP."""

import json
import socket
import sqlite3
import subprocess
import time
import urllib.request

import optuna
import pandas as pd
import pytest
from conftest import NAS, REPO, run_nas

pytestmark = pytest.mark.slow  # nas report on real studies; the dashboard's server

FIGURES = [
    "params_vs_accuracy.png",
    "optimization_history.png",
    "param_importances.png",
    "intermediate_values.png",
    "confirmation_curves.png",
    "confusion_matrix.png",
    "misclassified.png",
]
PNG = b"\x89PNG\r\n\x1a\n"
# the committed real study the README shows (its confirmation stored weights, so the report can
# draw the confusion matrix and misclassified digits without training)
COMMITTED = "quick-start"


def check_report(folder, study: optuna.Study, budget: int) -> None:
    for name in FIGURES:
        data = (folder / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, name
    frame = pd.read_csv(folder / "leaderboard.csv")
    assert sorted(frame["trial"]) == [t.number for t in study.trials]  # one row per trial
    trained = frame[frame["state"].isin(["complete", "pruned"])]
    assert len(trained) and (trained["params"] < budget).all()
    summary = (folder / "summary.md").read_text()
    assert "## Top configurations, confirmed on the test set" in summary and "| Layer No. |" in summary
    assert summary.count("| baseline-") == 10  # the reference baselines beside the study's numbers
    weights = pd.read_csv(folder / "importances.csv")  # one row per searched dimension, shares of 1
    searched = {k for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE for k in t.params}
    assert len(weights) and set(weights["dimension"]) <= searched
    assert abs(weights["importance"].sum() - 1) < 0.01 and "## Which dimensions mattered" in summary


def test_report_on_the_committed_real_study(tmp_path, data_dir):
    # a copy of the committed evidence: the report rewrites its results folder
    evidence = REPO / "results" / "evidence"
    with sqlite3.connect(evidence / "nas.db") as src, sqlite3.connect(tmp_path / "nas.db") as dst:
        src.backup(dst)
    subprocess.run(["cp", "-r", evidence / "artifacts", evidence / "baselines", tmp_path], check=True)
    r = run_nas("report", "--study", COMMITTED, "--results-dir", tmp_path, "--data-dir", data_dir)
    assert r.returncode == 0, r.stderr
    study = optuna.load_study(study_name=COMMITTED, storage=f"sqlite:///{tmp_path}/nas.db")
    check_report(tmp_path / COMMITTED, study, 8000)
    for name in FIGURES:  # the committed figures are the ones the tool makes
        assert (REPO / "results" / "evidence" / COMMITTED / name).exists()


def test_report_attaches_figures_and_a_note_once(reported):
    study = optuna.load_study(study_name="one", storage=f"sqlite:///{reported}/nas.db")
    check_report(reported / "one", study, 8000)
    attached = study.user_attrs["report_artifacts"]
    assert set(FIGURES) | {"summary.md"} <= set(attached)
    metas = optuna.artifacts.get_all_artifact_meta(study)
    r = run_nas("report", "--study", "one", "--results-dir", reported)  # nothing changed: nothing uploaded again
    assert r.returncode == 0 and "0 new or changed files" in r.stdout
    assert len(optuna.artifacts.get_all_artifact_meta(study)) == len(metas)


def test_report_rewrites_a_changed_file_over_its_artifact(reported, tmp_path):
    # a report made again after the study moved on: the dashboard still lists each file once
    from nas import report, store

    copy = tmp_path / "results"  # the shared fixture stays as it was
    subprocess.run(["cp", "-r", reported, copy], check=True)
    study = optuna.load_study(study_name="one", storage=f"sqlite:///{copy}/nas.db")
    before = optuna.artifacts.get_all_artifact_meta(study)
    changed = tmp_path / "summary.md"
    changed.write_text("# the study moved on\n")
    assert report.attach(study, [changed], str(copy / "artifacts"), "note") == 1
    after = optuna.artifacts.get_all_artifact_meta(study)
    assert sorted(m.artifact_id for m in after) == sorted(m.artifact_id for m in before)
    artifact_id = study.user_attrs["report_artifacts"]["summary.md"]["artifact_id"]
    with store.artifact_store(str(copy / "artifacts")).open_reader(artifact_id) as f:
        assert f.read() == b"# the study moved on\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def test_dashboard_serves_the_study_its_attributes_and_artifacts(reported, tmp_path):
    port = free_port()
    log, errors = tmp_path / "stdout.txt", tmp_path / "stderr.txt"  # files: a full pipe never blocks it
    with log.open("w") as out, errors.open("w") as err:
        server = subprocess.Popen(
            [NAS, "dashboard", "--study", "one", "--port", str(port), "--results-dir", str(reported)],
            stdout=out,
            stderr=err,
            text=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                studies = json.loads(get(f"{base}/api/studies"))["study_summaries"]
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail(f"the dashboard exited with {server.returncode} before serving:\n{errors.read_text()}")
                if time.monotonic() > deadline:
                    pytest.fail(f"the dashboard did not answer on {base}/api/studies within 60 s")
                time.sleep(0.5)
        (one,) = [s for s in studies if s["study_name"] == "one"]
        detail = json.loads(get(f"{base}/api/studies/{one['study_id']}"))
        trained = [t for t in detail["trials"] if any(a["key"] == "trained" for a in t["user_attrs"])]
        assert len(trained) == 3
        for t in trained:
            attrs = {a["key"]: a["value"] for a in t["user_attrs"]}
            assert int(attrs["params"]) < 8000 and "config" in attrs and "history" in attrs
        assert "Top configurations" in detail["note"]["body"]
        figures = {a["filename"]: a["artifact_id"] for a in detail["artifacts"]}
        assert set(FIGURES) <= set(figures)
        assert get(f"{base}/artifacts/{one['study_id']}/{figures['params_vs_accuracy.png']}").startswith(PNG)
        assert server.poll() is None, "the dashboard stopped on its own"
        # SIGTERM (a service manager, `kill`) stops it as Ctrl-C does (nas turns it into a
        # KeyboardInterrupt, which optuna-dashboard's server takes as its stop): a normal exit, 0
        server.terminate()
        try:
            code = server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("the dashboard did not exit within 30 s of SIGTERM")
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=30)
    stderr = errors.read_text()
    assert code == 0, f"exit code {code}:\n{stderr}"
    assert "Traceback" not in stderr and "Traceback" not in log.read_text(), stderr
    assert f"127.0.0.1:{port}/dashboard/studies/{one['study_id']}" in log.read_text()  # the page it announced


def test_result_files_are_written_whole_with_the_usual_permissions(tmp_path):
    """nas.files.atomic: the file appears complete under its name, nothing else is left beside it,
    and it is readable as the umask allows (a shared results folder), not private to its writer."""
    import os

    from nas.files import atomic

    mask = os.umask(0o022)
    try:
        path = atomic(tmp_path / "sub" / "table.csv", lambda p: p.write_text("a,b\n1,2\n"))
    finally:
        os.umask(mask)
    assert path.read_text() == "a,b\n1,2\n" and os.listdir(tmp_path / "sub") == ["table.csv"]
    assert path.stat().st_mode & 0o777 == 0o644

    def crash(p):
        p.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic(path, crash)
    assert path.read_text() == "a,b\n1,2\n" and os.listdir(tmp_path / "sub") == ["table.csv"]
