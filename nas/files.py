"""Evidence files: every result file (CSV, JSON, figures, checkpoints, exports) is written whole
or not at all, every run records where it came from (provenance), and durations read the same
everywhere (h:mm:ss)."""

from __future__ import annotations

import os
import platform
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nas
from nas.workers import usable_cpus

RESULTS_DIR = "results"  # where a user's runs go unless --results-dir names another folder
MAX_NAME_BYTES = 200  # of a name that becomes a folder (see plain_name)


def atomic(path: Path, write_to: Callable[[Path], object]) -> Path:
    """`write_to(tmp)` creates and writes the content; `tmp` (same folder, a unique name ending .tmp:
    a kill mid-write leaves nothing that globs as a result file) then replaces `path`. The writer
    creates the file, so it gets the usual permissions (umask), not a private temporary file's."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"  # never *.pt, *.csv
    try:
        write_to(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_text(path: Path, what: str, form: str, error: type[Exception]) -> str:
    """A UTF-8 text file (a config, a space), or `error` with one line saying why it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise error(f"cannot read {what} file {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise error(f"{path}: not a {form} text file (byte {e.start} is not UTF-8)") from None


class FolderNameError(nas.NasError, ValueError):
    """A name that becomes a folder under the results folder but is not a plain folder name."""


def plain_name(name: str) -> bool:
    """The one rule for a name that becomes a folder (a run's, a study's, a frontier's): one folder
    inside the results folder. A slash or backslash would nest it or climb out ("../x"), a leading dot
    hides it ("." and ".." are not folders of their own), a control character breaks the one-line
    messages that name it; an empty name is the results folder itself, and a file system takes at
    most 255 bytes a name, some of which the names made from it take (`<study>-confirm`, checkpoints)."""
    plain = not {"/", "\\"} & set(name) and not name.startswith(".") and name.isprintable()
    return plain and 0 < len(name.encode()) <= MAX_NAME_BYTES


def folder_name(name: str, option: str, what: str = "a study name") -> str:
    """`name`, given as `option`, where it enters the library; a FolderNameError unless plain_name(name)."""
    if not plain_name(name):
        raise FolderNameError(
            f"{option}: {what} becomes a folder under the results folder: use a plain name (no slash, no "
            f"leading dot, at most {MAX_NAME_BYTES} bytes), got {name!r}"
        )
    return name


def write_text(path: Path, text: str) -> Path:
    return atomic(path, lambda p: p.write_text(text))


def write_csv(frame, path: Path) -> Path:
    """A pandas frame as CSV, six significant digits."""
    return atomic(path, lambda p: frame.to_csv(p, index=False, float_format="%.6g"))


def hms(seconds: float) -> str:
    """A duration as h:mm:ss."""
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def provenance(device) -> dict:
    """The machine, versions and command behind a result."""
    import torch  # only here: the schema's other users never load it

    cpu = platform.processor()
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "nas": nas.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "command": " ".join(["nas", *sys.argv[1:]]),
        "git_commit": git_commit(),
    }


def git_commit() -> str | None:
    """The checkout's commit (with "+dirty" for uncommitted changes), when nas runs from one."""
    here = Path(__file__).resolve().parent

    def git(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *argv], cwd=here, capture_output=True, text=True, timeout=5)

    try:
        head, dirty = git("rev-parse", "HEAD"), git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
