"""Frozen, validated option objects: what a lane is and how it behaves.

All of them are ``msgspec.Struct`` (frozen), so they pickle cheaply to the coordinator process and
``msgspec.convert`` can build them from a TOML/JSON/YAML file with errors that name the bad field
(see ``LanePool.from_config``). Decisions that depend on time take the time as an argument.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Sequence
from typing import Any, Literal

import msgspec

from .errors import ConfigError

__all__ = [
    "Priority",
    "RetryPolicy",
    "FailureInfo",
    "RateLimitConfig",
    "PriorityBoostConfig",
    "PartitionConfig",
    "CircuitBreakerConfig",
    "LaneConfig",
    "Lane",
    "DEFAULT_LANES",
    "default_lanes",
    "PoolFileConfig",
    "load_pool_config",
]


class Priority(enum.IntEnum):
    """Item priority within a lane; lower value runs first. FIFO within one level."""

    CRITICAL = 0
    HIGH = 1
    NORMAL = 2
    LOW = 3
    BACKGROUND = 4


def _check(cond: bool, field: str, why: str) -> None:
    if not cond:
        raise ConfigError(f"{field}: {why}", field=field)


class FailureInfo(msgspec.Struct, frozen=True):
    """What the retry policy sees of a failed attempt (plain data; it crosses processes).

    ``kind`` is ``"raised"`` (the function raised), ``"timeout"``, ``"crashed"`` (the worker
    died) or ``"error"`` (encoding / import problems, never retried by default).
    ``exc_types`` are the qualified names of the exception's class and its bases.
    """

    kind: str
    exc_types: tuple[str, ...] = ()
    message: str = ""


def _qualname(tp: type) -> str:
    return f"{tp.__module__}.{tp.__qualname__}"


class RetryPolicy(msgspec.Struct, frozen=True):
    """How often and when a failed command runs again.

    A command runs at most ``max_retries + 1`` times. Which failures retry: timeouts and
    crashes when ``retry_timeouts`` / ``retry_crashes`` (both default on), raised exceptions
    whose class (or a base) is named in ``retry_on`` (default: any ``Exception``), and, if given,
    only where ``retry_if(info)`` is true. ``retry_if`` must be a module-level function (it is
    pickled to the coordinator).
    """

    kind: Literal["none", "fixed", "exponential"] = "none"
    max_retries: int = 0
    initial_delay: float = 0.1
    multiplier: float = 2.0
    max_delay: float = 30.0
    jitter: bool = True
    retry_on: tuple[str, ...] = ("builtins.Exception",)
    retry_timeouts: bool = True
    retry_crashes: bool = True
    retry_if: Any = None

    def __post_init__(self) -> None:
        _check(self.max_retries >= 0, "max_retries", "must be >= 0")
        _check(self.initial_delay >= 0, "initial_delay", "must be >= 0")
        _check(self.multiplier >= 1.0, "multiplier", "must be >= 1")
        _check(self.max_delay >= 0, "max_delay", "must be >= 0")

    @classmethod
    def none(cls) -> RetryPolicy:
        return cls()

    @classmethod
    def fixed(cls, max_retries: int, delay: float = 0.1, **kw: Any) -> RetryPolicy:
        return cls("fixed", max_retries, delay, 1.0, delay, False, **_norm_retry_kw(kw))

    @classmethod
    def exponential(
        cls,
        max_retries: int,
        initial_delay: float = 0.1,
        multiplier: float = 2.0,
        max_delay: float = 30.0,
        jitter: bool = True,
        **kw: Any,
    ) -> RetryPolicy:
        return cls(
            "exponential", max_retries, initial_delay, multiplier, max_delay, jitter,
            **_norm_retry_kw(kw),
        )

    def should_retry(self, attempt: int, info: FailureInfo) -> bool:
        """``attempt`` is the number of runs so far (1 after the first failure)."""
        if self.kind == "none" or attempt > self.max_retries:
            return False
        if info.kind == "timeout":
            ok = self.retry_timeouts
        elif info.kind == "crashed":
            ok = self.retry_crashes
        elif info.kind == "raised":
            ok = any(name in self.retry_on for name in info.exc_types)
        else:
            ok = False
        if ok and self.retry_if is not None:
            ok = bool(self.retry_if(info))
        return ok

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Backoff before run ``attempt + 1``; with jitter, uniform in [d/2, d] ("equal jitter")."""
        if self.kind == "fixed":
            return self.initial_delay
        d = min(self.max_delay, self.initial_delay * self.multiplier ** (attempt - 1))
        if self.jitter:
            d = d / 2 + (rng or random).random() * d / 2
        return d

    def decide(self, attempt: int, info: FailureInfo, rng: random.Random | None = None) -> float | None:
        """Pure decision: the delay before the next attempt, or None to give up."""
        return self.delay(attempt, rng) if self.should_retry(attempt, info) else None


def _norm_retry_kw(kw: dict[str, Any]) -> dict[str, Any]:
    retry_on = kw.get("retry_on")
    if retry_on is not None:
        if isinstance(retry_on, type) or isinstance(retry_on, str):
            retry_on = (retry_on,)
        kw["retry_on"] = tuple(r if isinstance(r, str) else _qualname(r) for r in retry_on)
    return kw


class RateLimitConfig(msgspec.Struct, frozen=True):
    """Dispatch rate limit of a lane. ``rate`` is per second; ``None`` means unlimited.

    ``token_bucket`` allows bursts of up to ``burst`` commands; ``sliding_window`` allows at most
    ``rate * window`` dispatches in any ``window`` seconds.
    """

    rate: float | None = None
    burst: int | None = None
    algorithm: Literal["token_bucket", "sliding_window"] = "token_bucket"
    window: float = 1.0

    def __post_init__(self) -> None:
        _check(self.rate is None or self.rate > 0, "rate", "must be > 0")
        _check(self.burst is None or self.burst >= 1, "burst", "must be >= 1")
        _check(self.window > 0, "window", "must be > 0")

    @classmethod
    def per_second(cls, n: float, *, burst: int | None = None, algorithm: str = "token_bucket") -> RateLimitConfig:
        return cls(float(n), burst, algorithm, 1.0)  # type: ignore[arg-type]

    @classmethod
    def per_minute(cls, n: float, *, burst: int | None = None, algorithm: str = "token_bucket") -> RateLimitConfig:
        return cls(n / 60.0, burst, algorithm, 60.0)  # type: ignore[arg-type]

    @classmethod
    def per_hour(cls, n: float, *, burst: int | None = None, algorithm: str = "token_bucket") -> RateLimitConfig:
        return cls(n / 3600.0, burst, algorithm, 3600.0)  # type: ignore[arg-type]

    @classmethod
    def unlimited(cls) -> RateLimitConfig:
        return cls()

    @property
    def is_unlimited(self) -> bool:
        return self.rate is None


class PriorityBoostConfig(msgspec.Struct, frozen=True):
    """Raise a command's priority as its deadline nears.

    ``steps`` are ``(fraction_of_time_left, boost)`` pairs: once no more than that fraction of the
    time between submit and deadline is left, the item priority improves by ``boost`` levels
    (never past CRITICAL). ``horizon`` (seconds) is the boost target for commands that have no
    deadline of their own: they are boosted as if due ``horizon`` after submit, but never failed.
    """

    steps: tuple[tuple[float, int], ...] = ()
    horizon: float | None = None

    def __post_init__(self) -> None:
        for frac, boost in self.steps:
            _check(0.0 < frac <= 1.0, "steps", "fractions must be in (0, 1]")
            _check(boost >= 0, "steps", "boosts must be >= 0")

    @classmethod
    def standard(cls, deadline: float | None = None) -> PriorityBoostConfig:
        return cls(((0.75, 1), (0.5, 2), (0.25, 3), (0.10, 4)), deadline)

    @classmethod
    def aggressive(cls, deadline: float | None = None) -> PriorityBoostConfig:
        return cls(((0.8, 2), (0.6, 4), (0.4, 6), (0.2, 8)), deadline)

    @classmethod
    def disabled(cls) -> PriorityBoostConfig:
        return cls()

    def with_boost(self, remaining: float, boost: int) -> PriorityBoostConfig:
        steps = tuple(sorted({*self.steps, (remaining, boost)}, reverse=True))
        return msgspec.structs.replace(self, steps=steps)

    def boost_for(self, fraction_left: float) -> int:
        """Levels of boost when ``fraction_left`` of the time to the deadline remains."""
        best = 0
        for frac, boost in self.steps:
            if fraction_left <= frac and boost > best:
                best = boost
        return best


class PartitionConfig(msgspec.Struct, frozen=True):
    """How dispatched commands are placed on workers.

    ``auto``: least-loaded worker, but a ``key=`` pins equal keys to one worker (stable xxhash);
    ``round_robin``: rotate over workers; ``hash``: every command goes to ``hash(key) % n``;
    ``none``: least-loaded, keys ignored.
    """

    mode: Literal["auto", "round_robin", "hash", "none"] = "auto"
    partitions: int | None = None

    @classmethod
    def auto(cls) -> PartitionConfig:
        return cls()

    @classmethod
    def round_robin(cls, n: int | None = None) -> PartitionConfig:
        return cls("round_robin", n)

    @classmethod
    def hash(cls, n: int | None = None) -> PartitionConfig:
        return cls("hash", n)

    @classmethod
    def none(cls) -> PartitionConfig:
        return cls("none")


class CircuitBreakerConfig(msgspec.Struct, frozen=True):
    """Open after ``failure_threshold`` consecutive failures; half-open after ``cooldown`` s.

    While open, ``mode="fail"`` makes ``submit`` raise :class:`CircuitOpen`; ``mode="hold"``
    keeps commands queued until the breaker half-opens.
    """

    failure_threshold: int = 5
    cooldown: float = 30.0
    mode: Literal["fail", "hold"] = "fail"

    def __post_init__(self) -> None:
        _check(self.failure_threshold >= 1, "failure_threshold", "must be >= 1")
        _check(self.cooldown >= 0, "cooldown", "must be >= 0")


class LaneConfig(msgspec.Struct, frozen=True):
    """Behaviour of one lane. ``max_concurrency=None`` means no limit but the workers.

    ``min_concurrency`` slots are reserved for this lane even while higher lanes are saturated.
    ``capacity`` bounds pending commands (``submit`` blocks, ``submit_nowait`` raises LaneFull).
    ``priority`` is the lane's priority when the lane is given without one (0 = highest).
    """

    min_concurrency: int = 1
    max_concurrency: int | None = 4
    timeout: float | None = None
    retry: RetryPolicy | None = None
    rate_limit: RateLimitConfig | None = None
    boost: PriorityBoostConfig | None = None
    capacity: int | None = None
    priority: int | None = None
    circuit_breaker: CircuitBreakerConfig | None = None
    durable: bool = False

    def __post_init__(self) -> None:
        _check(self.min_concurrency >= 0, "min_concurrency", "must be >= 0")
        _check(self.max_concurrency is None or self.max_concurrency >= 1, "max_concurrency", "must be >= 1")
        _check(
            self.max_concurrency is None or self.min_concurrency <= self.max_concurrency,
            "min_concurrency", "must be <= max_concurrency",
        )
        _check(self.timeout is None or self.timeout > 0, "timeout", "must be > 0")
        _check(self.capacity is None or self.capacity >= 1, "capacity", "must be >= 1")
        _check(self.priority is None or self.priority >= 0, "priority", "must be >= 0")

    def with_timeout(self, seconds: float | None) -> LaneConfig:
        return msgspec.structs.replace(self, timeout=seconds)

    def with_retry_policy(self, policy: RetryPolicy | None) -> LaneConfig:
        return msgspec.structs.replace(self, retry=policy)

    def with_rate_limit(self, rate_limit: RateLimitConfig | None) -> LaneConfig:
        return msgspec.structs.replace(self, rate_limit=rate_limit)

    def with_priority_boost(self, boost: PriorityBoostConfig | None) -> LaneConfig:
        return msgspec.structs.replace(self, boost=boost)

    def with_capacity(self, capacity: int | None) -> LaneConfig:
        return msgspec.structs.replace(self, capacity=capacity)

    def with_circuit_breaker(self, breaker: CircuitBreakerConfig | None) -> LaneConfig:
        return msgspec.structs.replace(self, circuit_breaker=breaker)

    def with_concurrency(self, min_concurrency: int, max_concurrency: int | None) -> LaneConfig:
        return msgspec.structs.replace(self, min_concurrency=min_concurrency, max_concurrency=max_concurrency)


class Lane(msgspec.Struct, frozen=True):
    """A named lane with its priority (0 = highest) and config."""

    name: str
    priority: int = 0
    config: LaneConfig = LaneConfig()

    def __post_init__(self) -> None:
        _check(bool(self.name), "name", "must not be empty")
        _check(self.priority >= 0, "priority", "must be >= 0")


# name, priority, max_concurrency: the six default lanes of DESIGN.md. min_concurrency is 0 so
# that on a small pool strict priority decides (a reserved slot per lane would need 6 workers).
DEFAULT_LANES: tuple[tuple[str, int, int], ...] = (
    ("system", 0, 5),
    ("control", 1, 3),
    ("query", 2, 10),
    ("session", 3, 5),
    ("skill", 4, 3),
    ("prompt", 5, 2),
)


def default_lanes() -> list[Lane]:
    return [Lane(n, p, LaneConfig(min_concurrency=0, max_concurrency=m)) for n, p, m in DEFAULT_LANES]


LanesArg = Sequence[Lane] | dict[str, "LaneConfig | tuple[LaneConfig, int]"] | None


def normalize_lanes(lanes: Any) -> list[Lane]:
    """Accept ``None``, a list of :class:`Lane`, or ``{name: LaneConfig | (LaneConfig, priority)}``."""
    if lanes is None:
        return default_lanes()
    out: list[Lane] = []
    if isinstance(lanes, dict):
        for i, (name, spec) in enumerate(lanes.items()):
            if isinstance(spec, tuple):
                cfg, prio = spec
            elif isinstance(spec, LaneConfig):
                cfg, prio = spec, spec.priority if spec.priority is not None else i
            else:
                raise ConfigError(f"lanes[{name!r}]: expected LaneConfig or (LaneConfig, priority)", field=name)
            out.append(Lane(name, prio, cfg))
    else:
        for lane in lanes:
            if not isinstance(lane, Lane):
                raise ConfigError(f"lanes: expected Lane, got {type(lane).__name__}", field="lanes")
            out.append(lane)
    names = [lane.name for lane in out]
    if len(set(names)) != len(names):
        raise ConfigError("lanes: duplicate lane names", field="lanes")
    if not out:
        raise ConfigError("lanes: at least one lane is needed", field="lanes")
    return out


Predicate = Callable[[FailureInfo], bool]


class PoolFileConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What ``LanePool.from_config(path)`` reads (TOML, JSON or YAML). ``lanes`` maps a name to
    a LaneConfig whose ``priority`` field gives the lane priority (default: file order)."""

    max_workers: int | None = None
    default_lane: str | None = None
    capacity_units: int | None = None
    mp_context: str | None = None
    max_tasks_per_child: int | None = None
    max_memory_per_child: int | None = None
    dead_letters: int | None = None
    partition: PartitionConfig | None = None
    retry: RetryPolicy | None = None
    lanes: dict[str, LaneConfig] | None = None


def load_pool_config(path: str) -> PoolFileConfig:
    """Decode a config file into typed options; a bad field raises ConfigError naming it."""
    import pathlib

    p = pathlib.Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}", field="path") from exc
    suffix = p.suffix.lower()
    try:
        if suffix == ".toml":
            import tomllib

            data = tomllib.loads(raw.decode())
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml  # optional: PyYAML
            except ImportError as exc:
                raise ConfigError("YAML config files need PyYAML (pip install pyyaml)", field="path") from exc
            data = yaml.safe_load(raw)
        elif suffix == ".json":
            data = msgspec.json.decode(raw)
        else:
            raise ConfigError(f"unknown config format {suffix!r}: use .toml, .json or .yaml", field="path")
        return msgspec.convert(data, PoolFileConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path}: {exc}", field=str(exc).rpartition("`")[0].rpartition("`")[2]) from exc
    except ConfigError:
        raise
    except Exception as exc:  # syntax errors of the file format
        raise ConfigError(f"{path}: {exc}", field="path") from exc
