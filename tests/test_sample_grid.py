"""Sample grids (`samples.png`): each row's title is readable in full where the row leaves room for it."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from medgen.sample_grid import TITLE_WIDTH, image_grid, title_lines


def _title_rows_with_ink(grid: Image.Image) -> np.ndarray:
    column = np.asarray(grid.convert("L"))[:, :TITLE_WIDTH]
    return np.flatnonzero(column.max(axis=1) > 0)


def test_a_long_prompt_is_wrapped_whole_into_the_title_column():
    draw = ImageDraw.Draw(Image.new("L", (1, 1)))
    prompt = "pediatric chest x-ray, viral pneumonia in the right lower lobe"
    lines = title_lines(draw, prompt, max_lines=10)
    assert " ".join(lines) == prompt  # every word kept, in order
    assert len(lines) > 1 and all(draw.textlength(line) <= TITLE_WIDTH - 8 for line in lines)

    tall = image_grid([(prompt, np.zeros((2, 64, 64, 1)))])
    short = image_grid([("normal", np.zeros((2, 64, 64, 1)))])
    assert np.ptp(_title_rows_with_ink(tall)) > 2 * np.ptp(_title_rows_with_ink(short))  # several lines, not one


def test_a_title_longer_than_the_row_ends_with_an_ellipsis_and_a_long_word_is_cut_to_fit():
    draw = ImageDraw.Draw(Image.new("L", (1, 1)))
    lines = title_lines(draw, "one two three four five six seven eight nine ten eleven twelve", max_lines=2)
    assert len(lines) == 2 and lines[-1].endswith("...") and lines[0].startswith("one two")
    assert all(draw.textlength(line) <= TITLE_WIDTH - 8 for line in lines)
    (word,) = title_lines(draw, "pneumonoultramicroscopicsilicovolcanoconiosis", max_lines=1)
    assert "pneumonoultramicroscopicsilicovolcanoconiosis".startswith(word) and draw.textlength(word) <= TITLE_WIDTH - 8
    # a row of small tiles still gets its one line, inside the row
    grid = image_grid([("a title", np.zeros((1, 8, 8, 1))), ("b", np.zeros((1, 8, 8, 1)))])
    assert grid.size[1] == 2 * (8 + 2)
