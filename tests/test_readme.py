"""The README's Python examples run and print what the README says they print."""

from __future__ import annotations

import contextlib
import io
import re

from tests.conftest import REPO

BLOCKS = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)


def _run(block: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "README.md", "exec"), {})  # noqa: S102 - our own documentation
    return out.getvalue()


def test_readme_has_python_examples() -> None:
    assert len(BLOCKS) >= 2


def test_readme_examples_print_what_their_comments_say() -> None:
    for block in BLOCKS:
        printed = _run(block).splitlines()
        promised = [
            line.split("#", 1)[1].strip()
            for line in block.splitlines()
            if line.lstrip().startswith("print(") and "#" in line
        ]
        assert len(printed) == len(promised), (printed, promised)
        for got, comment in zip(printed, promised):
            assert comment.startswith(got.strip()) or comment.startswith(repr(got.strip())[1:-1]), (got, comment)
