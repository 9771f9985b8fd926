"""The README keeps its promises: the two-command quick start, and a configuration table
equal to the settings it documents."""

from __future__ import annotations

import re
from pathlib import Path

from serving import settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_the_quick_start_is_exactly_make_demo_and_make_test() -> None:
    start = README.index("## Quick start")
    block = re.search(r"```\n(.*?)```", README[start:], re.S)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block[1].splitlines()]
    assert commands == ["make demo", "make test"]


def test_the_configuration_table_is_the_settings() -> None:
    table = README.split("<!-- settings: begin -->\n", 1)[1].split("<!-- settings: end -->")[0]
    assert table == settings.markdown()
    assert "| `MMSERVE_STORE_URL` |" in table
    assert "| `AWS_REGION` (or `AWS_DEFAULT_REGION`) |" in table
