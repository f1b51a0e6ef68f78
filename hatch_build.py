"""Build hook: the optional mypyc build of the hot modules (see ``src/swiotlb/native.py``).

Off unless ``SWIOTLB_COMPILE=1``: then ``pip install -e .`` (or ``pip install .``, or
``python -m build``) first compiles :data:`swiotlb.native.COMPILED` with mypyc into extension
modules beside their sources. It needs a C compiler and the Python headers; pip installs mypy and
setuptools into the build environment. Without the variable the hook does nothing and the package
stays pure Python, as before.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

BUILD_REQUIRES = ["mypy>=2.4,<3", "setuptools>=61"]


def _enabled() -> bool:
    return os.environ.get("SWIOTLB_COMPILE", "").strip().lower() in ("1", "true", "yes", "on")


class MypycBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def dependencies(self) -> list[str]:
        return list(BUILD_REQUIRES) if _enabled() else []

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if not _enabled() or self.target_name != "wheel":
            return
        package = Path(self.root) / "src" / "swiotlb"
        # Import swiotlb.native without running swiotlb/__init__.py (the build environment has
        # none of the runtime dependencies): a bare package module whose path is the sources.
        saved = {k: v for k, v in sys.modules.items() if k == "swiotlb" or k.startswith("swiotlb.")}
        stub = types.ModuleType("swiotlb")
        stub.__path__ = [str(package)]
        sys.modules["swiotlb"] = stub
        try:
            native = importlib.import_module("swiotlb.native")
            jobs = int(os.environ.get("SWIOTLB_COMPILE_JOBS", "0")) or None
            placed = native.build(package, jobs=jobs)
        finally:
            for k in [k for k in sys.modules if k == "swiotlb" or k.startswith("swiotlb.")]:
                del sys.modules[k]
            sys.modules.update(saved)
        self.app.display_info(f"swiotlb: mypyc compiled {len(placed)} extension modules into {package}")
        # Extension modules are ignored by git (.gitignore), so name them for the wheel; an
        # editable install imports them from src/ directly.
        build_data["artifacts"] += [str(p.relative_to(self.root)) for p in placed]
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
