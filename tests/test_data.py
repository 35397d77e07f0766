"""MNIST from the real files: verification, splits, batching and rotation."""

import math
import shutil

import pytest
import torch

from nas import data

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]  # ../shared/data/README.md
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_load_real_mnist(mnist):
    assert mnist["train_x"].shape == (60000, 28, 28) and mnist["train_x"].dtype == torch.uint8
    assert mnist["test_x"].shape == (10000, 28, 28)
    assert torch.bincount(mnist["train_y"]).tolist() == TRAIN_COUNTS
    assert torch.bincount(mnist["test_y"]).tolist() == TEST_COUNTS


def test_the_files_read_as_torchvision_reads_them(mnist, data_dir):
    from torchvision.datasets import MNIST

    train, test = MNIST(str(data_dir), train=True), MNIST(str(data_dir), train=False)
    expected = {"train_x": train.data, "train_y": train.targets, "test_x": test.data, "test_y": test.targets}
    assert all(mnist[k].dtype == v.dtype and torch.equal(mnist[k], v) for k, v in expected.items())


def test_validation_split_is_held_out_and_fixed(mnist):
    a = data.make_split(mnist, "val")
    b = data.make_split(mnist, "val")
    assert (len(a.train_y), len(a.eval_y), a.eval_name) == (50000, 10000, "val")
    assert torch.equal(a.eval_x, b.eval_x) and torch.equal(a.train_y, b.train_y)
    # disjoint: no validation image is a training image (compare raw bytes of every image)
    rows = {bytes(x.numpy()) for x in (a.train_x * 1000).round().to(torch.int32)}
    assert not any(bytes(x.numpy()) in rows for x in (a.eval_x[:500] * 1000).round().to(torch.int32))
    other = data.make_split(mnist, "val", split_seed=1)
    assert not torch.equal(a.eval_y, other.eval_y)


def test_test_split_normalised(mnist):
    s = data.make_split(mnist, "test", train_limit=1000, eval_limit=300)
    assert s.train_x.shape == (1000, 1, 28, 28) and s.eval_x.shape == (300, 1, 28, 28)
    full = data.make_split(mnist, "test")
    assert abs(full.train_x.mean().item()) < 1e-3 and abs(full.train_x.std().item() - 1) < 1e-3


def test_batches_cover_every_index_once():
    gen = torch.Generator().manual_seed(0)
    parts = data.batches(1000, 128, gen)
    assert [len(p) for p in parts] == [128] * 7 + [104]
    assert torch.equal(torch.cat(parts).sort().values, torch.arange(1000))


def test_rotation_by_90_degrees_is_rot90_and_keeps_the_background_black():
    x = torch.randn(3, 1, 28, 28)
    r = data.rotate_by(x, torch.tensor([math.pi / 2, 0.0, -math.pi / 2]))
    assert torch.allclose(r[0], torch.rot90(x[0], 1, (1, 2)), atol=1e-4)
    assert torch.allclose(r[1], x[1], atol=1e-5)
    assert torch.allclose(r[2], torch.rot90(x[2], -1, (1, 2)), atol=1e-4)
    black = torch.full((2, 1, 28, 28), data.BACKGROUND)
    rotated = data.rotate(black, 15, torch.Generator().manual_seed(0))
    assert torch.allclose(rotated, black, atol=1e-5)


def test_random_rotation_angles_stay_within_degrees():
    """A single bright pixel at radius r moves along its circle by at most the angle."""
    x = torch.full((500, 1, 28, 28), data.BACKGROUND)
    x[:, 0, 14, 26] = 5.0  # 12 pixels right of the centre (13.5, 13.5)... roughly
    out = data.rotate(x, 10, torch.Generator().manual_seed(0))
    rows = (out[:, 0] - data.BACKGROUND).abs().sum(2).argmax(1)  # brightest row per image
    assert rows.min() >= 14 - 3 and rows.max() <= 14 + 3  # 12.5 * sin(10 deg) ~ 2.2 pixels
    assert rows.unique().numel() > 1  # the angles do vary


def copy_raw(data_dir, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in data.FILES:
        shutil.copy(data_dir / "MNIST" / "raw" / name, raw / name)
    return raw


def test_missing_files_say_which_and_where(tmp_path):
    with pytest.raises(data.DataError) as e:
        data.load_mnist(tmp_path, download=False)
    msg = str(e.value)
    assert "train-images-idx3-ubyte" in msg and "are missing" in msg and str(tmp_path / "MNIST" / "raw") in msg
    assert "--data-dir" in msg and "NAS_DATA_DIR" in msg


def test_truncated_file_fails_its_checksum(data_dir, tmp_path):
    raw = copy_raw(data_dir, tmp_path)
    with open(raw / "t10k-labels-idx1-ubyte", "r+b") as f:
        f.truncate(5000)
    with pytest.raises(data.DataError, match="t10k-labels-idx1-ubyte fail their md5 check"):
        data.load_mnist(tmp_path, download=False)


def test_data_dir_option_then_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("NAS_DATA_DIR", str(tmp_path / "env"))
    assert str(data.data_dir("/explicit")) == "/explicit"
    assert data.data_dir(None) == tmp_path / "env"
    monkeypatch.delenv("NAS_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data.data_dir(None) == tmp_path / "cache" / "nas" / "data"
