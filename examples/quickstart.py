"""Quick start: run CPU-heavy work on every core, urgent work first."""

from lane_mp import LanePool, Priority


def count_primes(limit: int) -> int:
    """Deliberately CPU-heavy pure Python."""
    sieve = bytearray([1]) * (limit + 1)
    sieve[0:2] = b"\x00\x00"
    for i in range(2, int(limit**0.5) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytearray(len(sieve[i * i :: i]))
    return sum(sieve)


if __name__ == "__main__":
    with LanePool() as pool:  # one worker per CPU, six default lanes
        # A background batch in a low lane ...
        batch = pool.map(count_primes, [200_000] * 20, lane="prompt")
        # ... does not delay urgent work in a high lane.
        urgent = pool.submit(count_primes, 10_000, lane="system", priority=Priority.CRITICAL)
        print("urgent:", urgent.result())
        print("batch total:", sum(batch))
        print("lanes:", [(s["name"], s["completed"]) for s in pool.stats()["lanes"]])
