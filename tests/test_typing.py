"""The typed layers stay mypy --strict clean (pyproject.toml lists them)."""

from __future__ import annotations

import pytest

from tests.conftest import REPO


def test_mypy_strict_is_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    api = pytest.importorskip("mypy.api", reason="mypy is part of the test extra")
    monkeypatch.chdir(REPO)  # mypy_path = "src" is relative to the working directory
    out, err, status = api.run(["--config-file", str(REPO / "pyproject.toml"), "--no-incremental"])
    assert status == 0, out + err
