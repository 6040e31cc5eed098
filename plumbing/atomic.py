"""Atomic output files: written beside the target under a temporary name, renamed into place on success.

A crash, an exception or a full disk leaves either the old file or nothing, never a half-written one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


class OutputError(OSError):
    """An output path that cannot be written; the message names the path and the fix."""

    def __str__(self) -> str:
        return str(self.args[0])


class OutputExistsError(OutputError, FileExistsError):
    pass


def exists_message(path: Path, flag: str = "--force") -> str:
    return f"{path} already exists: pass {flag} to replace it, or choose another output path"


def check_output(path: str | os.PathLike, force: bool = True, folder: bool = False) -> Path:
    """Refuse, before any work, an output that cannot be written: a folder where a file goes (or the
    reverse), a path under a file, a folder we may not write in, or an existing file without --force."""
    path = Path(path)
    if path.is_dir() and not folder:
        raise OutputError(
            f"{path} is a folder: the output is a file, give its path (e.g. {path / 'out.jsonl'})"
        )
    if path.exists() and folder and not path.is_dir():
        raise OutputError(f"{path} is a file: the output is a folder, give a folder path")
    if path.exists() and not folder and not force:
        raise OutputExistsError(exists_message(path))
    above = next(p for p in (path if folder else path.parent, *path.parents) if p.exists() or p == p.parent)
    if not above.is_dir():
        raise OutputError(f"{path} lies under {above}, which is a file, not a folder: choose another path")
    if not os.access(above, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write in {above} (permission denied): choose an output path you may write")
    return path


def check_outputs(folder: str | os.PathLike, names: tuple[str, ...], force: bool) -> Path:
    """check_output for an output folder and the files a verb writes into it."""
    folder = check_output(folder, folder=True)
    for name in names:
        check_output(folder / name, force)
    return folder


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to `path`; move it onto `path` only if the block succeeds (the
    folders made for it are removed again when it fails)."""
    path = check_output(path, overwrite)
    made = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        with open(tmp_path, "rb+") as f:  # the data is on disk before the name points at it
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
        made = []
    finally:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)
        for p in made:  # deepest first
            with contextlib.suppress(OSError):
                p.rmdir()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str, overwrite: bool = True) -> Path:
    with atomic_path(path, overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="\n")
    return Path(path)
