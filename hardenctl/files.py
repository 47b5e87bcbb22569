"""Atomic output files: a reader never sees half a report or half a checkpoint.

Every file hardenctl writes goes through :func:`atomic_write`: write to a temp
file in the same directory, fsync, then ``os.replace`` onto the final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import UserError

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path next to ``path``; on success it is renamed onto ``path``.

    On any exception the temp file is removed and ``path`` is left untouched.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes 0600, and writers that replace the file themselves (safetensors) make their own: give the
        # output the usual permissions once it is written
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
    """Write text or bytes to ``path`` atomically.

    Args:
        path: the file to write (a temp file beside it is renamed onto it).
        data: text (written as UTF-8) or bytes.
    """
    with atomic_path(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def can_write_in(folder: Path) -> bool:
    """Whether a file can be created in ``folder``, found by creating (and removing) one: permission bits say nothing
    for root, a read-only mount or a full quota."""
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".hardenctl-probe-"):
            return True
    except OSError:
        return False


def _first_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (what must be a writable folder for ``path`` to be made)."""
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path(".")


def _check_folder_on_the_way(path: Path, option: str) -> None:
    """Every existing ancestor of ``path`` is a folder, and the nearest one is writable (so ``path`` can be made)."""
    ancestor = _first_existing(path.parent if path.parent != path else path)
    if not ancestor.is_dir():
        raise UserError(f"{option} {path}: {ancestor} is a file, not a folder", f"pass a {option} path inside a folder")
    if not can_write_in(ancestor):
        raise UserError(
            f"{option} {path}: the folder {ancestor} is not writable",
            f"pass a {option} path in a folder you can write to",
        )


def check_output_file(path: str | os.PathLike, option: str) -> None:
    """Refuse (UserError, exit 2) an output file that could not be written, before any work is done: a folder in its
    place, a file where a folder of its path should be, or a folder nobody may write to. The file is written later
    by :func:`atomic_write` (a temp file beside it, then a rename), so its folder must be writable, not the file.

    Args:
        path: the file a command will write.
        option: the flag that named it, for the error (e.g. ``--report``).
    """
    target = Path(path)
    if str(path).endswith(os.sep) or target.is_dir():
        raise UserError(f"{option} {path} is a folder", f"pass a file path for {option}")
    _check_folder_on_the_way(target, option)


def check_output_dir(path: str | os.PathLike, option: str) -> None:
    """Refuse an output folder that could not be made or written into, before any work is done.

    Args:
        path: the folder a command will write into (made later when absent).
        option: the flag that named it, for the error (e.g. ``--out``).
    """
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise UserError(f"{option} {path} is a file", f"pass a folder for {option} (a new one, or one hardenctl wrote)")
    if target.is_dir():
        if not can_write_in(target):
            raise UserError(f"{option} {path}: the folder is not writable", f"pass a {option} folder you can write to")
        return
    _check_folder_on_the_way(target, option)


LOCK_NAME = ".hardenctl.lock"


class FolderLock:
    """One writer per output folder: an exclusive ``flock`` on ``FOLDER/.hardenctl.lock``, held while a run writes
    there.

    The kernel releases it when the process ends, however it ends, so a lock left by a ``kill -9`` is never stale. The
    file names the holder (pid, host, start time), so a second run refused with exit 2 can say which run has the folder.
    On release the file is removed, and so is the folder if this lock created it and nothing else was written there
    (a run refused later for bad input leaves nothing behind).
    """

    def __init__(self, folder: str | os.PathLike, option: str):
        self.folder, self.option = Path(folder), option
        self.path = self.folder / LOCK_NAME
        self.handle = None
        self.created_folder = False

    def __enter__(self) -> "FolderLock":
        import fcntl
        import socket
        import time

        self.created_folder = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            handle = open(self.path, "a+", encoding="utf-8")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = " ".join(handle.read().split()) or "another process"
                handle.close()
                self._tidy()
                raise UserError(
                    f"{self.option} {self.folder} is in use by another hardenctl run ({holder})",
                    f"wait for it to finish, or pass another {self.option}",
                ) from None
            # the file may have been removed by its last holder between our open and our lock: lock the current one
            if os.path.exists(self.path) and os.stat(self.path).st_ino == os.fstat(handle.fileno()).st_ino:
                break
            handle.close()
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        self.handle = handle
        return self

    def __exit__(self, *exc: object) -> None:
        if self.handle is None:
            return
        try:
            os.unlink(self.path)  # while still held: a newcomer then locks a new file, never this one
        except OSError:
            pass
        self.handle.close()  # releases the lock
        self.handle = None
        self._tidy()

    def _tidy(self) -> None:
        """Remove the folder this lock created when nothing but (at most) the lock file went into it."""
        if self.created_folder:
            try:
                self.folder.rmdir()
            except OSError:
                pass


def folder_in_use(folder: str | os.PathLike) -> str | None:
    """Who holds ``folder``'s :class:`FolderLock` (its line), or None when nobody does; takes no lock itself."""
    import fcntl

    path = Path(folder) / LOCK_NAME
    try:
        handle = open(path, encoding="utf-8")
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return " ".join(handle.read().split()) or "another process"
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None
