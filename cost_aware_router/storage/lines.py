"""The one exclusive lock, the one locked append of JSON lines, and the one bounded line reader.

Several ComfyUI workers or CLI processes, on one machine or on several machines sharing a filesystem,
may append to one file at once (the decision log, a scored folder's ``generations.jsonl``).
:func:`append_lines` writes a whole batch with a single ``os.write`` on a descriptor opened through the
gate (``files.open_fd``: regular file, no final link, ``O_APPEND``) while holding an exclusive ``flock``
on it, so lines are never lost, duplicated, interleaved or torn between writers:

* ``O_APPEND`` makes each write land at the current end of the file (atomic on local POSIX filesystems);
* the advisory ``flock`` serialises writers where ``O_APPEND`` is not atomic (NFS and other network
  filesystems), and covers the rare short write that needs a second ``os.write``;
* a file that does not end in a newline (a writer killed mid-write, or a full disk) gets a newline before
  the next batch, so the torn line stays on its own line and a reader skips it instead of losing the next
  record too.

:func:`exclusive` holds a lock file for a read-modify-write (a held budget's state, a learnt router, a
scored folder's check-then-append). :func:`bounded_lines` reads JSON lines holding at most a bounded
number of bytes of one line. Where ``fcntl`` does not exist (Windows) the locks are thread locks only and
appends rely on the operating system alone.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator

from ..errors import RouterError
from .files import open_fd

try:  # POSIX only
    import fcntl
except ImportError:  # pragma: no cover - exercised on Windows only
    fcntl = None

_THREAD_LOCKS: dict[str, threading.RLock] = {}
_REGISTRY = threading.Lock()


def _thread_lock(path: str | os.PathLike) -> threading.RLock:
    """The lock of ``path`` for the threads of this process (``flock`` is per open file, not per thread)."""
    key = os.path.abspath(path)
    with _REGISTRY:
        return _THREAD_LOCKS.setdefault(key, threading.RLock())


@contextlib.contextmanager
def flocked(fd: int, name: str | None = None, error: type[RouterError] = RouterError) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on the open file ``fd``; yields whether it is held. Without ``flock``
    (Windows) it yields False. A filesystem that cannot lock: with ``name`` an ``error`` naming it, without
    it False (the caller goes on unlocked). The lock is released explicitly at the end (a forked child may
    share this open file description)."""
    if fcntl is None:
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        held = True
    except OSError as exc:
        if name is not None:
            raise error(f"cannot lock {name} ({exc.strerror or exc})") from None
        held = False
    try:
        yield held
    finally:
        if held:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)


@contextlib.contextmanager
def exclusive(lock_path: str | os.PathLike, what: str = "lock file", error: type[RouterError] = RouterError,
              mode: int = 0o644) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (created if absent, never through a link): threads of this
    process and, through ``flock`` where the platform has it, other processes. For a read-modify-write
    of one file (a held budget's state, a learnt router, a scored folder) by several runs at once."""
    with _thread_lock(lock_path):
        if fcntl is None:  # Windows: the thread lock is all there is
            yield
            return
        fd = open_fd(lock_path, what, error, follow=False, flags=os.O_RDWR | os.O_CREAT, mode=mode)
        try:
            with flocked(fd, f"{what} {lock_path}" if what else str(lock_path), error):
                yield
        finally:
            os.close(fd)


def _last_byte(fd: int, size: int) -> bytes | None:
    """The file's last byte, or None when it cannot be read (write-only descriptor)."""
    try:
        if hasattr(os, "pread"):
            return os.pread(fd, 1, size - 1)
        os.lseek(fd, size - 1, os.SEEK_SET)
        return os.read(fd, 1)
    except OSError:
        return None


def _same_file(path: str | os.PathLike, fd: int) -> bool:
    """Whether ``path`` still names the open file (another writer may have moved it meanwhile)."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def _write_all(fd: int, data: bytes) -> None:
    size = os.fstat(fd).st_size
    if size > 0 and _last_byte(fd, size) not in (b"\n", None):
        data = b"\n" + data  # isolate a torn last line
    view = memoryview(data)
    while view:  # one write; a short write (disk full) is finished while the lock is held
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(0, "write returned no progress")
        view = view[n:]


def append_lines(path: str | os.PathLike, data: bytes, what: str = "file", error: type[RouterError] = RouterError,
                 *, mode: int = 0o644, make_room: Callable[[int, int], bool] | None = None,
                 attempts: int = 8) -> None:
    """Append ``data`` (whole lines, each ending in a newline) to ``path`` in one ``O_APPEND`` write under an
    exclusive ``flock`` on the file, created if absent (``mode`` minus the umask).

    The file is opened read-write so its last byte can be checked (falling back to write-only when it may
    not be read); a symbolic link, folder, FIFO, device or other non-regular file, or a missing parent
    folder, is refused with ``error`` naming ``what`` and ``path``, and nothing is written. Once the lock is
    held, a ``path`` that no longer names the open file (moved by another writer meanwhile) is opened
    again; ``make_room(size, len(data))`` may then move the file away (a log's rotation) and return True,
    and the batch goes to the new file. After ``attempts`` opens the batch is written where it lands.
    Unlocked (Windows, a filesystem without ``flock``) nothing is checked or moved."""
    if not data:
        return
    name = f"{what} {path}" if what else str(path)
    for attempt in range(attempts):
        last = attempt == attempts - 1
        fd = open_fd(path, what, error, follow=False, flags=os.O_RDWR | os.O_APPEND | os.O_CREAT,
                     fallback_flags=os.O_WRONLY | os.O_APPEND | os.O_CREAT, mode=mode)  # a write-only file
        try:
            with flocked(fd) as locked:
                if locked and not last:
                    if not _same_file(path, fd):
                        continue  # moved (or removed) while we waited for the lock: open the new file
                    if make_room is not None and make_room(os.fstat(fd).st_size, len(data)):
                        continue  # the file was moved away to make room: open the new one
                _write_all(fd, data)
                return
        except OSError as exc:
            raise error(f"cannot append to {name}: {exc.strerror or exc}") from None
        finally:
            os.close(fd)


def bounded_lines(fh, limit: int) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes) of each line of a binary file, holding at most ``limit`` bytes of a line at a
    time; a longer line comes back as None once the rest of it has been read past, never held whole. A last
    line without its newline comes back as it is (a reader following a growing file may leave it)."""
    lineno = 0
    while True:
        raw = fh.readline(limit + 1)
        if not raw:
            return
        lineno += 1
        if len(raw) > limit and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):
                raw = fh.readline(limit)
            yield lineno, None
        else:
            yield lineno, raw
