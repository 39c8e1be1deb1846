"""Task functions for ``dask_cluster.py``. Dask workers import them by name (``dask_tasks:...``),
so they live in a module the workers can import: a ``LocalCluster`` started by the example
inherits its ``sys.path``; workers of an existing cluster need it too, e.g.
``PYTHONPATH=examples dask worker tcp://scheduler:8786`` (or install your own package on them)."""


def count_primes(limit: int) -> int:
    """Deliberately CPU-heavy pure Python."""
    sieve = bytearray([1]) * (limit + 1)
    sieve[0:2] = b"\x00\x00"
    for i in range(2, int(limit**0.5) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytearray(len(sieve[i * i :: i]))
    return sum(sieve)


def spin_forever() -> None:
    """Never returns and never yields: only killing its process stops it."""
    while True:
        pass


if __name__ == "__main__":
    print("task functions for examples/dask_cluster.py: run that file instead")
