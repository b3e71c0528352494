"""One process per run dir: an exclusive OS file lock, held for as long as a process writes
the run.

The lock is ``flock`` on the run dir's lock file. The kernel holds it for the process and
lets it go when the process ends, however it ends (SIGKILL included), so a lock is never left
behind by a dead process and needs no timeout. The file exists only while it is held: the
holder removes it before letting go, and a process that locked a file just removed this way
tries again, so the file at the path is always the one that counts. A process that is
refused names the holder from the kernel's lock table (``/proc/locks``) and changes nothing.
"""

from __future__ import annotations

import fcntl
import os
import warnings
from pathlib import Path
from types import TracebackType

ATTEMPTS = 20  # tries when the file is removed between opening and locking it


class RunDirLocked(Exception):
    """Another process holds the run dir; the message names it."""


class RunLock:
    """The exclusive lock on the lock file ``path`` (``<run dir>/.lock``).

    :meth:`acquire` takes it without waiting, or raises :class:`RunDirLocked` naming the
    holder. On a file system without locks (some network mounts) it warns and goes on
    unlocked."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(ATTEMPTS):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise RunDirLocked(f"{self.path.parent} is in use by {holder}; wait for it "
                                   "to end (or stop it) first") from None
            except OSError as error:  # no locks on this file system
                os.close(fd)
                warnings.warn(f"cannot lock {self.path.parent} ({error.strerror}): nothing "
                              "stops a second process from writing this run at the same "
                              "time", stacklevel=2)
                return self
            if _same_file(fd, self.path):
                self._fd = fd
                return self
            os.close(fd)  # its holder removed it as we opened it: lock the new one
        raise RunDirLocked(f"{self.path.parent}: its lock file keeps changing; another process "
                           "is starting and ending there")

    def release(self) -> None:
        """Remove the lock file, then let go of the lock."""
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _holder(fd: int) -> str:
    """The process holding the lock on ``fd``'s file: ``pid 4242 (python train.py ...)``, as
    Linux's ``/proc/locks`` names it; ``another process`` where it cannot be told (another
    host, another system)."""
    info = os.fstat(fd)
    file_id = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    try:
        table = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return "another process"
    for line in table:
        fields = line.split()
        if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == file_id:
            return f"pid {fields[4]}{_command(fields[4])}"
    return "another process"


def _command(pid: str) -> str:
    """`` (<command line>)`` of a process of this host, or nothing when it cannot be read."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    except OSError:
        return ""
    return f" ({' '.join(arg.decode(errors='replace') for arg in argv)})" if argv[0] else ""
