"""atomic(path, write_to): every result file (CSV, JSON, figures, checkpoints, exports) is written
to a temporary file beside its final name and renamed into place, so a reader or a crash never
leaves half a file."""

from __future__ import annotations

import os
import secrets
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
