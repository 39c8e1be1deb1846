"""key -> partition: stable across processes and releases, spread evenly, strict about types."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest
import xxhash
from hypothesis import given
from hypothesis import strategies as st

from lane_mp.partitions import key_hash, partition_for

# Fixed values: a change here moves every user's keyed work to other workers. Do not "update"
# them; if one fails, the hashing changed. ("" is XXH3-64's published empty-input value.)
EXPECTED = [
    ("", 0x2D06800538D394C2),
    ("a", 16629034431890738719),
    ("user:42", 11511735035886662826),
    ("héllo", 7657728615535385375),
    (b"a", 16629034431890738719),
    (0, 14374147212387527897),
    (1, 3439722301264460078),
    (-1, 5841669975847748627),
    (2**63 - 1, 11687913294787043142),
    (-(2**63), 9407778237848358495),
]


@pytest.mark.parametrize(("key", "expected"), EXPECTED)
def test_key_hash_fixed_values(key: str | bytes | int, expected: int) -> None:
    assert key_hash(key) == expected


def test_canonical_byte_forms() -> None:
    assert key_hash("héllo") == xxhash.xxh3_64_intdigest("héllo".encode())
    assert key_hash("abc") == key_hash(b"abc") == key_hash(bytearray(b"abc")) == key_hash(memoryview(b"abc"))
    assert key_hash(258) == xxhash.xxh3_64_intdigest(b"\x02\x01\x00\x00\x00\x00\x00\x00")
    assert key_hash(-2) == xxhash.xxh3_64_intdigest(b"\xfe" + b"\xff" * 7)
    assert key_hash(1) != key_hash("1")


def test_stable_across_processes_with_different_hash_seeds() -> None:
    code = "from lane_mp.partitions import key_hash; print(key_hash('user:42'), key_hash(7))"
    outs = set()
    for seed in ("1", "2"):
        env = {"PYTHONHASHSEED": seed, "PYTHONPATH": ":".join(sys.path)}
        outs.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                check=True, timeout=30).stdout)
    assert outs == {f"11511735035886662826 {key_hash(7)}\n"}


@pytest.mark.parametrize("bad", [True, 1.5, None, ("a",), object()])
def test_rejects_other_types(bad: object) -> None:
    with pytest.raises(TypeError):
        key_hash(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [2**63, -(2**63) - 1, 10**30])
def test_rejects_ints_beyond_64_bits(bad: int) -> None:
    with pytest.raises(ValueError):
        key_hash(bad)


def test_partition_for() -> None:
    assert partition_for(10, 4) == 2
    assert partition_for(key_hash("user:42"), 1) == 0
    assert partition_for(key_hash("user:42"), 7) == 11511735035886662826 % 7
    with pytest.raises(ValueError):
        partition_for(5, 0)


@given(st.one_of(st.text(), st.binary(), st.integers(-(2**63), 2**63 - 1)), st.integers(1, 512))
def test_partition_in_range_and_deterministic(key: str | bytes | int, n: int) -> None:
    h = key_hash(key)
    assert 0 <= h < 2**64
    assert h == key_hash(key)
    assert 0 <= partition_for(h, n) < n


@pytest.mark.parametrize("n", [2, 3, 8, 61])
def test_spread_of_typical_keys(n: int) -> None:
    keys = 20_000
    for make in (lambda i: f"user:{i}", lambda i: i, lambda i: i * 4096):
        counts = Counter(partition_for(key_hash(make(i)), n) for i in range(keys))
        assert len(counts) == n
        mean = keys / n
        # Binomial sd is sqrt(mean); 6 sd keeps this deterministic test far from the edge.
        slack = 6 * mean**0.5
        assert max(counts.values()) < mean + slack and min(counts.values()) > mean - slack, counts
