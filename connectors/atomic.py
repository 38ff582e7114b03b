"""Write a file or a folder so that it appears complete or not at all: :func:`atomic_path`.

A run that is killed halfway through writing ``scores.parquet`` must not leave a truncated
``scores.parquet`` behind that the next step happily reads. The recipe is the classic one: write
everything to a hidden temporary sibling (same folder, hence same file system), then ``rename`` it
onto the final name in one step, which POSIX guarantees to be atomic::

    with atomic_path(Path("out/scores.parquet")) as tmp:
        frame.write_parquet(tmp)          # written as out/.scores.parquet.tmp-1f9c2a7b
    # only now does out/scores.parquet exist, complete

    with atomic_path(Path("out/dataset")) as tmp:
        tmp.mkdir()                        # a folder works the same way
        ...write shards into tmp...

If the block raises, the temporary file or folder is deleted and the final name is untouched
(an older version stays as it was).

Replacing: an existing *file* at the final name is replaced atomically. An existing *folder* can
be replaced by a new folder; POSIX cannot swap two non-empty folders in one step, so the old
folder is first renamed to a hidden sibling, the new one renamed into place and the old one
deleted. Readers may briefly see no folder at that name, but never a half-written one. Replacing a
folder with a file (or the other way round) raises :class:`IsADirectoryError` /
:class:`NotADirectoryError` and leaves both untouched, except that the temporary is removed.

Written files are flushed to disk (``fsync``) before the rename, so the guarantee also holds
across a power cut on file systems that honour it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path


def _sibling(final: Path, tag: str) -> Path:
    return final.with_name(f".{final.name}.{tag}-{secrets.token_hex(4)}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    """Flush a file, or every file in a folder, plus the folders themselves (best effort)."""
    if path.is_dir():
        for child in path.rglob("*"):
            if child.is_file():
                _fsync_file(child)
    else:
        _fsync_file(path)
    _fsync_dir(path if path.is_dir() else path.parent)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets you fsync a folder
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _publish(tmp: Path, final: Path) -> None:
    """Move the finished ``tmp`` onto ``final`` (see the module docstring for the folder case)."""
    if tmp.is_dir() and final.exists():
        if not final.is_dir():
            raise NotADirectoryError(f"{final} exists and is not a folder; will not replace it")
        old = _sibling(final, "old")
        os.replace(final, old)
        try:
            os.replace(tmp, final)
        except BaseException:
            os.replace(old, final)  # put the previous version back
            raise
        shutil.rmtree(old, ignore_errors=True)
    elif not tmp.is_dir() and final.is_dir():
        raise IsADirectoryError(f"{final} is a folder; will not replace it with a file")
    else:
        os.replace(tmp, final)
    _fsync_dir(final.parent)


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``final``; rename it onto ``final`` if the block succeeds.

    The temporary path does not exist yet: create a file or a folder there. The parent folder of
    ``final`` is created if needed. On an exception inside the block, whatever was created at the
    temporary path is removed and the exception propagates. A block that finishes without creating
    anything raises :class:`FileNotFoundError`, since silently producing nothing is a bug.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(final, "tmp")
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to the temporary path for {final}")
        _fsync_tree(tmp)
        _publish(tmp, final)
    except BaseException:
        _remove(tmp)
        raise
