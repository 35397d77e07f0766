"""atomic(path, write_to): every result file (CSV, JSON, figures, checkpoints, exports) is written
to a temporary file beside its final name and renamed into place, so a reader or a crash never
leaves half a file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic(path: Path, write_to: Callable[[Path], object]) -> Path:
    """`write_to(tmp)` writes the content; `tmp` (same folder, ending .tmp: a kill mid-write leaves
    nothing that globs as a result file) then replaces `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # never *.pt, *.csv
    os.close(fd)
    try:
        write_to(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
