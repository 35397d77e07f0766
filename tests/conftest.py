"""Shared fixtures: the real MNIST files (../shared/data beside the repo, or $NAS_DATA_DIR)."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if os.environ.get("NAS_DATA_DIR"):  # as the README sets it, relative: tests change folders, so make it absolute
    os.environ["NAS_DATA_DIR"] = str(Path(os.environ["NAS_DATA_DIR"]).expanduser().resolve())


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if os.environ.get("NAS_DATA_DIR"):
        return Path(os.environ["NAS_DATA_DIR"])
    shared = REPO.parent / "shared" / "data"
    if (shared / "MNIST" / "raw").is_dir():
        return shared
    from nas.data import data_dir as default

    return default()  # a download location, for users with a network


@pytest.fixture(scope="session")
def mnist(data_dir):
    from nas.data import load_mnist

    return load_mnist(data_dir)


def benchmark(name: str):
    """A script of benchmarks/ (not a package) imported as a module, for tests of its functions."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


NAS = str(Path(__import__("sys").executable).parent / "nas")


def run_nas(*argv: str):
    import subprocess

    return subprocess.run([NAS, *map(str, argv)], capture_output=True, text=True)


@pytest.fixture(scope="session")
def confirmed(tmp_path_factory, data_dir) -> Path:
    """A results folder with a real one-epoch study "one": 3 trained trials on 1,500 images, the
    best confirmed with 3 seeds (weights stored as artifacts). Shared by export, report and
    dashboard tests."""
    results = tmp_path_factory.mktemp("confirmed")
    quick = ["--epochs", "1", "--train-limit", "1500", "--val-limit", "500", "--device", "cpu"]
    r = run_nas("search", "--budget", "8000", "--trials", "3", "--no-baselines", "--study", "one", *quick,
                "--top", "1", "--seeds", "3", "--data-dir", data_dir, "--results-dir", results)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return results


@pytest.fixture(scope="session")
def reported(confirmed, tmp_path_factory, data_dir) -> Path:
    """A copy of `confirmed`, after `nas report --study one` (figures and note attached to the study).
    A copy: the report writes into its results folder, and `confirmed` stays as its search and
    confirmation left it for the tests that use it, whether this fixture was made before them or not."""
    import shutil

    results = tmp_path_factory.mktemp("reported") / "results"
    shutil.copytree(confirmed, results)
    r = run_nas("report", "--study", "one", "--results-dir", results, "--data-dir", data_dir)
    assert r.returncode == 0, r.stderr
    return results
