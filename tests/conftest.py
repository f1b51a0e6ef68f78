"""Shared test fixtures: where the full reference data (``../shared``) and the subset live."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA = Path(__file__).resolve().parent / "data"


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or a pytest skip saying the full set is not there."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"full reference set not available: {path} is missing (clone beside ../shared)")
    return path
