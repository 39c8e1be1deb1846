"""Named POSIX shared-memory segments, without the multiprocessing resource tracker.

Why not ``multiprocessing.shared_memory.SharedMemory``: on 3.11 every *attach* registers the
segment with the resource tracker (cpython gh-82300), which then warns about or unlinks segments
it does not own. lane_mp keeps ownership explicit instead: the process that creates a segment
(normally the coordinator) unlinks it, every name starts with :data:`PREFIX` and the pool's
token, and :func:`sweep` removes whatever a crashed process left under a token.

OSError from the kernel is translated here, once, into :class:`lane_mp.errors.InfrastructureError`
only where the caller cannot act on the errno; plain ``FileNotFoundError`` is kept for attach.
"""

from __future__ import annotations

import mmap
import os
import secrets
from pathlib import Path

import _posixshmem  # the C module behind multiprocessing.shared_memory (stable since 3.8)

PREFIX = "lmp_"
SHM_DIR = Path("/dev/shm")  # Linux: where POSIX shm names are visible, used only by sweep/list
PAGE = mmap.PAGESIZE

__all__ = ["Segment", "new_token", "sweep", "list_segments", "PREFIX"]


def new_token() -> str:
    """A short unique token for one pool: owner pid (hex) + random. Names stay < 31 chars."""
    return f"{os.getpid():x}{secrets.token_hex(3)}"


class Segment:
    """One mapped shared-memory segment. ``buf`` is a writable memoryview of the whole mapping."""

    __slots__ = ("name", "size", "_mmap", "buf", "owner")

    def __init__(self, name: str, size: int, mapping: mmap.mmap, owner: bool) -> None:
        self.name = name
        self.size = size
        self._mmap = mapping
        self.buf = memoryview(mapping)
        self.owner = owner

    @classmethod
    def create(cls, name: str, size: int, *, prefault: bool = True) -> Segment:
        """Create ``name`` (must not exist) of ``size`` bytes; pages are touched once if prefault."""
        if not name.startswith(PREFIX):
            raise ValueError(f"segment names must start with {PREFIX!r}: {name!r}")
        size = max(PAGE, (size + PAGE - 1) // PAGE * PAGE)
        fd = _posixshmem.shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
        try:
            os.ftruncate(fd, size)
            flags = mmap.MAP_SHARED | (mmap.MAP_POPULATE if prefault else 0)
            mapping = mmap.mmap(fd, size, flags=flags)
        except BaseException:
            _posixshmem.shm_unlink("/" + name)
            raise
        finally:
            os.close(fd)
        return cls(name, size, mapping, owner=True)

    @classmethod
    def attach(cls, name: str, *, readonly: bool = False, prefault: bool = False) -> Segment:
        """Map an existing segment. Raises FileNotFoundError when it is gone."""
        fd = _posixshmem.shm_open("/" + name, os.O_RDONLY if readonly else os.O_RDWR, mode=0o600)
        try:
            size = os.fstat(fd).st_size
            prot = mmap.PROT_READ if readonly else mmap.PROT_READ | mmap.PROT_WRITE
            flags = mmap.MAP_SHARED | (mmap.MAP_POPULATE if prefault else 0)
            mapping = mmap.mmap(fd, size, flags=flags, prot=prot)
        finally:
            os.close(fd)
        return cls(name, size, mapping, owner=False)

    def close(self) -> bool:
        """Unmap. Returns False (and leaves the mapping to the GC) while views of it are alive."""
        try:
            self.buf.release()
            self._mmap.close()
            return True
        except BufferError:
            return False

    def unlink(self) -> None:
        """Remove the name; the memory lives on until the last mapping goes. Idempotent."""
        try:
            _posixshmem.shm_unlink("/" + self.name)
        except FileNotFoundError:
            pass

    def __repr__(self) -> str:
        return f"Segment({self.name!r}, size={self.size}, owner={self.owner})"


def unlink_name(name: str) -> bool:
    try:
        _posixshmem.shm_unlink("/" + name)
        return True
    except FileNotFoundError:
        return False


def list_segments(prefix: str = PREFIX) -> list[str]:
    """Names of live segments starting with ``prefix`` (Linux only; empty elsewhere)."""
    try:
        return sorted(p.name for p in SHM_DIR.iterdir() if p.name.startswith(prefix))
    except OSError:
        return []


def sweep(prefix: str) -> int:
    """Unlink every segment whose name starts with ``prefix``; returns how many were removed."""
    if not prefix.startswith(PREFIX) or len(prefix) <= len(PREFIX):
        raise ValueError(f"refusing to sweep a prefix this broad: {prefix!r}")
    return sum(unlink_name(name) for name in list_segments(prefix))
