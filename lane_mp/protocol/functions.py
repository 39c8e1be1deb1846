"""Functions travel by import path (``module:qualname``), never as code.

That keeps commands small, journal-able and replayable. A function that cannot be named this
way (lambda, closure, a method of a local class, a ``__main__`` function when the main module
cannot be re-imported by a spawned process) is refused at ``submit`` with
:class:`FunctionNotImportable`, naming it.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

from ..errors import FunctionNotImportable

__all__ = ["function_path", "resolve"]


def function_path(fn: Callable[..., Any], *, fork: bool) -> str:
    """``module:qualname`` for ``fn``, checked to resolve back to ``fn`` in this process."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if module is None and qualname and hasattr(fn, "__objclass__"):
        module = fn.__objclass__.__module__  # e.g. str.upper
    if not module or not qualname:
        raise FunctionNotImportable(f"{fn!r} has no module/qualname to import it by", function=repr(fn))
    if "<lambda>" in qualname or "<locals>" in qualname:
        raise FunctionNotImportable(
            f"{module}.{qualname} is a lambda or a nested function: workers import functions by "
            "name, so define it at module level",
            function=f"{module}:{qualname}",
        )
    path = f"{module}:{qualname}"
    if module == "__main__" and not fork:
        main = sys.modules.get("__main__")
        if getattr(main, "__file__", None) is None:
            raise FunctionNotImportable(
                f"{path} is defined in an interactive __main__, which spawned workers cannot "
                "import: put it in a module or use mp_context='fork'",
                function=path,
            )
    try:
        found = resolve(path)
    except Exception as exc:
        raise FunctionNotImportable(f"{path} cannot be imported back: {exc}", function=path) from exc
    if found is not fn and getattr(found, "__wrapped__", None) is not fn:
        raise FunctionNotImportable(f"{path} imports as a different object than the one given", function=path)
    return path


def resolve(path: str) -> Callable[..., Any]:
    module, _, qualname = path.partition(":")
    obj: Any = sys.modules.get(module) or importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj
