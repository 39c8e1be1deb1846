"""The exception tree: every public error pickles and sits where stdlib code expects it."""

from __future__ import annotations

import pickle
from concurrent.futures import BrokenExecutor
from concurrent.futures.process import BrokenProcessPool

import pytest

from lane_mp import errors


@pytest.mark.parametrize("name", errors.__all__)
def test_every_error_pickles_with_fields(name):
    cls = getattr(errors, name)
    exc = cls(f"{name} happened", pid=7, lane="q")
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is cls and str(back) == f"{name} happened"
    assert back.pid == 7 and back.fields == {"pid": 7, "lane": "q"}
    assert isinstance(back, errors.LaneMPError)


def test_stdlib_compatible_bases():
    assert issubclass(errors.PoolClosed, RuntimeError)
    assert issubclass(errors.TaskTimeout, TimeoutError)
    assert issubclass(errors.DeadlineExceeded, TimeoutError)
    assert issubclass(errors.BrokenPool, BrokenExecutor)
    assert issubclass(errors.WorkerCrashed, BrokenProcessPool)
    assert issubclass(errors.UnknownLane, LookupError)
    assert str(errors.UnknownLane("no lane 'x'")) == "no lane 'x'"


def test_docstring_draws_every_class():
    doc = errors.__doc__ or ""
    for name in errors.__all__:
        assert name in doc, name
