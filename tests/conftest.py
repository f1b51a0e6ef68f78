"""Shared test fixtures: where the full reference data (``../shared``) and the subset live."""

from __future__ import annotations

from pathlib import Path

import pytest

from swiotlb.native import active

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA = Path(__file__).resolve().parent / "data"


COMPILED = active()
"""Which modules run compiled (the optional mypyc build, ``python -m swiotlb.native build``)."""


def pure_only(module: str, why: str) -> pytest.MarkDecorator:
    """Skip a test when ``module`` runs compiled: mypyc checks every annotated argument type on
    entry (an ``int`` parameter refuses a float with its own TypeError and takes a bool as an
    int), and compiled code calls methods directly, past attributes set on an instance."""
    return pytest.mark.skipif(COMPILED.get(module, False), reason=f"{module} is compiled: {why}")


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or a pytest skip saying the full set is not there."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"full reference set not available: {path} is missing (clone beside ../shared)")
    return path
