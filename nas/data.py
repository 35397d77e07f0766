"""MNIST as tensors on the training device: splits, shuffled index batches, batched rotation.

The images are read once with torchvision, normalised once, and kept on the device; a batch is
an index slice of those tensors, so the hot loop does no per-image Python, PIL or worker work.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from nas import NasError

MEAN, STD = 0.1307, 0.3081  # training-set pixel statistics on [0, 1]
BACKGROUND = (0.0 - MEAN) / STD  # a black pixel after normalisation
ENV_VAR = "NAS_DATA_DIR"
# md5 of the four uncompressed originals, the files torchvision reads from <root>/MNIST/raw/
FILES = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


class DataError(NasError, RuntimeError):
    """MNIST could not be found, downloaded or verified; the message says what to do."""


def data_dir(explicit: str | Path | None = None) -> Path:
    """--data-dir, else $NAS_DATA_DIR, else ~/.cache/nas/data (where a download goes)."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "nas" / "data"


def _verify(raw: Path) -> list[str]:
    """Names of the files that are missing or fail their md5 check."""
    return [name for name, md5 in FILES.items() if not (raw / name).is_file() or _md5(raw / name) != md5]


def _md5(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def load_mnist(root: str | Path | None = None, download: bool = True) -> dict[str, torch.Tensor]:
    """The 60,000 training and 10,000 test images (uint8, N x 28 x 28) and labels, verified."""
    root = data_dir(root)
    raw = root / "MNIST" / "raw"
    bad = _verify(raw)
    if bad and download:
        from torchvision.datasets import MNIST  # imported only here: torchvision's import takes seconds

        try:
            for train in (True, False):
                MNIST(str(root), train=train, download=True)
        except Exception:  # no network, a mirror down, a read-only folder: same advice below
            pass
        bad = _verify(raw)
    if bad:
        present = [n for n in bad if (raw / n).exists()]
        what = "fail their md5 check" if present else "are missing"
        raise DataError(
            f"MNIST files {', '.join(bad)} {what} in {raw} and could not be downloaded; put the four "
            f"uncompressed MNIST files ({', '.join(FILES)}) there, or point --data-dir / ${ENV_VAR} "
            f"at a folder holding MNIST/raw/"
        )
    keys = ("train_x", "train_y", "test_x", "test_y")  # in FILES' order
    return {key: _read(raw / name) for key, name in zip(keys, FILES, strict=True)}


def _read(path: Path) -> torch.Tensor:
    """One md5-verified MNIST file as torchvision's MNIST reads it: images N x 28 x 28 uint8 after
    a 16-byte header, labels N int64 after an 8-byte one. Read here and not through torchvision,
    whose import would cost every worker process seconds (it pulls in torch._dynamo)."""
    images = "images" in path.name
    x = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8, offset=16 if images else 8)
    return x.view(-1, 28, 28) if images else x.long()


@dataclass
class Split:
    """Training tensors and the tensors to evaluate on, on one device, normalised."""

    train_x: torch.Tensor  # float32, N x 1 x 28 x 28
    train_y: torch.Tensor  # int64, N
    eval_x: torch.Tensor
    eval_y: torch.Tensor
    eval_name: str  # "val" (held out from the training images) or "test"


def _prepare(x: torch.Tensor, device) -> torch.Tensor:
    """uint8 images to the device (a quarter of float32's bytes), normalised there, once."""
    return ((x.to(device).to(torch.float32) / 255.0 - MEAN) / STD).unsqueeze(1)


def make_split(
    mnist: dict[str, torch.Tensor],
    evaluate_on: str = "test",
    val_size: int = 10_000,
    split_seed: int = 0,
    train_limit: int | None = None,
    eval_limit: int | None = None,
    device: str | torch.device = "cpu",
) -> Split:
    """evaluate_on="val": train on 60,000 - val_size images, evaluate on the held-out val_size
    (a fixed permutation from split_seed; the search uses this). evaluate_on="test": train on
    all 60,000 and evaluate on the 10,000 test images (final numbers, replays).
    train_limit / eval_limit keep only the first N of each (smoke tests, quick benchmarks)."""
    if evaluate_on == "val":
        perm = torch.randperm(len(mnist["train_y"]), generator=torch.Generator().manual_seed(split_seed))
        tr, ev = perm[val_size:], perm[:val_size]
        parts = mnist["train_x"][tr], mnist["train_y"][tr], mnist["train_x"][ev], mnist["train_y"][ev]
    elif evaluate_on == "test":
        parts = mnist["train_x"], mnist["train_y"], mnist["test_x"], mnist["test_y"]
    else:
        raise ValueError(f"evaluate_on must be 'val' or 'test', got {evaluate_on!r}")
    tx, ty, ex, ey = parts
    tx, ty, ex, ey = tx[:train_limit], ty[:train_limit], ex[:eval_limit], ey[:eval_limit]
    return Split(_prepare(tx, device), ty.to(device), _prepare(ex, device), ey.to(device), evaluate_on)


def batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """One epoch of shuffled index batches (the last one may be short, as DataLoader's)."""
    perm = torch.randperm(n, generator=generator, device=generator.device)
    return list(perm.split(batch_size))


def augments(recipe) -> bool:
    """Whether a recipe (nas.spec.Recipe) changes its training images."""
    return any(getattr(recipe, k) > 0 for k in ("rotation", "translate", "scale", "brightness", "contrast"))


def augment(x: torch.Tensor, recipe, generator: torch.Generator | None) -> torch.Tensor:
    """A batch as a recipe's augmentation draws it, each image on its own: rotation, shift and
    zoom in one resampling (`rotate`), then brightness and contrast. The draws come in that order
    and only for the transforms that are on, so a recipe without the newer ones (zoom, brightness,
    contrast) draws, and trains, exactly as before they existed."""
    if recipe.rotation > 0 or recipe.translate > 0 or recipe.scale > 0:
        x = rotate(x, recipe.rotation, generator, recipe.translate, recipe.scale)
    if recipe.brightness > 0 or recipe.contrast > 0:
        x = photometric(x, generator, recipe.brightness, recipe.contrast)
    return x


def photometric(x: torch.Tensor, generator, brightness: float = 0.0, contrast: float = 0.0) -> torch.Tensor:
    """torchvision's ColorJitter on a normalised batch, per image: pixels (on [0, 1]) times a factor
    uniform in 1 +- brightness, then blended with the image's mean by a factor uniform in
    1 +- contrast, each clipped to [0, 1]."""
    n, pixels = x.shape[0], x * STD + MEAN
    if brightness > 0:
        factor = 1 + (torch.rand(n, 1, 1, 1, generator=generator, device=x.device) * 2 - 1) * brightness
        pixels = (pixels * factor).clamp(0, 1)
    if contrast > 0:
        factor = 1 + (torch.rand(n, 1, 1, 1, generator=generator, device=x.device) * 2 - 1) * contrast
        mean = pixels.mean(dim=(1, 2, 3), keepdim=True)
        pixels = (mean + (pixels - mean) * factor).clamp(0, 1)
    return (pixels - MEAN) / STD


def rotate(
    x: torch.Tensor, degrees: float, generator: torch.Generator | None, translate: float = 0.0, scale: float = 0.0
) -> torch.Tensor:
    """Rotate each image of a batch by its own angle, uniform in [-degrees, degrees], and with
    `translate` shift it by its own offset, uniform in +-translate of the image side on each axis
    (as torchvision's RandomAffine(translate=(t, t)), whole pixels aside), and with `scale` zoom it
    by its own factor, uniform in 1 +- scale (RandomAffine(scale=(1 - s, 1 + s))): one resampling."""
    angle = (torch.rand(x.shape[0], generator=generator, device=x.device) * 2 - 1) * math.radians(degrees)
    shift = zoom = None
    if translate > 0:  # drawn after the angles: a rotation-only run draws exactly as before
        shift = (torch.rand(x.shape[0], 2, generator=generator, device=x.device) * 2 - 1) * (2 * translate)
    if scale > 0:  # drawn last, for the same reason
        zoom = 1 + (torch.rand(x.shape[0], generator=generator, device=x.device) * 2 - 1) * scale
    return rotate_by(x, angle, shift, zoom)


def rotate_by(
    x: torch.Tensor, angle: torch.Tensor, shift: torch.Tensor | None = None, zoom: torch.Tensor | None = None
) -> torch.Tensor:
    """Rotate image i of a normalised batch by angle[i] radians about its centre (+pi/2 is
    torch.rot90(k=1), counter-clockwise on screen), then move it by shift[i] (x, y in units of
    half the image side, +x to the right, +y down) and scale it by zoom[i] about its centre (2 doubles
    the digit's size), bilinear, filling with black as torchvision's RandomRotation(fill=0) does."""
    cos, sin = angle.cos(), angle.sin()
    if zoom is not None:  # the grid samples the input at 1 / zoom of each output offset
        cos, sin = cos / zoom, sin / zoom
    tx, ty = (torch.zeros_like(angle), torch.zeros_like(angle)) if shift is None else (-shift[:, 0], -shift[:, 1])
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # grid_sample fills with 0, so rotate the offset from black and add black back
    return F.grid_sample(x - BACKGROUND, grid, mode="bilinear", align_corners=False) + BACKGROUND
