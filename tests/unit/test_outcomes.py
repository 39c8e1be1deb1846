"""Retry policy, dead-letter queue and circuit breaker: pure logic, fake clock."""

from __future__ import annotations

import pickle
import random

import pytest

from lane_mp.config import CircuitBreakerConfig, FailureInfo, RetryPolicy
from lane_mp.errors import ConfigError
from lane_mp.outcomes.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from lane_mp.outcomes.dlq import DeadLetter, DeadLetterQueue

RAISED = FailureInfo("raised", ("builtins.ValueError", "builtins.Exception", "builtins.BaseException"))
TIMEOUT = FailureInfo("timeout")
CRASH = FailureInfo("crashed")


def test_none_never_retries():
    p = RetryPolicy.none()
    assert p.decide(1, RAISED) is None and p.decide(1, CRASH) is None


def test_fixed_retries_bounded():
    p = RetryPolicy.fixed(2, delay=0.5)
    assert [p.decide(a, RAISED) for a in (1, 2, 3)] == [0.5, 0.5, None]


def test_exponential_backoff_without_jitter_is_exact_and_capped():
    p = RetryPolicy.exponential(10, initial_delay=0.1, multiplier=2.0, max_delay=1.0, jitter=False)
    assert [p.decide(a, RAISED) for a in range(1, 7)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_exponential_jitter_stays_within_half_to_full():
    p = RetryPolicy.exponential(5, initial_delay=1.0, multiplier=2.0, max_delay=100, jitter=True)
    rng = random.Random(3)
    for attempt in range(1, 5):
        full = 2.0 ** (attempt - 1)
        for _ in range(50):
            assert full / 2 <= p.decide(attempt, RAISED, rng) <= full


def test_which_failures_retry():
    p = RetryPolicy.fixed(3, retry_on=(KeyError,))
    assert p.decide(1, RAISED) is None
    assert p.decide(1, FailureInfo("raised", ("builtins.KeyError",))) is not None
    assert p.decide(1, TIMEOUT) is not None and p.decide(1, CRASH) is not None
    assert p.decide(1, FailureInfo("error")) is None  # import / encode errors never retry
    q = RetryPolicy.fixed(3, retry_timeouts=False, retry_crashes=False)
    assert q.decide(1, TIMEOUT) is None and q.decide(1, CRASH) is None


def _only_transient(info: FailureInfo) -> bool:
    return "transient" in info.message


def test_predicate_and_pickle():
    p = RetryPolicy.fixed(3, retry_if=_only_transient)
    assert p.decide(1, FailureInfo("raised", ("builtins.Exception",), "transient glitch")) is not None
    assert p.decide(1, FailureInfo("raised", ("builtins.Exception",), "fatal")) is None
    assert pickle.loads(pickle.dumps(p)) == p


def test_invalid_policy_names_field():
    with pytest.raises(ConfigError, match="max_retries"):
        RetryPolicy.fixed(-1)


def _letter(i: int) -> DeadLetter:
    return DeadLetter(i, "q", "m:f", 3, "ValueError", f"e{i}")


def test_dlq_bounded_evicts_oldest_and_counts():
    q = DeadLetterQueue(3)
    for i in range(5):
        q.push(_letter(i))
    assert [d.command_id for d in q.list()] == [2, 3, 4] and q.evicted == 2 and len(q) == 3
    assert q.pop().command_id == 2
    assert q.clear() == 2 and len(q) == 0 and q.pop() is None


def test_dlq_replay_resubmits_and_removes():
    q = DeadLetterQueue(10)
    for i in range(4):
        q.push(_letter(i))
    seen = []
    q._attach(lambda d: seen.append(d.command_id) or d.command_id)
    assert q.replay(lambda d: d.command_id % 2 == 0) == [0, 2]
    assert [d.command_id for d in q.list()] == [1, 3] and seen == [0, 2]


def test_breaker_opens_half_opens_and_closes():
    b = CircuitBreaker(CircuitBreakerConfig(failure_threshold=3, cooldown=10.0))
    t = 100.0
    for _ in range(2):
        b.record(False, t)
    assert b.state(t) == CLOSED and b.allows(t)
    assert b.record(False, t) is True
    assert b.state(t) == OPEN and not b.allows(t + 5) and b.open_until() == 110.0
    assert b.state(t + 10) == HALF_OPEN and b.allows(t + 10)
    b.record(False, t + 10)  # a failure while half-open re-opens at once
    assert b.state(t + 11) == OPEN
    b.record(True, t + 20)
    assert b.state(t + 20) == CLOSED and b.failures == 0 and b.trips == 2
