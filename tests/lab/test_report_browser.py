"""The report in a real browser: headless chromium loads it offline without an error, draws every
figure at a non-empty size, and leaves a screenshot in ``.artifacts/`` for a person to look at."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from swiotlb.lab.report import figure_ids
from tests.conftest import REPO
from tests.lab.cdp import Browser, chromium_path

ARTIFACTS = REPO / ".artifacts"

SIZES = """JSON.stringify([...document.querySelectorAll('figure[data-figure]')].map(f => {
  const svg = f.querySelector(':scope > svg'), img = f.querySelector('svg image');
  const box = e => { if (!e) return null; const r = e.getBoundingClientRect(); return [r.width, r.height]; };
  return {id: f.id, kind: f.dataset.figure, svg: box(svg), image: box(img)};
}))"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    if chromium_path() is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium; .ci/run installs it)")
    with Browser(tmp_path_factory.mktemp("chromium-profile")) as b:
        yield b


def test_the_report_renders_every_figure_without_errors(report_dir: Path, browser: Browser) -> None:
    page = report_dir / "report.html"
    browser.load(page.as_uri())
    shot = browser.screenshot(ARTIFACTS / "report.png")
    assert browser.errors() == []
    assert browser.evaluate("document.title") == "swiotlb compare report"
    drawn = json.loads(browser.evaluate(SIZES))
    expected = figure_ids(json.loads((report_dir / "results.json").read_text()))
    assert [f["id"] for f in drawn] == expected
    for f in drawn:
        width, height = f["svg"]
        assert width > 100 and height > 100, f
        if f["kind"] == "occupancy":  # the heat map's raster decoded and laid out
            assert f["image"] is not None and min(f["image"]) > 10, f
    assert browser.evaluate("document.querySelectorAll('td.best').length") > 0
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
