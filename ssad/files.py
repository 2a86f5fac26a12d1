"""Atomic file output: write to a temporary name beside the target, then rename.

A kill at any moment leaves either the old complete file (or folder) or none, never a
truncated one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish(tmp: str | os.PathLike, path: Path, mode: int) -> None:
    """Give ``tmp`` the permissions a plain ``open``/``mkdir`` would have, then rename it."""
    os.chmod(tmp, mode & ~_umask())
    os.replace(tmp, path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _publish(tmp, path, 0o666)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    For writers that insist on a file name of their own (``model.save``, ``imsave``); the
    temporary name keeps the target's suffix so such writers pick the right format.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        _publish(tmp, path, 0o666)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; when the block succeeds it takes ``path``'s
    place, so a failure never leaves a partial folder there.

    ``path`` must not exist yet (no silent overwrite) unless ``replace``: an existing ``path``
    is then replaced, only once the block has succeeded. An ``OSError`` in the block (a full
    disk) names ``path``, not the temporary folder.
    """
    path = Path(path)
    if path.exists() and not replace:
        raise FileExistsError(f"{path} already exists")
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    old = None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old / "previous")
        os.rename(tmp, path)
    except OSError as e:
        if e.filename is not None and str(tmp) in str(e.filename):
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    finally:
        for leftover in (tmp, old):
            if leftover is not None and leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)


@contextlib.contextmanager
def output_dir(path: str | os.PathLike, marker: str) -> Iterator[Path]:
    """:func:`atomic_dir` for a command's ``--out`` folder of several files: its parent is
    created, and an existing ``path`` is replaced only when it is empty or holds an earlier
    output of the same kind (a file named ``marker``); anything else is an error, never
    deleted."""
    from ssad.errors import SsadError

    path = Path(path)
    if path.exists() and not (path.is_dir() and _replaceable(path, marker)):
        raise SsadError(
            f"{path}: exists and holds other files than an earlier output; choose another --out"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:  # through an existing file
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path)) from e
    with atomic_dir(path, replace=True) as tmp:
        yield tmp


def _replaceable(path: Path, marker: str) -> bool:
    return not any(path.iterdir()) or (path / marker).is_file()
