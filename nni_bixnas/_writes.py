"""A write the folder or the disk refused, told in one line naming the file (imports nothing heavy: the CLI
uses it for every command's error line)."""

from __future__ import annotations

import contextlib
import errno
import os
import re
from pathlib import Path
from typing import Any, Optional

__all__ = ["WRITE_ERRNOS", "shown_path", "refused_write", "refused_writes", "WriteRefused"]

# errno of a write that fails because of the folder or the disk, not because of the program
WRITE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}
FULL = {errno.ENOSPC, errno.EDQUOT}


def shown_path(filename: Any) -> Path:
    """``atomic_write``'s temporary ``.NAME.XXXX.tmp`` shown as the file it stands for."""
    path = Path(os.fsdecode(filename))
    match = re.fullmatch(r"\.(.+)\.[^.]+\.tmp", path.name)
    return path.with_name(match.group(1)) if match else path


def refused_write(err: OSError, option: str = "--out") -> Optional[str]:
    """``'cannot write PATH: reason; what to do'`` for an ``OSError`` with a file name that a read-only folder,
    a full disk or a file standing where a folder should be raised; ``None`` for any other error."""
    if not err.filename:
        return None
    where = shown_path(err.filename)
    if err.errno in (errno.EEXIST, errno.ENOTDIR):
        blocker = next((p for p in (where, *where.parents) if p.exists() and not p.is_dir()), None)
        if blocker is None:
            return None
        return (f"cannot write {where}: {blocker} is an existing file, not a folder; expected a folder there "
                f"(choose another {option}, or move the file)")
    if err.errno not in WRITE_ERRNOS:
        return None
    if err.errno in FULL:
        advice = f"free some space and rerun the command, or choose another {option}"
    else:
        folder = where if where.is_dir() else where.parent
        advice = f"make {folder} writable, or choose another {option}"
    return f"cannot write {where}: {err.strerror or os.strerror(err.errno)}; {advice}"


class WriteRefused(OSError):
    """An ``OSError`` of a refused write whose message is :func:`refused_write`'s line (errno and file kept)."""

    def __str__(self) -> str:
        return refused_write(self) or super().__str__()


@contextlib.contextmanager
def refused_writes(path: Path):
    """Writing ``path`` in the block: a refusal :func:`refused_write` can tell raises :class:`WriteRefused`
    (naming ``path`` where the error named no file, as ``handle.write`` on a full disk does)."""
    try:
        yield
    except WriteRefused:
        raise
    except OSError as err:
        refused = WriteRefused(err.errno, err.strerror or os.strerror(err.errno or 0), err.filename or str(path))
        if refused_write(refused) is None:
            raise
        raise refused from err
