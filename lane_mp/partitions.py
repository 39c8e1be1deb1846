"""Key -> stable 64-bit hash -> partition (worker) index.

Why not Python's ``hash()``: it is salted per process (``PYTHONHASHSEED``) for str and bytes, so
the caller, the coordinator and a restarted pool would disagree about where a key lives.
xxh3-64 is stable across processes, machines and versions, and fast.

Keys are hashed over a canonical byte form, so the same logical key always lands on the same
partition: ``str`` as UTF-8, ``bytes``-likes as they are, ``int`` as 8 bytes little-endian two's
complement (``bool`` is rejected: ``True`` and ``1`` would silently collide).
"""

from __future__ import annotations

import xxhash

__all__ = ["key_hash", "partition_for", "Key"]

Key = str | bytes | int

_INT_MIN = -(1 << 63)
_INT_MAX = (1 << 63) - 1


def key_hash(key: Key) -> int:
    """Stable unsigned 64-bit hash of ``key`` (xxh3_64)."""
    if isinstance(key, str):
        data = key.encode("utf-8")
    elif isinstance(key, (bytes, bytearray, memoryview)):
        data = bytes(key)
    elif isinstance(key, int) and not isinstance(key, bool):
        if not _INT_MIN <= key <= _INT_MAX:
            raise ValueError(f"int keys must fit in a signed 64-bit integer, got {key}")
        data = key.to_bytes(8, "little", signed=True)
    else:
        raise TypeError(f"partition keys must be str, bytes or int, not {type(key).__name__}")
    return xxhash.xxh3_64_intdigest(data)


def partition_for(key_hash: int, n: int) -> int:
    """Partition of a hashed key among ``n`` partitions: ``key_hash % n``.

    Plain modulo (not jump/consistent hashing): the worker count of a pool is fixed for its
    life, so remapping on resize does not matter, and ``% n`` is what the docs promise. The
    bias of a 64-bit hash modulo a small ``n`` is below 1e-17.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return key_hash % n
