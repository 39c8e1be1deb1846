"""One small adapter per library, so every workload is written once and run on each.

An adapter exposes only what the workloads need: start a pool of N workers, submit one task
(optionally "urgent", optionally with a per-task timeout), run the library's best chunked map,
close it politely, and abort it (kill what it started) when a task is still hung. Capabilities a
library lacks are declared, not faked: the workloads report "FIFO" or "no kill" for them.

Peers are imported lazily inside ``start`` so a missing optional package only disables its row.
"""

from __future__ import annotations

import concurrent.futures as cf
import importlib.metadata
import importlib.util
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar, Protocol

import psutil

__all__ = [
    "ADAPTERS",
    "PEERS",
    "Adapter",
    "Handle",
    "available",
    "kill_descendants",
    "library_version",
    "make_adapter",
    "version_of",
]

DoneCallback = Callable[[], None]
ABORT_BOUND_S = 5.0  # how long a library's own hard stop may take before we SIGKILL its workers


class Handle(Protocol):
    """What the workloads hold for one submitted task, whatever the library returns."""

    def wait(self, timeout: float | None) -> bool:
        """Block until done or ``timeout``; True when done. Never raises the task's error."""

    def result(self) -> Any:
        """The value (or the task's exception, raised); only call once ``wait`` said done."""


class _FutureHandle:
    """A ``concurrent.futures.Future``. ``fut.result(t)`` is not used for waiting because its
    TimeoutError would be indistinguishable from a task that failed with TimeoutError."""

    __slots__ = ("fut",)

    def __init__(self, fut: cf.Future[Any], on_done: DoneCallback | None) -> None:
        self.fut = fut
        if on_done is not None:
            fut.add_done_callback(lambda _f: on_done())

    def wait(self, timeout: float | None) -> bool:
        done, _ = cf.wait([self.fut], timeout)
        return bool(done)

    def result(self) -> Any:
        return self.fut.result(0)


class _AsyncResultHandle:
    """A ``multiprocessing.pool.AsyncResult`` or mpire's look-alike."""

    __slots__ = ("res",)

    def __init__(self, res: Any) -> None:
        self.res = res

    def wait(self, timeout: float | None) -> bool:
        self.res.wait(timeout)
        return bool(self.res.ready())

    def result(self) -> Any:
        return self.res.get(0)


def kill_descendants(grace: float = 2.0) -> int:
    """SIGKILL every process this one started (recursively); returns how many were alive.

    The bench server runs one library at a time, so its descendants are exactly that library's
    workers (plus multiprocessing helpers, which restart on demand).
    """
    try:
        kids = psutil.Process().children(recursive=True)
    except psutil.Error:
        return 0
    for p in kids:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(kids, timeout=grace)
    return len(kids)


def version_of(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


class Adapter:
    """Base class: one pool of one library. Subclasses set the class attributes below."""

    name: ClassVar[str] = ""  # the --against name
    label: ClassVar[str] = ""  # what the table shows
    module: ClassVar[str] = ""  # import probe for availability
    dist: ClassVar[str] = ""  # distribution name for the version line
    map_api: ClassVar[str] = "map"  # which call W2 uses, shown in its note
    # W2 tries each and keeps the best; None means the library's own automatic chunking.
    chunksizes: ClassVar[tuple[int | None, ...]] = (500, 2000, 10000)
    priorities: ClassVar[bool] = False  # can an urgent task overtake queued ones?
    task_timeout: ClassVar[bool] = False  # can a running task be stopped after a time limit?

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.pool: Any = None

    def start(self, *, lanes: bool = False) -> None:
        raise NotImplementedError

    def submit(
        self,
        fn: Callable[..., Any],
        *args: Any,
        urgent: bool | None = None,
        timeout: float | None = None,
        on_done: DoneCallback | None = None,
    ) -> Handle:
        raise NotImplementedError

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any], chunksize: int | None) -> Iterator[Any]:
        raise NotImplementedError

    def close(self) -> None:
        """Graceful shutdown: wait for what is running (callers make sure nothing hangs)."""
        raise NotImplementedError

    def abort(self) -> None:
        """Stop at once, killing workers even mid-task (used after W6's hung task).

        The library's own hard stop goes first and SIGKILL second: killing multiprocessing.Pool's
        workers first can leave its queue lock held by a dead process, and ``terminate()`` then
        blocks forever. The hard stop runs in a thread with a bound for the same reason; if it
        is still stuck, the bench server gets killed by the runner anyway (the run is dirty).
        """
        stopper = threading.Thread(target=self._quietly_shutdown_nowait, daemon=True)
        stopper.start()
        stopper.join(ABORT_BOUND_S)
        kill_descendants()

    def _quietly_shutdown_nowait(self) -> None:
        try:
            self._shutdown_nowait()
        except Exception:  # noqa: BLE001, S110 - best effort: SIGKILL of the workers follows anyway
            pass

    def _shutdown_nowait(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class LaneMPAdapter(Adapter):
    name = "lane_mp"
    label = "lane_mp"
    module = "lane_mp"
    dist = "lane_mp"
    map_api = "map"
    chunksizes = (None, 2000, 10000)
    priorities = True
    task_timeout = True

    def start(self, *, lanes: bool = False) -> None:
        from lane_mp import Lane, LaneConfig, LanePool

        if lanes:
            self.pool = LanePool(
                self.workers,
                lanes=[
                    Lane("urgent", 0, LaneConfig(0, None)),
                    Lane("background", 5, LaneConfig(0, None)),
                ],
                default_lane="background",
            )
        else:
            self.pool = LanePool(self.workers)  # what a user gets: default lanes
        self._lanes = lanes

    def submit(self, fn, *args, urgent=None, timeout=None, on_done=None):  # type: ignore[no-untyped-def]
        opts: dict[str, Any] = {}
        if urgent is not None and self._lanes:
            opts["lane"] = "urgent" if urgent else "background"
        if timeout is not None:
            opts["timeout"] = timeout
        fut = self.pool.submit_call(fn, args, **opts) if opts else self.pool.submit(fn, *args)
        return _FutureHandle(fut, on_done)

    def map(self, fn, items, chunksize):  # type: ignore[no-untyped-def]
        return self.pool.map(fn, items, chunksize=chunksize)

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def abort(self) -> None:
        # lane_mp kills its own workers; killing the forkserver too would only slow the next run.
        self.pool.kill()


class PPEAdapter(Adapter):
    name = "ppe"
    label = "ProcessPoolExecutor"
    module = "concurrent.futures"
    dist = ""

    def start(self, *, lanes: bool = False) -> None:
        self.pool = cf.ProcessPoolExecutor(self.workers)

    def submit(self, fn, *args, urgent=None, timeout=None, on_done=None):  # type: ignore[no-untyped-def]
        return _FutureHandle(self.pool.submit(fn, *args), on_done)

    def map(self, fn, items, chunksize):  # type: ignore[no-untyped-def]
        return self.pool.map(fn, items, chunksize=chunksize or 1)

    def close(self) -> None:
        self.pool.shutdown(wait=True)


class LokyAdapter(PPEAdapter):
    name = "loky"
    label = "loky"
    module = "loky"
    dist = "loky"

    def start(self, *, lanes: bool = False) -> None:
        import loky

        self.pool = loky.ProcessPoolExecutor(self.workers)

    def _shutdown_nowait(self) -> None:
        self.pool.shutdown(wait=False, kill_workers=True)


class MPPoolAdapter(Adapter):
    name = "mp_pool"
    label = "multiprocessing.Pool"
    module = "multiprocessing"
    dist = ""
    map_api = "imap_unordered"

    def start(self, *, lanes: bool = False) -> None:
        import multiprocessing

        self.pool = multiprocessing.Pool(self.workers)

    def submit(self, fn, *args, urgent=None, timeout=None, on_done=None):  # type: ignore[no-untyped-def]
        if on_done is None:
            return _AsyncResultHandle(self.pool.apply_async(fn, args))
        cb = lambda _r: on_done()
        return _AsyncResultHandle(self.pool.apply_async(fn, args, callback=cb, error_callback=cb))

    def map(self, fn, items, chunksize):  # type: ignore[no-untyped-def]
        return self.pool.imap_unordered(fn, items, chunksize=chunksize or 1)

    def close(self) -> None:
        self.pool.close()
        self.pool.join()

    def _shutdown_nowait(self) -> None:
        self.pool.terminate()


class PebbleAdapter(Adapter):
    name = "pebble"
    label = "pebble"
    module = "pebble"
    dist = "pebble"
    task_timeout = True

    def start(self, *, lanes: bool = False) -> None:
        import pebble

        self.pool = pebble.ProcessPool(max_workers=self.workers)

    def submit(self, fn, *args, urgent=None, timeout=None, on_done=None):  # type: ignore[no-untyped-def]
        if hasattr(self.pool, "submit"):  # pebble >= 5.1; schedule() is deprecated there
            fut = self.pool.submit(fn, timeout, *args)
        else:
            fut = self.pool.schedule(fn, args=args, timeout=timeout)
        return _FutureHandle(fut, on_done)

    def map(self, fn, items, chunksize):  # type: ignore[no-untyped-def]
        return iter(self.pool.map(fn, items, chunksize=chunksize or 1).result())

    def close(self) -> None:
        self.pool.close()
        self.pool.join()

    def _shutdown_nowait(self) -> None:
        self.pool.stop()
        self.pool.join(timeout=2)


class MpireAdapter(Adapter):
    name = "mpire"
    label = "mpire"
    module = "mpire"
    dist = "mpire"
    map_api = "imap_unordered"
    chunksizes = (None, 2000, 10000)
    task_timeout = True

    def start(self, *, lanes: bool = False) -> None:
        from mpire.pool import WorkerPool

        self.pool = WorkerPool(n_jobs=self.workers)

    def submit(self, fn, *args, urgent=None, timeout=None, on_done=None):  # type: ignore[no-untyped-def]
        cb = None if on_done is None else (lambda _r: on_done())
        res = self.pool.apply_async(fn, args, callback=cb, error_callback=cb, task_timeout=timeout)
        return _AsyncResultHandle(res)

    def map(self, fn, items, chunksize):  # type: ignore[no-untyped-def]
        items = list(items)  # mpire needs a length to chunk automatically
        return self.pool.imap_unordered(fn, items, chunk_size=chunksize, iterable_len=len(items))

    def close(self) -> None:
        self.pool.stop_and_join()

    def _shutdown_nowait(self) -> None:
        self.pool.terminate()


ADAPTERS: dict[str, type[Adapter]] = {
    a.name: a for a in (LaneMPAdapter, PPEAdapter, MPPoolAdapter, LokyAdapter, PebbleAdapter, MpireAdapter)
}
PEERS: tuple[str, ...] = ("ppe", "mp_pool", "loky", "pebble", "mpire")
ALWAYS: frozenset[str] = frozenset({"lane_mp", "ppe", "mp_pool"})


def available(name: str) -> bool:
    """Whether a library's package can be imported here (without importing it for real)."""
    cls = ADAPTERS[name]
    return importlib.util.find_spec(cls.module) is not None


def make_adapter(name: str, workers: int) -> Adapter:
    return ADAPTERS[name](workers)


def library_version(name: str) -> str | None:
    cls = ADAPTERS[name]
    if name == "lane_mp":
        import lane_mp

        return lane_mp.__version__
    if not cls.dist:
        return "stdlib"
    return version_of(cls.dist)
