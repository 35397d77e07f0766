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


def section(text: str, heading: str) -> str:
    """The text under a markdown heading, up to the next heading of the same level or higher."""
    level = heading.split(" ")[0]
    body = text.index(heading + "\n") + len(heading) + 1
    end = re.search(rf"^#{{1,{len(level)}}} ", text[body:], re.M)
    return text[body : body + end.start()] if end else text[body:]


def test_results_page_search_tables_come_from_the_stored_confirmations():
    # each confirmed configuration of the CPU and GPU searches, cell for cell, from the verdicts on its study
    text = (REPO / "docs" / "results.md").read_text()
    studies = {
        "## The full search on the CPU (`cpu-b8000`)": (EVIDENCE / "nas.db", "cpu-b8000"),
        "## The full search on one GPU, 200 trials": (EVIDENCE / "gpu" / "search-200-trials.db", "default-b8000"),
    }
    rows = 0
    for heading, (db, name) in studies.items():
        record = optuna.load_study(study_name=name, storage=f"sqlite:///{db}").user_attrs["confirmation"]
        table = section(text, heading)
        for v in record["verdicts"]:
            row = re.search(rf"^\| trial {v['trial']}\b.*$", table, re.M)
            assert row is not None, (name, v["trial"])
            cells = [c.strip().strip("*") for c in row.group(0).strip("|").split("|")]
            finals = " ".join(f"{s['final']:.2f}" for s in v["per_seed"])
            mins = " ".join(f"{s['min_last_k']:.2f}" for s in v["per_seed"])
            assert cells[1:3] == [f"{v['params']:,}", f"{v['macs']:,}"], row.group(0)
            assert finals in cells and mins in cells and f"{v['mean']:.2f} ± {v['std']:.2f}" in cells, row.group(0)
            assert cells[-1].startswith("yes" if v["consistent"] else "no"), row.group(0)
            rows += 1
    assert rows == 6


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


def answer_rows() -> list[list[str]]:
    """The cells of each row of the README's answer table (under "## What it found")."""
    table = section((REPO / "README.md").read_text(), "## What it found")
    lines = [ln for ln in table.splitlines() if ln.startswith("| ") and not ln.startswith("| budget")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]


def test_the_answer_table_sits_on_the_readme_first_screen():
    lines = (REPO / "README.md").read_text().splitlines()
    first = "\n".join(lines[:40])
    assert "## Set up and run" in first and "pip install -e '.[test]'" in first
    assert answer_rows() and all(f"| {row[0]} |" in first for row in answer_rows())
    assert len(lines) < 200


@pytest.mark.slow
def test_readme_answer_table_comes_from_the_frontier_summary():
    # each budget row, from the summary.csv and fresh.csv of the frontier it names; one network that
    # answers several budgets is one row; the hours are `nas studies`' for each budget's studies;
    # and `nas replay <name>-<budget>` finds the same network in the committed evidence
    import pandas as pd

    from nas import spec, store

    rows = [r for r in answer_rows() if r[1].startswith("trial ")]
    assert rows
    shown, frontiers = [], set()
    for cells in rows:
        trial, study = re.fullmatch(r"trial (\d+) of `([\w-]+)`", cells[1]).groups()
        name = study.rsplit("-b", 1)[0]  # the frontier's --name: its studies are <name>-b<budget>
        folder = EVIDENCE / name
        summary, fresh = pd.read_csv(folder / "summary.csv"), pd.read_csv(folder / "fresh.csv")
        mine = summary[(summary["study"] == study) & (summary["trial"] == int(trial))]
        assert cells[0] == " and ".join(f"{b:,}" for b in mine["budget"]), cells
        s = mine.iloc[0]
        seeds = fresh[fresh["budget"] == s.budget]
        assert cells[2:4] == [f"{s.params:,}", f"{s.macs:,}"], cells
        assert cells[4] == f"{s['mean']:.2f} ± {s['std']:.2f}", cells
        held = int(seeds["consistent"].sum())
        assert cells[5] == f"{held} of {len(seeds)}" and (held == len(seeds)) == bool(s.consistent), cells
        db = folder / "nas.db" if (folder / "nas.db").exists() else EVIDENCE / "nas.db"
        hours = {r.name: r.hours for r in store.study_rows(f"sqlite:///{db}")}
        assert cells[6] == " + ".join(f"{hours[f'{name}-b{b}']:.1f}" for b in mine["budget"]), cells
        for b in mine["budget"]:
            config = spec.load(folder / f"{name}-{b}.json")  # what `nas replay <name>-<budget>` replays
            assert spec.param_count(config) == s.params
        shown += [(name, b) for b in mine["budget"]]
        frontiers.add(name)
    expected = [(n, b) for n in frontiers for b in pd.read_csv(EVIDENCE / n / "summary.csv")["budget"]]
    assert sorted(shown) == sorted(expected)  # every budget of the frontier, once


def test_readme_reference_row_is_the_reference_network():
    from nas import spec

    (ref,) = [r for r in answer_rows() if "the reference" in r[0]]
    config = spec.load_baseline("baseline-6")  # the reference network, rebuilt: its layer table and count
    assert ref[2:4] == [f"{spec.param_count(config):,}", f"{spec.macs(config):,}"]
    assert ref[4].startswith(f"{config.reported.test_acc:.2f}")


def test_the_results_page_frontier_command_is_the_one_that_made_the_committed_frontier(monkeypatch):
    from dataclasses import asdict

    from nas import cli, frontier, options, spec

    monkeypatch.chdir(REPO)  # its paths are relative to the repository, where the page runs it
    text = (REPO / "docs" / "results.md").read_text()
    lines = re.findall(r"^nas frontier .*--results-dir results/evidence.*$", text, re.M)
    assert lines
    for line in lines:
        args = options.parser().parse_args(line.split()[1:])
        given = cli.settings(frontier.Settings, args, enqueue=spec.expand(args.enqueue))
        committed = json.loads((EVIDENCE / given.name / "settings.json").read_text())
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


def test_recipes_page_ablation_tables_come_from_their_csvs():
    # each `recipe_ablation.py --table` command on the page, and the table it prints from the committed CSV
    import pandas as pd
    from conftest import benchmark

    ablation = benchmark("recipe_ablation")
    text = (REPO / "docs" / "recipes.md").read_text()
    commands = re.findall(r"^python benchmarks/recipe_ablation\.py --table(?: --out (\S+))?", text, re.M)
    assert len(commands) == 2
    for out in commands:
        csv = REPO / out if out else ablation.OUT  # no --out: the script's default CSV
        printed = ablation.table(pd.read_csv(csv))
        assert printed in text, csv
        assert len(printed.splitlines()) >= 4  # the header, its rule and two rows at least
