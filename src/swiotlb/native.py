"""The optional mypyc build of the hot modules, and which build is running.

The pure-Python package is the default and the reference. For speed, the modules in
:data:`COMPILED` can be compiled with mypyc (it ships with mypy, a test dependency) into extension
modules that sit beside their sources; Python then imports the ``.so`` instead of the ``.py``.
Deleting them falls back to the sources. Results are the same bytes either way.

    python -m swiotlb.native build     # compile in place (needs mypy, setuptools and a C compiler)
    python -m swiotlb.native status    # which modules are compiled and active
    python -m swiotlb.native clean     # remove the extension modules: pure Python again

``SWIOTLB_COMPILE=1 pip install -e '.[test]'`` does the same build from ``hatch_build.py``.
This module and ``swiotlb._mypyc`` are never compiled: they must work without mypy installed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from swiotlb._mypyc import COMPILED, EXT_SUFFIXES, GROUP, PACKAGE_DIR, _source, stale

__all__ = ["COMPILED", "GROUP", "active", "build", "clean", "describe", "stale"]

def active(loaded: bool = True) -> dict[str, bool]:
    """For each module of :data:`COMPILED`: whether it runs compiled.

    A module already imported answers by its ``__file__`` (unless ``loaded`` is False: then the
    answer is what a new process would load); any other by whether an extension module sits
    beside its source (the import system prefers it to the ``.py``). Nothing is imported.
    """
    out = {}
    for module in COMPILED:
        imported = sys.modules.get(module) if loaded else None
        if imported is not None:
            out[module] = str(getattr(imported, "__file__", "")).endswith(EXT_SUFFIXES)
            continue
        py = _source(module, PACKAGE_DIR.parent)
        out[module] = any((py.parent / (py.stem + suffix)).is_file() for suffix in EXT_SUFFIXES)
    return out


def describe(loaded: bool = True) -> str:
    """One line: ``compiled: yes (mypyc, 17/17 modules)``, ``compiled: no (pure Python)`` or partial."""
    state = active(loaded)
    n = sum(state.values())
    if n == 0:
        return "compiled: no (pure Python)"
    if n == len(state):
        return f"compiled: yes (mypyc, {n}/{n} modules)"
    missing = ", ".join(m for m, on in state.items() if not on)
    return f"compiled: partly (mypyc, {n}/{len(state)} modules; pure: {missing})"


def artefacts(package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """Every extension module under ``package_dir`` (the ``swiotlb`` directory).

    The pure-Python package has none, so all of them come from a mypyc build (this one or an
    earlier one with a different module list).
    """
    return sorted(p for p in package_dir.rglob("*") if p.name.endswith(EXT_SUFFIXES) and p.is_file())


def clean(package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """Remove the extension modules: the sources are imported again."""
    gone = artefacts(package_dir)
    for path in gone:
        path.unlink()
    return gone


def build(
    package_dir: Path = PACKAGE_DIR,
    opt_level: str = "3",
    jobs: int | None = None,
    verbose: bool = False,
) -> list[Path]:
    """Compile :data:`COMPILED` with mypyc and put the extension modules beside the sources.

    The C build runs in a temporary directory (with no ``pyproject.toml``, which older
    setuptools cannot read) and only the finished ``.so`` files are copied into the tree. Raises
    ``subprocess.CalledProcessError`` when mypyc or the C compiler fails; the tree is then
    unchanged apart from stale artefacts, which are removed first.
    """
    import shutil
    import subprocess
    import tempfile

    src = package_dir.parent
    project = src.parent
    clean(package_dir)
    paths = [str(_source(m, src)) for m in COMPILED]
    config = project / "pyproject.toml"
    with tempfile.TemporaryDirectory(prefix="swiotlb-mypyc-") as tmp:
        script = Path(tmp) / "setup_mypyc.py"
        script.write_text(
            "import sys\n"
            "from setuptools import setup\n"
            "from mypyc.build import mypycify\n"
            f"paths = {paths!r}\n"
            f"opts = {(['--config-file', str(config)] if config.exists() else [])!r}\n"
            "setup(name='swiotlb-native', ext_modules=mypycify(opts + paths, opt_level="
            f"{opt_level!r}, group_name={GROUP!r}, verbose={verbose!r}))\n"
        )
        cmd = [sys.executable, str(script), "build_ext", "--build-lib", "lib", "--build-temp", "tmp"]
        if jobs:
            cmd += ["--parallel", str(jobs)]
        env = dict(os.environ, MYPYPATH=str(src))
        out = None if verbose else subprocess.PIPE
        proc = subprocess.run(cmd, cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
        if proc.returncode:
            if proc.stdout:
                sys.stderr.write(proc.stdout)
            raise subprocess.CalledProcessError(proc.returncode, cmd)
        built = Path(tmp) / "lib" / "swiotlb"
        placed = []
        for so in sorted(built.rglob("*")):
            if so.is_file() and so.name.endswith(EXT_SUFFIXES):
                dest = package_dir / so.relative_to(built)
                shutil.copy2(so, dest)
                placed.append(dest)
    return placed


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m swiotlb.native", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="compile the hot modules with mypyc, in place")
    b.add_argument("--opt-level", default="3")
    b.add_argument("-j", "--jobs", type=int, default=None)
    b.add_argument("-v", "--verbose", action="store_true")
    sub.add_parser("clean", help="remove the compiled modules")
    sub.add_parser("status", help="which modules are compiled")
    args = ap.parse_args(argv)
    if args.cmd == "build":
        placed = build(opt_level=args.opt_level, jobs=args.jobs, verbose=args.verbose)
        print(f"built {len(placed)} extension modules in {PACKAGE_DIR}")
    elif args.cmd == "clean":
        print(f"removed {len(clean())} extension modules")
    print(describe(loaded=args.cmd == "status"))  # after a build or clean: what a new process loads
    return 0


if __name__ == "__main__":
    sys.exit(main())
