"""Evidence files: every result file (CSV, JSON, figures, checkpoints, exports) is written whole
or not at all, and every run records where it came from (provenance)."""

from __future__ import annotations

import os
import platform
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path


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


def write_text(path: Path, text: str) -> Path:
    return atomic(path, lambda p: p.write_text(text))


def write_csv(frame, path: Path) -> Path:
    """A pandas frame as CSV, six significant digits."""
    return atomic(path, lambda p: frame.to_csv(p, index=False, float_format="%.6g"))


def provenance(device) -> dict:
    """The machine, versions and command behind a result."""
    import torch

    import nas
    from nas.workers import usable_cpus

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
