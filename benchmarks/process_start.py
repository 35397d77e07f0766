"""What a `nas` command costs beyond its training, this tree against an earlier revision, side by
side (runs interleaved, so the machine's noise hits both alike):

1. a bad input (`nas search --budget 0`): the time to the one-line error;
2. `nas studies` on an empty results folder;
3. a tiny search with its confirmation (3 one-epoch trials on 1,500 images, the best confirmed
   with 3 seeds: the tests' shared study), wall time until the command exits.

The earlier revision is checked out with `git worktree` and imported ahead of this one
(PYTHONPATH), in the same virtual environment.

    python benchmarks/process_start.py --base REV [--repeats 3]   # REV: any git revision
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def commands(data_dir: str, scratch: Path) -> dict[str, list[str]]:
    tiny = ["--budget", "8000", "--trials", "3", "--no-baselines", "--study", "one", "--epochs", "1",
            "--train-limit", "1500", "--val-limit", "500", "--device", "cpu", "--top", "1", "--seeds", "3"]  # fmt: skip
    return {
        "bad input (search --budget 0)": ["search", "--budget", "0", "--results-dir", str(scratch / "bad")],
        "nas studies, empty folder": ["studies", "--results-dir", str(scratch / "empty")],
        "tiny search + confirmation": ["search", *tiny, "--data-dir", data_dir, "--results-dir", str(scratch / "tiny")],
    }


def timed(tree: Path, argv: list[str]) -> float:
    """Seconds until the command exits and its output is closed (as a test's subprocess.run sees it)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "nas", *argv], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if r.returncode not in (0, 2):
        raise SystemExit(f"{tree}: nas {' '.join(argv)} failed:\n{r.stderr[-2000:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="the earlier git revision to compare with")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    data_dir = str(Path(os.environ.get("NAS_DATA_DIR", REPO.parent / "shared" / "data")).resolve())
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # `python -m` puts the working directory first on sys.path: not a source tree
        base = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(base), args.base], check=True)
        try:
            trees = {args.base: base, "this tree": REPO}
            for tree in trees.values():  # the right `nas` is imported, or nothing is measured
                code = "import nas, sys; print(nas.__file__)"
                found = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(tree)},
                                       capture_output=True, text=True).stdout.strip()  # fmt: skip
                assert found.startswith(str(tree)), (tree, found)
            times = {(name, cmd): [] for name in trees for cmd in commands(data_dir, Path(tmp))}
            for r in range(args.repeats):
                for name, tree in trees.items():
                    scratch = Path(tmp) / f"{r}-{name.replace(' ', '-')}"
                    for cmd, argv in commands(data_dir, scratch).items():
                        times[name, cmd].append(timed(tree, argv))
                print(f"repeat {r + 1}/{args.repeats} done", flush=True)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)], check=False)
    print(f"\n{'command':34} {args.base + ' (s)':>16} {'this tree (s)':>16} {'ratio':>7}")
    for cmd in commands(data_dir, Path(".")):
        old, new = times[args.base, cmd], times["this tree", cmd]
        cells = [f"{statistics.mean(v):.1f} ± {statistics.stdev(v) if len(v) > 1 else 0:.1f}" for v in (old, new)]
        print(f"{cmd:34} {cells[0]:>16} {cells[1]:>16} {statistics.mean(old) / statistics.mean(new):>6.2f}x")


if __name__ == "__main__":
    main()
