"""Shared fixtures: the real MNIST files (../shared/data beside the repo, or $NAS_DATA_DIR)."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


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
