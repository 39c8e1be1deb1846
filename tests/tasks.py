"""Module-level task functions for tests (workers import them by name)."""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any


def noop(x: Any = None) -> Any:
    return x


def add(a: int, b: int = 0) -> int:
    return a + b


def echo(*args: Any, **kwargs: Any) -> Any:
    return (args, kwargs)


def ident(x: Any) -> Any:
    return x


def square(x: int) -> int:
    return x * x


def boom(msg: str = "boom") -> None:
    raise ValueError(msg)


def sleep(seconds: float, value: Any = None) -> Any:
    time.sleep(seconds)
    return value


def pid(_: Any = None) -> int:
    return os.getpid()


def hang() -> None:
    while True:
        time.sleep(1)


def exit_now(code: int = 1) -> None:
    os._exit(code)


def sys_exit(code: int = 3) -> None:
    sys.exit(code)


def segfault() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def sigkill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def unpicklable_result() -> Any:
    return lambda: None


class Unpicklable:
    def __reduce__(self) -> Any:
        raise TypeError("this object refuses to be pickled")


def array_sum(a: Any) -> float:
    return float(a.sum())


def array_writeable(a: Any) -> bool:
    return bool(a.flags.writeable)


def make_array(n: int) -> Any:
    import numpy as np

    return np.arange(n, dtype=np.float64)


def fail_times(path: str, times: int) -> str:
    """Fail the first ``times`` calls (counted in a file), then succeed."""
    n = int(open(path).read() or 0) if os.path.exists(path) else 0
    with open(path, "w") as f:
        f.write(str(n + 1))
    if n < times:
        raise ValueError(f"failure {n + 1}")
    return "ok"


def record_start(path: str, tag: str, seconds: float = 0.0) -> str:
    with open(path, "a") as f:
        f.write(f"{tag}\n")
    time.sleep(seconds)
    return tag


def spawn_child_and_hang() -> None:
    import subprocess

    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    while True:
        time.sleep(1)


def init_fail() -> None:
    raise RuntimeError("initializer refuses")


_STATE: dict[str, Any] = {}


def init_set(value: Any) -> None:
    _STATE["value"] = value


def get_state(_: Any = None) -> Any:
    return _STATE.get("value")


class FailsToLoad:
    """Pickles fine in the caller; unpickling it in another process raises or kills."""

    def __init__(self, how: str) -> None:
        self.how = how
        self.origin = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        return {"how": self.how, "origin": self.origin}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if os.getpid() != state["origin"]:
            if state["how"] == "raise":
                raise RuntimeError("cannot load here")
            if state["how"] == "exit":
                os._exit(7)


class DiesWhenPickled:
    """A result whose pickling kills the worker (crash while encoding the result)."""

    def __reduce__(self) -> Any:
        os._exit(9)


def result_dies_when_pickled() -> Any:
    return DiesWhenPickled()


def result_fails_to_load_in_caller() -> Any:
    return FailsToLoad("raise")


def log_run(path: str, tag: Any, seconds: float = 0.0) -> Any:
    with open(path, "a") as f:
        f.write(f"{tag}\n")
    if seconds:
        time.sleep(seconds)
    return tag


_HOG: list[bytes] = []


def hog(mb: int) -> int:
    _HOG.append(b"x" * (mb << 20))
    return os.getpid()
