"""The occupancy level badges are white text on the level's colour: each colour must
reach WCAG AA contrast (4.5:1) with white.  The browser test with axe-core only sees the
levels the demo city shows at that hour; this checks all of them at any hour."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

STYLE = Path(__file__).resolve().parents[3] / "modules/dashboard/web/src/style.css"
LEVELS = ("quiet", "busy", "full")


def luminance(hex_colour: str) -> float:
    def channel(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.04045 else ((s + 0.055) / 1.055) ** 2.4
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def contrast_with_white(hex_colour: str) -> float:
    return 1.05 / (luminance(hex_colour) + 0.05)


def test_the_formula_matches_known_ratios() -> None:
    assert contrast_with_white("#000000") == pytest.approx(21.0)
    assert contrast_with_white("#767676") == pytest.approx(4.54, abs=0.01)
    assert contrast_with_white("#b36b00") < 4.5  # the old "busy": axe-core refused it


@pytest.mark.parametrize("level", LEVELS)
def test_level_badges_are_readable(level: str) -> None:
    css = STYLE.read_text()
    colour = re.search(rf"--{level}:\s*(#[0-9a-fA-F]{{6}})", css)
    assert colour, f"--{level} is not a #rrggbb colour in {STYLE}"
    assert re.search(rf'\[data-level="{level}"\] \.level-name \{{ background: var\(--{level}\)',
                     css), f"the {level} badge does not use --{level}"
    assert contrast_with_white(colour.group(1)) >= 4.5, colour.group(1)
