"""The README's promises: CI runs its test command verbatim, its numbers (and those of docs/results.md)
are the committed runs' in results/evidence/, the commands' default results folder is ignored by
git, and the links of the README and docs/ lead to files that exist."""

import json
import re
import shutil
import subprocess

import optuna
import pytest
from conftest import REPO

EVIDENCE = REPO / "results" / "evidence"  # committed; a user's own runs write to results/ (ignored)


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = re.search(r"## Set up and run\n.*?```bash\n(.*?)```", text, re.S).group(1)
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_readme_has_two_commands_and_ci_runs_the_test_one():
    main_job, tests = readme_commands()
    assert "nas search --budget 8000 --trials 20" in main_job  # the short real search
    assert "pytest" in tests
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert tests in ci


def test_readme_replay_numbers_come_from_the_committed_run():
    text = (REPO / "docs" / "results.md").read_text()
    folder = re.search(r"\((?:\.\./)?(results/evidence/baselines/baseline-6/[0-9TZ]+)/?\)", text).group(1)
    record = json.loads((REPO / folder / "run.json").read_text())
    assert record["seeds"] == [0, 1] and record["epochs"] == 15 and record.get("train_limit") is None
    for run in record["runs"]:
        v = run["verdict"]
        cells = [
            f"seed {v['seed']}",
            f"{record['params']:,}",
            *(f"{v[k]:.2f}" for k in ("best", "final", "min_last_k")),
        ]
        row = "| " + " | ".join(cells) + " |"
        assert row in text


def test_readme_single_seed_baseline_rows_come_from_the_committed_runs():
    from nas import spec

    text = (REPO / "docs" / "results.md").read_text()
    rows = re.findall(
        r"^\| `(baseline-[\w-]+)` \| ([\d,]+) \| ([\d.]+) \(.*?\) \| ([\d.]+) \(.*?\) \| ([\d.]+) \|$", text, re.M
    )
    assert len(rows) == 4
    for name, params, train, best, final in rows:
        (run,) = (EVIDENCE / "baselines" / name).glob("*/run.json")  # one committed run per baseline
        v = json.loads(run.read_text())["runs"][0]["verdict"]
        assert int(params.replace(",", "")) == spec.param_count(spec.load_baseline(name))
        assert (train, best, final) == (f"{v['best_train']:.2f}", f"{v['best']:.2f}", f"{v['final']:.2f}")


def test_readme_commands_write_only_paths_git_ignores():
    # every command writes under its --results-dir, by default results/: ignored, but for the evidence
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    written = [
        "results/nas.db",
        "results/default-b8000/leaderboard.csv",
        "results/artifacts/x",
        "results/baselines/baseline-6/x/run.json",
        "results/runs/x/run.json",
        "results/bench/x-throughput.csv",
    ]
    for path in written:
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO).returncode == 0, path
    for path in ("results/evidence/nas.db", "results/evidence/cpu-b8000/summary.md"):
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO).returncode == 1, path
    assert "--results-dir results/evidence" in (REPO / "README.md").read_text()  # how to open the evidence


def test_readme_and_docs_links_lead_to_files_that_exist():
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    links = 0
    for page in pages:
        for target in re.findall(r"\]\(([^)#]+?)\)", page.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            links += 1
            path = (page.parent / target).resolve()
            assert path.is_relative_to(REPO), f"{page.name}: {target} is outside the clone"
            assert path.exists(), f"{page.name}: {target}"
            parts = path.relative_to(REPO).parts
            # the committed evidence, never what a user's own runs write to results/
            assert parts[:1] != ("results",) or parts[:2] == ("results", "evidence"), f"{page.name}: {target}"
    assert links > 20


def test_readme_results_table_comes_from_the_stored_confirmations():
    # each search row of the Results table, cell for cell, from the verdicts stored on its study
    text = (REPO / "README.md").read_text()
    studies = {
        "cpu-b8000": (EVIDENCE / "nas.db", "cpu-b8000"),
        "GPU search": (EVIDENCE / "gpu" / "search-200-trials.db", "default-b8000"),
    }
    rows = 0
    for label, (db, name) in studies.items():
        record = optuna.load_study(study_name=name, storage=f"sqlite:///{db}").user_attrs["confirmation"]
        for v in record["verdicts"]:
            finals = [s["final"] for s in v["per_seed"]]
            row = results_row(text, rf"`?{label}`? trial {v['trial']}\b", v, finals)
            rows += row is not None
    assert rows == 4


def results_row(text: str, label: str, v, finals: list[float]) -> list[str] | None:
    """The cells of the Results table's row whose first cell starts with `label` (None when there is
    none), checked against a verdict's params, MACs, finals, mean ± std and consistency."""
    row = re.search(rf"^\| {label}.*$", text, re.M)
    if row is None:
        return None
    cells = [c.strip() for c in row.group(0).strip("|").split("|")]
    expected = [f"{v['params']:,}", f"{v['macs']:,}", " ".join(f"{f:.2f}" for f in finals)]
    assert cells[1:5] == [*expected, f"{v['mean']:.2f} ± {v['std']:.2f}"], row.group(0)
    assert cells[5].startswith("yes" if v["consistent"] else "no"), row.group(0)
    return cells


def test_results_page_gpu_100_trial_search_comes_from_its_study():
    # docs/results.md's 100-trial GPU search paragraph, counts and the pick's seeds, from the committed study
    from nas import store

    text = " ".join((REPO / "docs" / "results.md").read_text().split())  # line breaks as spaces
    study = optuna.load_study(
        study_name="default-b8000", storage=f"sqlite:///{EVIDENCE / 'gpu' / 'search-100-trials.db'}"
    )
    c = store.counts(study)
    summary = f"{c['trained']} trained trials ({c['proposed']} proposals, {c['infeasible']} infeasible; "
    assert summary + f"{c['completed']} completed, {c['pruned']} pruned)" in text
    pick = study.user_attrs["confirmation"]["verdicts"][0]
    seeds = " ".join(f"{s['final']:.2f}" for s in pick["per_seed"])
    assert f"gave {seeds}% on the test set ({pick['mean']:.2f} ± {pick['std']:.2f};" in text


def test_readme_frontier_rows_come_from_the_committed_frontier():
    # each `frontier-<budget>` row of the Results table, from the frontier's fresh seeds; and
    # `nas replay frontier-<budget>` finds the same network in the committed evidence
    import pandas as pd

    from nas import frontier, spec, store

    folder = EVIDENCE / "frontier"
    summary, fresh = pd.read_csv(folder / "summary.csv"), pd.read_csv(folder / "fresh.csv")
    text = (REPO / "README.md").read_text()
    hours = {r.name: r.hours for r in store.study_rows(f"sqlite:///{EVIDENCE / 'nas.db'}")}  # `nas studies`
    for s in summary.itertuples():
        seeds = fresh[fresh["budget"] == s.budget]
        cells = results_row(text, f"`{s.name}`", s._asdict(), list(seeds["final"]))
        assert cells is not None, s.name
        assert f"trial {s.trial} of `{s.study}` (fresh seeds {seeds['seed'].min()}-{seeds['seed'].max()})" in cells[0]
        assert f"{s.trials} trials" in cells[6]
        assert f"{hours[f'frontier-b{s.budget}']:.1f} h" in cells[6], cells[6]  # the budget's own studies
        config = frontier.winner_config(s.name, REPO / "results")
        assert config is not None and spec.param_count(config) == s.params


def test_the_readme_frontier_command_is_the_one_that_made_the_committed_frontier(monkeypatch):
    from dataclasses import asdict

    from nas import cli, frontier, options, spec

    monkeypatch.chdir(REPO)  # its paths are relative to the repository, where the README runs it
    (line,) = re.findall(r"^nas frontier .*--results-dir results/evidence.*$", (REPO / "README.md").read_text(), re.M)
    args = options.parser().parse_args(line.split()[1:])
    given = cli.settings(frontier.Settings, args, enqueue=spec.expand(args.enqueue))
    committed = json.loads((EVIDENCE / "frontier" / "settings.json").read_text())
    assert json.loads(json.dumps(asdict(given))) == committed


def test_search_page_importances_come_from_the_committed_reports():
    import pandas as pd

    text = (REPO / "docs" / "search.md").read_text()
    studies = ("cpu-b8000", "frontier-b8000", "frontier-b6000", "frontier-b5000")
    rows = re.findall(r"^\| (\w+)" + r" \| ([\d.-]+)" * len(studies) + r" \|$", text, re.M)
    assert len(rows) >= 20
    for column, study in enumerate(studies, start=1):
        shares = pd.read_csv(EVIDENCE / study / "importances.csv").set_index("dimension")["importance"]
        for row in rows:
            expected = f"{shares[row[0]]:.3f}" if row[0] in shares.index else "-"
            assert row[column] == expected, (study, row)
