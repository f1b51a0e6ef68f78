"""Support for the optional mypyc build (``python -m swiotlb.native``): the modules it compiles,
a check for stale builds, and the ``mypyc_attr`` decorator.

This module is never compiled. ``mypyc_attr`` is the real decorator from ``mypy_extensions`` when
that is installed (it comes with mypy) and a no-op otherwise, so the pure-Python install needs no
new dependency. mypyc recognises the decorator by its full name, which this re-export keeps.
"""

from __future__ import annotations

import importlib.machinery
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

if TYPE_CHECKING:
    from mypy_extensions import mypyc_attr as mypyc_attr
else:
    try:
        from mypy_extensions import mypyc_attr
    except ImportError:  # the pure-Python install: nothing reads the attributes

        def mypyc_attr(*attrs: str, **kwattrs: Any) -> Callable[[_T], _T]:
            return lambda x: x

    _T = TypeVar("_T")

COMPILED: tuple[str, ...] = (
    "swiotlb.core.constants",
    "swiotlb.core.profiles",
    "swiotlb.core.pool",
    "swiotlb.core.search",
    "swiotlb.core.sizing",
    "swiotlb.core.allocator",
    "swiotlb.memory.stats",
    "swiotlb.policies.env",
    "swiotlb.policies.buffers",
    "swiotlb.policies.deferral",
    "swiotlb.policies.base",
    "swiotlb.policies.static",
    "swiotlb.policies.linux66",
    "swiotlb.policies.adaptive",
    "swiotlb.sim.engine",
    "swiotlb.sim.metrics",
    "swiotlb.sim.simulation",
    "swiotlb.workloads.fio_lanes",
)
"""The modules the mypyc build compiles: the simulator's and the allocator's hot paths."""

GROUP = "swiotlb._native"
"""The mypyc group: its shared library is ``swiotlb/_native__mypyc*.so``."""

PACKAGE_DIR = Path(__file__).resolve().parent
EXT_SUFFIXES = tuple(importlib.machinery.EXTENSION_SUFFIXES)


def _source(module: str, src: Path) -> Path:
    return src.joinpath(*module.split(".")).with_suffix(".py")


def stale(package_dir: Path = PACKAGE_DIR) -> list[str]:
    """Compiled modules whose source was changed after the build: Python would still load the
    extension module, so the edit would be ignored. Compares modification times only."""
    out = []
    for module in COMPILED:
        py = _source(module, package_dir.parent)
        for suffix in EXT_SUFFIXES:
            so = py.parent / (py.stem + suffix)
            if so.is_file() and py.is_file() and py.stat().st_mtime > so.stat().st_mtime:
                out.append(module)
    return out


def warn_if_stale() -> None:
    """Warn (at ``import swiotlb``) when a compiled module is older than its source."""
    old = stale()
    if old:
        import warnings

        warnings.warn(
            f"swiotlb: compiled modules older than their sources are loaded instead of them: {', '.join(old)}; "
            "run `python -m swiotlb.native build` (or `clean` for pure Python)",
            RuntimeWarning,
            stacklevel=2,
        )
