"""Writing user outputs so that a file is either complete or absent.

Every output file medgen writes (images, ``params.json``, ZIP downloads, evaluation reports)
goes through :func:`atomic_write`: the content is written to a hidden temporary file in the
same folder, flushed to disk, then renamed into place. A full disk, a removed folder or an
interrupt therefore never leaves a 0-byte or truncated file under the final name. Any
``OSError`` comes back as :class:`OutputError`, whose message names the file and the reason.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["OutputError", "atomic_write", "check_writable_dir"]


class OutputError(OSError):
    """An output file or folder could not be written; ``str()`` is one line naming it and why."""

    def __init__(self, path: str | os.PathLike, error: BaseException | str) -> None:
        code = getattr(error, "errno", None)
        reason = getattr(error, "strerror", None) or (os.strerror(code) if code else None) or str(error)
        super().__init__(code, reason, str(path))
        self.path = Path(path)

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"


def _temporary_name(path: Path) -> Path:
    # Hidden, unique, in the same folder: the final rename stays on one filesystem (atomic).
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")


def _move_into_place(temporary: Path, path: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(temporary, path)
        return
    try:
        # link() fails if `path` exists, so a file another process wrote meanwhile is never replaced.
        os.link(temporary, path)
    except FileExistsError:
        raise
    except OSError:  # hard links unsupported here (e.g. FAT or some network shares)
        if path.exists():
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
        os.replace(temporary, path)
        return
    os.unlink(temporary)


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike, mode: str = "wb", *, overwrite: bool = True, encoding: str | None = None
) -> Iterator[IO[Any]]:
    """Open a temporary file for writing and rename it to ``path`` when the block ends without error.

    Args:
        path: the final file; its folder must exist.
        mode: ``"wb"`` (default) or ``"w"`` (text, UTF-8 unless ``encoding`` says otherwise).
        overwrite: with ``False`` an existing ``path`` is never replaced (``OutputError``, "File exists").

    On any error the temporary file is removed and ``path`` is left as it was; an ``OSError``
    is raised again as :class:`OutputError` naming ``path``.

    Example::

        with atomic_write("out/params.json", "w") as file:
            json.dump(params, file)
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb'; got {mode!r}")
    path = Path(path)
    temporary = _temporary_name(path)
    try:
        file = open(temporary, mode.replace("w", "x"), encoding=None if "b" in mode else encoding or "utf-8")
    except OSError as error:
        raise OutputError(path, error) from error
    try:
        with file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        _move_into_place(temporary, path, overwrite)
    except BaseException as error:
        with contextlib.suppress(OSError):
            temporary.unlink()
        if isinstance(error, OSError) and not isinstance(error, OutputError):
            raise OutputError(path, error) from error
        raise


def check_writable_dir(path: str | os.PathLike, create: bool = False) -> Path:
    """Make sure files can be written into folder ``path`` (created first when ``create``).

    Without ``create`` nothing is left behind: the nearest existing folder on the way to ``path``
    is tested instead. A probe file is written and removed, because permission bits do not tell
    the whole story (read-only mounts; root ignores them). Raises :class:`OutputError`.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(path, "exists and is not a folder")
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(path, error) from error
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(path, f"{existing} is a file, not a folder")
    probe = _temporary_name(existing / ".medgen-write-test")
    try:
        probe.open("xb").close()
        probe.unlink()
    except OSError as error:
        raise OutputError(path, error) from error
    return path
